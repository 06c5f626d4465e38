"""`sockbroker serve` under a service manager (DESIGN §6, issue 11): sd_notify readiness and
socket activation (daemon/sockbroker/systemd.py).

The test plays systemd: it listens on the notification socket (a path and an abstract name), and
it binds the listening sockets itself and hands them to the daemon as fds 3, 4… through a small
wrapper that sets LISTEN_PID to its own pid and then execs the daemon, as systemd's fork does.
Every daemon is a real process, stopped by its pid.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import httpx
import pytest
from sockbroker.config import Settings
from sockbroker.files import StartupError
from sockbroker.systemd import DOOR_NAMES, Notifier, inherited_sockets
from sockbroker_wire.paths import default_runtime_file
from test_serve import COMMAND, ENV, GOOD_TOKEN, DaemonProcess, grpc_serving, token_file

#: Plays systemd's fork: moves the given descriptors to 3, 4…, sets LISTEN_* (LISTEN_PID "self":
#: its own pid, which the exec keeps), then execs the daemon.
WRAPPER = """
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",") if fd]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for offset, fd in enumerate(high):
    os.dup2(fd, 3 + offset)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid()) if sys.argv[2] == "self" else sys.argv[2]
os.environ["LISTEN_FDS"] = str(len(fds))
if sys.argv[3] != "-":
    os.environ["LISTEN_FDNAMES"] = sys.argv[3]
os.execv(sys.argv[4], sys.argv[4:])
"""


class Process(DaemonProcess):
    """A daemon process, maybe given sockets, listed in ``started`` as soon as it runs."""

    def __init__(
        self,
        started: list[Process],
        tmp_path: pathlib.Path,
        *arguments: str,
        env: dict[str, str] | None = None,
        fds: Sequence[int] = (),
        names: str = "-",
        listen_pid: str = "self",
    ) -> None:
        self.log = tmp_path / f"daemon-{time.monotonic_ns()}.log"
        command = [*COMMAND, *arguments]
        if fds:
            command = [sys.executable, "-c", WRAPPER, ",".join(map(str, fds)), listen_pid, names, *command]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(command, env={**ENV, **(env or {})}, stdout=out, stderr=out, pass_fds=fds)
        started.append(self)  # the test's ``processes``: killed by pid at its end, whatever happens

    def wait_started(self, runtime_file: pathlib.Path) -> dict[str, object]:
        """The runtime file's content once it names this process (bounded)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                content = json.loads(runtime_file.read_text())
                if content.get("pid") == self.proc.pid:
                    return dict(content)
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"daemon did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def refused(self) -> str:
        """The one stderr line of a daemon that must refuse to start with status 2."""
        try:
            status = self.proc.wait(timeout=30)
        finally:
            self.kill()
        lines = self.log.read_text().splitlines()
        assert status == 2, lines
        assert len(lines) == 1 and lines[0].startswith("sockbroker: "), lines
        return lines[0]


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Daemons a test started; whatever still runs at the end is killed by pid."""
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def tcp_listener(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    sock.listen()
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def receive(notify: socket.socket, daemon: Process, within: float = 30.0) -> dict[str, str]:
    """The next notification as its fields; fails once the daemon has exited without one (bounded)."""
    notify.settimeout(0.2)
    deadline = time.monotonic() + within
    while True:
        try:
            data = notify.recv(4096)
        except TimeoutError:
            if daemon.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no notification:\n{daemon.log.read_text()}") from None
            continue
        return dict(line.split("=", 1) for line in data.decode().splitlines() if line)


def channel_answers(target: str | tuple[str, int]) -> str:
    """The channel door's answer to a ticket that names nothing."""
    family = socket.AF_UNIX if isinstance(target, str) else socket.AF_INET
    with socket.socket(family) as client:
        client.settimeout(10)
        client.connect(target)
        client.sendall(b"tck_nothing\n")
        return client.recv(4096).decode()


