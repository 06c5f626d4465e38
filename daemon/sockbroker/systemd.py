"""The service manager's two protocols (DESIGN §6): readiness notification (``Type=notify``,
sd_notify(3)) and socket activation (sd_listen_fds(3)).

Both are a few lines of the standard library, so they are written here rather than taken from a
package: ``sdnotify`` (last released 2017) swallows every error and leaves ``NOTIFY_SOCKET`` to
child processes, and ``systemd-python`` is a C extension built against libsystemd's headers,
which every install (the container image too) would then need. The rules below are those of
the libsystemd functions; which sockets to take, which libsystemd leaves to the daemon
(``sd_is_socket``), is decided here:

- **NOTIFY_SOCKET** is read once and removed from the environment (``unset_environment=1``), so
  a child process cannot notify in the daemon's name. It is an absolute path or ``@name`` (an
  abstract socket). Each message is one datagram of ``KEY=value`` lines. A failed send is logged
  once as a WARNING (later ones at DEBUG) and never stops the daemon: without a manager
  listening, there is nobody to tell.
- **LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES** are read once and removed from the environment
  whatever they hold. No ``LISTEN_PID``, or another process's pid, means the sockets are not
  for this process (a wrapper received them): nothing is taken and the configured addresses
  are bound. Values that are not numbers, or names that do not match the count, are a
  :class:`~sockbroker.files.StartupError`. Each descriptor, from fd 3 on, is made
  close-on-exec and must be a listening stream socket named (``FileDescriptorName=``) for a
  door, :data:`DOOR_NAMES`; anything else is a StartupError, since a socket nobody accepts on
  would leave its clients waiting forever. A passed socket's path is the manager's: the daemon
  never removes it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

from .files import StartupError, format_address, os_reason

__all__ = ["DOOR_NAMES", "LISTEN_FDS_START", "REFUSED_NAMES", "Inherited", "Notifier", "inherited_sockets"]

log = logging.getLogger(__name__)

#: sd_listen_fds(3): the first passed descriptor.
LISTEN_FDS_START = 3
#: The socket names the daemon takes, and the families each accepts: ``rest`` (one or more TCP
#: sockets) replaces ``--rest-address``; ``channel`` is the relay listener when it is TCP
#: (replaces ``--channel-address``) and the relay and hand-off socket when it is a Unix socket
#: bound to a path (replaces ``--channel-socket``), at most one of each.
DOOR_NAMES = {
    "rest": (socket.AF_INET, socket.AF_INET6),
    "channel": (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX),
}
#: Names the daemon knows but cannot take, and why (a one-line StartupError when passed).
REFUSED_NAMES = {
    "grpc": "the gRPC door cannot serve on an inherited socket (grpcio has no API to adopt a listening "
    "descriptor); remove it from the socket unit and give --grpc-address",
}
#: Seconds one notification may wait for room in the manager's queue.
SEND_TIMEOUT = 2.0


class Notifier:
    """Sends sd_notify messages to the service manager, when there is one."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        """The manager named by ``NOTIFY_SOCKET``, which is then removed from ``environ``."""
        return cls(environ.pop("NOTIFY_SOCKET", None))

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``READY=1``, ``STATUS=…``) as one datagram; True once it is sent, False
        without a manager or when the send failed (logged)."""
        if self.address is None:
            return False
        message = "\n".join(line.replace("\n", " ") for line in fields) + "\n"
        try:
            target = _unix_address(self.address)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(message.encode(), target)
        except (OSError, ValueError) as exc:
            log.log(
                logging.DEBUG if self._warned else logging.WARNING,
                "cannot notify the service manager at NOTIFY_SOCKET %s: %s",
                self.address,
                os_reason(exc) if isinstance(exc, OSError) else exc,
            )
            self._warned = True
            return False
        return True


def _unix_address(address: str) -> bytes:
    if address.startswith("@"):
        return b"\0" + os.fsencode(address[1:])
    if address.startswith("/"):
        return os.fsencode(address)
    raise ValueError("not an absolute path nor an @abstract name")


@dataclass
class Inherited:
    """The listening sockets the service manager passed, by door."""

    rest: list[socket.socket] = field(default_factory=list)
    channel_tcp: socket.socket | None = None
    channel_unix: socket.socket | None = None

    def sockets(self) -> list[socket.socket]:
        return [*self.rest, *(s for s in (self.channel_tcp, self.channel_unix) if s is not None)]

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()


