"""The streaming paths, independent of the transport that carries them.

Each front door adapts its own framing (gRPC messages, WebSocket frames) to the iterators and
callbacks here (through :meth:`.broker.Api.port_stream` and :meth:`.broker.Api.udp_stream`), so
the rules of a stream — what ends it, what half-closes, which directions it carries, where
backpressure comes from, and that what the daemon took but could not send is given back — are
written once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from .errors import ContractError
from .tcp import TcpInputPort
from .udp import UdpSocket

__all__ = ["STREAM_CHUNK", "relay_port", "udp_stream"]

#: Largest frame the daemon sends on a byte stream.
STREAM_CHUNK = 256 * 1024

Datagrams = Sequence[tuple[bytes, str, int]]


async def relay_port(
    port: TcpInputPort,
    incoming: AsyncIterator[tuple[bytes | memoryview, bool]],
    emit: Callable[[bytes | None], Awaitable[None]],
) -> None:
    """Carry bytes both ways between a client stream and the connection of ``port``
    (see :meth:`.broker.Api.port_stream`)."""
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
            try:
                await emit(data)
            except BaseException:
                port.conn.give_back(data)  # never reached the client: the next read gets it
                raise

    await _first_error([upstream(), downstream()], all_must_end=True)


async def udp_stream(
    sock: UdpSocket,
    direction: str,
    incoming: AsyncIterator[Datagrams] | None,
    emit: Callable[[Datagrams, int], Awaitable[None]] | None,
    max_bytes: int | None,
) -> int:
    """Datagrams both ways on one socket; returns how many were sent (see
    :meth:`.broker.Api.udp_stream`)."""
    who = "udp-stream"
    batches = None
    if direction != "send":
        if emit is None:
            raise ContractError(who, "a receiving stream needs somewhere to send datagrams")
        batches = sock.stream_batches(max_bytes)  # argument and state errors surface now
    sent = 0

    async def sending() -> None:
        nonlocal sent
        assert incoming is not None
        async for batch in incoming:
            if direction == "receive" and batch:
                raise ContractError(who, "this stream only receives")
            for data, host, port in batch:
                await sock.send_datagram(data, host or None, port or None)
                sent += 1

    async def receiving() -> None:
        assert batches is not None and emit is not None
        async with contextlib.aclosing(batches):
            async for batch, dropped in batches:
                try:
                    await emit(batch, dropped)
                except BaseException:
                    sock.give_back(batch)  # never reached the client: the next receive gets it
                    raise

    sides = []
    if batches is not None:
        sides.append(receiving())
    if incoming is not None:
        sides.append(sending())
    await _first_error(sides, all_must_end=False)
    return sent


async def _first_error(sides: Sequence[Awaitable[None]], *, all_must_end: bool) -> None:
    """Run the sides together. The first error of any ends them all and is raised; otherwise
    they run until all end (``all_must_end``) or until the first one ends."""
    tasks = [asyncio.ensure_future(side) for side in sides]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            if not all_must_end:
                return
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
