"""Events and sync (issue 4): exactly one ready event performed; the others have no effect."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random

import pytest
from helpers import PeerServer
from rawwire import random_moment
from sockbroker_client import (
    AsyncBroker,
    ContractError,
    InputPort,
    Listener,
    NetworkError,
    OutputPort,
    port_read_ready_evt,
    port_write_ready_evt,
    tcp_accept_evt,
    tcp_listener_evt,
)

#: Cancelled calls per race test: each cancels a random moment after its result arrives.
RACES = 100


async def listening(broker: AsyncBroker) -> tuple[Listener, int]:
    listener = await broker.tcp_listen(0, 16, hostname="127.0.0.1")
    return listener, (await listener.addresses(port_numbers=True))[1]


async def wait_ready(listener: Listener) -> None:
    for _ in range(200):
        if await listener.accept_ready():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the client never became ready to accept")


async def test_accept_event_not_ready_then_performed(broker: AsyncBroker) -> None:
    listener, port = await listening(broker)
    assert await broker.sync(tcp_accept_evt(listener), timeout=0.05) is None
    assert await broker.sync(tcp_accept_evt(listener), timeout=0) is None
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    chosen = await broker.sync(tcp_accept_evt(listener), timeout=5)
    assert chosen is not None
    index, ports = chosen
    assert index == 0 and ports is not None
    assert (await ports[0].describe())["kind"] == "tcp-input-port"
    writer.close()


async def test_accept_event_puts_ports_in_its_custodian(broker: AsyncBroker) -> None:
    listener, port = await listening(broker)
    custodian = await broker.make_custodian()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    chosen = await broker.sync(tcp_accept_evt(listener, custodian), timeout=5)
    assert chosen is not None
    handles = {h["handle"] for h in (await broker.describe_custodian(custodian))["handles"]}
    assert {chosen[1][0].handle, chosen[1][1].handle} == handles
    writer.close()


async def test_events_not_chosen_have_no_effect(broker: AsyncBroker) -> None:
    first, first_port = await listening(broker)
    second, second_port = await listening(broker)
    writers = [(await asyncio.open_connection("127.0.0.1", p))[1] for p in (first_port, second_port)]
    await wait_ready(first)
    await wait_ready(second)
    chosen = await broker.sync(tcp_accept_evt(first), tcp_accept_evt(second), timeout=5)
    assert chosen is not None
    untouched = second if chosen[0] == 0 else first
    taken = first if chosen[0] == 0 else second
    assert await untouched.accept_ready() is True  # its client was not accepted
    assert await taken.accept_ready() is False
    for writer in writers:
        writer.close()


async def test_listener_ready_event_accepts_nothing(broker: AsyncBroker) -> None:
    listener, port = await listening(broker)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    chosen = await broker.sync(tcp_listener_evt(listener), timeout=5)
    assert chosen == (0, listener.handle)
    assert await listener.accept_ready() is True
    writer.close()


async def test_port_read_ready_and_write_ready(broker: AsyncBroker, peer: PeerServer) -> None:
    i, o = await broker.tcp_connect("127.0.0.1", peer.port)
    _, writer = await peer.next()
    assert await broker.sync(port_read_ready_evt(i), timeout=0.05) is None
    assert await broker.sync(port_write_ready_evt(o), timeout=0) == (0, o.handle)
    writer.write(b"ping")
    assert await broker.sync(port_read_ready_evt(i), timeout=5) == (0, i.handle)
    assert await i.read_bytes(4) == b"ping"  # readiness consumed nothing
    writer.write_eof()
    assert await broker.sync(port_read_ready_evt(i), timeout=5) == (0, i.handle)  # EOF is ready too


async def test_the_choice_is_fair(broker: AsyncBroker) -> None:
    first, first_port = await listening(broker)
    second, second_port = await listening(broker)
    writers = [(await asyncio.open_connection("127.0.0.1", p))[1] for p in (first_port, second_port)]
    await wait_ready(first)
    await wait_ready(second)
    counts: collections.Counter[int] = collections.Counter()
    for _ in range(200):
        chosen = await broker.sync(tcp_listener_evt(first), tcp_listener_evt(second), timeout=1)
        assert chosen is not None
        counts[chosen[0]] += 1
    assert counts[0] >= 60 and counts[1] >= 60, counts
    for writer in writers:
        writer.close()


async def test_a_cancelled_sync_performs_nothing(broker: AsyncBroker) -> None:
    """Syncs on an accept event cancelled a random moment after their connection arrives: each
    connection is the result of the cancelled sync or still queued for a later accept, exactly
    once, alive and carrying its bytes."""
    rng = random.Random(113)
    listener = await broker.tcp_listen(0, 2 * RACES, hostname="127.0.0.1")  # room for every connection
    port = (await listener.addresses(port_numbers=True))[1]
    peers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    accepted: list[tuple[InputPort, OutputPort]] = []
    try:
        for n in range(RACES):
            pending = asyncio.ensure_future(broker.sync(tcp_accept_evt(listener)))
            await random_moment(rng)
            peers.append(await asyncio.open_connection("127.0.0.1", port))
            peers[-1][1].write(b"%08d" % n)
            await random_moment(rng)
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                chosen = await pending
                assert chosen is not None and chosen[0] == 0
                accepted.append(chosen[1])
        while (ports := await listener.accept(timeout=0.5)) is not None:
            accepted.append(ports)
        ids = []
        for i, o in accepted:
            ident = await i.read_bytes(8, timeout=5)
            assert isinstance(ident, bytes) and len(ident) == 8, ident
            await o.write(b"ack:" + ident, flush=True)
            async with asyncio.timeout(5):
                assert await peers[int(ident)][0].readexactly(12) == b"ack:" + ident
            ids.append(int(ident))
        assert sorted(ids) == list(range(RACES))
    finally:
        for _, writer in peers:
            writer.close()


@pytest.mark.parametrize("how", ["close", "shutdown"])
async def test_a_blocked_sync_fails_when_its_handle_goes(broker: AsyncBroker, how: str) -> None:
    custodian = await broker.make_custodian()
    listener = await broker.tcp_listen(0, hostname="127.0.0.1", custodian=custodian)
    pending = asyncio.ensure_future(broker.sync(tcp_accept_evt(listener)))
    blocked_accept = asyncio.ensure_future(listener.accept())
    await asyncio.sleep(0.1)
    if how == "close":
        await listener.close()
    else:
        await custodian.shutdown_all()
    for call in (pending, blocked_accept):
        with pytest.raises(NetworkError) as info:
            async with asyncio.timeout(5):
                await call
        assert "listener is closed" in info.value.message


async def test_bad_events_are_refused_before_waiting(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
    with pytest.raises(ContractError):
        await broker.call("Events.Sync", events=[{"port_write_ready": {"port": i.handle}}])
    with pytest.raises(ContractError):
        await broker.sync(tcp_accept_evt(i))  # type: ignore[arg-type]  # the wrong kind, on purpose
    with pytest.raises(ContractError):
        await broker.sync(port_read_ready_evt(i), timeout=-1)


async def test_sync_with_no_events_times_out(broker: AsyncBroker) -> None:
    assert await broker.sync(timeout=0.05) is None


async def test_sync_with_no_events_and_no_timeout_is_refused(broker: AsyncBroker) -> None:
    with pytest.raises(ContractError) as info:
        await broker.sync()
    assert "could never end" in info.value.message
