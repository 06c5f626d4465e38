"""Packed datagram batches (``DatagramBatch.packed``, docs/wire.md) on both doors, spoken with no
client library: a grpc.aio channel with the generated messages, a bare WebSocket.

A receive stream that asks for ``packed`` (gRPC ``UdpReceiveStreamRequest.packed``, REST
``?packed=true``) gets every datagram in ``packed`` and none in ``datagrams``; a batch sent to
the daemon may carry both, ``datagrams`` first; malformed packed bytes are a contract error.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
import websockets
from sockbroker.server import Daemon
from sockbroker_wire.errors import from_grpc_error, from_ws_error_frame
from sockbroker_wire.packed import pack_datagrams, unpack_datagrams
from sockbroker_wire.v1 import broker_pb2 as pb
from sockbroker_wire.v1 import broker_pb2_grpc as rpc

WAIT = 5.0
DOORS = pytest.mark.parametrize("door", ["grpc", "rest"])
Datagram = tuple[bytes, str, int]


@dataclass
class Setup:
    daemon: Daemon
    http: httpx.AsyncClient
    headers: dict[str, str]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            ("authorization", self.headers["Authorization"]),
            ("sockbroker-session", self.headers["Sockbroker-Session"]),
        )

    async def bound_udp(self) -> tuple[str, int]:
        udp = (await self.http.post("/v1/udp/sockets", json={}, headers=self.headers)).json()["udp"]
        body = {"hostname": "127.0.0.1", "port": 0}
        assert (await self.http.post(f"/v1/udp/sockets/{udp}/bind", json=body, headers=self.headers)).is_success
        addresses = await self.http.get(f"/v1/handles/{udp}/addresses?port_numbers=true", headers=self.headers)
        return udp, int(addresses.json()["local_port"])

    def ws(self, path: str) -> Any:
        url = f"ws://127.0.0.1:{self.daemon.rest_port}{path}"
        return websockets.connect(url, additional_headers=self.headers, max_size=None)


@pytest.fixture
async def setup(daemon: Daemon, token_file: pathlib.Path) -> AsyncIterator[Setup]:
    token = (await asyncio.to_thread(token_file.read_text)).strip()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.rest_port}", headers=headers) as http:
        session = (await http.post("/v1/sessions", json={})).json()["session"]
        headers = {**headers, "Sockbroker-Session": session}
        try:
            yield Setup(daemon, http, headers)
        finally:
            await http.delete(f"/v1/sessions/{session}", headers=headers)


def peer_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)  # the daemon runs on this event loop: never block it
    return sock


async def receive_packed(setup: Setup, door: str, udp: str, count: int, *, send: Any) -> list[pb.DatagramBatch]:
    """Open a packed receive stream on ``udp``, call ``send()``, and collect batches until
    ``count`` datagrams came (bounded in time)."""
    batches: list[pb.DatagramBatch] = []

    def total() -> int:
        return sum(len(unpack_datagrams(b.packed)) + len(b.datagrams) for b in batches)

    if door == "grpc":
        async with grpc.aio.insecure_channel(f"127.0.0.1:{setup.daemon.grpc_port}") as channel:
            call = rpc.UdpStub(channel).ReceiveStream(
                pb.UdpReceiveStreamRequest(udp=udp, packed=True), metadata=setup.metadata
            )
            await asyncio.sleep(0.1)  # the stream reaches the daemon
            send()
            async with asyncio.timeout(WAIT):
                while total() < count:
                    batches.append(await call.read())
            call.cancel()
    else:
        async with setup.ws(f"/v1/udp/sockets/{udp}/stream?direction=receive&packed=true") as ws:
            await asyncio.sleep(0.1)
            send()
            async with asyncio.timeout(WAIT):
                while total() < count:
                    batches.append(pb.DatagramBatch.FromString(await ws.recv()))
    return batches


async def send_batches(setup: Setup, door: str, udp: str, batches: Sequence[pb.DatagramBatch]) -> Any:
    """Send the batches on a send stream of ``udp``: the number sent, or the wire error."""
    if door == "grpc":
        async with grpc.aio.insecure_channel(f"127.0.0.1:{setup.daemon.grpc_port}") as channel:
            first, *rest = batches
            first = pb.DatagramBatch(udp=udp, datagrams=first.datagrams, packed=first.packed)
            try:
                reply = await rpc.UdpStub(channel).SendStream(iter([first, *rest]), metadata=setup.metadata)
            except grpc.aio.AioRpcError as exc:
                return from_grpc_error(exc)
            return reply.sent
    async with setup.ws(f"/v1/udp/sockets/{udp}/stream?direction=send") as ws:
        for batch in batches:
            await ws.send(batch.SerializeToString())
        await ws.send(json.dumps({"done": True}))
        reply = await asyncio.wait_for(ws.recv(), WAIT)
        error = from_ws_error_frame(reply)
        if error is not None:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
            return error
        return json.loads(reply)["sent"]


@DOORS
async def test_a_packed_receive_stream_carries_every_datagram_packed_with_its_source(setup: Setup, door: str) -> None:
    udp, port = await setup.bound_udp()
    peers = [peer_socket(), peer_socket()]
    try:
        sent = [(bytes([i % 256]) * (i % 1300), peers[i % 2]) for i in range(300)]

        def send() -> None:
            for data, peer in sent:
                peer.sendto(data, ("127.0.0.1", port))

        batches = await receive_packed(setup, door, udp, len(sent), send=send)
        assert all(len(batch.datagrams) == 0 and batch.packed for batch in batches)
        got = [datagram for batch in batches for datagram in unpack_datagrams(batch.packed)]
        expected = [(data, "127.0.0.1", peer.getsockname()[1]) for data, peer in sent]
        assert got == expected
        assert len(batches) < len(sent)  # batched: not one message per datagram
    finally:
        for peer in peers:
            peer.close()


@DOORS
async def test_a_sent_batch_may_carry_datagrams_then_packed(setup: Setup, door: str) -> None:
    udp, _ = await setup.bound_udp()
    with peer_socket() as peer:
        target = ("127.0.0.1", peer.getsockname()[1])
        loop = asyncio.get_running_loop()
        batches = [
            pb.DatagramBatch(
                datagrams=[pb.Datagram(data=b"listed", host=target[0], port=target[1])],
                packed=pack_datagrams([(b"packed %d" % i, *target) for i in range(3)]),
            ),
            pb.DatagramBatch(packed=pack_datagrams([(b"", *target), (b"last", *target)])),
        ]
        assert await send_batches(setup, door, udp, batches) == 6
        async with asyncio.timeout(WAIT):
            arrived = [(await loop.sock_recvfrom(peer, 100))[0] for _ in range(6)]
        assert arrived == [b"listed", b"packed 0", b"packed 1", b"packed 2", b"", b"last"]


MALFORMED = {
    "truncated-header": b"\x00\x00\x00",
    "truncated-host": b"\x00\x00\x00\x01\x09127.0",
    "truncated-port": b"\x00\x00\x00\x01\x09127.0.0.1\x00",
    "truncated-data": b"\x00\x00\x00\x05\x09127.0.0.1\x00\x09abc",
    "non-ascii-host": b"\x00\x00\x00\x01\x02\xc3\xa9\x00\x09x",
    "control-in-host": b"\x00\x00\x00\x01\x02a\n\x00\x09x",
}


@DOORS
@pytest.mark.parametrize("packed", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_packed_bytes_are_a_contract_error_and_send_nothing(
    setup: Setup, door: str, packed: bytes
) -> None:
    udp, _ = await setup.bound_udp()
    with peer_socket() as peer:
        good = pack_datagrams([(b"before", "127.0.0.1", peer.getsockname()[1])])
        error = await send_batches(setup, door, udp, [pb.DatagramBatch(packed=good + packed)])
        assert not isinstance(error, int), f"the daemon sent {error} datagrams"
        assert error.kind == "exn:fail:contract"
        assert "packed" in error.message or "malformed" in error.message
        with pytest.raises(BlockingIOError):  # the whole batch was refused, its good record too
            peer.recvfrom(100)


@pytest.mark.parametrize("value", ["maybe", "2", ""])
async def test_a_bad_packed_query_parameter_is_a_contract_error(setup: Setup, value: str) -> None:
    udp, _ = await setup.bound_udp()
    async with setup.ws(f"/v1/udp/sockets/{udp}/stream?direction=receive&packed={value}") as ws:
        error = from_ws_error_frame(await asyncio.wait_for(ws.recv(), WAIT))
        assert error is not None and (error.kind, error.status) == ("exn:fail:contract", 400)
        assert "packed" in error.message
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


async def test_without_packed_the_receive_stream_sends_datagram_messages(setup: Setup) -> None:
    udp, port = await setup.bound_udp()
    with peer_socket() as peer:
        batches = await receive_plain(setup, udp, lambda: peer.sendto(b"plain", ("127.0.0.1", port)))
        assert [(d.data, d.host, d.port) for d in batches.datagrams] == [(b"plain", "127.0.0.1", peer.getsockname()[1])]
        assert batches.packed == b""


async def receive_plain(setup: Setup, udp: str, send: Any) -> pb.DatagramBatch:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{setup.daemon.grpc_port}") as channel:
        call = rpc.UdpStub(channel).ReceiveStream(pb.UdpReceiveStreamRequest(udp=udp), metadata=setup.metadata)
        await asyncio.sleep(0.1)
        send()
        async with asyncio.timeout(WAIT):
            batch: pb.DatagramBatch = await call.read()
        call.cancel()
        return batch
