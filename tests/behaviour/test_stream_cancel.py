"""A cancelled stream leaves the peer's later bytes in the port, on every door (docs/semantics.md).

The client cancels a ``Ports.Stream`` (gRPC: the call is cancelled, a RST_STREAM; REST: the
WebSocket is closed; in process: the stream's task is cancelled) while the stream is reading the
peer. Right after the daemon has taken the cancel, the peer sends its bytes and its FIN. Nothing
may be lost: the next reads of the input port get every byte, then EOF, and the port is still
open. Over gRPC and REST the daemon takes the cancel as the client's EOF and sends the peer a FIN
first; the peer sends as soon as it sees that FIN, which is the moment the Node client's test
("destroying the Duplex…") sends at, the smallest gap there can be. In process the cancel ends the
stream before it returns, and the peer sends at once.

A client that only half-closes (the request stream ends, no cancel) is different: the daemon then
goes on delivering the peer's bytes on the stream, as it must. grpc-js's ``call.cancel()`` sends
END_STREAM at once and its RST_STREAM a few milliseconds later, so for those milliseconds the
daemon sees a half-close; bytes the peer sends then go to the stream, and grpc-js drops them.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from helpers import PeerServer, read_until_eof
from sockbroker_client import EOF, InputPort

#: Rounds per door: each cancels one stream and checks the port afterwards.
ROUNDS = 25
#: What the peer sends after the cancel: small, one stream chunk and more, several chunks.
SIZES = (1, 17, 4096, 300 * 1024, 1024 * 1024)
#: Extra pauses before the peer sends, in seconds: none (most rounds), then a little.
PAUSES = (0.0, 0.0, 0.0, 0.0005, 0.002)


async def _read_to_eof(port: InputPort) -> bytes:
    """Everything the port gives until EOF; fails on a read that times out first."""
    got = bytearray()
    async with asyncio.timeout(10):
        while True:
            chunk = await port.read(timeout=5)
            assert chunk is not None, f"no EOF within 5 s after {len(got)} bytes"
            if chunk is EOF:
                return bytes(got)
            assert isinstance(chunk, bytes)
            got += chunk


@pytest.mark.timeout(120)
async def test_bytes_sent_as_a_stream_is_cancelled_stay_in_the_port(door: Any, peer: PeerServer) -> None:
    broker = await door()
    fin_on_cancel = door.door != "core"
    rng = random.Random(20240611)  # the same timings every run
    for round_ in range(ROUNDS):
        i, o = await broker.tcp_connect("127.0.0.1", peer.port)
        reader, writer = await peer.next()
        stream = await broker.tcp_stream(i)
        # The stream runs both ways: its reader is waiting on the port when the cancel comes.
        await stream.send(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.write(b"pong")
        async with asyncio.timeout(5):
            assert await stream.receive() == b"pong"
        await stream.aclose()
        if fin_on_cancel:
            assert await read_until_eof(reader, within=5) == b"", f"round {round_}: no FIN after the cancel"
        await asyncio.sleep(rng.choice(PAUSES))
        payload = rng.randbytes(rng.choice(SIZES))
        writer.write(payload)
        writer.write_eof()
        got = await _read_to_eof(i)
        assert len(got) == len(payload) and got == payload, f"round {round_}: {len(got)} of {len(payload)} bytes"
        assert (await i.describe())["closed"] is False
        await i.close()
        await o.close()
        writer.close()
