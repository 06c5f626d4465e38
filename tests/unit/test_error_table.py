"""The error hierarchy and the one wire table, kind by kind."""

from __future__ import annotations

import errno
import socket

import grpc
import pytest
from sockbroker.core import errors
from sockbroker.grpc_api import error_status
from sockbroker.rest_api import problem

CASES = [
    (errors.ContractError("who", "bad"), grpc.StatusCode.INVALID_ARGUMENT, 400),
    (errors.NetworkError("who", "closed"), grpc.StatusCode.FAILED_PRECONDITION, 409),
    (errors.NetworkErrnoError("who", "refused", code=errno.ECONNREFUSED), grpc.StatusCode.UNAVAILABLE, 502),
    (errors.NotFoundError("who", "none"), grpc.StatusCode.NOT_FOUND, 404),
    (errors.PermissionDeniedError("who", "no"), grpc.StatusCode.PERMISSION_DENIED, 403),
    (errors.UnauthenticatedError("who", "token"), grpc.StatusCode.UNAUTHENTICATED, 401),
    (errors.ResourceExhaustedError("who", "quota"), grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (errors.BreakError("who", "cancelled"), grpc.StatusCode.CANCELLED, 499),
]


@pytest.mark.parametrize(("exc", "code", "http"), CASES, ids=[c[0].kind for c in CASES])
def test_each_kind_maps_to_its_grpc_and_http_status(exc: errors.BrokerError, code: grpc.StatusCode, http: int) -> None:
    status = error_status(exc)
    assert status.code == code
    assert status.details == exc.message
    http_status, body = problem(exc)
    assert http_status == http == body["status"]
    assert body["kind"] == exc.kind


def test_every_kind_is_in_the_table() -> None:
    assert set(errors.WIRE_STATUS) == {exc.kind for exc, _, _ in CASES}


def test_messages_follow_racket() -> None:
    exc = errors.from_os_error(
        "tcp-connect",
        "connection failed",
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        {"hostname": "localhost", "port number": 9},
    )
    assert exc.message == (
        "tcp-connect: connection failed\n  hostname: localhost\n  port number: 9\n"
        "  system error: Connection refused; errno=111"
    )
    assert (exc.errno, exc.errno_family) == (111, "posix")


def test_resolver_errors_are_gai_family() -> None:
    exc = errors.from_os_error(
        "tcp-connect", "host not found", socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    )
    assert (exc.errno, exc.errno_family) == (socket.EAI_NONAME, "gai")
    assert "gai_err=-2" in exc.message


def test_contract_violation_shows_the_value_as_racket_does() -> None:
    assert (
        errors.contract_violation("f", "port-number?", None).message
        == "f: contract violation\n  expected: port-number?\n  given: #f"
    )
    assert 'given: "x"' in errors.contract_violation("f", "string?", "x").message
