"""Sessions: attachments, leases, and the central guarantee that no socket outlives its session."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import sys
from typing import Any

import grpc
import httpx
import pytest
import websockets
from helpers import PeerServer, eventually, fd_count, read_until_eof, target
from sockbroker.server import Daemon
from sockbroker_client import NotFoundError
from sockbroker_wire.v1 import broker_pb2_grpc as rpc

HOLDER = pathlib.Path(__file__).with_name("holder.py")


async def spawn_holder(
    daemon: Daemon, door: str, token_file: pathlib.Path, port: int, count: int, *, attach: bool, lease: float
) -> tuple[asyncio.subprocess.Process, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HOLDER),
        target(daemon, door),
        door,
        str(token_file),
        str(port),
        str(count),
        "1" if attach else "0",
        str(lease),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode()
    assert line.startswith("ready"), line
    return proc, line.split()[1]


@pytest.mark.parametrize("door_name", ["grpc", "rest"])
async def test_a_killed_client_loses_every_socket_within_a_second(
    daemon: Daemon, token_file: pathlib.Path, door_name: str
) -> None:
    peer = PeerServer()
    await peer.start()
    baseline = fd_count()
    proc, session = await spawn_holder(daemon, door_name, token_file, peer.port, 100, attach=True, lease=600)
    try:
        peers = [await peer.next() for _ in range(100)]
        assert fd_count() >= baseline + 200  # the daemon's 100 sockets and our 100 peers
        proc.send_signal(signal.SIGKILL)
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        await eventually(lambda: fd_count() <= baseline + 100 + 2, within=1.0, step=0.005)
        assert loop.time() - killed_at < 1.0
        results = await asyncio.gather(*(read_until_eof(reader, within=1.0) for reader, _ in peers))
        assert results == [b""] * 100
        assert session not in daemon.broker.sessions
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await peer.close()


@pytest.mark.parametrize("door_name", ["grpc", "rest"])
async def test_lease_expiry_without_attachment_drops_the_session(
    daemon: Daemon, token_file: pathlib.Path, door_name: str
) -> None:
    peer = PeerServer()
    await peer.start()
    baseline = fd_count()
    proc, session = await spawn_holder(daemon, door_name, token_file, peer.port, 10, attach=False, lease=1.0)
    try:
        peers = [await peer.next() for _ in range(10)]
        proc.send_signal(signal.SIGKILL)  # no attachment: only the lease holds the session now
        await eventually(lambda: session not in daemon.broker.sessions, within=2.5)
        results = await asyncio.gather(*(read_until_eof(reader, within=1.0) for reader, _ in peers))
        assert results == [b""] * 10
        await eventually(lambda: fd_count() <= baseline + 10 + 2, within=1.0)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await peer.close()


async def test_keepalive_renews_the_lease(door: Any) -> None:
    broker = await door(attach=False, lease_seconds=1.0)
    for _ in range(4):
        await asyncio.sleep(0.4)
        assert await broker.keep_alive() == 1.0
    assert await broker.describe(broker.custodian) is not None


async def test_any_call_renews_the_lease(door: Any) -> None:
    broker = await door(attach=False, lease_seconds=1.0)
    for _ in range(4):
        await asyncio.sleep(0.4)
        await broker.describe_custodian(broker.custodian)


async def test_an_attachment_holds_the_session_past_its_lease(door: Any) -> None:
    broker = await door(attach=True, lease_seconds=1.0)
    await asyncio.sleep(1.6)
    assert (await broker.describe_custodian(broker.custodian))["shut_down"] is False


async def test_detaching_leaves_the_lease_in_charge(door: Any) -> None:
    broker = await door(attach=True, lease_seconds=1.0)
    await broker.detach()
    await broker.keep_alive()
    await asyncio.sleep(2.2)
    with pytest.raises(NotFoundError):
        await broker.keep_alive()


async def test_closing_the_session_closes_its_handles(door: Any) -> None:
    broker = await door()
    other = await door()
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    await broker.call("Sessions.Close")
    with pytest.raises(NotFoundError) as info:
        await broker.describe(listener)
    assert "no such session" in info.value.message
    assert (await other.describe_custodian(other.custodian))["shut_down"] is False


@pytest.mark.parametrize("door_name", ["grpc", "rest"])
async def test_an_attachment_ends_when_its_session_drops_elsewhere(
    daemon: Daemon, token_file: pathlib.Path, door_name: str
) -> None:
    """A session dropped by another call (here its root custodian's shutdown, as an admin's kill or
    a delegation's end would) ends its attachment at once with ``not-found`` and the reason."""
    token = token_file.read_text().strip()  # noqa: ASYNC240 - a few bytes, once
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=target(daemon, "rest"), headers=auth) as rest:
        opened = (await rest.post("/v1/sessions", json={})).json()
        session, root = opened["session"], opened["custodian"]

        async def shut_down_root() -> None:
            await asyncio.sleep(0.1)
            await rest.delete(f"/v1/custodians/{root}", headers={"Sockbroker-Session": session})

        if door_name == "grpc":
            async with grpc.aio.insecure_channel(target(daemon, "grpc")) as channel:
                metadata = (("authorization", f"Bearer {token}"), ("sockbroker-session", session))
                call = rpc.SessionsStub(channel).Attach(metadata=metadata)
                assert (await call.read()).event == "attached"
                killer = asyncio.ensure_future(shut_down_root())
                async with asyncio.timeout(5):
                    with pytest.raises(grpc.aio.AioRpcError) as ended:
                        await call.read()
                assert ended.value.code() is grpc.StatusCode.NOT_FOUND
                assert "root custodian shut down" in (ended.value.details() or "")
        else:
            url = target(daemon, "rest").replace("http", "ws", 1) + f"/v1/sessions/{session}/attach"
            async with websockets.connect(url, additional_headers=auth) as ws:
                assert json.loads(await ws.recv())["event"] == "attached"
                killer = asyncio.ensure_future(shut_down_root())
                async with asyncio.timeout(5):
                    error = json.loads(await ws.recv())["error"]
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await ws.recv()
                assert error["kind"] == "not-found" and "root custodian shut down" in error["detail"]
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
        await killer
