"""The UDP core (sockbroker.core.udp) on real sockets: 127.0.0.1 and ::1 only.

Tests that need a send queue that really fills (``udp-send*`` returning #f, a send timing out, a
cancelled blocked send) run their sockets in a private network namespace whose loopback has a
slow token-bucket qdisc; they skip, saying why, where namespaces cannot be made.
Multicast runs on the host's loopback with the interface set to 127.0.0.1 and TTL 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import socket
import subprocess
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from sockbroker.core.errors import (
    ContractError,
    NetworkErrnoError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from sockbroker.core.limits import Limits
from sockbroker.core.policy import Policy
from sockbroker.core.principals import Principal
from sockbroker.core.resources import Custodian
from sockbroker.core.sessions import Session, SessionManager
from sockbroker.core.udp import MAX_DATAGRAM, UdpSocket, UdpState, datagram_slice, udp_open

POLICY = Policy(
    allow_connect=["127.0.0.0/8", "::1/128", "239.255.0.0/16"],
    allow_listen=["127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128"],
    allow_multicast=["224.0.0.0/4"],
)
GROUP = "239.255.0.1"
KIB = 1000
#: A datagram stream's queue holds this many datagrams of :data:`KIB` bytes (queues count bytes).
STREAM_QUEUE = 4
T = TypeVar("T")
#: A short wait for "nothing arrives": loopback delivers synchronously, so this is generous.
QUIET = 0.2


# ───────────────────────────── fixtures and helpers ─────────────────────────────


@pytest.fixture
async def manager() -> AsyncIterator[SessionManager]:
    mgr = SessionManager(Limits(udp_stream_buffer=STREAM_QUEUE * (KIB + 256), datagram_overhead=256))
    try:
        yield mgr
    finally:
        mgr.drop_all(reason="test over")


@pytest.fixture
async def session(manager: SessionManager) -> Session:
    return session_for(manager, "test", POLICY)


def session_for(manager: SessionManager, name: str, policy: Policy) -> Session:
    """A session of a principal ``name`` with ``policy``, straight from the manager."""
    principal = Principal(name, policy=policy)
    return manager.open(principal, principal, lambda: policy)


async def opened(session: Session, host: str | None = None) -> UdpSocket:
    return await udp_open(session, family_hostname=host, family_port=None, custodian=None)


async def bound(session: Session, host: str = "127.0.0.1", port: int = 0, *, reuse: bool = False) -> UdpSocket:
    sock = await opened(session, host)
    await sock.bind(host, port, reuse)
    return sock


def port_of(sock: UdpSocket) -> int:
    return sock.addresses()[1]


async def recv(sock: UdpSocket, max_bytes: int | None = None) -> tuple[bytes, int, str, int]:
    got = await sock.receive(max_bytes, wait=True, timeout=5)
    assert got is not None, "no datagram within 5 s"
    return got


async def nothing_arrives(sock: UdpSocket, within: float = QUIET) -> None:
    assert await sock.receive(None, wait=True, timeout=within) is None


# ───────────────────────────── udp-open-socket ─────────────────────────────


async def test_open_gives_an_unbound_ipv4_socket(session: Session) -> None:
    sock = await opened(session)
    assert sock.handle.startswith("udp_")
    assert session.table.lookup(sock.handle, UdpSocket, "t") is sock
    assert sock.custodian is session.root
    info = sock.describe()
    assert info["kind"] == "udp"
    assert (info["bound"], info["connected"], info["closed"], info["family"]) == (False, False, False, "inet")
    assert (info["queue_dropped"], info["kernel_dropped"]) == (0, 0)
    assert sock.state is UdpState.UNBOUND
    assert sock.addresses() == ("0.0.0.0", 0, "0.0.0.0", 0)
    assert sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1


async def test_open_takes_its_family_from_the_hostname(session: Session) -> None:
    six = await opened(session, "::1")
    assert six.describe()["family"] == "inet6"
    assert six.family == socket.AF_INET6
    four = await opened(session, "127.0.0.1")
    assert four.describe()["family"] == "inet"
    with_port = await udp_open(session, family_hostname="127.0.0.1", family_port=53, custodian=None)
    assert with_port.family == socket.AF_INET
    assert not with_port.bound  # the family arguments do not bind


@pytest.mark.parametrize("port", [0, 65536, -1, True, "53", 1.5])
async def test_open_family_port_is_a_port_number(session: Session, port: object) -> None:
    with pytest.raises(ContractError, match="port-number"):
        await udp_open(session, family_hostname=None, family_port=port, custodian=None)  # type: ignore[arg-type]


async def test_open_contract_and_custodian_errors(manager: SessionManager, session: Session) -> None:
    with pytest.raises(ContractError):
        await udp_open(session, family_hostname=42, family_port=None, custodian=None)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await udp_open(session, family_hostname=None, family_port=None, custodian="cst_nope")
    child = Custodian(session.table, session.root)
    sock = await udp_open(session, family_hostname=None, family_port=None, custodian=child.handle)
    assert sock.custodian is child
    child.force_close()
    assert sock.closed
    with pytest.raises(ContractError, match="shut down"):
        await udp_open(session, family_hostname=None, family_port=None, custodian=child.handle)
    small = SessionManager(Limits(handles_per_session=2))
    try:
        tiny = session_for(small, "tiny", POLICY)  # the root custodian is one handle
        await opened(tiny)
        with pytest.raises(ResourceExhaustedError):
            await opened(tiny)
    finally:
        small.drop_all(reason="test over")


# ───────────────────────────── udp-bind! ─────────────────────────────


async def test_bind_port_zero_binds_an_ephemeral_port(session: Session) -> None:
    sock = await bound(session)
    host, port, rhost, rport = sock.addresses()
    assert (host, rhost, rport) == ("127.0.0.1", "0.0.0.0", 0)
    assert 1 <= port <= 65535
    assert sock.describe()["bound"] is True
    assert sock.state is UdpState.BOUND


async def test_bind_without_hostname_binds_every_address(session: Session) -> None:
    sock = await opened(session)
    await sock.bind(None, 0)
    assert sock.addresses()[0] == "0.0.0.0"
    six = await opened(session, "::1")
    await six.bind(None, 0)
    assert six.addresses()[0] == "::"


async def test_bind_twice_or_closed_is_a_network_error(session: Session) -> None:
    sock = await bound(session)
    with pytest.raises(NetworkError, match="already bound") as info:
        await sock.bind("127.0.0.1", 0)
    assert type(info.value) is NetworkError
    sock.close()
    with pytest.raises(NetworkError, match="closed"):
        await sock.bind("127.0.0.1", 0)
    fresh = await opened(session)
    fresh.close()
    with pytest.raises(NetworkError, match="closed"):
        await fresh.bind("127.0.0.1", 0)


@pytest.mark.parametrize("port", [-1, 65536, None, True, "0"])
async def test_bind_port_is_a_listen_port_number(session: Session, port: object) -> None:
    sock = await opened(session)
    with pytest.raises(ContractError, match="listen-port-number"):
        await sock.bind("127.0.0.1", port)
    assert not sock.bound


async def test_bind_reuse_lets_two_sockets_share_a_port(session: Session) -> None:
    first = await bound(session, reuse=True)
    port = port_of(first)
    second = await bound(session, port=port, reuse=True)
    assert port_of(second) == port
    for sock in (first, second):
        assert sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0  # Racket sets only SO_REUSEADDR
    third = await opened(session)
    with pytest.raises(NetworkErrnoError) as info:
        await third.bind("127.0.0.1", port, False)
    assert info.value.errno == errno.EADDRINUSE
    assert str(info.value).startswith("udp-bind!: can't bind\n")
    assert not third.bound


async def test_bind_obeys_the_listen_policy(manager: SessionManager) -> None:
    strict = session_for(manager, "strict", Policy(allow_listen=["127.0.0.1/32"]))
    sock = await opened(strict)
    with pytest.raises(PermissionDeniedError):
        await sock.bind(None, 0)
    assert not sock.bound
    await sock.bind("127.0.0.1", 0)


# ───────────────────────────── send and receive ─────────────────────────────


async def test_round_trip_reports_the_sender(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    assert await sender.send_to("127.0.0.1", port_of(receiver), b"hello") is True
    data, count, host, port = await recv(receiver)
    assert (data, count, host) == (b"hello", 5, "127.0.0.1")
    assert port == port_of(sender)


async def test_sending_binds_an_unbound_socket(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    assert not sender.bound
    await sender.send_to("127.0.0.1", port_of(receiver), b"x")
    assert sender.bound and sender.describe()["bound"] is True
    assert sender.state is UdpState.BOUND
    assert port_of(sender) != 0
    await recv(receiver)


async def test_receive_on_an_unbound_socket_is_a_network_error(session: Session) -> None:
    sock = await opened(session)
    with pytest.raises(NetworkError) as info:
        await sock.receive(None, wait=True, timeout=1)
    assert str(info.value).startswith("udp-receive!: udp socket is not bound")
    with pytest.raises(NetworkError, match="udp-receive!\\*: udp socket is not bound"):
        await sock.receive(None, wait=False)


async def test_hostnames_resolve(session: Session) -> None:
    receiver = await bound(session, "127.0.0.1")
    sender = await opened(session)
    await sender.send_to("localhost", port_of(receiver), b"by name")
    assert (await recv(receiver))[0] == b"by name"


async def test_send_to_obeys_the_connect_policy(manager: SessionManager) -> None:
    # 127.0.0.2 is denied: should the policy ever fail, the datagram still stays on this machine.
    sender = await opened(session_for(manager, "loopback only", Policy(allow_connect=["127.0.0.1/32"])))
    with pytest.raises(PermissionDeniedError):
        await sender.send_to("127.0.0.2", 9, b"never sent")
    assert not sender.bound  # nothing was sent: the kernel did not even bind it


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(None, None, b"abcdef"), (2, None, b"cdef"), (1, 3, b"bc"), (6, 6, b""), (0, 0, b"")],
)
async def test_start_and_end_select_the_datagram(
    session: Session, start: int | None, end: int | None, expected: bytes
) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    await sender.send_to("127.0.0.1", port_of(receiver), b"abcdef", start, end)
    data, count, _, _ = await recv(receiver)
    assert (data, count) == (expected, len(expected))


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (7, None, "starting index is out of range"),
        (4, 3, "ending index is out of range"),
        (0, 7, "ending index is out of range"),
        (-1, None, "exact-nonnegative-integer"),
        (None, -1, "exact-nonnegative-integer"),
        (True, None, "exact-nonnegative-integer"),
        (1.0, None, "exact-nonnegative-integer"),
    ],
)
async def test_start_and_end_out_of_range_are_contract_errors(
    session: Session, start: object, end: object, message: str
) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    with pytest.raises(ContractError, match=message):
        await sender.send_to("127.0.0.1", port_of(receiver), b"abcdef", start, end)
    await sender.connect("127.0.0.1", port_of(receiver))
    with pytest.raises(ContractError, match=message):
        await sender.send(b"abcdef", start, end)
    await nothing_arrives(receiver, 0.05)


async def test_send_argument_contracts(session: Session) -> None:
    sender = await opened(session)
    with pytest.raises(ContractError, match="bytes"):
        await sender.send_to("127.0.0.1", 9, "text")
    with pytest.raises(ContractError, match="port-number"):
        await sender.send_to("127.0.0.1", 0, b"x")
    with pytest.raises(ContractError):
        await sender.send_to(None, 9, b"x")
    with pytest.raises(ContractError):
        await sender.send_to("127.0.0.1", 9, b"x", timeout=-1)
    assert datagram_slice("w", bytearray(b"abc"), 1, None) == b"bc"


async def test_empty_datagram_is_sent_and_received(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    assert await sender.send_to("127.0.0.1", port_of(receiver), b"")
    data, count, host, _ = await recv(receiver)
    assert (data, count, host) == (b"", 0, "127.0.0.1")


async def test_long_datagram_is_truncated_and_the_rest_discarded(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    await sender.send_to("127.0.0.1", port_of(receiver), bytes(range(100)))
    await sender.send_to("127.0.0.1", port_of(receiver), b"next")
    data, count, _, _ = await recv(receiver, 10)
    assert (data, count) == (bytes(range(10)), 10)
    assert (await recv(receiver))[0] == b"next"


async def test_max_zero_consumes_the_datagram(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    await sender.send_to("127.0.0.1", port_of(receiver), b"first")
    await sender.send_to("127.0.0.1", port_of(receiver), b"second")
    data, count, host, port = await recv(receiver, 0)
    assert (data, count, host, port) == (b"", 0, "127.0.0.1", port_of(sender))
    assert (await recv(receiver))[0] == b"second"


@pytest.mark.parametrize("max_bytes", [-1, 65536, True, "10", 1.0])
async def test_receive_max_is_checked(session: Session, max_bytes: object) -> None:
    receiver = await bound(session)
    with pytest.raises(ContractError, match="integer-in 0 65535"):
        await receiver.receive(max_bytes, wait=False)


async def test_largest_datagrams(session: Session) -> None:
    receiver = await bound(session)
    receiver.set_receive_buffer_size(1 << 20)
    sender = await opened(session)
    biggest = os.urandom(MAX_DATAGRAM[socket.AF_INET])
    assert len(biggest) == 65507
    await sender.send_to("127.0.0.1", port_of(receiver), biggest)
    assert (await recv(receiver))[0] == biggest
    six = await bound(session, "::1")
    six.set_receive_buffer_size(1 << 20)
    sender6 = await opened(session, "::1")
    biggest6 = os.urandom(65527)
    await sender6.send_to("::1", port_of(six), biggest6)
    data, count, host, _ = await recv(six)
    assert (data, count, host) == (biggest6, 65527, "::1")


async def test_too_long_datagram_is_emsgsize_and_nothing_is_sent(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    with pytest.raises(NetworkErrnoError) as info:
        await sender.send_to("127.0.0.1", port_of(receiver), bytes(65508))
    assert info.value.errno == errno.EMSGSIZE
    assert info.value.errno_family == "posix"
    assert str(info.value).startswith("udp-send-to: send failed\n")
    assert f"errno={errno.EMSGSIZE}" in str(info.value)
    assert not sender.bound
    await sender.connect("127.0.0.1", port_of(receiver))
    with pytest.raises(NetworkErrnoError) as info:
        await sender.send(bytes(65508))
    assert info.value.errno == errno.EMSGSIZE
    with pytest.raises(NetworkErrnoError, match="udp-send-evt: send failed"):
        sender.perform_send(None, bytes(65508), "udp-send-evt")
    await nothing_arrives(receiver, 0.05)


async def test_too_long_ipv6_datagram(session: Session) -> None:
    receiver = await bound(session, "::1")
    sender = await opened(session, "::1")
    with pytest.raises(NetworkErrnoError) as info:
        await sender.send_to("::1", port_of(receiver), bytes(65528))
    assert info.value.errno == errno.EMSGSIZE
    await nothing_arrives(receiver, 0.05)


async def test_nowait_receive_returns_none_and_timeout_returns_none(session: Session) -> None:
    receiver = await bound(session)
    assert await receiver.receive(None, wait=False) is None
    started = time.monotonic()
    assert await receiver.receive(None, wait=True, timeout=0.1) is None
    assert 0.08 <= time.monotonic() - started < 2
    assert await receiver.receive(None, wait=True, timeout=0) is None
    with pytest.raises(ContractError):
        await receiver.receive(None, wait=True, timeout=-1)
    sender = await opened(session)
    await sender.send_to("127.0.0.1", port_of(receiver), b"now")
    assert await receiver.receive(None, wait=False) == (b"now", 3, "127.0.0.1", port_of(sender))


async def test_nowait_send_to_sends_when_there_is_room(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    assert await sender.send_to("127.0.0.1", port_of(receiver), b"star", wait=False) is True
    assert (await recv(receiver))[0] == b"star"


async def test_a_blocked_receive_wakes_for_a_datagram(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    task = asyncio.create_task(receiver.receive(None, wait=True, timeout=5))
    await asyncio.sleep(0.05)
    assert not task.done()
    await sender.send_to("127.0.0.1", port_of(receiver), b"wake")
    got = await asyncio.wait_for(task, 5)
    assert got is not None and got[0] == b"wake"


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
async def test_a_cancelled_receive_never_eats_a_datagram(session: Session, turns: int) -> None:
    """Cancel a blocked receive ``turns`` loop turns after the datagram was sent: the datagram is
    either the receive's result or still in the socket, never lost."""
    receiver = await bound(session)
    sender = await opened(session)
    task = asyncio.create_task(receiver.receive(None, wait=True, timeout=None))
    await asyncio.sleep(0.02)
    await sender.send_to("127.0.0.1", port_of(receiver), b"precious")
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    try:
        result = await task
    except asyncio.CancelledError:
        result = None
    left = await receiver.receive(None, wait=False)
    delivered = [r for r in (result, left) if r is not None]
    assert len(delivered) == 1 and delivered[0][0] == b"precious"


