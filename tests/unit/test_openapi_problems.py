"""Every error the OpenAPI document promises has the error body's schema (docs/errors.md), and
the daemon's real error bodies fit it."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
from sockbroker.core.broker import Broker, Principal
from sockbroker.core.limits import Limits
from sockbroker.core.policy import Policy
from sockbroker.doors.rest import create_app
from sockbroker_wire.errors import WIRE_STATUS, problem


def _document() -> dict[str, Any]:
    broker = Broker(Limits(), [Principal("default", "t" * 43, Policy())])
    document: dict[str, Any] = create_app(broker).openapi()
    return document


def test_every_operations_error_response_is_the_typed_problem() -> None:
    document = _document()
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert operations
    for operation in operations:
        error = operation["responses"]["default"]["content"]["application/problem+json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Problem"}, operation["operationId"]
    schema = document["components"]["schemas"]["Problem"]
    assert set(schema["required"]) == {"type", "title", "status", "detail", "kind", "errno", "errno_family"}
    assert set(schema["properties"]["kind"]["enum"]) == set(WIRE_STATUS)


def test_the_error_bodies_the_daemon_sends_fit_the_schema() -> None:
    schema = _document()["components"]["schemas"]["Problem"]
    validator = jsonschema_rs.validator_for(schema)
    for kind in WIRE_STATUS:
        assert validator.is_valid(problem(kind, f"{kind}: a message")[1]), kind
    assert validator.is_valid(problem("exn:fail:network:errno", "m", errno=111, errno_family="posix")[1])
    assert validator.is_valid(problem("exn:fail:network:errno", "m", errno=-2, errno_family="gai")[1])
    assert not validator.is_valid({**problem("not-found", "m")[1], "kind": "no-such-kind"})
    assert not validator.is_valid({k: v for k, v in problem("not-found", "m")[1].items() if k != "errno"})
