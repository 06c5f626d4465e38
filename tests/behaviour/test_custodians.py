"""Custodians: shutdown closes exactly a subtree; nothing accepted for a caller is ever lost."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from helpers import PeerServer, read_until_eof, silent_for
from sockbroker_client import AsyncBroker, ContractError, NotFoundError


async def test_shutdown_closes_exactly_the_subtree(broker: AsyncBroker) -> None:
    parent = await broker.make_custodian()
    child = await broker.make_custodian(parent)
    sibling = await broker.make_custodian()
    in_root = await broker.tcp_listen(0, hostname="127.0.0.1")
    in_parent = await broker.tcp_listen(0, hostname="127.0.0.1", custodian=parent)
    in_child = await broker.tcp_listen(0, hostname="127.0.0.1", custodian=child)
    in_sibling = await broker.tcp_listen(0, hostname="127.0.0.1", custodian=sibling)
    described = await broker.describe_custodian(parent)
    assert [h["handle"] for h in described["handles"]] == [in_parent.handle]
    assert described["children"] == [child.handle]
    await parent.shutdown_all()
    for closed in (in_parent, in_child):
        assert (await closed.describe())["closed"] is True
    for still_open in (in_root, in_sibling):
        assert (await still_open.describe())["closed"] is False
    assert (await broker.describe_custodian(child))["shut_down"] is True
    assert child.handle not in (await broker.describe_custodian(broker.custodian))["children"]


async def test_shutdown_closes_connections_and_peers_see_eof(broker: AsyncBroker, peer: PeerServer) -> None:
    custodian = await broker.make_custodian()
    await broker.tcp_connect("127.0.0.1", peer.port, custodian=custodian)
    reader, _ = await peer.next()
    assert await silent_for(reader)
    await custodian.shutdown_all()
    assert await read_until_eof(reader) == b""


async def test_a_handle_under_a_shut_down_custodian_fails(broker: AsyncBroker) -> None:
    custodian = await broker.make_custodian()
    await custodian.shutdown_all()
    with pytest.raises(ContractError) as info:
        await broker.tcp_listen(0, hostname="127.0.0.1", custodian=custodian)
    assert "the custodian has been shut down" in info.value.message
    with pytest.raises(ContractError):
        await broker.make_custodian(custodian)


async def test_describe_finds_a_connection_accepted_for_a_caller_that_gave_up(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    _, port, _, _ = await listener.addresses(port_numbers=True)
    writers = []
    for _ in range(20):
        custodian = await broker.make_custodian()
        pending = asyncio.ensure_future(listener.accept(custodian=custodian))
        await asyncio.sleep(0.02)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        pending.cancel()  # the caller gives up while the connection arrives
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        # Either the broker accepted it into the custodian, or it still waits to be accepted.
        handles = (await broker.describe_custodian(custodian))["handles"]
        if handles:
            assert sorted(h["kind"] for h in handles) == ["tcp-input-port", "tcp-output-port"]
        else:
            assert await listener.accept(timeout=5) is not None
    for writer in writers:
        writer.close()


async def test_unknown_custodian_is_not_found(broker: AsyncBroker) -> None:
    with pytest.raises(NotFoundError):
        await broker.make_custodian("cst_nonexistent")