# -- sd_notify --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_comes_once_every_door_answers_and_stopping_at_sigterm(
    tmp_path: pathlib.Path, processes: list[Process], kind: str
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        if kind == "path":
            name = str(tmp_path / "notify")
            notify.bind(name)
        else:
            label = f"sockbroker-test-{secrets.token_hex(8)}"
            notify.bind("\0" + label)
            name = "@" + label
        token = token_file(tmp_path)
        daemon = Process(
            processes,
            tmp_path,
            "--grpc-address=127.0.0.1:0",
            "--rest-address=127.0.0.1:0",
            f"--token-file={token}",
            env={"NOTIFY_SOCKET": name},
        )
        ready = receive(notify, daemon)  # the first message
        assert ready["READY"] == "1" and ready["MAINPID"] == str(daemon.proc.pid)
        runtime = json.loads(default_runtime_file(token).read_text())  # written before READY=1
        assert runtime["pid"] == daemon.proc.pid
        assert httpx.get(f"{runtime['rest_url']}/healthz", timeout=10).status_code == 200
        assert grpc_serving(runtime["grpc_address"])
        assert channel_answers(runtime["channel_socket"]).startswith("ERR ")
        host, port = runtime["channel_address"].rsplit(":", 1)
        assert channel_answers((host, int(port))).startswith("ERR ")
        assert ready["STATUS"] == f"serving gRPC on {runtime['grpc_address']} and REST on {runtime['rest_address']}"

        daemon.proc.send_signal(signal.SIGTERM)
        stopping = receive(notify, daemon, within=15)
        assert stopping == {"STOPPING": "1", "STATUS": "stopping: dropping 0 sessions"}
        assert daemon.stop() == 0


def test_a_notify_socket_nobody_listens_on_is_one_warning(tmp_path: pathlib.Path, processes: list[Process]) -> None:
    token = token_file(tmp_path)
    daemon = Process(
        processes,
        tmp_path,
        "--grpc-address=127.0.0.1:0",
        "--rest-address=127.0.0.1:0",
        f"--token-file={token}",
        env={"NOTIFY_SOCKET": str(tmp_path / "nobody")},
    )
    daemon.wait_started(default_runtime_file(token))
    assert daemon.stop() == 0  # STOPPING=1 failed too: a DEBUG line
    warnings = [line for line in daemon.log.read_text().splitlines() if "cannot notify the service manager" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0], warnings
    assert f"NOTIFY_SOCKET {tmp_path / 'nobody'}: no such file or directory" in warnings[0]


def test_the_notify_socket_is_read_once_and_removed_from_the_environment(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"NOTIFY_SOCKET": "relative/path", "OTHER": "kept"}
    notifier = Notifier.from_environment(environ)
    assert environ == {"OTHER": "kept"}  # a child process cannot notify in the daemon's name
    with caplog.at_level(logging.DEBUG, logger="sockbroker.systemd"):
        assert notifier.notify("READY=1") is False
        assert notifier.notify("STOPPING=1") is False
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG], caplog.text
    assert "not an absolute path nor an @abstract name" in caplog.text
    assert Notifier.from_environment({}).notify("READY=1") is False  # no manager: nothing to tell


# -- socket activation ------------------------------------------------------------------------------


def test_passed_sockets_are_served_instead_of_the_configured_addresses(
    tmp_path: pathlib.Path, processes: list[Process]
) -> None:
    token = token_file(tmp_path)
    handoff_path = tmp_path / "activated.sock"
    with (
        tcp_listener() as rest,
        tcp_listener() as channel,
        socket.socket(socket.AF_UNIX) as handoff,
        tcp_listener() as busy_rest,  # the configured addresses are busy: binding them would fail
        tcp_listener() as busy_channel,
    ):
        handoff.bind(str(handoff_path))
        handoff.listen()
        configured_socket = tmp_path / "configured.sock"
        daemon = Process(
            processes,
            tmp_path,
            "--grpc-address=127.0.0.1:0",
            f"--rest-address={address(busy_rest)}",
            f"--channel-address={address(busy_channel)}",
            f"--channel-socket={configured_socket}",
            f"--token-file={token}",
            fds=[rest.fileno(), channel.fileno(), handoff.fileno()],
            names="rest:channel:channel",
        )
        runtime = daemon.wait_started(default_runtime_file(token))
        assert runtime["rest_address"] == address(rest) and runtime["rest_url"] == f"http://{address(rest)}"
        assert runtime["channel_address"] == address(channel)
        assert runtime["channel_socket"] == str(handoff_path)
        assert not configured_socket.exists()

        base = f"http://{address(rest)}"
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        opened = httpx.post(f"{base}/v1/sessions", headers={"Authorization": f"Bearer {GOOD_TOKEN}"}, timeout=10)
        assert opened.status_code in (200, 201), opened.text
        assert grpc_serving(str(runtime["grpc_address"]))
        assert channel_answers(channel.getsockname()).startswith("ERR ")
        assert channel_answers(str(handoff_path)).startswith("ERR ")
        assert daemon.stop() == 0
        assert handoff_path.exists()  # the manager's socket: the manager removes it, not the daemon


