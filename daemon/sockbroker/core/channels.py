"""Data paths out of band (DESIGN §8): a connection's bytes outside the RPC framing.

``Ports.OpenChannel`` / ``Udp.OpenChannel`` give the client a *ticket*: 144 random bits, for
one use, valid for :data:`TICKET_SECONDS`, bound to the session that asked (dropping the session,
or closing the handle, voids it). The client connects to the daemon's channel listener, writes the
ticket and a newline, and the daemon answers one line (:meth:`Channels.take` and
:meth:`Channels.open`, served by ``doors/channel.py``):

* ``relay`` — ``OK``; from then on the channel connection carries the connection's bytes both
  ways, moved by the kernel with ``splice(2)`` through a pipe each way (:class:`Relay`): no byte
  passes through Python. A FIN either way is carried as a FIN (half-close); when both ways have
  ended, or either side fails, the channel and the connection close together.
* ``handoff`` (Unix socket only) — ``OK``, with the connection's socket descriptor attached to
  that line (``SCM_RIGHTS``); the client uses the kernel socket itself. The daemon keeps its own
  descriptor, and closing the handles, shutting the custodian down or dropping the session calls
  ``shutdown(SHUT_RDWR)`` before ``close``: the client's copy reads EOF and its writes fail.

In both modes, bytes the daemon had already read from the peer and no client had read yet come
first: on a relay, before the peer's later bytes; on a hand-off, after the ``OK`` line on the
control connection, which then closes (read them before reading the socket). Bytes queued for the
peer are sent before the channel starts. While a channel carries a connection, its ports neither
read nor write (``exn:fail``: the connection is carried by a channel); they stay in their
custodian, and closing either one ends the channel.

A refusal is ``ERR <kind> <message>``, the kind as on every door (``not-found`` for an unknown,
used, expired or voided ticket).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._net import descriptor_ceiling
from .breaks import took
from .errors import ContractError, FailError, NotFoundError, ResourceExhaustedError, contract_violation
from .tcp import TcpConnection

if TYPE_CHECKING:
    from .limits import Limits
    from .sessions import Session
    from .udp import UdpSocket

__all__ = ["TICKET_SECONDS", "ChannelMode", "Channels", "Relay", "Ticket"]

log = logging.getLogger(__name__)

#: How long a ticket may wait to be redeemed (DESIGN §8).
TICKET_SECONDS = 10.0
#: How long a redeemed channel waits for the bytes already queued for the peer to go out.
DRAIN_SECONDS = 10.0
#: Bytes one splice moves at most; the pipes are sized to it where the kernel allows.
SPLICE_CHUNK = 1024 * 1024
_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class ChannelMode(enum.Enum):
    RELAY = "relay"
    HANDOFF = "handoff"


@dataclass
class Ticket:
    """One ticket: what it opens, for whom, until when."""

    value: str
    mode: ChannelMode
    target: TcpConnection | UdpSocket
    session: Session
    handle: str
    #: Where to redeem it: ``HOST:PORT`` or ``unix:PATH``.
    address: str
    expires: float


class Channels:
    """The daemon's tickets, and the addresses of its channel listeners (set by the channel door
    once it listens: ``relay_address`` ``HOST:PORT``, ``handoff_path`` a Unix socket path)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.relay_address: str | None = None
        self.handoff_path: str | None = None
        self._tickets: dict[str, Ticket] = {}
        #: The live ticket of each target: a new ticket for the same target replaces it, so a
        #: session holds at most one ticket per handle.
        self._by_target: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._tickets)

    # ── issuing ────────────────────────────────────────────────────────────
    def issue(self, session: Session, target: TcpConnection | UdpSocket, handle: str, mode: object, who: str) -> Ticket:
        """A ticket for ``target`` (a connection, or a UDP socket) of ``session``."""
        udp = not isinstance(target, TcpConnection)
        parsed = _mode(mode, who, ChannelMode.HANDOFF if udp else ChannelMode.RELAY)
        if udp and parsed is ChannelMode.RELAY:
            raise ContractError(
                who, "a UDP socket is handed off (mode handoff): a relay carries a byte stream", {"udp": handle}
            )
        if parsed is ChannelMode.HANDOFF:
            session.policy.check_handoff(who, udp=udp)
        address = self._address(parsed, who)
        _check_available(target, handle, who)
        self._purge()
        old = self._by_target.pop(id(target), None)
        if old is not None:
            self._tickets.pop(old, None)
        ticket = Ticket(
            secrets.token_urlsafe(18), parsed, target, session, handle, address, time.monotonic() + TICKET_SECONDS
        )
        self._tickets[ticket.value] = ticket
        self._by_target[id(target)] = ticket.value
        took(lambda: self._void(ticket))  # a reply that never arrives leaves no ticket behind
        log.debug("channel ticket for %s (%s) to %s", handle, parsed.value, address)
        return ticket

    def _address(self, mode: ChannelMode, who: str) -> str:
        if mode is ChannelMode.HANDOFF:
            if self.handoff_path is None:
                raise FailError(who, "this daemon has no hand-off socket (--channel-socket)")
            return f"unix:{self.handoff_path}"
        if self.relay_address is not None:
            return self.relay_address
        if self.handoff_path is not None:
            return f"unix:{self.handoff_path}"
        raise FailError(who, "this daemon has no channel listener (--channel-address, --channel-socket)")

    def _void(self, ticket: Ticket) -> None:
        if self._tickets.get(ticket.value) is ticket:
            del self._tickets[ticket.value]
            self._by_target.pop(id(ticket.target), None)

    def _purge(self) -> None:
        """Forget expired tickets: they are in the order they expire, so the oldest go first (a
        dropped session's tickets go with their time; :meth:`take` refuses them meanwhile)."""
        now = time.monotonic()
        while self._tickets:
            oldest = next(iter(self._tickets.values()))
            if oldest.expires > now:
                return
            self._void(oldest)

    # ── redeeming ──────────────────────────────────────────────────────────
    def take(self, value: str, *, unix: bool) -> Ticket:
        """The ticket ``value`` names, used up; refused when unknown, used, expired, voided (its
        session dropped or its handle closed), or a hand-off asked over TCP."""
        who = "channel"
        ticket = self._tickets.get(value)
        if ticket is None or not secrets.compare_digest(ticket.value, value):
            raise NotFoundError(who, "no such ticket (unknown, used or expired)")
        self._void(ticket)
        if ticket.expires <= time.monotonic():
            raise NotFoundError(who, "no such ticket (unknown, used or expired)")
        if ticket.session.dropped:
            raise NotFoundError(who, "the ticket's session is gone")
        if ticket.mode is ChannelMode.HANDOFF and not unix:
            raise ContractError(who, "a hand-off ticket is redeemed on the hand-off socket (unix:PATH)")
        _check_available(ticket.target, ticket.handle, who)
        return ticket

    async def open(self, ticket: Ticket, channel: socket.socket) -> Opened:
        """Take the socket of ``ticket``'s target away from its handles for the ``channel``
        connection: once bytes queued for the peer are out, the target stops reading and writing
        it. Raises a :class:`BrokerError` to refuse (nothing changed). The door then answers
        ``OK`` and, for a relay, starts it (:meth:`Relay.start`)."""
        target = ticket.target
        if isinstance(target, TcpConnection):
            await _quiesce(target, ticket.handle)
            _check_available(target, ticket.handle, "channel")
            if ticket.mode is ChannelMode.RELAY:
                relay = Relay(target, channel, self.limits)
                return Opened(target.fd, relay.early, relay)
            return Opened(target.fd, target.carry(_HandedOff(target.sock)), None)
        return Opened(target.fd, target.hand_off(), None)


