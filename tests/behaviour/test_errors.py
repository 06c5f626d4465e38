"""Errors: the right kind, status and message on every door, for every kind of bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import PeerServer, target
from racket.scenarios import Ctx
from sockbroker.server import Daemon
from sockbroker_client import (
    AsyncBroker,
    BreakError,
    ContractError,
    FailError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)

#: The contract (DESIGN.md §4), written out independently of the daemon's table.
STATUS = {
    "exn:fail:contract": ("INVALID_ARGUMENT", 400),
    "exn:fail": ("FAILED_PRECONDITION", 409),
    "exn:fail:network": ("FAILED_PRECONDITION", 409),
    "exn:fail:network:errno": ("UNAVAILABLE", 502),
    "not-found": ("NOT_FOUND", 404),
    "permission-denied": ("PERMISSION_DENIED", 403),
    "unauthenticated": ("UNAUTHENTICATED", 401),
    "resource-exhausted": ("RESOURCE_EXHAUSTED", 429),
    "exn:break": ("CANCELLED", 499),
}


def expected_status(broker: AsyncBroker, kind: str) -> object:
    grpc_code, http = STATUS[kind]
    return {"grpc": grpc_code, "rest": http}.get(broker.channel.name, "core")


async def test_another_sessions_handle_is_not_found(door: Any) -> None:
    mine, theirs = await door(), await door()
    listener = await theirs.tcp_listen(0, hostname="127.0.0.1")
    with pytest.raises(NotFoundError) as foreign:
        await mine.tcp_accept_ready(listener.handle)
    with pytest.raises(NotFoundError) as made_up:
        await mine.tcp_accept_ready("lst_" + "A" * 22)
    assert foreign.value.status == made_up.value.status == expected_status(mine, "not-found")
    assert foreign.value.message.replace(listener.handle, "H") == made_up.value.message.replace("lst_" + "A" * 22, "H")


async def test_a_closed_handle_is_a_network_error(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    await listener.close()
    with pytest.raises(NetworkError) as info:
        await listener.accept_ready()
    assert info.value.kind == "exn:fail:network"
    assert info.value.status == expected_status(broker, "exn:fail:network")
    assert info.value.message.startswith("tcp-accept-ready?: listener is closed")


@pytest.mark.parametrize("door_name", ["grpc", "rest"])
@pytest.mark.parametrize("token", ["", "wrong-token"])
async def test_a_missing_or_wrong_token_is_unauthenticated(daemon: Daemon, door_name: str, token: str) -> None:
    with pytest.raises(UnauthenticatedError) as info:
        await AsyncBroker.connect(target(daemon, door_name), transport=door_name, token=token)
    assert info.value.status == ("UNAUTHENTICATED" if door_name == "grpc" else 401)


async def test_out_of_range_port_is_a_contract_error_with_racket_message(broker: AsyncBroker) -> None:
    with pytest.raises(ContractError) as info:
        await broker.tcp_connect("127.0.0.1", 70000)
    assert info.value.status == expected_status(broker, "exn:fail:contract")
    assert info.value.message == "tcp-connect: contract violation\n  expected: port-number?\n  given: 70000"


async def test_local_hostname_without_local_port(broker: AsyncBroker) -> None:
    with pytest.raises(ContractError) as info:
        await broker.tcp_connect("127.0.0.1", 80, local_hostname="127.0.0.1")
    assert info.value.status == expected_status(broker, "exn:fail:contract")
    assert info.value.message.startswith("tcp-connect: no local port number supplied")


async def test_an_operation_on_a_closed_port_is_plain_exn_fail(broker: AsyncBroker, peer: PeerServer) -> None:
    # Racket's own kind for it ("write-bytes: output port is closed"), not a network error.
    _, o = await broker.tcp_connect("127.0.0.1", peer.port)
    await o.close()
    with pytest.raises(FailError) as info:
        await o.write(b"x")
    assert info.value.kind == "exn:fail" and not isinstance(info.value, NetworkError)
    assert info.value.status == expected_status(broker, "exn:fail")
    assert info.value.message == f"write-bytes: output port is closed\n  output port: {o.handle}"


async def test_a_call_broken_by_cancel_call_is_exn_break(broker: AsyncBroker) -> None:
    # Sessions.CancelCall breaks a waiting accept: its caller gets Racket's "user break".
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    ctx = Ctx(broker)
    accepting = asyncio.ensure_future(ctx.call_with_id("Tcp.Accept", {"listener": listener.handle}, "accept-1"))
    await asyncio.sleep(0.2)
    await broker.call("Sessions.CancelCall", call="accept-1")
    with pytest.raises(BreakError) as info:
        await asyncio.wait_for(accepting, 5)
    assert info.value.kind == "exn:break"
    assert info.value.status == expected_status(broker, "exn:break")
    assert info.value.message == "user break\n  operation: Tcp.Accept\n  call: accept-1"
    assert await listener.accept_ready() is False  # it accepted nothing


async def test_refused_connection_status(broker: AsyncBroker, peer: PeerServer) -> None:
    await peer.close()
    with pytest.raises(NetworkError) as info:
        await broker.tcp_connect("127.0.0.1", peer.port)
    assert info.value.kind == "exn:fail:network:errno"
    assert info.value.status == expected_status(broker, "exn:fail:network:errno")


async def test_policy_denial_is_permission_denied(broker: AsyncBroker, peer: PeerServer) -> None:
    # 0.0.0.0 is outside the test daemon's allow_connect (and would reach loopback anyway).
    with pytest.raises(PermissionDeniedError) as info:
        await broker.tcp_connect("0.0.0.0", peer.port)
    assert info.value.status == expected_status(broker, "permission-denied")
    assert info.value.message.startswith(
        f"tcp-connect: connect to 0.0.0.0:{peer.port} denied: not in --allow-connect (add 0.0.0.0/32, "
        "or allow_connect in the config's [policy] table)"
    )
