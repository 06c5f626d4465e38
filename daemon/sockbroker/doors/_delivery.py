"""Did a reply reach the client? The one test both doors use to settle a call (``core/breaks.py``).

DESIGN §2: a reply the client's kernel accepted counts as delivered. TCP says exactly that: the
client's kernel acknowledges every byte it accepts, and a client that has gone answers a reply
with a reset, never an ACK. So right before a reply is written the door notes how many bytes the
connection has ever queued (:func:`_queued_ever`, one ``TCP_INFO``); once the reply is queued
(the count grew by the whole reply) the call is settled when the client's kernel has
acknowledged every byte up to the reply's end (delivered), or when the connection is reset or
closed first (not delivered: its effects are given back). A write that met a reset queued
nothing: not delivered either.

The REST door writes its replies itself and says so (:meth:`Delivery.handed`); gRPC core writes
them in threads of its own, so the gRPC door watches the count grow (:meth:`Delivery.written`).
Either way the verdict rests on the client's ACKs, not on when the door last looked: a client
that leaves while its reply is being written is told apart exactly. The door keeps a duplicate
of the connection's descriptor while it waits, so that the socket it looks at cannot be closed
and its number reused meanwhile. A socket that is not TCP (a Unix socket door) cannot tell: its
replies count as delivered once written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
from collections.abc import Awaitable

from ..core.breaks import Call

__all__ = ["ACK_WAIT_SECONDS", "WRITE_WAIT_SECONDS", "Delivery", "peer_gone", "settle"]

#: ``struct tcp_info`` (linux/tcp.h, Linux 4.19 and later): ``tcpi_state`` is its first byte;
#: ``tcpi_bytes_acked`` (u64) at byte 120; ``tcpi_notsent_bytes`` (u32) at 144;
#: ``tcpi_bytes_sent`` and ``tcpi_bytes_retrans`` (u64 each) at 200 and 208.
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120
_NOTSENT = struct.Struct("=I")
_NOTSENT_AT = 144
_SENT = struct.Struct("=QQ")
_SENT_AT = 200
_TCP_INFO_SIZE = 256
_TCP_CLOSE = 7
#: How long a reply may wait for its ACK before it counts as delivered all the same (a client
#: that is connected but slow to acknowledge still holds the bytes in its kernel's queue).
ACK_WAIT_SECONDS = 2.0
#: A reply not written this long after it was handed to gRPC core, to a client still connected,
#: counts as delivered: core holds it for that client (its flow-control window is full), or the
#: client cancelled the call on a connection it keeps (gRPC does not tell a handler that has
#: returned).
WRITE_WAIT_SECONDS = 0.1
#: How long the look for core's write runs on every turn of the loop before every millisecond:
#: gRPC core usually writes a reply within a millisecond of being handed it.
_EVERY_TURN_SECONDS = 0.002
#: Loop turns spent looking for the ACK before waiting on the timer (loopback ACKs take
#: microseconds), then the first wait; each wait doubles, up to the last. A client in
#: request-reply mode may delay its ACK by 40 ms or more (Linux's delayed ACK).
_SPINS = 8
_FIRST_WAIT = 0.001
_LONGEST_WAIT = 0.05


def _queued_ever(sock: socket.socket) -> int:
    """Every byte ever queued on TCP socket ``sock``: sent once (``tcpi_bytes_sent`` less
    ``tcpi_bytes_retrans``) or not sent yet (``tcpi_notsent_bytes``). It only grows, and a failed
    write leaves it as it was. One ``TCP_INFO`` is one snapshot, taken under the socket's lock:
    adding ``tcpi_bytes_acked`` and ``TIOCOUTQ`` from two calls would miss an ACK landing between them."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    if len(raw) < _SENT_AT + _SENT.size:
        raise OSError("TCP_INFO without tcpi_bytes_sent (Linux 4.19 or later)")
    sent, retransmitted = _SENT.unpack_from(raw, _SENT_AT)
    return int(sent - retransmitted + _NOTSENT.unpack_from(raw, _NOTSENT_AT)[0])


