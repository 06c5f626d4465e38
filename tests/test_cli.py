"""The `sockbroker` console script as real processes.

`sockbroker serve`: defaults, token file, health, auth, signals. The client commands (`status`,
`token`, `connect`, `listen`, `udp send|receive`, `admin …`): each runs as a subprocess of the installed
console script against a real daemon process on loopback, found through its runtime file; every
wait is bounded and every process is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(tmp_path: pathlib.Path, *extra: str) -> tuple[subprocess.Popen[bytes], int, int, pathlib.Path]:
    grpc_port, rest_port = free_port(), free_port()
    token_file = tmp_path / "run" / "token"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sockbroker",
            "serve",
            f"--grpc-address=127.0.0.1:{grpc_port}",
            f"--rest-address=127.0.0.1:{rest_port}",
            f"--token-file={token_file}",
            *extra,
        ],
        env=ENV,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{rest_port}/healthz", timeout=1).status_code == 200:
                return proc, grpc_port, rest_port, token_file
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert proc.stderr is not None
    with proc.stderr:
        raise AssertionError(f"daemon did not start: {proc.stderr.read().decode()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def test_serve_writes_a_private_token_serves_health_and_stops_on_sigterm(tmp_path: pathlib.Path) -> None:
    proc, grpc_port, rest_port, token_file = start(tmp_path)
    try:
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        base = f"http://127.0.0.1:{rest_port}"
        assert httpx.post(f"{base}/v1/sessions", json={}).status_code == 401
        opened = httpx.post(f"{base}/v1/sessions", json={}, headers={"Authorization": f"Bearer {token}"})
        assert opened.status_code == 200 and opened.json()["session"].startswith("ses_")
        assert httpx.get(f"{base}/openapi.json").json()["paths"]["/v1/tcp/listeners"]
        assert httpx.get(f"{base}/docs").status_code == 200
        assert "sockbroker_calls_total" in httpx.get(f"{base}/metrics").text
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="sockbroker.v1.Tcp")
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        stop(proc)


def test_sigint_drops_sessions_and_closes_their_sockets(tmp_path: pathlib.Path) -> None:
    proc, _, rest_port, token_file = start(tmp_path)
    try:
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        base = f"http://127.0.0.1:{rest_port}"
        headers["Sockbroker-Session"] = httpx.post(f"{base}/v1/sessions", json={}, headers=headers).json()["session"]
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            assert (
                httpx.post(
                    f"{base}/v1/tcp/connections", json={"hostname": "127.0.0.1", "port": port}, headers=headers
                ).status_code
                == 200
            )
            peer, _ = server.accept()
            with peer:
                peer.settimeout(10)
                proc.send_signal(signal.SIGINT)
                assert peer.recv(1) == b""  # the daemon closed its end while stopping
        assert proc.wait(timeout=10) == 0
    finally:
        stop(proc)


@pytest.mark.parametrize("flag", ["--rest-address=0.0.0.0:0", "--grpc-address=0.0.0.0:0", "--proxy-address=0.0.0.0:0"])
def test_serve_refuses_a_remote_door_without_tls(tmp_path: pathlib.Path, flag: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sockbroker", "serve", flag, f"--token-file={tmp_path / 't'}"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "refusing to listen off loopback without TLS" in result.stderr


def test_every_setting_is_in_help() -> None:
    from sockbroker.config import FILE_ONLY, Settings

    result = subprocess.run(
        [sys.executable, "-m", "sockbroker", "serve", "--help"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for name in Settings.model_fields:
        assert (f"[{name}.NAME]" if name in FILE_ONLY else "--" + name.replace("_", "-")) in result.stdout


def test_config_file_and_environment(tmp_path: pathlib.Path) -> None:
    from sockbroker.config import Settings

    config = tmp_path / "sockbroker.toml"
    config.write_text('lease_seconds = 7.5\n[policy]\nallow_connect = ["10.0.0.0/8"]\n')
    settings = Settings.load(config)
    assert settings.lease_seconds == 7.5 and settings.allow_connect == ["10.0.0.0/8"]
    os.environ["SOCKBROKER_LEASE_SECONDS"] = "9"
    try:
        assert Settings.load(config).lease_seconds == 9  # the environment wins over the file
        assert Settings.load(config, lease_seconds=3).lease_seconds == 3  # and flags over both
    finally:
        del os.environ["SOCKBROKER_LEASE_SECONDS"]


# ═════════════════════════════ the client commands ═════════════════════════════

SOCKBROKER = str(pathlib.Path(sys.executable).with_name("sockbroker"))
#: Longest any one command may take here.
WAIT = 60.0
ONE_MIB = 1024 * 1024


class Daemon:
    """A `sockbroker serve` process on port 0 of 127.0.0.1 that may connect to 127.0.0.1 only."""

    def __init__(self, base: pathlib.Path) -> None:
        self.token_file = base / "token"
        self.runtime_file = base / "runtime.json"
        self.proc = subprocess.Popen(
            [
                SOCKBROKER,
                "serve",
                "--grpc-address=127.0.0.1:0",
                "--rest-address=127.0.0.1:0",
                f"--token-file={self.token_file}",
                f"--runtime-file={self.runtime_file}",
                "--allow-connect",
                "127.0.0.1/32",
            ],
            env=ENV,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while not self.runtime_file.exists() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.runtime_file.exists():
            stop(self.proc)
            raise AssertionError("the daemon did not write its runtime file")
        self.runtime = json.loads(self.runtime_file.read_text())

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a CLI process that finds this daemon the way a user's does."""
        env = {k: v for k, v in ENV.items() if not k.startswith("SOCKBROKER_")}
        env.update(SOCKBROKER_TOKEN_FILE=str(self.token_file), SOCKBROKER_RUNTIME_FILE=str(self.runtime_file))
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("served"))
    try:
        yield daemon
    finally:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(timeout=10)
        finally:
            stop(daemon.proc)


