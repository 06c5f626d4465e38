"""The daemon's own ergonomics (DESIGN §6): API docs served without a CDN, gRPC server reflection
under v1 and v1alpha, JSON log lines, and a start-up line that says where the token and docs are."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb
from sockbroker.server import Daemon
from sockbroker_wire.paths import default_runtime_file

REFLECTION = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")


@pytest.fixture
async def http(daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.rest_port}") as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_every_asset_from_the_daemon_itself(http: httpx.AsyncClient, page: str) -> None:
    reply = await http.get(page)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    html = reply.text
    assert not re.search(r"https?://", html), "the page names a URL off the daemon"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith(".js") for a in assets)
    for asset in [*assets, "/openapi.json"]:
        loaded = await http.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 100, asset


async def test_an_unknown_docs_asset_is_a_typed_404(http: httpx.AsyncClient) -> None:
    reply = await http.get("/docs/assets/nothing.js")
    assert reply.status_code == 404 and reply.json()["kind"] == "not-found"


async def _reflect(target: str, service: str, request: rpb.ServerReflectionRequest) -> rpb.ServerReflectionResponse:
    """One request on the reflection stream of ``service`` (v1 and v1alpha share their messages)."""
    async with grpc.aio.insecure_channel(target) as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )
        call = info(iter([request]), timeout=10)
        replies = [reply async for reply in call]
    assert len(replies) == 1
    return replies[0]


@pytest.mark.parametrize("service", REFLECTION)
async def test_server_reflection_answers_under_both_names(daemon: Daemon, service: str) -> None:
    target = f"127.0.0.1:{daemon.grpc_port}"
    listed = await _reflect(target, service, rpb.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {"sockbroker.v1.Tcp", "sockbroker.v1.Udp", "sockbroker.admin.v1.Admin", "grpc.health.v1.Health"} <= names
    assert set(REFLECTION) <= names
    for symbol, package in [
        ("sockbroker.v1.Tcp", "sockbroker.v1"),
        ("sockbroker.admin.v1.Admin", "sockbroker.admin.v1"),
        (REFLECTION[0], "grpc.reflection.v1"),
    ]:
        found = await _reflect(target, service, rpb.ServerReflectionRequest(file_containing_symbol=symbol))
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in found.file_descriptor_response.file_descriptor_proto
        ]
        assert package in {f.package for f in files}, symbol


# ── a daemon process: its log ────────────────────────────────────────────────
@pytest.fixture
def daemon_process(tmp_path: pathlib.Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemon processes a test started; each is stopped by its pid afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _serve(
    started: list[subprocess.Popen[bytes]], tmp_path: pathlib.Path, *flags: str, fresh_token: bool = False
) -> tuple[dict[str, Any], str]:
    """Start ``sockbroker serve`` with ``flags``, stop it with SIGTERM; its runtime file and log.
    Its token file is made beforehand unless ``fresh_token`` (then the daemon writes one, and logs it)."""
    token = tmp_path / "run" / "token"
    if not fresh_token:
        token.parent.mkdir(mode=0o700)
        token.write_text("T" * 43 + "\n")
        token.chmod(0o600)
    log = tmp_path / "daemon.log"
    command = [sys.executable, "-m", "sockbroker", "serve", f"--token-file={token}", *flags]
    command += ["--grpc-address=127.0.0.1:0", "--rest-address=127.0.0.1:0"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    started.append(proc)
    runtime_file = default_runtime_file(token)
    deadline = time.monotonic() + 30
    runtime: dict[str, Any] = {}
    while runtime.get("pid") != proc.pid:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
        with contextlib.suppress(OSError, ValueError):  # not written yet, or being replaced
            runtime = json.loads(runtime_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    return runtime, log.read_text()


def test_the_start_line_says_where_the_token_and_the_docs_are(
    tmp_path: pathlib.Path, daemon_process: list[subprocess.Popen[bytes]]
) -> None:
    runtime, log = _serve(daemon_process, tmp_path)
    assert f"token file {runtime['token_file']}" in log
    assert f"API docs {runtime['rest_url']}/docs" in log


async def test_json_logs_are_one_object_a_line(
    tmp_path: pathlib.Path, daemon_process: list[subprocess.Popen[bytes]]
) -> None:
    runtime, log = await asyncio.to_thread(_serve, daemon_process, tmp_path, "--log-format=json")
    records = [json.loads(line) for line in log.splitlines()]  # every line is one JSON object
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    start = next(r for r in records if "serving gRPC" in r["message"])
    assert start["level"] == "INFO" and start["logger"] == "sockbroker.server"
    assert (start["rest_address"], start["token_file"], start["pid"]) == (
        runtime["rest_address"],
        runtime["token_file"],
        runtime["pid"],
    )


def test_json_logs_include_the_lines_before_the_daemon_runs(
    tmp_path: pathlib.Path, daemon_process: list[subprocess.Popen[bytes]]
) -> None:
    _, log = _serve(daemon_process, tmp_path, "--log-format=json", fresh_token=True)
    records = [json.loads(line) for line in log.splitlines()]
    assert any(r["message"].startswith("wrote a new token") for r in records)
