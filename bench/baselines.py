"""Baselines: the same measurement shapes without sockbroker, each server in its own process.

Each function starts the processes it needs, measures, and stops them (by pid, in ``finally``
blocks, via the context managers of procs.py) before returning its figures.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from typing import Any

import grpc

from bench.clients import (
    Arrivals,
    GrpcStreamPath,
    WsPath,
    channel,
    count_stream,
    drain,
    fixed,
    grpc_stream_throughput,
    tcp_throughput,
    unary_figures,
    ws_throughput,
)
from bench.common import KIB, LOOPBACK, MIB, Deadline, Measurement, Sizes
from bench.peers import DATAGRAMS_REQUEST
from bench.procs import PEERS, Helper, free_port, peer, program

UDP_SIZE = 1200
UNARY_PAYLOAD = b"h" * 40  # about the size of a HandleRequest naming a handle
SOCAT_BUFFER = 256 * KIB
STREAM_SHAPE = "sink upload: {n} through {path}, clock stops at the sink's ack"


def shape(path: str, sizes: Sizes) -> str:
    return STREAM_SHAPE.format(n=f"{sizes.stream_bytes // 1_000_000} MB", path=path)


# ───────────────────────────── plain TCP and relays ─────────────────────────────


async def tcp_direct(sizes: Sizes, chunk: int = 256 * KIB) -> dict[str, Measurement]:
    with peer("tcp-sink") as sink:
        path = f"one loopback TCP connection, {chunk // KIB} KiB writes"
        return {"tcp": await tcp_throughput(sink.port, chunk, sizes, shape(path, sizes))}


async def socat_relay(sizes: Sizes) -> dict[str, Measurement]:
    if shutil.which("socat") is None:
        raise RuntimeError("socat is not installed (apt-get install -y socat)")
    port = free_port()
    with peer("tcp-sink") as sink:
        argv = [
            "socat",
            "-b",
            str(SOCAT_BUFFER),
            f"TCP-LISTEN:{port},bind={LOOPBACK},reuseaddr,fork",
            f"TCP:{LOOPBACK}:{sink.port}",
        ]
        with program("socat", argv, port):
            path = "socat -b 262144 relaying TCP, 256 KiB writes"
            return {"socat": await tcp_throughput(port, SOCAT_BUFFER, sizes, shape(path, sizes))}


async def websockify_relay(sizes: Sizes, frame: int = 64 * KIB) -> dict[str, Measurement]:
    if shutil.which("websockify") is None:
        raise RuntimeError("websockify is not installed (pip install websockify)")
    port = free_port()
    with peer("tcp-sink") as sink:
        argv = ["websockify", f"{LOOPBACK}:{port}", f"{LOOPBACK}:{sink.port}"]
        with program("websockify", argv, port):
            path = WsPath(f"ws://{LOOPBACK}:{port}/", subprotocols=["binary"])
            what = f"websockify relaying TCP, {frame // KIB} KiB binary frames"
            return {"websockify": await ws_throughput(fixed(path), frame, sizes, shape(what, sizes))}


# ───────────────────────────── bare grpc.aio ─────────────────────────────


def bare_sink_path(chan: grpc.aio.Channel) -> GrpcStreamPath:
    method = chan.stream_stream("/bench.Bench/Sink")

    async def start() -> Any:
        return method()

    async def finish(call: Any) -> None:
        await call.done_writing()
        await drain(call)

    return GrpcStreamPath(start=start, encode=lambda piece: piece, ack=lambda reply: reply, finish=finish)


async def grpc_bare(sizes: Sizes) -> dict[str, Measurement]:
    """Bidi-stream sink upload at 64 KiB and 1 MiB, unary echo, and a 1,200-byte message stream."""
    with peer("grpc-server") as server:
        async with channel(server.port) as chan:
            results = {}
            path = bare_sink_path(chan)
            for size, name in ((64 * KIB, "grpc_stream_64k"), (MIB, "grpc_stream_1m")):
                what = f"bare grpc.aio bidi stream, {size // KIB} KiB bytes messages"
                results[name] = await grpc_stream_throughput(path, size, sizes, shape(what, sizes))
            echo = chan.unary_unary("/bench.Bench/Echo")
            unary = await unary_figures(lambda: echo(UNARY_PAYLOAD), sizes, 120.0, "bare grpc.aio unary echo")
            results["grpc_unary_p50"] = unary["p50"]
            results["grpc_unary_64"] = unary["concurrent"]
            results["grpc_messages"] = await grpc_message_stream(chan, sizes)
            return results


async def grpc_message_stream(chan: grpc.aio.Channel, sizes: Sizes) -> Measurement:
    """Messages/s a client reads off a bare server stream of 1,200-byte messages."""
    request = DATAGRAMS_REQUEST.pack(10_000_000, UDP_SIZE)
    call = chan.unary_stream("/bench.Bench/Datagrams")(request)
    arrivals = Arrivals()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(sizes.udp_seconds, stop.set)
    await count_stream(call, arrivals, stop)
    what = f"bare grpc.aio server stream of {UDP_SIZE}-byte messages, read for {sizes.udp_seconds:g} s"
    return Measurement(arrivals.rate(), "msgs/s", what, extra={"received": arrivals.count})


# ───────────────────────────── bare FastAPI WebSocket ─────────────────────────────


async def fastapi_ws(sizes: Sizes, frame: int = 64 * KIB) -> dict[str, Measurement]:
    with peer("ws-server") as server:
        path = WsPath(f"ws://{LOOPBACK}:{server.port}/sink")
        what = f"bare FastAPI WebSocket (uvicorn, uvloop), {frame // KIB} KiB binary frames"
        return {"ws": await ws_throughput(fixed(path), frame, sizes, shape(what, sizes))}


# ───────────────────────────── UDP ─────────────────────────────


def udp_blaster(port: int, seconds: float) -> Helper:
    """A ``udp-blast`` helper sending 1,200-byte datagrams to ``port`` for ``seconds``."""
    argv = ["--port", str(port), "--size", str(UDP_SIZE), "--seconds", str(seconds)]
    return Helper("udp-blast", [*PEERS, "udp-blast", *argv], reports=True)


def blaster_sent(blaster: Helper, seconds: float) -> int:
    line = blaster.read_line(seconds + 10)
    return int(line.removeprefix("SENT "))


def udp_receive(sock: socket.socket, arrivals: Arrivals, deadline: Deadline) -> None:
    """Count datagrams until none has come for half a second or the deadline passes."""
    buffer = bytearray(65536)
    sock.settimeout(0.5)
    while not deadline.expired():
        try:
            sock.recv_into(buffer)
        except TimeoutError:
            if arrivals.count:
                return
            continue
        arrivals.note()


async def udp_direct(sizes: Sizes) -> dict[str, Measurement]:
    """Datagrams/s a plain Python socket receives from the blaster (no relay)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        arrivals = Arrivals()
        blaster = udp_blaster(sock.getsockname()[1], sizes.udp_seconds)
        try:
            deadline = Deadline(sizes.udp_seconds + 10, "direct UDP receive")
            await asyncio.to_thread(udp_receive, sock, arrivals, deadline)
            sent = blaster_sent(blaster, sizes.udp_seconds)
        finally:
            blaster.stop()
    what = f"{UDP_SIZE}-byte datagrams blasted for {sizes.udp_seconds:g} s, read by a plain socket"
    return {"udp": Measurement(arrivals.rate(), "datagrams/s", what, extra={"sent": sent, "received": arrivals.count})}


BASELINES = {
    "tcp": tcp_direct,
    "socat": socat_relay,
    "websockify": websockify_relay,
    "grpc": grpc_bare,
    "ws": fastapi_ws,
    "udp": udp_direct,
}
