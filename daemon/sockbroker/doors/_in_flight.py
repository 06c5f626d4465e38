"""Bytes of requests a front door holds at once while receiving and decoding them (DESIGN §5:
concurrent in-flight request bodies): one :class:`ByteBudget` per door, of
``request_bytes_in_flight`` bytes. The REST door takes a body's size from it before reading the
body (``doors/_rest_connections.py``), the gRPC door a write's message before reading it
(``doors/grpc.py``); each holds it until its call is done with the bytes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable

__all__ = ["ByteBudget"]


class ByteBudget:
    """Bytes being received and decoded at once, across the door: a FIFO semaphore counted in
    bytes. A taker asks for its whole size at once (never more than :attr:`capacity`), so
    takers never deadlock on one another; first come, first served, so a big one is not
    starved by small ones."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_take(self, size: int) -> bool:
        if not self._waiters and self.used + size <= self.capacity:
            self.used += size
            return True
        return False

    async def take(self, size: int) -> None:
        if size > self.capacity:
            raise ValueError(f"{size} bytes can never fit a budget of {self.capacity}")
        if self.try_take(size):
            return
        entry = (size, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry[1].done() and not entry[1].cancelled():
                self.give(size)  # granted, but its taker is gone
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()
            raise

    def give(self, size: int) -> None:
        if size:
            self.used -= size
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            size, granted = self._waiters.popleft()
            if granted.done():
                continue
            self.used += size
            granted.set_result(None)

    @contextlib.asynccontextmanager
    async def holding(self, size: int) -> AsyncIterator[Callable[[int], None]]:
        """Hold ``size`` bytes for the block; the block may shrink its hold with the callable
        it gets (``keep(n)``: give back all but n)."""
        await self.take(size)
        held = size

        def keep(n: int) -> None:
            nonlocal held
            if n < held:
                self.give(held - n)
                held = n

        try:
            yield keep
        finally:
            self.give(held)
