"""The REST door's connections, held to account (DESIGN §5): who may stay, and how many bytes they
may make the daemon hold.

uvicorn runs the door with :class:`Protocol` (HTTP/1.1, httptools) and :class:`WebSocketProtocol`
(the sans-I/O websockets protocol); both report to the door's :class:`Connections`:

- **headers**: a connection that has not sent a request's complete headers within
  ``header_timeout`` of opening (or of the request's first byte) is closed — slowloris; request
  headers larger than :data:`MAX_HEADER_BYTES` are refused with 431;
- **authentication**: a connection that has not sent a request with a valid bearer token within
  ``unauthenticated_timeout`` of opening is closed, whatever it is doing;
- **idle**: a keep-alive connection with no request in progress is closed after ``idle_timeout``
  (uvicorn's ``timeout_keep_alive``); a WebSocket is never idle;
- **how many**: at most ``connections_per_door`` connections; a new one past it closes the
  *oldest unauthenticated* connection (itself when every other one holds a token), so clients
  holding the token are never locked out by ones that do not. The door accepts its connections
  itself (:class:`Acceptor`): while it is full it evicts at most ``connections_per_door`` at once
  and then ``connections_per_door / unauthenticated_timeout`` a second (the rate at which their
  timeouts would close them anyway), and otherwise stops accepting; new connections wait in the
  kernel's listen queue. Each eviction otherwise invites a reconnection that evicts another one:
  an attacker with 6,000 connections kept the event loop busy with nothing else (the good gRPC
  client's p50 went 2.4x in bench/abuse.py's connection attack on the REST door alone);
- **bytes in flight**: request bodies and WebSocket messages being received and decoded take
  their size from one :class:`ByteBudget` of ``request_bytes_in_flight`` bytes for the whole
  door *before* their bytes are read; one that does not fit waits, with its socket unread
  (backpressure: the kernel's window stops the client). A size known in advance (a
  ``Content-Length``, a WebSocket frame's length) is taken whole; an unknown one (a chunked body,
  a fragmented message) takes the largest allowed request and gives the rest back at its end, so
  two waiters never hold parts that together block both.

A WebSocket that breaks the protocol (a frame over the size limit: 1009, text that is not UTF-8:
1007) gets its close frame, then the daemon half-closes and reads and discards what the client
still sends for :data:`LINGER_SECONDS` before closing: closing a socket with unread bytes sends a
reset, and a reset makes the client's kernel drop the close frame it had not read yet.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from uvicorn._types import ASGIReceiveEvent
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from ..core.broker import Broker, Credentials
from ..core.errors import BrokerError
from ._in_flight import ByteBudget

__all__ = [
    "BEARER_PROTOCOL",
    "CONNECTION",
    "LINGER_SECONDS",
    "Acceptor",
    "MAX_HEADER_BYTES",
    "TRANSPORT",
    "Connection",
    "Connections",
    "Protocol",
    "WebSocketProtocol",
    "bearer_authorization",
]

log = logging.getLogger(__name__)

#: A WebSocket may carry the bearer token as the subprotocol ``bearer.<token>``, since a browser
#: cannot set an ``Authorization`` header on one (docs/security.md).
BEARER_PROTOCOL = "bearer."


def bearer_authorization(authorization: str | None, protocols: Sequence[str]) -> str | None:
    """The request's ``Authorization`` value; without one, ``Bearer <token>`` from a
    ``bearer.<token>`` entry of its WebSocket subprotocols, if it offers one."""
    if authorization is not None:
        return authorization
    token = next((p[len(BEARER_PROTOCOL) :] for p in protocols if p.startswith(BEARER_PROTOCOL)), None)
    return None if token is None else f"Bearer {token}"


#: Largest request line + headers (bytes): past it the request is refused with 431. Browsers send
#: a few KiB (cookies included); nginx allows 32 KiB.
MAX_HEADER_BYTES = 32 * 1024
#: Seconds a WebSocket that broke the protocol is read (and discarded) after its close frame.
LINGER_SECONDS = 2.0
#: The ASGI scope extension under which :class:`Protocol` shows the door the request's transport.
TRANSPORT = "sockbroker.transport"
#: The ASGI scope extension under which both protocols show the door the request's :class:`Connection`.
CONNECTION = "sockbroker.connection"

_TEXT, _BINARY, _CONTINUATION = 1, 2, 0


class Connection:
    """One connection of the door, through its HTTP and (after an upgrade) WebSocket life, and
    what it proves of its client whatever the request says: the client certificate its TLS
    handshake verified (DER), and on the Unix socket the peer's ``(uid, gid)`` (``SO_PEERCRED``)."""

    __slots__ = ("authenticated", "certificate", "closed", "peer", "timers", "transport", "unix")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.authenticated = False
        self.closed = False
        self.timers: dict[str, asyncio.TimerHandle] = {}
        ssl_object = transport.get_extra_info("ssl_object")
        self.certificate: bytes | None = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        sock = transport.get_extra_info("socket")
        #: On the door's Unix socket (``--rest-unix-socket``): no browser can be at the other end.
        self.unix = sock is not None and sock.family == socket.AF_UNIX
        self.peer = _peer_credentials(sock) if self.unix else None

    def credentials(self, authorization: str | None) -> Credentials:
        """What a request on this connection presents (its ``Authorization`` value, if any)."""
        return Credentials(authorization, self.certificate, self.peer)


