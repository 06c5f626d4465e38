"""The conformance scenarios through the Racket driver (driver.rkt), over both implementations.

- ``--impl racket``: Racket 8.7's own racket/tcp and racket/udp. Each scenario passes, or departs
  only at the steps README.md lists (where the broker decided otherwise).
- ``--impl broker``: the drop-in (clients/racket) against the test daemon. The scenarios describe
  the broker, so every scenario must pass, with no departure.

driver.rkt runs in place (plain ``racket`` compiles in memory and writes no compiled/ directory);
the drop-in finds the collection through PLTCOLLECTS and the daemon through SOCKBROKER_URL and
SOCKBROKER_TOKEN_FILE. The daemon runs on this event loop, so Racket runs as an asyncio
subprocess.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import pytest
from conformance.driver import load
from helpers import run_bounded, target
from sockbroker.server import Daemon

HERE = pathlib.Path(__file__).resolve().parent
DRIVER = HERE / "driver.rkt"
COLLECTION = HERE.parent.parent / "clients" / "racket"
IDS = [scenario["id"] for scenario in load()["scenarios"]]
#: One whole run takes about 4 s through the drop-in, under 1 s through Racket.
SECONDS = 60


async def run_driver(*arguments: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]], str]:
    """driver.rkt with ``arguments``: its exit status, its JSON lines and its whole output."""
    racket = shutil.which("racket")
    assert racket, "racket is not installed (scripts/setup.sh --test installs it)"
    status, text = await run_bounded(racket, str(DRIVER), *arguments, seconds=SECONDS, env=env)
    if status == -1:
        pytest.fail(f"driver.rkt {' '.join(arguments)}: {text}")
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return status, lines, text


def outcomes(lines: list[dict[str, Any]]) -> dict[str, str]:
    return {line["id"]: line["outcome"] for line in lines[1:]}


@pytest.fixture
def dropin_env(daemon: Daemon, token_file: pathlib.Path) -> dict[str, str]:
    """The environment of a Racket program that uses the drop-in against the test daemon."""
    env = dict(os.environ, SOCKBROKER_URL=target(daemon, "rest"), SOCKBROKER_TOKEN_FILE=str(token_file))
    env["PLTCOLLECTS"] = f"{COLLECTION}{os.pathsep}"  # then Racket's own collections
    env.pop("SOCKBROKER_RUNTIME_FILE", None)
    return env


@pytest.mark.timeout(SECONDS + 30)
async def test_scenarios_say_what_racket_does() -> None:
    """The same scenarios through Racket 8.7's own racket/tcp and racket/udp: each passes, or
    departs only at the steps README.md lists (where the broker decided otherwise)."""
    status, lines, output = await run_driver("--impl", "racket")
    assert status == 0, output
    assert lines[0] == {"driver": "racket", "door": "racket/tcp", "unsupported": []}
    assert list(outcomes(lines)) == IDS
    assert {id for id, outcome in outcomes(lines).items() if outcome != "pass"} == {
        "tcp-listener-close",
        "tcp-policy-denied",
        "udp-bind-errors",
        "udp-policy-denied",
        "custodian-shutdown-closes-sockets",
        "custodian-nested",
    }


@pytest.mark.timeout(SECONDS + 30)
async def test_every_scenario_through_the_dropin(dropin_env: dict[str, str]) -> None:
    """Every scenario passes through sockbroker/tcp and sockbroker/udp, exactly as through the
    Python client: no failure, no departure, nothing unsupported."""
    status, lines, output = await run_driver("--impl", "broker", env=dropin_env)
    assert lines, output
    assert lines[0] == {"driver": "racket", "door": "sockbroker/tcp", "unsupported": []}
    not_passed = [line for line in lines[1:] if line["outcome"] != "pass"]
    assert not_passed == [], "\n".join(json.dumps(line) for line in lines[1:])
    assert list(outcomes(lines)) == IDS
    assert status == 0, output


@pytest.mark.timeout(SECONDS + 30)
async def test_dropin_run_has_no_decided_steps(dropin_env: dict[str, str], tmp_path: pathlib.Path) -> None:
    """Through the drop-in, Racket 8.7's behaviour at a decided step is a failure, and a policy
    refusal is `permission-denied` only: the broker run can fail where the reference run may not."""
    document = load()
    chosen = {scenario["id"]: scenario for scenario in document["scenarios"]}
    bind_twice = json.loads(json.dumps(chosen["udp-bind-errors"]))
    bind_twice["steps"][2]["expect"] = {"error": {"kind": "exn:fail:contract"}}  # Racket 8.7's kind
    denied = json.loads(json.dumps(chosen["tcp-policy-denied"]))
    denied["steps"][0]["expect"] = {"error": {"kind": "exn:fail:network:errno"}}  # the struct alone
    document["scenarios"] = [bind_twice, denied]
    changed = tmp_path / "scenarios.json"
    changed.write_text(json.dumps(document), encoding="utf-8")
    status, lines, output = await run_driver("--impl", "broker", str(changed), env=dropin_env)
    assert status == 1, output
    assert [(line["id"], line["outcome"], line.get("step")) for line in lines[1:]] == [
        ("udp-bind-errors", "fail", 2),
        ("tcp-policy-denied", "fail", 0),
    ], output


async def test_driver_refuses_an_unknown_implementation() -> None:
    status, lines, output = await run_driver("--impl", "python")
    assert status != 0 and lines == [], output
    assert '--impl: "python" is not racket or broker' in output
