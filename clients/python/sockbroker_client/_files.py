"""The client's local files: the token file, and the daemon's runtime file that says where it listens.

A path from the environment may name anything: a link to ``/dev/zero`` (a read that never ends),
a named pipe (an ``open`` that waits for a writer forever), a huge file. So both files are read
one careful way (:func:`_read_regular`): opened with ``O_NONBLOCK`` (a named pipe opens at once),
accepted only if ``fstat`` says regular file, and read up to a byte limit. Symbolic links are
followed: unlike the daemon, which refuses a link at its token path because a planted link
could choose its token (docs/security.md), a client only reads, and Kubernetes Secret volumes
present every key as a link.

A token file that cannot be read is a :class:`~sockbroker_client.TokenFileError`. A runtime file
that cannot be read, or that names a daemon that is gone, is ignored: the client then uses the
default address, and a missing daemon shows up as ``BrokerUnavailableError`` there.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import stat
from typing import Any

from sockbroker_wire.paths import default_runtime_file

from ._errors import TokenFileError

__all__ = [
    "MAX_RUNTIME_FILE_BYTES",
    "MAX_TOKEN_BYTES",
    "read_runtime_file",
    "read_token_file",
    "runtime_file",
    "runtime_target",
]

#: Largest token file read, as the daemon's own limit: anything longer is not a token.
MAX_TOKEN_BYTES = 4096
#: Largest runtime file read; the daemon's is a few hundred bytes.
MAX_RUNTIME_FILE_BYTES = 64 * 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
#: How to get a token, said when there is no token file: the daemon writes one when it starts.
_TOKEN_HINT = (
    "start the daemon with `sockbroker serve`, which writes it, or name another file with "
    "SOCKBROKER_TOKEN_FILE or give the token in SOCKBROKER_TOKEN"
)
#: A daemon listening on every address is reached on loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


class _Unreadable(Exception):
    """Why a file could not be read (``str()``), and the OS errno if one said so."""

    def __init__(self, reason: str, errno: int | None = None) -> None:
        super().__init__(reason)
        self.errno = errno


def _not_regular(mode: int) -> _Unreadable:
    kind = next((name for test, name in _KINDS if test(mode)), "of an unknown kind")
    return _Unreadable(f"is {kind}, not a regular file")


def _os_reason(exc: OSError) -> _Unreadable:
    text = exc.strerror or str(exc)
    return _Unreadable(text[:1].lower() + text[1:], exc.errno)


def _read_regular(path: pathlib.Path, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file at ``path``; :class:`_Unreadable` for anything else."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # a device or a pipe is refused without even being opened
            raise _not_regular(mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _os_reason(exc) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the stat and the open
            raise _not_regular(mode)
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise _os_reason(exc) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise _Unreadable(f"is larger than {limit} bytes")
    return data


# -- the token file ------------------------------------------------------------------------------


def read_token_file(path: pathlib.Path) -> str:
    """The token in ``path``: surrounding whitespace stripped, visible ASCII (a header value)."""
    where = f"token file {path}"
    try:
        data = _read_regular(path, MAX_TOKEN_BYTES)
    except _Unreadable as exc:
        errno_family = "posix" if exc.errno is not None else None
        hint = f" ({_TOKEN_HINT})" if exc.errno == errno.ENOENT else ""
        raise TokenFileError(f"{where}: {exc}{hint}", errno=exc.errno, errno_family=errno_family) from None
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"{where}: holds non-ASCII bytes, so it holds no token") from None
    if not token:
        raise TokenFileError(f"{where}: is empty")
    if any(not 0x21 <= ord(char) <= 0x7E for char in token):
        raise TokenFileError(f"{where}: holds spaces or control characters, so it holds no token")
    return token


# -- the runtime file ----------------------------------------------------------------------------


def runtime_file(token_file: pathlib.Path) -> pathlib.Path:
    """``$SOCKBROKER_RUNTIME_FILE``, else the daemon's default: ``runtime.json`` beside ``token_file``."""
    configured = os.environ.get("SOCKBROKER_RUNTIME_FILE")
    return pathlib.Path(configured) if configured else default_runtime_file(token_file)


def read_runtime_file(path: pathlib.Path) -> dict[str, Any] | None:
    """What the runtime file at ``path`` says (pid, version, addresses, token file), or None: no
    file, not readable, not the daemon's, or its daemon no longer runs."""
    try:
        content: Any = json.loads(_read_regular(path, MAX_RUNTIME_FILE_BYTES))
    except (_Unreadable, ValueError):
        return None
    if not isinstance(content, dict) or not _alive(content.get("pid")):
        return None
    return content


def runtime_target(transport: str, path: pathlib.Path) -> str | None:
    """Where the daemon of the runtime file at ``path`` listens for ``transport`` (``grpc``:
    ``HOST:PORT``, ``rest``: its URL), or None when :func:`read_runtime_file` finds no daemon."""
    content = read_runtime_file(path)
    if content is None:
        return None
    if transport == "grpc":
        address = content.get("grpc_address")
        return _loopback(address) if isinstance(address, str) and address else None
    url = content.get("rest_url")
    if not isinstance(url, str) or "://" not in url:
        return None
    scheme, _, address = url.partition("://")
    return f"{scheme}://{_loopback(address)}"


def _loopback(address: str) -> str:
    """``0.0.0.0:50051`` → ``127.0.0.1:50051``; ``[::]:8080`` → ``[::1]:8080``; others unchanged."""
    host, colon, port = address.rpartition(":")
    return f"{_WILDCARDS.get(host, host)}{colon}{port}" if colon else address


def _alive(pid: object) -> bool:
    """Whether process ``pid`` exists (a runtime file left by a killed daemon names a dead one)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:  # 0 and negatives name process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: a daemon run as a service user
    except OSError:
        return False
    return True
