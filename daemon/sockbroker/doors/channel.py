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
import logging
import pathlib
import socket

from sockbroker_wire.packed import pack_datagrams

from ..core.broker import Broker
from ..core.channels import Opened
from ..core.errors import BrokerError, ContractError
from ..files import bind_tcp, bind_unix, format_address
from ._listeners import Listeners, readable

__all__ = ["MAX_LINE", "ChannelDoor"]

log = logging.getLogger(__name__)

#: The longest ticket line the door reads (a ticket is 24 characters).
MAX_LINE = 256
#: After ``ERR``: how long, and how many bytes, the door reads and drops before it closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


class ChannelDoor:
    """The channel listeners of one daemon (:meth:`start`, :meth:`close`)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.loop = asyncio.get_running_loop()
        self._listeners = Listeners("channel door", broker, self._serve)
        self._unix_path: pathlib.Path | None = None

    def listen_tcp(self, host: str, port: int) -> None:
        """Take relays on ``host``:``port``; raises :class:`StartupError` (one line) when unusable."""
        for sock in bind_tcp("--channel-address", host, port):
            sock.listen(socket.SOMAXCONN)
            self._listeners.listen(sock, unix=False)
        bound = self._listeners.sockets[0][0].getsockname()
        self.broker.channels.relay_address = format_address(host, bound[1])

    def listen_unix(self, path: pathlib.Path) -> None:
        """Take relays and hand-offs on the Unix socket ``path`` (created 0600)."""
        sock = bind_unix("--channel-socket", path)
        self._unix_path = path
        self._listeners.listen(sock, unix=True)
        self.broker.channels.handoff_path = str(path.absolute())

    def adopt(self, sock: socket.socket) -> None:
        """Take relays (and hand-offs, on a Unix socket) on a listening socket the service manager
        passed (socket activation, :mod:`..systemd`); its path, if any, is the manager's to remove."""
        if sock.family == socket.AF_UNIX:
            self._listeners.listen(sock, unix=True)
            self.broker.channels.handoff_path = sock.getsockname()
        else:
            self._listeners.listen(sock, unix=False)
            self.broker.channels.relay_address = format_address(*sock.getsockname()[:2])

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
        self._listeners.settled()
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
            await readable(conn)
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
        await self._listeners.close()
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                self._unix_path.unlink()
            self._unix_path = None
