"""`sockbroker serve` owns its ports and files (DESIGN §5 "its own ports", §6; issue 8).

Every daemon here is a real process (`python -m sockbroker serve`) on port 0 or on a port this
test holds busy itself, stopped by its pid. A refusal is exit status 2 and one line on stderr
naming the setting; never a traceback, never a silently shared port, never a file written
through a link.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sockbroker.files import (
    StartupError,
    bind_tcp,
    load_or_create_token,
    prepare_unix_socket,
    remove_runtime_file,
    write_runtime_file,
)
from sockbroker_wire.paths import default_runtime_file

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
GOOD_TOKEN = "T" * 43
COMMAND = [sys.executable, "-m", "sockbroker", "serve"]


def token_file(tmp_path: pathlib.Path, content: str = GOOD_TOKEN + "\n", mode: int = 0o600) -> pathlib.Path:
    """A ready token file, so that a refusal is the only line on stderr (no "wrote a new token")."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "token"
    path.write_text(content)
    path.chmod(mode)
    return path


def refused(*arguments: str) -> str:
    """Run a daemon that must refuse to start: exit status 2, one line on stderr. Returns that line."""
    result = subprocess.run([*COMMAND, *arguments], env=ENV, capture_output=True, text=True, timeout=60, check=False)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sockbroker: ")
    return lines[0]


