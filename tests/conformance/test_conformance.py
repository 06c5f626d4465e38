"""The conformance scenarios (scenarios.json) through the Python client, over gRPC and over REST.

One test per scenario per door, each in a session of its own on the test daemon. The file itself
is checked against its JSON Schema, and against the driver: every operation it names has an
entry in the driver's dispatch table, and every capability a scenario needs is declared.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import jsonschema_rs
import pytest
from conformance.driver import CAPABILITIES, OPERATIONS, SCENARIOS, UNSUPPORTED, Run, StepFailed, load
from helpers import target
from sockbroker.server import Daemon
from sockbroker_client import AsyncBroker

SCHEMA = pathlib.Path(__file__).with_name("scenarios.schema.json")
DOCUMENT = load()
BY_ID = {scenario["id"]: scenario for scenario in DOCUMENT["scenarios"]}


@pytest.fixture(params=["grpc", "rest"])
async def session(
    request: pytest.FixtureRequest, daemon: Daemon, token_file: pathlib.Path
) -> AsyncIterator[AsyncBroker]:
    broker = await AsyncBroker.connect(target(daemon, request.param), transport=request.param, token_file=token_file)
    try:
        yield broker
    finally:
        await broker.aclose()


@pytest.mark.parametrize("scenario_id", list(BY_ID))
async def test_scenario(session: AsyncBroker, scenario_id: str) -> None:
    scenario = BY_ID[scenario_id]
    # The Python client has every capability, so it runs every scenario, optional ones included.
    assert not set(scenario["needs"]) & UNSUPPORTED, "the Python driver declares a capability unsupported"
    await Run(session, DOCUMENT["step_timeout_seconds"]).scenario(scenario)


#: For a ``{"type": T}`` expectation, a type no value of type T has.
OTHER_TYPE = {"listener": "udp", "udp": "listener", "input-port": "output-port", "output-port": "input-port"}


def mutated(expected: Any) -> Any:
    """An expectation that the value matching ``expected`` cannot match."""
    if isinstance(expected, dict) and "error" in expected:
        kind = "not-found" if expected["error"]["kind"] != "not-found" else "exn:fail"
        return {"error": {**expected["error"], "kind": kind}}
    if isinstance(expected, bool) or expected is None:
        return {"error": {"kind": "not-found"}} if expected is None else not expected
    if isinstance(expected, int | float):
        return expected + 1
    if isinstance(expected, str):
        return expected + "x"
    if isinstance(expected, list):
        return expected[:-1]
    if "bytes" in expected:
        return {"bytes": expected["bytes"] + "!"}
    if "hex" in expected:
        return {"hex": expected["hex"] + "00"}
    if "type" in expected:
        return {"type": OTHER_TYPE.get(expected["type"], "bytes")}
    if "eof" in expected:
        return {"hex": ""}
    return {"error": {"kind": "not-found"}}  # ref, port-of: the step succeeds, so any error fails


@pytest.mark.parametrize("scenario_id", list(BY_ID))
async def test_every_expectation_can_fail(daemon: Daemon, token_file: pathlib.Path, scenario_id: str) -> None:
    """Each expectation, changed to one its value cannot meet, fails the scenario at that step:
    the driver checks every expectation (no step passes by not being looked at)."""
    steps = BY_ID[scenario_id]["steps"]
    async with await AsyncBroker.connect(target(daemon, "grpc"), transport="grpc", token_file=token_file) as broker:
        for index, step in enumerate(steps):
            if "expect" not in step:
                continue
            changed = {**step, "expect": mutated(step["expect"])}
            with pytest.raises(StepFailed) as failed:
                await Run(broker, DOCUMENT["step_timeout_seconds"]).scenario({"steps": [*steps[:index], changed]})
            assert failed.value.index == index, failed.value


def test_scenarios_match_their_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    errors = [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in jsonschema_rs.validator_for(schema).iter_errors(json.loads(SCENARIOS.read_text(encoding="utf-8")))
    ]
    assert errors == []


def test_schema_rejects_a_bad_step() -> None:
    """The schema can fail: an unknown op, a missing id, a malformed error expectation."""
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text(encoding="utf-8")))
    good: dict[str, Any] = {"op": "tcp-listen", "args": [0]}
    broken_steps = [
        {"op": "tcp-listn", "args": [0]},
        {"op": "tcp-listen", "args": [{"refs": "x"}]},
        {"op": "tcp-close", "expect": {"error": {"errno": [111, "posix"]}}},
        {"op": "tcp-close", "expect": {"error": {"kind": "exn:fail", "errno": [111]}}},
        {"op": "tcp-listen", "as": 3},
        {"op": "tcp-close", "as": "x", "expect": {"error": {"kind": "exn:fail"}}},
    ]
    document = json.loads(SCENARIOS.read_text(encoding="utf-8"))
    document["scenarios"] = [{"id": "x", "description": "x", "required": True, "needs": [], "steps": [good]}]
    assert validator.is_valid(document)
    for step in broken_steps:
        document["scenarios"][0]["steps"] = [step]
        assert not validator.is_valid(document), step
    del document["scenarios"][0]["id"]
    document["scenarios"][0]["steps"] = [good]
    assert not validator.is_valid(document)


def test_every_op_and_capability_is_known() -> None:
    """The driver's table covers the schema's operations, and every `needs` names a capability."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert set(schema["$defs"]["op"]["enum"]) == set(OPERATIONS)
    for scenario in DOCUMENT["scenarios"]:
        assert set(scenario["needs"]) <= CAPABILITIES, scenario["id"]
    assert len(BY_ID) == len(DOCUMENT["scenarios"]), "scenario ids must be unique"
