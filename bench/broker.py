"""The baselines' shapes through sockbroker: a daemon subprocess per measurement group.

The daemon runs as ``python -m sockbroker serve`` on loopback ports with a fresh token file;
every call carries the bearer token, and every call after ``Sessions.Open`` the session id.
Peers (sink, holder, UDP blaster) are helper processes from bench.peers, as for the baselines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from sockbroker_wire.frames import batch_datagrams
from sockbroker_wire.v1 import broker_pb2 as pb
from sockbroker_wire.v1 import broker_pb2_grpc as rpc
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bench.baselines import UDP_SIZE, blaster_sent, shape, udp_blaster
from bench.clients import (
    Arrivals,
    GrpcStreamPath,
    WsPath,
    channel,
    count_stream,
    grpc_stream_throughput,
    pooled,
    unary_figures,
    ws_throughput,
)
from bench.common import KIB, LOOPBACK, MIB, Measurement, Sizes
from bench.procs import REPO_DIR, Helper, fd_count, free_port, nofile_limit, peer, rss_kib

DAEMON_DIR = REPO_DIR / "daemon"
WIRE_DIR = REPO_DIR / "proto" / "python"

START_CAP = 30.0
LEASE_SECONDS = 900.0
#: The default quota is 20,000 handles per session and a connection holds two (in, out), so
#: the connection count is spread over sessions of this many connections.
CONNECTIONS_PER_SESSION = 5_000
RECLAIM_CAP = 10.0
#: gRPC call metadata: the bearer token, then the session.
Metadata = tuple[tuple[str, str], ...]


# ───────────────────────────── the daemon ─────────────────────────────


@dataclass(frozen=True)
class Daemon:
    pid: int
    grpc_port: int
    rest_port: int
    token: str

    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rest_port}"


def daemon_argv(command: list[str], grpc_port: int, rest_port: int, token_file: Path) -> list[str]:
    return [
        *command,
        "--grpc-address",
        f"{LOOPBACK}:{grpc_port}",
        "--rest-address",
        f"{LOOPBACK}:{rest_port}",
        "--token-file",
        str(token_file),
    ]


def wait_started(helper: Helper, token_file: Path, rest_port: int) -> str:
    """Wait for the token file and for ``GET /healthz`` = 200; returns the token."""
    end = time.monotonic() + START_CAP
    token = ""
    while time.monotonic() < end:
        if helper.proc.poll() is not None:
            raise helper.fail(f"exited with {helper.proc.returncode}")
        if not token and token_file.exists():
            token = token_file.read_text().strip()
        if token and healthy(rest_port):
            return token
        time.sleep(0.1)
    raise helper.fail(f"not healthy within {START_CAP:.0f} s (token file written: {bool(token)})")


def healthy(rest_port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://{LOOPBACK}:{rest_port}/healthz", timeout=1.0).status_code == 200
    return False


@contextlib.contextmanager
def daemon(command: list[str]) -> Iterator[Daemon]:
    """A daemon started by ``command`` (``sockbroker serve`` and any extra flags) on fresh loopback
    ports with a fresh token file; SIGTERM (then SIGKILL) when the block ends."""
    path = [str(DAEMON_DIR), str(WIRE_DIR), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
    with tempfile.TemporaryDirectory(prefix="bench-sockbroker-") as tmp:
        token_file = Path(tmp) / "token"
        grpc_port, rest_port = free_port(), free_port()
        helper = Helper("sockbroker", daemon_argv(command, grpc_port, rest_port, token_file), reports=False, env=env)
        try:
            token = wait_started(helper, token_file, rest_port)
            yield Daemon(helper.pid, grpc_port, rest_port, token)
        finally:
            helper.stop()


# ───────────────────────────── gRPC client ─────────────────────────────


class Broker:
    """Stubs on one channel, with the token; ``session`` opens one and names it in metadata."""

    def __init__(self, chan: grpc.aio.Channel, token: str) -> None:
        self.auth = (("authorization", f"Bearer {token}"),)
        self.sessions = rpc.SessionsStub(chan)
        self.tcp = rpc.TcpStub(chan)
        self.handles = rpc.HandlesStub(chan)
        self.ports = rpc.PortsStub(chan)
        self.udp = rpc.UdpStub(chan)

    async def open_session(self) -> Metadata:
        reply = await self.sessions.Open(pb.OpenSessionRequest(lease_seconds=LEASE_SECONDS), metadata=self.auth)
        return (*self.auth, ("sockbroker-session", reply.session))

    async def close_session(self, metadata: Metadata) -> None:
        await self.sessions.Close(pb.SessionRequest(), metadata=metadata)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Metadata]:
        metadata = await self.open_session()
        try:
            yield metadata
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.close_session(metadata)

    async def connect(self, metadata: Metadata, port: int) -> pb.ConnectionReply:
        reply: pb.ConnectionReply = await self.tcp.Connect(
            pb.ConnectRequest(hostname=LOOPBACK, port=port), metadata=metadata
        )
        return reply


@contextlib.asynccontextmanager
async def broker(d: Daemon) -> AsyncIterator[Broker]:
    async with channel(d.grpc_port) as chan:
        yield Broker(chan, d.token)


# ───────────────────────────── TCP bytes: Ports.Stream ─────────────────────────────


def ports_stream_path(b: Broker, metadata: Metadata, sink_port: int) -> GrpcStreamPath:
    """A fresh connection to the sink per upload; the first frame names its input port."""

    async def start() -> Any:
        connection = await b.connect(metadata, sink_port)
        call = b.ports.Stream(metadata=metadata)
        await call.write(pb.StreamFrame(port=getattr(connection, "in")))  # `in` is a Python keyword
        return call

    async def finish(call: Any) -> None:
        await call.write(pb.StreamFrame(eof=True))
        await call.done_writing()
        while (frame := await call.read()) is not grpc.aio.EOF and not frame.eof:
            pass
        call.cancel()

    def encode(piece: bytes) -> pb.StreamFrame:
        return pb.StreamFrame(data=piece)

    def ack(frame: pb.StreamFrame) -> bytes:
        return frame.data

    return GrpcStreamPath(start=start, encode=encode, ack=ack, finish=finish)


async def grpc_streams(d: Daemon, sizes: Sizes) -> dict[str, Measurement]:
    with peer("tcp-sink") as sink:
        async with broker(d) as b, b.session() as metadata:
            path = ports_stream_path(b, metadata, sink.port)
            results = {}
            for size, name in ((64 * KIB, "grpc_stream_64k"), (MIB, "grpc_stream_1m")):
                what = f"sockbroker Ports.Stream to a TCP sink, {size // KIB} KiB data frames"
                results[name] = await grpc_stream_throughput(path, size, sizes, shape(what, sizes))
            return results


# ───────────────────────────── TCP bytes: REST WebSocket ─────────────────────────────


async def ws_finish(ws: ClientConnection) -> None:
    """Send end-of-stream, then wait for the peer's (the sink closes once it sees ours)."""
    await ws.send(json.dumps({"eof": True}))
    with contextlib.suppress(ConnectionClosed):
        while True:
            message = await ws.recv()
            if isinstance(message, str) and json.loads(message).get("eof"):
                return


