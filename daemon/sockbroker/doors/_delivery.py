"""Did a reply reach the client? The one test both doors use to settle a call (``core/breaks.py``).

DESIGN §2: a reply the client's kernel accepted counts as delivered. TCP says exactly that: the
client's kernel acknowledges every byte it accepts. So once a reply is queued on its connection,
the door notes how many bytes must be acknowledged for all of it to be (``TCP_INFO``'s
``tcpi_bytes_acked`` plus what is still queued, ``TIOCOUTQ``), and the call is settled when they
are (delivered) or when the connection is reset or closed first (not delivered: its effects are
given back). A client that closed before the reply arrived answers it with a reset, never an ACK.

The door keeps a duplicate of the connection's descriptor while it waits, so that the socket it
looks at cannot be closed and its number reused meanwhile. A socket that is not TCP (a Unix
socket door) cannot tell: its replies count as delivered once written.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import os
import select
import socket
import struct
import termios
from collections.abc import Awaitable, Callable

__all__ = ["ACK_WAIT_SECONDS", "Delivery", "Written", "peer_gone", "settle_later", "settle_when"]

#: ``struct tcp_info`` (linux/tcp.h): ``tcpi_state`` is its first byte, ``tcpi_bytes_acked`` the
#: 64-bit counter at byte 120 (Linux 4.1 and later).
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120
_TCP_INFO_SIZE = 256
_TCP_CLOSE = 7
#: How long a reply may wait for its ACK before it counts as delivered all the same (a client
#: that is connected but slow to acknowledge still holds the bytes in its kernel's queue).
ACK_WAIT_SECONDS = 2.0
#: Loop turns spent polling before waiting on the timer (loopback ACKs take microseconds).
_SPINS = 8


class Delivery:
    """The bytes queued so far on one connection, and whether the client's kernel acknowledged them."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self._target: int | None = None
        try:
            acked, _ = self._info()
            queued = array.array("i", [0])
            fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, queued)
        except OSError:
            self._close()  # not TCP, or already gone: decided by what was known when writing
            return
        self._target = acked + queued[0]

    @classmethod
    def of(cls, fd: int) -> Delivery | None:
        """The delivery of what is queued on ``fd`` now; None when ``fd`` is no socket any more."""
        try:
            copy = os.dup(fd)
        except OSError:
            return None
        try:
            return cls(socket.socket(fileno=copy))
        except OSError:
            os.close(copy)
            return None

    def _info(self) -> tuple[int, int]:
        assert self._sock is not None
        raw = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        if len(raw) < _BYTES_ACKED_AT + _BYTES_ACKED.size:
            raise OSError("TCP_INFO without tcpi_bytes_acked")
        return _BYTES_ACKED.unpack_from(raw, _BYTES_ACKED_AT)[0], raw[0]

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _settled(self) -> bool | None:
        """True: all acknowledged; False: reset or closed first; None: not yet."""
        assert self._target is not None
        try:
            acked, state = self._info()
        except OSError:
            return False
        if acked >= self._target:
            return True
        return False if state == _TCP_CLOSE else None

    async def acknowledged(self, within: float = ACK_WAIT_SECONDS) -> bool:
        """Wait until the client's kernel has acknowledged every byte queued when this was made."""
        try:
            if self._target is None:
                return True
            loop = asyncio.get_running_loop()
            end = loop.time() + within
            turns = 0
            while (settled := self._settled()) is None:
                if loop.time() > end:
                    return True
                turns += 1
                await asyncio.sleep(0 if turns <= _SPINS else 0.001)
            return settled
        finally:
            self._close()


_settling: set[asyncio.Task[None]] = set()


def settle_when(outcome: Awaitable[bool], settle: Callable[[bool], None]) -> None:
    """``settle(await outcome)`` in a task of its own (the reply path does not wait);
    ``settle(False)`` if finding out fails."""

    async def run() -> None:
        try:
            delivered = await outcome
        except BaseException:
            settle(False)
            raise
        settle(delivered)

    task = asyncio.ensure_future(run())
    _settling.add(task)
    task.add_done_callback(_settling.discard)


def settle_later(
    delivery: Delivery | None, settle: Callable[[bool], None], ready: Callable[[], bool] | None = None
) -> None:
    """Settle a call once its reply's fate is known: ``settle(True)`` when the client's kernel
    acknowledged it, ``settle(False)`` when the connection broke first. ``ready`` (optional) says
    the reply has left the door's own buffers."""

    async def acknowledged() -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + ACK_WAIT_SECONDS
        while ready is not None and not ready() and loop.time() < end:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.001)
        return True if delivery is None else await delivery.acknowledged()

    settle_when(acknowledged(), settle)


_GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR


def peer_gone(fd: int) -> bool:
    """Has the client closed or reset the connection on socket ``fd``, even if nobody has read
    that yet? (A FIN or reset waiting in the kernel.) Both doors ask this one question."""
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, _GONE)
    return any(events & _GONE for _, events in poller.poll(0))


#: How long :meth:`Written.outcome` looks at every turn of the loop before it looks every
#: millisecond: gRPC core usually writes a reply within a millisecond of being handed it.
_EVERY_TURN_SECONDS = 0.002
#: A reply not written this long after it was handed over, to a client still connected, counts
#: as delivered: core holds it for that client (its flow-control window is full), or the client
#: cancelled the call on a connection it keeps (gRPC does not tell a handler that has returned).
WRITE_WAIT_SECONDS = 0.1


class Written:
    """Did a reply that a transport writes on its own (gRPC core, in its own threads) leave before
    the client did?

    Made right before the reply is handed over: it notes how many bytes the connection has queued
    so far (``tcpi_bytes_acked`` + ``TIOCOUTQ``, which only grows) and how many the whole reply
    takes at least. Then it looks at the socket on every turn of the loop: the count grown by the
    whole reply means the transport wrote it — into the client's kernel, on loopback, since the
    client was still there when last looked at; a FIN or reset first means the client left before
    the reply was written (a reply written after a FIN reaches a closed socket). When both are
    seen in one look, the reply counts as delivered: a duplicate must never happen, and what is
    undecidable is what happened within one turn of the loop."""

    def __init__(self, fd: int, reply_bytes: int) -> None:
        self._sock: socket.socket | None = None
        self._want = reply_bytes
        try:
            self._sock = socket.socket(fileno=os.dup(fd))
            self._mark = self._queued()
        except OSError:
            self._close()

    def _queued(self) -> int:
        assert self._sock is not None
        raw = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        queued = array.array("i", [0])
        fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, queued)
        return int(_BYTES_ACKED.unpack_from(raw, _BYTES_ACKED_AT)[0]) + queued[0]

    def _gone(self) -> bool:
        assert self._sock is not None
        return peer_gone(self._sock.fileno())

    def _verdict(self) -> bool | None:
        """True: written while the client was there; False: the client left first; None: not yet."""
        try:
            if self._queued() - self._mark >= self._want:
                return True
            if self._gone():
                return self._queued() - self._mark >= self._want
        except OSError:
            return False
        return None

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    async def outcome(self, within: float = WRITE_WAIT_SECONDS) -> bool:
        """Wait for the verdict; a reply not written ``within`` seconds to a client still
        connected counts as delivered."""
        try:
            if self._sock is None:
                return True  # not TCP: decided by what was known when handing it over
            loop = asyncio.get_running_loop()
            start = loop.time()
            while (verdict := self._verdict()) is None:
                waited = loop.time() - start
                if waited > within:
                    return True
                await asyncio.sleep(0 if waited < _EVERY_TURN_SECONDS else 0.001)
            return verdict
        finally:
            self._close()
