"""Breaks and give-back: a cancelled call has its effect or none, and nothing is ever lost.

Racket's ``/enable-break`` promise, kept by the daemon for every client (curl included):

* The core waits for readiness, then performs the effect synchronously, so a call cancelled
  while it waits performed nothing.
* An operation that *takes* something — a datagram from a socket, a connection from a listener,
  bytes from a port — records how to give it back with :func:`took`, in the same synchronous
  step as the taking. The record lives on the :class:`Call` the front door runs the operation in.
* When the door learns that the reply was not delivered (the gRPC call was cancelled, the HTTP
  client had gone when the reply was to be written, ``Sessions.CancelCall`` arrived), it calls
  :meth:`Call.give_back`: every effect returns to the front of where it came from, newest first,
  and the next call gets it. A connection made by a cancelled connect is closed.

``Sessions.CancelCall`` names a call by the id its client gave it (gRPC metadata
``sockbroker-call``, HTTP header ``Sockbroker-Call``). It breaks the call if it is still running,
and gives back the effects of a call that has already finished if they are still held: the
caller promises, by cancelling, that it discards the reply (so a client that cancels while the
reply is on the wire loses nothing either). Effects of finished calls are held for
:data:`HOLD_SECONDS`, at most :data:`HOLD_CALLS` calls and ``Limits.cancel_hold_bytes`` bytes per
session, oldest dropped first, and never while the session's byte budget is full.

What a call took is charged to its session's byte budget (:mod:`.budget`) until the call is done
with it: while its reply is on its way, and while it is held for a late ``CancelCall``. So the bytes
of unary reads in flight count against the same limit as the bytes waiting in port buffers.

The lifecycle of a call is the table in :mod:`.states` (``CALL``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .budget import Budget
from .errors import BreakError, ContractError, contract_violation
from .states import CALL, CallState

__all__ = ["HOLD_CALLS", "HOLD_SECONDS", "Call", "Calls", "Source", "took"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Undo = Callable[[], None]

#: How long the effects of a finished call stay available to a late ``CancelCall``.
HOLD_SECONDS = 10.0
#: How many finished calls per session keep their effects for a late ``CancelCall``.
HOLD_CALLS = 256
#: Cancels that came before their call, remembered so the call breaks when it starts.
EARLY_CANCELS = 1024

_CURRENT: contextvars.ContextVar[Call | None] = contextvars.ContextVar("sockbroker_call", default=None)


class Source:
    """Where a call takes from in order (a port's bytes): while a take is unsettled — its reply
    neither known delivered nor given back — the next take waits, so a give-back can never land
    behind bytes a later call already took. A take that starts waiting asks the calls holding the
    source to hurry (:meth:`Call.hurry`): their door looks at their reply's fate at once."""

    __slots__ = ("_holders", "_settled")

    def __init__(self) -> None:
        self._holders: list[Call] = []
        self._settled: asyncio.Event | None = None

    @property
    def busy(self) -> bool:
        return bool(self._holders)

    def hold(self, call: Call) -> None:
        self._holders.append(call)

    def release(self, call: Call) -> None:
        self._holders.remove(call)
        if not self._holders and self._settled is not None:
            self._settled.set()
            self._settled = None

    async def settled(self) -> None:
        """Wait until no take from here is unsettled."""
        while self._holders:
            for call in list(self._holders):
                call.hurry()
            if not self._holders:
                break  # settled while hurried
            if self._settled is None:
                self._settled = asyncio.Event()
            await self._settled.wait()


def took(undo: Undo, source: Source | None = None, size: int = 0) -> None:
    """Record how to give back what the running operation just took (no-op outside a call).
    A ``source`` stays held — its next take waits — until the call is settled; ``size`` bytes
    (what the call now holds) are charged to the session's budget until the call lets go of them."""
    call = _CURRENT.get()
    if call is not None:
        call.took(undo, source, size)


class Call:
    """One operation run by a front door: its effects, until the reply is known to be delivered."""

    def __init__(self, calls: Calls | None, call_id: str | None, who: str, budget: Budget | None = None) -> None:
        self.calls = calls
        self.id = call_id
        self.who = who
        self.state = CallState.RUNNING
        self.finished_at = 0.0
        self._undo: list[Undo] = []
        #: The session's budget, and the bytes the effects hold that are charged to it.
        self._budget = budget
        self.held_bytes = 0
        self._holding: list[Source] = []
        self._finished = False
        self._task: asyncio.Future[object] | None = None
        self._broken = False
        #: The door's way to learn the reply's fate sooner (look again now), while it waits.
        self.hurry_settling: Callable[[], None] | None = None

    def hurry(self) -> None:
        """Somebody waits for this call to be settled: ask the door to look now."""
        if self.hurry_settling is not None:
            self.hurry_settling()

    def took(self, undo: Undo, source: Source | None = None, size: int = 0) -> None:
        self._undo.append(undo)
        if source is not None:
            source.hold(self)
            self._holding.append(source)
        if size > 0 and self._budget is not None:
            self._budget.charge(size)
            self.held_bytes += size

    def forget(self) -> None:
        """The effects stand for good: nothing is held for them any more."""
        self._undo.clear()
        self._uncharge()

    def _uncharge(self) -> None:
        size, self.held_bytes = self.held_bytes, 0
        if size and self._budget is not None:
            self._budget.release(size)

    def _settle(self) -> None:
        holding, self._holding = self._holding, []
        for source in holding:
            source.release(self)

    @property
    def holds(self) -> int:
        """How many effects could still be given back."""
        return len(self._undo)

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` as this call: :meth:`cancel` breaks it (``exn:break``), and if the caller
        itself is cancelled whatever the work took is given back before the cancellation goes on."""
        context = contextvars.copy_context()
        context.run(_CURRENT.set, self)

        async def body() -> T:
            return await work()

        inner: asyncio.Task[T] = asyncio.get_running_loop().create_task(body(), context=context)
        self._task = inner  # type: ignore[assignment]
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            if not inner.done():
                inner.cancel()
                await asyncio.gather(inner, return_exceptions=True)
            current = asyncio.current_task()
            outer_cancelled = current is not None and current.cancelling() > 0
            if outer_cancelled or not self._broken:
                self.give_back()
                raise
            self.give_back()
            raise _user_break(self.who, self.id) from None
        except BaseException:
            self.give_back()
            raise
        finally:
            self._task = None

    def cancel(self) -> None:
        """``Sessions.CancelCall``: break the call if it runs, give back its effects if it is done."""
        if self.state is CallState.RUNNING and self._task is not None and not self._task.done():
            self._broken = True
            self._task.cancel()
            return
        self.give_back()

    def give_back(self) -> None:
        """The reply was not delivered: return every effect, newest first. Idempotent."""
        undo, self._undo = self._undo, []
        for step in reversed(undo):
            try:
                step()
            except Exception:  # one failing give-back must not keep the others
                log.exception("%s: giving back an effect failed", self.who)
        self._uncharge()  # what went back is charged where it went (a port's buffer, a queue)
        if self.state is not CallState.GIVEN_BACK and undo:
            self.state = CALL.next(self.state, "give-back")

    def finish(self, *, delivered: bool) -> None:
        """The door knows the reply's fate: effects stand (delivered) or go back; the call ends.
        Only the first word counts (a door may say it again on its way out)."""
        if self._finished:
            return
        self._finished = True
        try:
            if delivered:
                self.delivered()
            else:
                self.give_back()
        finally:
            self._settle()
            if self.calls is not None:
                self.calls.end(self)

    def delivered(self) -> None:
        """The reply was written for the client: the effects stand. A call with an id keeps them a
        little while, in case its client cancels with the reply already on the wire."""
        if self.state is CallState.RUNNING:
            self.state = CALL.next(self.state, "deliver")
        self.finished_at = time.monotonic()
        if self.calls is not None and self.id is not None and self._undo:
            self.calls.hold(self)
        else:
            self.forget()


class Calls:
    """One session's calls by id, for ``Sessions.CancelCall``; what they hold is charged to
    ``budget``, and finished calls keep at most ``hold_bytes`` for a late cancel."""

    def __init__(self, budget: Budget | None = None, hold_bytes: int = 0) -> None:
        self._budget = budget
        self._hold_bytes = hold_bytes
        self._running: dict[str, Call] = {}
        self._held: OrderedDict[str, Call] = OrderedDict()
        self._held_bytes = 0
        self._early: OrderedDict[str, None] = OrderedDict()

    def start(self, call_id: str | None, who: str) -> Call:
        """A new call. Raises ``exn:break`` at once if its cancel came first."""
        if call_id is None:
            return Call(None, None, who, self._budget)
        _check_call_id(who, call_id)
        if call_id in self._running:
            raise ContractError(who, "a call with this id is already running", {"call": call_id})
        if call_id in self._early:
            del self._early[call_id]
            raise _user_break(who, call_id)
        self._unhold(call_id)
        call = Call(self, call_id, who, self._budget)
        self._running[call_id] = call
        return call

    def end(self, call: Call) -> None:
        """The door is done with ``call`` (delivered, given back, or failed)."""
        if call.id is not None and self._running.get(call.id) is call:
            del self._running[call.id]

    def hold(self, call: Call) -> None:
        assert call.id is not None
        self._held[call.id] = call
        self._held_bytes += call.held_bytes
        self._expire()

    def _unhold(self, call_id: str) -> Call | None:
        call = self._held.pop(call_id, None)
        if call is not None:
            self._held_bytes -= call.held_bytes
        return call

    def cancel(self, call_id: object) -> None:
        """Break the call tagged ``call_id``; give back a finished one's effects; remember an early one."""
        _check_call_id("sessions-cancel-call", call_id)
        assert isinstance(call_id, str)
        self._expire()
        call = self._running.get(call_id) or self._unhold(call_id)
        if call is not None:
            call.cancel()
            return
        self._early[call_id] = None
        while len(self._early) > EARLY_CANCELS:
            self._early.popitem(last=False)

    def cancel_all(self) -> None:
        """The session drops: break every running call."""
        for call in list(self._running.values()):
            call.cancel()
        while self._held:
            self._drop_oldest()

    def _expire(self) -> None:
        horizon = time.monotonic() - HOLD_SECONDS
        while self._held:
            oldest = next(iter(self._held.values()))
            if (
                len(self._held) <= HOLD_CALLS
                and oldest.finished_at >= horizon
                and self._held_bytes <= self._hold_bytes
                and not (self._held_bytes and self._budget is not None and self._budget.full)
            ):
                break
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, call = self._held.popitem(last=False)
        self._held_bytes -= call.held_bytes
        call.forget()


def _user_break(operation: str, call_id: str | None) -> BreakError:
    """Racket's break, ``user break`` (raised without a ``who``), with the operation and the call
    it broke as the detail lines."""
    return BreakError(None, "user break", {"operation": operation, "call": call_id})


def _check_call_id(who: str, call_id: object) -> None:
    if not isinstance(call_id, str) or not 0 < len(call_id) <= 128:
        raise contract_violation(who, "a call id of 1 to 128 characters", call_id)
