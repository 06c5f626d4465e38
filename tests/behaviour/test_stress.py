"""Breaks under load (issue 4): cancellation at random moments never loses anything.

These are correctness tests, bounded in count and time, not benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct

import pytest
from sockbroker_client import AsyncBroker, tcp_accept_evt, udp_receive_evt

CLIENTS = 2000


async def _cancel_at_random(call: asyncio.Future[object], rng: random.Random) -> object | None:
    await asyncio.sleep(rng.uniform(0, 0.004))
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        return await call
    return None


@pytest.mark.timeout(300)
async def test_cancelled_accepts_and_syncs_account_for_every_connection(broker: AsyncBroker) -> None:
    rng = random.Random(4)
    listener = await broker.tcp_listen(0, 1024, hostname="127.0.0.1")
    port = (await listener.addresses(port_numbers=True))[1]
    custodian = await broker.make_custodian()
    writers: list[asyncio.StreamWriter] = []

    async def connect_all() -> None:
        for n in range(CLIENTS):
            writers.append((await asyncio.open_connection("127.0.0.1", port))[1])
            if n % 50 == 0:
                await asyncio.sleep(0)

    returned = 0
    connector = asyncio.ensure_future(connect_all())
    loop = asyncio.get_running_loop()
    end = loop.time() + 120
    try:
        while not connector.done() and loop.time() < end:
            if rng.random() < 0.5:
                call = asyncio.ensure_future(listener.accept(custodian=custodian))
            else:
                call = asyncio.ensure_future(broker.sync(tcp_accept_evt(listener, custodian)))
            if await _cancel_at_random(call, rng) is not None:
                returned += 1
        await connector
        # What no caller took is either in the custodian already or still queued: drain the queue.
        while (ports := await listener.accept(custodian=custodian, timeout=0.5)) is not None:
            assert ports[0] is not None
            returned += 1
        handles = (await broker.describe_custodian(custodian))["handles"]
        inputs = sum(1 for h in handles if h["kind"] == "tcp-input-port")
        assert inputs == CLIENTS, (inputs, returned)
        assert returned <= CLIENTS
        assert await listener.accept_ready() is False
    finally:
        connector.cancel()
        for writer in writers:
            writer.close()
        await custodian.shutdown_all()


DATAGRAMS = 10_000


@pytest.mark.timeout(300)
@pytest.mark.parametrize("via", ["receive", "sync"])
async def test_cancelled_receives_and_syncs_lose_no_datagram(broker: AsyncBroker, via: str) -> None:
    rng = random.Random(10)
    sock = await broker.udp_open_socket()
    await sock.bind("127.0.0.1", 0)
    idle = await broker.udp_open_socket()  # a second event that is never ready
    await idle.bind("127.0.0.1", 0)
    port = (await sock.addresses(port_numbers=True))[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got: list[int] = []

    async def receive_one() -> object | None:
        if via == "receive":
            return await sock.receive(16)
        chosen = await broker.sync(udp_receive_evt(idle, 16), udp_receive_evt(sock, 16))
        return None if chosen is None else chosen[1]

    def record(result: object | None) -> None:
        if result is not None:
            count, _host, _port, data = result  # type: ignore[misc]
            assert count == 4
            got.append(struct.unpack("!I", data)[0])

    loop = asyncio.get_running_loop()
    end = loop.time() + 240
    sent = 0
    try:
        while (sent < DATAGRAMS or len(got) < sent) and loop.time() < end:
            # Keep a few datagrams queued, well inside the socket buffer: nothing may be dropped.
            while sent < DATAGRAMS and sent - len(got) < 8:
                sender.sendto(struct.pack("!I", sent), ("127.0.0.1", port))
                sent += 1
            call = asyncio.ensure_future(receive_one())
            if rng.random() < 0.5:
                record(await _cancel_at_random(call, rng))
            else:
                async with asyncio.timeout(10):
                    record(await call)
        # Whatever no caller took is still queued: drain it.
        while (left := await sock.receive_nowait(16))[0] is not None:
            record(left)
        assert sent == DATAGRAMS, "ran out of time"
        assert sorted(got) == list(range(DATAGRAMS)), f"{len(got)} received, {len(set(got))} distinct"
        described = await sock.describe()
        assert described["kernel_dropped"] == 0 and described["queue_dropped"] == 0
    finally:
        sender.close()
        await sock.close()
        await idle.close()
