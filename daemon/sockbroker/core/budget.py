"""Bytes the daemon buffers, counted against a limit per session and for the whole daemon.

Every byte the core holds on a client's behalf — read from a TCP peer and not yet taken, queued
for a TCP peer that has not taken it, queued for a datagram stream — is charged to the session's
:class:`Budget`, whose parent is the daemon's. A producer asks :attr:`Budget.full` before it
produces more (a socket reader stops reading, a writer waits, a datagram stream drops and counts)
and asks to be called back :meth:`Budget.when_room`. So nothing a peer or a client does grows the
daemon's memory past ``daemon_buffer`` plus one chunk per producer that was already running
(DESIGN §5, P8): the rest waits in the kernel, where TCP's own flow control holds the peer.

Waking is metered: a release wakes as many waiters as the room left can feed one chunk
(:data:`WAKE_SHARE`) each, not all of them, so ten thousand stalled connections do not all read
at once the moment one byte is freed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["WAKE_SHARE", "Budget"]

#: The room one woken producer is expected to use (a TCP reader's chunk).
WAKE_SHARE = 256 * 1024


class Budget:
    """A byte count with a limit, nested in a parent budget (session → daemon)."""

    __slots__ = ("_waiting", "limit", "parent", "used")

    def __init__(self, limit: int, parent: Budget | None = None) -> None:
        self.limit = limit
        self.parent = parent
        self.used = 0
        #: Callbacks waiting for room at this level, oldest first (a dict is an ordered set).
        self._waiting: dict[Callable[[], None], None] = {}

    @property
    def full(self) -> bool:
        """No room here or in a parent: a producer must wait (or drop, for datagrams)."""
        return self._blocker() is not None

    @property
    def full_here(self) -> bool:
        """No room at this level (its parents not considered)."""
        return self.used >= self.limit

    @property
    def room(self) -> int:
        """Bytes that may still be charged before this budget or a parent is full (≤ 0: full)."""
        left = self.limit - self.used
        level = self.parent
        while level is not None:
            left = min(left, level.limit - level.used)
            level = level.parent
        return left

    def _blocker(self) -> Budget | None:
        level: Budget | None = self
        while level is not None:
            if level.used >= level.limit:
                return level
            level = level.parent
        return None

    def charge(self, size: int) -> None:
        """Count ``size`` more bytes held. May go past the limit: producers check :attr:`full` first."""
        level: Budget | None = self
        while level is not None:
            level.used += size
            level = level.parent

    def release(self, size: int) -> None:
        """Count ``size`` bytes freed, and wake waiters for whom there is room again."""
        if size <= 0:
            return
        level: Budget | None = self
        while level is not None:
            level.used -= size
            level._wake()
            level = level.parent

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, soon, when this budget and its parents have room."""
        blocker = self._blocker()
        if blocker is None:
            asyncio.get_running_loop().call_soon(callback)
        else:
            blocker._waiting[callback] = None

    def forget(self, callback: Callable[[], None]) -> None:
        """A producer that closed no longer waits for room."""
        level: Budget | None = self
        while level is not None:
            level._waiting.pop(callback, None)
            level = level.parent

    def _wake(self) -> None:
        if not self._waiting or self.used >= self.limit:
            return
        loop = asyncio.get_running_loop()
        for _ in range(max(1, (self.limit - self.used) // WAKE_SHARE)):
            if not self._waiting:
                break
            callback = next(iter(self._waiting))
            del self._waiting[callback]
            loop.call_soon(callback)
