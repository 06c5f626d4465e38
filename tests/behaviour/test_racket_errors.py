"""Racket 8.7's errors, as recorded, against the daemon through every door (DESIGN.md §4).

``tests/racket/errors.rkt`` ran every error case of racket/tcp and racket/udp that the daemon
offers in Racket 8.7; its answers are ``tests/racket/racket-8.7.jsonl`` (re-record them as
``tests/racket/README.md`` says). Each scenario runs here through the ``door`` fixture (core,
gRPC, REST, blocking client), with the code ``compare.py`` uses (``tests/racket/scenarios.py``),
and no racket process:

* where DESIGN and the docs leave it to Racket, the daemon's kind, errno and first message line
  are Racket's (and where Racket raises nothing, neither does the daemon);
* where they decide otherwise, :data:`~racket.scenarios.DECIDED` lists the scenario with the
  reason, and the daemon's answer is exactly the documented one (docs/semantics.md).
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from racket.scenarios import DECIDED, NOT_OFFERED, POLICY, RACKET_JSONL, SCENARIOS, load_racket, run_scenario
from sockbroker.config import Settings
from sockbroker.server import Daemon

RACKET = load_racket(RACKET_JSONL)
AS_RACKET = [name for name in SCENARIOS if name not in DECIDED]


# The scenarios' own daemon: their policy (scenarios.POLICY) lets the kernel, not the policy,
# refuse what they try (192.0.2.1 may be listened on; any group joined). The ``door`` fixture
# takes these two instead of the session's.
@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("racket-errors") / "token"


@pytest.fixture(scope="module")
async def daemon(token_file: pathlib.Path) -> AsyncIterator[Daemon]:
    settings = Settings.load(
        None, grpc_address="127.0.0.1:0", rest_address="127.0.0.1:0", token_file=token_file, **POLICY
    )
    d = Daemon(settings)
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


def _show(outcome_key: tuple[str | None, int | None, str | None]) -> str:
    kind, errno, first_line = outcome_key
    return "no error" if kind is None else f"{kind} errno={errno}: {first_line}"


@pytest.mark.parametrize("name", AS_RACKET)
async def test_the_daemon_answers_as_racket(door: Any, name: str) -> None:
    racket = RACKET[name]
    got = await run_scenario(name, await door(attach=False))
    assert got.key() == racket.key(), (
        f"{name}: Racket 8.7 {_show(racket.key())}, the daemon {_show(got.key())}\n{got.message}"
    )


@pytest.mark.parametrize("name", list(DECIDED))
async def test_a_departure_gives_the_documented_answer(door: Any, name: str) -> None:
    decided = DECIDED[name]
    assert RACKET[name].key() != decided.key(), f"{name} is no departure: Racket 8.7 answers the same"
    got = await run_scenario(name, await door(attach=False))
    assert got.key() == decided.key(), (
        f"{name} ({decided.why}): documented {_show(decided.key())}, the daemon {_show(got.key())}\n{got.message}"
    )


def test_every_recorded_scenario_is_run_or_not_offered() -> None:
    assert set(RACKET) == set(SCENARIOS) | set(NOT_OFFERED), "errors.rkt and scenarios.py list different scenarios"
    assert not set(SCENARIOS) & set(NOT_OFFERED)
    assert set(DECIDED) <= set(SCENARIOS)
    # A scenario Racket could not even set up, or that ran out of time, was recorded badly.
    bad = {name: outcome.kind for name, outcome in RACKET.items() if outcome.kind in ("timeout", "setup-failed")}
    assert not bad, f"re-record tests/racket/racket-8.7.jsonl: {bad}"