def rest_stream_opener(
    d: Daemon, http: httpx.AsyncClient, session: str, sink_port: int
) -> Callable[[], Awaitable[WsPath]]:
    """A fresh connection to the sink per upload (``POST /v1/tcp/connections``), and its stream URI."""
    headers = (("Authorization", f"Bearer {d.token}"), ("Sockbroker-Session", session))

    async def open_path() -> WsPath:
        reply = await http.post("/v1/tcp/connections", json={"hostname": LOOPBACK, "port": sink_port}, headers=headers)
        reply.raise_for_status()
        handle = reply.json()["in"]
        uri = f"ws://{LOOPBACK}:{d.rest_port}/v1/tcp/connections/{handle}/stream"
        return WsPath(uri, headers=headers, finish=ws_finish)

    return open_path


async def ws_stream(d: Daemon, sizes: Sizes, frame: int = 64 * KIB) -> dict[str, Measurement]:
    auth = {"Authorization": f"Bearer {d.token}"}
    with peer("tcp-sink") as sink:
        async with httpx.AsyncClient(base_url=d.rest_url, headers=auth, timeout=30.0) as http:
            opened = await http.post("/v1/sessions", json={})
            opened.raise_for_status()
            session = opened.json()["session"]
            try:
                what = f"sockbroker REST WebSocket stream to a TCP sink, {frame // KIB} KiB binary frames"
                opener = rest_stream_opener(d, http, session, sink.port)
                return {"ws": await ws_throughput(opener, frame, sizes, shape(what, sizes))}
            finally:
                await http.delete(f"/v1/sessions/{session}", headers={"Sockbroker-Session": session})


# ───────────────────────────── unary ─────────────────────────────


async def unary(d: Daemon, sizes: Sizes) -> dict[str, Measurement]:
    with peer("tcp-hold") as holder:
        async with broker(d) as b, b.session() as metadata:
            handle = getattr(await b.connect(metadata, holder.port), "in")
            request = pb.HandleRequest(handle=handle)
            figures = await unary_figures(
                lambda: b.handles.Describe(request, metadata=metadata), sizes, 120.0, "sockbroker Handles.Describe"
            )
            return {"grpc_unary_p50": figures["p50"], "grpc_unary_64": figures["concurrent"]}


# ───────────────────────────── UDP ─────────────────────────────


async def bound_udp(b: Broker, metadata: Metadata) -> tuple[str, int]:
    udp = (await b.udp.Open(pb.UdpOpenRequest(), metadata=metadata)).udp
    await b.udp.Bind(pb.UdpBindRequest(udp=udp, hostname=LOOPBACK, port=0), metadata=metadata)
    addresses = await b.handles.Addresses(pb.AddressesRequest(handle=udp, port_numbers=True), metadata=metadata)
    return udp, addresses.local_port


