"""The REST door's WebSocket frames, spoken by a client written from docs/wire.md alone.

No client library here: httpx for the unary routes, a bare WebSocket, JSON text frames and the
generated ``DatagramBatch`` for the binary ones — what a client in another language would do.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from sockbroker.server import Daemon
from sockbroker_wire.errors import from_ws_error_frame
from sockbroker_wire.v1 import broker_pb2 as pb


@pytest.fixture
async def rest(daemon: Daemon, token_file: pathlib.Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    token = (await asyncio.to_thread(token_file.read_text)).strip()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.rest_port}", headers=headers) as http:
        opened = (await http.post("/v1/sessions", json={})).json()
        headers = {**headers, "Sockbroker-Session": opened["session"]}
        try:
            yield http, headers
        finally:
            await http.delete(f"/v1/sessions/{opened['session']}", headers=headers)


async def _bound_udp(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, int]:
    udp = (await http.post("/v1/udp/sockets", json={}, headers=headers)).json()["udp"]
    bound = await http.post(f"/v1/udp/sockets/{udp}/bind", json={"hostname": "127.0.0.1", "port": 0}, headers=headers)
    assert bound.status_code == 200, bound.text
    addresses = await http.get(f"/v1/handles/{udp}/addresses", params={"port_numbers": "true"}, headers=headers)
    return udp, addresses.json()["local_port"]


def _ws(daemon: Daemon, path: str, headers: dict[str, str]) -> Any:
    return websockets.connect(f"ws://127.0.0.1:{daemon.rest_port}{path}", additional_headers=headers)


async def test_datagrams_both_ways_as_serialized_batches(
    daemon: Daemon, rest: tuple[httpx.AsyncClient, dict[str, str]]
) -> None:
    http, headers = rest
    udp, port = await _bound_udp(http, headers)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)  # the daemon runs on this event loop: never block it
        loop = asyncio.get_running_loop()
        peer_port = peer.getsockname()[1]
        async with _ws(daemon, f"/v1/udp/sockets/{udp}/stream", headers) as ws:
            await asyncio.sleep(0.1)  # the receive side is set up when the WebSocket is accepted
            peer.sendto(b"to the stream", ("127.0.0.1", port))
            received = pb.DatagramBatch.FromString(await asyncio.wait_for(ws.recv(), 5))
            assert [(d.data, d.host, d.port) for d in received.datagrams] == [
                (b"to the stream", "127.0.0.1", peer_port)
            ]
            assert received.queue_dropped == 0 and received.udp == ""
            outgoing = pb.DatagramBatch(
                datagrams=[pb.Datagram(data=f"out {i}".encode(), host="127.0.0.1", port=peer_port) for i in range(3)]
            )
            await ws.send(outgoing.SerializeToString())
            arrived = [(await asyncio.wait_for(loop.sock_recvfrom(peer, 100), 5))[0] for _ in range(3)]
            assert arrived == [b"out 0", b"out 1", b"out 2"]
            await ws.send(json.dumps({"done": True}))
            while isinstance(reply := await asyncio.wait_for(ws.recv(), 5), bytes):
                pass
            assert json.loads(reply) == {"sent": 3}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xff\xff\xff", "not a serialized sockbroker.v1.DatagramBatch"),
        (pb.DatagramBatch(udp="udp_someone_else").SerializeToString(), "names socket 'udp_someone_else'"),
    ],
    ids=["garbage", "another-socket"],
)
async def test_a_malformed_datagram_frame_ends_the_stream_with_a_contract_error(
    daemon: Daemon, rest: tuple[httpx.AsyncClient, dict[str, str]], frame: bytes, reason: str
) -> None:
    http, headers = rest
    udp, _ = await _bound_udp(http, headers)
    async with _ws(daemon, f"/v1/udp/sockets/{udp}/stream?direction=send", headers) as ws:
        await ws.send(frame)
        text = await asyncio.wait_for(ws.recv(), 5)
        error = from_ws_error_frame(text)
        assert error is not None
        assert (error.kind, error.status) == ("exn:fail:contract", 400)
        assert reason in error.message
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4400, "exn:fail:contract")


async def test_an_error_is_a_problem_frame_then_a_close_of_4000_plus_its_status(
    daemon: Daemon, rest: tuple[httpx.AsyncClient, dict[str, str]]
) -> None:
    _, headers = rest
    async with _ws(daemon, "/v1/tcp/connections/tin_nonexistent/stream", headers) as ws:
        problem = json.loads(await asyncio.wait_for(ws.recv(), 5))["error"]
        assert (problem["kind"], problem["status"], problem["type"]) == (
            "not-found",
            404,
            "urn:sockbroker:error:not-found",
        )
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4404, "not-found")


async def test_attach_events_and_detach_as_json(daemon: Daemon, rest: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    http, headers = rest
    session = headers["Sockbroker-Session"]
    auth = {"Authorization": headers["Authorization"]}
    async with _ws(daemon, f"/v1/sessions/{session}/attach", auth) as ws:
        attached = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert set(attached) == {"session", "custodian", "lease_seconds", "event"}
        assert (attached["session"], attached["event"]) == (session, "attached")
        await ws.send(json.dumps({"something": "new"}))  # a frame the spec does not name: ignored
        await ws.send(json.dumps({"detach": True}))
        detached = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert {**attached, "event": "detached"} == detached
    alive = await http.post(f"/v1/sessions/{session}/keepalive", json={}, headers=headers)
    assert alive.status_code == 200