def cli(*args: str, env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([SOCKBROKER, *args], input=stdin, env=env, capture_output=True, timeout=WAIT, check=False)


def one_line_error(result: subprocess.CompletedProcess[bytes], prefix: str) -> str:
    """The failed command's stderr, checked to be one line (no traceback) starting with ``prefix``."""
    assert result.returncode == 1, result
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    return lines[0]


class Background:
    """A CLI process left running: stdin and stdout are files, stderr is polled for a line."""

    def __init__(self, args: list[str], env: dict[str, str], base: pathlib.Path, stdin: bytes = b"") -> None:
        self.stdin, self.stdout, self.stderr = base / "in", base / "out", base / "err"
        self.stdin.write_bytes(stdin)
        with self.stdin.open("rb") as fin, self.stdout.open("wb") as fout, self.stderr.open("wb") as ferr:
            self.proc = subprocess.Popen([SOCKBROKER, *args], stdin=fin, stdout=fout, stderr=ferr, env=env)

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = re.search(pattern, self.stderr.read_text())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        stop(self.proc)
        raise AssertionError(f"no {pattern!r} on stderr: {self.stderr.read_text()!r}")

    def finish(self) -> bytes:
        try:
            assert self.proc.wait(timeout=WAIT) == 0, self.stderr.read_text()
        finally:
            stop(self.proc)
        return self.stdout.read_bytes()


@pytest.mark.parametrize(
    ("door", "via"), [("grpc", "stream"), ("rest", "stream"), ("grpc", "handoff"), ("rest", "relay"), ("grpc", "auto")]
)
def test_listen_and_connect_move_a_mebibyte_each_way_with_half_close(
    served: Daemon, tmp_path: pathlib.Path, door: str, via: str
) -> None:
    """Each side sends its stdin, then half-closes; each exits only when it has read the other's EOF.
    ``--via handoff`` and ``relay`` fail rather than fall back: passing, they carried the bytes."""
    url = served.runtime["grpc_address"] if door == "grpc" else served.runtime["rest_url"]
    env = served.env(SOCKBROKER_URL=url)
    to_connector, to_listener = os.urandom(ONE_MIB), os.urandom(ONE_MIB)
    (tmp_path / "l").mkdir()
    (tmp_path / "c").mkdir()
    listener = Background(["listen", "0", "--via", via], env, tmp_path / "l", stdin=to_connector)
    port = listener.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1)
    connector = Background(["connect", "127.0.0.1", port, "--via", via], env, tmp_path / "c", stdin=to_listener)
    assert connector.finish() == to_connector
    assert listener.finish() == to_listener
    assert re.search(r"connection from 127\.0\.0\.1:\d+", listener.stderr.read_text())


def test_connect_to_a_plain_listener_carries_the_half_close(served: Daemon) -> None:
    """The peer reads until EOF (which only stdin's end can cause), then answers and closes."""
    request = os.urandom(300_000)
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(WAIT)
        answered: list[bytes] = []

        def serve_one() -> None:
            peer, _ = server.accept()
            with peer:
                peer.settimeout(WAIT)
                received = b""
                while chunk := peer.recv(65536):
                    received += chunk
                answered.append(received)
                peer.sendall(b"got %d bytes" % len(received))

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        result = cli("connect", "127.0.0.1", str(server.getsockname()[1]), env=served.env(), stdin=request)
        thread.join(WAIT)
    assert result.returncode == 0, result.stderr
    assert answered == [request]
    assert result.stdout == b"got 300000 bytes"


