"""Delegation (DESIGN §5): ``Custodians.Delegate`` mints a token for a sandboxed child whose
sessions live under one custodian with the intersection of the delegating session's policy and
the lists given. Tested on every door: a delegated token never reaches what its parent could not,
nor what the delegation left out, nor outlives its custodian, its parent's session or its time.

What is denied is on loopback (127.0.0.2, other ports) so nothing leaves the machine even if a
check failed (DESIGN §10).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import PeerServer, eventually, read_until_eof
from sockbroker.core.broker import Principal
from sockbroker.core.policy import Policy
from sockbroker.server import Daemon
from sockbroker_client import (
    ContractError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)

#: The parent principal may connect to 127.0.0.1 only, on any port, and listen on 127.0.0.1.
PARENT_POLICY = Policy(allow_connect=["127.0.0.1/32"], allow_listen=["127.0.0.1/32"])


@pytest.fixture
async def parent(door: Any, daemon: Daemon) -> AsyncIterator[Any]:
    """A session of a principal narrower than the test daemon's default."""
    principal = Principal("parent", secrets.token_urlsafe(32), PARENT_POLICY)
    daemon.broker.principals.append(principal)
    try:
        yield await door(token=principal.token)
    finally:
        daemon.broker.principals.remove(principal)


async def test_a_delegated_session_lives_under_the_custodian_with_the_narrower_policy(
    door: Any, parent: Any, peer: PeerServer
) -> None:
    sandbox = await parent.make_custodian()
    token = await sandbox.delegate(
        expires_seconds=60,
        allow_connect=["127.0.0.0/8"],  # wider than the parent's 127.0.0.1/32: the parent's wins
        allow_ports=[str(peer.port)],
    )
    assert token.startswith("sbd_")
    child = await door(token=token)
    conn = await child.tcp_connect("127.0.0.1", peer.port)  # allowed by both
    assert conn is not None
    await peer.next()
    with pytest.raises(PermissionDeniedError):
        await child.tcp_connect("127.0.0.2", peer.port)  # the delegation allows it, the parent does not
    with pytest.raises(PermissionDeniedError):
        await child.tcp_connect("127.0.0.1", peer.port + 1 if peer.port < 65535 else 1)  # not a delegated port
    with pytest.raises(PermissionDeniedError):
        await child.tcp_listen(0, hostname="127.0.0.1")  # allow_listen empty: nothing
    sock = await child.udp_open_socket("127.0.0.1")
    with pytest.raises(PermissionDeniedError):
        await sock.send_to("127.0.0.1", peer.port + 1 if peer.port < 65535 else 1, b"x")  # nor over UDP


async def test_sessions_and_handles_stay_invisible_across_the_delegation(door: Any, parent: Any) -> None:
    sandbox = await parent.make_custodian()
    child = await door(
        token=await sandbox.delegate(expires_seconds=60, allow_listen=["127.0.0.1/32"], allow_ports=["0"])
    )
    listener = await child.tcp_listen(0, hostname="127.0.0.1")
    with pytest.raises(NotFoundError):
        await parent.describe(listener.handle)  # the child's handle is unknown to the parent
    with pytest.raises(NotFoundError):
        await child.describe(sandbox.handle)  # and the parent's custodian to the child
    assert (await parent.describe_custodian(sandbox))["children"] == []
    assert (await child.describe_custodian(child.custodian))["parent"] == ""
    if door.door != "blocking":  # its channel is the gRPC door's, tested there
        with pytest.raises(NotFoundError):
            await parent.channel.call(
                "Sessions.KeepAlive", {}, child.session
            )  # the child's session, the parent's token


async def test_shutting_the_custodian_down_revokes_the_token_and_drops_its_sessions(
    door: Any, parent: Any, daemon: Daemon, peer: PeerServer
) -> None:
    sandbox = await parent.make_custodian()
    token = await sandbox.delegate(expires_seconds=60, allow_connect=["127.0.0.1/32"], allow_ports=["0-65535"])
    child = await door(token=token)
    await child.tcp_connect("127.0.0.1", peer.port)
    reader, _ = await peer.next()
    await sandbox.shutdown_all()
    assert await read_until_eof(reader, within=5.0) == b""  # the child's socket closed with it
    await eventually(lambda: child.session not in daemon.broker.sessions)
    with pytest.raises(UnauthenticatedError):
        await door(token=token)
    with pytest.raises(ContractError):
        await sandbox.delegate(expires_seconds=60)  # a shut-down custodian delegates nothing


async def test_the_parent_session_dropping_ends_every_delegation(door: Any, daemon: Daemon) -> None:
    mother = await door()
    token = await mother.delegate(mother.custodian, expires_seconds=60)
    child = await door(token=token)
    await mother.aclose()
    await eventually(lambda: child.session not in daemon.broker.sessions)
    with pytest.raises(UnauthenticatedError):
        await door(token=token)


async def test_a_delegation_expires_with_its_sessions(door: Any, parent: Any, daemon: Daemon) -> None:
    token = await parent.delegate(parent.custodian, expires_seconds=0.5)
    child = await door(token=token)
    await asyncio.sleep(0.8)
    assert child.session not in daemon.broker.sessions
    with pytest.raises(UnauthenticatedError):
        await door(token=token)


async def test_a_delegated_session_delegates_no_wider_and_is_no_admin(
    door: Any, parent: Any, daemon: Daemon, peer: PeerServer
) -> None:
    child = await door(token=await parent.delegate(parent.custodian, expires_seconds=60, allow_ports=["1-65535"]))
    grandchild = await door(
        token=await child.delegate(
            child.custodian, expires_seconds=60, allow_connect=["0.0.0.0/0"], allow_ports=["1-65535"]
        )
    )
    with pytest.raises(PermissionDeniedError):
        await grandchild.tcp_connect("127.0.0.1", peer.port)  # the child may connect nowhere
    principal = daemon.broker.sessions.find(grandchild.session)
    assert principal is not None and not principal.caller.admin


async def test_bad_delegations_are_typed_errors(door: Any, parent: Any) -> None:
    for bad in (0, -1, float("inf")):
        with pytest.raises(ContractError):
            await parent.delegate(parent.custodian, expires_seconds=bad)
    with pytest.raises(ContractError):
        await parent.delegate(parent.custodian, expires_seconds=60, allow_connect=["not-a-network"])
    with pytest.raises(ContractError):
        await parent.delegate(parent.custodian, expires_seconds=60, allow_ports=["70000"])
    with pytest.raises(ContractError):  # each list is bounded: intersections cost their product
        await parent.delegate(parent.custodian, expires_seconds=60, allow_connect=["127.0.0.1/32"] * 257)
    with pytest.raises(NotFoundError):
        await parent.delegate("cst_" + "x" * 22, expires_seconds=60)
    listener = await parent.tcp_listen(0, hostname="127.0.0.1")
    with pytest.raises(ContractError):
        await parent.delegate(listener.handle, expires_seconds=60)
    with contextlib.suppress(Exception):
        await listener.close()


async def test_a_session_holds_a_bounded_number_of_delegations(door: Any, parent: Any, daemon: Daemon) -> None:
    limit = daemon.broker.limits.delegations_per_session
    sandbox = await parent.make_custodian()
    tokens = [await sandbox.delegate(expires_seconds=60) for _ in range(limit)]
    assert len(set(tokens)) == limit
    with pytest.raises(ResourceExhaustedError):
        await parent.delegate(parent.custodian, expires_seconds=60)
    await sandbox.shutdown_all()  # revokes them all: their places are free again
    assert (await parent.delegate(parent.custodian, expires_seconds=60)).startswith("sbd_")
