"""racket/udp, bullet by bullet (DESIGN.md §3), on every front door, with real loopback sockets.

Traffic goes only to 127.0.0.1 and ::1, and to the multicast groups 239.255.x.y with the sending
interface set to 127.0.0.1 and a multicast TTL of 1 (always both, before any multicast send).
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import pathlib
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import netns
import pytest
from helpers import eventually
from rawwire import random_moment
from sockbroker.core.broker import Principal
from sockbroker.core.policy import Policy
from sockbroker.server import Daemon
from sockbroker_client import (
    AsyncBroker,
    ContractError,
    Datagram,
    NetworkErrnoError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    UdpSocket,
    udp_receive_evt,
    udp_receive_ready_evt,
    udp_send_evt,
    udp_send_ready_evt,
    udp_send_to_evt,
)

#: Cancelled calls per race test: each cancels a random moment after its datagram arrives.
RACES = 100
#: How long "nothing arrives" listens: loopback delivers within the sending call, so this is ample.
QUIET = 0.2
#: The bound of a wait that should end (a datagram that was sent, a call that should fail).
WAIT = 5.0
NOTHING = (None, None, None, None)
#: The policy's multicast range is 239.255.0.0/16; each test uses its own group.
GROUPS = iter(f"239.255.{n // 250}.{n % 250 + 1}" for n in range(1, 60000))
FAMILIES = pytest.mark.parametrize("host", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
#: The largest payload of one datagram by family (IPv4: 65,535 − 20 − 8; IPv6: 65,535 − 8).
LARGEST = {"127.0.0.1": 65507, "::1": 65527}


# ───────────────────────────── helpers ─────────────────────────────


async def opened(broker: AsyncBroker, family_hostname: str | None = None, **options: Any) -> UdpSocket:
    return await broker.udp_open_socket(family_hostname, **options)


async def bound(broker: AsyncBroker, host: str = "127.0.0.1", port: int = 0, *, reuse: bool = False) -> UdpSocket:
    """A socket of ``host``'s family, bound to ``host``:``port``."""
    sock = await opened(broker, host)
    await sock.bind(host, port, reuse)
    return sock


async def port_of(sock: UdpSocket) -> int:
    return int((await sock.addresses(port_numbers=True))[1])


async def received(sock: UdpSocket, max_bytes: int = 65535) -> tuple[int, str, int, bytes]:
    """The next datagram (count, host, port, data); fails if none comes within WAIT."""
    async with asyncio.timeout(2 * WAIT):
        got = await sock.receive(max_bytes, timeout=WAIT)
    assert got != NOTHING, f"no datagram within {WAIT}s"
    count, host, port, data = got
    assert count is not None and host is not None and port is not None and data is not None
    return count, host, port, data


async def nothing_arrives(sock: UdpSocket, within: float = QUIET) -> None:
    async with asyncio.timeout(within + WAIT):
        got = await sock.receive(timeout=within)
    assert got == NOTHING, f"unexpected datagram {got!r}"


async def queued(sock: UdpSocket) -> None:
    """Wait (bounded) until a datagram waits on ``sock``, without taking it."""
    assert await sock.broker.sync(udp_receive_ready_evt(sock), timeout=WAIT) == (0, sock.handle)


class Raw:
    """A plain UDP socket of this process on loopback: a peer outside the broker."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((host, 0))
        self.port = int(self.sock.getsockname()[1])

    def send_to(self, data: bytes, port: int, host: str | None = None) -> None:
        self.sock.sendto(data, (host or self.host, port))

    async def receive(self, within: float = WAIT) -> tuple[bytes, str, int]:
        async with asyncio.timeout(within):
            data, address = await asyncio.get_running_loop().sock_recvfrom(self.sock, 65535)
        return data, str(address[0]), int(address[1])

    async def nothing_arrives(self, within: float = QUIET) -> None:
        with contextlib.suppress(TimeoutError):
            got = await self.receive(within)
            raise AssertionError(f"unexpected datagram {got!r}")


@contextlib.contextmanager
def raw(host: str = "127.0.0.1") -> Iterator[Raw]:
    peer = Raw(host)
    try:
        yield peer
    finally:
        peer.sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody listens on (bound and released at once)."""
    with raw(host) as probe:
        return probe.port


def sysctl(name: str) -> int:
    """A numeric kernel setting (the daemon runs on this host, in this process)."""
    return int(pathlib.Path("/proc/sys", name).read_text())