def test_udp_send_and_receive(served: Daemon, tmp_path: pathlib.Path) -> None:
    env = served.env()
    receiver = Background(["udp", "receive", "0", "--count", "2", "--timeout", "30", "--show-sender"], env, tmp_path)
    port = receiver.wait_for(r"listening on udp 127\.0\.0\.1:(\d+)").group(1)
    binary = bytes(range(256)) * 4
    assert cli("udp", "send", "127.0.0.1", port, "first", env=env).returncode == 0
    sent = cli("udp", "send", "127.0.0.1", port, env=env, stdin=binary)  # no DATA: stdin, binary as it is
    assert sent.returncode == 0, sent.stderr
    assert receiver.finish() == b"first" + binary
    assert re.findall(r"from 127\.0\.0\.1:\d+, (\d+) bytes", receiver.stderr.read_text()) == ["5", "1024"]


def test_udp_receive_ends_at_its_timeout(served: Daemon) -> None:
    started = time.monotonic()
    result = cli("udp", "receive", "0", "--count", "1", "--timeout", "0.3", env=served.env())
    assert time.monotonic() - started < WAIT
    assert result.returncode == 1 and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith("listening on udp 127.0.0.1:")
    assert lines[1:] == ["sockbroker udp receive: 0 of 1 datagrams within 0.3 s"]


