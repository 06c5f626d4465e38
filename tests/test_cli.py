"""`sockbroker serve` as a real process: defaults, token file, health, auth, signals."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys
import time

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


@pytest.mark.parametrize("flag", ["--rest-address=0.0.0.0:0", "--grpc-address=0.0.0.0:0"])
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
    from sockbroker.config import Settings

    result = subprocess.run(
        [sys.executable, "-m", "sockbroker", "serve", "--help"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in result.stdout


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