def _peer_credentials(sock: socket.socket) -> tuple[int, int] | None:
    """The ``(uid, gid)`` of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    try:
        _pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return None
    return uid, gid


class _Evictions:
    """A token bucket: ``burst`` evictions at once, then ``rate`` a second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(max(1, burst))
        self._tokens, self._at = self.burst, time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait(self) -> float:
        """Seconds until one eviction is allowed (0: now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self) -> None:
        self._refill()
        self._tokens -= 1  # may go below 0: the next ones wait for it


class Connections:
    """The door's open connections, oldest first, and its byte budget."""

    def __init__(
        self,
        broker: Broker,
        *,
        capacity: int,
        header_timeout: float,
        unauthenticated_timeout: float,
        bytes_in_flight: int,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.broker = broker
        self.capacity = capacity
        self.header_timeout = header_timeout
        self.unauthenticated_timeout = unauthenticated_timeout
        self.budget = ByteBudget(bytes_in_flight)
        self._on_close = on_close
        self._open: dict[asyncio.BaseTransport, Connection] = {}
        self._unauthenticated: dict[Connection, None] = {}  # insertion order: oldest first
        self._evictions = _Evictions(capacity / max(unauthenticated_timeout, 0.001), capacity)
        self._freed: set[asyncio.Future[None]] = set()  # waiters in room(), woken when one closes
        #: Connections the door closed, by reason (also counted in the metrics).
        self.closed_by_reason: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._open)

    @property
    def unauthenticated(self) -> int:
        return len(self._unauthenticated)

    def opened(self, transport: asyncio.Transport) -> Connection:
        connection = Connection(transport)
        if len(self._open) >= self.capacity:
            oldest = next(iter(self._unauthenticated), None)
            if oldest is None:  # every open connection holds a token: the newcomer (which does not yet) goes
                connection.closed = True
                transport.abort()
                self.count("refused")
                return connection
            self._evictions.take()
            self.drop(oldest, "evicted")
        self._open[transport] = connection
        self._unauthenticated[connection] = None
        self.arm(connection, "unauthenticated_timeout", self.unauthenticated_timeout)
        self.arm(connection, "header_timeout", self.header_timeout)
        return connection

    async def room(self) -> None:
        """Return once the door may take one more connection: it is not full, or it may evict
        the oldest connection without a token (at most ``capacity`` at once, then
        ``capacity / unauthenticated_timeout`` a second)."""
        loop = asyncio.get_running_loop()
        while len(self._open) >= self.capacity:
            wait: float | None = None
            if self._unauthenticated:
                wait = self._evictions.wait()
                if wait <= 0:
                    return
            freed: asyncio.Future[None] = loop.create_future()
            self._freed.add(freed)
            try:
                await asyncio.wait_for(freed, wait)
            except TimeoutError:
                pass
            finally:
                self._freed.discard(freed)

    def adopt(self, transport: asyncio.Transport) -> Connection | None:
        """The connection of a transport that an HTTP protocol handed to a WebSocket protocol."""
        return self._open.get(transport)

    def arm(self, connection: Connection, reason: str, delay: float) -> None:
        if connection.closed or reason in connection.timers:
            return
        loop = asyncio.get_running_loop()
        connection.timers[reason] = loop.call_later(delay, self.drop, connection, reason)

    def disarm(self, connection: Connection, reason: str) -> None:
        timer = connection.timers.pop(reason, None)
        if timer is not None:
            timer.cancel()

    def headers_complete(self, connection: Connection, authorization: str | None) -> None:
        """A request's headers are in: the header clock stops; credentials that name a principal
        (a valid token, or the connection's certificate or peer) authenticate the connection for
        the rest of its life."""
        self.disarm(connection, "header_timeout")
        if connection.authenticated:
            return
        if authorization is None and connection.certificate is None and connection.peer is None:
            return
        try:
            self.broker.authenticate(connection.credentials(authorization))
        except BrokerError:
            return
        connection.authenticated = True
        self._unauthenticated.pop(connection, None)
        self.disarm(connection, "unauthenticated_timeout")

    def drop(self, connection: Connection, reason: str) -> None:
        """Close a connection now (a reset: nothing it has not read is worth waiting for)."""
        if connection.closed:
            return
        self.closed(connection)
        connection.transport.abort()
        self.count(reason)

    def closed(self, connection: Connection) -> None:
        connection.closed = True
        for timer in connection.timers.values():
            timer.cancel()
        connection.timers.clear()
        self._open.pop(connection.transport, None)
        self._unauthenticated.pop(connection, None)
        for freed in self._freed:
            if not freed.done():
                freed.set_result(None)

    def count(self, reason: str) -> None:
        self.closed_by_reason[reason] += 1
        if self._on_close is not None:
            self._on_close(reason)


