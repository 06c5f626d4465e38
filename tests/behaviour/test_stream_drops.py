"""A datagram stream that cannot keep up says what it dropped, on both doors (docs/udp.md).

Datagrams arrive in bursts larger than the stream's queue (a daemon of this module's own, with a
queue of :data:`QUEUE` bytes): the daemon takes each burst from the kernel at once, keeps what
the queue holds, and drops and counts the rest. Every batch carries ``queue_dropped`` (the count
so far), over gRPC as the message's field and over REST in the serialized ``DatagramBatch`` of the
binary frame: what arrived plus what the last batch says was dropped is what was sent, and
``Handles.Describe`` says the same — with datagrams in ``Datagram`` messages or packed
(``DatagramBatch.packed``). No client library: the generated messages, a grpc.aio channel, a
bare WebSocket.
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import httpx
import pytest
import websockets
from helpers import serving
from sockbroker.server import Daemon
from sockbroker_wire.frames import batch_datagrams, decode_datagrams
from sockbroker_wire.v1 import broker_pb2 as pb

SENT = 201
PAYLOAD = b"d" * 100
#: Datagrams sent back to back: the daemon takes them from the kernel in one go, more than the
#: stream's queue holds, so it drops the rest at once, however fast the client reads.
BURST = 50
#: The stream's queue, in bytes (each datagram costs its payload plus the daemon's per-datagram
#: overhead): small, so that a stalled stream overflows it quickly.
QUEUE = 4096
#: (datagrams, queue_dropped) of each batch the stream delivered.
Batches = Callable[[], AsyncIterator[tuple[int, int]]]


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("stream-drops") / "token"


@pytest.fixture(scope="module")
async def daemon(token_file: pathlib.Path) -> AsyncIterator[Daemon]:
    """A daemon of this module's own, with a stream queue of :data:`QUEUE` bytes."""
    async with serving(token_file, udp_stream_buffer=QUEUE) as d:
        yield d


async def _open(daemon: Daemon, token_file: pathlib.Path) -> tuple[httpx.AsyncClient, dict[str, str], str, int]:
    token = (await asyncio.to_thread(token_file.read_text)).strip()
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.rest_port}", headers=headers)
    session = (await http.post("/v1/sessions", json={})).json()["session"]
    headers = {**headers, "Sockbroker-Session": session}
    udp = (await http.post("/v1/udp/sockets", json={}, headers=headers)).json()["udp"]
    await http.post(f"/v1/udp/sockets/{udp}/bind", json={"hostname": "127.0.0.1", "port": 0}, headers=headers)
    addresses = (await http.get(f"/v1/handles/{udp}/addresses?port_numbers=true", headers=headers)).json()
    return http, headers, udp, int(addresses["local_port"])


async def _grpc_batches(
    daemon: Daemon, headers: dict[str, str], udp: str, packed: bool
) -> tuple[Batches, Callable[[], Awaitable[None]]]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{daemon.grpc_port}")
    stream = channel.unary_stream(
        "/sockbroker.v1.Udp/ReceiveStream",
        request_serializer=pb.UdpReceiveStreamRequest.SerializeToString,
        response_deserializer=pb.DatagramBatch.FromString,
    )
    metadata = (("authorization", headers["Authorization"]), ("sockbroker-session", headers["Sockbroker-Session"]))
    call = stream(pb.UdpReceiveStreamRequest(udp=udp, max=len(PAYLOAD), packed=packed), metadata=metadata)

    async def batches() -> AsyncIterator[tuple[int, int]]:
        async for batch in call:
            assert bool(batch.packed) == packed and bool(batch.datagrams) != packed
            yield len(batch_datagrams(batch)), batch.queue_dropped

    async def close() -> None:
        call.cancel()
        await channel.close()

    return batches, close


async def _ws_batches(
    daemon: Daemon, headers: dict[str, str], udp: str, packed: bool
) -> tuple[Batches, Callable[[], Awaitable[None]]]:
    url = f"ws://127.0.0.1:{daemon.rest_port}/v1/udp/sockets/{udp}/stream?direction=receive&max={len(PAYLOAD)}"
    url += f"&packed={str(packed).lower()}"
    ws = await websockets.connect(url, additional_headers=headers, max_size=None)

    async def batches() -> AsyncIterator[tuple[int, int]]:
        async for message in ws:
            assert isinstance(message, bytes), message
            raw = pb.DatagramBatch.FromString(message)
            assert bool(raw.packed) == packed and bool(raw.datagrams) != packed
            frame = decode_datagrams(message, udp=udp)
            yield len(frame.datagrams), frame.queue_dropped

    async def close() -> None:
        await ws.close()

    return batches, close


@pytest.mark.timeout(60)
@pytest.mark.parametrize("door", ["grpc", "rest"])
@pytest.mark.parametrize("packed", [False, True], ids=["messages", "packed"])
async def test_a_stalled_datagram_stream_reports_what_it_dropped(
    daemon: Daemon, token_file: pathlib.Path, door: str, packed: bool
) -> None:
    http, headers, udp, port = await _open(daemon, token_file)
    opener = _grpc_batches if door == "grpc" else _ws_batches
    batches, close = await opener(daemon, headers, udp, packed)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stream = batches()
        sender.sendto(PAYLOAD, ("127.0.0.1", port))
        async with asyncio.timeout(10):
            first, _ = await anext(stream)  # the stream is open and delivering
        assert first == 1
        for _ in range((SENT - 1) // BURST):  # bursts that fit the kernel's buffer, not the stream's queue
            for _ in range(BURST):
                sender.sendto(PAYLOAD, ("127.0.0.1", port))
            await asyncio.sleep(0.01)
        received, dropped = first, 0
        async with asyncio.timeout(30):
            while True:  # until the stream has delivered everything it kept (a quiet second)
                try:
                    async with asyncio.timeout(1):
                        count, dropped = await anext(stream)
                except TimeoutError:
                    break
                received += count
        described = (await http.get(f"/v1/handles/{udp}", headers=headers)).json()
        assert dropped > 0, f"the stream never fell behind: the test did not stall it {received} {described}"
        assert described["queue_dropped"] == dropped
        assert received + dropped + int(described["kernel_dropped"] or 0) == SENT, (received, dropped, described)
    finally:
        sender.close()
        await close()
        await http.delete(f"/v1/sessions/{headers['Sockbroker-Session']}", headers=headers)
        await http.aclose()
