"""The error hierarchy of the core, and the one table that maps it onto the wire.

::

    BrokerError                      (root; never raised itself)
    ├── FailError                    exn:fail                 an operation on a closed TCP port
    ├── ContractError                exn:fail:contract        bad argument, range, shut-down custodian
    ├── NetworkError                 exn:fail:network         state: closed, already bound, not connected
    │   └── NetworkErrnoError        exn:fail:network:errno   the OS refused (carries errno + family)
    ├── NotFoundError                not-found                unknown handle/session (or another session's)
    ├── PermissionDeniedError        permission-denied        policy forbids the address or port; not an admin
    ├── UnauthenticatedError         unauthenticated          missing or wrong credentials
    ├── ResourceExhaustedError       resource-exhausted       a quota would be passed
    └── BreakError                   exn:break                the client cancelled

Each class has one meaning; the Racket kind is a class attribute, never assembled at the edge.
Messages follow Racket: ``who: what`` then one indented ``field: value`` line per detail. Where
Racket raises without a ``who`` (a stream port's read and write errors, a break), ``who`` is
None and the first line is ``what`` alone (``error reading from stream port``, ``user break``).

:class:`FailError` stands beside the others rather than above them: in Racket ``exn:fail`` is
the parent of every failure, but here each class names one meaning, and the plain kind means
only what Racket raises as plain ``exn:fail`` for the operations offered — a read, write, flush
or buffer-mode change on a closed TCP port.

The front doors convert exactly once, through the wire package's table
(``sockbroker_wire.errors.WIRE_STATUS``): a gRPC status and an HTTP status per kind. The core
knows neither, so that it imports no front-door library.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import socket
from collections.abc import Iterator, Mapping
from typing import ClassVar

__all__ = [
    "BreakError",
    "BrokerError",
    "ContractError",
    "FailError",
    "NetworkErrnoError",
    "NetworkError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "contract_violation",
    "from_os_error",
    "os_errors",
    "show",
]


def _format(who: str | None, what: str, details: Mapping[str, object] | None) -> str:
    lines = [what if who is None else f"{who}: {what}"]
    for key, value in (details or {}).items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


class BrokerError(Exception):
    """Root of every error the core raises on purpose."""

    kind: ClassVar[str] = "broker-error"

    def __init__(self, who: str | None, what: str, details: Mapping[str, object] | None = None) -> None:
        self.who = who
        self.what = what
        self.details = dict(details or {})
        super().__init__(_format(who, what, details))

    @property
    def message(self) -> str:
        return str(self)

    @property
    def errno(self) -> int | None:
        return None

    @property
    def errno_family(self) -> str | None:
        return None


class FailError(BrokerError):
    """Racket's plain ``exn:fail``: an operation on a closed TCP port (``write-bytes: output port
    is closed``). ``tcp-addresses`` on a closed port is not one: its docs name ``exn:fail:network``."""

    kind = "exn:fail"


class ContractError(BrokerError):
    """A bad argument: wrong type or range, or a custodian that has been shut down."""

    kind = "exn:fail:contract"


class NetworkError(BrokerError):
    """An operation on a handle in the wrong state: closed, already bound, not connected."""

    kind = "exn:fail:network"


class NetworkErrnoError(NetworkError):
    """The operating system refused: the errno (``posix``) or resolver code (``gai``) says why."""

    kind = "exn:fail:network:errno"

    def __init__(
        self,
        who: str | None,
        what: str,
        details: Mapping[str, object] | None = None,
        *,
        code: int,
        family: str = "posix",
        reason: str = "",
    ) -> None:
        self._code = code
        self._family = family
        merged = dict(details or {})
        merged["system error"] = (
            f"{reason or _strerror(code, family)}; {'errno' if family == 'posix' else 'gai_err'}={code}"
        )
        super().__init__(who, what, merged)

    @property
    def errno(self) -> int | None:
        return self._code

    @property
    def errno_family(self) -> str | None:
        return self._family


class NotFoundError(BrokerError):
    """No such handle or session for this caller (another session's handle included)."""

    kind = "not-found"


class PermissionDeniedError(BrokerError):
    """The principal may not: its policy forbids this address or port, or it is not an admin
    principal and called the admin API."""

    kind = "permission-denied"


class UnauthenticatedError(BrokerError):
    """Missing or wrong credentials."""

    kind = "unauthenticated"


class ResourceExhaustedError(BrokerError):
    """A quota would be passed."""

    kind = "resource-exhausted"


class BreakError(BrokerError):
    """The client cancelled the call (or its own deadline passed)."""

    kind = "exn:break"


def _strerror(code: int, family: str) -> str:
    if family == "gai":
        return _GAI.get(code, "name resolution failed")
    return os.strerror(code)


_GAI = {
    socket.EAI_NONAME: "Name or service not known",
    socket.EAI_AGAIN: "Temporary failure in name resolution",
    socket.EAI_FAIL: "Non-recoverable failure in name resolution",
    socket.EAI_FAMILY: "ai_family not supported",
    socket.EAI_SERVICE: "Servname not supported for ai_socktype",
}
_NODATA = getattr(socket, "EAI_NODATA", None)
if _NODATA is not None:
    _GAI[_NODATA] = "No address associated with hostname"


def from_os_error(
    who: str | None, what: str, exc: OSError, details: Mapping[str, object] | None = None
) -> NetworkErrnoError:
    """Turn an OSError (or socket.gaierror) into the errno-carrying network error."""
    if isinstance(exc, socket.gaierror):
        code = exc.errno if isinstance(exc.errno, int) else socket.EAI_FAIL
        return NetworkErrnoError(
            who, what, details, code=code, family="gai", reason=_GAI.get(code, str(exc.strerror or exc))
        )
    code = exc.errno if isinstance(exc.errno, int) else _errno.EIO
    return NetworkErrnoError(who, what, details, code=code, reason=os.strerror(code))


@contextlib.contextmanager
def os_errors(who: str, what: str, details: Mapping[str, object] | None = None) -> Iterator[None]:
    """The one translation of the operating system's refusals: any OSError (or resolver error)
    in the block leaves it as ``exn:fail:network:errno`` with the errno, ``who: what`` and details."""
    try:
        yield
    except OSError as exc:
        raise from_os_error(who, what, exc, details) from None


def contract_violation(who: str, expected: str, given: object) -> ContractError:
    """Racket's ``who: contract violation / expected: … / given: …``."""
    return ContractError(who, "contract violation", {"expected": expected, "given": show(given)})


def show(value: object) -> str:
    """A value printed the Racket way in a detail line: ``#f``, ``#t``, strings in quotes."""
    if value is None:
        return "#f"
    if value is True:
        return "#t"
    if value is False:
        return "#f"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"')[:200] + '"'
    return repr(value)[:200]