def inherited_sockets(
    *, refused: Callable[[str, str], bool], environ: MutableMapping[str, str] = os.environ
) -> Inherited:
    """The sockets passed by socket activation (module docstring), checked; raises
    :class:`~sockbroker.files.StartupError` (one line) for a descriptor the daemon cannot take,
    or for one whose door may not listen where it does: ``refused(door, host)`` (off loopback
    without TLS, and not allowed: :meth:`.Settings.off_loopback_without_tls`)."""
    raw_pid, raw_count, raw_names = (environ.pop(name, None) for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    inherited = Inherited()
    if raw_pid is None or raw_count is None:
        return inherited
    pid = _number("LISTEN_PID", raw_pid, least=1)
    if pid != os.getpid():
        log.info("LISTEN_PID %d is not this process (pid %d): the passed sockets are not for it", pid, os.getpid())
        return inherited
    count = _number("LISTEN_FDS", raw_count, least=0)
    names = raw_names.split(":") if raw_names else ["unknown"] * count
    if len(names) != count:
        raise StartupError(f"LISTEN_FDNAMES {raw_names}: {len(names)} names for LISTEN_FDS={count} sockets")
    fds = range(LISTEN_FDS_START, LISTEN_FDS_START + count)
    for fd in fds:  # first, as sd_listen_fds does: none of them leaks into a child process
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise StartupError(f"LISTEN_FDS fd {fd}: {os_reason(exc)}") from None
    try:
        for fd, name in zip(fds, names, strict=True):
            _add(inherited, _adopt(fd, name), name, fd, refused)
    except BaseException:
        inherited.close()
        raise
    return inherited


def _number(variable: str, value: str, *, least: int) -> int:
    if not value.isdigit() or int(value) < least:
        raise StartupError(f"{variable} {value}: not a number of {least} or more")
    return int(value)


def _adopt(fd: int, name: str) -> socket.socket:
    """Descriptor ``fd`` as a socket, if it is a listening stream socket of a family its door takes."""
    where = f"LISTEN_FDS fd {fd} ({name})"
    if name in REFUSED_NAMES:
        raise StartupError(f"{where}: {REFUSED_NAMES[name]}")
    families = DOOR_NAMES.get(name)
    if families is None:
        known = " or ".join(DOOR_NAMES)
        raise StartupError(f"{where}: not a door of the daemon; name each socket FileDescriptorName={known}")
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise StartupError(f"{where}: {'not a socket' if exc.errno == errno.ENOTSOCK else os_reason(exc)}") from None
    problem = None
    if sock.type != socket.SOCK_STREAM:
        problem = "not a stream socket (a datagram socket?)"
    elif sock.family not in families:
        problem = f"a {_family(sock.family)} socket; the {name} door takes {', '.join(map(_family, families))}"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "not listening"
    elif sock.family == socket.AF_UNIX and not str(sock.getsockname()).startswith("/"):
        problem = "a Unix socket without a path (abstract or unnamed): clients find the channel by its path"
    if problem is not None:
        sock.close()
        raise StartupError(f"{where}: {problem}")
    return sock


def _add(inherited: Inherited, sock: socket.socket, name: str, fd: int, refused: Callable[[str, str], bool]) -> None:
    """Give ``sock`` to its door in ``inherited``, if it may listen where it does."""
    where = f"LISTEN_FDS fd {fd} ({name})"
    problem = None
    if sock.family == socket.AF_UNIX:
        if inherited.channel_unix is not None:
            problem = "a second channel Unix socket; the daemon takes one"
        else:
            inherited.channel_unix = sock
    else:
        host, port = sock.getsockname()[:2]
        if refused(name, host):
            problem = f"listens on {format_address(host, port)}, off loopback without TLS " + (
                "(give --tls-cert/--tls-key, or --allow-insecure-remote)"
                if name == "rest"
                else "(a relay is never TLS: give --allow-insecure-remote)"
            )
        elif name == "rest":
            inherited.rest.append(sock)
        elif inherited.channel_tcp is not None:
            problem = "a second channel TCP socket; the daemon takes one"
        else:
            inherited.channel_tcp = sock
    if problem is not None:
        sock.close()
        raise StartupError(f"{where}: {problem}")


_FAMILY_NAMES = {socket.AF_INET: "TCP/IPv4", socket.AF_INET6: "TCP/IPv6", socket.AF_UNIX: "Unix"}


def _family(family: socket.AddressFamily) -> str:
    return _FAMILY_NAMES.get(family) or str(getattr(family, "name", family))