def kernel_receive_buffer(port: int, host: str = "127.0.0.1") -> int:
    """``SO_RCVBUF`` as the kernel reports it for the daemon's UDP socket bound to ``port`` (the
    daemon runs in this process, whatever the door): the socket's inode from /proc/net/udp, its
    fd from /proc/self/fd, read on a duplicate of that fd."""
    table = pathlib.Path("/proc/net/udp6" if ":" in host else "/proc/net/udp").read_text().splitlines()[1:]
    inodes = {fields[9] for fields in map(str.split, table) if int(fields[1].rsplit(":", 1)[1], 16) == port}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:[") and link[len("socket:[") : -1] in inodes:
                with socket.socket(fileno=os.dup(int(fd))) as sock:
                    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    raise AssertionError(f"no socket of this process is bound to UDP port {port}")


async def first_of(stream: AsyncIterator[Datagram], peer: Raw, port: int) -> Datagram:
    """Send from ``peer`` to ``port`` until the stream yields a datagram (the stream is open then)."""
    pending = asyncio.ensure_future(anext(stream))
    try:
        async with asyncio.timeout(WAIT):
            while not pending.done():
                peer.send_to(b"open?", port)
                await asyncio.wait([pending], timeout=0.05)
        return pending.result()
    finally:
        pending.cancel()


async def all_datagrams(sock: UdpSocket) -> list[bytes]:
    """Everything queued on ``sock`` now (until a receive finds nothing for QUIET)."""
    out: list[bytes] = []
    while True:
        async with asyncio.timeout(QUIET + WAIT):
            count, _, _, data = await sock.receive(timeout=QUIET)
        if count is None:
            return out
        assert isinstance(data, bytes)
        out.append(data)


# ───────────────────────────── udp-open-socket ─────────────────────────────


async def test_open_is_ipv4_unbound_and_unconnected_by_default(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    info = await sock.describe()
    assert (info["kind"], info["family"], info["closed"]) == ("udp", "inet", False)
    assert (info["bound"], info["connected"]) == (False, False)
    assert await broker.udp(sock) is True
    assert await sock.bound() is False and await sock.connected() is False


def first_family(host: str | None, port: int = 0) -> str:
    """The family of the first address getaddrinfo gives: the one Racket's udp-open-socket takes."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
    return {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}[family]


@pytest.mark.parametrize("family_hostname", ["127.0.0.1", "::1", "localhost"])
async def test_open_takes_the_family_from_the_hostname(broker: AsyncBroker, family_hostname: str) -> None:
    family = first_family(family_hostname)
    assert family == {"127.0.0.1": "inet", "::1": "inet6"}.get(family_hostname, family)
    sock = await opened(broker, family_hostname)
    info = await sock.describe()
    assert (info["family"], info["bound"], info["connected"]) == (family, False, False)  # not bound to it


async def test_open_with_a_family_port_alone_resolves_as_racket_does(broker: AsyncBroker) -> None:
    # getaddrinfo(NULL, port): the loopback name; its first address decides (IPv6 on many hosts).
    expected = first_family(None, 4242)
    sock = await opened(broker, None, family_port=4242)
    info = await sock.describe()
    assert (info["family"], info["bound"]) == (expected, False)  # not bound to the port


async def test_an_ipv6_socket_talks_ipv6(broker: AsyncBroker) -> None:
    sock = await opened(broker, "::1")
    await sock.bind("::1", 0)
    host, port, _, _ = await sock.addresses(port_numbers=True)
    assert host == "::1" and port > 0
    with pytest.raises(NetworkErrnoError) as info:  # bound to ::1, it has no IPv4 address to send from
        await sock.send_to("127.0.0.1", port, b"x")
    assert info.value.message.startswith("udp-send-to: send failed\n")


async def test_an_ipv6_socket_reaches_ipv4_as_the_kernel_allows(broker: AsyncBroker) -> None:
    # Racket resolves with any family and lets the kernel decide: an unbound IPv6 socket sends
    # IPv4 (as ::ffff:127.0.0.1), and a v4-mapped destination is IPv4 to the policy too.
    receiver = await bound(broker)
    port = await port_of(receiver)
    sock = await opened(broker, "::1")
    await sock.send_to("127.0.0.1", port, b"plain")
    await sock.send_to("::ffff:127.0.0.1", port, b"mapped")
    for expected in (b"plain", b"mapped"):
        _, host, _, data = await received(receiver)
        assert (host, data) == ("127.0.0.1", expected)
    await sock.connect("127.0.0.1", port)
    assert (await sock.addresses(port_numbers=True))[2:] == ("::ffff:127.0.0.1", port)
    with pytest.raises(NetworkErrnoError) as info:  # an IPv4 address cannot be bound on an IPv6 socket
        await (await opened(broker, "::1")).bind("127.0.0.1", 0)
    assert (info.value.errno, info.value.message.split("\n")[0]) == (errno.EINVAL, "udp-bind!: can't bind")


async def test_an_ipv4_socket_refuses_ipv6_addresses_as_the_kernel_does(broker: AsyncBroker) -> None:
    uses: list[tuple[Callable[[UdpSocket], Awaitable[Any]], str]] = [
        (lambda sock: sock.bind("::1", 0), "udp-bind!: can't bind"),
        (lambda sock: sock.connect("::1", 9), "udp-connect!: can't connect"),
        (lambda sock: sock.send_to("::1", 9, b"x"), "udp-send-to: send failed"),
    ]
    for use, first_line in uses:
        with pytest.raises(NetworkErrnoError) as info:
            await use(await opened(broker))
        assert (info.value.errno, info.value.errno_family) == (errno.EAFNOSUPPORT, "posix")
        assert info.value.message.split("\n")[0] == first_line


@pytest.mark.parametrize("family_port", [0, -1, 65536])
async def test_open_family_port_out_of_range_is_a_contract_error(broker: AsyncBroker, family_port: int) -> None:
    with pytest.raises(ContractError) as info:
        await opened(broker, None, family_port=family_port)
    assert "port-number?" in info.value.message


# ───────────────────────────── udp-bind! ─────────────────────────────


@FAMILIES
async def test_bind_port_zero_binds_an_ephemeral_port_that_addresses_shows(broker: AsyncBroker, host: str) -> None:
    sock = await opened(broker, host)
    await sock.bind(host, 0)
    local_host, local_port, remote_host, remote_port = await sock.addresses(port_numbers=True)
    assert local_host == host and 1 <= local_port <= 65535
    assert (remote_host, remote_port) == ("0.0.0.0", 0)
    assert await sock.bound() is True and await sock.connected() is False


@pytest.mark.parametrize(("host", "wildcard"), [("127.0.0.1", "0.0.0.0"), ("::1", "::")], ids=["ipv4", "ipv6"])
async def test_bind_without_hostname_receives_on_every_address(broker: AsyncBroker, host: str, wildcard: str) -> None:
    sock = await opened(broker, host)
    await sock.bind(None, 0)
    local_host, port, _, _ = await sock.addresses(port_numbers=True)
    assert local_host == wildcard and port > 0
    with raw(host) as peer:
        peer.send_to(b"to any address", port)
        assert await received(sock) == (14, host, peer.port, b"to any address")


async def test_bind_to_a_given_port(broker: AsyncBroker) -> None:
    port = free_port()
    sock = await bound(broker, port=port)
    assert await sock.addresses(port_numbers=True) == ("127.0.0.1", port, "0.0.0.0", 0)


async def test_bind_reuse_lets_two_sockets_share_a_port(broker: AsyncBroker) -> None:
    first = await bound(broker, reuse=True)
    port = await port_of(first)
    with pytest.raises(NetworkErrnoError) as info:  # without reuse, the port is taken
        await bound(broker, port=port)
    assert (info.value.errno, info.value.errno_family) == (errno.EADDRINUSE, "posix")
    second = await bound(broker, port=port, reuse=True)
    assert await port_of(second) == port == await port_of(first)
    assert await first.bound() and await second.bound()


async def test_bind_on_a_bound_socket_is_a_network_error(broker: AsyncBroker) -> None:
    sock = await bound(broker)
    port = await port_of(sock)
    for again in ((None, 0), ("127.0.0.1", 0), ("127.0.0.1", port)):
        with pytest.raises(NetworkError) as info:
            await sock.bind(*again)
        assert not isinstance(info.value, NetworkErrnoError)
        assert "already bound" in info.value.message
    assert await port_of(sock) == port  # the binding did not change


async def test_bind_on_a_closed_socket_is_a_network_error(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    await sock.close()
    with pytest.raises(NetworkError) as info:
        await sock.bind("127.0.0.1", 0)
    assert "closed" in info.value.message


@pytest.mark.parametrize("port", [-1, 65536])
async def test_bind_port_out_of_range_is_a_contract_error(broker: AsyncBroker, port: int) -> None:
    sock = await opened(broker)
    with pytest.raises(ContractError) as info:
        await sock.bind("127.0.0.1", port)
    assert "listen-port-number?" in info.value.message
    assert await sock.bound() is False


async def test_bind_outside_the_policy_is_permission_denied(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    with pytest.raises(PermissionDeniedError):
        await sock.bind("239.255.0.1", 0)
    assert await sock.bound() is False


# ───────────────────────────── udp-connect! ─────────────────────────────


@FAMILIES
async def test_connect_send_and_disconnect(broker: AsyncBroker, host: str) -> None:
    receiver = await bound(broker, host)
    rport = await port_of(receiver)
    sock = await bound(broker, host)
    sport = await port_of(sock)
    await sock.connect(host, rport)
    assert await sock.connected() is True
    assert await sock.addresses(port_numbers=True) == (host, sport, host, rport)
    assert await sock.send(b"connected") is True
    assert await received(receiver) == (9, host, sport, b"connected")
    await sock.connect(None, None)  # disconnect
    assert await sock.connected() is False and await sock.bound() is True
    assert await sock.addresses(port_numbers=True) == (host, sport, "0.0.0.0", 0)
    assert await sock.send_to(host, rport, b"after") is True
    assert await received(receiver) == (5, host, sport, b"after")
    await sock.connect(host, rport)  # reconnect: any number of times
    assert await sock.connected() is True


@pytest.mark.parametrize(("hostname", "port"), [("127.0.0.1", None), (None, 9)])
async def test_connect_with_only_one_of_hostname_and_port_is_a_contract_error(
    broker: AsyncBroker, hostname: str | None, port: int | None
) -> None:
    sock = await opened(broker)
    with pytest.raises(ContractError):
        await sock.connect(hostname, port)
    assert await sock.connected() is False


async def test_connect_port_out_of_range_is_a_contract_error(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    for port in (0, -1, 65536):
        with pytest.raises(ContractError) as info:
            await sock.connect("127.0.0.1", port)
        assert "port-number?" in info.value.message


async def test_a_connected_socket_receives_only_from_its_peer(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    rport = await port_of(receiver)
    peer = await bound(broker)
    with raw() as stranger:
        stranger.send_to(b"queued before the connect", rport)
        await queued(receiver)
        await receiver.connect("127.0.0.1", await port_of(peer))
        stranger.send_to(b"sent after the connect", rport)
        assert await peer.send_to("127.0.0.1", rport, b"from the peer")
        assert await received(receiver) == (13, "127.0.0.1", await port_of(peer), b"from the peer")
        await nothing_arrives(receiver)
        # once disconnected, anyone is heard again
        await receiver.connect(None, None)
        stranger.send_to(b"anyone", rport)
        assert await received(receiver) == (6, "127.0.0.1", stranger.port, b"anyone")


async def test_send_to_on_a_connected_socket_is_a_network_error(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    sock = await opened(broker)
    await sock.connect("127.0.0.1", await port_of(receiver))
    for call in (sock.send_to, sock.send_to_nowait):
        with pytest.raises(NetworkError) as info:
            await call("127.0.0.1", await port_of(receiver), b"no")
        assert "connected" in info.value.message
    await nothing_arrives(receiver)


async def test_send_on_an_unconnected_socket_is_a_network_error(broker: AsyncBroker) -> None:
    for sock in (await opened(broker), await bound(broker)):
        for call in (sock.send, sock.send_nowait):
            with pytest.raises(NetworkError) as info:
                await call(b"no")
            assert "not connected" in info.value.message


# ───────────────────────────── send, send-to ─────────────────────────────


@FAMILIES
async def test_start_and_end_send_exactly_that_slice(broker: AsyncBroker, host: str) -> None:
    receiver = await bound(broker, host)
    rport = await port_of(receiver)
    sock = await opened(broker, host)
    data = b"0123456789"
    assert await sock.send_to(host, rport, data, 2, 5)
    assert (await received(receiver))[3] == b"234"
    assert await sock.send_to(host, rport, data, 7)
    assert (await received(receiver))[3] == b"789"
    assert await sock.send_to(host, rport, data, 4, 4)  # an empty slice is an empty datagram
    assert (await received(receiver))[0] == 0
    assert await sock.send_to_nowait(host, rport, data, 0, 1)
    assert (await received(receiver))[3] == b"0"
    await sock.connect(host, rport)
    assert await sock.send(data, 8, 10)
    assert (await received(receiver))[3] == b"89"
    assert await sock.send_nowait(data, 3, 4)
    assert (await received(receiver))[3] == b"3"


@pytest.mark.parametrize(("start", "end"), [(11, None), (0, 11), (6, 5), (-1, None), (0, -1)])
async def test_start_and_end_out_of_range_are_contract_errors(broker: AsyncBroker, start: int, end: int | None) -> None:
    receiver = await bound(broker)
    rport = await port_of(receiver)
    sock = await opened(broker)
    data = b"0123456789"
    for send_to in (sock.send_to, sock.send_to_nowait):
        with pytest.raises(ContractError):
            await send_to("127.0.0.1", rport, data, start, end)
    assert await sock.bound() is False  # nothing was sent, so nothing bound it
    await sock.connect("127.0.0.1", rport)
    for send in (sock.send, sock.send_nowait):
        with pytest.raises(ContractError):
            await send(data, start, end)
    await nothing_arrives(receiver)


async def test_nowait_sends_report_sent_and_never_block(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    rport = await port_of(receiver)
    sock = await opened(broker)
    async with asyncio.timeout(WAIT):
        for i in range(20):
            assert await sock.send_to_nowait("127.0.0.1", rport, b"n%d" % i) is True
    await sock.connect("127.0.0.1", rport)
    async with asyncio.timeout(WAIT):
        for i in range(20, 40):
            assert await sock.send_nowait(b"n%d" % i) is True
    assert await all_datagrams(receiver) == [b"n%d" % i for i in range(40)]


@FAMILIES
async def test_the_first_send_binds_an_unbound_socket(broker: AsyncBroker, host: str) -> None:
    receiver = await bound(broker, host)
    sock = await opened(broker, host)
    assert await sock.bound() is False
    assert await sock.addresses(port_numbers=True) == ("0.0.0.0", 0, "0.0.0.0", 0)
    assert await sock.send_to(host, await port_of(receiver), b"binds me")
    assert await sock.bound() is True and await sock.connected() is False
    port = await port_of(sock)
    assert 1 <= port <= 65535
    assert await received(receiver) == (8, host, port, b"binds me")
    # now it can receive at that port
    assert await receiver.send_to(host, port, b"back")
    assert (await received(sock))[3] == b"back"


async def test_the_first_nowait_send_binds_too(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    sock = await opened(broker)
    assert await sock.send_to_nowait("127.0.0.1", await port_of(receiver), b"x") is True
    assert await sock.bound() is True and await port_of(sock) > 0


@FAMILIES
async def test_largest_datagram_is_sent_whole(broker: AsyncBroker, host: str) -> None:
    receiver = await bound(broker, host)
    await receiver.set_receive_buffer_size(1 << 20)
    sock = await opened(broker, host)
    payload = bytes(range(256)) * (LARGEST[host] // 256) + b"z" * (LARGEST[host] % 256)
    assert await sock.send_to(host, await port_of(receiver), payload)
    count, _, _, data = await received(receiver)
    assert count == LARGEST[host] and data == payload


@FAMILIES
async def test_a_datagram_too_long_is_emsgsize_and_nothing_is_sent(broker: AsyncBroker, host: str) -> None:
    receiver = await bound(broker, host)
    rport = await port_of(receiver)
    sock = await opened(broker, host)
    too_long = bytes(LARGEST[host] + 1)
    for send_to in (sock.send_to, sock.send_to_nowait):
        with pytest.raises(NetworkErrnoError) as info:
            await send_to(host, rport, too_long)
        assert (info.value.errno, info.value.errno_family) == (errno.EMSGSIZE, "posix")
    await sock.connect(host, rport)
    with pytest.raises(NetworkErrnoError) as info:
        await sock.send(bytes(70000))
    assert info.value.errno == errno.EMSGSIZE
    await nothing_arrives(receiver)


@FAMILIES
async def test_an_empty_datagram_is_sent_and_received_with_count_zero(broker: AsyncBroker, host: str) -> None:
    receiver = await bound(broker, host)
    sock = await opened(broker, host)
    assert await sock.send_to(host, await port_of(receiver), b"") is True
    assert await received(receiver) == (0, host, await port_of(sock), b"")
    assert await sock.send_to(host, await port_of(receiver), b"after") is True
    assert (await received(receiver))[3] == b"after"  # the empty one was exactly one datagram


async def test_send_to_an_unknown_host_carries_the_resolver_code(broker: AsyncBroker) -> None:
    # Looked up for real: the suite's namespace answers from its hosts file only (tests/netns.py).
    sock = await opened(broker)
    with pytest.raises(NetworkErrnoError) as info:
        await sock.send_to(netns.UNKNOWN_HOST, 9, b"x")
    assert (info.value.errno_family, info.value.errno) == ("gai", socket.EAI_NONAME)


@pytest.fixture
async def loopback_only(door: Any, daemon: Daemon) -> AsyncIterator[AsyncBroker]:
    """A session whose token may send to 127.0.0.1 and ::1 only. What it is denied (127.0.0.2) stays
    on this machine even if the policy ever let it through (DESIGN §10)."""
    principal = Principal("loopback-only", secrets.token_urlsafe(32), Policy(allow_connect=["127.0.0.1/32", "::1/128"]))
    daemon.broker.principals.append(principal)
    broker: AsyncBroker = await door(token=principal.token)
    try:
        yield broker
    finally:
        with contextlib.suppress(Exception):
            await broker.aclose()
        daemon.broker.principals.remove(principal)


@pytest.mark.parametrize(("family", "host"), [("127.0.0.1", "127.0.0.2"), ("::1", "::ffff:127.0.0.2")])
async def test_send_to_outside_the_policy_is_permission_denied(
    loopback_only: AsyncBroker, family: str, host: str
) -> None:
    # A v4-mapped destination is IPv4 to the policy: ::ffff:127.0.0.2 is 127.0.0.2.
    sock = await opened(loopback_only, family)
    with pytest.raises(PermissionDeniedError):
        await sock.send_to(host, 9, b"x")
    assert await sock.bound() is False


# ───────────────────────────── udp-receive! ─────────────────────────────


@FAMILIES
async def test_a_longer_datagram_is_truncated_and_the_rest_discarded(broker: AsyncBroker, host: str) -> None:
    receiver = await bound(broker, host)
    sock = await opened(broker, host)
    rport = await port_of(receiver)
    await sock.send_to(host, rport, b"abcdefgh")
    await sock.send_to(host, rport, b"next")
    assert await received(receiver, 3) == (3, host, await port_of(sock), b"abc")
    assert await received(receiver, 3) == (3, host, await port_of(sock), b"nex")
    await nothing_arrives(receiver)


async def test_receive_with_max_zero_consumes_one_datagram(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    sock = await opened(broker)
    rport = await port_of(receiver)
    await sock.send_to("127.0.0.1", rport, b"first")
    await sock.send_to("127.0.0.1", rport, b"second")
    assert await received(receiver, 0) == (0, "127.0.0.1", await port_of(sock), b"")
    assert (await received(receiver))[3] == b"second"


async def test_receive_nowait_returns_all_none_when_nothing_is_queued(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    async with asyncio.timeout(WAIT):
        assert await receiver.receive_nowait() == NOTHING
        assert await receiver.receive(wait=False) == NOTHING
    sock = await opened(broker)
    await sock.send_to("127.0.0.1", await port_of(receiver), b"now")
    await queued(receiver)
    async with asyncio.timeout(WAIT):
        assert await receiver.receive_nowait() == (3, "127.0.0.1", await port_of(sock), b"now")
        assert await receiver.receive_nowait() == NOTHING


async def test_receive_timeout_returns_all_none(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(WAIT):
        assert await receiver.receive(timeout=0.1) == NOTHING
    assert 0.09 <= loop.time() - started < WAIT
    async with asyncio.timeout(WAIT):
        assert await receiver.receive(timeout=0) == NOTHING


async def test_a_blocked_receive_wakes_for_a_datagram(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    pending = asyncio.ensure_future(receiver.receive())
    await asyncio.sleep(0.1)
    assert not pending.done()
    with raw() as peer:
        peer.send_to(b"wake", await port_of(receiver))
        async with asyncio.timeout(WAIT):
            assert await pending == (4, "127.0.0.1", peer.port, b"wake")


async def test_a_blocked_receive_fails_when_another_call_closes_the_socket(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    pending = asyncio.ensure_future(receiver.receive())
    await asyncio.sleep(0.1)
    assert not pending.done()
    await broker.udp_close(receiver)
    with pytest.raises(NetworkError) as info:
        async with asyncio.timeout(WAIT):
            await pending
    assert "closed" in info.value.message


async def test_a_cancelled_receive_never_loses_a_datagram(broker: AsyncBroker) -> None:
    """Receives cancelled a random moment after their datagram arrives: each datagram is the
    result of the cancelled receive or of a later one, exactly once."""
    rng = random.Random(549)
    receiver = await bound(broker)
    rport = await port_of(receiver)
    got: list[bytes] = []
    with raw() as peer:
        for n in range(RACES):
            pending = asyncio.ensure_future(receiver.receive(16))
            await random_moment(rng)
            peer.send_to(b"%08d" % n, rport)
            await random_moment(rng)
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                count, _, _, data = await pending
                assert count == 8 and isinstance(data, bytes)
                got.append(data)
    got += await all_datagrams(receiver)
    assert sorted(got) == [b"%08d" % n for n in range(RACES)]
    assert (await receiver.describe())["kernel_dropped"] == 0


async def test_receive_on_an_unbound_socket_is_a_network_error(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    calls: list[Callable[[], Awaitable[Any]]] = [
        sock.receive_nowait,
        sock.receive,
        lambda: sock.receive(timeout=0.1),
    ]
    for call in calls:
        with pytest.raises(NetworkError) as info:
            async with asyncio.timeout(WAIT):
                await call()
        assert "not bound" in info.value.message


@pytest.mark.parametrize("max_bytes", [-1, 65536])
async def test_receive_max_out_of_range_is_a_contract_error(broker: AsyncBroker, max_bytes: int) -> None:
    receiver = await bound(broker)
    with pytest.raises(ContractError):
        async with asyncio.timeout(WAIT):
            await receiver.receive(max_bytes)


# ───────────────────────────── udp-set-receive-buffer-size! ─────────────────────────────


async def test_set_receive_buffer_size(broker: AsyncBroker) -> None:
    sock = await bound(broker)
    await sock.set_receive_buffer_size(65536)
    await sock.set_receive_buffer_size(1)  # the kernel rounds it up to its minimum: fine
    for size in (0, -1):
        with pytest.raises(ContractError) as info:
            await sock.set_receive_buffer_size(size)
        assert "exact-positive-integer?" in info.value.message


async def test_a_receive_buffer_size_above_the_system_maximum_is_enobufs(broker: AsyncBroker) -> None:
    # The docs want exn:fail:network where Linux would silently clamp: the daemon chose ENOBUFS.
    rmem_max = sysctl("net/core/rmem_max")
    sock = await opened(broker)
    await sock.set_receive_buffer_size(rmem_max)
    for size in (rmem_max + 1, 1 << 40):
        with pytest.raises(NetworkErrnoError) as info:
            await sock.set_receive_buffer_size(size)
        assert (info.value.errno, info.value.errno_family) == (errno.ENOBUFS, "posix")


# ───────────────────────────── udp-close ─────────────────────────────


async def test_close_discards_what_is_queued(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    port = await port_of(receiver)
    sender = await opened(broker)
    await sender.send_to("127.0.0.1", port, b"never read")
    await queued(receiver)
    await receiver.close()
    info = await receiver.describe()
    assert (info["closed"], info["bound"], info["connected"]) == (True, False, False)
    again = await bound(broker, port=port)  # the port is free again; the old datagram is gone
    await nothing_arrives(again)
    await sender.send_to("127.0.0.1", port, b"new")
    assert (await received(again))[3] == b"new"


async def test_a_second_close_is_a_network_error(broker: AsyncBroker) -> None:
    sock = await bound(broker)
    await sock.close()
    with pytest.raises(NetworkError) as info:
        await sock.close()
    assert "closed" in info.value.message
    with pytest.raises(NetworkError):
        await broker.udp_close(sock)


def _later_uses(group: str) -> dict[str, Callable[[UdpSocket], Awaitable[Any]]]:
    async def first_of_stream(sock: UdpSocket) -> Any:
        stream = sock.receive_stream()
        try:
            return await anext(stream)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    return {
        "bind": lambda s: s.bind("127.0.0.1", 0),
        "connect": lambda s: s.connect("127.0.0.1", 9),
        "disconnect": lambda s: s.connect(None, None),
        "send_to": lambda s: s.send_to("127.0.0.1", 9, b"x"),
        "send_to_nowait": lambda s: s.send_to_nowait("127.0.0.1", 9, b"x"),
        "send": lambda s: s.send(b"x"),
        "send_nowait": lambda s: s.send_nowait(b"x"),
        "receive": lambda s: s.receive(timeout=1),
        "receive_nowait": lambda s: s.receive_nowait(),
        "set_receive_buffer_size": lambda s: s.set_receive_buffer_size(65536),
        "addresses": lambda s: s.addresses(port_numbers=True),
        "ttl": lambda s: s.ttl(),
        "set_ttl": lambda s: s.set_ttl(1),
        "multicast_ttl": lambda s: s.multicast_ttl(),
        "multicast_set_ttl": lambda s: s.multicast_set_ttl(1),
        "multicast_loopback": lambda s: s.multicast_loopback(),
        "multicast_set_loopback": lambda s: s.multicast_set_loopback(True),
        "multicast_interface": lambda s: s.multicast_interface(),
        "multicast_set_interface": lambda s: s.multicast_set_interface("127.0.0.1"),
        "multicast_join_group": lambda s: s.multicast_join_group(group, "127.0.0.1"),
        "multicast_leave_group": lambda s: s.multicast_leave_group(group, "127.0.0.1"),
        "receive_stream": first_of_stream,
        "send_stream": lambda s: s.send_stream([(b"x", "127.0.0.1", 9)]),
    }


@pytest.mark.parametrize("use", sorted(_later_uses("239.255.0.1")))
async def test_any_use_after_close_is_a_network_error(broker: AsyncBroker, use: str) -> None:
    sock = await bound(broker)
    await sock.close()
    with pytest.raises(NetworkError) as info:
        async with asyncio.timeout(WAIT):
            await _later_uses(next(GROUPS))[use](sock)
    assert "closed" in info.value.message
    info_after = await sock.describe()  # describe still answers
    assert (info_after["kind"], info_after["closed"]) == ("udp", True)


# ───────────────────────────── udp-addresses ─────────────────────────────


async def test_addresses_of_an_unbound_a_bound_and_a_connected_socket(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    assert await sock.addresses() == ("0.0.0.0", "0.0.0.0")
    assert await sock.addresses(port_numbers=True) == ("0.0.0.0", 0, "0.0.0.0", 0)
    assert await broker.udp_addresses(sock, True) == ("0.0.0.0", 0, "0.0.0.0", 0)
    await sock.bind("127.0.0.1", 0)
    port = await port_of(sock)
    assert await sock.addresses() == ("127.0.0.1", "0.0.0.0")
    assert await sock.addresses(port_numbers=True) == ("127.0.0.1", port, "0.0.0.0", 0)
    with raw() as peer:
        await sock.connect("127.0.0.1", peer.port)
        assert await sock.addresses() == ("127.0.0.1", "127.0.0.1")
        assert await sock.addresses(port_numbers=True) == ("127.0.0.1", port, "127.0.0.1", peer.port)


async def test_addresses_of_an_ipv6_socket(broker: AsyncBroker) -> None:
    sock = await bound(broker, "::1")
    port = await port_of(sock)
    with raw("::1") as peer:
        await sock.connect("::1", peer.port)
        assert await sock.addresses(port_numbers=True) == ("::1", port, "::1", peer.port)


# ───────────────────────────── TTL ─────────────────────────────


async def test_ttl_get_and_set(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    default = sysctl("net/ipv4/ip_default_ttl")
    assert await sock.ttl() == default
    for ttl in (1, 255, 64):
        await sock.set_ttl(ttl)
        assert await sock.ttl() == ttl
        assert await broker.udp_ttl(sock) == ttl


async def test_ipv6_ttl_is_the_hop_limit(broker: AsyncBroker) -> None:
    sock = await opened(broker, "::1")
    assert 1 <= await sock.ttl() <= 255
    for ttl in (1, 255, 0):  # Linux takes a hop limit of 0 on IPv6
        await sock.set_ttl(ttl)
        assert await sock.ttl() == ttl


@pytest.mark.parametrize("ttl", [-1, 256])
async def test_ttl_out_of_range_is_a_contract_error(broker: AsyncBroker, ttl: int) -> None:
    sock = await opened(broker)
    for setter in (sock.set_ttl, sock.multicast_set_ttl):
        with pytest.raises(ContractError) as info:
            await setter(ttl)
        assert "byte?" in info.value.message
    assert await sock.multicast_ttl() == 1


async def test_ttl_zero_is_refused_by_linux_with_einval(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    await sock.set_ttl(7)
    with pytest.raises(NetworkErrnoError) as info:
        await sock.set_ttl(0)
    assert (info.value.errno, info.value.errno_family) == (errno.EINVAL, "posix")
    assert await sock.ttl() == 7


async def test_multicast_ttl_get_and_set(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    assert await sock.multicast_ttl() == 1
    for ttl in (0, 255, 1):  # 0 keeps multicast on this host
        await sock.multicast_set_ttl(ttl)
        assert await sock.multicast_ttl() == ttl
        assert await broker.udp_multicast_ttl(sock) == ttl


# ───────────────────────────── multicast options ─────────────────────────────


@FAMILIES
async def test_multicast_loopback_get_and_set(broker: AsyncBroker, host: str) -> None:
    sock = await opened(broker, host)
    assert await sock.multicast_loopback() is True
    await sock.multicast_set_loopback(False)
    assert await sock.multicast_loopback() is False
    await broker.udp_multicast_set_loopback(sock, True)
    assert await broker.udp_multicast_loopback(sock) is True


async def test_multicast_interface_get_and_set(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    assert await sock.multicast_interface() == "0.0.0.0"
    await sock.multicast_set_interface("127.0.0.1")
    assert await sock.multicast_interface() == "127.0.0.1"
    await sock.multicast_set_interface(None)
    assert await sock.multicast_interface() == "0.0.0.0"
    await sock.multicast_set_interface("localhost")  # a name: its address
    assert await sock.multicast_interface() == "127.0.0.1"
    await sock.multicast_set_interface("0.0.0.0")
    assert await broker.udp_multicast_interface(sock) == "0.0.0.0"


async def test_multicast_interface_of_an_unknown_name_is_a_gai_error(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    with pytest.raises(NetworkErrnoError) as info:
        await sock.multicast_set_interface(netns.UNKNOWN_HOST)
    assert (info.value.errno_family, info.value.errno) == ("gai", socket.EAI_NONAME)
    assert await sock.multicast_interface() == "0.0.0.0"


async def test_ipv4_multicast_options_on_an_ipv6_socket_work_as_in_racket(broker: AsyncBroker) -> None:
    # Racket sets the IPv4 options on any socket, and Linux takes them on an IPv6 one.
    sock = await bound(broker, "::1")
    group = next(GROUPS)
    assert await sock.multicast_interface() == "0.0.0.0"
    await sock.multicast_set_interface("127.0.0.1")
    assert await sock.multicast_interface() == "127.0.0.1"
    await sock.multicast_join_group(group, "127.0.0.1")
    await sock.multicast_leave_group(group, "127.0.0.1")


@pytest.mark.parametrize("group", ["10.0.0.1", "127.0.0.1", "240.0.0.1", "255.255.255.255", "localhost"])
async def test_a_group_that_is_not_ipv4_multicast_is_refused_by_the_kernel(broker: AsyncBroker, group: str) -> None:
    # As in Racket: the group resolves, then the kernel refuses it (EINVAL to join, EADDRNOTAVAIL
    # to leave); no contract error, and no policy denial (the policy names groups: these are none).
    sock = await bound(broker, reuse=True)
    for call, code, who in [
        (sock.multicast_join_group, errno.EINVAL, "udp-multicast-join-group!"),
        (sock.multicast_leave_group, errno.EADDRNOTAVAIL, "udp-multicast-leave-group!"),
    ]:
        with pytest.raises(NetworkErrnoError) as info:
            await call(group, "127.0.0.1")
        assert (info.value.errno, info.value.message.split("\n")[0]) == (code, f"{who}: setsockopt failed")


async def test_an_ipv6_group_or_interface_does_not_resolve_as_ipv4(broker: AsyncBroker) -> None:
    sock = await bound(broker, reuse=True)
    uses: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: sock.multicast_join_group("ff02::1", "127.0.0.1"), "join-group!: can't resolve multicast address"),
        (lambda: sock.multicast_leave_group("ff02::1", "127.0.0.1"), "leave-group!: can't resolve multicast address"),
        (lambda: sock.multicast_join_group(next(GROUPS), "::1"), "join-group!: can't resolve interface address"),
        (lambda: sock.multicast_set_interface("::1"), "set-interface!: can't resolve address"),
    ]
    for use, first_line in uses:
        with pytest.raises(NetworkErrnoError) as info:
            await use()
        assert (info.value.errno, info.value.errno_family) == (-9, "gai")  # EAI_ADDRFAMILY: no lookup was made
        assert info.value.message.split("\n")[0] == f"udp-multicast-{first_line}"


async def test_a_group_outside_the_policy_is_permission_denied(broker: AsyncBroker) -> None:
    sock = await bound(broker, reuse=True)
    with pytest.raises(PermissionDeniedError):
        await sock.multicast_join_group("224.0.0.251", "127.0.0.1")


async def test_join_twice_and_leave_unjoined_carry_the_os_errno(broker: AsyncBroker) -> None:
    sock = await bound(broker, reuse=True)
    group = next(GROUPS)
    with pytest.raises(NetworkErrnoError) as info:
        await sock.multicast_leave_group(group, "127.0.0.1")
    assert (info.value.errno, info.value.errno_family) == (errno.EADDRNOTAVAIL, "posix")
    assert info.value.message.startswith("udp-multicast-leave-group!: ")
    await sock.multicast_join_group(group, "127.0.0.1")
    with pytest.raises(NetworkErrnoError) as info:
        await sock.multicast_join_group(group, "127.0.0.1")
    assert (info.value.errno, info.value.errno_family) == (errno.EADDRINUSE, "posix")
    assert info.value.message.startswith("udp-multicast-join-group!: ")
    await broker.udp_multicast_leave_group(sock, group, "127.0.0.1")
    with pytest.raises(NetworkErrnoError) as info:
        await sock.multicast_leave_group(group, "127.0.0.1")
    assert info.value.errno == errno.EADDRNOTAVAIL


# ───────────────────────────── multicast for real ─────────────────────────────


async def multicast_sender(broker: AsyncBroker, *, loopback: bool = True) -> UdpSocket:
    """A sender whose multicast stays on this host: interface 127.0.0.1, TTL 1 (both checked)."""
    sender = await opened(broker)
    await sender.multicast_set_interface("127.0.0.1")
    await sender.multicast_set_ttl(1)
    await sender.multicast_set_loopback(loopback)
    assert await sender.multicast_interface() == "127.0.0.1"
    assert await sender.multicast_ttl() == 1
    return sender


@pytest.mark.parametrize("bind_host", [None, "0.0.0.0"])
async def test_multicast_end_to_end_on_loopback(broker: AsyncBroker, bind_host: str | None) -> None:
    group = next(GROUPS)
    member = await opened(broker)
    await member.bind(bind_host, 0, True)
    port = await port_of(member)
    await member.multicast_join_group(group, "127.0.0.1")
    sender = await multicast_sender(broker)
    assert await sender.send_to(group, port, b"to the group") is True
    assert await received(member) == (12, "127.0.0.1", await port_of(sender), b"to the group")
    await member.multicast_leave_group(group, "127.0.0.1")
    assert await sender.send_to(group, port, b"after leaving") is True
    await nothing_arrives(member)


async def test_multicast_reaches_every_member_sharing_the_port(broker: AsyncBroker) -> None:
    group = next(GROUPS)
    first = await opened(broker)
    await first.bind(None, 0, True)
    port = await port_of(first)
    second = await opened(broker)
    await second.bind(None, port, True)
    for member in (first, second):
        await member.multicast_join_group(group, "127.0.0.1")
    sender = await multicast_sender(broker)
    assert await sender.send_to(group, port, b"to both")
    for member in (first, second):
        assert (await received(member))[3] == b"to both"


async def test_multicast_to_a_group_nobody_joined_reaches_nobody(broker: AsyncBroker) -> None:
    member = await opened(broker)
    await member.bind(None, 0, True)
    port = await port_of(member)
    await member.multicast_join_group(next(GROUPS), "127.0.0.1")
    sender = await multicast_sender(broker)
    assert await sender.send_to(next(GROUPS), port, b"elsewhere")
    await nothing_arrives(member)


# ───────────────────────────── datagram streams ─────────────────────────────


@FAMILIES
async def test_receive_stream_yields_datagrams_with_their_source(broker: AsyncBroker, host: str) -> None:
    receiver = await bound(broker, host)
    rport = await port_of(receiver)
    sender = await opened(broker, host)
    stream = receiver.receive_stream()
    try:
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.1)
        for i in range(3):
            assert await sender.send_to(host, rport, b"s%d" % i)
        sport = await port_of(sender)
        async with asyncio.timeout(WAIT):
            got = [await first, await anext(stream), await anext(stream)]
        assert got == [Datagram(b"s%d" % i, host, sport) for i in range(3)]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)  # the daemon hears the stream end
    assert await sender.send_to(host, rport, b"plain")  # a plain receive gets datagrams again
    assert (await received(receiver))[3] == b"plain"


async def test_receive_stream_truncates_to_max(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    rport = await port_of(receiver)
    stream = receiver.receive_stream(3)
    try:
        with raw() as peer:
            peer.send_to(b"abcdef", rport)
            peer.send_to(b"", rport)
            async with asyncio.timeout(WAIT):
                assert await anext(stream) == Datagram(b"abc", "127.0.0.1", peer.port)
                assert await anext(stream) == Datagram(b"", "127.0.0.1", peer.port)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


@FAMILIES
async def test_receive_stream_delivers_a_burst_whole_in_order_with_every_source(broker: AsyncBroker, host: str) -> None:
    # Batched in the daemon (many datagrams per wake-up and per message, packed over gRPC and
    # REST): what two peers send back to back arrives whole, in each peer's order, with its source.
    receiver = await bound(broker, host)
    rport = await port_of(receiver)
    stream = receiver.receive_stream()
    try:
        with raw(host) as one, raw(host) as two:
            await first_of(stream, one, rport)
            sent = [((b"%d:" % i) + bytes([i % 251]) * (i * 7 % 1500), (one, two)[i % 2]) for i in range(400)]
            for data, peer in sent:
                peer.send_to(data, rport)
            got: list[Datagram] = []
            async with asyncio.timeout(2 * WAIT):
                while len(got) < len(sent):
                    datagram = await anext(stream)
                    if datagram.data != b"open?":  # the opening probe may have arrived more than once
                        got.append(datagram)
        assert got == [Datagram(data, host, peer.port) for data, peer in sent]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_receive_stream_raises_the_receive_buffer_while_it_is_open(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    rport = await port_of(receiver)
    default = kernel_receive_buffer(rport)
    # Linux reports twice the size set (its bookkeeping); the daemon asks for 4 MiB, capped by rmem_max.
    raised = max(default, 2 * min(4 << 20, sysctl("net/core/rmem_max")))
    stream = receiver.receive_stream()
    try:
        with raw() as peer:
            await first_of(stream, peer, rport)
            assert kernel_receive_buffer(rport) == raised
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    # The daemon hears the stream end, and sets the size back.
    await eventually(lambda: kernel_receive_buffer(rport) == default, within=WAIT)


async def test_a_receive_buffer_size_the_client_set_is_left_alone_by_a_stream(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    rport = await port_of(receiver)
    await receiver.set_receive_buffer_size(65536)
    chosen = kernel_receive_buffer(rport)
    assert chosen == 2 * 65536
    stream = receiver.receive_stream()
    try:
        with raw() as peer:
            await first_of(stream, peer, rport)
            assert kernel_receive_buffer(rport) == chosen
            await receiver.set_receive_buffer_size(32768)  # during a stream too, the client's size stands
            assert kernel_receive_buffer(rport) == 2 * 32768
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)  # the daemon hears the stream end
    assert kernel_receive_buffer(rport) == 2 * 32768


async def test_receive_stream_ends_when_its_socket_is_closed(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    stream = receiver.receive_stream()
    try:
        with raw() as peer:
            peer.send_to(b"before", await port_of(receiver))
            async with asyncio.timeout(WAIT):
                assert await anext(stream) == Datagram(b"before", "127.0.0.1", peer.port)
        await broker.udp_close(receiver)
        with contextlib.suppress(NetworkError):  # the end, or a network error: never a hang
            async with asyncio.timeout(WAIT):
                async for datagram in stream:
                    raise AssertionError(f"unexpected datagram {datagram!r}")
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_receive_stream_on_an_unbound_socket_is_a_network_error(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    stream = sock.receive_stream()
    try:
        with pytest.raises(NetworkError) as info:
            async with asyncio.timeout(WAIT):
                await anext(stream)
        assert "not bound" in info.value.message
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


@FAMILIES
async def test_send_stream_sends_every_frame(broker: AsyncBroker, host: str) -> None:
    receiver = await bound(broker, host)
    rport = await port_of(receiver)
    sender = await opened(broker, host)
    frames = [(b"f%d" % i, host, rport) for i in range(5)]
    async with asyncio.timeout(WAIT):
        assert await sender.send_stream(frames) == 5
    sport = None
    for i in range(5):
        count, source, port, data = await received(receiver)
        assert (count, source, data) == (2, host, b"f%d" % i)
        sport = sport or port
        assert port == sport
    assert await sender.bound() is True and await port_of(sender) == sport  # the stream bound it


async def test_send_stream_frame_with_empty_host_goes_to_the_connected_peer(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    rport = await port_of(receiver)
    sender = await opened(broker)
    await sender.connect("127.0.0.1", rport)

    async def frames() -> Any:
        yield b"to the peer", "", 0
        yield b"again", "", 0

    async with asyncio.timeout(WAIT):
        assert await sender.send_stream(frames()) == 2
    assert (await received(receiver))[3] == b"to the peer"
    assert (await received(receiver))[3] == b"again"


async def test_send_stream_takes_nothing_the_socket_receives(broker: AsyncBroker) -> None:
    # A send stream sends; a datagram waiting on the same socket is still there afterwards.
    sock = await bound(broker)
    receiver = await bound(broker)
    with raw() as peer:
        peer.send_to(b"waiting", await port_of(sock))
        await queued(sock)
        async with asyncio.timeout(WAIT):
            assert await sock.send_stream([(b"out", "127.0.0.1", await port_of(receiver))]) == 1
        assert (await received(receiver))[3] == b"out"
        peer.send_to(b"during", await port_of(sock))
        assert await received(sock) == (7, "127.0.0.1", peer.port, b"waiting")
        assert await received(sock) == (6, "127.0.0.1", peer.port, b"during")


async def test_send_stream_errors_reach_the_caller(broker: AsyncBroker) -> None:
    sender = await opened(broker)  # not connected: a frame for the peer is a network error
    with pytest.raises(NetworkError) as info:
        async with asyncio.timeout(WAIT):
            await sender.send_stream([(b"to whom?", "", 0)])
    assert "not connected" in info.value.message


# ───────────────────────────── custodians and sessions ─────────────────────────────


async def test_custodian_shutdown_closes_its_udp_sockets(broker: AsyncBroker) -> None:
    custodian = await broker.make_custodian()
    sock = await opened(broker, custodian=custodian)
    await sock.bind("127.0.0.1", 0)
    port = await port_of(sock)
    other = await bound(broker)  # in the session's root: untouched
    handles = [h["handle"] for h in (await broker.describe_custodian(custodian))["handles"]]
    assert handles == [sock.handle]
    assert (await sock.describe())["custodian"] == custodian.handle
    blocked = asyncio.ensure_future(sock.receive())
    await asyncio.sleep(0.1)
    await custodian.shutdown_all()
    with pytest.raises(NetworkError):
        async with asyncio.timeout(WAIT):
            await blocked
    info = await sock.describe()
    assert (info["closed"], info["bound"]) == (True, False)
    with pytest.raises(NetworkError):
        await sock.send_to("127.0.0.1", await port_of(other), b"x")
    assert (await other.describe())["closed"] is False
    again = await bound(broker, port=port)  # the fd is released: the port binds again
    assert await port_of(again) == port
    with pytest.raises(ContractError) as err:
        await opened(broker, custodian=custodian)
    assert "the custodian has been shut down" in err.value.message


async def test_closing_the_session_closes_its_udp_sockets(door: Any, broker: AsyncBroker) -> None:
    other = await door()
    sock = await bound(other)
    port = await port_of(sock)
    with raw() as peer:
        peer.send_to(b"ping", port)
        await queued(sock)
        await other.aclose()
        # From another session: the port is free to bind again (without reuse) and the old
        # handle is unknown there.
        again = await bound(broker, port=port)
        assert await port_of(again) == port
        with pytest.raises(NotFoundError):
            await broker.describe(sock.handle)
        await nothing_arrives(again)  # the closed socket's datagram went with it
        peer.send_to(b"new", port)
        assert (await received(again))[3] == b"new"


# ───────────────────────────── sync over UDP ─────────────────────────────


async def test_receive_event_consumes_exactly_one_datagram(broker: AsyncBroker) -> None:
    first, second = await bound(broker), await bound(broker)
    with raw() as peer:
        peer.send_to(b"one", await port_of(first))
        peer.send_to(b"two", await port_of(second))
        await queued(first)
        await queued(second)
        chosen = await broker.sync(udp_receive_evt(first), udp_receive_evt(second), timeout=WAIT)
        assert chosen is not None
        index, datagram = chosen
        taken, untouched = (first, second) if index == 0 else (second, first)
        expected = (b"one", b"two") if index == 0 else (b"two", b"one")
        assert datagram == (3, "127.0.0.1", peer.port, expected[0])
        assert await untouched.receive_nowait() == (3, "127.0.0.1", peer.port, expected[1])
        assert await taken.receive_nowait() == NOTHING


async def test_receive_event_truncates_to_max_and_waits_for_a_datagram(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    assert await broker.sync(udp_receive_evt(receiver, 2), timeout=0.05) is None
    assert await broker.sync(udp_receive_evt(receiver, 2), timeout=0) is None
    with raw() as peer:
        pending = asyncio.ensure_future(broker.sync(udp_receive_evt(receiver, 2)))
        await asyncio.sleep(0.1)
        assert not pending.done()
        peer.send_to(b"abcdef", await port_of(receiver))
        async with asyncio.timeout(WAIT):
            assert await pending == (0, (2, "127.0.0.1", peer.port, b"ab"))
    await nothing_arrives(receiver)  # the rest was discarded


async def test_send_to_event_sends_exactly_once_when_chosen(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    rport = await port_of(receiver)
    sender = await opened(broker)
    idle = await bound(broker)  # its receive event is never ready
    chosen = await broker.sync(
        udp_receive_evt(idle), udp_send_to_evt(sender, "127.0.0.1", rport, b"xonce", 1), timeout=WAIT
    )
    assert chosen == (1, True)
    assert await sender.bound() is True  # the chosen send bound the socket
    assert await received(receiver) == (4, "127.0.0.1", await port_of(sender), b"once")
    await nothing_arrives(receiver)


async def test_of_two_send_events_only_the_chosen_one_sends(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    rport = await port_of(receiver)
    first, second = await bound(broker), await opened(broker)
    await second.connect("127.0.0.1", rport)
    chosen = await broker.sync(
        udp_send_to_evt(first, "127.0.0.1", rport, b"first"), udp_send_evt(second, b"second"), timeout=WAIT
    )
    assert chosen is not None and chosen[1] is True
    assert await all_datagrams(receiver) == [b"first" if chosen[0] == 0 else b"second"]


async def test_send_event_slices_and_needs_a_connection(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    sender = await opened(broker)
    with pytest.raises(NetworkError) as info:
        await broker.sync(udp_send_evt(sender, b"unconnected"), timeout=WAIT)
    assert "not connected" in info.value.message
    await sender.connect("127.0.0.1", await port_of(receiver))
    assert await broker.sync(udp_send_evt(sender, b"0123456", 2, 4), timeout=WAIT) == (0, True)
    assert (await received(receiver))[3] == b"23"
    with pytest.raises(NetworkError) as info:
        await broker.sync(udp_send_to_evt(sender, "127.0.0.1", await port_of(receiver), b"x"), timeout=WAIT)
    assert "connected" in info.value.message


async def test_receive_ready_and_send_ready_events(broker: AsyncBroker) -> None:
    receiver = await bound(broker)
    sender = await opened(broker)
    assert await broker.sync(udp_receive_ready_evt(receiver), timeout=0.05) is None
    assert await broker.sync(udp_send_ready_evt(sender), timeout=0) == (0, sender.handle)
    assert await broker.sync(udp_send_ready_evt(receiver), timeout=0) == (0, receiver.handle)
    pending = asyncio.ensure_future(broker.sync(udp_receive_ready_evt(receiver)))
    await asyncio.sleep(0.1)
    assert not pending.done()
    await sender.send_to("127.0.0.1", await port_of(receiver), b"ready")
    async with asyncio.timeout(WAIT):
        assert await pending == (0, receiver.handle)
    assert await broker.sync(udp_receive_ready_evt(receiver), timeout=0) == (0, receiver.handle)
    assert (await received(receiver))[3] == b"ready"  # readiness consumed nothing
    assert await broker.sync(udp_receive_ready_evt(receiver), timeout=0) is None


async def test_a_closed_sockets_ready_events_are_ready_and_its_receive_event_raises(broker: AsyncBroker) -> None:
    sock = await bound(broker)
    await sock.close()
    async with asyncio.timeout(WAIT):
        assert await broker.sync(udp_receive_ready_evt(sock)) == (0, sock.handle)
        assert await broker.sync(udp_send_ready_evt(sock)) == (0, sock.handle)
    for event in (udp_receive_evt(sock), udp_send_to_evt(sock, "127.0.0.1", 9, b"x"), udp_send_evt(sock, b"x")):
        with pytest.raises(NetworkError) as info:
            async with asyncio.timeout(WAIT):
                await broker.sync(event)
        assert "closed" in info.value.message


async def test_an_unbound_sockets_receive_event_raises(broker: AsyncBroker) -> None:
    sock = await opened(broker)
    with pytest.raises(NetworkError) as info:
        async with asyncio.timeout(WAIT):
            await broker.sync(udp_receive_evt(sock))
    assert "not bound" in info.value.message


@pytest.mark.parametrize(
    "make",
    [
        lambda s: udp_receive_evt(s, -1),
        lambda s: udp_receive_evt(s, 65536),
        lambda s: udp_send_to_evt(s, "127.0.0.1", 0, b"x"),
        lambda s: udp_send_to_evt(s, "127.0.0.1", 65536, b"x"),
        lambda s: udp_send_to_evt(s, "127.0.0.1", 9, b"abc", 4),
        lambda s: udp_send_to_evt(s, "127.0.0.1", 9, b"abc", 2, 1),
        lambda s: udp_send_evt(s, b"abc", 0, 4),
    ],
    ids=["max-1", "max65536", "port0", "port65536", "start", "end<start", "end"],
)
async def test_range_errors_are_raised_before_waiting(broker: AsyncBroker, make: Any) -> None:
    sock = await bound(broker)
    idle = await bound(broker)  # never ready: a sync that waited would block
    with pytest.raises(ContractError):
        async with asyncio.timeout(WAIT):
            await broker.sync(udp_receive_evt(idle), make(sock))
    await nothing_arrives(idle)


@pytest.mark.parametrize("how", ["close", "shutdown"])
async def test_a_blocked_receive_event_fails_when_the_socket_goes(broker: AsyncBroker, how: str) -> None:
    custodian = await broker.make_custodian()
    sock = await opened(broker, custodian=custodian)
    await sock.bind("127.0.0.1", 0)
    pending = asyncio.ensure_future(broker.sync(udp_receive_evt(sock)))
    await asyncio.sleep(0.1)
    assert not pending.done()
    if how == "close":
        await broker.udp_close(sock)
    else:
        await custodian.shutdown_all()
    with pytest.raises(NetworkError) as info:
        async with asyncio.timeout(WAIT):
            await pending
    assert "closed" in info.value.message


async def test_a_cancelled_receive_event_consumes_nothing(broker: AsyncBroker) -> None:
    """Syncs on a receive event cancelled a random moment after their datagram arrives: each
    datagram is the result of the cancelled sync or still queued for a later receive, exactly once."""
    rng = random.Random(1224)
    receiver = await bound(broker)
    rport = await port_of(receiver)
    got: list[bytes] = []
    with raw() as peer:
        for n in range(RACES):
            pending = asyncio.ensure_future(broker.sync(udp_receive_evt(receiver, 16)))
            await random_moment(rng)
            peer.send_to(b"%08d" % n, rport)
            await random_moment(rng)
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                chosen = await pending
                assert chosen is not None and chosen[0] == 0
                count, _, _, data = chosen[1]
                assert count == 8 and isinstance(data, bytes)
                got.append(data)
    got += await all_datagrams(receiver)
    assert sorted(got) == [b"%08d" % n for n in range(RACES)]
    assert (await receiver.describe())["kernel_dropped"] == 0


async def test_multicast_goes_out_only_on_an_interface_the_policy_allows(broker: AsyncBroker) -> None:
    """``allow_multicast_interface`` (the test daemon's: loopback) judges every multicast send by
    the socket's interface at that moment; "any interface" (the first state) is not loopback.
    A denied send sends nothing: the policy refuses before the socket call."""
    group = next(GROUPS)
    sock = await opened(broker)
    await sock.multicast_set_ttl(1)
    with pytest.raises(PermissionDeniedError) as denied:
        await sock.send_to(group, 9, b"x")
    assert "send multicast on any interface" in str(denied.value)
    await sock.multicast_set_interface("127.0.0.1")
    assert await sock.send_to(group, 9, b"x")
    await sock.connect(group, 9)
    assert await sock.send(b"x")
    await sock.multicast_set_interface(None)  # setting it is Racket's, and allowed
    with pytest.raises(PermissionDeniedError):
        await sock.send(b"x")
