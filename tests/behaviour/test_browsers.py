"""Browsers and websockify clients (DESIGN §9): the bearer token as a WebSocket subprotocol, and
the one-URL relay ``WS /v1/tcp/relay?hostname=H&port=P``.

Each test speaks to a real daemon with the ``websockets`` client, as a browser or noVNC would:
no sockbroker client library, TCP peers of the test's own on loopback.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import pathlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from helpers import eventually, serving
from sockbroker.server import Daemon
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

MIB = 1 << 20


@pytest.fixture
async def token(token_file: pathlib.Path) -> str:
    return (await asyncio.to_thread(token_file.read_text)).strip()


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    """A TCP echo server on 127.0.0.1: the relay's peer. Yields its port."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def _offer(*names: str) -> list[Subprotocol]:
    return [Subprotocol(name) for name in names]


def _url(daemon: Daemon, path: str) -> str:
    return f"ws://127.0.0.1:{daemon.rest_port}{path}"


def _relay(daemon: Daemon, port: int, *, host: str = "127.0.0.1", **options: Any) -> Any:
    return websockets.connect(_url(daemon, f"/v1/tcp/relay?hostname={host}&port={port}"), max_size=None, **options)


async def _open_session(daemon: Daemon, token: str) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.rest_port}") as http:
        opened = await http.post("/v1/sessions", json={}, headers={"Authorization": f"Bearer {token}"})
    session: str = opened.json()["session"]
    return session


async def _refusal(connecting: Any) -> tuple[int, dict[str, Any]]:
    """The HTTP status and problem body of a WebSocket handshake the daemon refused."""
    with pytest.raises(InvalidStatus) as info:
        async with connecting:
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body)


# ── the token as a subprotocol ───────────────────────────────────────────────
async def test_a_bearer_subprotocol_authenticates_and_another_offered_one_is_answered(
    daemon: Daemon, token: str
) -> None:
    session = await _open_session(daemon, token)
    offered = _offer("sockbroker.v1", f"bearer.{token}")
    async with websockets.connect(_url(daemon, f"/v1/sessions/{session}/attach"), subprotocols=offered) as ws:
        assert ws.subprotocol == "sockbroker.v1"  # the token is not echoed when it need not be
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["event"] == "attached"
        await ws.send(json.dumps({"detach": True}))
    await eventually(lambda: session in daemon.broker.sessions)  # detached on purpose: it lives on its lease


async def test_a_bearer_subprotocol_offered_alone_is_answered_so_a_browser_accepts_the_handshake(
    daemon: Daemon, token: str
) -> None:
    session = await _open_session(daemon, token)
    async with websockets.connect(
        _url(daemon, f"/v1/sessions/{session}/attach"), subprotocols=_offer(f"bearer.{token}")
    ) as ws:
        assert ws.subprotocol == f"bearer.{token}"
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["event"] == "attached"


async def test_a_wrong_bearer_subprotocol_is_unauthenticated(daemon: Daemon, token: str) -> None:
    session = await _open_session(daemon, token)
    url = _url(daemon, f"/v1/sessions/{session}/attach")
    async with websockets.connect(url, subprotocols=_offer("sockbroker.v1", "bearer.not-the-token")) as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["error"]["kind"] == "unauthenticated"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4401


async def test_the_origin_check_still_applies_to_a_subprotocol_token(daemon: Daemon, token: str) -> None:
    status, problem = await _refusal(
        _relay(daemon, 9, origin="http://evil.example", subprotocols=_offer("binary", f"bearer.{token}"))
    )
    assert (status, problem["kind"]) == (403, "permission-denied")
    assert "Origin" in problem["detail"]


async def test_a_subprotocol_token_authenticates_the_connection_past_the_unauthenticated_timeout(
    tmp_path: pathlib.Path, echo: int
) -> None:
    async with serving(tmp_path / "token", unauthenticated_timeout=0.3) as daemon:
        token = (await asyncio.to_thread((tmp_path / "token").read_text)).strip()
        async with _relay(daemon, echo, subprotocols=_offer("binary", f"bearer.{token}")) as ws:
            await asyncio.sleep(0.8)  # the connection would be closed by now were it not authenticated
            await ws.send(b"still here")
            assert await asyncio.wait_for(ws.recv(), 5) == b"still here"


