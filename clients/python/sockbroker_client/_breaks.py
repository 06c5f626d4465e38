"""Cancelling a call without losing what it got: Racket's ``/enable-break`` promise, client side.

Every call carries a fresh call id. When the caller's task is cancelled while the call is in
flight, the client asks the daemon to break that call (``Sessions.CancelCall``) and waits for
the call's final outcome: either the daemon broke it before performing anything, or the
operation had already happened. In that case its result is *given back*: a datagram to the next
receive on that socket, a connection to the next accept on that listener, bytes to the next
read of that port; a connection made by a cancelled connect is closed. The caller sees the
cancellation either way, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ._errors import BrokerError

__all__ = ["Returned", "breakable"]

#: How long the client waits for the daemon to settle a cancelled call.
SETTLE_SECONDS = 10.0

Key = tuple[str, str]


class Returned:
    """Results of cancelled calls, held for the next caller: by ("udp" | "listener" | "port", handle)."""

    def __init__(self) -> None:
        self._items: dict[Key, deque[Any]] = {}

    def put(self, key: Key, item: Any) -> None:
        self._items.setdefault(key, deque()).append(item)

    def take(self, key: Key) -> Any | None:
        queue = self._items.get(key)
        if not queue:
            return None
        item = queue.popleft()
        if not queue:
            del self._items[key]
        return item

    def push_front(self, key: Key, item: Any) -> None:
        self._items.setdefault(key, deque()).appendleft(item)

    def peek(self, key: Key) -> Any | None:
        queue = self._items.get(key)
        return queue[0] if queue else None


async def breakable(
    run: Callable[[str], Awaitable[dict[str, Any]]],
    cancel: Callable[[str], Awaitable[Any]],
    give_back: Callable[[dict[str, Any]], Awaitable[None]],
) -> dict[str, Any]:
    """Run ``run(call_id)``; if the caller is cancelled, break the call and give back its result."""
    call_id = secrets.token_hex(12)
    task = asyncio.ensure_future(run(call_id))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await _settle(task, call_id, cancel, give_back)
        raise


async def _settle(
    task: asyncio.Future[dict[str, Any]],
    call_id: str,
    cancel: Callable[[str], Awaitable[Any]],
    give_back: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if not task.done():
        with contextlib.suppress(BrokerError, OSError, TimeoutError):
            await asyncio.wait_for(cancel(call_id), SETTLE_SECONDS)
    try:
        result = await asyncio.wait_for(asyncio.shield(task), SETTLE_SECONDS)
    except (BrokerError, OSError):
        return  # broken before it performed anything (exn:break), or it failed: nothing to keep
    except TimeoutError:
        task.cancel()
        return
    await give_back(result)
