"""Cancelling a call: the daemon keeps the promise, the client only names the call.

Every call carries a fresh call id (gRPC metadata ``sockbroker-call``, HTTP header
``Sockbroker-Call``). When the caller's task is cancelled while the call is in flight, the
client tells the daemon (``Sessions.CancelCall``) and waits, bounded, for the call to end. The
daemon either broke the call before it performed anything, or gives back what it took
(a datagram to its socket, a connection to its listener, bytes to their port; a connection made
by a cancelled connect is closed) — even when the reply was already on its way, since cancelling
says the client discards it. The caller sees the cancellation; nothing is lost, and the client
keeps no bookkeeping of its own (DESIGN.md §2).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from ._errors import BrokerError

__all__ = ["breakable"]

#: How long the client waits for the daemon to settle a cancelled call.
SETTLE_SECONDS = 10.0


async def breakable(
    run: Callable[[str], Awaitable[dict[str, Any]]], cancel: Callable[[str], Awaitable[Any]]
) -> dict[str, Any]:
    """Run ``run(call_id)``; if the caller is cancelled, cancel the call in the daemon first."""
    call_id = secrets.token_hex(12)
    task = asyncio.ensure_future(run(call_id))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await _settle(task, call_id, cancel)
        raise


async def _settle(task: asyncio.Future[dict[str, Any]], call_id: str, cancel: Callable[[str], Awaitable[Any]]) -> None:
    with contextlib.suppress(BrokerError, OSError, TimeoutError):
        await asyncio.wait_for(cancel(call_id), SETTLE_SECONDS)
    try:
        await asyncio.wait_for(asyncio.shield(task), SETTLE_SECONDS)
    except (BrokerError, OSError, TimeoutError):
        pass  # broken before it performed anything, or it failed: nothing was taken
    finally:
        task.cancel()
