"""The daemon's own files and addresses: token file, runtime file, Unix socket path, front-door ports.

Everything here runs once, at start, and either succeeds or raises :class:`StartupError` with one
line that names the setting and says what is wrong (DESIGN §5 "its own ports", §6). ``cli.py``
prints that line and exits with status 2; nothing here may end in a traceback.

The rules, and why:

- **Never through a symlink.** The token file is opened with ``O_NOFOLLOW`` and created with
  ``O_CREAT | O_EXCL``: a link planted at its path (dangling or not) can neither make the daemon
  create a file elsewhere, overwrite one, nor choose the token. A symlink is refused.
- **Only trusted content.** An existing token file must be a regular file owned by the daemon's
  user or by root (root can rewrite any file anyway; this is OpenSSH's ``StrictModes`` rule, and
  what systemd credentials and Kubernetes Secrets look like), writable by nobody else, not
  readable by everyone, and hold a token of at least :data:`MIN_TOKEN_LENGTH` visible ASCII
  characters (what a header can carry).
- **Replace, never edit.** The runtime file is written to a fresh ``O_EXCL`` temporary file and
  renamed into place, so a reader sees the old file or the new one, and a link at its path is
  replaced, not followed. It is removed at a clean stop only if it still holds what this daemon
  wrote.
- **Own ports.** A front-door address already in use is refused, never shared (gRPC's
  ``SO_REUSEPORT`` is off in ``server.py``): the REST door binds its own socket here, the gRPC
  door's address is probed here first so its error reads like the REST one.
- **Own socket file.** An existing path at ``--grpc-unix-socket`` is removed only if it is a
  socket owned by the daemon's user that nobody answers on (a dead daemon's leftover).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pathlib
import secrets
import socket
import stat
import tempfile
from typing import Any

__all__ = [
    "MAX_TOKEN_BYTES",
    "MIN_TOKEN_LENGTH",
    "StartupError",
    "bind_tcp",
    "check_tcp_free",
    "format_address",
    "load_or_create_token",
    "os_reason",
    "prepare_unix_socket",
    "remove_runtime_file",
    "write_runtime_file",
]

log = logging.getLogger(__name__)

#: Shortest token the daemon accepts: generated tokens are ``secrets.token_urlsafe(32)``, 43 characters.
MIN_TOKEN_LENGTH = 32
#: Largest token file the daemon reads; anything longer is not a token (and would be sent on every call).
MAX_TOKEN_BYTES = 4096
#: AF_UNIX ``sun_path`` is 108 bytes on Linux, including the terminating NUL.
_MAX_UNIX_PATH = 107


class StartupError(Exception):
    """The daemon cannot start; ``str()`` is one line naming the setting and the reason. Exit status 2."""


def os_reason(exc: OSError) -> str:
    """``[Errno 98] Address already in use`` → ``address already in use``."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "of an unknown kind"


# -- the token file ------------------------------------------------------------------------------


def load_or_create_token(path: pathlib.Path, *, setting: str = "--token-file") -> str:
    """The token in ``path``, checked (module docstring); a new one, created 0600 with O_EXCL, if there is none."""
    for _ in range(2):  # a second pass only when another process created the file between our two steps
        token = _read_token(path, setting)
        if token is not None:
            return token
        token = _create_token(path, setting)
        if token is not None:
            return token
    raise StartupError(f"{setting} {path}: created by another process while this one was creating it")


def _read_token(path: pathlib.Path, setting: str) -> str | None:
    """The checked token at ``path``, or None when there is no file."""
    where = f"{setting} {path}"
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StartupError(f"{where}: {os_reason(exc)}") from None
    if stat.S_ISLNK(before.st_mode):
        raise StartupError(f"{where}: is a symbolic link; the daemon does not follow links here (give the real path)")
    if not stat.S_ISREG(before.st_mode):
        raise StartupError(f"{where}: is {_kind(before.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StartupError(f"{where}: became a symbolic link while being opened") from None
        raise StartupError(f"{where}: {os_reason(exc)}") from None
    with contextlib.closing(os.fdopen(fd, "rb")) as handle:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(info.st_mode):
            raise StartupError(f"{where}: was replaced while being opened")
        _check_owner_and_mode(where, info)
        data = handle.read(MAX_TOKEN_BYTES + 1)
    if len(data) > MAX_TOKEN_BYTES:
        raise StartupError(f"{where}: is larger than {MAX_TOKEN_BYTES} bytes; not a token file")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise StartupError(f"{where}: holds non-ASCII bytes; a token is visible ASCII (a header value)") from None
    if not token:
        raise StartupError(f"{where}: is empty; delete it to have a new token generated, or write one there")
    if any(not 0x21 <= ord(char) <= 0x7E for char in token):
        raise StartupError(f"{where}: the token holds spaces or control characters; it must be visible ASCII")
    if len(token) < MIN_TOKEN_LENGTH:
        raise StartupError(
            f"{where}: the token has {len(token)} characters, fewer than {MIN_TOKEN_LENGTH}; "
            "use a random one such as secrets.token_urlsafe(32), or delete the file to have one generated"
        )
    return token


def _check_owner_and_mode(where: str, info: os.stat_result) -> None:
    uid = os.geteuid()
    if info.st_uid not in (uid, 0):
        raise StartupError(f"{where}: is owned by uid {info.st_uid}, not by this daemon's user (uid {uid}) or root")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise StartupError(f"{where}: is writable by others (mode {mode:04o}); chmod go-w it")
    if mode & 0o004:
        raise StartupError(f"{where}: is readable by everyone (mode {mode:04o}); chmod o-r it")
    if mode & 0o040:
        log.info("token file is readable by its group (gid %d, mode %04o): %s", info.st_gid, mode, where)


def _create_token(path: pathlib.Path, setting: str) -> str | None:
    """A new token written to a new file at ``path``; None when a file appeared there meanwhile."""
    where = f"{setting} {path}"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"{where}: cannot create its directory {path.parent}: {os_reason(exc)}") from None
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        raise StartupError(f"{where}: cannot create it: {os_reason(exc)}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask took away, the owner reads and writes it
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)  # ours: created with O_EXCL a moment ago
        raise StartupError(f"{where}: cannot write it: {os_reason(exc)}") from None
    finally:
        os.close(fd)
    log.info("wrote a new token to %s (mode 0600)", path)
    return token