class Delivery:
    """The fate of one reply on one connection. Made right before the reply is written; then
    either :meth:`handed` (the door wrote it) and :meth:`acknowledged`, or :meth:`written` (a
    transport writes it on its own). Each waits in the caller's task; the door runs it apart
    (:func:`settle`) so that its reply path does not wait."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self._target: int | None = None
        self._lost = False
        self._mark = 0
        self._poked = False
        self._wake: asyncio.Future[None] | None = None
        try:
            self._mark = _queued_ever(sock)
        except OSError:
            self._close()  # not TCP: delivered once written

    @classmethod
    def of(cls, fd: int) -> Delivery | None:
        """The delivery of a reply about to be written on ``fd``; None when ``fd`` is no socket any more."""
        try:
            copy = os.dup(fd)
        except OSError:
            return None
        try:
            return cls(socket.socket(fileno=copy))
        except OSError:
            os.close(copy)
            return None

    def handed(self, least: int, buffered: int = 0) -> None:
        """The door wrote the reply: at least ``least`` bytes, ``buffered`` of them still in its own
        buffer. Unless the connection took them all, the reply is not delivered."""
        if self._sock is None:
            return
        try:
            total = _queued_ever(self._sock) + buffered
        except OSError:
            total = self._mark
        self._reached(total, least)

    def poke(self) -> None:
        """Look again now rather than when the current wait ends (somebody waits for the verdict)."""
        self._poked = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until :meth:`poke`."""
        if self._poked:
            self._poked = False
            return
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_later(seconds, lambda: None if wake.done() else wake.set_result(None))
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None
            self._poked = False

    def _reached(self, total: int, least: int) -> None:
        if total - self._mark >= least:
            self._target = total
        else:
            self._lost = True
            self._close()

    async def written(self, least: int, within: float = WRITE_WAIT_SECONDS) -> bool:
        """A transport writes the reply (at least ``least`` bytes) on its own: wait until the
        connection's count has grown by all of it, then for its ACK. A FIN or reset before that
        means the client left first (a reply written after a FIN meets a reset). A reply not
        written ``within`` seconds to a client still connected counts as delivered."""
        try:
            if self._sock is None:
                return not self._lost
            loop = asyncio.get_running_loop()
            start = loop.time()
            while True:
                try:
                    total = _queued_ever(self._sock)
                    if total - self._mark < least and peer_gone(self._sock.fileno()):
                        total = _queued_ever(self._sock)  # written right before the client left?
                        break
                except OSError:
                    return False
                if total - self._mark >= least:
                    break
                waited = loop.time() - start
                if waited > within:
                    return True
                if waited < _EVERY_TURN_SECONDS:
                    await asyncio.sleep(0)
                else:
                    await self._pause(0.001)
            self._reached(total, least)
            return await self.acknowledged()
        finally:
            self._close()

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _settled(self) -> bool | None:
        """True: all acknowledged; False: reset or closed first; None: not yet."""
        assert self._sock is not None and self._target is not None
        try:
            raw = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except OSError:
            return False
        if _BYTES_ACKED.unpack_from(raw, _BYTES_ACKED_AT)[0] >= self._target:
            return True
        return False if raw[0] == _TCP_CLOSE else None

    async def acknowledged(self, within: float = ACK_WAIT_SECONDS) -> bool:
        """Wait until the client's kernel has acknowledged every byte of the reply."""
        try:
            if self._sock is None:
                return not self._lost
            loop = asyncio.get_running_loop()
            end = loop.time() + within
            turns = 0
            wait = _FIRST_WAIT
            while (settled := self._settled()) is None:
                if loop.time() > end:
                    return True
                turns += 1
                if turns <= _SPINS:
                    await asyncio.sleep(0)
                else:
                    await self._pause(wait)
                    wait = min(2 * wait, _LONGEST_WAIT)
            return settled
        finally:
            self._close()


_settling: set[asyncio.Task[None]] = set()


def settle(call: Call, delivery: Delivery, outcome: Awaitable[bool]) -> None:
    """Settle ``call`` by ``outcome`` (one of ``delivery``'s waits) in a task of its own, so that
    the reply path does not wait: delivered or given back, and given back if finding out fails.
    Meanwhile a take waiting for ``call`` (:meth:`Call.hurry`) makes ``delivery`` look at once."""
    call.hurry_settling = delivery.poke

    async def run() -> None:
        try:
            delivered = await outcome
        except BaseException:
            call.finish(delivered=False)
            raise
        call.finish(delivered=delivered)

    task = asyncio.ensure_future(run())
    _settling.add(task)
    task.add_done_callback(_settling.discard)


_GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR


def peer_gone(fd: int) -> bool:
    """Has the client closed or reset the connection on socket ``fd``, even if nobody has read
    that yet? (A FIN or reset waiting in the kernel.) Both doors ask this one question."""
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, _GONE)
    return any(events & _GONE for _, events in poller.poll(0))
