"""Client-side drivers shared by the baselines and the broker measurements.

The same driver measures a baseline and its broker counterpart, so the two differ only in the
path the bytes take: a gRPC bidi stream (bare bytes or sockbroker ``StreamFrame``s), a WebSocket
(bare FastAPI, websockify, or the daemon's stream route), plain TCP, or a message stream.

Every timed transfer reads a *meter* (the CPU-seconds so far of the process that relays or serves
the bytes: the daemon, socat, websockify, a bare server, the sink) when its clock starts and
when it stops, and reports both the seconds and the CPU-seconds spent in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from sockbroker_wire import frames
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench.common import ACK, LOOPBACK, Deadline, Sample, Sizes, cpu_per_gib, mb_per_s, payload_chunks, percentile
from bench.procs import CoresBusy

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
Headers = Sequence[tuple[str, str]]
#: CPU-seconds so far of the process a transfer is metered on.
Meter = Callable[[], float]


@dataclass(frozen=True)
class Timed:
    """One timed transfer: seconds from first byte to ack, CPU-seconds of the meter in between."""

    seconds: float
    cpu: float

    def sample(self, total: int, **extra: Any) -> Sample:
        return Sample(mb_per_s(total, self.seconds), cpu_per_gib(self.cpu, total), dict(extra))


class Clock:
    """Starts and stops a transfer's clock and its meter together."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._cpu = meter()
        self._begin = time.perf_counter()

    def stop(self) -> Timed:
        seconds = time.perf_counter() - self._begin
        return Timed(seconds, self._meter() - self._cpu)


def channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"{LOOPBACK}:{port}", options=CHANNEL_OPTIONS)


# ───────────────────────────── plain TCP ─────────────────────────────


def socket_upload(sock: socket.socket, total: int, chunk: int, cap: float, meter: Meter) -> Timed:
    """Sink upload over one connected stream socket: first byte sent to ack."""
    deadline = Deadline(cap, "socket upload")
    sock.settimeout(cap)
    clock = Clock(meter)
    for piece in payload_chunks(total, chunk):
        sock.sendall(piece)
        deadline.check()
    if sock.recv(1) != ACK:
        raise RuntimeError("no ack from the sink")
    return clock.stop()


def tcp_upload(port: int, total: int, chunk: int, cap: float, meter: Meter) -> Timed:
    """Sink upload over a fresh loopback TCP connection to ``port`` (connected before the clock)."""
    with socket.create_connection((LOOPBACK, port), timeout=cap) as sock:
        return socket_upload(sock, total, chunk, cap, meter)


# ───────────────────────────── gRPC bidi stream ─────────────────────────────


@dataclass(frozen=True)
class GrpcStreamPath:
    """How to run the sink upload over one kind of gRPC bidi stream.

    ``start`` opens a stream and sends whatever preamble it needs (untimed); ``encode`` turns a
    payload piece into a request message; ``ack`` extracts the bytes a response carries;
    ``finish`` ends the stream after the ack.
    """

    start: Callable[[], Awaitable[Any]]
    encode: Callable[[bytes], Any]
    ack: Callable[[Any], bytes]
    finish: Callable[[Any], Awaitable[None]]


async def grpc_upload(path: GrpcStreamPath, total: int, size: int, meter: Meter) -> Timed:
    call = await path.start()
    clock = Clock(meter)
    for piece in payload_chunks(total, size):
        await call.write(path.encode(piece))
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            raise RuntimeError("stream ended before the sink's ack")
        if data := path.ack(response):
            break
    timed = clock.stop()
    if data != ACK:
        raise RuntimeError(f"unexpected reply {data[:16]!r} instead of the ack")
    await path.finish(call)
    return timed


async def drain(call: Any) -> None:
    """Read a stream to its end."""
    while await call.read() is not grpc.aio.EOF:
        pass


# ───────────────────────────── WebSocket ─────────────────────────────