# -- the runtime file ----------------------------------------------------------------------------


def write_runtime_file(path: pathlib.Path, content: dict[str, Any], *, setting: str = "--runtime-file") -> None:
    """Replace ``path`` with ``content`` as JSON, mode 0600, through an O_EXCL temporary file and a rename."""
    where = f"{setting} {path}"
    previous = _read_runtime_file(path)
    pid = previous.get("pid") if previous else None
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        log.warning("runtime file %s named daemon pid %d, which is still running; it now names this one", path, pid)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"{where}: cannot create its directory {path.parent}: {os_reason(exc)}") from None
    temporary: str | None = None
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".runtime-", suffix=".json")  # O_EXCL, 0600
        with os.fdopen(fd, "w") as handle:
            json.dump(content, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)  # a link at ``path`` is replaced, not followed
        temporary = None
    except OSError as exc:
        raise StartupError(f"{where}: cannot write it: {os_reason(exc)}") from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def remove_runtime_file(path: pathlib.Path, content: dict[str, Any]) -> None:
    """Remove ``path`` if it still holds ``content`` (another daemon may have taken it over since)."""
    if _read_runtime_file(path) == content:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read_runtime_file(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = handle.read(64 * 1024)
    try:
        content = json.loads(data)
    except ValueError:
        return None
    return content if isinstance(content, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


# -- the Unix domain socket ----------------------------------------------------------------------


def prepare_unix_socket(path: pathlib.Path, *, setting: str = "--grpc-unix-socket") -> None:
    """Make ``path`` free for a new socket: refuse anything but a dead socket of ours, which is removed."""
    where = f"{setting} {path}"
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise StartupError(f"{where}: longer than {_MAX_UNIX_PATH} bytes, the limit for a Unix socket path")
    if not path.parent.is_dir():
        raise StartupError(f"{where}: directory {path.parent} does not exist")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"{where}: {os_reason(exc)}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise StartupError(f"{where}: exists and is {_kind(info.st_mode)}; remove it or choose another path")
    if info.st_uid != os.geteuid():
        raise StartupError(f"{where}: is a socket owned by uid {info.st_uid}; remove it or choose another path")
    if _answers(path):
        raise StartupError(f"{where}: a process is listening on it (another sockbroker?)")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StartupError(f"{where}: cannot remove the old socket: {os_reason(exc)}") from None
    log.info("removed a stale socket at %s", path)


def bind_unix(setting: str, path: pathlib.Path, mode: int = 0o600) -> socket.socket:
    """A listening Unix socket at ``path`` (a dead one of ours there is replaced), born 0600 and
    then given ``mode``: no window where others may connect before the mode says they may."""
    prepare_unix_socket(path, setting=setting)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        sock.bind(str(path))
        if mode != 0o600:
            os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        raise StartupError(f"{setting} {path}: cannot bind it ({exc.strerror or exc})") from None
    finally:
        os.umask(previous)
    sock.listen(socket.SOMAXCONN)
    return sock


def _answers(path: pathlib.Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # a full backlog or a timeout is still somebody there
        return True


# -- front-door ports ----------------------------------------------------------------------------


def format_address(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_tcp(setting: str, host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address ``host`` names, all on one port.

    ``SO_REUSEADDR`` as every server sets it (a port in TIME_WAIT is free), never ``SO_REUSEPORT``
    (a port someone listens on is busy). Port 0: the first address picks, the others follow.
    """
    where = f"{setting} {format_address(host, port)}"
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"{where}: cannot resolve {host!r}: {exc.strerror}") from None
    bound: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            ip = str(sockaddr[0])
            if (family, ip) in seen:
                continue
            seen.add((family, ip))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # this family is unavailable here (IPv6 disabled): the others may do
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            chosen = bound[0].getsockname()[1] if len(bound) > 1 else port
            try:
                sock.bind((ip, chosen, *sockaddr[2:]))
            except OSError as exc:
                raise StartupError(f"{where}: {os_reason(exc)}") from None
        if not bound:
            raise StartupError(f"{where}: no address to bind")
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def check_tcp_free(setting: str, host: str, port: int) -> None:
    """Refuse a busy or unusable ``host:port`` before gRPC binds it (gRPC only says "Failed to bind")."""
    for sock in bind_tcp(setting, host, port):
        sock.close()
