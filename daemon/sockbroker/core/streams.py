"""The streaming paths, independent of the transport that carries them.

Each front door adapts its own framing (gRPC messages, WebSocket frames) to the iterators and
callbacks here, so the rules of a stream (what ends it, what half-closes, where backpressure
comes from) are written once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from .tcp import TcpInputPort
from .udp import UdpSocket

if TYPE_CHECKING:
    from .sessions import Session

__all__ = ["STREAM_CHUNK", "datagram_batches", "relay_port", "send_datagrams"]

#: Largest frame the daemon sends on a byte stream.
STREAM_CHUNK = 256 * 1024


async def relay_port(
    session: Session,
    port_handle: str,
    incoming: AsyncIterator[tuple[bytes, bool]],
    emit: Callable[[bytes | None], Awaitable[None]],
) -> None:
    """Carry bytes both ways between a client stream and a TCP connection.

    ``incoming`` yields the client's ``(data, eof)`` frames: data is written straight through
    (no block buffering); ``eof``, or the end of ``incoming``, closes the output port (FIN).
    Bytes from the peer go out through ``emit``; the peer's FIN is ``emit(None)``. The relay ends
    when both directions have ended. Backpressure: ``emit`` awaiting a slow client stops the
    reads, the input port's buffer fills, and the daemon stops reading the socket.
    """
    who = "tcp-stream"
    port = session.table.lookup(port_handle, TcpInputPort, who)
    port.ensure_open(who)
    out = port.conn.out_port

    async def upstream() -> None:
        async for data, eof in incoming:
            if data:
                await out.write_through(data)
            if eof:
                break
        out.close()

    async def downstream() -> None:
        while True:
            data, eof = await port.read(STREAM_CHUNK, "avail", peek=False, timeout=None)
            if eof:
                await emit(None)
                return
            await emit(data)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(upstream())
            group.create_task(downstream())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


def datagram_batches(
    session: Session, udp_handle: str, max_bytes: int | None
) -> AsyncIterator[tuple[list[tuple[bytes, str, int]], int]]:
    """Datagrams as they arrive on a UDP socket, in batches of whatever is queued:
    ``([(data, host, port), …], queue_dropped)``."""
    sock = session.table.lookup(udp_handle, UdpSocket, "udp-receive-stream")
    return sock.stream_batches(max_bytes)


async def send_datagrams(session: Session, udp_handle: str, frames: AsyncIterator[tuple[bytes, str, int]]) -> int:
    """Send each ``(data, host, port)``; an empty host sends to the connected peer. Returns the count."""
    sock = session.table.lookup(udp_handle, UdpSocket, "udp-send-stream")
    sent = 0
    async for data, host, port in frames:
        await sock.send_datagram(data, host or None, port or None)
        sent += 1
    return sent
