"""A policy change without a restart (issue 11): a real `sockbroker serve` process with a config
file of principals, edited and sent SIGHUP; and its audit log, one JSON line per event.

The daemon is a process of its own, stopped by its pid. The peers are sockets this test listens
on, on 127.0.0.1 and 127.0.0.2: nothing leaves the machine (DESIGN §10).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import test_serve
from test_serve import Serving, start, token_file

CONFIG = """
audit_log = "{audit}"

[principals.ci]
token_file = "{token}"

[principals.ci.policy]
allow_connect = {connect}
"""


#: The daemon processes a test started, killed by pid at its end (test_serve's fixture).
serving = test_serve.serving


def _write_config(path: pathlib.Path, tmp_path: pathlib.Path, connect: list[str]) -> None:
    text = CONFIG.format(audit=tmp_path / "audit.jsonl", token=tmp_path / "ci.token", connect=json.dumps(connect))
    path.write_text(text)


def _until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def peers() -> Iterator[dict[str, socket.socket]]:
    """A listening socket on 127.0.0.1 and one on 127.0.0.2, on one port each."""
    found = {}
    for host in ("127.0.0.1", "127.0.0.2"):
        sock = socket.socket()
        sock.bind((host, 0))
        sock.listen(8)
        found[host] = sock
    yield found
    for sock in found.values():
        sock.close()


def _audit(tmp_path: pathlib.Path) -> list[dict[str, object]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sighup_changes_a_principals_policy_and_keeps_its_handles(
    tmp_path: pathlib.Path, serving: list[Serving], peers: dict[str, socket.socket]
) -> None:
    config = tmp_path / "sockbroker.toml"
    _write_config(config, tmp_path, ["127.0.0.1/32"])
    daemon = start(
        serving,
        tmp_path,
        f"--config={config}",
        "--grpc-address=127.0.0.1:0",
        "--rest-address=127.0.0.1:0",
        token=token_file(tmp_path),
    )
    token = (tmp_path / "ci.token").read_text().strip()
    near, far = (peers[h].getsockname()[1] for h in ("127.0.0.1", "127.0.0.2"))
    with httpx.Client(base_url=daemon.runtime["rest_url"], headers={"Authorization": f"Bearer {token}"}) as rest:
        session = rest.post("/v1/sessions", json={"lease_seconds": 60}).json()["session"]
        rest.headers["Sockbroker-Session"] = session

        def connect(host: str, port: int) -> httpx.Response:
            return rest.post("/v1/tcp/connections", json={"hostname": host, "port": port})

        kept = connect("127.0.0.1", near)
        assert kept.status_code == 200, kept.text
        peer, _ = peers["127.0.0.1"].accept()
        denied = connect("127.0.0.2", far)
        assert denied.status_code == 403 and "[principals.ci.policy]" in denied.json()["detail"]

        _write_config(config, tmp_path, ["127.0.0.0/8"])
        os.kill(daemon.proc.pid, signal.SIGHUP)
        _until(lambda: connect("127.0.0.2", far).status_code == 200, "the new policy allows 127.0.0.2")
        written = rest.post(
            f"/v1/tcp/ports/{kept.json()['out']}/write", json={"data": "c3RpbGwgaGVyZQ==", "flush": True}
        )
        assert written.status_code == 200, written.text  # the connection made before the reload
        peer.settimeout(5)
        assert peer.recv(100) == b"still here"
        peer.close()

        config.write_text("[principals.ci]\nunknown_setting = 1\n")  # bad settings are refused whole
        os.kill(daemon.proc.pid, signal.SIGHUP)
        _until(lambda: "settings not reloaded" in daemon.log.read_text(), "the refusal is logged")
        assert connect("127.0.0.2", far).status_code == 200  # the policy before stays
        rest.delete(f"/v1/sessions/{session}")
    assert daemon.stop() == 0

    events = _audit(tmp_path)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "session.open" and events[0]["principal"] == "ci"
    deny = next(e for e in events if e["event"] == "policy.deny")
    assert deny["principal"] == "ci" and deny["session"] == session and deny["operation"] == "tcp-connect"
    assert deny["target"] == f"127.0.0.2:{far}" and "denied" in str(deny["reason"])
    assert "policy.reload" in kinds and "policy.reload_failed" in kinds
    assert kinds[-1] == "session.drop"
    assert all(isinstance(e["time"], str) and e["time"].endswith("+00:00") for e in events)
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600