@dataclass(frozen=True)
class WsPath:
    """Where a WebSocket sink upload goes, and how it ends after the ack."""

    uri: str
    headers: Headers = ()
    subprotocols: Sequence[str] = ()
    finish: Callable[[ClientConnection], Awaitable[None]] | None = None


def ws_connect(path: WsPath) -> Any:
    return connect(
        path.uri,
        additional_headers=list(path.headers),
        subprotocols=[Subprotocol(name) for name in path.subprotocols] or None,
        compression=None,
        max_size=None,
        ping_interval=None,
        open_timeout=10,
        close_timeout=5,
    )


async def ws_upload(path: WsPath, total: int, size: int, meter: Meter) -> Timed:
    """Sink upload over a fresh WebSocket (opened before the clock starts)."""
    async with ws_connect(path) as ws:
        clock = Clock(meter)
        for piece in payload_chunks(total, size):
            await ws.send(piece)
        reply = await ws.recv()
        timed = clock.stop()
        if reply != ACK:
            raise RuntimeError(f"unexpected reply {reply[:16]!r} instead of the ack")
        if path.finish is not None:
            await path.finish(ws)
    return timed


# ───────────────────────────── unary calls ─────────────────────────────

CALLERS = 64
WARMUP_CALLS = 100


async def unary_figures(
    call: Callable[[], Awaitable[object]], sizes: Sizes, cap: float, server: Callable[[], float]
) -> tuple[Sample, Sample]:
    """p50 latency of sequential calls (ms), and calls/s with ``CALLERS`` concurrent callers; the
    latter with the CPU time a call cost the server (``server``: its CPU-seconds so far) and this
    process, the client, and the machine's busy and stolen cores, while the callers ran."""
    async with asyncio.timeout(cap):
        for _ in range(WARMUP_CALLS):
            await call()
        latencies = await sequential_latencies(call, sizes.unary_sequential)
        server_before, client_before, machine = server(), time.process_time(), CoresBusy()
        concurrent_seconds, concurrent_latencies = await concurrent_calls(call, sizes.unary_concurrent)
        server_cpu, client_cpu, cores = server() - server_before, time.process_time() - client_before, machine.reading()
    ms = [latency * 1000 for latency in latencies]
    p50 = Sample(percentile(ms, 0.5), extra={"p99_ms": percentile(ms, 0.99), "calls": len(ms)})
    per_call = 1e6 / sizes.unary_concurrent
    rate = Sample(
        sizes.unary_concurrent / concurrent_seconds,
        extra={
            "p50_ms_under_load": percentile(concurrent_latencies, 0.5) * 1000,
            "calls": sizes.unary_concurrent,
            "server_cpu_us_per_call": server_cpu * per_call,
            "client_cpu_us_per_call": client_cpu * per_call,
            **cores,
        },
    )
    return p50, rate


async def sequential_latencies(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        begin = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - begin)
    return latencies


async def concurrent_calls(call: Callable[[], Awaitable[object]], count: int) -> tuple[float, list[float]]:
    """``count`` calls shared by ``CALLERS`` tasks; total seconds and each call's latency."""
    latencies: list[float] = []

    async def timed(_: int) -> None:
        begin = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - begin)

    begin = time.perf_counter()
    await pooled(count, timed)
    return time.perf_counter() - begin, latencies


async def pooled(count: int, job: Callable[[int], Awaitable[None]], callers: int = CALLERS) -> None:
    """Run ``job(0)`` … ``job(count - 1)`` with at most ``callers`` running at once."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index, next_index = next_index, next_index + 1
            await job(index)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(callers, count)):
            group.create_task(worker())


# ───────────────────────────── message streams (datagrams) ─────────────────────────────


@dataclass
class Arrivals:
    """Messages counted off a stream: how many, and when the first and last arrived."""

    count: int = 0
    first: float = 0.0
    last: float = 0.0
    first_count: int = 0

    def note(self, items: int = 1) -> None:
        """``items`` arrived now (a batch message carries several datagrams)."""
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
            self.first_count = items
        self.last = now
        self.count += items

    def rate(self) -> float:
        span = self.last - self.first
        later = self.count - self.first_count
        return later / span if later > 0 and span > 0 else 0.0


def batch_datagrams(batch: Any) -> int:
    """Datagrams a ``DatagramBatch`` carries, ``datagrams`` then ``packed``, each decoded as a
    client decodes them (``sockbroker_wire.frames.batch_datagrams``)."""
    return len(frames.batch_datagrams(batch))


async def count_stream(
    call: Any, arrivals: Arrivals, stop: asyncio.Event, items: Callable[[Any], int] = lambda _message: 1
) -> None:
    """Count a server stream's items until ``stop`` is set; a stream that fails first raises."""
    reader = asyncio.ensure_future(_count_all(call, arrivals, items))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        call.cancel()
        for task in (reader, stopper):
            task.cancel()
        await asyncio.gather(reader, stopper, return_exceptions=True)
    if reader in done:
        reader.result()


