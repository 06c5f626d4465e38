"""The daemon under abuse, bounded (issue 8; DESIGN §5, §7 P8, §10): the scenarios of ``bench/abuse.py``.

Each test runs one scenario against a daemon process (one shared by the scenarios that need no
flag of their own; the others start their own) at the suite's sizes
(``bench.abuse.BOUNDED``, each overridable with ``SOCKBROKER_ABUSE_<NAME>``): client processes
SIGKILLed mid-session, TCP floods through unary calls, ``Ports.Stream`` and the WebSocket, UDP
floods at unread sockets and stalled receive streams, filled connections closed by
``Custodians.Shutdown`` and by ``Ports.Close``, parallel 30 MiB writes, descriptor exhaustion,
SIGTERM under load, idle and slowloris connections. ``python -m bench.abuse`` runs the same code
at full size (10,000 killed sessions…) and prints the table that bench/README.md shows.

Every scenario is held to the same verdict: no 5xx / INTERNAL / UNKNOWN and no connection broken
without a typed error, no crash, no traceback or ERROR in the daemon's log, no session, handle or
descriptor left, RSS growth within P8's 64 MiB — the bound itself, not a scaled one: the bounded
sizes still reach it where the defect is per stream or per connection (4 stalled UDP streams,
300 filled connections, 8 × 30 MiB writes) — and the scenario's own checks.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sockbroker_client import BrokerError, BrokerUnavailableError, ResourceExhaustedError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for ``bench``

from bench.abuse import (
    BOUNDED,
    P8_MIB,
    SCENARIOS,
    Daemon,
    Row,
    details,
    fault_of,
    run_scenario,
    shares_a_daemon,
    sizes_from_env,
    started_daemon,
    table,
)

SIZES = sizes_from_env(BOUNDED)


@pytest.fixture(scope="module")
async def shared() -> AsyncIterator[Daemon]:
    """One daemon process with the default settings for every scenario that needs no flag of its
    own (a daemon start costs seconds on a busy machine); each scenario still takes its own
    baseline, and must leave nothing behind for the next."""
    daemon = await started_daemon()
    yield daemon
    await asyncio.to_thread(daemon.stop)


SHARED = [name for name, scenario in SCENARIOS.items() if shares_a_daemon(scenario)]
OWN = [name for name in SCENARIOS if name not in SHARED]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", SHARED)
async def test_the_daemon_holds_under_abuse(name: str, shared: Daemon) -> None:
    check(await run_scenario(SCENARIOS[name], SIZES, shared))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", OWN)
async def test_a_daemon_of_its_own_holds_under_abuse(name: str) -> None:
    """Descriptor exhaustion (an open-file limit of its own), SIGTERM (it stops the daemon), the
    connection attack (short header and unauthenticated timeouts, so a bounded attack sees them)."""
    check(await run_scenario(SCENARIOS[name], SIZES))


def check(row: Row) -> None:
    report = f"\n{table([row])}\n{details(row)}"
    print(report)
    assert row.checks.get("ran", True), f"the scenario did not run{report}"
    assert row.tried > 0, f"the scenario tried nothing{report}"
    assert row.faults == 0, f"5xx / INTERNAL / UNKNOWN or broken connections{report}"
    assert row.crashes == 0, f"the daemon crashed (or, after SIGTERM, did not exit 0){report}"
    assert row.log_errors == 0, f"tracebacks or ERROR lines in the daemon's log{report}"
    assert (row.sessions_left, row.handles_left, row.fds_left) == (0, 0, 0), f"left behind{report}"
    assert row.growth <= P8_MIB, f"RSS grew {row.growth:.0f} MiB (P8: at most {P8_MIB:.0f}){report}"
    failed = [check for check, ok in row.checks.items() if not ok]
    assert not failed, f"{failed}{report}"


def test_the_verdict_sees_every_kind_of_failure() -> None:
    """The row's verdict, which the bench's exit status and the table rest on."""
    good = Row("x", tried=10, rss_base=70.0, rss_peak=70.0 + P8_MIB)
    assert good.ok
    for bad in (
        Row("x", faults=1),
        Row("x", crashes=1),
        Row("x", log_errors=1),
        Row("x", fds_left=1),
        Row("x", handles_left=1),
        Row("x", sessions_left=1),
        Row("x", rss_base=70.0, rss_peak=70.1 + P8_MIB),
        Row("x", checks={"something": False}),
    ):
        assert not bad.ok and bad.failures
    assert fault_of(BrokerError("boom", kind="", status=500)) is not None
    assert fault_of(BrokerError("boom", kind="", status="INTERNAL")) is not None
    assert fault_of(BrokerError("boom", kind="", status="UNKNOWN")) is not None
    assert fault_of(BrokerUnavailableError("the WebSocket broke")) is not None
    assert fault_of(ValueError("a client bug")) is not None
    assert fault_of(BrokerError("refused", kind="exn:fail:network:errno", status=502)) is None
    assert fault_of(ResourceExhaustedError("too big", status=413)) is None
    assert fault_of(ResourceExhaustedError("too big", status="RESOURCE_EXHAUSTED")) is None
