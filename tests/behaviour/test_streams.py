"""The streaming data path: bytes both ways, half-close carried through, bounded memory."""

from __future__ import annotations

import asyncio
import os
import socket

from helpers import PeerServer, read_until_eof
from sockbroker.core.tcp import TcpInputPort
from sockbroker.server import Daemon
from sockbroker_client import EOF, AsyncBroker


async def test_bytes_flow_both_ways(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
    reader, writer = await peer.next()
    stream = await broker.tcp_stream(i)
    try:
        payload = bytes(range(256)) * 4096  # 1 MiB
        for offset in range(0, len(payload), 65536):
            await stream.send(payload[offset : offset + 65536])
        assert await reader.readexactly(len(payload)) == payload
        writer.write(b"pong" * 1000)
        got = b""
        while len(got) < 4000:
            chunk = await stream.receive()
            assert chunk is not None
            got += chunk
        assert got == b"pong" * 1000
    finally:
        await stream.aclose()


async def test_client_eof_sends_fin_and_peer_fin_ends_the_stream(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
    reader, writer = await peer.next()
    stream = await broker.tcp_stream(i)
    try:
        await stream.send(b"bye")
        await stream.send_eof()
        assert await read_until_eof(reader) == b"bye"
        writer.write(b"after your FIN")
        writer.write_eof()
        got = b""
        while (chunk := await stream.receive()) is not None:
            got += chunk
        assert got == b"after your FIN"
    finally:
        await stream.aclose()
    # The stream half-closed the output port; the input port saw EOF and is still open.
    assert (await i.describe())["closed"] is False
    assert await i.read() is EOF


async def test_a_client_that_does_not_read_gets_backpressure(
    broker: AsyncBroker, peer: PeerServer, daemon: Daemon
) -> None:
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
    _, writer = await peer.next()
    stream = await broker.tcp_stream(i)
    try:
        raw = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
        raw.setblocking(False)
        chunk = b"z" * 65536
        accepted = 0
        loop = asyncio.get_running_loop()
        stalled_since = None
        end = loop.time() + 10
        while loop.time() < end:
            try:
                accepted += raw.send(chunk)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or loop.time()
                if loop.time() - stalled_since > 0.5:
                    break
                await asyncio.sleep(0.01)
        raw.close()
        # The peer was stopped: what it got rid of sits in kernel buffers, the daemon's bounded
        # port buffer, and the stream's flow-control window; nowhere near the 10 s of flooding.
        assert stalled_since is not None
        bound = daemon.settings.port_receive_buffer + 64 * 1024 * 1024
        assert accepted < bound, accepted
        port = next(r for s in daemon.broker.sessions._sessions.values() if (r := s.table.find(i.handle)))
        assert isinstance(port, TcpInputPort)
        assert len(port.conn.rx) <= daemon.settings.port_receive_buffer + 256 * 1024
        started = loop.time()
        await stream.aclose()
        # Closing gives up the bytes not read at once, not after a close handshake's timeout (10 s
        # on a WebSocket whose queue of unread messages has paused its reading).
        assert loop.time() - started < 5, loop.time() - started
    finally:
        await stream.aclose()
