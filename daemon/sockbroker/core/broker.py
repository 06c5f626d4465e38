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

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from . import tcp, udp
from .channels import Channels, Ticket
from .errors import ContractError, NotFoundError, ResourceExhaustedError, UnauthenticatedError, contract_violation
from .events import Event, Events
from .limits import Limits
from .policy import Policy
from .principals import Credentials, Delegation, Principal, Principals
from .resources import Custodian, Resource
from .sessions import Session, SessionManager
from .streams import relay_port, udp_stream
from .sync import Event as SyncEvent
from .sync import sync
from .tcp import TcpConnection, TcpInputPort, TcpListener, TcpOutputPort
from .udp import UdpSocket

__all__ = [
    "Addresses",
    "Api",
    "AttachEvent",
    "Broker",
    "Credentials",
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
    #: ``Sessions.Open`` and ``Sessions.Resume`` only: the grace period and the resume token.
    grace_seconds: float = 0.0
    resume_token: str = ""


class Direction(enum.Enum):
    """Which way a datagram stream carries datagrams."""

    RECEIVE = "receive"
    SEND = "send"
    BOTH = "both"


#: Entries one allow list of ``Custodians.Delegate`` may have: intersecting two lists costs the
#: product of their lengths, once per reload and session.
DELEGATION_ENTRIES = 256


class Broker:
    """The daemon's core: its principals, their delegations, and the sessions."""

    def __init__(self, limits: Limits, principals: list[Principal]) -> None:
        self.limits = limits
        self.events = Events()
        #: Who callers are (:mod:`.principals`): the configured principals and live delegations.
        self.identities = Principals(principals)
        #: The configured principals (the registry's list: a reload replaces its items).
        self.principals = self.identities.principals
        self.sessions = SessionManager(limits, self.events)
        #: Tickets for the channel door (DESIGN §8).
        self.channels = Channels(limits)
        #: True once the daemon has begun to stop (health checks answer NOT_SERVING).
        self.stopping = False

    # ── who is calling ─────────────────────────────────────────────────────
    def authenticate(self, credentials: Credentials) -> Principal:
        """The principal the caller's credentials name (:meth:`.principals.Principals.authenticate`)."""
        return self.identities.authenticate(credentials)

    def authenticate_header(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <token>`` value (gRPC metadata or HTTP header)."""
        return self.identities.authenticate(Credentials(authorization=authorization or ""))

    def reload(self, principals: list[Principal]) -> None:
        """New principals and policies (SIGHUP): sessions keep their handles, and their next
        operation sees the new policy; the sessions of a principal no longer configured drop
        (with the delegations they made)."""
        names = {p.name for p in principals}
        self.identities.replace(principals)
        self.sessions.generation += 1
        for session in self.sessions:
            if session.account not in names:
                session.drop("its principal is no longer configured")
        self.events.publish(Event("policy.reload", reason=f"{len(principals)} principals: {', '.join(sorted(names))}"))

    def _account(self, principal: Principal) -> Principal:
        """The configured principal whose quotas ``principal`` counts against."""
        if principal.delegation is None:
            return principal
        found = self.identities.named(principal.account)
        if found is None:
            raise UnauthenticatedError("sockbroker", "missing or wrong bearer token")
        return found

    # ── sessions ───────────────────────────────────────────────────────────
    def open_session(
        self, principal: Principal, *, lease_seconds: float | None = None, grace_seconds: float | None = None
    ) -> Api:
        """``Sessions.Open``: a new session with its root custodian (a delegated token's: a child
        of the delegation's custodian, with the delegation's policy)."""
        delegation = principal.delegation
        if delegation is None:
            name = principal.name

            def policy() -> Policy:
                current = self.identities.named(name)
                return current.policy if current is not None else Policy(allow_connect=(), allow_listen=())

            parent = None
        else:
            policy, parent = delegation.policy, delegation.custodian
        session = self.sessions.open(
            principal,
            self._account(principal),
            policy,
            lease_seconds=lease_seconds,
            grace_seconds=grace_seconds,
            parent=parent,
        )
        if delegation is not None:
            delegation.sessions.add(session)
            session.root.on_shutdown(lambda: delegation.sessions.discard(session))
        return Api(session, self)

    def api(self, principal: Principal, session_id: str | None, who: str, *, named: str | None = None) -> Api:
        """The operations of the caller's session (renewed). ``named`` is a session the request
        names in its path or body; it must agree with the header's."""
        if named and session_id and named != session_id:
            raise ContractError(who, "the session in the path differs from the session header")
        return Api(self.sessions.get(named or session_id or "", principal.name, who), self)

    def resume_session(self, principal: Principal, session_id: str, resume_token: str) -> Api:
        """``Sessions.Resume``: the caller's session, taken back within its grace period."""
        return Api(self.sessions.resume(session_id, resume_token, principal.name, "sessions-resume"), self)

    def close(self) -> None:
        """Drop every session: every socket of every client is closed."""
        self.stopping = True
        self.sessions.drop_all(reason="daemon stopping")


async def _unless_dropped(session: Session, request: Awaitable[bool | None]) -> bool | None:
    """The client's next attach request, or ``not-found`` as soon as the session drops."""
    waiting = asyncio.ensure_future(request)
    try:
        while not waiting.done():
            if session.dropped:
                raise NotFoundError("sessions-attach", "the session was dropped", {"reason": session.drop_reason})
            gone = asyncio.ensure_future(session.gone.wait())
            try:
                await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
        return waiting.result()
    finally:
        if not waiting.done():
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)


class Api:
    """The typed operations of one session. Handles are the strings the client holds."""

    def __init__(self, session: Session, broker: Broker) -> None:
        self.session = session
        self._broker = broker
        self._channels = broker.channels
        self._lookup = session.table.lookup

    # ── sessions ───────────────────────────────────────────────────────────
    def opened(self) -> AttachEvent:
        """What ``Sessions.Open`` answers (and an attachment's first event)."""
        return self._event("opened")

    def _event(self, event: str) -> AttachEvent:
        s = self.session
        return AttachEvent(s.id, s.root.handle, s.lease_seconds, event, s.grace_seconds, s.resume_token or "")

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
        when the client goes away without detaching, or sends something malformed. When the
        session drops for another reason (closed elsewhere, killed by an admin, its delegation
        ended), the attachment ends with ``not-found`` naming the reason."""
        session = self.session
        epoch = session.attach()
        broken = True
        requests = aiter(detaches)
        try:
            await emit(self._event("attached"))
            while True:
                detach = await _unless_dropped(session, anext(requests, None))
                if detach is None:  # the client ended its requests without detaching
                    return
                if detach:
                    broken = False
                    await emit(self._event("detached"))
                    return
        finally:
            session.detach(broken=broken, epoch=epoch)

    # ── custodians and handles ─────────────────────────────────────────────
    def make_custodian(self, *, parent: str | None = None) -> Custodian:
        return Custodian(self.session.table, self.session.custodian(parent, "make-custodian"))

    def custodian_shutdown_all(self, custodian: str) -> None:
        found = self._lookup(custodian, Custodian, "custodian-shutdown-all")
        if found is self.session.root:
            self.session.drop("root custodian shut down")
        else:
            found.force_close()

    def delegate(
        self,
        custodian: str,
        *,
        allow_connect: Sequence[str] = (),
        allow_listen: Sequence[str] = (),
        allow_ports: Sequence[str] = (),
        allow_multicast: Sequence[str] = (),
        allow_multicast_interface: Sequence[str] = (),
        allow_handoff: bool = False,
        expires_seconds: float | None = None,
    ) -> Delegation:
        """``Custodians.Delegate``: a token for ``custodian`` whose policy is this session's (as
        it is at each operation) narrowed to the lists given; an empty list allows nothing."""
        who = "custodian-delegate"
        found = self._lookup(custodian, Custodian, who)
        found.check_usable(who)
        limits = self._broker.limits
        if expires_seconds is None or not (0 < expires_seconds < float("inf")):
            raise ContractError(who, "contract violation", {"expected": "positive-real?", "given": expires_seconds})
        lists = (allow_connect, allow_listen, allow_ports, allow_multicast, allow_multicast_interface)
        if any(len(entries) > DELEGATION_ENTRIES for entries in lists):
            raise ContractError(who, "too many entries in an allow list", {"limit": DELEGATION_ENTRIES})
        try:
            narrowing = Policy(
                allow_connect=tuple(allow_connect),
                allow_listen=tuple(allow_listen),
                allow_ports=tuple(allow_ports),
                allow_multicast=tuple(allow_multicast),
                allow_multicast_interface=tuple(allow_multicast_interface),
                allow_handoff=bool(allow_handoff),
            )
        except ValueError as exc:  # a malformed network or port range
            raise ContractError(who, "bad network or port range", {"reason": str(exc)}) from None
        session = self.session
        identities = self._broker.identities
        mine = sum(1 for d in identities.delegations.values() if d.session is session)
        if mine >= limits.delegations_per_session:
            raise ResourceExhaustedError(who, "too many delegated tokens", {"limit": limits.delegations_per_session})
        events = self._broker.events

        def ended(delegation: Delegation, reason: str) -> None:
            identities.forget(delegation)
            events.publish(
                Event("delegation.revoke", session.principal, session.id, who, delegation.principal.name, reason)
            )

        delegation = Delegation(session, found, narrowing, min(expires_seconds, limits.max_delegation_seconds), ended)
        identities.add(delegation)
        found.on_shutdown(lambda: delegation.end("its custodian was shut down"))
        events.publish(
            Event("delegation.create", session.principal, session.id, who, delegation.principal.name, custodian)
        )
        return delegation

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
    async def sync(self, events: Sequence[SyncEvent], *, timeout: float | None = None) -> SyncResult | None:
        """``sync`` / ``sync/timeout``: perform exactly one ready event; None when the timeout passes."""
        got = await sync(self.session, events, timeout)
        if got is None:
            return None
        index, value = got
        return SyncResult(index, Datagram(*value) if isinstance(value, tuple) else value)
