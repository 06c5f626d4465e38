"""The error table, kind by kind and both ways (DESIGN.md §4).

Every kind the core can raise has a gRPC status and an HTTP status, and whatever a door encodes,
a client decodes back to the same kind, message, errno and errno family: from a gRPC error, from
a problem body, from a WebSocket error frame and from a WebSocket close alone.
"""

from __future__ import annotations

import errno
import json
import socket

import grpc
import pytest
from sockbroker.core import errors
from sockbroker_client import BrokerError as ClientError
from sockbroker_client._errors import error_from_wire
from sockbroker_wire import errors as wire
from sockbroker_wire import frames

#: The contract, written out independently of the wire package's table.
EXPECTED = {
    "exn:fail:contract": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "exn:fail": (grpc.StatusCode.FAILED_PRECONDITION, 409),
    "exn:fail:network": (grpc.StatusCode.FAILED_PRECONDITION, 409),
    "exn:fail:network:errno": (grpc.StatusCode.UNAVAILABLE, 502),
    "not-found": (grpc.StatusCode.NOT_FOUND, 404),
    "permission-denied": (grpc.StatusCode.PERMISSION_DENIED, 403),
    "unauthenticated": (grpc.StatusCode.UNAUTHENTICATED, 401),
    "resource-exhausted": (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    "exn:break": (grpc.StatusCode.CANCELLED, 499),
}
ERRNOS = [(None, None), (errno.ECONNREFUSED, "posix"), (socket.EAI_NONAME, "gai")]
MESSAGE = "tcp-connect: connection failed\n  hostname: 127.0.0.1\n  system error: Connection refused; errno=111"


def _core_kinds() -> dict[str, type[errors.BrokerError]]:
    found: dict[str, type[errors.BrokerError]] = {}
    stack: list[type[errors.BrokerError]] = [errors.BrokerError]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub.__module__.startswith("sockbroker.core"):
                found[sub.kind] = sub
            stack.append(sub)
    return found


def test_every_core_kind_has_a_wire_entry() -> None:
    kinds = _core_kinds()
    assert len(kinds) >= 8, kinds
    missing = {kind: cls.__name__ for kind, cls in kinds.items() if kind not in wire.WIRE_STATUS}
    assert not missing, f"core error kinds with no wire status: {missing}"


def test_the_table_is_the_contract() -> None:
    assert set(wire.WIRE_STATUS) == set(EXPECTED)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_kind_maps_to_its_grpc_and_http_status(kind: str) -> None:
    code, http = EXPECTED[kind]
    assert wire.WIRE_STATUS[kind] == (code.name, http)
    status = wire.grpc_status(kind, MESSAGE)
    assert (status.code, status.details) == (code, MESSAGE)
    http_status, body = wire.problem(kind, MESSAGE)
    assert http_status == http == body["status"]
    assert (body["kind"], body["title"], body["detail"]) == (kind, kind, MESSAGE)
    assert body["type"] == f"urn:sockbroker:error:{kind}"


def _as_received(status: grpc.Status) -> grpc.aio.AioRpcError:
    """What a client's call raises when the daemon aborts with ``status``."""
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), details=status.details
    )


@pytest.mark.parametrize(("code", "family"), ERRNOS, ids=["no-errno", "posix", "gai"])
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_grpc_round_trip(kind: str, code: int | None, family: str | None) -> None:
    status = wire.grpc_status(kind, MESSAGE, errno=code, errno_family=family)
    decoded = wire.from_grpc_error(_as_received(status))
    assert decoded == wire.WireError(kind, MESSAGE, code, family, EXPECTED[kind][0].name)


@pytest.mark.parametrize(("code", "family"), ERRNOS, ids=["no-errno", "posix", "gai"])
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_rest_and_websocket_round_trip(kind: str, code: int | None, family: str | None) -> None:
    http, body = wire.problem(kind, MESSAGE, errno=code, errno_family=family)
    expected = wire.WireError(kind, MESSAGE, code, family, http)
    assert wire.from_problem(http, json.loads(json.dumps(body))) == expected
    assert wire.from_ws_error_frame(frames.encode_text(frames.ErrorFrame(body))) == expected
    closed = wire.from_ws_close(frames.error_close_code(http), kind)
    assert closed is not None
    assert (closed.kind, closed.status) == (kind, http)


