"""The client's one error translation: whatever went wrong, on either door, becomes a typed error."""

from __future__ import annotations

import errno

import grpc
import httpx
import pytest
import websockets
from sockbroker_client import (
    BrokerError,
    BrokerUnavailableError,
    ContractError,
    FailError,
    NetworkErrnoError,
    NetworkError,
    NotFoundError,
)
from sockbroker_client._transport import _broker_error, _translated
from sockbroker_wire import errors as wire
from websockets.datastructures import Headers
from websockets.frames import Close
from websockets.http11 import Response

TARGET = "127.0.0.1:50051"


def _grpc_error(kind: str, message: str, **values: object) -> grpc.aio.AioRpcError:
    status = wire.grpc_status(kind, message, **values)  # type: ignore[arg-type]
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), details=status.details
    )


def _http(status: int, content: bytes, media: str = "application/problem+json") -> httpx.Response:
    return httpx.Response(status, content=content, headers={"content-type": media})


CASES = [
    pytest.param(
        _grpc_error("exn:fail:network:errno", "tcp-connect: connection failed", errno=errno.ECONNREFUSED),
        NetworkErrnoError,
        "tcp-connect: connection failed",
        id="grpc-error-info",
    ),
    pytest.param(
        grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "failed to connect to all addresses"
        ),
        BrokerUnavailableError,
        f"no daemon at {TARGET}: start it with `sockbroker serve` (failed to connect to all addresses",
        id="grpc-no-daemon",
    ),
    pytest.param(
        _http(404, b'{"kind": "not-found", "detail": "Handles.Describe: no such handle", "status": 404}'),
        NotFoundError,
        "Handles.Describe: no such handle",
        id="rest-problem",
    ),
    pytest.param(
        _http(502, b"<html>bad gateway</html>", "text/html"),
        BrokerUnavailableError,
        f"no daemon at {TARGET}: start it with `sockbroker serve` (<html>bad gateway</html>",
        id="rest-proxy-page",
    ),
    pytest.param(
        websockets.InvalidStatus(
            Response(403, "Forbidden", Headers(), b'{"kind": "exn:fail:contract", "detail": "bad origin"}')
        ),
        ContractError,
        "bad origin",
        id="ws-refused-upgrade",
    ),
    pytest.param(
        websockets.ConnectionClosedError(Close(4404, "not-found"), None),
        NotFoundError,
        "the WebSocket closed with code 4404 (not-found)",
        id="ws-error-close",
    ),
    pytest.param(
        websockets.ConnectionClosedError(None, None),
        BrokerUnavailableError,
        f"no daemon at {TARGET}: start it with `sockbroker serve` (the WebSocket broke",
        id="ws-broken",
    ),
    pytest.param(
        httpx.ConnectError("All connection attempts failed"),
        BrokerUnavailableError,
        f"no daemon at {TARGET}: start it with `sockbroker serve` (ConnectError: All connection attempts failed",
        id="http-refused",
    ),
    pytest.param(
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        BrokerUnavailableError,
        f"no daemon at {TARGET}: start it with `sockbroker serve` (ConnectionRefusedError",
        id="os-refused",
    ),
    pytest.param(
        TimeoutError(), BrokerUnavailableError, f"no daemon at {TARGET}: start it with `sockbroker serve`", id="timeout"
    ),
    pytest.param(
        ValueError("sent: expected a non-negative integer, got '3'"),
        NetworkError,
        f"{TARGET} sent a malformed reply: sent: expected a non-negative integer",
        id="malformed-frame",
    ),
    pytest.param(
        wire.WireError("exn:fail", "the stream is closed"), FailError, "the stream is closed", id="decoded-already"
    ),
]


@pytest.mark.parametrize(("problem", "cls", "message"), CASES)
def test_every_failure_becomes_a_typed_error(problem: object, cls: type[BrokerError], message: str) -> None:
    error = _broker_error(problem, TARGET)
    assert type(error) is cls
    assert error.message.startswith(message), error.message
    assert "\n" not in error.message  # one line, naming the target where the daemon did not answer


@pytest.mark.parametrize(
    "exc",
    [
        grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "x"),
        httpx.ReadError("reset"),
        websockets.ConnectionClosedError(None, None),
        ConnectionResetError(errno.ECONNRESET, "reset"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_no_transport_exception_leaves_a_translated_block(exc: Exception) -> None:
    with pytest.raises(BrokerError) as raised, _translated(TARGET):
        raise exc
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_other_exceptions_are_not_the_transports_to_translate() -> None:
    with pytest.raises(KeyError), _translated(TARGET):
        raise KeyError("a bug is a bug")
