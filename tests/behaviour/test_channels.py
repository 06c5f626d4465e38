"""Channels out of band (DESIGN §8): a relay spliced by the daemon and a hand-off of the socket
itself, redeemed with a one-use ticket; the ports of a carried connection only close; a handed-off
socket dies with its session."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from helpers import PeerServer, read_until_eof, serving
from sockbroker.core import channels
from sockbroker.server import Daemon
from sockbroker_client import (
    AsyncBroker,
    ContractError,
    FailError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from sockbroker_client._channel import redeem

MODES = ("relay", "handoff")


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), 20)


def _recv_all(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def _recv_to_eof(sock: socket.socket) -> bytes:
    got = bytearray()
    while chunk := sock.recv(65536):
        got += chunk
    return bytes(got)


@pytest.mark.parametrize("mode", MODES)
async def test_bytes_both_ways_and_half_close_both_ways(broker: AsyncBroker, peer: PeerServer, mode: str) -> None:
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
    reader, writer = await peer.next()
    channel = await i.open_channel(mode)
    with channel:
        payload = os.urandom(3 * 1024 * 1024)
        sending = asyncio.create_task(_in_thread(channel.sendall, payload))
        assert await reader.readexactly(len(payload)) == payload
        await sending
        writer.write(payload[::-1])
        await writer.drain()
        assert await _in_thread(_recv_all, channel, len(payload)) == payload[::-1]
        # The client's FIN reaches the peer; the peer may still write, and its FIN ends the channel.
        channel.shutdown(socket.SHUT_WR)
        assert await read_until_eof(reader) == b""
        writer.write(b"after your FIN")
        writer.write_eof()
        assert await _in_thread(_recv_to_eof, channel) == b"after your FIN"
    if mode == "relay":  # both ways ended: the relay closed the connection, and its handles
        for _ in range(500):  # the relay sees both FINs on its own loop turn: up to 5 s
            if (await i.describe())["closed"]:
                break
            await asyncio.sleep(0.01)
        assert (await i.describe())["closed"]


@pytest.mark.parametrize("mode", MODES)
async def test_bytes_read_before_the_channel_come_first(broker: AsyncBroker, peer: PeerServer, mode: str) -> None:
    i, o = await broker.tcp_connect("127.0.0.1", peer.port)
    reader, writer = await peer.next()
    writer.write(b"greeting\r\n")
    await writer.drain()
    assert await i.peek_bytes_avail(100, timeout=5) == b"greeting\r\n"  # the daemon holds them now
    await o.write(b"queued by the port", flush=False)  # block-buffered: the channel flushes it first
    channel = await i.open_channel(mode)
    with channel:
        assert await reader.readexactly(18) == b"queued by the port"
        writer.write(b"and more")
        await writer.drain()
        assert await _in_thread(_recv_all, channel, 18) == b"greeting\r\nand more"


@pytest.mark.parametrize("mode", MODES)
async def test_the_ports_of_a_carried_connection_only_close(broker: AsyncBroker, peer: PeerServer, mode: str) -> None:
    i, o = await broker.tcp_connect("127.0.0.1", peer.port)
    reader, _writer = await peer.next()
    channel = await i.open_channel(mode)
    with channel:
        with pytest.raises(FailError, match=f"carried by a {mode} channel"):
            await i.read(10, timeout=1)
        with pytest.raises(FailError, match=f"carried by a {mode} channel"):
            await o.write(b"x", flush=True)
        with pytest.raises(FailError, match="carried"):
            await i.open_channel(mode)
        # Closing a port ends the channel: the peer sees the end, the channel reads EOF.
        await o.close()
        assert await read_until_eof(reader) == b""
        assert await _in_thread(_recv_to_eof, channel) == b""
        assert (await i.describe())["closed"]


async def test_a_handed_off_socket_dies_with_its_session(door: Any, peer: PeerServer) -> None:
    broker = await door()
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
    reader, writer = await peer.next()
    channel = await i.open_channel("handoff")
    with channel:
        channel.sendall(b"mine now")
        assert await reader.readexactly(8) == b"mine now"
        writer.write(b"to the client")
        await writer.drain()
        await broker.aclose()  # the session goes: the daemon shuts the socket down, then closes it
        channel.settimeout(5)
        assert _recv_all(channel, 100) == b"to the client"  # what had arrived, then EOF
        with pytest.raises(OSError):
            for _ in range(100):  # the first send after a shutdown fails with EPIPE
                channel.send(b"x")
        assert await read_until_eof(reader) == b""


async def test_a_handed_off_socket_dies_with_its_custodian(broker: AsyncBroker, peer: PeerServer) -> None:
    custodian = await broker.make_custodian()
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port, custodian=custodian)
    reader, _writer = await peer.next()
    channel = await i.open_channel("handoff")
    with channel:
        await custodian.shutdown_all()
        channel.settimeout(5)
        assert channel.recv(10) == b""
        with pytest.raises(OSError):
            channel.sendall(b"x" * 100_000)
        assert await read_until_eof(reader) == b""


async def test_tickets_are_single_use(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
    await peer.next()
    reply = await broker.call("Ports.OpenChannel", port=i.handle, mode="relay")
    assert len(reply["ticket"]) >= 22 and reply["expires_seconds"] > 0  # ≥ 128 random bits
    channel = await _in_thread(redeem, reply["ticket"], reply["address"], "relay")
    channel.close()
    with pytest.raises(NotFoundError, match="no such ticket"):
        await _in_thread(redeem, reply["ticket"], reply["address"], "relay")


async def test_an_expired_ticket_is_refused(
    broker: AsyncBroker, peer: PeerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channels, "TICKET_SECONDS", 0.05)
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
    await peer.next()
    reply = await broker.call("Ports.OpenChannel", port=i.handle, mode="relay")
    await asyncio.sleep(0.2)
    with pytest.raises(NotFoundError, match="no such ticket"):
        await _in_thread(redeem, reply["ticket"], reply["address"], "relay")
    assert (await i.describe())["closed"] is False  # the port is as it was


async def test_a_ticket_dies_with_its_session_and_no_session_opens_anothers_ports(door: Any, peer: PeerServer) -> None:
    mine, other = await door(), await door()
    i, _o = await mine.tcp_connect("127.0.0.1", peer.port)
    await peer.next()
    with pytest.raises(NotFoundError):
        await other.call("Ports.OpenChannel", port=i.handle, mode="relay")
    reply = await mine.call("Ports.OpenChannel", port=i.handle, mode="handoff")
    await mine.aclose()
    with pytest.raises(NotFoundError):
        await _in_thread(redeem, reply["ticket"], reply["address"], "handoff")


async def test_bad_requests_are_typed(broker: AsyncBroker, peer: PeerServer) -> None:
    i, o = await broker.tcp_connect("127.0.0.1", peer.port)
    await peer.next()
    with pytest.raises(ContractError, match="relay"):
        await broker.call("Ports.OpenChannel", port=i.handle, mode="teleport")
    with pytest.raises(ContractError):
        await broker.call("Ports.OpenChannel", port=o.handle, mode="relay")  # the input port names it
    await i.close()
    with pytest.raises(FailError, match="input port is closed"):
        await i.open_channel("relay")
    sock = await broker.udp_open_socket("127.0.0.1")
    with pytest.raises(ContractError, match="handed off"):
        await broker.call("Udp.OpenChannel", udp=sock.handle, mode="relay")


async def test_a_udp_socket_is_handed_off_only_under_a_policy_that_allows_everything(broker: AsyncBroker) -> None:
    sock = await broker.udp_open_socket("127.0.0.1")
    await sock.bind("127.0.0.1", 0)
    with pytest.raises(PermissionDeniedError, match="allow_connect"):
        await sock.open_channel()


async def test_the_channel_door_refuses_what_is_not_a_ticket(daemon: Daemon) -> None:
    relay = daemon.broker.channels.relay_address
    handoff = daemon.broker.channels.handoff_path
    assert relay is not None and handoff is not None

    def ask(address: str, line: bytes) -> bytes:
        host, _, port = address.rpartition(":")
        family, target = (
            (socket.AF_UNIX, address[5:]) if address.startswith("unix:") else (socket.AF_INET, (host, int(port)))
        )
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(15)
            sock.connect(target)
            sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            return _recv_to_eof(sock)

    assert (await _in_thread(ask, relay, b"nonsense\n")).startswith(b"ERR not-found ")
    assert (await _in_thread(ask, f"unix:{handoff}", b"\xff\xfe\n")).startswith(b"ERR exn:fail:contract ")
    assert (await _in_thread(ask, relay, b"x" * 300)).startswith(b"ERR exn:fail:contract channel: no newline")
    ended = b"ERR exn:fail:contract channel: the connection ended before its ticket line\n"
    assert await _in_thread(ask, relay, b"") == ended


async def test_a_hand_off_ticket_is_redeemed_on_the_unix_socket_only(
    broker: AsyncBroker, peer: PeerServer, daemon: Daemon
) -> None:
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
    await peer.next()
    reply = await broker.call("Ports.OpenChannel", port=i.handle, mode="handoff")
    assert reply["address"] == f"unix:{daemon.broker.channels.handoff_path}"
    relay_address = daemon.broker.channels.relay_address
    assert relay_address is not None
    with pytest.raises(ContractError, match="hand-off socket"):
        await _in_thread(redeem, reply["ticket"], relay_address, "relay")


async def test_the_hand_off_socket_is_private(daemon: Daemon) -> None:
    path = daemon.broker.channels.handoff_path
    assert path is not None
    assert os.stat(path).st_mode & 0o777 == 0o600


async def test_hand_off_can_be_refused_by_policy(tmp_path: Any, peer: PeerServer) -> None:
    async with (
        serving(tmp_path / "token", allow_handoff=False) as daemon,
        await AsyncBroker.connect(
            f"127.0.0.1:{daemon.grpc_port}", transport="grpc", token_file=tmp_path / "token"
        ) as broker,
    ):
        i, _o = await broker.tcp_connect("127.0.0.1", peer.port)
        await peer.next()
        with pytest.raises(PermissionDeniedError, match="allow-handoff"):
            await i.open_channel("handoff")
        channel = await i.open_channel("relay")  # a relay gives no descriptor away: still allowed
        channel.close()


async def test_a_udp_socket_handed_off_under_a_wide_policy(tmp_path: Any) -> None:
    wide = {
        "allow_connect": ["0.0.0.0/0", "::/0"],
        "allow_listen": ["0.0.0.0/0", "::/0"],
        "allow_multicast": ["0.0.0.0/0", "::/0"],
    }
    async with (
        serving(tmp_path / "token", **wide) as daemon,
        await AsyncBroker.connect(
            f"127.0.0.1:{daemon.grpc_port}", transport="grpc", token_file=tmp_path / "token"
        ) as broker,
    ):
        sock = await broker.udp_open_socket("127.0.0.1")
        await sock.bind("127.0.0.1", 0)
        _, port = (await sock.addresses(True))[:2]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.1", 0))
            other.sendto(b"queued", ("127.0.0.1", port))
            channel = await sock.open_channel()
            with channel:
                channel.settimeout(5)
                assert channel.type == socket.SOCK_DGRAM
                assert channel.recvfrom(100)[0] == b"queued"
                channel.sendto(b"from the client", other.getsockname())
                other.settimeout(5)
                assert other.recvfrom(100)[0] == b"from the client"
                with pytest.raises(FailError, match="handed off"):
                    await sock.receive(100, wait=False)
                await sock.close()
                with pytest.raises(OSError):
                    channel.sendto(b"after", other.getsockname())


async def test_carried_ports_still_count_against_the_session_quota(tmp_path: Any, peer: PeerServer) -> None:
    async with (
        serving(tmp_path / "token", max_handles_per_session=4) as daemon,
        await AsyncBroker.connect(
            f"127.0.0.1:{daemon.grpc_port}", transport="grpc", token_file=tmp_path / "token"
        ) as broker,
    ):
        i, _o = await broker.tcp_connect("127.0.0.1", peer.port)  # the root custodian + 2: 3 of 4
        await peer.next()
        channel = await i.open_channel("relay")
        with channel:
            with pytest.raises(ResourceExhaustedError, match="too many handles"):
                await broker.tcp_connect("127.0.0.1", peer.port)
            await i.close()  # ends the channel and frees both handles
            assert await _in_thread(_recv_to_eof, channel) == b""
        i2, _o2 = await broker.tcp_connect("127.0.0.1", peer.port)
        assert not (await i2.describe())["closed"]


async def test_a_door_full_of_silent_connections_closes_the_oldest(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path / "token", connections_per_door=16) as daemon:
        address = daemon.broker.channels.relay_address
        assert address is not None
        host, _, port = address.rpartition(":")

        def flood() -> list[bytes]:
            socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(20)]
            try:
                heard = []
                for sock in socks[:4]:  # the four oldest were closed to make room, unanswered
                    heard.append(sock.recv(100))
                return heard
            finally:
                for sock in socks:
                    sock.close()

        assert await _in_thread(flood) == [b""] * 4
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
