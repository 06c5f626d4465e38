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
import socket
import struct
import termios
from collections.abc import Callable

__all__ = ["ACK_WAIT_SECONDS", "Delivery", "settle_later"]

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


def settle_later(
    delivery: Delivery | None, settle: Callable[[bool], None], ready: Callable[[], bool] | None = None
) -> None:
    """Settle a call once its reply's fate is known, in a task of its own (the reply path does not
    wait): ``settle(True)`` when the client's kernel acknowledged it, ``settle(False)`` when the
    connection broke first. ``ready`` (optional) says the reply has left the door's own buffers."""

    async def run() -> None:
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + ACK_WAIT_SECONDS
            while ready is not None and not ready() and loop.time() < end:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.001)
            settle(True if delivery is None else await delivery.acknowledged())
        except BaseException:
            settle(False)
            raise

    task = asyncio.ensure_future(run())
    _settling.add(task)
    task.add_done_callback(_settling.discard)