def test_an_errno_without_family_is_posix_on_grpc() -> None:
    status = wire.grpc_status("exn:fail:network:errno", "x", errno=errno.EADDRINUSE)
    assert wire.from_grpc_error(_as_received(status)).errno_family == "posix"


def test_a_real_core_error_crosses_both_ways() -> None:
    exc = errors.from_os_error("udp-bind!", "can't bind", OSError(errno.EADDRINUSE, "in use"))
    errno_, family = exc.errno, exc.errno_family
    grpc_side = wire.from_grpc_error(
        _as_received(wire.grpc_status(exc.kind, exc.message, errno=errno_, errno_family=family))
    )
    http, body = wire.problem(exc.kind, exc.message, errno=errno_, errno_family=family)
    for decoded in (grpc_side, wire.from_problem(http, body)):
        assert (decoded.kind, decoded.message, decoded.errno, decoded.errno_family) == (
            "exn:fail:network:errno",
            exc.message,
            errno.EADDRINUSE,
            "posix",
        )


def test_an_unknown_kind_cannot_be_encoded() -> None:
    with pytest.raises(KeyError, match="no wire status"):
        wire.grpc_status("exn:fail:filesystem", "x")
    with pytest.raises(KeyError, match="no wire status"):
        wire.problem("exn:fail:filesystem", "x")


# ── what a status says without the daemon's details ─────────────────────────
@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, wire.UNAVAILABLE),  # the channel's own: no daemon answered
        (grpc.StatusCode.DEADLINE_EXCEEDED, "exn:break"),
        (grpc.StatusCode.CANCELLED, "exn:break"),
        (grpc.StatusCode.NOT_FOUND, "not-found"),
        (grpc.StatusCode.FAILED_PRECONDITION, "exn:fail"),  # the kind the other one refines
        (grpc.StatusCode.INTERNAL, ""),
    ],
)
def test_a_bare_grpc_status_names_what_it_can(code: grpc.StatusCode, kind: str) -> None:
    decoded = wire.from_grpc_error(grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "why"))
    assert decoded == wire.WireError(kind, "why", status=code.name)


def test_an_error_info_of_another_domain_is_not_the_daemons() -> None:
    status = wire.grpc_status("not-found", "x")
    # The same length, so that the Status still parses: only the domain differs.
    foreign = tuple(
        (key, value.replace(b"sockbroker", b"otherwhere") if isinstance(value, bytes) else value)
        for key, value in status.trailing_metadata
    )
    received = grpc.aio.AioRpcError(status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*foreign), "x")
    assert wire.from_grpc_error(received).kind == "not-found"  # from the code alone
    garbage = grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(("grpc-status-details-bin", b"\xff\xff")), "x"
    )
    assert wire.from_grpc_error(garbage) == wire.WireError("not-found", "x", status="NOT_FOUND")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (502, "<html>Bad Gateway</html>", wire.WireError(wire.UNAVAILABLE, "<html>Bad Gateway</html>", status=502)),
        (503, None, wire.WireError(wire.UNAVAILABLE, "HTTP 503", status=503)),
        (404, {"detail": "no such route"}, wire.WireError("not-found", "no such route", status=404)),
        (409, {}, wire.WireError("exn:fail", "HTTP 409", status=409)),
        (418, {"kind": 7, "errno": "x", "errno_family": 3}, wire.WireError("", "HTTP 418", status=418)),
    ],
)
def test_a_body_that_is_not_a_problem_still_decodes(status: int, body: object, expected: wire.WireError) -> None:
    assert wire.from_problem(status, body) == expected


def test_websocket_frames_that_are_not_errors() -> None:
    assert wire.from_ws_error_frame('{"eof": true}') is None
    assert wire.from_ws_close(1000, "") is None
    assert wire.from_ws_close(None, None) is None
    with pytest.raises(ValueError, match="JSON object"):
        wire.from_ws_error_frame("not json")


# ── the client makes a typed exception of every kind ────────────────────────
@pytest.mark.parametrize("kind", [*sorted(EXPECTED), wire.UNAVAILABLE])
def test_the_client_has_a_class_for_every_kind(kind: str) -> None:
    error = error_from_wire(wire.WireError(kind, "m", 5, "posix", 400))
    assert type(error) is not ClientError
    assert (type(error).kind, error.kind, error.message, error.errno, error.errno_family, error.status) == (
        kind,
        kind,
        "m",
        5,
        "posix",
        400,
    )


# ── the core's own messages ────────────────────────────────────────────────
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