async def _count_all(call: Any, arrivals: Arrivals, items: Callable[[Any], int]) -> None:
    async for message in call:
        arrivals.note(items(message))


# ───────────────────────────── DESIGN §8 channels (relay, hand-off) ─────────────────────────────

LINE_MAX = 4096
PRE_READ_MAX = 64 * 1024 * 1024


def channel_socket(address: str, cap: float) -> socket.socket:
    """A connection to a channel address: ``unix:PATH`` or ``HOST:PORT``."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(cap)
        try:
            sock.connect(address.removeprefix("unix:"))
        except OSError:
            sock.close()
            raise
        return sock
    host, _, port = address.rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)), timeout=cap)


def answer_line(sock: socket.socket, fds: list[int]) -> str:
    """The daemon's one-line answer to a ticket, read a byte at a time (nothing after it is
    consumed) with room for descriptors, so that none passed with it is lost; they go to ``fds``."""
    line = b""
    while not line.endswith(b"\n"):
        if len(line) >= LINE_MAX:
            raise RuntimeError(f"channel answer longer than {LINE_MAX} bytes: {line[:80]!r}")
        data, passed, _flags, _address = socket.recv_fds(sock, 1, 4)
        fds.extend(passed)
        if not data:
            raise RuntimeError(f"channel closed before its answer line ({line!r} so far)")
        line += data
    return line.decode(errors="replace").strip()


def expect_ok(line: str) -> None:
    if line != "OK":
        raise RuntimeError(f"channel refused the ticket: {line}")


def relay_channel(address: str, ticket: str, cap: float) -> socket.socket:
    """A relay channel (DESIGN §8): connected, ticket accepted; it carries the port's bytes."""
    sock = channel_socket(address, cap)
    try:
        sock.sendall(ticket.encode() + b"\n")
        fds: list[int] = []
        line = answer_line(sock, fds)
        for fd in fds:
            os.close(fd)
        expect_ok(line)
    except BaseException:
        sock.close()
        raise
    return sock


def handoff(address: str, ticket: str, cap: float) -> tuple[socket.socket, bytes]:
    """A handed-off connection (DESIGN §8): the TCP socket received by ``SCM_RIGHTS``, and the
    bytes the daemon had already read from the peer (to be consumed before reading the socket)."""
    fds: list[int] = []
    pre_read = bytearray()
    deadline = Deadline(cap, "hand-off")
    try:
        with channel_socket(address, cap) as control:
            control.sendall(ticket.encode() + b"\n")
            expect_ok(answer_line(control, fds))
            while True:  # bounded: PRE_READ_MAX bytes, the deadline, the socket's timeout
                chunk, passed, _flags, _address = socket.recv_fds(control, 65536, 4)
                fds.extend(passed)
                if not chunk and not passed:
                    break
                pre_read += chunk
                if len(pre_read) > PRE_READ_MAX:
                    raise RuntimeError(f"more than {PRE_READ_MAX} bytes before the hand-off's end")
                deadline.check()
        if len(fds) != 1:
            raise RuntimeError(f"the hand-off passed {len(fds)} descriptors, not 1")
        return socket.socket(fileno=fds.pop()), bytes(pre_read)
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
