"""What calls take is bounded by bytes (DESIGN §5, P8): the bytes a call took are charged to its
session's budget while its reply is on its way and while they are held for a late
``Sessions.CancelCall``, and a session holds at most ``cancel_hold_bytes`` of finished calls, none
while its budget is full. (Unbounded, 256 held 64 KiB reads per session took the daemon's RSS
past P8 in the SIGTERM and unary-flood scenarios of bench/abuse.py.)
"""

from __future__ import annotations

import asyncio

from sockbroker.core.breaks import Calls, Source, took
from sockbroker.core.budget import Budget

HOLD = 1000
SIZE = 400


async def finished_call(
    calls: Calls, budget: Budget, call_id: str, given_back: list[str], *, delivered: bool = True
) -> int:
    """Run a call that takes ``SIZE`` bytes; the budget's count while its reply was on its way."""
    call = calls.start(call_id, "test-take")

    async def work() -> int:
        took(lambda: given_back.append(call_id), size=SIZE)
        return budget.used

    in_flight = await call.run(work)
    call.finish(delivered=delivered)
    return in_flight


async def test_a_call_in_flight_is_charged_and_an_undelivered_one_uncharged() -> None:
    budget = Budget(10 * HOLD)
    calls = Calls(budget, HOLD)
    given_back: list[str] = []
    assert await finished_call(calls, budget, "lost", given_back, delivered=False) == SIZE
    assert given_back == ["lost"]
    assert budget.used == 0


async def test_held_calls_are_bounded_by_bytes_oldest_first() -> None:
    budget = Budget(10 * HOLD)
    calls = Calls(budget, HOLD)
    given_back: list[str] = []
    for n in range(5):
        await finished_call(calls, budget, f"c{n}", given_back)
    assert budget.used == 2 * SIZE  # two fit in HOLD; the older three were let go
    calls.cancel("c4")
    assert given_back == ["c4"]
    assert budget.used == SIZE
    calls.cancel("c2")  # let go: a cancel that late gives nothing back
    assert given_back == ["c4"]
    calls.cancel_all()
    assert budget.used == 0


async def test_nothing_is_held_while_the_budget_is_full() -> None:
    budget = Budget(2 * SIZE)
    calls = Calls(budget, HOLD)
    given_back: list[str] = []
    await finished_call(calls, budget, "kept", given_back)
    assert budget.used == SIZE
    budget.charge(SIZE)  # a port's buffer fills the rest
    await finished_call(calls, budget, "dropped", given_back)
    assert budget.used == SIZE  # the port's bytes only: both holds were let go
    calls.cancel("kept")
    assert given_back == []


async def test_no_hold_at_all_when_the_limit_is_zero() -> None:
    budget = Budget(10 * HOLD)
    calls = Calls(budget, 0)
    given_back: list[str] = []
    await finished_call(calls, budget, "c", given_back)
    assert budget.used == 0
    calls.cancel("c")
    assert given_back == []


async def test_a_take_that_waits_for_an_unsettled_one_asks_its_door_to_hurry() -> None:
    """Bytes are taken in order: the next read of a port waits until the last one's reply is
    settled. Waiting, it asks the door to look at that reply's fate now instead of at its next
    timer (before, each sequential read over either door waited up to a millisecond more)."""
    source = Source()
    calls = Calls()
    first = calls.start(None, "test-first")
    hurried: list[str] = []

    def hurry() -> None:
        hurried.append("now")
        first.finish(delivered=True)

    first.hurry_settling = hurry
    await first.run(lambda: _take(source))
    assert source.busy
    await asyncio.wait_for(source.settled(), 1)
    assert hurried == ["now"] and not source.busy


async def _take(source: Source) -> None:
    took(lambda: None, source)