async def test_a_receive_timing_out_as_the_datagram_arrives_never_eats_it(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    for attempt in range(20):
        task = asyncio.create_task(receiver.receive(None, wait=True, timeout=0.01))
        await asyncio.sleep(0.01)
        await sender.send_to("127.0.0.1", port_of(receiver), b"%d" % attempt)
        result = await task
        left = await receiver.receive(None, wait=False)
        delivered = [r for r in (result, left) if r is not None]
        assert [r[0] for r in delivered] == [b"%d" % attempt]


# ───────────────────────────── udp-connect! ─────────────────────────────


async def test_connect_send_and_disconnect(session: Session) -> None:
    receiver = await bound(session)
    sock = await opened(session)
    await sock.connect("127.0.0.1", port_of(receiver))
    assert sock.connected and sock.bound and sock.state is UdpState.CONNECTED
    assert sock.describe()["connected"] is True
    local_host, local_port, remote_host, remote_port = sock.addresses()
    assert (local_host, remote_host, remote_port) == ("127.0.0.1", "127.0.0.1", port_of(receiver))
    assert local_port != 0
    assert await sock.send(b"via send") is True
    assert (await recv(receiver))[:3] == (b"via send", 8, "127.0.0.1")
    with pytest.raises(NetworkError, match="udp-send-to: udp socket is connected"):
        await sock.send_to("127.0.0.1", port_of(receiver), b"no")
    await sock.connect(None, None)
    assert not sock.connected
    assert sock.describe()["connected"] is False
    assert sock.addresses()[2:] == ("0.0.0.0", 0)
    with pytest.raises(NetworkError, match="udp-send: udp socket is not connected"):
        await sock.send(b"no")
    assert await sock.send_to("127.0.0.1", port_of(receiver), b"after")
    assert (await recv(receiver))[0] == b"after"
    await sock.connect(None, None)  # disconnecting an unconnected socket is fine


async def test_send_on_an_unconnected_socket_is_a_network_error(session: Session) -> None:
    sock = await opened(session)
    with pytest.raises(NetworkError, match="not connected") as info:
        await sock.send(b"x")
    assert type(info.value) is NetworkError
    with pytest.raises(NetworkError, match="udp-send\\*: udp socket is not connected"):
        await sock.send(b"x", wait=False)


async def test_connect_with_one_of_hostname_and_port_is_a_contract_error(session: Session) -> None:
    sock = await opened(session)
    with pytest.raises(ContractError):
        await sock.connect("127.0.0.1", None)
    with pytest.raises(ContractError):
        await sock.connect(None, 9)
    with pytest.raises(ContractError, match="port-number"):
        await sock.connect("127.0.0.1", 0)
    assert not sock.connected


async def test_connect_a_closed_socket_is_a_network_error(session: Session) -> None:
    sock = await opened(session)
    sock.close()
    with pytest.raises(NetworkError, match="closed"):
        await sock.connect("127.0.0.1", 9)
    with pytest.raises(NetworkError, match="closed"):
        await sock.connect(None, None)


async def test_connect_obeys_the_connect_policy(manager: SessionManager) -> None:
    sock = await opened(session_for(manager, "loopback only", Policy(allow_connect=["127.0.0.1/32"])))
    with pytest.raises(PermissionDeniedError):
        await sock.connect("127.0.0.2", 9)
    assert not sock.connected


async def test_a_connected_socket_receives_only_from_its_peer(session: Session) -> None:
    receiver = await bound(session)
    peer = await bound(session)
    stranger = await bound(session)
    # queued before the connect: the kernel keeps it, the broker discards it
    await stranger.send_to("127.0.0.1", port_of(receiver), b"early stranger")
    await receiver.connect("127.0.0.1", port_of(peer))
    await stranger.send_to("127.0.0.1", port_of(receiver), b"late stranger")
    await peer.send_to("127.0.0.1", port_of(receiver), b"peer")
    data, _, host, port = await recv(receiver)
    assert (data, host, port) == (b"peer", "127.0.0.1", port_of(peer))
    await nothing_arrives(receiver)
    # re-connect to the stranger: now it is heard, and the old peer is not
    await receiver.connect("127.0.0.1", port_of(stranger))
    await peer.send_to("127.0.0.1", port_of(receiver), b"old peer")
    await stranger.send_to("127.0.0.1", port_of(receiver), b"new peer")
    assert (await recv(receiver))[0] == b"new peer"
    await nothing_arrives(receiver)


@pytest.mark.parametrize("host", ["127.0.0.1", None, "::1"])
async def test_disconnect_keeps_the_binding(session: Session, host: str | None) -> None:
    sock = await opened(session, host)
    await sock.bind(host, 0)  # an ephemeral port, which Linux forgets on disconnect
    before = sock.addresses()[:2]
    await sock.connect(host or "127.0.0.1", 9)
    await sock.connect(None, None)
    assert sock.bound and sock.addresses()[:2] == before


async def test_disconnect_keeps_the_binding_a_send_made(session: Session) -> None:
    receiver = await bound(session)
    sock = await opened(session)
    await sock.send_to("127.0.0.1", port_of(receiver), b"binds")
    port = port_of(sock)
    await sock.connect("127.0.0.1", port_of(receiver))
    await sock.connect(None, None)
    assert sock.bound and port_of(sock) == port
    await sock.send_to("127.0.0.1", port_of(receiver), b"same port")
    assert [(await recv(receiver))[3] for _ in range(2)] == [port, port]


async def test_a_socket_bound_only_by_connect_is_unbound_after_disconnect(session: Session) -> None:
    sock = await opened(session)
    await sock.connect("127.0.0.1", 9)
    assert sock.bound  # the kernel bound it to connect it
    await sock.connect(None, None)
    assert not sock.bound and sock.addresses() == ("0.0.0.0", 0, "0.0.0.0", 0)


# ───────────────────────────── close ─────────────────────────────


async def test_close_discards_and_a_second_close_fails(session: Session) -> None:
    receiver = await bound(session)
    port = port_of(receiver)
    sender = await opened(session)
    await sender.send_to("127.0.0.1", port, b"never read")
    receiver.close()
    assert receiver.closed and receiver.state is UdpState.CLOSED
    with pytest.raises(NetworkError, match="udp-close: udp socket was already closed"):
        receiver.close()
    with pytest.raises(NetworkError, match="closed"):
        await receiver.receive(None, wait=False)
    with pytest.raises(NetworkError, match="closed"):
        await receiver.send_to("127.0.0.1", port, b"x")
    with pytest.raises(NetworkError, match="tcp-addresses: udp socket is closed"):  # Racket's udp-addresses
        receiver.addresses()
    receiver.force_close()  # idempotent, never raises
    info = receiver.describe()
    assert (info["closed"], info["bound"], info["connected"], info["kind"]) == (True, False, False, "udp")
    # the port is free again and the old datagram is gone with the socket
    again = await bound(session, port=port)
    await nothing_arrives(again)


async def test_close_wakes_a_blocked_receive_with_a_network_error(session: Session) -> None:
    receiver = await bound(session)
    task = asyncio.create_task(receiver.receive(None, wait=True, timeout=5))
    await asyncio.sleep(0.02)
    receiver.close()
    with pytest.raises(NetworkError, match="closed"):
        await asyncio.wait_for(task, 5)


async def test_custodian_shutdown_closes_the_socket(session: Session) -> None:
    child = Custodian(session.table, session.root)
    sock = await udp_open(session, family_hostname=None, family_port=None, custodian=child.handle)
    await sock.bind("127.0.0.1", 0)
    task = asyncio.create_task(sock.receive(None, wait=True, timeout=5))
    await asyncio.sleep(0.01)
    child.force_close()
    assert sock.closed and sock.sock.fileno() == -1  # the fd is released
    with pytest.raises(NetworkError, match="closed"):
        await asyncio.wait_for(task, 5)
    with pytest.raises(NetworkError):
        sock.close()
    assert session.table.find(sock.handle) is sock  # a tombstone: still answers "closed"


# ───────────────────────────── sync primitives ─────────────────────────────


async def until(predicate: Any, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_readiness_and_nonblocking_primitives(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    assert receiver.receive_ready() is False
    assert receiver.try_receive(100, "udp-receive!-evt") is None
    assert sender.send_ready() is True
    sockaddr = ("127.0.0.1", port_of(receiver))
    assert sender.perform_send(sockaddr, b"evt", "udp-send-to-evt") is True
    assert sender.bound
    await until(receiver.receive_ready)
    assert receiver.try_receive(2, "udp-receive!-evt") == (b"ev", 2, "127.0.0.1", port_of(sender))
    assert receiver.receive_ready() is False
    with pytest.raises(NetworkError, match="udp-send-evt: udp socket is not connected"):
        sender.perform_send(None, b"x", "udp-send-evt")
    unbound = await opened(session)
    assert unbound.receive_ready() is True  # a receive would not block: it would raise
    with pytest.raises(NetworkError, match="not bound"):
        unbound.try_receive(10, "udp-receive!-evt")
    receiver.close()
    assert receiver.receive_ready() is True and receiver.send_ready() is True


async def test_waiters_share_one_registration(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    waiters = [asyncio.create_task(receiver.wait_readable()) for _ in range(3)]
    await asyncio.sleep(0.02)
    assert not any(w.done() for w in waiters)
    await sender.send_to("127.0.0.1", port_of(receiver), b"one")
    await asyncio.wait_for(asyncio.gather(*waiters), 5)  # every waiter wakes
    assert receiver.try_receive(10) is not None
    writers = [asyncio.create_task(sender.wait_writable()) for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*writers), 5)
    assert receiver.arm_readable() is receiver.readable


# ───────────────────────────── options ─────────────────────────────


def _proc_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


async def test_receive_buffer_size(session: Session) -> None:
    sock = await opened(session)
    sock.set_receive_buffer_size(65536)
    assert sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536
    for bad in (0, -5, True, "1024", 1.5):
        with pytest.raises(ContractError, match="exact-positive-integer"):
            sock.set_receive_buffer_size(bad)
    limit = _proc_int("/proc/sys/net/core/rmem_max")
    sock.set_receive_buffer_size(limit)
    with pytest.raises(NetworkErrnoError) as info:
        sock.set_receive_buffer_size(limit + 1)
    assert info.value.errno == errno.ENOBUFS
    assert str(info.value).startswith("udp-set-receive-buffer-size!: ")
    sock.close()
    with pytest.raises(NetworkError, match="closed"):
        sock.set_receive_buffer_size(1024)


async def test_ttl(session: Session) -> None:
    sock = await opened(session)
    assert sock.ttl() == _proc_int("/proc/sys/net/ipv4/ip_default_ttl")
    sock.set_ttl(5)
    assert sock.ttl() == 5 == sock.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
    sock.set_ttl(255)
    assert sock.ttl() == 255
    for bad in (256, -1, True, "5", 1.0):
        with pytest.raises(ContractError, match="byte"):
            sock.set_ttl(bad)
    with pytest.raises(NetworkErrnoError) as info:
        sock.set_ttl(0)  # Linux refuses an IPv4 TTL of 0
    assert info.value.errno == errno.EINVAL
    sock.close()
    with pytest.raises(NetworkError, match="udp-ttl: udp socket is closed"):
        sock.ttl()


async def test_ipv6_options_use_hop_limits(session: Session) -> None:
    sock = await opened(session, "::1")
    sock.set_ttl(7)
    assert sock.ttl() == 7 == sock.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
    sock.set_multicast_ttl(1)
    assert sock.multicast_ttl() == 1 == sock.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS)
    sock.set_multicast_loopback(False)
    assert sock.multicast_loopback() is False
    sock.set_multicast_loopback(True)
    assert sock.multicast_loopback() is True


async def test_ipv4_multicast_options_on_an_ipv6_socket_are_the_kernels_to_judge(session: Session) -> None:
    # Racket sets the IPv4 options on any socket; Linux takes them on an IPv6 one (IPv4-mapped traffic).
    sock = await bound(session, "::1")
    assert sock.multicast_interface() == "0.0.0.0"
    await sock.set_multicast_interface("127.0.0.1")
    assert sock.multicast_interface() == "127.0.0.1"
    await sock.multicast_join(GROUP, "127.0.0.1")
    with pytest.raises(NetworkErrnoError) as info:
        await sock.multicast_join(GROUP, "127.0.0.1")
    assert (info.value.errno, str(info.value).split("\n")[0]) == (
        errno.EADDRINUSE,
        "udp-multicast-join-group!: setsockopt failed",
    )
    await sock.multicast_leave(GROUP, "127.0.0.1")


async def test_multicast_options(session: Session) -> None:
    sock = await opened(session)
    assert sock.multicast_ttl() == 1
    sock.set_multicast_ttl(0)
    assert sock.multicast_ttl() == 0
    for bad in (256, -1, False, None):
        with pytest.raises(ContractError, match="byte"):
            sock.set_multicast_ttl(bad)
    assert sock.multicast_loopback() is True
    sock.set_multicast_loopback(0)
    assert sock.multicast_loopback() is False
    sock.set_multicast_loopback("any true value")
    assert sock.multicast_loopback() is True
    assert sock.multicast_interface() == "0.0.0.0"
    await sock.set_multicast_interface("127.0.0.1")
    assert sock.multicast_interface() == "127.0.0.1"
    await sock.set_multicast_interface(None)
    assert sock.multicast_interface() == "0.0.0.0"
    await sock.set_multicast_interface("localhost")
    assert sock.multicast_interface() == "127.0.0.1"
    await sock.set_multicast_interface("0.0.0.0")
    assert sock.multicast_interface() == "0.0.0.0"
    with pytest.raises(ContractError):
        await sock.set_multicast_interface(7)


@pytest.mark.parametrize("group", ["10.0.0.1", "127.0.0.1", "localhost", "240.0.0.1", "255.255.255.255"])
async def test_a_unicast_group_is_the_kernels_refusal(manager: SessionManager, group: str) -> None:
    # As in Racket: the group resolves (IPv4), then the kernel refuses it (EINVAL to join,
    # EADDRNOTAVAIL to leave). A policy that allows no group at all does not get in the way:
    # it names groups, and these are none.
    sock = await bound(session_for(manager, "no groups", Policy()))
    with pytest.raises(NetworkErrnoError) as info:
        await sock.multicast_join(group, "127.0.0.1")
    assert (info.value.errno, str(info.value).split("\n")[0]) == (
        errno.EINVAL,
        "udp-multicast-join-group!: setsockopt failed",
    )
    with pytest.raises(NetworkErrnoError) as info:  # on lo: with no interface, the route to the group picks one
        await sock.multicast_leave(group, "127.0.0.1")
    assert (info.value.errno, str(info.value).split("\n")[0]) == (
        errno.EADDRNOTAVAIL,
        "udp-multicast-leave-group!: setsockopt failed",
    )


async def test_a_group_or_interface_that_is_no_ipv4_address_is_a_resolution_error(session: Session) -> None:
    # An IPv6 literal asked for as IPv4: getaddrinfo's EAI_ADDRFAMILY (-9), without a lookup.
    sock = await bound(session)
    cases: list[tuple[Callable[[], Awaitable[None]], str, str]] = [
        (
            lambda: sock.multicast_join("ff02::1", "127.0.0.1"),
            "join-group!: can't resolve multicast address",
            "ff02::1",
        ),
        (lambda: sock.multicast_leave("ff02::1", None), "leave-group!: can't resolve multicast address", "ff02::1"),
        (lambda: sock.multicast_join(GROUP, "::1"), "join-group!: can't resolve interface address", "::1"),
        (lambda: sock.set_multicast_interface("::1"), "set-interface!: can't resolve address", "::1"),
    ]
    for op, first_line, address in cases:
        with pytest.raises(NetworkErrnoError) as info:
            await op()
        assert (info.value.errno, info.value.errno_family) == (-9, "gai")
        assert str(info.value).split("\n")[:2] == [f"udp-multicast-{first_line}", f"  address: {address}"]


@pytest.mark.parametrize("group", ["", 3, None])
async def test_a_group_that_is_no_hostname_is_a_contract_error(session: Session, group: object) -> None:
    sock = await bound(session)
    with pytest.raises(ContractError):
        await sock.multicast_join(group, "127.0.0.1")
    with pytest.raises(ContractError):
        await sock.multicast_leave(group, None)


async def test_multicast_join_obeys_the_policy(manager: SessionManager) -> None:
    strict = session_for(manager, "strict", Policy(allow_multicast=["239.255.0.0/16"]))
    sock = await bound(strict)
    with pytest.raises(PermissionDeniedError):
        await sock.multicast_join("224.0.0.251", "127.0.0.1")
    await sock.multicast_join(GROUP, "127.0.0.1")
    await sock.multicast_leave(GROUP, "127.0.0.1")


async def test_multicast_join_twice_and_leave_unjoined_carry_errno(session: Session) -> None:
    sock = await bound(session)
    with pytest.raises(NetworkErrnoError) as info:
        await sock.multicast_leave(GROUP, "127.0.0.1")
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert str(info.value).startswith("udp-multicast-leave-group!: ")
    await sock.multicast_join(GROUP, "127.0.0.1")
    with pytest.raises(NetworkErrnoError) as info:
        await sock.multicast_join(GROUP, "127.0.0.1")
    assert info.value.errno == errno.EADDRINUSE
    await sock.multicast_leave(GROUP, "127.0.0.1")
    sock.close()
    with pytest.raises(NetworkError, match="closed"):
        await sock.multicast_join(GROUP, None)


async def test_multicast_for_real_on_loopback(session: Session) -> None:
    member = await opened(session)
    await member.bind(None, 0, True)
    port = port_of(member)
    await member.multicast_join(GROUP, "127.0.0.1")
    sender = await opened(session)
    # Never send multicast off this host: loopback interface, TTL 1.
    await sender.set_multicast_interface("127.0.0.1")
    sender.set_multicast_ttl(1)
    assert sender.multicast_interface() == "127.0.0.1" and sender.multicast_ttl() == 1
    assert await sender.send_to(GROUP, port, b"to the group")
    data, _, host, sport = await recv(member)
    assert (data, host, sport) == (b"to the group", "127.0.0.1", port_of(sender))
    await member.multicast_leave(GROUP, "127.0.0.1")
    assert await sender.send_to(GROUP, port, b"after leaving")
    await nothing_arrives(member)


# ───────────────────────────── datagram streams ─────────────────────────────


async def next_of(stream: AsyncIterator[T]) -> T:
    return await anext(stream)


def items(sock: UdpSocket, max_bytes: object = None) -> AsyncGenerator[tuple[bytes, str, int], None]:
    """The socket's datagram stream one datagram at a time (errors at the call, as the stream's)."""
    batches = sock.stream_batches(max_bytes)

    async def each() -> AsyncGenerator[tuple[bytes, str, int], None]:
        async with contextlib.aclosing(batches):
            async for batch, _ in batches:
                for datagram in batch:
                    yield datagram

    return each()


async def test_stream_yields_datagrams_and_counts_what_a_full_queue_drops(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    port = port_of(receiver)
    stream = items(receiver)
    first = asyncio.create_task(next_of(stream))
    await asyncio.sleep(0.01)
    await sender.send_to("127.0.0.1", port, b"d0")
    assert await asyncio.wait_for(first, 5) == (b"d0", "127.0.0.1", port_of(sender))
    sent = [(b"d%d" % i).ljust(KIB, b".") for i in range(1, 11)]
    for data in sent:  # the consumer is not reading: 4 fit the queue's bytes, 6 are dropped
        await sender.send_to("127.0.0.1", port, data)
    await until(lambda: receiver.queue_dropped == 6)
    assert receiver.describe()["queue_dropped"] == 6
    got = [await asyncio.wait_for(anext(stream), 5) for _ in range(4)]
    assert [g[0] for g in got] == sent[:STREAM_QUEUE]
    with pytest.raises(NetworkError, match="a datagram stream is already open"):
        items(receiver)
    await stream.aclose()
    assert not receiver._reading
    again = items(receiver)
    await sender.send_to("127.0.0.1", port, b"again")
    assert await asyncio.wait_for(anext(again), 5) == (b"again", "127.0.0.1", port_of(sender))
    await again.aclose()


async def test_stream_batches_carry_what_is_queued_and_this_streams_drops(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    port = port_of(receiver)
    receiver.queue_dropped = 100  # an earlier stream's drops: not this stream's
    batches = receiver.stream_batches(None, max_batch_bytes=2500)
    first = asyncio.create_task(next_of(batches))
    await asyncio.sleep(0.01)
    await sender.send_to("127.0.0.1", port, b"b0")
    assert await asyncio.wait_for(first, 5) == ([(b"b0", "127.0.0.1", port_of(sender))], 0)
    for i in range(1, 8):  # not reading: the queue (4) keeps b1..b4, b5..b7 are dropped
        await sender.send_to("127.0.0.1", port, bytes([i]) * KIB)
    await until(lambda: receiver.queue_dropped == 103)
    batch, dropped = await asyncio.wait_for(anext(batches), 5)
    assert dropped == 3 and [d[0][0] for d in batch] == [1, 2]  # cut at 2,500 payload bytes
    batch, dropped = await asyncio.wait_for(anext(batches), 5)
    assert dropped == 3 and [d[0][0] for d in batch] == [3, 4]
    with pytest.raises(NetworkError, match="already open"):
        items(receiver)
    receiver.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(batches), 5)
    assert receiver._stream is None and not receiver._reading


async def test_stream_truncates_to_max_and_ends_when_the_socket_closes(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    received: list[tuple[bytes, str, int]] = []

    async def consume() -> None:
        async for item in items(receiver, 3):
            received.append(item)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    await sender.send_to("127.0.0.1", port_of(receiver), b"abcdef")
    await until(lambda: len(received) == 1)
    assert received[0][0] == b"abc"
    receiver.close()
    await asyncio.wait_for(task, 5)  # the stream ended without error
    assert not receiver._reading


async def test_stream_cancellation_cleans_up(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)

    async def consume() -> None:
        async for _ in items(receiver):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    assert receiver._stream is not None and receiver._reading
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert receiver._stream is None and not receiver._reading
    await sender.send_to("127.0.0.1", port_of(receiver), b"for a plain receive")
    assert (await recv(receiver))[0] == b"for a plain receive"


async def test_stream_argument_and_state_errors(session: Session) -> None:
    unbound = await opened(session)
    with pytest.raises(NetworkError, match="not bound"):
        items(unbound)
    sock = await bound(session)
    with pytest.raises(ContractError):
        items(sock, 70000)
    sock.close()
    with pytest.raises(NetworkError, match="closed"):
        items(sock)


async def test_send_datagram(session: Session) -> None:
    receiver = await bound(session)
    sender = await opened(session)
    await sender.send_datagram(b"to", "127.0.0.1", port_of(receiver))
    assert (await recv(receiver))[0] == b"to"
    with pytest.raises(NetworkError, match="udp-send-stream: udp socket is not connected"):
        await sender.send_datagram(b"peer?", None, None)
    with pytest.raises(ContractError, match="port-number"):
        await sender.send_datagram(b"x", "127.0.0.1", None)
    await sender.connect("127.0.0.1", port_of(receiver))
    await sender.send_datagram(b"peer", None, None)
    assert (await recv(receiver))[0] == b"peer"


async def test_kernel_drops_are_reported(session: Session) -> None:
    receiver = await bound(session)
    receiver.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
    sender = await opened(session)
    for _ in range(64):
        await sender.send_to("127.0.0.1", port_of(receiver), bytes(1000))
    await recv(receiver)
    await sender.send_to("127.0.0.1", port_of(receiver), b"last")
    while (got := await receiver.receive(None, wait=False)) is not None and got[0] != b"last":
        pass
    assert receiver.kernel_dropped > 0
    assert receiver.describe()["kernel_dropped"] == receiver.kernel_dropped


# ───────────────────────────── IPv6 ─────────────────────────────


async def test_ipv6_round_trip(session: Session) -> None:
    receiver = await bound(session, "::1")
    sender = await opened(session, "::1")
    await sender.send_to("::1", port_of(receiver), b"six")
    data, _, host, port = await recv(receiver)
    assert (data, host, port) == (b"six", "::1", port_of(sender))
    assert receiver.addresses()[0] == "::1"
    await sender.connect("::1", port_of(receiver))
    assert sender.addresses()[2:] == ("::1", port_of(receiver))
    await sender.send(b"connected six")
    assert (await recv(receiver))[0] == b"connected six"
    await sender.connect(None, None)
    assert not sender.connected


async def test_an_ipv4_socket_cannot_send_to_an_ipv6_address(session: Session) -> None:
    # Resolved with any family, as Racket does; the kernel refuses the IPv6 address.
    sender = await opened(session)
    with pytest.raises(NetworkErrnoError) as info:
        await sender.bind("::1", 0)
    assert (info.value.errno, str(info.value).split("\n")[0]) == (errno.EAFNOSUPPORT, "udp-bind!: can't bind")
    assert not sender.bound
    with pytest.raises(NetworkErrnoError) as info:
        await sender.connect("::1", 9)
    assert (info.value.errno, str(info.value).split("\n")[0]) == (errno.EAFNOSUPPORT, "udp-connect!: can't connect")
    with pytest.raises(NetworkErrnoError) as info:
        await sender.send_to("::1", 9, b"x")
    assert (info.value.errno, info.value.errno_family) == (errno.EAFNOSUPPORT, "posix")
    assert str(info.value).startswith("udp-send-to: send failed\n")
    # Linux binds a socket on its first connect or send before it looks at the address: the
    # daemon reports the binding the kernel made.
    assert sender.bound and not sender.connected


async def test_an_ipv6_socket_reaches_an_ipv4_address_through_the_kernel(session: Session) -> None:
    # Linux sends IPv4 from a dual-stack IPv6 socket (as ::ffff:a.b.c.d); it cannot bind one.
    receiver = await bound(session)
    sender = await opened(session, "::1")
    with pytest.raises(NetworkErrnoError) as info:
        await sender.bind("127.0.0.1", 0)
    assert (info.value.errno, str(info.value).split("\n")[0]) == (errno.EINVAL, "udp-bind!: can't bind")
    await sender.send_to("127.0.0.1", port_of(receiver), b"mapped")
    data, _, host, port = await recv(receiver)
    assert (data, host, port) == (b"mapped", "127.0.0.1", port_of(sender))
    await sender.connect("127.0.0.1", port_of(receiver))
    assert sender.connected and sender.addresses()[2:] == ("::ffff:127.0.0.1", port_of(receiver))
    await sender.send(b"connected")
    assert (await recv(receiver))[0] == b"connected"
    await receiver.send_to("127.0.0.1", port_of(sender), b"back")
    data, _, host, _ = await recv(sender)
    assert (data, host) == (b"back", "::ffff:127.0.0.1")


# ───────────────────────────── a full send queue (private namespace) ─────────────────────────────

CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def slow_loopback_namespace(rate: str) -> Iterator[None]:
    """Run the calling thread in a fresh network namespace whose loopback drains at ``rate``.

    Sockets made inside stay in that namespace after the thread returns to its own. The suite
    always runs where namespaces can be made (tests/netns.py refuses to run it elsewhere), so a
    failure to make one here is a failure, not a reason to skip."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    except OSError as exc:
        pytest.fail(f"cannot open this thread's network namespace: {exc}")
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            pytest.fail(f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())} (needs CAP_SYS_ADMIN)")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True, timeout=10)
            subprocess.run(
                ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "1600", "limit", "1000000"],
                check=True,
                capture_output=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.fail(f"cannot set up a slow loopback in a private namespace: {exc}")
        yield
    finally:
        if libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - returning home cannot fail
            raise OSError(ctypes.get_errno(), "setns back to the test's namespace failed")
        os.close(home)


async def _full_queue_pair(session: Session, rate: str) -> tuple[UdpSocket, UdpSocket]:
    """A receiver and a sender in a slow namespace, with the sender's queue full."""
    with slow_loopback_namespace(rate):
        # udp_open without a hostname never suspends, so no other task runs in this namespace
        receiver = await opened(session)
        sender = await opened(session)
    await receiver.bind("127.0.0.1", 0)
    receiver.set_receive_buffer_size(1 << 20)
    sender.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the kernel's minimum
    for _ in range(100):
        if not await sender.send_to("127.0.0.1", port_of(receiver), bytes(1000), wait=False):
            return receiver, sender
    raise AssertionError("the send queue never filled")


async def test_nowait_send_returns_false_when_the_queue_is_full(session: Session) -> None:
    receiver, sender = await _full_queue_pair(session, "8kbit")
    assert sender.send_ready() is False
    assert sender.perform_send(("127.0.0.1", port_of(receiver)), b"x", "udp-send-to-evt") is False
    assert await sender.send_to("127.0.0.1", port_of(receiver), b"no room", wait=False) is False
    started = time.monotonic()
    assert await sender.send_to("127.0.0.1", port_of(receiver), b"times out", timeout=0.1) is False
    assert time.monotonic() - started < 1.5
    await sender.connect("127.0.0.1", port_of(receiver))
    assert await sender.send(b"no room", wait=False) is False


async def test_a_blocked_send_waits_for_room_and_a_cancelled_one_sends_nothing(session: Session) -> None:
    receiver, sender = await _full_queue_pair(session, "16kbit")
    blocked = asyncio.create_task(sender.send_to("127.0.0.1", port_of(receiver), b"cancelled"))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    started = time.monotonic()
    assert await sender.send_to("127.0.0.1", port_of(receiver), b"waited", timeout=10) is True
    assert time.monotonic() - started > 0.05  # it really waited for the qdisc to drain
    payloads = []
    deadline = time.monotonic() + 10
    while b"waited" not in payloads:
        assert time.monotonic() < deadline, "the waited datagram never arrived"
        got = await receiver.receive(None, wait=True, timeout=5)
        assert got is not None
        payloads.append(got[0])
    assert b"cancelled" not in payloads
