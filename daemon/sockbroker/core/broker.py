"""The core's entry points: :class:`Broker` (principals, sessions) and :class:`Api`, the typed
operations of one session — one method per operation, keyword-only options, typed results.

Every front door calls these methods and nothing else: the gRPC and REST doors through their
dispatch table (``doors/dispatch.py``), a future door (SOCKS5, admin) directly. So a rule written
here holds on every door alike. Racket's names map to the methods by one rule: ``-`` becomes
``_``, ``?`` and ``!`` are dropped, and the never-blocking ``*`` forms are ``wait=False`` or
``mode="nowait"`` (``tcp-accept-ready?`` → :meth:`Api.tcp_accept_ready`, ``udp-receive!*`` →
``udp_receive(wait=False)``); every blocking call can be cancelled (``/enable-break``).

Streams and attachment are operations too: a stream method takes what the client sends as an
async iterator and gives what the daemon sends to an ``emit`` callback, so the rules of a stream
(what ends it, half-close, directions, backpressure, give-back of what was not sent) live here.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from . import tcp, udp
from .channels import Channels, Ticket
from .errors import ContractError, UnauthenticatedError, contract_violation
from .events import Events
from .limits import Limits
from .policy import Policy
from .resources import Custodian, Resource
from .sessions import Session, SessionManager
from .streams import relay_port, udp_stream
from .sync import Event, sync
from .tcp import TcpConnection, TcpInputPort, TcpListener, TcpOutputPort
from .udp import UdpSocket

__all__ = [
    "Addresses",
    "Api",
    "AttachEvent",
    "Broker",
    "Datagram",
    "Direction",
    "Principal",
    "ReadResult",
    "SyncResult",
]

log = logging.getLogger(__name__)

#: What a datagram stream carries: (data, host, port).
StreamDatagram = tuple[bytes, str, int]


@dataclass(frozen=True)
class Principal:
    """Who a token speaks for, what the policy lets it do, and whether it may use the admin API."""

    name: str
    token: str = field(repr=False)
    policy: Policy = field(default_factory=Policy)
    admin: bool = False


@dataclass(frozen=True)
class Datagram:
    """What ``udp-receive!`` gives: the (possibly truncated) payload, its length and the sender."""

    data: bytes
    count: int
    host: str
    port: int


@dataclass(frozen=True)
class ReadResult:
    data: bytes
    eof: bool


@dataclass(frozen=True)
class Addresses:
    """``tcp-addresses`` / ``udp-addresses``; the port numbers only when asked for."""

    local_host: str
    remote_host: str
    local_port: int | None = None
    remote_port: int | None = None


@dataclass(frozen=True)
class SyncResult:
    """The one event ``sync`` performed: its index and its result (a connection, a datagram,
    the handle that is ready, or ``True`` for a sent datagram)."""

    index: int
    value: TcpConnection | Datagram | str | bool


@dataclass(frozen=True)
class AttachEvent:
    session: str
    custodian: str
    lease_seconds: float
    event: str


class Direction(enum.Enum):
    """Which way a datagram stream carries datagrams."""

    RECEIVE = "receive"
    SEND = "send"
    BOTH = "both"


#: How many ``Authorization`` values :meth:`Broker.authenticate_header` remembers.
_HEADERS_KEPT = 64


class Broker:
    """The daemon's core: its principals and its sessions."""

    def __init__(self, limits: Limits, principals: list[Principal]) -> None:
        if not principals:
            raise ValueError("at least one principal is needed")
        self.limits = limits
        self.principals = principals
        #: What happens to sessions, policies and handles: the audit log and the admin API's events.
        self.events = Events()
        self.sessions = SessionManager(limits, self.events)
        #: Tickets for the channel door (DESIGN §8).
        self.channels = Channels(limits)
        #: True once the daemon has begun to stop (health checks answer NOT_SERVING).
        self.stopping = False
        #: Principals found by :meth:`authenticate_header`, by the header value that named them.
        self._by_header: dict[str, Principal] = {}

    def authenticate(self, token: str | None) -> Principal:
        """The principal whose token this is; ``unauthenticated`` otherwise (constant time)."""
        found = None
        candidate = (token or "").encode()
        for principal in self.principals:
            if hmac.compare_digest(candidate, principal.token.encode()):
                found = principal
        if found is None or not token:
            raise UnauthenticatedError("sockbroker", "missing or wrong bearer token")
        return found

    def authenticate_header(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <token>`` value (gRPC metadata or HTTP header).

        A value that named a principal before names it again without the token compare, as long
        as that principal is still one of :attr:`principals`: only values that carried a valid
        token are remembered (at most :data:`_HEADERS_KEPT`), so a wrong one always takes the
        constant-time path of :meth:`authenticate`."""
        if authorization is not None:
            known = self._by_header.get(authorization)
            if known is not None and any(known is principal for principal in self.principals):
                return known
        scheme, _, token = (authorization or "").partition(" ")
        found = self.authenticate(token.strip() if scheme.lower() == "bearer" else None)
        assert authorization is not None  # no value, no token: authenticate refused it
        if len(self._by_header) >= _HEADERS_KEPT:
            self._by_header.clear()
        self._by_header[authorization] = found
        return found

    def open_session(self, principal: Principal, *, lease_seconds: float | None = None) -> Api:
        """``Sessions.Open``: a new session with its root custodian."""
        return Api(self.sessions.open(principal.name, principal.policy, lease_seconds), self.channels)

    def api(self, principal: Principal, session_id: str | None, who: str, *, named: str | None = None) -> Api:
        """The operations of the caller's session (renewed). ``named`` is a session the request
        names in its path or body; it must agree with the header's."""
        if named and session_id and named != session_id:
            raise ContractError(who, "the session in the path differs from the session header")
        return Api(self.sessions.get(named or session_id or "", principal.name, who), self.channels)

    def close(self) -> None:
        """Drop every session: every socket of every client is closed."""
        self.stopping = True
        self.sessions.drop_all(reason="daemon stopping")


class Api:
    """The typed operations of one session. Handles are the strings the client holds."""

    def __init__(self, session: Session, channels: Channels) -> None:
        self.session = session
        self._channels = channels
        self._lookup = session.table.lookup

    # ── sessions ───────────────────────────────────────────────────────────
    def opened(self) -> AttachEvent:
        """What ``Sessions.Open`` answers (and an attachment's first event)."""
        return self._event("opened")

    def _event(self, event: str) -> AttachEvent:
        s = self.session
        return AttachEvent(s.id, s.root.handle, s.lease_seconds, event)

    def sending(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A request carrying bytes to send is read and run inside this block
        (:meth:`.sessions.Session.sending`: one at a time while the byte budget is full)."""
        return self.session.sending()

    def keep_alive(self) -> float:
        self.session.renew()
        return self.session.lease_seconds

    def cancel_call(self, call: str) -> None:
        self.session.calls.cancel(call)

    def close_session(self) -> None:
        self.session.drop("closed by the client")

    async def attach(self, detaches: AsyncIterator[bool], emit: Callable[[AttachEvent], Awaitable[None]]) -> None:
        """``Sessions.Attach``: the session lives while this runs. ``detaches`` yields the client's
        requests (True: detach on purpose). The attachment *breaks* — and the session drops —
        when the client goes away without detaching, or sends something malformed."""
        session = self.session
        session.attach()
        broken = True
        try:
            await emit(self._event("attached"))
            async for detach in detaches:
                if detach:
                    broken = False
                    await emit(self._event("detached"))
                    return
        finally:
            session.detach(broken=broken)

    # ── custodians and handles ─────────────────────────────────────────────
    def make_custodian(self, *, parent: str | None = None) -> Custodian:
        return Custodian(self.session.table, self.session.custodian(parent, "make-custodian"))

    def custodian_shutdown_all(self, custodian: str) -> None:
        found = self._lookup(custodian, Custodian, "custodian-shutdown-all")
        if found is self.session.root:
            self.session.drop("root custodian shut down")
        else:
            found.force_close()

    def describe_custodian(self, custodian: str) -> dict[str, object]:
        return self._lookup(custodian, Custodian, "custodian-describe").describe()

    def describe(self, handle: str) -> dict[str, object]:
        resource = self._lookup(handle, Resource, "describe")
        info = resource.describe()
        if isinstance(resource, Custodian):
            return {
                "handle": resource.handle,
                "kind": resource.kind,
                "closed": resource.closed,
                "custodian": info["parent"],
            }
        return info

    def addresses(self, handle: str, *, port_numbers: bool = False) -> Addresses:
        """``tcp-addresses`` / ``udp-addresses``."""
        resource: Resource = self._lookup(
            handle, (TcpListener, TcpInputPort, TcpOutputPort, UdpSocket), "tcp-addresses"
        )
        # Racket's udp-addresses *is* tcp-addresses: its errors say so for a UDP socket too.
        local_host, local_port, remote_host, remote_port = resource.addresses("tcp-addresses")  # type: ignore[attr-defined]
        if port_numbers:
            return Addresses(local_host, remote_host, local_port, remote_port)
        return Addresses(local_host, remote_host)

    # ── tcp ────────────────────────────────────────────────────────────────
    async def tcp_listen(
        self,
        port: int,
        *,
        backlog: int | None = None,
        reuse: bool = False,
        hostname: str | None = None,
        custodian: str | None = None,
    ) -> TcpListener:
        return await tcp.tcp_listen(
            self.session, port=port, backlog=backlog, reuse=reuse, hostname=hostname, custodian=custodian
        )

    async def tcp_connect(
        self,
        hostname: str,
        port: int,
        *,
        local_hostname: str | None = None,
        local_port: int | None = None,
        custodian: str | None = None,
        timeout: float | None = None,
    ) -> TcpConnection:
        return await tcp.tcp_connect(
            self.session,
            hostname=hostname,
            port=port,
            local_hostname=local_hostname,
            local_port=local_port,
            custodian=custodian,
            timeout=timeout,
        )

    async def tcp_accept(
        self, listener: str, *, custodian: str | None = None, timeout: float | None = None
    ) -> TcpConnection | None:
        """``tcp-accept``; None when ``timeout`` passes first."""
        who = "tcp-accept"
        found = self._lookup(listener, TcpListener, who)
        return await found.accept(self.session.custodian(custodian, who), timeout, who)

    def tcp_accept_ready(self, listener: str) -> bool:
        return self._lookup(listener, TcpListener, "tcp-accept-ready?").accept_ready()

    def tcp_close(self, listener: str) -> None:
        self._lookup(listener, TcpListener, "tcp-close").close()

    def tcp_abandon_port(self, port: str) -> None:
        who = "tcp-abandon-port"
        self._port(port, who).abandon(who)

    # ── ports ──────────────────────────────────────────────────────────────
    def _port(self, handle: str, who: str) -> tcp.Port:
        found = self._lookup(handle, (TcpInputPort, TcpOutputPort), who)
        assert isinstance(found, TcpInputPort | TcpOutputPort)
        return found

    async def read(
        self,
        port: str,
        *,
        max_bytes: int | None = None,
        mode: str = "",
        peek: bool = False,
        timeout: float | None = None,
    ) -> ReadResult:
        """``read-bytes-avail!`` (mode ``avail``), ``read-bytes-avail!*`` (``nowait``),
        ``read-bytes`` (``exact``), and their ``peek`` forms."""
        found = self._lookup(port, TcpInputPort, "read-bytes-avail!")
        data, eof = await found.read(max_bytes, mode, peek=peek, timeout=timeout)
        return ReadResult(data, eof)

    async def write(self, port: str, data: bytes | bytearray | memoryview, *, flush: bool = False) -> int:
        """``write-bytes``. ``data`` may be a read-only view (a door's received request): it is
        queued as it is; anything the caller could still change is copied first."""
        found = self._lookup(port, TcpOutputPort, "write-bytes")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise contract_violation("write-bytes", "bytes?", data)
        if not (
            isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly and data.nbytes == len(data))
        ):
            data = bytes(data)
        return await found.write(data, flush=flush)

    async def flush(self, port: str) -> None:
        await self._lookup(port, TcpOutputPort, "flush-output").flush()

    def set_buffer_mode(self, port: str, mode: str) -> None:
        self._port(port, "file-stream-buffer-mode").set_buffer_mode(mode)

    def close_port(self, port: str) -> None:
        self._port(port, "close-port").close()

    async def port_stream(
        self,
        port: str,
        incoming: AsyncIterator[tuple[bytes | memoryview, bool]],
        emit: Callable[[bytes | None], Awaitable[None]],
    ) -> None:
        """``Ports.Stream``: bytes both ways over the connection of input port ``port``.

        ``incoming`` yields the client's ``(data, eof)`` frames: data is written straight through
        (no block buffering); ``eof``, or the end of ``incoming``, closes the output port (FIN).
        Bytes from the peer go to ``emit`` in chunks of at most :data:`STREAM_CHUNK`; the peer's
        FIN is ``emit(None)``. The stream ends when both directions have. Backpressure: a slow
        ``emit`` stops the reads, the port's buffer fills, and the daemon stops reading the socket.
        Bytes read for a chunk that ``emit`` failed to send are given back to the port.
        """
        who = "tcp-stream"
        found = self._lookup(port, TcpInputPort, who)
        found.ensure_open(who)
        await relay_port(found, incoming, emit)

    def open_channel(self, port: str, mode: str = "relay") -> Ticket:
        """``Ports.OpenChannel``: a ticket for the connection of input port ``port`` out of band,
        ``relay`` or ``handoff`` (:mod:`.channels`)."""
        who = "open-channel"
        found = self._lookup(port, TcpInputPort, who)
        found.ensure_open(who)
        return self._channels.issue(self.session, found.conn, found.handle, mode, who)

    # ── udp ────────────────────────────────────────────────────────────────
    def _udp(self, handle: str, who: str) -> UdpSocket:
        return self._lookup(handle, UdpSocket, who)

    async def udp_open(
        self, *, family_hostname: str | None = None, family_port: int | None = None, custodian: str | None = None
    ) -> UdpSocket:
        return await udp.udp_open(
            self.session, family_hostname=family_hostname, family_port=family_port, custodian=custodian
        )

    async def udp_bind(self, sock: str, hostname: str | None, port: int, *, reuse: bool = False) -> None:
        await self._udp(sock, "udp-bind!").bind(hostname, port, reuse)

    async def udp_connect(self, sock: str, hostname: str | None, port: int | None) -> None:
        await self._udp(sock, "udp-connect!").connect(hostname, port)

    async def udp_send_to(
        self,
        sock: str,
        hostname: str,
        port: int,
        data: bytes,
        *,
        start: int | None = None,
        end: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        found = self._udp(sock, "udp-send-to")
        return await found.send_to(hostname, port, data, start, end, wait=wait, timeout=timeout)

    async def udp_send(
        self,
        sock: str,
        data: bytes,
        *,
        start: int | None = None,
        end: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        return await self._udp(sock, "udp-send").send(data, start, end, wait=wait, timeout=timeout)

    async def udp_receive(
        self, sock: str, *, max_bytes: int | None = None, wait: bool = True, timeout: float | None = None
    ) -> Datagram | None:
        """``udp-receive!`` / ``udp-receive!*``; None when nothing came (``wait=False``, timeout)."""
        got = await self._udp(sock, "udp-receive!").receive(max_bytes, wait=wait, timeout=timeout)
        return None if got is None else Datagram(*got)

    def udp_set_receive_buffer_size(self, sock: str, size: int) -> None:
        self._udp(sock, "udp-set-receive-buffer-size!").set_receive_buffer_size(size)

    def udp_close(self, sock: str) -> None:
        self._udp(sock, "udp-close").close()

    def udp_ttl(self, sock: str) -> int:
        return self._udp(sock, "udp-ttl").ttl()

    def udp_set_ttl(self, sock: str, ttl: int) -> None:
        self._udp(sock, "udp-set-ttl!").set_ttl(ttl)

    async def udp_multicast_join_group(self, sock: str, group: str, interface: str | None = None) -> None:
        await self._udp(sock, "udp-multicast-join-group!").multicast_join(group, interface)

    async def udp_multicast_leave_group(self, sock: str, group: str, interface: str | None = None) -> None:
        await self._udp(sock, "udp-multicast-leave-group!").multicast_leave(group, interface)

    def udp_multicast_interface(self, sock: str) -> str:
        return self._udp(sock, "udp-multicast-interface").multicast_interface()

    async def udp_multicast_set_interface(self, sock: str, interface: str | None) -> None:
        await self._udp(sock, "udp-multicast-set-interface!").set_multicast_interface(interface)

    def udp_multicast_loopback(self, sock: str) -> bool:
        return self._udp(sock, "udp-multicast-loopback?").multicast_loopback()

    def udp_multicast_set_loopback(self, sock: str, loopback: bool) -> None:
        self._udp(sock, "udp-multicast-set-loopback!").set_multicast_loopback(loopback)

    def udp_multicast_ttl(self, sock: str) -> int:
        return self._udp(sock, "udp-multicast-ttl").multicast_ttl()

    def udp_multicast_set_ttl(self, sock: str, ttl: int) -> None:
        self._udp(sock, "udp-multicast-set-ttl!").set_multicast_ttl(ttl)

    async def udp_stream(
        self,
        sock: str,
        *,
        direction: Direction | str = Direction.BOTH,
        incoming: AsyncIterator[Sequence[StreamDatagram]] | None = None,
        emit: Callable[[Sequence[StreamDatagram], int], Awaitable[None]] | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Datagrams both ways on one socket (``Udp.ReceiveStream``, ``Udp.SendStream``, the UDP
        WebSocket); returns how many datagrams were sent.

        ``receive``: what the socket receives goes to ``emit(batch, queue_dropped)`` until the
        socket closes or ``incoming`` (if given) ends — a datagram in ``incoming`` is then a
        contract error. ``send``: every datagram of ``incoming`` is sent (an empty host sends to
        the connected peer) until it ends. ``both``: both, until either side ends; the first
        error of either side ends the stream with it. Argument and state errors come at once.
        """
        who = "udp-stream"
        if isinstance(direction, str):
            try:
                direction = Direction(direction or "both")
            except ValueError:
                raise contract_violation(who, "(or/c 'receive 'send 'both)", direction) from None
        return await udp_stream(self._udp(sock, who), direction.value, incoming, emit, max_bytes)

    def udp_open_channel(self, sock: str, mode: str = "handoff") -> Ticket:
        """``Udp.OpenChannel``: a ticket to be handed the socket's descriptor (:mod:`.channels`)."""
        who = "udp-open-channel"
        found = self._udp(sock, who)
        return self._channels.issue(self.session, found, found.handle, mode, who)

    # ── events ─────────────────────────────────────────────────────────────
    async def sync(self, events: Sequence[Event], *, timeout: float | None = None) -> SyncResult | None:
        """``sync`` / ``sync/timeout``: perform exactly one ready event; None when the timeout passes."""
        got = await sync(self.session, events, timeout)
        if got is None:
            return None
        index, value = got
        return SyncResult(index, Datagram(*value) if isinstance(value, tuple) else value)
