"""The proxy door (DESIGN §11): SOCKS5 and HTTP CONNECT for unmodified programs.

One listener serves both protocols; the first byte tells them apart (``0x05`` SOCKS5, anything
else HTTP). Either way the client proves who it is with a password that is a principal's token
(or a delegated ``sbd_`` token), names a destination, and from the door's answer on the
connection carries the destination's bytes both ways, spliced by the kernel (the relay of
:mod:`..core.channels`), half-close carried both ways.

* **SOCKS5** (RFC 1928, username/password of RFC 1929, the only method offered): ``CONNECT``
  (:meth:`..core.broker.Api.tcp_connect`), ``BIND`` (one incoming connection:
  :meth:`~..core.broker.Api.tcp_listen` then :meth:`~..core.broker.Api.tcp_accept`) and
  ``UDP ASSOCIATE`` (:class:`_Association`: ``udp-send-to`` / ``udp-receive!``), with IPv4, IPv6
  and domain-name addresses (a name is resolved by the daemon, and the policy is checked on every
  address it resolves to). SOCKS4 is answered "request rejected".
* **HTTP CONNECT**: ``Proxy-Authorization: Basic`` (base64 of ``USER:PASSWORD``);
  ``200 Connection established`` then bytes.

The username says where the connection's handles go (:meth:`_Session.route`): ``SESSION`` or
``SESSION/CUSTODIAN`` (a session of the token's principal, ``ses_…``) puts the connection in
that session, in that custodian (its root when none is named), where ``Custodians.Describe``
lists it and its shutdown, or the session's drop, cuts the transfer. Any other username opens a
session of its own for this one proxy connection, attached while it lasts and closed with it.

Refusals carry :func:`socks_reply` / :func:`http_status` for the core's error; nothing is refused
by a silent close (the SOCKS5 replies of a failed authentication, ``0x01`` and "no acceptable
method", end the connection as RFC 1929 says). The opening exchange must end within ``header_timeout``; at most
``connections_per_door`` connections may be in it at once (:mod:`._listeners`). The two
protocols' bytes are read and written in :mod:`._proxy_protocols`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Callable

from ..core._net import host_of, lendable
from ..core.broker import Api, AttachEvent, Broker
from ..core.channels import Relay
from ..core.errors import BrokerError, NetworkErrnoError, PermissionDeniedError, os_errors
from ..core.limits import Limits
from ..core.tcp import TcpConnection
from ..files import bind_tcp, format_address
from ._listeners import Listeners, readable
from ._proxy_protocols import (
    SOCKS_VERSION,
    WHO,
    Command,
    Ended,
    Http,
    Refusal,
    Reply,
    Request,
    Socks,
    http_status,
    packed,
    recv_exact,
    socks_reply,
    unwrap,
)

__all__ = ["BIND_SECONDS", "CONNECT_SECONDS", "ProxyDoor", "Reply", "http_status", "socks_reply"]

log = logging.getLogger(__name__)

#: How long a CONNECT may take to reach its destination (then ``0x04`` / 502).
CONNECT_SECONDS = 30.0
#: How long a BIND waits for its one incoming connection (then ``0x04`` / the connection closes).
BIND_SECONDS = 120.0
#: A UDP datagram's largest size (what the relay port reads, what a broker socket receives).
_UDP_MAX = 65535
#: A username that names a session starts with a session id's prefix.
_SESSION_PREFIX = "ses_"


class ProxyDoor:
    """The proxy listener of one daemon (:meth:`listen`, :meth:`close`)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._listeners = Listeners("proxy door", broker, self._serve)
        #: Connections past their opening exchange whose command is still running.
        self._running: set[asyncio.Task[None]] = set()
        #: ``HOST:PORT`` it listens on (port 0 resolved), once listening.
        self.address: str | None = None

    def listen(self, host: str, port: int) -> None:
        """Serve on ``host``:``port``; raises :class:`StartupError` (one line) when unusable."""
        for sock in bind_tcp("--proxy-address", host, port):
            sock.listen(socket.SOMAXCONN)
            self._listeners.listen(sock, unix=False)
        self.address = format_address(host, self._listeners.sockets[0][0].getsockname()[1])

    async def close(self) -> None:
        await self._listeners.close()
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # ── one connection ─────────────────────────────────────────────────────
    async def _serve(self, client: socket.socket, _unix: bool) -> None:
        speaker: Socks | Http | None = None
        try:
            async with asyncio.timeout(self.broker.limits.header_timeout):
                first = await recv_exact(client, 1)
                if first[0] == 4:  # SOCKS4: "request rejected", in its own words
                    await asyncio.get_running_loop().sock_sendall(client, b"\x00\x5b" + bytes(6))
                    raise Ended
                speaker = Socks(client) if first[0] == SOCKS_VERSION else Http(client, first)
                request = await speaker.request(self.broker)
            session = _Session.route(self.broker, request)  # past the timeout: nothing can cancel it
        except (Ended, TimeoutError, OSError):
            client.close()
            return
        except Refusal as refusal:
            assert speaker is not None
            await speaker.refuse(refusal.reply, refusal.status, str(refusal))
            return
        except BrokerError as exc:
            assert speaker is not None
            await speaker.refuse(socks_reply(exc), http_status(exc), exc.message)
            return
        self._listeners.settled()
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await self._carry(speaker, session, request)
        finally:
            self._running.discard(task)
            session.release_unless_carried()

    async def _carry(self, speaker: Socks | Http, session: _Session, request: Request) -> None:
        """Run the request's command and answer it; on success the relay owns the client."""
        if request.command is Command.UDP_ASSOCIATE:
            assert isinstance(speaker, Socks)
            await _Association(speaker, session, request).run()
            return
        try:
            if request.command is Command.CONNECT:
                conn = await session.api.tcp_connect(
                    request.host, request.port, custodian=session.custodian, timeout=CONNECT_SECONDS
                )
                bound = conn.local
            else:
                assert isinstance(speaker, Socks)
                got = await _bind(speaker, session)
                if got is None:  # the client left while the BIND waited
                    speaker.client.close()
                    return
                conn = got
                bound = conn.remote
        except BrokerError as exc:
            await speaker.refuse(socks_reply(exc), http_status(exc), exc.message)
            return
        try:
            relay = _ProxyRelay(conn, speaker.client, self.broker.limits, session.relay_ended)
        except BrokerError as exc:  # no descriptors for its pipes: the connection goes, refused
            conn.force_close_ports()
            await speaker.refuse(socks_reply(exc), http_status(exc), exc.message)
            return
        session.carried = True
        try:
            await speaker.succeed(bound)
        except OSError as exc:
            relay.fail(exc)  # the client left before the answer: the connection goes with it
        else:
            relay.start()


