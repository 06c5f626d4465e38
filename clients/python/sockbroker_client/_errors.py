"""Typed exceptions, rebuilt from the wire (gRPC ErrorInfo or REST problem+json).

::

    BrokerError
    ├── ContractError            exn:fail:contract
    ├── NetworkError             exn:fail:network
    │   └── NetworkErrnoError    exn:fail:network:errno   (.errno, .errno_family)
    ├── NotFoundError            not-found
    ├── PermissionDeniedError    permission-denied
    ├── UnauthenticatedError     unauthenticated
    ├── ResourceExhaustedError   resource-exhausted
    └── BreakError               exn:break
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BreakError",
    "BrokerError",
    "ContractError",
    "NetworkErrnoError",
    "NetworkError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "error_for",
]


class BrokerError(Exception):
    """An error the broker reported. ``kind`` is Racket's exception kind."""

    kind: ClassVar[str] = ""

    def __init__(
        self,
        message: str,
        *,
        kind: str = "",
        errno: int | None = None,
        errno_family: str | None = None,
        status: int | str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if kind:
            self.kind = kind  # type: ignore[misc]
        self.errno = errno
        self.errno_family = errno_family
        #: The gRPC status name or HTTP status that carried the error.
        self.status = status


class ContractError(BrokerError):
    kind = "exn:fail:contract"


class NetworkError(BrokerError):
    kind = "exn:fail:network"


class NetworkErrnoError(NetworkError):
    kind = "exn:fail:network:errno"


class NotFoundError(BrokerError):
    kind = "not-found"


class PermissionDeniedError(BrokerError):
    kind = "permission-denied"


class UnauthenticatedError(BrokerError):
    kind = "unauthenticated"


class ResourceExhaustedError(BrokerError):
    kind = "resource-exhausted"


class BreakError(BrokerError):
    kind = "exn:break"


_BY_KIND: dict[str, type[BrokerError]] = {
    cls.kind: cls
    for cls in (
        ContractError,
        NetworkError,
        NetworkErrnoError,
        NotFoundError,
        PermissionDeniedError,
        UnauthenticatedError,
        ResourceExhaustedError,
        BreakError,
    )
}


def error_for(
    kind: str,
    message: str,
    *,
    errno: int | None = None,
    errno_family: str | None = None,
    status: int | str | None = None,
) -> BrokerError:
    cls = _BY_KIND.get(kind, BrokerError)
    return cls(message, kind=kind, errno=errno, errno_family=errno_family, status=status)
