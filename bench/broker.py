"""The baselines' shapes through sockbroker: one daemon subprocess per measurement group.

The daemon runs as ``python -m sockbroker serve`` on loopback ports with a fresh token file;
every call carries the bearer token, and every call after ``Sessions.Open`` the session id.
Peers (sink, holder, UDP blaster) are helper processes from bench.peers, as for the baselines.
Each function returns the :class:`Probe` of one broker figure; the daemon, its channel and a
session start on the group's first use, and every throughput probe meters the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from sockbroker_wire.v1 import broker_pb2 as pb
from sockbroker_wire.v1 import broker_pb2_grpc as rpc
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bench import profile
from bench.baselines import (
    GRPC_SIZES,
    TCP_CHUNK,
    UDP_SIZE,
    UNARY_CAP,
    WS_FRAME,
    blaster_sent,
    meter,
    stream_probe,
    udp_blaster,
    unary_figures_probe,
)
from bench.clients import (
    Arrivals,
    GrpcStreamPath,
    Timed,
    WsPath,
    batch_datagrams,
    channel,
    count_stream,
    grpc_upload,
    handoff,
    pooled,
    relay_channel,
    socket_upload,
    unary_figures,
    ws_upload,
)
from bench.common import KIB, LOOPBACK, UDP_PACED_RATE, Figure, Figures, Probe, Sample, cpu_per_gib
from bench.procs import REPO_DIR, CoresBusy, Helper, Stage, fd_count, free_port, nofile_limit, rss_kib

DAEMON_DIR = REPO_DIR / "daemon"
WIRE_DIR = REPO_DIR / "proto" / "python"

START_CAP = 30.0
#: Longer than any group (a session that outlived its lease would be dropped mid-group).
LEASE_SECONDS = 3600.0
#: The default quota is 20,000 handles per session and a connection holds two (in, out), so
#: P6's connections are spread over sessions of this many connections.
CONNECTIONS_PER_SESSION = 5_000
#: P6: descriptors a holder keeps for itself beside the connections it holds.
HOLDER_HEADROOM = 256
CONNECT_CAP = 300.0
RECLAIM_CAP = 10.0
#: P7 puts its sockets in one session: room for two handles per connection and some.
RECLAIM_HANDLES = 50_000
#: gRPC call metadata: the bearer token, then the session.
Metadata = tuple[tuple[str, str], ...]


# ───────────────────────────── the daemon ─────────────────────────────


@dataclass(frozen=True)
class Daemon:
    pid: int
    grpc_port: int
    rest_port: int
    token: str
    #: Where the daemon writes its runtime file (its default, beside the token file).
    runtime_file: Path

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
            yield Daemon(helper.pid, grpc_port, rest_port, token, token_file.parent / "runtime.json")
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

    async def close_connection(self, metadata: Metadata, connection: pb.ConnectionReply) -> None:
        """Close both ports of a connection (either may be closed already: a channel's end)."""
        for port in (getattr(connection, "in"), connection.out):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.ports.Close(pb.PortRequest(port=port), metadata=metadata)

    async def open_channel(self, metadata: Metadata, port: str, mode: str) -> pb.ChannelReply:
        """``Ports.OpenChannel`` (DESIGN §8): a ticket and where to redeem it."""
        try:
            reply: pb.ChannelReply = await self.ports.OpenChannel(
                pb.OpenChannelRequest(port=port, mode=mode), metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            raise RuntimeError(f"Ports.OpenChannel({mode}): {error.code().name}: {error.details()}") from None
        return reply


@contextlib.asynccontextmanager
async def broker(d: Daemon) -> AsyncIterator[Broker]:
    async with channel(d.grpc_port) as chan:
        yield Broker(chan, d.token)


async def client(stage: Stage, *flags: str) -> tuple[Daemon, Broker, Metadata]:
    """The group's daemon (started with ``flags`` on first use), a channel to it, and a session."""
    d: Daemon = await stage.shared("daemon", lambda: daemon(stage.daemon_argv(*flags)))
    if (path := stage.profile) is not None:
        await stage.shared("profile", lambda: profile.recording(d.pid, path))
    b: Broker = await stage.shared("broker", lambda: broker(d))
    metadata: Metadata = await stage.shared("session", b.session)
    return d, b, metadata


# ───────────────────────────── P1: the channels of DESIGN §8 ─────────────────────────────


def handoff_probe(stage: Stage) -> Probe:
    """``Tcp.Connect`` to the sink, ``OpenChannel(handoff)``, then the upload into the received socket."""

    async def once(total: int) -> Timed:
        d, b, metadata = await client(stage)
        sink = await stage.peer("tcp-sink")
        cap = stage.sizes.stream_cap
        connection = await b.connect(metadata, sink.port)
        try:
            reply = await b.open_channel(metadata, getattr(connection, "in"), "handoff")
            sock, pre_read = await asyncio.to_thread(handoff, reply.address, reply.ticket, cap)
            with sock:
                if pre_read:
                    raise RuntimeError(f"the hand-off carried {len(pre_read)} bytes already read; the sink sends none")
                return await asyncio.to_thread(socket_upload, sock, total, TCP_CHUNK, cap, meter(d.pid))
        finally:
            await b.close_connection(metadata, connection)

    what = f"Ports.OpenChannel(handoff): the client writes into the handed-off socket, {TCP_CHUNK // KIB} KiB writes"
    return stream_probe("broker.handoff", what, stage.sizes, once, chunk=TCP_CHUNK)


def relay_probe(stage: Stage) -> Probe:
    """``Tcp.Connect`` to the sink, ``OpenChannel(relay)``, then the upload into the channel connection."""

    async def once(total: int) -> Timed:
        d, b, metadata = await client(stage)
        sink = await stage.peer("tcp-sink")
        cap = stage.sizes.stream_cap
        connection = await b.connect(metadata, sink.port)
        try:
            reply = await b.open_channel(metadata, getattr(connection, "in"), "relay")
            with await asyncio.to_thread(relay_channel, reply.address, reply.ticket, cap) as sock:
                return await asyncio.to_thread(socket_upload, sock, total, TCP_CHUNK, cap, meter(d.pid))
        finally:
            await b.close_connection(metadata, connection)

    what = f"Ports.OpenChannel(relay): the daemon relays the channel to the sink, {TCP_CHUNK // KIB} KiB writes"
    return stream_probe("broker.relay", what, stage.sizes, once, chunk=TCP_CHUNK)


# ───────────────────────────── P2: Ports.Stream ─────────────────────────────


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


def ports_streams(stage: Stage) -> list[Probe]:
    def probe(size: int, name: str) -> Probe:
        async def once(total: int) -> Timed:
            d, b, metadata = await client(stage)
            sink = await stage.peer("tcp-sink")
            return await grpc_upload(ports_stream_path(b, metadata, sink.port), total, size, meter(d.pid))

        what = f"sockbroker Ports.Stream to a TCP sink, {size // KIB} KiB data frames"
        return stream_probe(f"broker.grpc_{name}", what, stage.sizes, once, message_size=size)

    return [probe(size, name) for size, name in GRPC_SIZES]


# ───────────────────────────── P3: the REST WebSocket stream ─────────────────────────────


async def ws_finish(ws: ClientConnection) -> None:
    """Send end-of-stream, then wait for the peer's (the sink closes once it sees ours)."""
    await ws.send(json.dumps({"eof": True}))
    with contextlib.suppress(ConnectionClosed):
        while True:
            message = await ws.recv()
            if isinstance(message, str) and json.loads(message).get("eof"):
                return


@contextlib.asynccontextmanager
async def rest_session(d: Daemon) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    auth = {"Authorization": f"Bearer {d.token}"}
    async with httpx.AsyncClient(base_url=d.rest_url, headers=auth, timeout=30.0) as http:
        opened = await http.post("/v1/sessions", json={"lease_seconds": LEASE_SECONDS})
        opened.raise_for_status()
        session = opened.json()["session"]
        try:
            yield http, session
        finally:
            with contextlib.suppress(httpx.HTTPError):
                await http.delete(f"/v1/sessions/{session}", headers={"Sockbroker-Session": session})


def rest_ws(stage: Stage) -> Probe:
    """A fresh connection to the sink per upload (``POST /v1/tcp/connections``), then its stream."""

    async def once(total: int) -> Timed:
        d, _b, _metadata = await client(stage)
        sink = await stage.peer("tcp-sink")
        http, session = await stage.shared("rest-session", lambda: rest_session(d))
        headers = (("Authorization", f"Bearer {d.token}"), ("Sockbroker-Session", session))
        reply = await http.post("/v1/tcp/connections", json={"hostname": LOOPBACK, "port": sink.port}, headers=headers)
        reply.raise_for_status()
        uri = f"ws://{LOOPBACK}:{d.rest_port}/v1/tcp/connections/{reply.json()['in']}/stream"
        return await ws_upload(WsPath(uri, headers=headers, finish=ws_finish), total, WS_FRAME, meter(d.pid))

    what = f"sockbroker REST WebSocket stream to a TCP sink, {WS_FRAME // KIB} KiB binary frames"
    return stream_probe("broker.ws", what, stage.sizes, once, frame_size=WS_FRAME)


# ───────────────────────────── P4: unary ─────────────────────────────


@contextlib.asynccontextmanager
async def connected(b: Broker, metadata: Metadata, port: int) -> AsyncIterator[str]:
    """A connection to ``port`` for as long as the block lasts; yields its input port."""
    connection = await b.connect(metadata, port)
    try:
        yield getattr(connection, "in")
    finally:
        await b.close_connection(metadata, connection)


def unary(stage: Stage) -> Probe:
    """``Handles.Describe {handle: <in>}`` on an open TCP connection."""

    async def prepare() -> tuple[Daemon, Broker, Metadata, pb.HandleRequest]:
        d, b, metadata = await client(stage)
        holder = await stage.peer("tcp-hold")
        handle: str = await stage.shared("held-connection", lambda: connected(b, metadata, holder.port))
        return d, b, metadata, pb.HandleRequest(handle=handle)

    async def run() -> Figures:
        d, b, metadata, request = await prepare()
        latency, throughput = await unary_figures(
            lambda: b.handles.Describe(request, metadata=metadata), stage.sizes, UNARY_CAP, meter(d.pid)
        )
        return {"broker.unary_p50": latency, "broker.unary_64": throughput}

    return unary_figures_probe("broker", "sockbroker Handles.Describe", run, prepare)


# ───────────────────────────── P5: UDP ─────────────────────────────


async def bound_udp(b: Broker, metadata: Metadata) -> tuple[str, int]:
    udp = (await b.udp.Open(pb.UdpOpenRequest(), metadata=metadata)).udp
    await b.udp.Bind(pb.UdpBindRequest(udp=udp, hostname=LOOPBACK, port=0), metadata=metadata)
    addresses = await b.handles.Addresses(pb.AddressesRequest(handle=udp, port_numbers=True), metadata=metadata)
    return udp, addresses.local_port


async def settle(arrivals: Arrivals, quiet: float = 0.5, cap: float = 10.0) -> None:
    """Wait until no datagram has arrived for ``quiet`` seconds (at most ``cap`` seconds)."""
    for _ in range(round(cap / 0.1)):
        if time.perf_counter() - arrivals.last >= quiet:
            return
        await asyncio.sleep(0.1)


def udp(stage: Stage, rate: int) -> Probe:
    """A fresh bound UDP socket per round, ``Udp.ReceiveStream {packed: true}`` counted by the client
    while the blaster sends to it as fast as it can (``rate`` 0) or paced at ``rate``/s."""
    seconds = stage.sizes.udp_paced_seconds if rate else stage.sizes.udp_seconds
    key = "broker.udp_paced_lost" if rate else "broker.udp_max"

    async def run() -> Figures:
        d, b, metadata = await client(stage)
        udp, port = await bound_udp(b, metadata)
        try:
            call = b.udp.ReceiveStream(pb.UdpReceiveStreamRequest(udp=udp, packed=True), metadata=metadata)
            await asyncio.sleep(0.2)  # let the stream reach the daemon before the first datagram
            arrivals, stop = Arrivals(), asyncio.Event()
            counting = asyncio.ensure_future(count_stream(call, arrivals, stop, batch_datagrams))
            cpu = meter(d.pid)
            cpu_before = cpu()
            blaster, machine = udp_blaster(port, seconds, rate), CoresBusy()
            try:
                sent = await asyncio.to_thread(blaster_sent, blaster, seconds)
                cores = machine.reading()  # while the blaster sent
                await settle(arrivals)
            finally:
                stop.set()
                await counting
                blaster.stop()
            cpu_spent = cpu() - cpu_before
            described = await b.handles.Describe(pb.HandleRequest(handle=udp), metadata=metadata)
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await b.udp.Close(pb.UdpRequest(udp=udp), metadata=metadata)
        extra = {
            "seconds": seconds,
            "sent": sent,
            "received": arrivals.count,
            "lost": sent - arrivals.count,
            "datagrams_per_s": arrivals.rate(),
            "queue_dropped": described.queue_dropped,
            "kernel_dropped": described.kernel_dropped,
            **cores,
        }
        if rate:
            return {key: Sample(sent - arrivals.count, extra=extra)}
        return {key: Sample(arrivals.rate(), cpu_per_gib(cpu_spent, arrivals.count * UDP_SIZE), extra)}

    via = "relayed by Udp.ReceiveStream {packed: true}"
    if rate:
        figure = Figure(key, "lost", f"{UDP_SIZE}-byte datagrams paced at {rate:,}/s for {seconds:g} s, {via}")
    else:
        figure = Figure(key, "datagrams/s", f"{UDP_SIZE}-byte datagrams blasted for {seconds:g} s, {via}")
    return Probe((figure,), run, cap=seconds + 40)


def udp_max(stage: Stage) -> Probe:
    return udp(stage, 0)


def udp_paced(stage: Stage) -> Probe:
    return udp(stage, UDP_PACED_RATE)


# ───────────────────────────── P6: many idle connections ─────────────────────────────


async def connect_many(b: Broker, metadata: Metadata, ports: list[int], count: int, first: int = 0) -> None:
    """``count`` connections, 64 at a time, spread over the holders listening on ``ports``."""

    async def one(index: int) -> None:
        await b.connect(metadata, ports[(first + index) % len(ports)])

    await pooled(count, one)


async def connect_until_refused(
    b: Broker, metadata: Metadata, ports: list[int], count: int, first: int
) -> tuple[int, str]:
    """Like ``connect_many``, but a ``RESOURCE_EXHAUSTED`` refusal (the daemon's descriptors are
    all lent) stops it: how many connections were made, and the refusal's details ("" if none)."""
    made, refused = 0, ""

    async def one(index: int) -> None:
        nonlocal made, refused
        if refused:
            return
        try:
            await b.connect(metadata, ports[(first + index) % len(ports)])
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            refused = " ".join((error.details() or "RESOURCE_EXHAUSTED").split())
            return
        made += 1

    await pooled(count, one)
    return made, refused


def connections(stage: Stage) -> Probe:
    """As many idle connections as the daemon will lend (DESIGN §7 wants 100,000; the open-file
    limit stops it first here), and the daemon's RSS growth per connection."""

    async def run() -> Figures:
        d, b, _metadata = await client(stage)
        wanted = stage.sizes.connections
        limit = nofile_limit(d.pid)
        per_holder = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - HOLDER_HEADROOM
        holders = [
            await stage.peer("tcp-hold", f"tcp-hold-{i}") for i in range(math.ceil(min(wanted, limit) / per_holder))
        ]
        ports = [holder.port for holder in holders]
        sessions: list[Metadata] = []
        held, refused = 0, ""
        try:
            rss_before, fds_before = rss_kib(d.pid), fd_count(d.pid)
            begin = time.perf_counter()
            async with asyncio.timeout(CONNECT_CAP):
                while held < wanted and not refused:
                    sessions.append(await b.open_session())
                    share = min(CONNECTIONS_PER_SESSION, wanted - held)
                    made, refused = await connect_until_refused(b, sessions[-1], ports, share, held)
                    held += made
            seconds = time.perf_counter() - begin
            await asyncio.sleep(1.0)  # let the daemon settle: RSS of idle connections, not of the burst
            rss_after, fds_after = rss_kib(d.pid), fd_count(d.pid)
        finally:
            for metadata in sessions:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await b.close_session(metadata)
        extra = {
            "connections": held,
            "wanted": wanted,
            "refused": refused,
            "daemon_nofile_limit": limit,
            "nofile_hard_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            "holders": len(holders),
            "sessions": len(sessions),
            "connects_per_s": held / seconds,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "daemon_fds_added": fds_after - fds_before,
        }
        return {"broker.rss_per_connection": Sample((rss_after - rss_before) / held, extra=extra)}

    what = "idle TCP connections (Tcp.Connect, 64 callers) held until the daemon refuses; its VmRSS growth each"
    figure = Figure("broker.rss_per_connection", "KiB", what)
    return Probe((figure,), run, cap=CONNECT_CAP + 60, every_round=False)


# ───────────────────────────── P7: reclaim of a dropped session ─────────────────────────────


async def fds_back_to(pid: int, baseline: int, begin: float) -> float:
    while fd_count(pid) > baseline:
        if time.perf_counter() - begin > RECLAIM_CAP:
            raise TimeoutError(f"fd count still {fd_count(pid)} > {baseline} after {RECLAIM_CAP:.0f} s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - begin


def reclaim(stage: Stage) -> Probe:
    """A session with ``reclaim_sockets`` TCP connections is closed; seconds until the daemon's fd
    count is back to what it was before they were opened."""
    sockets = stage.sizes.reclaim_sockets

    async def run() -> Figures:
        d, b, _metadata = await client(stage, f"--max-handles-per-session={RECLAIM_HANDLES}")
        holder = await stage.peer("tcp-hold")
        metadata = await b.open_session()
        try:
            baseline = fd_count(d.pid)
            async with asyncio.timeout(CONNECT_CAP):
                await connect_many(b, metadata, [holder.port], sockets)
            held = fd_count(d.pid) - baseline
        except BaseException:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await b.close_session(metadata)
            raise
        begin = time.perf_counter()
        await b.close_session(metadata)
        replied = time.perf_counter() - begin
        seconds = await fds_back_to(d.pid, baseline, begin)
        extra = {"sockets": sockets, "fds_held": held, "close_reply_s": replied}
        return {"broker.reclaim": Sample(seconds, extra=extra)}

    what = f"a session with {sockets:,} TCP sockets dropped by Sessions.Close; until the daemon's fd count is back"
    return Probe((Figure("broker.reclaim", "s", what),), run, cap=CONNECT_CAP + 60)