def test_status_of_a_running_daemon(served: Daemon) -> None:
    token = served.token_file.read_text().strip()
    session = httpx.post(
        f"{served.runtime['rest_url']}/v1/sessions", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    assert session.status_code == 200
    result = cli("status", "--json", env=served.env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "serving" and report["pid"] == served.proc.pid
    assert report["grpc_address"] == served.runtime["grpc_address"]
    assert report["rest_url"] == served.runtime["rest_url"]
    assert report["token_file"] == str(served.token_file)
    assert report["sessions"] >= 1 and report["handles"] >= 1  # the session above and its root custodian
    text = cli("status", env=served.env())
    assert text.returncode == 0
    assert f"pid:          {served.proc.pid}" in text.stdout.decode()


def test_status_without_a_daemon_is_one_line(tmp_path: pathlib.Path) -> None:
    port = free_port()
    env = {k: v for k, v in ENV.items() if not k.startswith("SOCKBROKER_")}
    env.update(SOCKBROKER_RUNTIME_FILE=str(tmp_path / "absent.json"), SOCKBROKER_URL=f"http://127.0.0.1:{port}")
    result = cli("status", env=env)
    one_line_error(result, f"sockbroker status: no daemon at http://127.0.0.1:{port}: start it with `sockbroker serve`")
    connect = cli("connect", "127.0.0.1", "9", env=dict(env, SOCKBROKER_TOKEN="x" * 43))
    one_line_error(
        connect, f"sockbroker connect: no daemon at http://127.0.0.1:{port}: start it with `sockbroker serve`"
    )


def test_token_prints_the_path_or_the_token(served: Daemon, tmp_path: pathlib.Path) -> None:
    path = cli("token", env=served.env())
    assert (path.returncode, path.stdout.decode()) == (0, f"{served.token_file}\n")
    shown = cli("token", "--show", env=served.env())
    assert (shown.returncode, shown.stdout.decode().strip()) == (0, served.token_file.read_text().strip())
    missing = cli("token", "--show", "--token-file", str(tmp_path / "absent"), env=served.env())
    line = one_line_error(missing, f"sockbroker token: token file {tmp_path / 'absent'}: no such file or directory")
    assert "`sockbroker serve`" in line and line.endswith("[unauthenticated, errno 2 (posix)]")


def test_a_denied_target_is_a_typed_one_line_error(served: Daemon) -> None:
    result = cli("connect", "127.0.0.2", "9", env=served.env())  # the daemon may connect to 127.0.0.1 only
    line = one_line_error(result, "sockbroker connect: ")
    assert line.endswith("[permission-denied]") and "127.0.0.2" in line
    refused = cli("connect", "127.0.0.1", str(free_port()), env=served.env())
    line = one_line_error(refused, "sockbroker connect: tcp-connect: connection failed; ")
    assert line.endswith("[exn:fail:network:errno, errno 111 (posix)]")


def test_admin_lists_shows_kills_and_watches_sessions(served: Daemon, tmp_path: pathlib.Path) -> None:
    env = served.env()
    watcher = Background(["admin", "events", "--count", "3"], env, tmp_path)
    deadline = time.monotonic() + WAIT
    while b"events.watch" not in watcher.stdout.read_bytes():  # the watch has begun
        assert watcher.proc.poll() is None and time.monotonic() < deadline, watcher.stderr.read_text()
        time.sleep(0.05)
    base = served.runtime["rest_url"]
    headers = {"Authorization": f"Bearer {served.token_file.read_text().strip()}"}
    session = httpx.post(f"{base}/v1/sessions", json={}, headers=headers).json()["session"]
    headers["Sockbroker-Session"] = session
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(WAIT)
        port = server.getsockname()[1]
        connection = httpx.post(
            f"{base}/v1/tcp/connections", json={"hostname": "127.0.0.1", "port": port}, headers=headers
        ).json()
        peer, _ = server.accept()
        with peer:
            peer.settimeout(WAIT)
            listed = cli("admin", "sessions", env=env)
            assert listed.returncode == 0, listed.stderr
            lines = listed.stdout.decode().splitlines()
            header = ["SESSION", "PRINCIPAL", "STATE", "AGE", "HANDLES", "BYTES IN", "BYTES OUT"]
            assert re.split(r"\s{2,}", lines[0]) == header
            row = next(line.split() for line in lines[1:] if line.startswith(session))
            assert row[1:3] == ["default", "leased"] and row[4:] == ["3", "0", "0"]
            as_json = json.loads(cli("admin", "sessions", "--json", env=env).stdout)
            assert {s["session"]: s["handles"] for s in as_json}[session] == 3
            shown = cli("admin", "show", session, env=env)
            assert shown.returncode == 0, shown.stderr
            text = shown.stdout.decode()
            assert f"session {session} of default: leased" in text
            address = rf"127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{port}"
            assert re.search(rf"{connection['in']}  tcp-input-port  open  {address}  in 0 B, out 0 B  age \d+s", text)
            assert json.loads(cli("admin", "show", session, "--json", env=env).stdout)["summary"]["handles"] == 3
            killed = cli("admin", "kill-handle", connection["out"], "--reason", "cli test", env=env)
            assert killed.returncode == 0, killed.stderr
            assert killed.stdout.decode() == f"killed {connection['out']} (session {session}): 2 handles closed\n"
            assert peer.recv(1) == b""  # the peer saw the daemon close the connection
    killed = cli("admin", "kill", session, "--json", env=env)
    assert json.loads(killed.stdout) == {"session": session, "closed": 1}
    events = [json.loads(line) for line in watcher.finish().decode().splitlines()]
    assert [(e["event"], e["session"]) for e in events] == [
        ("events.watch", ""),
        ("session.open", session),
        ("admin.kill_handle", session),
        ("admin.kill_session", session),
    ]
    assert events[2]["target"] == connection["out"] and events[2]["reason"] == "cli test"
    gone = cli("admin", "kill", session, env=env)
    assert one_line_error(gone, "sockbroker admin kill: admin-kill-session: no such session; ").endswith("[not-found]")


def test_ctrl_c_ends_a_command_quietly_with_130(served: Daemon, tmp_path: pathlib.Path) -> None:
    waiting = Background(["listen", "0"], served.env(), tmp_path)
    waiting.wait_for(r"listening on 127\.0\.0\.1:\d+")
    waiting.proc.send_signal(signal.SIGINT)
    try:
        assert waiting.proc.wait(timeout=WAIT) == 130
    finally:
        stop(waiting.proc)
    assert len(waiting.stderr.read_text().splitlines()) == 1  # the "listening" line: no traceback


@pytest.mark.parametrize(
    "argv",
    [
        ["connect", "127.0.0.1"],
        ["connect", "127.0.0.1", "70000"],
        ["connect", "127.0.0.1", "http"],
        ["listen", "-1"],
        ["udp"],
        ["udp", "receive", "0", "--count", "0"],
        ["udp", "receive", "0", "--timeout", "-1"],
        ["status", "--url", "127.0.0.1:50051"],
        ["admin"],
        ["admin", "show"],
        ["admin", "events", "--count", "0"],
        ["frobnicate"],
    ],
    ids=" ".join,
)
def test_bad_arguments_are_a_usage_error(argv: list[str], tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in ENV.items() if not k.startswith("SOCKBROKER_")}
    result = cli(*argv, env=dict(env, SOCKBROKER_RUNTIME_FILE=str(tmp_path / "absent.json")))
    assert result.returncode == 2
    assert result.stderr.decode().startswith("usage: sockbroker")


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["token"],
        ["connect"],
        ["listen"],
        ["udp", "send"],
        ["udp", "receive"],
        ["admin", "sessions"],
        ["admin", "show"],
        ["admin", "kill"],
        ["admin", "kill-handle"],
        ["admin", "events"],
        [],
    ],
)
def test_every_command_s_help_has_examples(command: list[str]) -> None:
    result = subprocess.run([SOCKBROKER, *command, "--help"], env=ENV, capture_output=True, timeout=WAIT, check=True)
    assert "examples:\n  sockbroker" in result.stdout.decode()