class DaemonProcess:
    """A daemon process: `stop()` sends SIGTERM by pid and returns its exit status, `kill()` ends it."""

    proc: subprocess.Popen[bytes]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Serving(DaemonProcess):
    """A daemon process that started."""

    def __init__(self, tmp_path: pathlib.Path, *arguments: str, runtime: pathlib.Path) -> None:
        self.log = tmp_path / f"daemon-{time.monotonic_ns()}.log"
        self.runtime_file = runtime
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([*COMMAND, *arguments], env=ENV, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"daemon did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.runtime = json.loads(runtime.read_text())

    def _ready(self) -> bool:
        try:
            content = json.loads(self.runtime_file.read_text())
        except (OSError, ValueError):
            return False
        return bool(content.get("pid") == self.proc.pid)


@pytest.fixture
def serving(tmp_path: pathlib.Path) -> Iterator[list[Serving]]:
    """Daemons a test started; whatever is still running at the end is killed by pid."""
    started: list[Serving] = []
    yield started
    for daemon in started:
        daemon.kill()


def start(serving: list[Serving], tmp_path: pathlib.Path, *arguments: str, token: pathlib.Path) -> Serving:
    runtime = default_runtime_file(token)
    daemon = Serving(tmp_path, f"--token-file={token}", *arguments, runtime=runtime)
    serving.append(daemon)
    return daemon


def grpc_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


# -- port 0: the real addresses, logged and in the runtime file -------------------------------------


def test_port_zero_reports_real_addresses_in_log_and_runtime_file(
    tmp_path: pathlib.Path, serving: list[Serving]
) -> None:
    token = tmp_path / "fresh" / "token"
    unix = tmp_path / "g.sock"
    stale = socket.socket(socket.AF_UNIX)  # a dead daemon's leftover socket: ours, nobody listening
    stale.bind(str(unix))
    stale.close()
    daemon = start(
        serving,
        tmp_path,
        "--grpc-address=127.0.0.1:0",
        "--rest-address=127.0.0.1:0",
        f"--grpc-unix-socket={unix}",
        token=token,
    )
    runtime = daemon.runtime
    assert runtime["pid"] == daemon.proc.pid
    assert runtime["token_file"] == str(token) and runtime["grpc_unix_socket"] == str(unix)
    grpc_address, rest_address = runtime["grpc_address"], runtime["rest_address"]
    assert not grpc_address.endswith(":0") and not rest_address.endswith(":0")
    assert runtime["rest_url"] == f"http://{rest_address}"
    assert httpx.get(f"{runtime['rest_url']}/healthz", timeout=10).status_code == 200
    assert grpc_serving(grpc_address) and grpc_serving(f"unix:{unix}")
    assert stat.S_IMODE(daemon.runtime_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) == 43
    assert stat.S_IMODE(unix.stat().st_mode) == 0o600
    log = daemon.log.read_text()
    assert f"serving gRPC on {grpc_address} and unix:{unix} and REST on {rest_address}" in log
    assert daemon.stop() == 0
    assert not daemon.runtime_file.exists() and not unix.exists()  # removed at a clean stop


def test_runtime_file_taken_over_by_another_daemon_is_left_to_it(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run" / "runtime.json"
    ours = {"pid": os.getpid(), "grpc_address": "127.0.0.1:1"}
    write_runtime_file(path, ours)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            theirs = {"pid": other.pid, "grpc_address": "127.0.0.1:2"}
            write_runtime_file(path, theirs)  # another daemon, alive, took it over
            with caplog.at_level(logging.WARNING, logger="sockbroker.files"):
                write_runtime_file(path, ours)
            assert f"named daemon pid {other.pid}, which is still running" in caplog.text
            write_runtime_file(path, theirs)
            remove_runtime_file(path, ours)  # not ours any more: left alone
            assert json.loads(path.read_text()) == theirs
        finally:
            other.kill()
    remove_runtime_file(path, theirs)
    assert not path.exists()
    assert [p.name for p in path.parent.iterdir()] == []  # no temporary file left behind


def test_a_link_at_the_runtime_file_path_is_replaced_not_followed(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    path = tmp_path / "runtime.json"
    path.symlink_to(target)
    write_runtime_file(path, {"pid": os.getpid()})
    assert not path.is_symlink() and target.read_text() == "keep me"


def test_an_explicit_runtime_file_that_cannot_be_written_stops_both_doors(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    line = refused(
        "--grpc-address=127.0.0.1:0",
        "--rest-address=127.0.0.1:0",
        f"--token-file={token_file(tmp_path)}",
        f"--runtime-file={blocker / 'runtime.json'}",
        "--log-level=warning",
    )
    assert (
        line
        == f"sockbroker: --runtime-file {blocker / 'runtime.json'}: cannot create its directory {blocker}: file exists"
    )


# -- busy and unusable addresses ----------------------------------------------------------------------


def test_a_second_daemon_on_the_same_grpc_port_is_refused(tmp_path: pathlib.Path, serving: list[Serving]) -> None:
    first = start(
        serving, tmp_path, "--grpc-address=127.0.0.1:0", "--rest-address=127.0.0.1:0", token=token_file(tmp_path)
    )
    address = first.runtime["grpc_address"]
    other = tmp_path / "other"
    other.mkdir()
    line = refused(f"--grpc-address={address}", "--rest-address=127.0.0.1:0", f"--token-file={token_file(other)}")
    assert line == f"sockbroker: --grpc-address {address}: address already in use"
    assert grpc_serving(address)  # the first daemon keeps its port, alone
    assert first.stop() == 0


@pytest.mark.parametrize("setting", ["--grpc-address", "--rest-address"])
def test_a_busy_address_is_one_line_naming_the_setting(tmp_path: pathlib.Path, setting: str) -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as gRPC's own listeners did
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        other = "--rest-address" if setting == "--grpc-address" else "--grpc-address"
        line = refused(f"{setting}={address}", f"{other}=127.0.0.1:0", f"--token-file={token_file(tmp_path)}")
    assert line == f"sockbroker: {setting} {address}: address already in use"


def test_an_address_not_on_this_machine_is_one_line(tmp_path: pathlib.Path) -> None:
    line = refused(  # TEST-NET-2: binding it sends nothing anywhere; it is simply not ours
        "--grpc-address=198.51.100.7:0",
        "--rest-address=127.0.0.1:0",
        "--allow-insecure-remote",
        f"--token-file={token_file(tmp_path)}",
    )
    assert line == "sockbroker: --grpc-address 198.51.100.7:0: cannot assign requested address"
    with pytest.raises(StartupError) as refusal:  # the REST door binds through the same function
        bind_tcp("--rest-address", "198.51.100.7", 0)
    assert str(refusal.value) == "--rest-address 198.51.100.7:0: cannot assign requested address"


# -- the token file -----------------------------------------------------------------------------------
# The rules are checked in-process (files.load_or_create_token); one refusal goes through the whole CLI.


def test_a_dangling_link_at_the_token_path_creates_nothing_and_exits_2(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "elsewhere" / "planted"
    target.parent.mkdir()
    link = tmp_path / "token"
    link.symlink_to(target)
    line = refused("--grpc-address=127.0.0.1:0", "--rest-address=127.0.0.1:0", f"--token-file={link}")
    assert line == (
        f"sockbroker: --token-file {link}: is a symbolic link; "
        "the daemon does not follow links here (give the real path)"
    )
    assert not target.exists()


def test_a_link_to_an_existing_file_is_refused_and_the_file_untouched(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "precious"
    target.write_text("")  # empty: the old daemon wrote a new token into it
    target.chmod(0o600)
    link = tmp_path / "token"
    link.symlink_to(target)
    with pytest.raises(StartupError, match="is a symbolic link"):
        load_or_create_token(link)
    assert target.read_text() == ""


def test_a_new_token_file_is_private_and_strong(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "new" / "token"
    token = load_or_create_token(path)
    assert len(token) == 43 and path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(path) == token  # read back, never rewritten


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        ("x\n", 0o600, "the token has 1 characters, fewer than 32"),
        ("y" * 31, 0o600, "the token has 31 characters, fewer than 32"),
        ("", 0o600, "is empty"),
        ("two words " * 5, 0o600, "spaces or control characters"),
        ("é" * 40, 0o600, "non-ASCII"),
        ("z" * 5000, 0o600, "larger than 4096 bytes"),
        (GOOD_TOKEN, 0o666, "is writable by others (mode 0666)"),
        (GOOD_TOKEN, 0o620, "is writable by others (mode 0620)"),
        (GOOD_TOKEN, 0o644, "is readable by everyone (mode 0644)"),
    ],
)
def test_an_unsafe_or_weak_token_file_is_refused(tmp_path: pathlib.Path, content: str, mode: int, reason: str) -> None:
    path = token_file(tmp_path, content, mode)
    with pytest.raises(StartupError) as refusal:
        load_or_create_token(path)
    assert str(refusal.value).startswith(f"--token-file {path}: ") and reason in str(refusal.value)
    assert "\n" not in str(refusal.value)
    assert path.read_text() == content  # never rewritten


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_token_file_owned_by_another_user_is_refused(tmp_path: pathlib.Path) -> None:
    path = token_file(tmp_path)
    os.chown(path, 65534, 65534)
    with pytest.raises(StartupError, match="is owned by uid 65534, not by this daemon's user"):
        load_or_create_token(path)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_token_path_that_is_not_a_regular_file_is_refused(tmp_path: pathlib.Path, kind: str) -> None:
    path = tmp_path / "token"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path, 0o600)  # opening it must neither block nor read
    expected = "is a directory" if kind == "directory" else "is a named pipe"
    with pytest.raises(StartupError, match=f"{expected}, not a regular file"):
        load_or_create_token(path)


def test_a_group_readable_token_of_ours_is_accepted(tmp_path: pathlib.Path) -> None:
    """Group-readable is how a provisioned token is shared with clients (deploy/systemd): allowed."""
    assert load_or_create_token(token_file(tmp_path, mode=0o640)) == GOOD_TOKEN


# -- the Unix domain socket ---------------------------------------------------------------------------


def test_a_regular_file_at_the_unix_socket_path_is_kept_and_exits_2(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    line = refused(
        "--grpc-address=127.0.0.1:0",
        "--rest-address=127.0.0.1:0",
        f"--token-file={token_file(tmp_path)}",
        f"--grpc-unix-socket={path}",
    )
    assert line == (
        f"sockbroker: --grpc-unix-socket {path}: exists and is a regular file; remove it or choose another path"
    )
    assert path.read_text() == "keep me"


def test_a_link_at_the_unix_socket_path_is_refused(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep me")
    path = tmp_path / "g.sock"
    path.symlink_to(target)
    with pytest.raises(StartupError, match="exists and is a symbolic link"):
        prepare_unix_socket(path)
    assert path.is_symlink() and target.read_text() == "keep me"


def test_a_unix_socket_in_a_missing_directory_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "missing" / "g.sock"
    with pytest.raises(StartupError) as refusal:
        prepare_unix_socket(path)
    assert str(refusal.value) == f"--grpc-unix-socket {path}: directory {path.parent} does not exist"


def test_a_unix_socket_path_too_long_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StartupError, match="longer than 107 bytes"):
        prepare_unix_socket(tmp_path / ("s" * 120))


def test_a_live_unix_socket_is_not_taken_over(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "g.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(StartupError, match="a process is listening on it"):
            prepare_unix_socket(path)
        assert stat.S_ISSOCK(path.lstat().st_mode)


def test_only_a_dead_socket_of_ours_is_removed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "g.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))
    prepare_unix_socket(path)
    assert not path.exists()
    if os.geteuid() == 0:  # someone else's dead socket is theirs to remove
        with socket.socket(socket.AF_UNIX) as dead:
            dead.bind(str(path))
        os.chown(path, 65534, 65534, follow_symlinks=False)
        with pytest.raises(StartupError, match="is a socket owned by uid 65534"):
            prepare_unix_socket(path)
        assert path.exists()