# ── the relay ────────────────────────────────────────────────────────────────
async def test_the_relay_carries_a_mebibyte_both_ways(daemon: Daemon, token: str, echo: int) -> None:
    payload = os.urandom(MIB)
    async with _relay(daemon, echo, subprotocols=_offer("binary", f"bearer.{token}")) as ws:
        assert ws.subprotocol == "binary"  # websockify clients ask for it

        async def send() -> None:
            for start in range(0, MIB, 65536):
                await ws.send(payload[start : start + 65536])

        sending = asyncio.ensure_future(send())
        received = bytearray()
        async with asyncio.timeout(20):
            while len(received) < MIB:
                received += await ws.recv()
        await sending
    assert received == payload


async def test_the_peers_end_of_file_closes_the_websocket_after_its_data(daemon: Daemon, token: str) -> None:
    async def say_goodbye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"goodbye")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(say_goodbye, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        sessions = len(daemon.broker.sessions)
        async with _relay(daemon, port, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            assert await asyncio.wait_for(ws.recv(), 5) == b"goodbye"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1000
        await eventually(lambda: len(daemon.broker.sessions) == sessions)
    finally:
        server.close()
        await server.wait_closed()


async def test_closing_the_websocket_drops_the_session_and_the_connection(daemon: Daemon, token: str) -> None:
    peers: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()
    writers: list[asyncio.StreamWriter] = []

    def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        peers.put_nowait(reader)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        sessions = len(daemon.broker.sessions)
        async with _relay(daemon, port, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            peer = await asyncio.wait_for(peers.get(), 5)
            assert len(daemon.broker.sessions) == sessions + 1  # the relay's own, holding the connection
            await ws.send(b"hello")
            assert await asyncio.wait_for(peer.readexactly(5), 5) == b"hello"
        await eventually(lambda: len(daemon.broker.sessions) == sessions)
        assert await asyncio.wait_for(peer.read(), 5) == b""  # the connection was closed with it
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_relay_the_policy_denies_is_refused_before_the_handshake(daemon: Daemon, token: str) -> None:
    sessions = len(daemon.broker.sessions)
    status, problem = await _refusal(
        _relay(daemon, 80, host="0.0.0.0", additional_headers={"Authorization": f"Bearer {token}"})
    )
    assert (status, problem["kind"]) == (403, "permission-denied")
    assert "not in --allow-connect" in problem["detail"]
    assert len(daemon.broker.sessions) == sessions  # the session it opened was dropped


@pytest.mark.parametrize(
    ("query", "status", "kind"),
    [
        ("hostname=127.0.0.1", 400, "exn:fail:contract"),
        ("hostname=127.0.0.1&port=eighty", 400, "exn:fail:contract"),
        ("hostname=127.0.0.1&port=70000", 400, "exn:fail:contract"),
        ("hostname=127.0.0.1&port=1&extra=1", 400, "exn:fail:contract"),
    ],
)
async def test_a_relay_with_bad_arguments_is_a_contract_error(
    daemon: Daemon, token: str, query: str, status: int, kind: str
) -> None:
    url = _url(daemon, f"/v1/tcp/relay?{query}")
    refusal = await _refusal(websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}))
    assert (refusal[0], refusal[1]["kind"]) == (status, kind)


async def test_a_relay_without_a_token_is_unauthenticated(daemon: Daemon, echo: int) -> None:
    sessions = len(daemon.broker.sessions)
    for offered in (None, _offer("binary", "bearer.not-the-token")):
        status, problem = await _refusal(_relay(daemon, echo, subprotocols=offered))
        assert (status, problem["kind"]) == (401, "unauthenticated")
    assert len(daemon.broker.sessions) == sessions


async def test_a_relay_whose_connection_fails_is_a_502_before_the_handshake(daemon: Daemon, token: str) -> None:
    with socket.socket() as closed:  # a port nobody listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        status, problem = await _refusal(_relay(daemon, port, additional_headers={"Authorization": f"Bearer {token}"}))
    assert (status, problem["kind"], problem["errno"]) == (502, "exn:fail:network:errno", errno.ECONNREFUSED)
