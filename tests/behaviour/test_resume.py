"""Session resume (DESIGN §5): a session opened with ``grace_seconds`` outlives a broken
attachment for that long, and ``Sessions.Resume`` with its token takes it back with every handle,
queued byte and pending connection intact. A wrong, spent or late token is ``not-found``.

Every test runs through every door (the ``door`` fixture); the client's ``abandon()`` breaks the
attachment and the connection as a crash would, without closing the session.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import PeerServer, eventually, read_until_eof
from sockbroker.core.states import SessionState
from sockbroker.server import Daemon
from sockbroker_client import ContractError, NotFoundError

GRACE = 30.0


async def _in_grace(daemon: Daemon, session: str) -> None:
    """Wait until the daemon has seen the attachment break."""

    def waiting() -> bool:
        found = daemon.broker.sessions.find(session)
        return found is not None and found.state is SessionState.GRACE

    await eventually(waiting, within=5.0)


async def test_open_grants_a_bounded_grace_and_a_resume_token(door: Any, daemon: Daemon) -> None:
    plain = await door()
    assert plain.grace_seconds == 0 and plain.resume_token == ""
    graced = await door(grace_seconds=GRACE)
    assert graced.grace_seconds == GRACE and graced.resume_token.startswith("sbr_")
    clamped = await door(grace_seconds=1e9)
    assert clamped.grace_seconds == daemon.broker.limits.max_grace_seconds
    for bad in (-1.0, float("inf")):
        with pytest.raises(ContractError):
            await door(grace_seconds=bad)


async def test_a_resumed_session_has_every_handle_and_byte(door: Any, daemon: Daemon, peer: PeerServer) -> None:
    broker = await door(grace_seconds=GRACE)
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    port = (await listener.addresses(port_numbers=True))[1]
    conn_in, conn_out = await broker.tcp_connect("127.0.0.1", peer.port)
    reader, writer = await peer.next()
    session, custodian = broker.session, broker.custodian.handle
    resumption = broker.resumption

    await broker.abandon()
    await _in_grace(daemon, session)
    # While it waits: the peer's bytes queue, a client connects to the listener, and the
    # session answers nothing but a resume.
    writer.write(b"sent while away")
    await writer.drain()
    _, early = await asyncio.open_connection("127.0.0.1", port)
    early.write(b"hello")
    await early.drain()
    with pytest.raises(NotFoundError):
        await door(resume=(session, "sbr_wrong"))

    back = await door(resume=resumption)
    assert back.session == session and back.custodian.handle == custodian
    assert back.resume_token and back.resume_token != resumption[1]
    data = await back.call("Ports.Read", port=conn_in.handle, max=15, mode="exact")
    assert data["data"] == b"sent while away"
    await back.call("Ports.Write", port=conn_out.handle, data=b"after resume", flush=True)
    assert await reader.readexactly(12) == b"after resume"
    accepted = await back.tcp_accept(listener.handle)
    assert accepted is not None
    assert await accepted[0].read_bytes(5) == b"hello"
    early.close()
    writer.close()


async def test_a_spent_token_and_a_late_one_are_not_found(door: Any, daemon: Daemon, peer: PeerServer) -> None:
    broker = await door(grace_seconds=GRACE)
    spent = broker.resumption
    await broker.abandon()
    await _in_grace(daemon, broker.session)
    back = await door(resume=spent)
    with pytest.raises(NotFoundError):
        await door(resume=spent)  # each resume spends its token

    late = await door(grace_seconds=0.3)
    await late.tcp_connect("127.0.0.1", peer.port)
    reader, _ = await peer.next()
    resumption = late.resumption
    await late.abandon()
    assert await read_until_eof(reader, within=5.0) == b""  # dropped after its grace period
    assert late.session not in daemon.broker.sessions
    with pytest.raises(NotFoundError):
        await door(resume=resumption)
    await back.keep_alive()


async def test_another_principal_cannot_resume(door: Any, daemon: Daemon, other_token: str) -> None:
    broker = await door(grace_seconds=GRACE)
    resumption = broker.resumption
    await broker.abandon()
    await _in_grace(daemon, broker.session)
    with pytest.raises(NotFoundError):
        await door(token=other_token, resume=resumption)
    assert (await door(resume=resumption)).session == resumption[0]


async def test_resuming_before_the_old_attachment_breaks_keeps_the_session(door: Any, daemon: Daemon) -> None:
    """A client whose network blipped may come back before the daemon saw the old attachment go:
    the resume takes the session over, and the old attachment breaking later changes nothing."""
    old = await door(grace_seconds=GRACE)
    back = await door(resume=old.resumption)
    await old.abandon()  # the old attachment breaks now, after the resume
    await asyncio.sleep(0.2)
    session = daemon.broker.sessions.find(back.session)
    assert session is not None and session.state is not SessionState.GRACE
    assert await back.keep_alive() > 0


async def test_without_grace_a_broken_attachment_still_drops_at_once(door: Any, daemon: Daemon) -> None:
    broker = await door()
    session = broker.session
    await broker.abandon()
    await eventually(lambda: session not in daemon.broker.sessions, within=5.0)


async def test_a_lapsed_lease_waits_for_a_resume_too(door: Any, daemon: Daemon) -> None:
    broker = await door(attach=False, lease_seconds=1.0, grace_seconds=GRACE)
    udp = await broker.udp_open_socket("127.0.0.1")
    await asyncio.sleep(1.2)  # the lease runs out; nothing renews it
    await _in_grace(daemon, broker.session)
    with pytest.raises(NotFoundError):
        await broker.keep_alive()  # a session waiting for a resume answers nothing else
    back = await door(attach=False, resume=broker.resumption)
    assert (await back.describe(udp.handle))["kind"] == "udp"


async def test_a_call_blocked_when_the_connection_broke_loses_nothing(door: Any, daemon: Daemon) -> None:
    """An accept waiting when the connection broke is cancelled in the daemon (nothing taken); the
    connection that arrives during the grace period waits in the listener for the resumed session."""
    broker = await door(grace_seconds=GRACE)
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    port = (await listener.addresses(port_numbers=True))[1]
    accepting = asyncio.ensure_future(broker.tcp_accept(listener))
    await asyncio.sleep(0.2)  # the accept is waiting in the daemon
    resumption = broker.resumption
    await broker.abandon()
    await asyncio.gather(accepting, return_exceptions=True)  # its client is gone; it ends somehow
    await _in_grace(daemon, broker.session)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"queued")
    await writer.drain()
    back = await door(resume=resumption)
    accepted = await back.tcp_accept(listener.handle, timeout=5)
    if accepted is not None:
        port = accepted[0].handle
    else:
        # The old accept took it, and its reply reached the client's kernel before the client
        # dropped it (a gRPC channel may share its TCP connection with another to the same
        # daemon): to the daemon that is a delivered reply. The connection is then in the
        # custodian, where Custodians.Describe finds it (DESIGN §2: nothing silently dropped).
        handles = (await back.describe_custodian(back.custodian))["handles"]
        port = next(h["handle"] for h in handles if h["kind"] == "tcp-input-port")
    assert (await back.call("Ports.Read", port=port, max=6, mode="exact"))["data"] == b"queued"
    writer.close()
