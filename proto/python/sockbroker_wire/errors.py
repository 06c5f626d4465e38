"""The error table, both ways: the only place it is written.

The daemon's core raises errors that carry plain values: a ``kind`` (Racket's exception name, or
one of the broker's own), a Racket-style ``message``, and an ``errno`` with its family
(``posix`` or ``gai``) where the OS gave one. On the wire they travel as:

- gRPC: the status code of :data:`WIRE_STATUS`, the message as the status message, and a
  ``google.rpc.ErrorInfo`` detail (``reason`` = kind, ``domain`` = ``sockbroker``, ``metadata``
  = ``errno`` and ``errno_family``) — :func:`grpc_status`;
- REST: the HTTP status of :data:`WIRE_STATUS` and an RFC 9457 ``application/problem+json``
  body with ``kind``, ``errno`` and ``errno_family`` members — :func:`problem`;
- WebSocket: that problem as a last text frame ``{"error": problem}``, then a close with code
  4000 + the HTTP status and the kind as the reason (see :mod:`.frames`).

A client turns any of them back into a :class:`WireError` (the same plain values) with
:func:`from_grpc_error`, :func:`from_problem`, :func:`from_ws_error_frame` or
:func:`from_ws_close`, and from it into its own typed exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from . import frames

__all__ = [
    "ERROR_DOMAIN",
    "UNAVAILABLE",
    "WIRE_STATUS",
    "WireError",
    "from_grpc_error",
    "from_problem",
    "from_ws_close",
    "from_ws_error_frame",
    "grpc_status",
    "problem",
]

#: kind -> (gRPC status code name, HTTP status). DESIGN.md §4 in code.
WIRE_STATUS: Mapping[str, tuple[str, int]] = MappingProxyType(
    {
        "exn:fail:contract": ("INVALID_ARGUMENT", 400),
        "exn:fail": ("FAILED_PRECONDITION", 409),
        "exn:fail:network": ("FAILED_PRECONDITION", 409),
        "exn:fail:network:errno": ("UNAVAILABLE", 502),
        "not-found": ("NOT_FOUND", 404),
        "permission-denied": ("PERMISSION_DENIED", 403),
        "unauthenticated": ("UNAUTHENTICATED", 401),
        "resource-exhausted": ("RESOURCE_EXHAUSTED", 429),
        "exn:break": ("CANCELLED", 499),
    }
)

#: The ``ErrorInfo.domain`` of every error the daemon sends.
ERROR_DOMAIN = "sockbroker"

#: The kind a client gives to "no daemon answered": a gRPC UNAVAILABLE without the daemon's
#: ErrorInfo (the channel's own failure), an HTTP 502/503/504 without a problem body (a proxy's),
#: or no connection at all. The daemon never sends it.
UNAVAILABLE = "unavailable"

_PROBLEM_TYPE = "urn:sockbroker:error:"
_GATEWAY_STATUSES = frozenset({502, 503, 504})


def _entry(kind: str) -> tuple[str, int]:
    try:
        return WIRE_STATUS[kind]
    except KeyError:
        raise KeyError(f"{kind!r} has no wire status: add it to sockbroker_wire.errors.WIRE_STATUS") from None


# ── server side: plain values → the wire ────────────────────────────────────
def grpc_status(kind: str, message: str, *, errno: int | None = None, errno_family: str | None = None) -> grpc.Status:
    """The gRPC status of an error, with its ``google.rpc.ErrorInfo`` detail."""
    code_name, _ = _entry(kind)
    metadata = {}
    if errno is not None:
        metadata = {"errno": str(errno), "errno_family": errno_family or "posix"}
    info = error_details_pb2.ErrorInfo(reason=kind, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    code = grpc.StatusCode[code_name]
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


def problem(
    kind: str, message: str, *, errno: int | None = None, errno_family: str | None = None
) -> tuple[int, dict[str, Any]]:
    """The HTTP status of an error and its RFC 9457 problem body."""
    _, status = _entry(kind)
    return status, {
        "type": f"{_PROBLEM_TYPE}{kind}",
        "title": kind,
        "status": status,
        "detail": message,
        "kind": kind,
        "errno": errno,
        "errno_family": errno_family,
    }


# ── client side: the wire → plain values ────────────────────────────────────
@dataclass(frozen=True)
class WireError:
    """An error as it came off the wire. ``status`` is the gRPC status code name (``"NOT_FOUND"``)
    or the HTTP status (404) that carried it; ``kind`` is "" when nothing names one."""

    kind: str
    message: str
    errno: int | None = None
    errno_family: str | None = None
    status: int | str | None = None


def _most_general(kinds: list[str]) -> str:
    """Of the kinds sharing one status, the one the others refine (``exn:fail`` over
    ``exn:fail:network``), or "" when they are unrelated."""
    kinds = sorted(kinds, key=len)
    if kinds and all(k == kinds[0] or k.startswith(kinds[0] + ":") for k in kinds):
        return kinds[0]
    return ""


def _kind_of_grpc_code(code_name: str) -> str:
    if code_name == "UNAVAILABLE":
        return UNAVAILABLE
    if code_name == "DEADLINE_EXCEEDED":
        return "exn:break"
    return _most_general([kind for kind, (name, _) in WIRE_STATUS.items() if name == code_name])


def _kind_of_http_status(status: int) -> str:
    if status in _GATEWAY_STATUSES:
        return UNAVAILABLE
    return _most_general([kind for kind, (_, http) in WIRE_STATUS.items() if http == status])


def _errno(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def from_grpc_error(exc: grpc.RpcError) -> WireError:
    """The error a failed gRPC call carries: the daemon's ErrorInfo when there is one, else what
    the status code alone says (UNAVAILABLE then means no daemon answered)."""
    call: Any = exc  # a grpc.Call or grpc.aio.AioRpcError: code(), details(), trailing_metadata()
    code = call.code() if callable(getattr(call, "code", None)) else None
    code_name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    details = call.details() if callable(getattr(call, "details", None)) else None
    trailing = call.trailing_metadata() if callable(getattr(call, "trailing_metadata", None)) else None
    for key, value in trailing or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            break
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                return WireError(
                    info.reason,
                    status.message,
                    errno=_errno(info.metadata.get("errno")),
                    errno_family=info.metadata.get("errno_family") or None,
                    status=code_name,
                )
    return WireError(_kind_of_grpc_code(code_name), str(details or code_name), status=code_name)


def from_problem(http_status: int, body: object) -> WireError:
    """The error an HTTP response carries: its problem body (parsed JSON) when it has a ``kind``,
    else what the status alone says. A body that is not a problem (a proxy's page) may be given
    as text: it becomes the message."""
    kind, message, errno, family = "", "", None, None
    if isinstance(body, Mapping):
        kind = _text(body.get("kind"))
        message = _text(body.get("detail")) or _text(body.get("title"))
        errno = _errno(body.get("errno"))
        family = _text(body.get("errno_family")) or None
    elif isinstance(body, str):
        message = body.strip().splitlines()[0] if body.strip() else ""
    return WireError(
        kind or _kind_of_http_status(http_status),
        message or f"HTTP {http_status}",
        errno=errno,
        errno_family=family,
        status=http_status,
    )


def from_ws_error_frame(text: str) -> WireError | None:
    """The error of a WebSocket text frame ``{"error": problem}``; None for any other frame.
    Raises ValueError when the text is not a well-formed frame (see :mod:`.frames`)."""
    frame = frames.decode_text(text)
    if not isinstance(frame, frames.ErrorFrame):
        return None
    status = frame.problem.get("status")
    if not isinstance(status, int) or isinstance(status, bool):
        kind = frame.problem.get("kind")
        status = WIRE_STATUS[kind][1] if isinstance(kind, str) and kind in WIRE_STATUS else 0
    return from_problem(status, frame.problem)


def from_ws_close(code: int | None, reason: str | None) -> WireError | None:
    """The error a WebSocket close says by itself (code 4000 + HTTP status, reason = kind), for
    when its error frame was not read; None for a close that reports no error."""
    if code is None or not frames.ERROR_CLOSE_BASE + 400 <= code < frames.ERROR_CLOSE_BASE + 600:
        return None
    status = code - frames.ERROR_CLOSE_BASE
    kind = reason if reason is not None and reason in WIRE_STATUS else _kind_of_http_status(status)
    return WireError(kind, f"the WebSocket closed with code {code} ({reason or 'no reason'})", status=status)