class Acceptor:
    """Accepts the REST door's connections (instead of uvicorn's server), one at a time and only
    when :meth:`Connections.room` says the door may take one; a full door leaves newcomers in the
    kernel's listen queue. Each accepted socket gets a protocol from ``factory`` (uvicorn's, with
    its server state), as uvicorn's own server would give it."""

    def __init__(
        self,
        connections: Connections,
        sockets: Sequence[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        *,
        ssl_context: ssl.SSLContext | None,
        backlog: int,
    ) -> None:
        self.connections = connections
        self.sockets = list(sockets)
        self.factory = factory
        self.ssl_context = ssl_context
        self.backlog = backlog
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed = 0  # accepts that failed since the last warning
        self._next_warning = 0.0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            sock.setblocking(False)
            sock.listen(self.backlog)
            self._tasks.add(loop.create_task(self._serve(sock), name=f"rest-accept-{sock.getsockname()}"))

    async def close(self) -> None:
        """Stop accepting and close the listening sockets (connections already open stay)."""
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for sock in self.sockets:
            sock.close()

    async def _serve(self, sock: socket.socket) -> None:
        """Accept while there is room. The accept itself is synchronous, once the listening socket
        is readable: a socket that ``loop.sock_accept`` accepted just as the task was cancelled
        (the door closing) would be lost in its future, never closed."""
        loop = asyncio.get_running_loop()
        while True:
            await self.connections.room()
            await _readable(sock)
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # another accept took it, or the client gave up while queued
            except OSError as exc:  # out of descriptors (EMFILE, ENFILE) or memory: try again soon
                self._cannot_accept(exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            # A Unix socket is plaintext even when the door speaks TLS: its file permissions and
            # its peers' credentials are the gate (a local connection has no network to protect).
            tls = None if conn.family == socket.AF_UNIX else self.ssl_context
            if tls is None:
                await self._connect(conn, None)
            else:  # a TLS handshake must not hold up the next accept
                task = loop.create_task(self._connect(conn, tls))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(functools.partial(_close_if_cancelled, conn))

    def _cannot_accept(self, exc: OSError) -> None:
        """A failed accept, retried every 0.1 s: one warning per :data:`WARNING_PERIOD` at most."""
        self._failed += 1
        now = time.monotonic()
        if now >= self._next_warning:
            log.warning("the REST door cannot accept connections (%d failed accepts): %s", self._failed, exc)
            self._failed = 0
            self._next_warning = now + WARNING_PERIOD

    async def _connect(self, conn: socket.socket, tls: ssl.SSLContext | None) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self.factory, conn, ssl=tls)
        except OSError:  # a reset or a failed TLS handshake (ssl.SSLError): nothing was served
            conn.close()
        except Exception:  # a bug: this connection is lost, but the door goes on accepting
            log.exception("the REST door could not serve an accepted connection")
            conn.close()
        except BaseException:  # cancelled: the door is closing
            conn.close()
            raise


def _close_if_cancelled(conn: socket.socket, task: asyncio.Task[None]) -> None:
    """A connection's task cancelled before it ran (the door closing) never saw its socket."""
    if task.cancelled():
        conn.close()


async def _readable(sock: socket.socket) -> None:
    """Until ``sock`` is readable (a listening socket: a connection is queued)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock, wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock)


#: Seconds between two warnings that the door cannot accept (it retries every 0.1 s meanwhile).
WARNING_PERIOD = 10.0


def _registry(config: Config) -> Connections:
    connections = getattr(getattr(config.app, "state", None), "connections", None)
    if not isinstance(connections, Connections):
        raise TypeError("the REST door's protocols need the app of sockbroker.doors.rest.create_app")
    return connections


def _refusal(status: int, phrase: str, detail: str) -> bytes:
    """A raw problem+json response, for refusals made before any request reaches the app."""
    body = (
        '{"type":"urn:sockbroker:error:resource-exhausted","title":"resource-exhausted",'
        f'"status":{status},"detail":"{detail}","kind":"resource-exhausted","errno":null,"errno_family":null}}'
    ).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head + body


class Protocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, reporting to the door's :class:`Connections` and showing the door
    each request's connection (scope extension :data:`TRANSPORT`, for the delivery of replies)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.registry = _registry(config)
        self.connection: Connection | None = None
        self._in_headers = True
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.connection = self.registry.opened(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.registry.closed(self.connection)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.connection is None or self.connection.closed:
            return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            detail = f"request headers larger than {MAX_HEADER_BYTES} bytes"
            self.transport.write(_refusal(431, "Request Header Fields Too Large", detail))
            self.transport.close()
            self.registry.closed(self.connection)
            self.registry.count("header_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {TRANSPORT: self.transport, CONNECTION: self.connection}  # type: ignore[dict-item]
        if self.connection is not None:
            self.registry.arm(self.connection, "header_timeout", self.registry.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        if self.connection is not None:
            authorization = next((v.decode("latin-1") for n, v in self.headers if n == b"authorization"), None)
            protocols = [
                p.strip()
                for n, v in self.headers
                if n == b"sec-websocket-protocol"
                for p in v.decode("latin-1").split(",")
            ]
            self.registry.headers_complete(self.connection, bearer_authorization(authorization, protocols))
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers = True

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.registry.count("idle_timeout")
        super().timeout_keep_alive_handler()


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with each incoming message's bytes taken from the
    door's :class:`ByteBudget` before they are read, a close frame for every protocol failure
    (and a lingering close after it), and no traceback for text that is not UTF-8."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.registry = _registry(config)
        self.budget = self.registry.budget
        self.max_size = config.ws_max_size
        self.connection: Connection | None = None
        self._handshake_fed = False
        self._head = bytearray()  # the frame header being read
        self._remaining = 0  # payload bytes of the current frame not yet seen
        self._partial = 0  # the hold of a fragmented message in progress
        self._partial_size = 0
        self._complete: collections.deque[int] = collections.deque()  # holds of messages read, not yet taken
        self._taken = 0  # the hold of the message the app took last (given back at its next receive)
        self._stash: bytes | None = None  # bytes waiting for the budget (reading is paused)
        self._waiter: asyncio.Task[None] | None = None
        self._unpaid = 0  # the hold counted above that the budget has not granted yet
        self._lingering = False

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            # A refusal before the handshake (ASGI's denial response: a typed 403, 404…) is a
            # complete answer; uvicorn would log "returned without completing handshake" and
            # try to send a 500 after it.
            self.handshake_complete = True

    # ── the connection ──────────────────────────────────────────────────────
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connection = self.registry.adopt(self.transport)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        self.scope["extensions"][CONNECTION] = self.connection  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.registry.closed(self.connection)
        if self._waiter is not None:
            self._waiter.cancel()
        self.budget.give(self._partial + sum(self._complete) + self._taken - self._unpaid)
        self._partial = self._taken = self._unpaid = 0
        self._complete.clear()
        super().connection_lost(exc)

    # ── incoming bytes: each message's size is taken from the budget before it is read ──
    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # read and discarded: the close frame has been sent
        if self._stash is not None:  # still waiting for the budget: keep the order, stop reading
            self._stash += data
            self.transport.pause_reading()
            return
        if not self._handshake_fed:  # the upgrade request, replayed by the HTTP protocol
            self._handshake_fed = True
            super().data_received(data)
            return
        self._scan(data)

    def _scan(self, data: bytes) -> None:
        """Follow the frames in ``data``; feed websockets what is paid for; wait for the rest."""
        position, end = 0, len(data)
        while position < end:
            if self._remaining:
                step = min(self._remaining, end - position)
                self._remaining -= step
                position += step
                continue
            need = self._header_length()
            step = min(need - len(self._head), end - position)
            self._head += data[position : position + step]
            position += step
            if len(self._head) < self._header_length():
                break
            size = self._frame_started()
            if size and not self.budget.try_take(size):
                self._feed(data[:position])
                self._wait(size, data[position:])
                return
        self._feed(data)

    def _header_length(self) -> int:
        if len(self._head) < 2:
            return 2
        length7 = self._head[1] & 0x7F
        extended = 2 if length7 == 126 else 8 if length7 == 127 else 0
        return 2 + extended + (4 if self._head[1] & 0x80 else 0)

    def _frame_started(self) -> int:
        """A frame header is complete: the bytes its message must take from the budget now."""
        head = bytes(self._head)
        self._head.clear()
        fin, opcode = head[0] & 0x80, head[0] & 0x0F
        length7 = head[1] & 0x7F
        length = int.from_bytes(head[2:4] if length7 == 126 else head[2:10], "big") if length7 >= 126 else length7
        self._remaining = length
        if length > self.max_size or opcode >= 8:  # too big (websockets refuses it: 1009) or control
            return 0
        if opcode in (_TEXT, _BINARY):
            if fin:
                self._complete.append(length)
                return length
            self._partial, self._partial_size = self.max_size, length  # size unknown: the most, for now
            return self.max_size
        if opcode == _CONTINUATION and self._partial:
            self._partial_size += length
            if fin:
                kept = min(self._partial_size, self._partial)
                self.budget.give(self._partial - kept)
                self._complete.append(kept)
                self._partial = self._partial_size = 0
        return 0

    def _feed(self, data: bytes) -> None:
        if data:
            super().data_received(data)

    def _wait(self, size: int, rest: bytes) -> None:
        self._stash = rest
        self._unpaid = size
        self.transport.pause_reading()

        async def paid() -> None:
            await self.budget.take(size)
            self._waiter = None
            self._unpaid = 0
            stash, self._stash = self._stash or b"", None
            if self.transport.is_closing():
                return
            if not self.read_paused:
                self.transport.resume_reading()
            self._scan(stash)

        self._waiter = asyncio.get_running_loop().create_task(paid())

    def send_receive_event_to_app(self) -> None:
        # uvicorn's, without its traceback for text that is not UTF-8, and with its hold given
        # back when a message is discarded.
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            self._discarded()
            return
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self._discarded()
                self.conn.fail(1007, "a text frame that is not UTF-8")
                self.handle_parser_exception()
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _discarded(self) -> None:
        if self._complete:
            self.budget.give(self._complete.pop())

    async def receive(self) -> ASGIReceiveEvent:
        self.budget.give(self._taken)  # the app is done with the message it took before
        self._taken = 0
        message = await super().receive()
        if message["type"] == "websocket.receive" and self._complete:
            self._taken = self._complete.popleft()
        return message

    # ── failures: a close frame, then a lingering close ──────────────────────
    def handle_parser_exception(self) -> None:
        sent = self.conn.close_sent
        code, reason = (sent.code, sent.reason) if sent is not None else (1002, "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.close_sent = True
        self._linger()

    def _linger(self) -> None:
        """Send what websockets has to send (the close frame), half-close, and read and discard
        what the client still sends for a while, so that it reads the close frame."""
        self._lingering = True
        if self._waiter is not None:
            self._waiter.cancel()
        self._stash = None
        output = b"".join(self.conn.data_to_send())
        if self.transport.is_closing():
            return
        self.transport.write(output)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.read_paused = False
        # uvicorn's closing-handshake timer: while it runs, the app's end does not close the socket
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(LINGER_SECONDS, self.transport.abort)
