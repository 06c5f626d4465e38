"""Typed exceptions, rebuilt from the wire (gRPC ErrorInfo or REST problem+json).

::

    BrokerError
    ├── FailError                exn:fail                 (an operation on a closed TCP port)
    ├── ContractError            exn:fail:contract
    ├── NetworkError             exn:fail:network
    │   └── NetworkErrnoError    exn:fail:network:errno   (.errno, .errno_family)
    ├── NotFoundError            not-found
    ├── PermissionDeniedError    permission-denied
    ├── UnauthenticatedError     unauthenticated
    │   └── TokenFileError       unauthenticated          no token could be read from the token file (client side only)
    ├── ResourceExhaustedError   resource-exhausted
    ├── BreakError               exn:break
    └── BrokerUnavailableError   unavailable              no daemon answered (client side only)

The wire package decodes what each door sent into plain values (``sockbroker_wire.errors``);
:func:`error_from_wire` makes the exception. The transports call it from one place.
"""

from __future__ import annotations

from typing import ClassVar

from sockbroker_wire.errors import UNAVAILABLE, WireError

__all__ = [
    "BreakError",
    "BrokerError",
    "BrokerUnavailableError",
    "ContractError",
    "FailError",
    "NetworkErrnoError",
    "NetworkError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "TokenFileError",
    "UnauthenticatedError",
    "error_from_wire",
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


class FailError(BrokerError):
    kind = "exn:fail"


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


class TokenFileError(UnauthenticatedError):
    """The client found no usable token in its token file, so it cannot authenticate: the file is
    missing or unreadable, is not a regular file (a named pipe, a device), is larger than 4096
    bytes, or holds no token. Raised by the client before any call; ``status`` is None, and
    ``errno`` is the OS's when one caused it. The message names the file and the reason."""


class ResourceExhaustedError(BrokerError):
    kind = "resource-exhausted"


class BreakError(BrokerError):
    kind = "exn:break"


class BrokerUnavailableError(BrokerError):
    """No daemon answered at the target: nothing listens there, the connection broke, or a
    proxy in between answered for it."""

    kind = UNAVAILABLE


_BY_KIND: dict[str, type[BrokerError]] = {
    cls.kind: cls
    for cls in (
        FailError,
        ContractError,
        NetworkError,
        NetworkErrnoError,
        NotFoundError,
        PermissionDeniedError,
        UnauthenticatedError,
        ResourceExhaustedError,
        BreakError,
        BrokerUnavailableError,
    )
}


def error_from_wire(error: WireError) -> BrokerError:
    """The typed exception of a decoded error (:class:`BrokerError` itself for a kind it does
    not know, with that kind)."""
    cls = _BY_KIND.get(error.kind, BrokerError)
    return cls(error.message, kind=error.kind, errno=error.errno, errno_family=error.errno_family, status=error.status)