async def _bind(speaker: Socks, session: _Session) -> TcpConnection | None:
    """SOCKS5 BIND: listen on the address the client reached the proxy on (a port the system
    picks), answer where, accept one connection and close the listener. None when the client
    left (or sent bytes, which a BIND does not take) before a connection came."""
    api = session.api
    host = host_of(speaker.client.getsockname())
    listener = await api.tcp_listen(0, hostname=host, custodian=session.custodian)
    try:
        local = api.addresses(listener.handle, port_numbers=True)
        await speaker.answer(Reply.SUCCEEDED, (local.local_host, local.local_port or 0))
        accepting = asyncio.ensure_future(api.tcp_accept(listener.handle, custodian=session.custodian))
        leaving = asyncio.ensure_future(readable(speaker.client))
        try:
            await asyncio.wait({accepting, leaving}, timeout=BIND_SECONDS, return_when="FIRST_COMPLETED")
        finally:  # both settled before the relay watches the client (a waiter's end unwatches it)
            for waiting in (leaving, accepting):
                if not waiting.done():
                    waiting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiting
        if accepting.done() and not accepting.cancelled() and (conn := accepting.result()) is not None:
            return conn  # (if the client left meanwhile, the relay finds out and closes it)
        if leaving.done() and not leaving.cancelled():
            return None
        raise NetworkErrnoError(
            "tcp-accept", "no connection came in time", {"seconds": BIND_SECONDS}, code=errno.ETIMEDOUT
        )
    except OSError:  # the client left before the first answer
        return None
    finally:
        if not listener.closed:
            api.tcp_close(listener.handle)