async def udp_stream(d: Daemon, sizes: Sizes) -> dict[str, Measurement]:
    async with broker(d) as b, b.session() as metadata:
        udp, port = await bound_udp(b, metadata)
        call = b.udp.ReceiveStream(pb.UdpReceiveStreamRequest(udp=udp, packed=True), metadata=metadata)
        await asyncio.sleep(0.2)  # let the stream reach the daemon before the first datagram
        arrivals, stop = Arrivals(), asyncio.Event()
        # Each batch decoded into (data, host, port) datagrams, as a client would.
        counting = asyncio.ensure_future(count_stream(call, arrivals, stop, lambda batch: len(batch_datagrams(batch))))
        blaster = udp_blaster(port, sizes.udp_seconds)
        try:
            sent = await asyncio.to_thread(blaster_sent, blaster, sizes.udp_seconds)
            await settle(arrivals)
        finally:
            stop.set()
            await counting
            blaster.stop()
        described = await b.handles.Describe(pb.HandleRequest(handle=udp), metadata=metadata)
    what = f"{UDP_SIZE}-byte datagrams blasted for {sizes.udp_seconds:g} s, relayed by Udp.ReceiveStream"
    extra = {
        "sent": sent,
        "received": arrivals.count,
        "queue_dropped": described.queue_dropped,
        "kernel_dropped": described.kernel_dropped,
    }
    return {"udp": Measurement(arrivals.rate(), "datagrams/s", what, extra=extra)}


async def settle(arrivals: Arrivals, quiet: float = 0.5, cap: float = 10.0) -> None:
    """Wait until no datagram has arrived for ``quiet`` seconds (at most ``cap`` seconds)."""
    for _ in range(round(cap / 0.1)):
        if time.perf_counter() - arrivals.last >= quiet:
            return
        await asyncio.sleep(0.1)


# ───────────────────────────── many connections, reclaim ─────────────────────────────


async def connect_many(b: Broker, metadata: Metadata, port: int, count: int) -> None:
    async def one(_: int) -> None:
        await b.connect(metadata, port)

    await pooled(count, one)


async def connections(d: Daemon, sizes: Sizes) -> dict[str, Measurement]:
    """Idle connections held by one daemon, and its RSS per connection."""
    with peer("tcp-hold") as holder:
        async with broker(d) as b:
            count = sizes.connections
            sessions = [await b.open_session() for _ in range(0, count, CONNECTIONS_PER_SESSION)]
            rss_before, fds_before = rss_kib(d.pid), fd_count(d.pid)
            begin = time.perf_counter()
            async with asyncio.timeout(300.0):
                for index, metadata in enumerate(sessions):
                    share = min(CONNECTIONS_PER_SESSION, count - index * CONNECTIONS_PER_SESSION)
                    await connect_many(b, metadata, holder.port, share)
            seconds = time.perf_counter() - begin
            await asyncio.sleep(1.0)  # let the daemon settle: RSS of idle connections, not of the burst
            rss_after, fds_after = rss_kib(d.pid), fd_count(d.pid)
            for metadata in sessions:
                await b.close_session(metadata)
    extra = {
        "connections": count,
        "sessions": len(sessions),
        "connects_per_s": count / seconds,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "daemon_fds_added": fds_after - fds_before,
        "daemon_nofile_limit": nofile_limit(d.pid),
    }
    what = f"{count} idle TCP connections (Tcp.Connect) held; daemon VmRSS growth per connection"
    return {"rss_per_connection": Measurement((rss_after - rss_before) / count, "KiB", what, extra=extra)}


async def reclaim(d: Daemon, sizes: Sizes) -> dict[str, Measurement]:
    """Seconds from Sessions.Close until the daemon's fd count is back to its baseline."""
    with peer("tcp-hold") as holder:
        async with broker(d) as b:
            metadata = await b.open_session()  # the channel's connection is up before the baseline
            baseline = fd_count(d.pid)
            async with asyncio.timeout(120.0):
                await connect_many(b, metadata, holder.port, sizes.reclaim_sockets)
            held = fd_count(d.pid) - baseline
            begin = time.perf_counter()
            await b.close_session(metadata)
            replied = time.perf_counter() - begin
            seconds = await fds_back_to(d.pid, baseline, begin)
    what = f"session with {sizes.reclaim_sockets} TCP sockets dropped by Sessions.Close; until fd count is back"
    extra = {"sockets": sizes.reclaim_sockets, "fds_held": held, "close_reply_s": replied}
    return {"reclaim": Measurement(seconds, "s", what, extra=extra)}


async def fds_back_to(pid: int, baseline: int, begin: float) -> float:
    while fd_count(pid) > baseline:
        if time.perf_counter() - begin > RECLAIM_CAP:
            raise TimeoutError(f"fd count still {fd_count(pid)} > {baseline} after {RECLAIM_CAP:.0f} s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - begin


BROKER = {
    "grpc-stream": grpc_streams,
    "ws-stream": ws_stream,
    "unary": unary,
    "udp": udp_stream,
    "connections": connections,
    "reclaim": reclaim,
}
