"""The gRPC front door: decode, one core call, encode.

Handlers are made from the proto's descriptors (:mod:`sockbroker_wire.routes`), so every RPC is
served and none is written by hand: unary RPCs go through :func:`.dispatch.call`, the streaming
ones to the core's stream methods. Core errors become a status exactly once, through the wire
package's table (:func:`sockbroker_wire.errors.grpc_status`).

Delivery: a unary reply counts as delivered when gRPC core has written it and the client's kernel
acknowledged it (:meth:`_Door._settle`); a call cancelled while it runs, or whose client left
before its reply reached it, has its effects given back.

Connection hygiene (DESIGN §5): :func:`server_options` are the gRPC server's channel arguments,
every one derived from :class:`~sockbroker.core.limits.Limits` (handshake, idle and keepalive
timings, message size); :class:`ConnectionWatch` does what gRPC core cannot: it closes client
connections that have not made a call with a valid token within ``unauthenticated_timeout``,
past ``connections_per_door`` closes the oldest such connections first, so connections that hold
no token never crowd out one that does, and while the door is full it stops new connections at
the kernel (their SYNs are dropped), so that clients whose connections it closes cannot storm it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import stat
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn, TypeAlias

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from sockbroker_wire.admin.v1 import admin_pb2
from sockbroker_wire.codec import from_dict, to_dict
from sockbroker_wire.errors import grpc_status
from sockbroker_wire.frames import batch_datagrams
from sockbroker_wire.packed import PackedError, pack_datagrams
from sockbroker_wire.routes import Route, routes
from sockbroker_wire.v1 import broker_pb2 as pb

from ..core._net import drop_every_packet
from ..core.admin import Admin
from ..core.breaks import Call
from ..core.broker import Api, AttachEvent, Broker, Credentials, Direction, Principal
from ..core.errors import BrokerError, ContractError
from ..core.events import Event
from ..core.limits import Limits
from ..core.tcp import MAX_READ
from ..metrics import Metrics
from . import dispatch
from ._delivery import Delivery, peer_gone, settle
from ._in_flight import ByteBudget

__all__ = [
    "CALL_METADATA",
    "SESSION_METADATA",
    "STREAM_WINDOW",
    "ConnectionWatch",
    "GrpcDoor",
    "error_status",
    "generic_handlers",
    "server_options",
]

log = logging.getLogger(__name__)

SESSION_METADATA = "sockbroker-session"
CALL_METADATA = "sockbroker-call"

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def error_status(exc: BrokerError) -> grpc.Status:
    """A core error as a gRPC status with its ErrorInfo detail (the wire package's table)."""
    return grpc_status(exc.kind, exc.message, errno=exc.errno, errno_family=exc.errno_family)


class _Malformed:
    """A request whose bytes did not decode: answered with a contract error, not INTERNAL."""

    def __init__(self, error: str) -> None:
        self.error = error


def _decoder(cls: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    def decode(data: bytes) -> Message | _Malformed:
        try:
            return cls.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return _Malformed(str(exc))

    return decode


#: A request's ``bytes`` field at least this long is handed to the core as a view of the
#: request's own buffer instead of a copy of it (:func:`_fields_decoder`).
_VIEW_AT = 64 * 1024


def _fields_decoder(cls: type[Message]) -> Callable[[bytes], dict[str, Any] | _Malformed]:
    """A unary request as the core's dict (:func:`to_dict`), parsed and checked by protobuf; in a
    long request, its ``bytes`` fields (a ``Ports.Write``'s data) are taken out before protobuf
    parses the rest, and reach the core as read-only views of the received message, which gRPC
    holds for the whole call anyway (short ones as bytes). Protobuf never copies them, nor does
    :func:`to_dict`: a 4 MiB write in flight costs the daemon 4 MiB, not 12 (DESIGN §7 P8)."""
    viewed = {
        f.number: f.name
        for f in cls.DESCRIPTOR.fields
        if f.type == FieldDescriptor.TYPE_BYTES and (f.containing_oneof is None or len(f.containing_oneof.fields) == 1)
    }

    def decode(data: bytes) -> dict[str, Any] | _Malformed:
        taken: dict[int, memoryview] = {}
        rest = data
        if viewed and len(data) >= _VIEW_AT:
            split = _split_fields(memoryview(data), viewed.keys())
            if split is not None:
                taken, rest = split
        try:
            fields = to_dict(cls.FromString(rest))
        except (DecodeError, ValueError, RuntimeError) as exc:
            return _Malformed(str(exc))
        for number, view in taken.items():
            fields[viewed[number]] = view if len(view) >= _VIEW_AT else bytes(view)
        return fields

    return decode


def _split_fields(raw: memoryview, numbers: Collection[int]) -> tuple[dict[int, memoryview], bytes] | None:
    """The top-level length-delimited fields ``numbers`` of the protobuf message ``raw``, each as a
    view of its last occurrence (proto3: the last one counts), and the message without them; None
    when ``raw`` is not plain wire format, for protobuf to parse whole (and judge)."""
    taken: dict[int, memoryview] = {}
    kept: list[memoryview] = []
    at, end, since = 0, len(raw), 0
    try:
        while at < end:
            field = at
            tag, at = _varint(raw, at)
            wire = tag & 7
            if wire == 0:
                _, at = _varint(raw, at)
            elif wire == 1:
                at += 8
            elif wire == 5:
                at += 4
            elif wire == 2:
                size, at = _varint(raw, at)
                if tag >> 3 in numbers and at + size <= end:
                    kept.append(raw[since:field])
                    taken[tag >> 3] = raw[at : at + size]
                    since = at + size
                at += size
            else:  # groups: not in this API's messages
                return None
    except IndexError:  # a varint cut short
        return None
    if at != end:
        return None
    kept.append(raw[since:end])
    return taken, b"".join(kept)


_STREAM_DATA_FIELD = pb.StreamFrame.DESCRIPTOR.fields_by_name["data"].number
_STREAM_DATA = frozenset({_STREAM_DATA_FIELD})
#: A ``StreamFrame``'s ``data`` field: its tag (field number, wire type 2), then the length.
_STREAM_DATA_TAG = bytes([_STREAM_DATA_FIELD << 3 | 2])
_EOF_FRAME = pb.StreamFrame(eof=True)


class _StreamFrame(NamedTuple):
    """A ``Ports.Stream`` request frame as :func:`_stream_frame` decodes it."""

    port: str
    data: bytes | memoryview
    eof: bool


def _stream_frame(raw: bytes) -> _StreamFrame | _Malformed:
    """A ``Ports.Stream`` request frame whose ``data`` is a read-only view of the received message,
    as gRPC handed it over: protobuf parses only the rest (the port, ``eof``, unknown fields), so
    the bytes go to the socket without ever being copied in the daemon. A frame of ``data``
    alone (every frame but the first and the last, most often) is read without protobuf."""
    view = memoryview(raw)
    if raw[:1] == _STREAM_DATA_TAG:
        try:
            size, at = _varint(view, 1)
        except IndexError:
            size = at = 0
        if at and at + size == len(raw):
            return _StreamFrame("", view[at:], False)
    data: bytes | memoryview = b""
    rest = raw
    split = _split_fields(view, _STREAM_DATA)
    if split is not None:
        taken, rest = split
        data = taken.get(_STREAM_DATA_FIELD, b"")
    try:
        frame = pb.StreamFrame.FromString(rest)
    except (DecodeError, ValueError, RuntimeError) as exc:
        return _Malformed(str(exc))
    return _StreamFrame(frame.port, data if split is not None else frame.data, frame.eof)


def _stream_frame_bytes(frame: bytes | Message) -> bytes:
    """A ``Ports.Stream`` reply frame on the wire: bytes from the peer become a ``StreamFrame``
    holding only ``data`` (its tag, its length, the bytes: one copy, the only one the daemon
    makes); any other frame is a message protobuf serializes."""
    if isinstance(frame, Message):
        return frame.SerializeToString()
    if not frame:
        return b""  # proto3 writes no empty field
    return b"".join((_STREAM_DATA_TAG, _varint_bytes(len(frame)), frame))


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint(raw: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _checked(message: Any, who: str) -> Any:
    if isinstance(message, _Malformed):
        raise ContractError(who, "malformed request", {"reason": message.error})
    return message


async def _write(context: Context, message: object) -> None:
    """A stream's ``context.write``. A write gRPC core could not do (the client's connection went
    before gRPC noticed the client had left) ends the call as the client's cancel would: grpcio
    would log it at ERROR, with a traceback, when the handler lets it out."""
    try:
        await context.write(message)
    except grpc.aio.InternalError:  # cygrpc's ExecuteBatchError: the send failed in core
        raise asyncio.CancelledError from None


async def _frames(requests: AsyncIterator[Any], who: str) -> AsyncIterator[Any]:
    async for message in requests:
        yield _checked(message, who)


def _peer_address(peer: str) -> tuple[str, int] | None:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` (``context.peer()``) as (host, port)."""
    scheme, _, rest = peer.partition(":")
    host, _, port = rest.rpartition(":")
    if scheme not in ("ipv4", "ipv6") or not port.isdigit():
        return None
    return urllib.parse.unquote(host).strip("[]"), int(port)


@contextlib.contextmanager
def _borrowed(fd: int, inode: int | None = None) -> Iterator[socket.socket]:
    """A socket object over descriptor ``fd``, which gRPC owns: detached, never closed, at the
    end. OSError when ``fd`` is not open or (``inode`` given) no longer that socket: closing or
    touching a reused number would hit another file."""
    if inode is not None and os.fstat(fd).st_ino != inode:
        raise OSError(errno.EBADF, "descriptor reused", fd)
    sock = socket.socket(fileno=fd)
    try:
        yield sock
    finally:
        sock.detach()


def _client_of(fd: int, ports: Collection[int]) -> tuple[str, int] | None:
    """The peer of socket ``fd`` (borrowed, never closed) when it is a TCP connection accepted on
    one of the door's ``ports``, or None. The local port matters: the broker's own connections
    may have a peer of the same address (a port the kernel gave two connections to two places)."""
    try:
        with _borrowed(fd) as sock:
            if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                return None
            local, remote = sock.getsockname(), sock.getpeername()
    except OSError:
        return None  # not open any more, or a listening socket (it has no peer)
    if local[1] not in ports:
        return None
    host = str(remote[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:") :]  # gRPC listens dual-stack; context.peer() names the IPv4 address
    return host, int(remote[1])


def _listening_on(port: int) -> list[tuple[int, int]]:
    """This process's listening TCP sockets on ``port``, as (descriptor, inode)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            inode = os.fstat(fd).st_ino
            with _borrowed(fd) as sock:
                if (
                    sock.type == socket.SOCK_STREAM
                    and sock.family in (socket.AF_INET, socket.AF_INET6)
                    and sock.getsockname()[1] == port
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                ):
                    found.append((fd, inode))
        except OSError:
            continue
    return found


def _least_reply_bytes(reply: Message) -> int:
    """The fewest bytes a unary reply takes on an HTTP/2 connection: a HEADERS frame, a DATA frame
    with the 5-byte gRPC prefix and the message, and a trailing HEADERS frame (9-byte frame
    headers, at least one byte of header block each)."""
    return 3 * 9 + 2 + 5 + reply.ByteSize()


class _Connections:
    """The daemon's socket of each gRPC client connection, found from ``context.peer()``, so the
    door can look at it as the REST door looks at its own: a FIN or a reset already waiting
    there means the client has gone. gRPC itself tells a handler of a client's cancel or close
    only some 50-100 µs later (and never once the reply is written), so without this look a
    reply written at once after the client left would count as delivered."""

    def __init__(self, ports: Collection[int]) -> None:
        self._ports = ports  # the door's, shared with its ConnectionWatch
        self._fds: dict[tuple[str, int], int] = {}

    def socket_of(self, peer: str) -> int | None:
        """The daemon's socket for ``peer`` (borrowed); None when it is gone."""
        address = _peer_address(peer)
        if address is None:
            return None
        fd = self._fds.get(address)
        if fd is None or _client_of(fd, self._ports) != address:
            fd = self._find(address)
        return fd

    def _find(self, address: tuple[str, int]) -> int | None:
        self._fds = {a: fd for a, fd in self._fds.items() if _client_of(fd, self._ports) == a}
        for name in reversed(os.listdir("/proc/self/fd")):
            fd = int(name)
            try:
                if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                    continue
            except OSError:
                continue
            if _client_of(fd, self._ports) == address:
                self._fds[address] = fd
                return fd
        return None


#: Connections gRPC core accepts past ``connections_per_door`` before it closes new ones at once
#: (``grpc.max_allowed_incoming_connections``). The watch closes the oldest connections without
#: a token down to ``connections_per_door`` every period, so this many newcomers (a client with the
#: token among them) find room between sweeps, and a burst of connections costs gRPC core at most
#: this many more (about 15 KiB each) instead of all of them until the next sweep.
GRPC_CONNECTION_HEADROOM = 256

#: The HTTP/2 receive window of each gRPC stream: what gRPC core takes of a message no handler is
#: reading yet, and of one it will refuse as too large. Core's own choice, with its bandwidth-delay
#: probe on, is at least 4 MiB and grows with the link (twice its bandwidth-delay product) while
#: its memory quota, which grpcio does not let Python set, reports no pressure: 8 clients' 30 MiB
#: messages, each refused, then took up to +100 MiB (bench/README.md). Fixed, it costs 1 MiB
#: ``Ports.Stream`` messages about 6 % of their throughput.
STREAM_WINDOW = 4 * 1024 * 1024

#: Room for the fields around the bytes of the largest reply (a ReadReply's ``eof``, framing).
_REPLY_OVERHEAD = 64 * 1024


def server_options(limits: Limits) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments, each derived from ``limits`` (grpcio 1.85 honours every
    one; ``tests/behaviour/test_grpc_abuse.py`` checks the timings against a real server).

    A peer that stops answering (frozen, or its host gone without a FIN or RST) is pinged after
    ``grpc_keepalive_interval`` seconds without traffic from it and dropped when the ack has not come
    ``grpc_keepalive_timeout`` seconds later: at most interval + timeout after its last packet.
    gRPC core since 1.5x times the ack with ``grpc.http2.ping_timeout_ms`` (default 60 s) and not
    with ``grpc.keepalive_timeout_ms``, so both are set.
    """
    interval_ms = round(limits.grpc_keepalive_interval * 1000)
    timeout_ms = round(limits.grpc_keepalive_timeout * 1000)
    return [
        ("grpc.max_receive_message_length", limits.max_request_bytes),
        # Replies are bounded by the core (a read takes at most MAX_READ bytes), not by the
        # request limit: a reply gRPC refused to send would lose what its call took.
        ("grpc.max_send_message_length", max(limits.max_request_bytes, MAX_READ + _REPLY_OVERHEAD)),
        # Liveness of the peer: an attachment whose client is gone breaks in bounded time.
        ("grpc.keepalive_time_ms", interval_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients may ping too (the Python client does not by default): not more often than this
        # without data, or they get GOAWAY after two strikes (gRPC core's default).
        ("grpc.http2.min_ping_interval_without_data_ms", min(5_000, interval_ms)),
        # A connection must finish its handshake (TLS, the HTTP/2 preface and SETTINGS) in time.
        ("grpc.server_handshake_timeout_ms", round(limits.header_timeout * 1000)),
        # A connection with no call in progress is closed (GOAWAY); an attachment is a call.
        ("grpc.max_connection_idle_ms", round(limits.idle_timeout * 1000)),
        # Flow control: a fixed window per stream, not one that grows with the link.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", STREAM_WINDOW),
        ("grpc.so_reuseport", 0),  # a busy port is an error, never a port shared with another daemon
        # A hard cap at accept time: past it core closes a new connection before it costs anything.
        ("grpc.max_allowed_incoming_connections", limits.connections_per_door + GRPC_CONNECTION_HEADROOM),
    ]


@dataclass
class _Client:
    """One client connection of the door, as the watch sees it."""

    fd: int
    inode: int
    peer: tuple[str, int]
    seen: float
    authenticated: bool = False


class ConnectionWatch:
    """The door's client connections (TCP only: a Unix socket is gated by its file mode), found
    the way :class:`_Connections` finds them: sockets in /proc/self/fd whose local address is the
    door's port. Every :attr:`period` seconds it

    - closes (``shutdown(2)``; gRPC then closes the descriptor) every connection that has not
      made a call with a valid token within ``unauthenticated_timeout`` of being seen, whatever it
      is doing (a half-sent request, health checks, wrong tokens);
    - past ``connections_per_door``, closes the oldest connections without a valid token first,
      never one that made a call with the token;
    - while the door still holds ``connections_per_door`` connections, has the kernel drop new
      connections' SYNs on the door's listening sockets (:func:`drop_every_packet`): they wait,
      retransmitting their SYNs (after 1, 3, 7, 15… s), until a sweep finds room again. gRPC core
      cannot stop accepting, and closes a connection past its hard cap (``connections_per_door``
      + :data:`GRPC_CONNECTION_HEADROOM`) the moment it accepts it: an attacker that reconnects
      at once then makes it accept and close thousands of connections a second. A dropped SYN
      costs nothing and the client backs off. Connections already made are untouched.

    gRPC core closes connections that never finish their handshake (``header_timeout``) and
    connections with no call in progress (``idle_timeout``) itself (:func:`server_options`).
    A connection counts from the sweep that first sees it: the figures are up to :attr:`period`
    late."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.period = min(1.0, limits.unauthenticated_timeout / 4)
        self.closed = 0  # connections this watch has closed, for tests and the bench
        self.ports: set[int] = set()  # the door's TCP ports
        self._clients: dict[int, _Client] = {}
        self._authenticated: set[tuple[str, int]] = set()
        #: ``context.peer()`` strings already parsed by :meth:`authenticated` (a cache).
        self._addresses: dict[str, tuple[str, int]] = {}
        self._listeners: list[tuple[int, int]] = []  # the door's listening sockets: (fd, inode)
        self.gated = False  # new connections' SYNs are dropped (the door is full)
        self._task: asyncio.Task[None] | None = None

    def watch(self, port: int) -> None:
        """Start watching the connections to the door's TCP ``port``."""
        self.ports.add(port)
        self._listeners += _listening_on(port)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="grpc-connection-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._gate(closed=False)

    def authenticated(self, peer: str) -> None:
        """A call from ``peer`` (``context.peer()``) presented a valid token."""
        address = self._addresses.get(peer)
        if address is None:
            address = _peer_address(peer)
            if address is None:
                return
            if len(self._addresses) >= self.limits.connections_per_door + GRPC_CONNECTION_HEADROOM:
                self._addresses.clear()
            self._addresses[peer] = address
        if address not in self._authenticated:
            self._authenticated.add(address)
            for client in self._clients.values():
                if client.peer == address:
                    client.authenticated = True

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.sweep()
            except Exception:  # pragma: no cover - a sweep must never end the watch
                log.exception("gRPC connection watch: sweep failed")

    async def sweep(self) -> None:
        """One scan and its closes. The scan reads /proc/self/fd (about 4 µs per descriptor): in a
        thread, so that a daemon with thousands of sockets does not stall its event loop."""
        now = time.monotonic()
        self._adopt(await asyncio.to_thread(self._scanned, now))
        limits = self.limits
        doomed = [
            c for c in self._clients.values() if not c.authenticated and now - c.seen >= limits.unauthenticated_timeout
        ]
        excess = len(self._clients) - len(doomed) - limits.connections_per_door
        if excess > 0:
            waiting = sorted(
                (c for c in self._clients.values() if not c.authenticated and c not in doomed), key=lambda c: c.seen
            )
            doomed += waiting[:excess]
        held = len(self._clients) - len(doomed)
        for client in doomed:
            self._shut(client)
        self._gate(closed=held >= limits.connections_per_door)

    def _gate(self, *, closed: bool) -> None:
        """Stop new connections at the kernel (``closed``), or let them in again."""
        if closed == self.gated:
            return
        for fd, inode in self._listeners:
            with contextlib.suppress(OSError), _borrowed(fd, inode) as sock:
                drop_every_packet(sock, closed)
        self.gated = closed
        if closed:
            log.info("gRPC door full (%d connections): new connections wait", self.limits.connections_per_door)
        else:
            log.info("gRPC door: room for new connections again")

    def _adopt(self, current: dict[int, _Client]) -> None:
        """Take a scan's result (on the loop): a peer that authenticated while it ran counts."""
        for client in current.values():
            if not client.authenticated and client.peer in self._authenticated:
                client.authenticated = True
        self._clients = current
        self._authenticated &= {c.peer for c in current.values()}
        self._addresses = {peer: address for peer, address in self._addresses.items() if address in self._authenticated}

    def _scanned(self, now: float) -> dict[int, _Client]:
        """The door's client connections among the process's sockets now (safe in a thread: it
        only reads :attr:`_clients` and :attr:`_authenticated`)."""
        current: dict[int, _Client] = {}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if not stat.S_ISSOCK(st.st_mode):
                continue
            known = self._clients.get(fd)
            if known is not None and known.inode == st.st_ino:
                current[fd] = known
                continue
            peer = _client_of(fd, self.ports)
            if peer is not None:
                current[fd] = _Client(fd, st.st_ino, peer, now, peer in self._authenticated)
        return current

    def _shut(self, client: _Client) -> None:
        """Close a client connection under gRPC's feet: ``shutdown(2)`` makes its reads end, and
        gRPC closes the descriptor it owns (closing it here could close a reused number)."""
        try:
            with _borrowed(client.fd, client.inode) as sock:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    self.closed += 1
                    log.debug("gRPC door: closed connection from %s:%d (no valid token)", *client.peer)
                except OSError:
                    pass
        except OSError:
            return  # gone, or its number is another file's now
        self._clients.pop(client.fd, None)


def _client_certificate(context: Context) -> bytes | None:
    """The DER certificate the caller's TLS connection verified, if it presented one."""
    pem = (context.auth_context() or {}).get("x509_pem_cert")
    if not pem:
        return None
    return ssl.PEM_cert_to_DER_cert(pem[0].decode("ascii", "replace"))


class _Door:
    def __init__(self, broker: Broker, metrics: Metrics | None, watch: ConnectionWatch, *, mtls: bool = False) -> None:
        self.broker = broker
        #: The door requires client certificates: a caller without a token may be named by its own.
        self.mtls = mtls
        self.metrics = metrics
        self.connections = _Connections(watch.ports)
        self.watch = watch
        limits = broker.limits
        self.budget = ByteBudget(max(limits.request_bytes_in_flight, limits.max_request_bytes))

    def _metadata(self, context: Context) -> dict[str, str]:
        return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}

    def authenticate(self, context: Context, metadata: dict[str, str]) -> Principal:
        """The caller's principal: its ``authorization`` metadata, else the client certificate its
        TLS connection verified (mTLS). Its connection is then one that holds credentials. (gRPC
        shows a handler no Unix peer credentials: a Unix-socket caller presents a token.)"""
        authorization = metadata.get("authorization")
        if authorization is None and self.mtls:
            credentials = Credentials(certificate=_client_certificate(context))
        else:
            credentials = Credentials(authorization or "")
        principal = self.broker.authenticate(credentials)
        self.watch.authenticated(context.peer())
        return principal

    def api(self, context: Context, who: str) -> Api:
        metadata = self._metadata(context)
        principal = self.authenticate(context, metadata)
        return self.broker.api(principal, metadata.get(SESSION_METADATA), who)

    def count(self, method: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count("grpc", method, outcome)

    async def abort(self, name: str, context: Context, exc: BrokerError) -> NoReturn:
        self.count(name, exc.kind)
        status = error_status(exc)
        await context.abort(status.code, status.details, status.trailing_metadata)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def guard(self, name: str, context: Context, body: Awaitable[Any]) -> Any:
        """Run a handler's body; a core error ends the call with its status."""
        try:
            result = await body
        except BrokerError as exc:
            await self.abort(name, context, exc)
        self.count(name, "ok")
        return result

    # ── unary ──────────────────────────────────────────────────────────────
    def _settle(self, call: Call, peer: str, reply: Message) -> None:
        """The fate of a reply about to be handed to gRPC core, which writes it in its own threads
        (message and status in one write). A client already gone (a FIN or reset waiting on its
        socket, or the socket closed) will not get it; otherwise :meth:`._delivery.Delivery.written`
        watches the socket until core has written the reply and the client's kernel acknowledged
        it, or the client has left first. gRPC would tell the handler of neither: once the
        handler has returned, a cancel is no longer reported to it."""
        if not call.holds or _peer_address(peer) is None:
            call.finish(delivered=True)  # nothing to give back; or a Unix socket peer, nothing to look at
            return
        fd = self.connections.socket_of(peer)
        delivery = None if fd is None or peer_gone(fd) else Delivery.of(fd)
        if delivery is None:
            call.finish(delivered=False)
        else:
            settle(call, delivery, delivery.written(_least_reply_bytes(reply)))

    def unary(self, route: Route) -> grpc.RpcMethodHandler:
        """A unary RPC: one core call; its effects stand or go back as :meth:`_settle` finds. A
        cancel that gRPC reports while the call runs (the handler is cancelled) gives them back.

        A request carrying bytes to send (:func:`.dispatch.sends_bytes`) is served
        as a client-streaming RPC (the same on the wire: one message, then the client's
        half-close), so that the door decides when its message is read: after the caller's token
        and session are checked, once the session admits it (:meth:`Api.sending`), and once the
        door's :class:`ByteBudget` of ``request_bytes_in_flight`` has room for the largest message
        (its size is unknown until it is read; then the call keeps its real size until it is
        done), as the REST door does with a body. Until then gRPC core holds at most the stream's
        flow-control window of it (:data:`STREAM_WINDOW`), and a flood of big writes waits in its
        clients rather than in the daemon (DESIGN §7 P8)."""
        decode = _fields_decoder(route.input)
        serialize = route.output.SerializeToString
        if not dispatch.sends_bytes(route):

            async def body(request: Any, context: Context) -> Message:
                values = _checked(request, route.name)
                metadata = self._metadata(context)
                return await self._run(route, context, metadata, self.authenticate(context, metadata), values)

            async def handler(request: Any, context: Context) -> Message:
                return await self.guard(route.name, context, body(request, context))  # type: ignore[no-any-return]

            return grpc.unary_unary_rpc_method_handler(
                handler, request_deserializer=decode, response_serializer=serialize
            )

        async def sending(context: Context) -> Message:
            metadata = self._metadata(context)
            principal = self.authenticate(context, metadata)
            admission = self.broker.api(principal, metadata.get(SESSION_METADATA), route.name).sending()
            async with admission, self.budget.holding(self.broker.limits.max_request_bytes) as keep:
                raw = await context.read()
                if not isinstance(raw, bytes):  # grpc.aio.EOF: the client sent no message
                    raise ContractError(route.name, "the request ended before its message")
                keep(len(raw))
                values = _checked(decode(raw), route.name)
                del raw
                return await self._run(route, context, metadata, principal, values)

        async def streamed(_requests: object, context: Context) -> Message:
            return await self.guard(route.name, context, sending(context))  # type: ignore[no-any-return]

        return grpc.stream_unary_rpc_method_handler(streamed, response_serializer=serialize)

    async def _run(
        self, route: Route, context: Context, metadata: dict[str, str], principal: Principal, values: dict[str, Any]
    ) -> Message:
        fields, call = await dispatch.call(
            self.broker, route.name, principal, metadata.get(SESSION_METADATA), values, metadata.get(CALL_METADATA)
        )
        try:
            reply = from_dict(route.output, fields)
        except BaseException:
            if call is not None:
                call.finish(delivered=False)
            raise
        if call is not None:
            self._settle(call, context.peer(), reply)
        return reply

    # ── streams ────────────────────────────────────────────────────────────
    async def attach(self, requests: AsyncIterator[Any], context: Context) -> None:
        async def body() -> None:
            api = self.api(context, "sessions-attach")

            async def detaches() -> AsyncIterator[bool]:
                async for request in _frames(requests, "sessions-attach"):
                    yield bool(request.detach)

            async def emit(event: AttachEvent) -> None:
                await _write(context, pb.AttachEvent(**dispatch.opened(event)))

            await api.attach(detaches(), emit)

        await self.guard("Sessions.Attach", context, body())

    async def port_stream(self, requests: AsyncIterator[Any], context: Context) -> None:
        """``Ports.Stream``: frames decoded by :func:`_stream_frame` (their bytes are views of the
        received messages) and encoded by :func:`_stream_frame_bytes` (bytes from the peer are
        written as they are, and framed there)."""
        who = "tcp-stream"

        async def body() -> None:
            api = self.api(context, who)
            messages = aiter(requests)
            first = _checked(await anext(messages, None), who)
            if first is None:
                raise ContractError(who, "the stream ended before its first frame")

            async def incoming() -> AsyncIterator[tuple[bytes | memoryview, bool]]:
                frame = first
                yield frame.data, frame.eof
                if frame.eof:
                    return
                async for message in messages:
                    frame = _checked(message, who)
                    yield frame.data, frame.eof
                    if frame.eof:
                        return

            async def emit(data: bytes | None) -> None:
                await _write(context, _EOF_FRAME if data is None else data)

            await api.port_stream(first.port, incoming(), emit)

        await self.guard("Ports.Stream", context, body())

    @staticmethod
    def _emit_batches(
        context: Context, *, packed: bool
    ) -> Callable[[Sequence[tuple[bytes, str, int]], int], Awaitable[None]]:
        """Each batch as one DatagramBatch: its datagrams in ``packed`` (one bytes field) when the
        client asked for it, else one ``Datagram`` message each."""
        if packed:

            async def emit(batch: Sequence[tuple[bytes, str, int]], dropped: int) -> None:
                await _write(context, pb.DatagramBatch(packed=pack_datagrams(batch), queue_dropped=dropped))

            return emit

        async def emit_messages(batch: Sequence[tuple[bytes, str, int]], dropped: int) -> None:
            datagrams = [pb.Datagram(data=data, host=host, port=port) for data, host, port in batch]
            await _write(context, pb.DatagramBatch(datagrams=datagrams, queue_dropped=dropped))

        return emit_messages

    async def receive_stream(self, request: Any, context: Context) -> None:
        async def body() -> None:
            message = _checked(request, "udp-receive-stream")
            api = self.api(context, "udp-receive-stream")
            await api.udp_stream(
                message.udp,
                direction=Direction.RECEIVE,
                emit=self._emit_batches(context, packed=message.packed),
                max_bytes=message.max if message.HasField("max") else None,
            )

        await self.guard("Udp.ReceiveStream", context, body())

    async def send_stream(self, requests: AsyncIterator[Any], context: Context) -> Message:
        async def body() -> Message:
            api = self.api(context, "udp-send-stream")
            frames = _frames(requests, "udp-send-stream")
            first = await anext(frames, None)
            if first is None:
                raise ContractError("udp-send-stream", "the stream ended before its first frame")

            async def batches() -> AsyncIterator[Sequence[tuple[bytes, str, int]]]:
                batch = first
                while batch is not None:
                    try:
                        datagrams = batch_datagrams(batch)
                    except PackedError as exc:
                        raise ContractError(
                            "udp-send-stream", "malformed packed datagrams", {"reason": str(exc)}
                        ) from None
                    yield datagrams
                    batch = await anext(frames, None)

            sent = await api.udp_stream(first.udp, direction=Direction.SEND, incoming=batches())
            return pb.SendStreamReply(sent=sent)

        return await self.guard("Udp.SendStream", context, body())  # type: ignore[no-any-return]

    async def watch_events(self, request: Any, context: Context) -> None:
        """``Admin.WatchEvents``: every event of the daemon's hub, one message each, until the
        client cancels."""
        who = "admin-watch-events"

        async def body() -> None:
            _checked(request, who)
            principal = self.authenticate(context, self._metadata(context))

            async def emit(event: Event) -> None:
                await _write(context, admin_pb2.AdminEvent(**dispatch.admin_event(event)))

            await Admin(self.broker).watch_events(principal, emit)

        await self.guard("Admin.WatchEvents", context, body())

    def stream(self, route: Route) -> grpc.RpcMethodHandler:
        decode, encode = _decoder(route.input), route.output.SerializeToString
        if route.name == "Sessions.Attach":
            return grpc.stream_stream_rpc_method_handler(self.attach, decode, encode)
        if route.name == "Ports.Stream":
            return grpc.stream_stream_rpc_method_handler(self.port_stream, _stream_frame, _stream_frame_bytes)
        if route.name == "Udp.ReceiveStream":
            return grpc.unary_stream_rpc_method_handler(self.receive_stream, decode, encode)
        if route.name == "Udp.SendStream":
            return grpc.stream_unary_rpc_method_handler(self.send_stream, decode, encode)
        if route.name == "Admin.WatchEvents":
            return grpc.unary_stream_rpc_method_handler(self.watch_events, decode, encode)
        raise LookupError(route.name)  # pragma: no cover - the protos stream exactly these five


class GrpcDoor:
    """The gRPC door of one daemon: its server options, its handlers, and the watch over its
    client connections (started by :meth:`watch` once the server is bound, stopped by
    :meth:`close`)."""

    def __init__(self, broker: Broker, metrics: Metrics | None = None, *, mtls: bool = False) -> None:
        self.broker = broker
        self.connections = ConnectionWatch(broker.limits)
        self._door = _Door(broker, metrics, self.connections, mtls=mtls)
        if metrics is not None:
            metrics.watch_door("grpc", lambda: self.connections.clients, lambda: self._door.budget.used)

    def options(self) -> list[tuple[str, int]]:
        return server_options(self.broker.limits)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """One generic handler per service, every RPC of the protos included (the admin API's too)."""
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for route in routes():
            handler = self._door.stream(route) if route.streaming else self._door.unary(route)
            by_service.setdefault(route.full_service, {})[route.method] = handler
        return [grpc.method_handlers_generic_handler(service, methods) for service, methods in by_service.items()]

    def watch(self, port: int) -> None:
        """Hold the connections to TCP ``port`` (the bound gRPC port) to account."""
        self.connections.watch(port)

    async def close(self) -> None:
        await self.connections.close()


def generic_handlers(broker: Broker, metrics: Metrics | None = None) -> list[grpc.GenericRpcHandler]:
    """One generic handler per service, every RPC of the protos included (no connection watch)."""
    return GrpcDoor(broker, metrics).handlers()