class _Association:
    """SOCKS5 UDP ASSOCIATE (RFC 1928 §7): datagrams relayed through a UDP port of the door's own,
    on the address the client reached the proxy on, while the control connection stays open.

    A datagram from the client (from its TCP peer's address, and from the port its request named
    unless that was 0; the first one fixes the client's UDP address) carries the SOCKS5 UDP header;
    its payload goes out with :meth:`~..core.broker.Api.udp_send_to` from a broker socket of the
    destination's family (IPv4 for a name), opened at its first use in the session's custodian,
    so the policy is checked on every datagram. What that socket receives
    (:meth:`~..core.broker.Api.udp_receive`) goes back to the client with the sender in the
    header. Fragments (``FRAG`` ≠ 0), malformed headers, datagrams the policy denies and the OS's
    refusals are dropped, as UDP drops. The association ends — its sockets closed, the control
    connection closed — when the client closes or writes on the control connection, or a broker
    socket is closed under it (its custodian shut down, its session dropped)."""

    def __init__(self, speaker: Socks, session: _Session, request: Request) -> None:
        self.speaker = speaker
        self.api = session.api
        self.custodian = session.custodian
        self.client_host = ""
        self.client_port = request.port
        self.client_udp: tuple[str, int] | None = None
        self.relay: socket.socket | None = None
        #: The broker's sockets by family, and the tasks that receive on them.
        self.sockets: dict[int, str] = {}
        self.tasks: list[asyncio.Future[None]] = []
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _open_relay(self) -> socket.socket:
        """The relay port, on the address the client reached the proxy on."""
        client = self.speaker.client
        with os_errors(WHO, "no UDP relay port"):
            self.client_host = host_of(client.getpeername())
            relay = socket.socket(client.family, socket.SOCK_DGRAM)
        lendable(self.api.session.limits, WHO, relay)
        with os_errors(WHO, "no UDP relay port"):
            try:
                relay.setblocking(False)
                relay.bind((host_of(client.getsockname()), 0))
            except OSError:
                relay.close()
                raise
        return relay

    async def run(self) -> None:
        client = self.speaker.client
        try:
            self.relay = relay = self._open_relay()
        except BrokerError as exc:
            await self.speaker.refuse(socks_reply(exc), http_status(exc), exc.message)
            return
        try:
            await self.speaker.answer(Reply.SUCCEEDED, (host_of(relay.getsockname()), relay.getsockname()[1]))
            self.tasks += [asyncio.ensure_future(readable(client)), asyncio.ensure_future(self._uplink(relay))]
            await asyncio.wait([*self.tasks, self.ended], return_when="FIRST_COMPLETED")
        except OSError as exc:
            log.debug("proxy: UDP association ended: %s", exc)
        finally:
            for task in self.tasks:
                task.cancel()
            for outcome in await asyncio.gather(*self.tasks, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("proxy door: UDP association: %r", outcome)
            for handle in self.sockets.values():
                with contextlib.suppress(BrokerError):
                    self.api.udp_close(handle)
            relay.close()
            client.close()

    def _end(self, exc: BaseException) -> None:
        log.debug("proxy: UDP association ended: %s", exc)
        if not self.ended.done():
            self.ended.set_result(None)

    async def _uplink(self, relay: socket.socket) -> None:
        """Client → destinations: while the relay port has datagrams, one at a time."""
        while True:
            await readable(relay)
            try:
                data, source = relay.recvfrom(_UDP_MAX)
            except OSError:  # nothing after all, or an ICMP error for an answer the client did not take
                continue
            host, port = host_of(source), int(source[1])
            if host != self.client_host or (self.client_port and port != self.client_port):
                continue
            self.client_udp = (source[0], port)
            try:
                target = unwrap(data)
            except ValueError:
                continue
            if target is None:  # a fragment
                continue
            try:
                await self._send(*target)
            except (PermissionDeniedError, NetworkErrnoError) as exc:
                log.debug("proxy: datagram dropped: %s", exc.message.partition("\n")[0])
            except BrokerError as exc:
                self._end(exc)
                return

    async def _send(self, host: str, port: int, payload: bytes) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        handle = self.sockets.get(family)
        if handle is None:
            udp = await self.api.udp_open(
                family_hostname="::" if family == socket.AF_INET6 else None, custodian=self.custodian
            )
            handle = self.sockets[family] = udp.handle
            await self.api.udp_send_to(handle, host, port, payload, wait=False)  # binds it: it may receive
            self.tasks.append(asyncio.ensure_future(self._downlink(handle)))
            return
        await self.api.udp_send_to(handle, host, port, payload, wait=False)

    async def _downlink(self, handle: str) -> None:
        """What the broker socket ``handle`` receives → the client, the sender in the header."""
        while True:
            try:
                got = await self.api.udp_receive(handle, max_bytes=_UDP_MAX)
            except BrokerError as exc:
                self._end(exc)
                return
            if got is None or self.client_udp is None or self.relay is None:
                continue
            with contextlib.suppress(OSError):  # a full buffer drops it, as UDP does
                self.relay.sendto(b"\x00\x00\x00" + packed(got.host, got.port) + got.data, self.client_udp)


class _Session:
    """Where a proxy connection's handles go: a session the username names (in a custodian of
    it), or one of its own, attached while the proxy connection lasts and closed with it."""

    def __init__(self, api: Api, custodian: str | None, *, owned: bool) -> None:
        self.api = api
        self.custodian = custodian
        self.owned = owned
        #: Set once a relay carries the connection: the relay's end releases the session.
        self.carried = False
        self._attached: asyncio.Task[None] | None = None
        if owned:
            self._attached = asyncio.ensure_future(api.attach(_never(), _ignore))

    @classmethod
    def route(cls, broker: Broker, request: Request) -> _Session:
        """``SESSION`` or ``SESSION/CUSTODIAN`` (a session id: ``ses_…``) names where the handles
        go; any other username asks for a session of this connection's own."""
        username = request.username
        if username.startswith(_SESSION_PREFIX):
            session_id, _, custodian = username.partition("/")
            api = broker.api(request.principal, session_id, WHO)
            if custodian:
                api.describe_custodian(custodian)  # not-found unless a custodian of that session
            return cls(api, custodian or None, owned=False)
        return cls(broker.open_session(request.principal), None, owned=True)

    def relay_ended(self) -> None:
        """The relay stopped (both ways ended, either side failed, or the handles closed): a
        session of the connection's own goes too, once the closing in progress is done."""
        asyncio.get_running_loop().call_soon(self.release)

    def release_unless_carried(self) -> None:
        if not self.carried:
            self.release()

    def release(self) -> None:
        if self.owned:
            self.owned = False
            self.api.close_session()
            if self._attached is not None:
                self._attached.cancel()
                self._attached = None


async def _never() -> AsyncIterator[bool]:
    """An attachment's requests, none ever: the attachment ends when its task is cancelled."""
    await asyncio.get_running_loop().create_future()
    yield False  # pragma: no cover - never reached


async def _ignore(_event: AttachEvent) -> None:
    return None


class _ProxyRelay(Relay):
    """The relay of :mod:`..core.channels`, telling the door when it stops."""

    def __init__(self, conn: TcpConnection, client: socket.socket, limits: Limits, ended: Callable[[], None]) -> None:
        super().__init__(conn, client, limits)
        self._ended = ended

    def stop(self) -> None:
        if not self.stopped:
            super().stop()
            self._ended()
