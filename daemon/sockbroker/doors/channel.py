"""The channel door (DESIGN §8): where tickets from ``Ports.OpenChannel`` / ``Udp.OpenChannel``
are redeemed — a TCP listener for relays (loopback by default) and a Unix socket (0600) for
relays and hand-offs.

A client connects, writes its ticket and a newline, and reads one line: ``OK`` or
``ERR <kind> <message>`` (:mod:`..core.channels` says what follows an ``OK``). The door reads
exactly the ticket line (it peeks for the newline), so bytes a client sends right behind its
ticket are the channel's. A connection that has not sent a whole line within ``header_timeout``,
or sends more than :data:`MAX_LINE` bytes without a newline, is answered ``ERR`` and closed; at
most ``connections_per_door`` connections wait for their line at once (past that, the oldest is
closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pathlib
import socket

from sockbroker_wire.packed import pack_datagrams

from ..core._net import descriptor_ceiling
from ..core.broker import Broker
from ..core.channels import Opened
from ..core.errors import BrokerError, ContractError
from ..files import bind_tcp, bind_unix, format_address

__all__ = ["MAX_LINE", "ChannelDoor"]

log = logging.getLogger(__name__)

#: The longest ticket line the door reads (a ticket is 24 characters).
MAX_LINE = 256
#: Seconds the door stops accepting after an accept failed (out of descriptors).
ACCEPT_RETRY = 0.1
#: After ``ERR``: how long, and how many bytes, the door reads and drops before it closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class ChannelDoor:
    """The channel listeners of one daemon (:meth:`start`, :meth:`close`)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.loop = asyncio.get_running_loop()
        self._listeners: list[tuple[socket.socket, bool]] = []
        #: Connections not yet past their ticket line, oldest first.
        self._waiting: dict[asyncio.Task[None], None] = {}
        self._unix_path: pathlib.Path | None = None
        self._warned_at = -60.0

    def listen_tcp(self, host: str, port: int) -> None:
        """Take relays on ``host``:``port``; raises :class:`StartupError` (one line) when unusable."""
        for sock in bind_tcp("--channel-address", host, port):
            sock.listen(socket.SOMAXCONN)
            self._listen(sock, unix=False)
        bound = self._listeners[0][0].getsockname()
        self.broker.channels.relay_address = format_address(host, bound[1])

    def listen_unix(self, path: pathlib.Path) -> None:
        """Take relays and hand-offs on the Unix socket ``path`` (created 0600)."""
        sock = bind_unix("--channel-socket", path)
        self._unix_path = path
        self._listen(sock, unix=True)
        self.broker.channels.handoff_path = str(path.absolute())

    def adopt(self, sock: socket.socket) -> None:
        """Take relays (and hand-offs, on a Unix socket) on a listening socket the service manager
        passed (socket activation, :mod:`..systemd`); its path, if any, is the manager's to remove."""
        if sock.family == socket.AF_UNIX:
            self._listen(sock, unix=True)
            self.broker.channels.handoff_path = sock.getsockname()
        else:
            self._listen(sock, unix=False)
            self.broker.channels.relay_address = format_address(*sock.getsockname()[:2])

    def _listen(self, sock: socket.socket, *, unix: bool) -> None:
        sock.setblocking(False)
        self._listeners.append((sock, unix))
        self.loop.add_reader(sock.fileno(), self._accept, sock, unix)

    def _accept(self, listening: socket.socket, unix: bool) -> None:
        limits = self.broker.limits
        for _ in range(64):  # a burst is taken in turns with the rest of the loop's work
            try:
                conn, _addr = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: try again in a moment, not in a busy loop
                self._pause(listening, unix, exc)
                return
            if conn.fileno() >= descriptor_ceiling(limits):
                conn.close()
                continue
            conn.setblocking(False)
            while len(self._waiting) >= limits.connections_per_door:
                oldest = next(iter(self._waiting))
                oldest.cancel()  # it closes its connection as it ends
                del self._waiting[oldest]
            task = self.loop.create_task(self._serve(conn, unix))
            self._waiting[task] = None
            task.add_done_callback(functools.partial(self._served, conn))

    def _pause(self, listening: socket.socket, unix: bool, exc: OSError) -> None:
        """Accepting failed (out of descriptors): stop watching the listener for a moment (it stays
        readable while connections wait, and would spin the loop), saying so at most once a minute."""
        now = self.loop.time()
        if now - self._warned_at >= 60.0:
            self._warned_at = now
            log.warning("channel door: accept failed (%s); retrying every %g s", exc.strerror or exc, ACCEPT_RETRY)
        fd = listening.fileno()
        self.loop.remove_reader(fd)

        def resume() -> None:
            if listening.fileno() == fd:  # not closed meanwhile
                self.loop.add_reader(fd, self._accept, listening, unix)

        self.loop.call_later(ACCEPT_RETRY, resume)

    def _served(self, conn: socket.socket, task: asyncio.Task[None]) -> None:
        """A connection's task ended. Cancelled (evicted, or the door closing), perhaps before it
        ever ran: its connection is closed here."""
        self._waiting.pop(task, None)
        if task.cancelled():
            conn.close()
        if not task.cancelled() and task.exception() is not None:
            log.error("channel door: %r", task.exception())

    async def _serve(self, conn: socket.socket, unix: bool) -> None:
        channels = self.broker.channels
        try:
            line = await asyncio.wait_for(self._line(conn), self.broker.limits.header_timeout)
            ticket = channels.take(line, unix=unix)
        except TimeoutError:
            await self._refuse(conn, ContractError("channel", "no ticket line in time"))
            return
        except BrokerError as exc:
            await self._refuse(conn, exc)
            return
        except OSError:  # the client left or reset before its line
            conn.close()
            return
        self._waiting.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        try:
            opened = await channels.open(ticket, conn)
        except BrokerError as exc:
            await self._refuse(conn, exc)
            return
        if opened.relay is not None:
            try:
                await self.loop.sock_sendall(conn, b"OK\n")
            except OSError as exc:
                opened.relay.fail(exc)  # the client left before OK: the connection goes with it
            else:
                opened.relay.start()
            return
        await self._hand_over(conn, opened)

    async def _hand_over(self, conn: socket.socket, opened: Opened) -> None:
        """``OK`` with the descriptor attached (SCM_RIGHTS), then the bytes (or, for UDP, the
        datagrams as packed records: docs/wire.md) read before the hand-off, then the end."""
        early = opened.early if isinstance(opened.early, bytes) else pack_datagrams(opened.early)
        try:
            socket.send_fds(conn, [b"OK\n"], [opened.fd])
            if early:
                await asyncio.wait_for(self.loop.sock_sendall(conn, early), self.broker.limits.idle_timeout)
        except (OSError, TimeoutError) as exc:  # the client left, or stopped reading: its copy is its own
            log.info("hand-off of fd %d: the client left (%s)", opened.fd, exc)
        finally:
            conn.close()

    async def _line(self, conn: socket.socket) -> str:
        """The ticket line, read up to its newline and not a byte further: a peek finds where the
        line ends; bytes of a line not yet ended are taken as they come."""
        line = b""
        while True:
            await self._readable(conn)
            head = conn.recv(MAX_LINE - len(line), socket.MSG_PEEK)
            if not head:
                raise ContractError("channel", "the connection ended before its ticket line")
            end = head.find(b"\n")
            line += conn.recv(len(head) if end < 0 else end + 1)
            if end >= 0:
                try:
                    return line[:-1].decode("ascii").strip()
                except UnicodeDecodeError:
                    raise ContractError("channel", "a ticket is ASCII") from None
            if len(line) >= MAX_LINE:
                raise ContractError("channel", f"no newline in the first {MAX_LINE} bytes")

    async def _readable(self, conn: socket.socket) -> None:
        ready = self.loop.create_future()
        self.loop.add_reader(conn.fileno(), _wake, ready)
        try:
            await ready
        finally:
            self.loop.remove_reader(conn.fileno())

    async def _refuse(self, conn: socket.socket, exc: BrokerError) -> None:
        """Answer ``ERR`` and close. What the client sent past its line is read and dropped first
        (at most :data:`LINGER_BYTES`, for at most :data:`LINGER_SECONDS`), so that closing with
        unread bytes does not reset the connection before the client has read the answer."""
        message = " ".join(exc.message.split())
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                await self.loop.sock_sendall(conn, f"ERR {exc.kind} {message}\n".encode())
                conn.shutdown(socket.SHUT_WR)
                dropped = 0
                while dropped < LINGER_BYTES and (chunk := await self.loop.sock_recv(conn, 65536)):
                    dropped += len(chunk)
        except (OSError, TimeoutError):
            pass
        finally:
            conn.close()

    async def close(self) -> None:
        for sock, _unix in self._listeners:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self._listeners.clear()
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel()  # each closes its connection as it ends
        await asyncio.gather(*waiting, return_exceptions=True)
        self._waiting.clear()
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                self._unix_path.unlink()
            self._unix_path = None