def test_sockets_for_another_process_are_left_alone(tmp_path: pathlib.Path, processes: list[Process]) -> None:
    """LISTEN_PID names someone else (a wrapper received them): sd_listen_fds(3) returns none."""
    token = token_file(tmp_path)
    with tcp_listener() as rest:
        daemon = Process(
            processes,
            tmp_path,
            "--grpc-address=127.0.0.1:0",
            "--rest-address=127.0.0.1:0",
            f"--token-file={token}",
            fds=[rest.fileno()],
            names="rest",
            listen_pid=str(os.getpid()),
        )
        runtime = daemon.wait_started(default_runtime_file(token))
        assert runtime["rest_address"] != address(rest)
        assert httpx.get(f"{runtime['rest_url']}/healthz", timeout=10).status_code == 200
        assert daemon.stop() == 0
    assert f"LISTEN_PID {os.getpid()} is not this process" in daemon.log.read_text()


Passed = socket.socket | IO[bytes]


def _tcp(tmp_path: pathlib.Path) -> Passed:
    return tcp_listener()


def _tcp_everywhere(tmp_path: pathlib.Path) -> Passed:
    return tcp_listener("0.0.0.0")  # a local bind: nothing is sent anywhere


def _udp(tmp_path: pathlib.Path) -> Passed:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _bound_only(tmp_path: pathlib.Path) -> Passed:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _unix(tmp_path: pathlib.Path) -> Passed:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "u.sock"))
    sock.listen()
    return sock


def _abstract(tmp_path: pathlib.Path) -> Passed:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(f"\0sockbroker-test-{secrets.token_hex(8)}")
    sock.listen()
    return sock


def _pipe(tmp_path: pathlib.Path) -> Passed:
    read_end, write_end = os.pipe()
    os.close(write_end)
    return os.fdopen(read_end, "rb")


@pytest.mark.parametrize(
    ("make", "names", "expected"),
    [
        (
            _tcp,
            "web",
            "LISTEN_FDS fd 3 (web): not a door of the daemon; name each socket FileDescriptorName=rest or channel",
        ),
        (_tcp, "-", "LISTEN_FDS fd 3 (unknown): not a door of the daemon"),
        (_tcp, "grpc", "LISTEN_FDS fd 3 (grpc): the gRPC door cannot serve on an inherited socket"),
        (_udp, "rest", "LISTEN_FDS fd 3 (rest): not a stream socket (a datagram socket?)"),
        (_bound_only, "rest", "LISTEN_FDS fd 3 (rest): not listening"),
        (_pipe, "rest", "LISTEN_FDS fd 3 (rest): not a socket"),
        (_unix, "rest", "LISTEN_FDS fd 3 (rest): a Unix socket; the rest door takes TCP/IPv4, TCP/IPv6"),
        (_abstract, "channel", "LISTEN_FDS fd 3 (channel): a Unix socket without a path"),
        (_tcp_everywhere, "rest", "off loopback without TLS (give --tls-cert/--tls-key, or --allow-insecure-remote)"),
        (_tcp_everywhere, "channel", "off loopback without TLS (a relay is never TLS"),
        (_tcp, "rest:channel", "LISTEN_FDNAMES rest:channel: 2 names for LISTEN_FDS=1 sockets"),
    ],
    ids=lambda value: getattr(value, "__name__", None) or (value if len(value) < 16 else None),
)
def test_a_passed_descriptor_the_daemon_cannot_take_is_one_line(
    tmp_path: pathlib.Path,
    processes: list[Process],
    make: Callable[[pathlib.Path], Passed],
    names: str,
    expected: str,
) -> None:
    with make(tmp_path) as passed:
        daemon = Process(
            processes,
            tmp_path,
            "--grpc-address=127.0.0.1:0",
            "--rest-address=127.0.0.1:0",
            f"--token-file={token_file(tmp_path)}",
            fds=[passed.fileno()],
            names=names,
        )
        line = daemon.refused()
    assert expected in line, line


def test_listen_variables_are_read_once_and_checked() -> None:
    environ = {"LISTEN_PID": "12x", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "rest", "OTHER": "kept"}
    with pytest.raises(StartupError) as refusal:
        inherited_sockets(refused=Settings.load().off_loopback_without_tls, environ=environ)
    assert str(refusal.value) == "LISTEN_PID 12x: not a number of 1 or more"
    assert environ == {"OTHER": "kept"}  # removed whatever they held
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "-1"}
    with pytest.raises(StartupError, match="LISTEN_FDS -1: not a number of 0 or more"):
        inherited_sockets(refused=Settings.load().off_loopback_without_tls, environ=environ)
    nothing = inherited_sockets(refused=Settings.load().off_loopback_without_tls, environ={"LISTEN_FDS": "1"})
    assert nothing.sockets() == []  # no LISTEN_PID: nothing was passed to anyone
    assert set(DOOR_NAMES) == {"rest", "channel"}