@dataclass(frozen=True)
class Opened:
    """A channel about to answer ``OK``: the socket's descriptor (for a hand-off), what the daemon
    had read from it that no client has (bytes; for UDP, ``(data, host, port)`` datagrams), and
    the relay to start once ``OK`` is sent."""

    fd: int
    early: bytes | list[tuple[bytes, str, int]]
    relay: Relay | None


def _mode(mode: object, who: str, default: ChannelMode) -> ChannelMode:
    if not mode:
        return default
    try:
        return ChannelMode(mode)
    except ValueError:
        raise contract_violation(who, "(or/c 'relay 'handoff)", mode) from None


def _check_available(target: TcpConnection | UdpSocket, handle: str, who: str) -> None:
    (target.in_port if isinstance(target, TcpConnection) else target).ensure_open(who)


async def _quiesce(conn: TcpConnection, handle: str) -> None:
    """Before a channel takes the socket: bytes a cancelled read may still give back are settled,
    and every byte queued for the peer (a block-buffered port's included) is out."""
    who = "channel"
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while conn.unsettled.busy:
                await conn.unsettled.settled()
            conn.out_port.flush_buffer(who)
            while conn.tx and conn.tx_error is None and not conn.closed:
                await conn.writable.wait()
    except TimeoutError:
        raise FailError(
            who, f"the peer did not take the bytes queued for it within {DRAIN_SECONDS:g} s", {"port": handle}
        ) from None
    if conn.tx_error is not None:
        raise FailError(who, "the connection can no longer send", {"port": handle, "errno": conn.tx_error.errno})


