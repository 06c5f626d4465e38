"""Baselines: the same measurement shapes without sockbroker, each server or relay in its own process.

Each function returns the :class:`Probe` of one baseline; the processes it needs start on its
first use (the warm-up) on the group's :class:`Stage`, and stop when the group ends (by pid, in
``finally`` blocks, via the context managers of procs.py). Every throughput probe meters the
process that relays or serves the bytes: the sink (direct), socat, websockify, the bare server.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bench.clients import (
    GrpcStreamPath,
    Meter,
    Timed,
    WsPath,
    channel,
    drain,
    grpc_upload,
    tcp_upload,
    unary_figures,
    ws_upload,
)
from bench.common import (
    KIB,
    LOOPBACK,
    MIB,
    UDP_PACED_RATE,
    Deadline,
    Figure,
    Figures,
    Probe,
    Sample,
    Sizes,
    cpu_per_gib,
)
from bench.procs import Helper, Stage, free_port, group_cpu_seconds, program

UDP_SIZE = 1200
UNARY_PAYLOAD = b"h" * 40  # about the size of a HandleRequest naming a handle
UNARY_CAP = 180.0
SOCAT_BUFFER = 256 * KIB
TCP_CHUNK = 256 * KIB
WS_FRAME = 64 * KIB
GRPC_SIZES = ((64 * KIB, "64k"), (MIB, "1m"))
STREAM_SHAPE = "sink upload: {n} MB through {path}, clock stops at the sink's ack"


def shape(path: str, sizes: Sizes) -> str:
    return STREAM_SHAPE.format(n=sizes.stream_bytes // 1_000_000, path=path)


def meter(pid: int) -> Meter:
    """CPU-seconds so far of the process group led by ``pid``."""
    return lambda: group_cpu_seconds(pid)


def stream_probe(key: str, what: str, sizes: Sizes, once: Callable[[int], Awaitable[Timed]], **extra: Any) -> Probe:
    """A throughput probe: ``once(total)`` runs one timed sink upload of ``total`` bytes."""

    async def run() -> Figures:
        return {key: (await once(sizes.stream_bytes)).sample(sizes.stream_bytes, **extra)}

    async def warmup() -> None:
        await once(sizes.warmup_bytes)

    return Probe((Figure(key, "MB/s", shape(what, sizes)),), run, warmup, cap=sizes.stream_cap)


# ───────────────────────────── plain TCP and relays ─────────────────────────────


def direct(stage: Stage) -> Probe:
    """P1 baseline of the hand-off: one loopback connection straight to the sink."""

    async def once(total: int) -> Timed:
        sink = await stage.peer("tcp-sink")
        cap = stage.sizes.stream_cap
        return await asyncio.to_thread(tcp_upload, sink.port, total, TCP_CHUNK, cap, meter(sink.pid))

    what = f"one loopback TCP connection to the sink, {TCP_CHUNK // KIB} KiB writes (CPU: the sink)"
    return stream_probe("baseline.direct", what, stage.sizes, once, chunk=TCP_CHUNK)


def socat_argv(port: int, sink_port: int) -> list[str]:
    if shutil.which("socat") is None:
        raise RuntimeError("socat is not installed (apt-get install -y socat)")
    return [
        "socat",
        "-b",
        str(SOCAT_BUFFER),
        f"TCP-LISTEN:{port},bind={LOOPBACK},reuseaddr,fork",
        f"TCP:{LOOPBACK}:{sink_port}",
    ]


def socat(stage: Stage, key: str = "baseline.socat") -> Probe:
    """P1 baseline of the relay channel (and the proxy door's, under another ``key``): socat -b
    262144 between the client and the sink."""

    async def once(total: int) -> Timed:
        sink = await stage.peer("tcp-sink")
        port = free_port()
        relay: Helper = await stage.shared("socat", lambda: program("socat", socat_argv(port, sink.port), port))
        cap = stage.sizes.stream_cap
        return await asyncio.to_thread(tcp_upload, relay.port, total, SOCAT_BUFFER, cap, meter(relay.pid))

    what = "socat -b 262144 relaying TCP to the sink, 256 KiB writes (CPU: socat and its forked child)"
    return stream_probe(key, what, stage.sizes, once, chunk=SOCAT_BUFFER)


def websockify_argv(port: int, sink_port: int) -> list[str]:
    if importlib.util.find_spec("websockify") is None:
        raise RuntimeError("websockify is not installed (pip install websockify, or the bench extra)")
    return [sys.executable, "-m", "websockify", f"{LOOPBACK}:{port}", f"{LOOPBACK}:{sink_port}"]


def websockify(stage: Stage) -> Probe:
    """P2 and P3 baseline: websockify between a WebSocket client and the TCP sink."""

    async def once(total: int) -> Timed:
        sink = await stage.peer("tcp-sink")
        port = free_port()
        relay: Helper = await stage.shared(
            "websockify", lambda: program("websockify", websockify_argv(port, sink.port), port)
        )
        path = WsPath(f"ws://{LOOPBACK}:{relay.port}/", subprotocols=["binary"])
        return await ws_upload(path, total, WS_FRAME, meter(relay.pid))

    what = f"websockify relaying TCP, {WS_FRAME // KIB} KiB binary frames (CPU: websockify and its children)"
    return stream_probe("baseline.websockify", what, stage.sizes, once, frame_size=WS_FRAME)


# ───────────────────────────── bare grpc.aio ─────────────────────────────


def bare_sink_path(chan: grpc.aio.Channel) -> GrpcStreamPath:
    method = chan.stream_stream("/bench.Bench/Sink")

    async def start() -> Any:
        return method()

    async def finish(call: Any) -> None:
        await call.done_writing()
        await drain(call)

    return GrpcStreamPath(start=start, encode=lambda piece: piece, ack=lambda reply: reply, finish=finish)


async def grpc_peer(stage: Stage) -> tuple[Helper, grpc.aio.Channel]:
    server = await stage.peer("grpc-server")
    chan: grpc.aio.Channel = await stage.shared("grpc-channel", lambda: channel(server.port))
    return server, chan


def grpc_streams(stage: Stage) -> list[Probe]:
    """P2 baselines: a bidi stream of raw bytes messages, 64 KiB and 1 MiB, to a bare grpc.aio sink."""

    def probe(size: int, name: str) -> Probe:
        async def once(total: int) -> Timed:
            server, chan = await grpc_peer(stage)
            return await grpc_upload(bare_sink_path(chan), total, size, meter(server.pid))

        what = f"bare grpc.aio bidi stream, {size // KIB} KiB bytes messages (CPU: the server)"
        return stream_probe(f"baseline.grpc_{name}", what, stage.sizes, once, message_size=size)

    return [probe(size, name) for size, name in GRPC_SIZES]


def grpc_unary(stage: Stage) -> Probe:
    """P4 baseline: a bare grpc.aio unary echo of 40 raw bytes."""

    async def run() -> Figures:
        server, chan = await grpc_peer(stage)
        echo = chan.unary_unary("/bench.Bench/Echo")
        latency, throughput = await unary_figures(
            lambda: echo(UNARY_PAYLOAD), stage.sizes, UNARY_CAP, meter(server.pid)
        )
        return {"baseline.unary_p50": latency, "baseline.unary_64": throughput}

    return unary_figures_probe("baseline", "bare grpc.aio unary echo of 40 bytes", run, lambda: grpc_peer(stage))


def unary_figures_probe(
    side: str, what: str, run: Callable[[], Awaitable[Figures]], warmup: Callable[[], Awaitable[object]]
) -> Probe:
    figures = (
        Figure(f"{side}.unary_p50", "ms", f"{what}: sequential calls, p50 latency"),
        Figure(f"{side}.unary_64", "calls/s", f"{what}: calls by 64 concurrent callers on one channel"),
    )
    return Probe(figures, run, warmup, cap=UNARY_CAP)


# ───────────────────────────── bare FastAPI WebSocket ─────────────────────────────


def fastapi_ws(stage: Stage) -> Probe:
    """P3 baseline: 64 KiB binary frames to a bare FastAPI WebSocket route whose handler is the sink."""

    async def once(total: int) -> Timed:
        server = await stage.peer("ws-server")
        return await ws_upload(WsPath(f"ws://{LOOPBACK}:{server.port}/sink"), total, WS_FRAME, meter(server.pid))

    what = f"bare FastAPI WebSocket (uvicorn, uvloop), {WS_FRAME // KIB} KiB binary frames (CPU: the server)"
    return stream_probe("baseline.ws", what, stage.sizes, once, frame_size=WS_FRAME)


# ───────────────────────────── UDP ─────────────────────────────


def udp_blaster(port: int, seconds: float, rate: int = 0) -> Helper:
    """A ``bench.blast`` helper sending 1,200-byte datagrams to ``port`` for ``seconds`` (paced at
    ``rate`` datagrams/s, or as fast as it can)."""
    argv = ["--port", str(port), "--size", str(UDP_SIZE), "--seconds", str(seconds), "--rate", str(rate)]
    return Helper("udp-blast", [sys.executable, "-m", "bench.blast", *argv], reports=True)


def blaster_sent(blaster: Helper, seconds: float) -> int:
    line = blaster.read_line(seconds + 10)
    return int(line.removeprefix("SENT "))


def udp_receive(sock: socket.socket, deadline: Deadline) -> tuple[int, float, float]:
    """Count datagrams until none has come for half a second or the deadline passes: the count,
    the rate between the first and the last arrival, and this thread's CPU-seconds."""
    buffer = bytearray(65536)
    sock.settimeout(0.5)
    count, first, last = 0, 0.0, 0.0
    cpu = time.thread_time()
    while not deadline.expired():
        try:
            sock.recv_into(buffer)
        except TimeoutError:
            if count:
                break
            continue
        last = time.perf_counter()
        if not count:
            first = last
        count += 1
    rate = (count - 1) / (last - first) if count > 1 and last > first else 0.0
    return count, rate, time.thread_time() - cpu


def plain_udp(stage: Stage, rate: int) -> Probe:
    """P5 baselines: a plain Python socket receiving the blaster directly (no relay); ``rate`` 0:
    the blaster as fast as it can (figure: datagrams/s), else paced (figure: datagrams lost)."""
    seconds = stage.sizes.udp_paced_seconds if rate else stage.sizes.udp_seconds
    key = "baseline.udp_paced_lost" if rate else "baseline.udp_max"

    async def run() -> Figures:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            blaster = udp_blaster(sock.getsockname()[1], seconds, rate)
            try:
                deadline = Deadline(seconds + 10, "plain UDP receive")
                received, per_second, cpu = await asyncio.to_thread(udp_receive, sock, deadline)
                sent = blaster_sent(blaster, seconds)
            finally:
                blaster.stop()
        extra = {
            "seconds": seconds,
            "sent": sent,
            "received": received,
            "lost": sent - received,
            "datagrams_per_s": per_second,
        }
        if rate:
            return {key: Sample(sent - received, extra=extra)}
        return {key: Sample(per_second, cpu_per_gib(cpu, received * UDP_SIZE), extra)}

    if rate:
        figure = Figure(key, "lost", f"{UDP_SIZE}-byte datagrams paced at {rate:,}/s for {seconds:g} s, plain socket")
    else:
        figure = Figure(key, "datagrams/s", f"{UDP_SIZE}-byte datagrams blasted for {seconds:g} s, plain socket")
    return Probe((figure,), run, cap=seconds + 30)


def plain_udp_max(stage: Stage) -> Probe:
    return plain_udp(stage, 0)


def plain_udp_paced(stage: Stage) -> Probe:
    return plain_udp(stage, UDP_PACED_RATE)


# ───────────────────────────── closing sockets ─────────────────────────────


def direct_close(stage: Stage) -> Probe:
    """P7 baseline: this process opens ``reclaim_sockets`` loopback connections to the same holder
    as the daemon's and closes them in one loop: the kernel's work per socket (its FIN, the peer's
    side of it) with nothing of a daemon's around it (no event loop registration, no handles)."""
    sockets = stage.sizes.reclaim_sockets

    def opened_then_closed(port: int) -> float:
        held: list[socket.socket] = []
        try:
            for _ in range(sockets):
                held.append(socket.create_connection((LOOPBACK, port), timeout=10))
            begin = time.perf_counter()
            for sock in held:
                sock.close()
            return time.perf_counter() - begin
        finally:
            for sock in held:
                sock.close()

    async def run() -> Figures:
        holder = await stage.peer("tcp-hold")
        seconds = await asyncio.to_thread(opened_then_closed, holder.port)
        return {"baseline.reclaim": Sample(seconds, extra={"sockets": sockets})}

    what = f"{sockets:,} loopback TCP connections of a plain Python process closed in one loop"
    return Probe((Figure("baseline.reclaim", "s", what),), run, cap=300)
