"""Client-side drivers shared by the baselines and the broker measurements.

The same driver measures a baseline and its broker counterpart, so the two differ only in the
path the bytes take: a gRPC bidi stream (bare bytes or sockbroker ``StreamFrame``s), a WebSocket
(bare FastAPI, websockify, or the daemon's stream route), plain TCP, or a message stream.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench.common import ACK, LOOPBACK, Deadline, Measurement, Sizes, payload_chunks, percentile, throughput

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
Headers = Sequence[tuple[str, str]]


def channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"{LOOPBACK}:{port}", options=CHANNEL_OPTIONS)


async def repeated(once: Callable[[int], Awaitable[float]], sizes: Sizes) -> list[float]:
    """A warm-up transfer, then ``sizes.repeats`` timed ones, each under the stream cap."""
    async with asyncio.timeout(sizes.stream_cap):
        await once(sizes.warmup_bytes)
    runs = []
    for _ in range(sizes.repeats):
        async with asyncio.timeout(sizes.stream_cap):
            runs.append(await once(sizes.stream_bytes))
    return runs


# ───────────────────────────── plain TCP ─────────────────────────────


def tcp_upload(port: int, total: int, chunk: int, cap: float) -> float:
    """Sink upload over one plain TCP connection; seconds from first byte sent to ack."""
    deadline = Deadline(cap, f"TCP upload to port {port}")
    with socket.create_connection((LOOPBACK, port), timeout=cap) as sock:
        start = time.perf_counter()
        for piece in payload_chunks(total, chunk):
            sock.sendall(piece)
            deadline.check()
        if sock.recv(1) != ACK:
            raise RuntimeError(f"no ack from the sink behind port {port}")
        return time.perf_counter() - start


async def tcp_throughput(port: int, chunk: int, sizes: Sizes, shape: str) -> Measurement:
    async def once(total: int) -> float:
        return await asyncio.to_thread(tcp_upload, port, total, chunk, sizes.stream_cap)

    return throughput(sizes.stream_bytes, await repeated(once, sizes), shape, chunk=chunk)


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


async def grpc_upload(path: GrpcStreamPath, total: int, size: int) -> float:
    call = await path.start()
    begin = time.perf_counter()
    for piece in payload_chunks(total, size):
        await call.write(path.encode(piece))
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            raise RuntimeError("stream ended before the sink's ack")
        if data := path.ack(response):
            break
    elapsed = time.perf_counter() - begin
    if data != ACK:
        raise RuntimeError(f"unexpected reply {data[:16]!r} instead of the ack")
    await path.finish(call)
    return elapsed


async def grpc_stream_throughput(path: GrpcStreamPath, size: int, sizes: Sizes, shape: str) -> Measurement:
    async def once(total: int) -> float:
        return await grpc_upload(path, total, size)

    return throughput(sizes.stream_bytes, await repeated(once, sizes), shape, message_size=size)


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


async def ws_upload(path: WsPath, total: int, size: int) -> float:
    async with ws_connect(path) as ws:
        begin = time.perf_counter()
        for piece in payload_chunks(total, size):
            await ws.send(piece)
        reply = await ws.recv()
        elapsed = time.perf_counter() - begin
        if reply != ACK:
            raise RuntimeError(f"unexpected reply {reply[:16]!r} instead of the ack")
        if path.finish is not None:
            await path.finish(ws)
    return elapsed


async def ws_throughput(open_path: Callable[[], Awaitable[WsPath]], size: int, sizes: Sizes, shape: str) -> Measurement:
    """Sink uploads over WebSockets; ``open_path`` prepares each one's connection (untimed)."""

    async def once(total: int) -> float:
        return await ws_upload(await open_path(), total, size)

    return throughput(sizes.stream_bytes, await repeated(once, sizes), shape, frame_size=size)


def fixed(path: WsPath) -> Callable[[], Awaitable[WsPath]]:
    async def open_path() -> WsPath:
        return path

    return open_path


# ───────────────────────────── unary calls ─────────────────────────────

CALLERS = 64
WARMUP_CALLS = 100


async def unary_figures(
    call: Callable[[], Awaitable[object]], sizes: Sizes, cap: float, shape: str
) -> dict[str, Measurement]:
    """p50 latency of sequential calls (ms) and calls/s with ``CALLERS`` concurrent callers."""
    async with asyncio.timeout(cap):
        for _ in range(WARMUP_CALLS):
            await call()
        latencies = await sequential_latencies(call, sizes.unary_sequential)
        concurrent_seconds, concurrent_latencies = await concurrent_calls(call, sizes.unary_concurrent)
    ms = [latency * 1000 for latency in latencies]
    p50 = Measurement(
        percentile(ms, 0.5),
        "ms",
        f"{shape}: {len(ms)} sequential calls, p50 latency",
        extra={"p99_ms": percentile(ms, 0.99), "calls_per_s": len(ms) / (sum(latencies) or 1e-9)},
    )
    rate = Measurement(
        sizes.unary_concurrent / concurrent_seconds,
        "calls/s",
        f"{shape}: {sizes.unary_concurrent} calls by {CALLERS} concurrent callers",
        extra={"p50_ms_under_load": percentile(concurrent_latencies, 0.5) * 1000},
    )
    return {"p50": p50, "concurrent": rate}


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