class _HandedOff:
    """A connection whose descriptor the client holds: on close, the daemon shuts it down first,
    so the client's copy dies with the daemon's."""

    mode = "handoff"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class _Pump:
    """One direction of a relay: ``src`` → pipe → ``dst`` with ``splice(2)``, as the sockets are
    ready; at ``src``'s EOF (once the pipe is empty) ``dst`` gets a FIN. The connection counts what
    is spliced from its socket (``from_peer``) or into it (:mod:`.traffic`)."""

    def __init__(
        self,
        relay: Relay,
        src: socket.socket,
        dst: socket.socket,
        pipe: tuple[int, int],
        early: bytes,
        *,
        from_peer: bool,
    ) -> None:
        self.relay = relay
        self.conn = relay.conn
        self.from_peer = from_peer
        self.loop = relay.loop
        self.src, self.dst = src.fileno(), dst.fileno()
        self.dst_sock = dst
        self.read_end, self.write_end = pipe
        self.capacity = _pipe_size(self.write_end)
        self.in_pipe = 0
        self.early = memoryview(early)
        self.eof = False
        self.done = False
        self._reading = False
        self._writing = False

    def start(self) -> None:
        if self.early:
            self._push()
        else:
            self._read()

    def _read(self) -> None:
        if not self._reading and not self.eof:
            self.loop.add_reader(self.src, self._pull)
            self._reading = True

    def _unread(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.src)
            self._reading = False

    def _write(self) -> None:
        if not self._writing:
            self.loop.add_writer(self.dst, self._push)
            self._writing = True

    def _unwrite(self) -> None:
        if self._writing:
            self.loop.remove_writer(self.dst)
            self._writing = False

    def _pull(self) -> None:
        try:
            while self.in_pipe < self.capacity:
                moved = os.splice(self.src, self.write_end, self.capacity - self.in_pipe, flags=_SPLICE_FLAGS)
                if moved == 0:
                    self.eof = True
                    self._unread()
                    break
                self.in_pipe += moved
                if self.from_peer:
                    self.conn.bytes_in += moved
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self.relay.fail(exc)
            return
        self._push()

    def _push(self) -> None:
        try:
            while self.early:
                sent = self.dst_sock.send(self.early)
                self.early = self.early[sent:]
            while self.in_pipe:
                moved = os.splice(self.read_end, self.dst, self.in_pipe, flags=_SPLICE_FLAGS)
                self.in_pipe -= moved
                if not self.from_peer:
                    self.conn.bytes_out += moved
        except (BlockingIOError, InterruptedError):
            self._unread()  # the destination is full: stop reading until it drains
            self._write()
            return
        except OSError as exc:
            self.relay.fail(exc)
            return
        self._unwrite()
        if self.eof:
            self._finish()
        else:
            self._read()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):
            self.dst_sock.shutdown(socket.SHUT_WR)
        self.relay.ended()

    def stop(self) -> None:
        self._unread()
        self._unwrite()


class Relay:
    """A connection's bytes spliced both ways between its socket and a channel connection."""

    mode = "relay"

    def __init__(self, conn: TcpConnection, channel: socket.socket, limits: Limits) -> None:
        """Make the pipes and take the connection's socket (:meth:`TcpConnection.carry`); raises
        (nothing taken) when the daemon has no descriptors to spare for the pipes."""
        self.loop = asyncio.get_running_loop()
        self.conn = conn
        self.channel = channel
        self._pipes: list[int] = []
        self._pumps: list[_Pump] = []
        self.stopped = False
        for _ in range(2):
            read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._pipes += [read_end, write_end]
        if max(self._pipes) >= descriptor_ceiling(limits):
            self._close_pipes()
            raise ResourceExhaustedError("channel", "too many open descriptors for another relay")
        for write_end in self._pipes[1::2]:
            with contextlib.suppress(OSError):  # EPERM past /proc/sys/fs/pipe-max-size: keep the default
                fcntl.fcntl(write_end, _F_SETPIPE_SZ, SPLICE_CHUNK)
        channel.setblocking(False)
        self.early = conn.carry(self)

    def start(self) -> None:
        """``OK`` has been sent: relay both ways, the bytes read before the channel first."""
        if self.stopped:  # the connection closed while OK was on its way
            return
        sock = self.conn.sock
        self._pumps = [
            _Pump(self, sock, self.channel, (self._pipes[0], self._pipes[1]), self.early, from_peer=True),
            _Pump(self, self.channel, sock, (self._pipes[2], self._pipes[3]), b"", from_peer=False),
        ]
        self.early = b""
        for pump in self._pumps:
            pump.start()

    def ended(self) -> None:
        """A direction ended with a FIN: when both have, the channel and the connection close."""
        if all(pump.done for pump in self._pumps):
            self.conn.force_close_ports()

    def fail(self, exc: OSError) -> None:
        """Either side failed (or the client left before ``OK``): the channel and the connection close."""
        if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
            log.info("relay of %s ended: %s", self.conn.in_port.handle, exc.strerror or exc)
        self.conn.force_close_ports()

    def stop(self) -> None:
        """The connection is closing: stop both directions and close the channel and the pipes."""
        if self.stopped:
            return
        self.stopped = True
        for pump in self._pumps:
            pump.stop()
        self._close_pipes()
        self.channel.close()

    def _close_pipes(self) -> None:
        pipes, self._pipes = self._pipes, []
        for fd in pipes:
            os.close(fd)


def _pipe_size(fd: int) -> int:
    try:
        return fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032))
    except OSError:
        return 64 * 1024
