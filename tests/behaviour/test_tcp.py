"""racket/tcp, bullet by bullet (DESIGN.md §3), on every front door, with real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket

import netns
import pytest
from helpers import Peer, PeerServer, read_until_eof, silent_for
from rawwire import random_moment
from sockbroker_client import (
    EOF,
    AsyncBroker,
    ContractError,
    FailError,
    InputPort,
    NetworkErrnoError,
    NetworkError,
    OutputPort,
)

#: Cancelled calls per race test: each cancels a random moment after its result arrives.
RACES = 100


async def identify(accepted: list[tuple[InputPort, OutputPort]], peers: list[Peer]) -> list[int]:
    """The id each accepted connection's peer sent, read through the broker; each peer must then
    receive the answer written through the broker."""
    ids = []
    for i, o in accepted:
        ident = await i.read_bytes(8, timeout=5)
        assert isinstance(ident, bytes) and len(ident) == 8, ident
        await o.write(b"ack:" + ident, flush=True)
        async with asyncio.timeout(5):
            assert await peers[int(ident)][0].readexactly(12) == b"ack:" + ident
        ids.append(int(ident))
    return ids


async def connected(broker: AsyncBroker, peer: PeerServer) -> tuple[InputPort, OutputPort, Peer]:
    i, o = await broker.tcp_connect("127.0.0.1", peer.port)
    return i, o, await peer.next()


# ───────────────────────────── port numbers ─────────────────────────────


@pytest.mark.parametrize("port", [-1, 65536, 1 << 30])
async def test_listen_port_out_of_range_is_a_contract_error(broker: AsyncBroker, port: int) -> None:
    with pytest.raises(ContractError) as info:
        await broker.tcp_listen(port, hostname="127.0.0.1")
    assert "listen-port-number?" in info.value.message


@pytest.mark.parametrize("port", [0, -5, 65536])
async def test_connect_port_out_of_range_is_a_contract_error(broker: AsyncBroker, port: int) -> None:
    with pytest.raises(ContractError) as info:
        await broker.tcp_connect("127.0.0.1", port)
    assert "port-number?" in info.value.message


async def test_listen_port_zero_binds_an_ephemeral_port(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    local_host, local_port, remote_host, remote_port = await listener.addresses(port_numbers=True)
    assert (local_host, remote_host, remote_port) == ("127.0.0.1", "0.0.0.0", 0)
    assert 1 <= local_port <= 65535
    assert await listener.addresses() == ("127.0.0.1", "0.0.0.0")


# ───────────────────────────── listen ─────────────────────────────


async def test_listen_without_hostname_accepts_ipv4_and_ipv6(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0)
    host, port, _, _ = await listener.addresses(port_numbers=True)
    assert host == "0.0.0.0"
    for address in ("127.0.0.1", "::1"):
        _, writer = await asyncio.open_connection(address, port)
        ports = await listener.accept(timeout=5)
        assert ports is not None
        i, _o = ports
        local_host, local_port, remote_host, _ = await i.addresses(port_numbers=True)
        assert (local_host, local_port, remote_host) == (address, port, address)
        writer.close()


async def test_listen_on_loopback_accepts_only_there(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    _, port, _, _ = await listener.addresses(port_numbers=True)
    with pytest.raises(OSError):
        await asyncio.open_connection("::1", port)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await listener.accept(timeout=5) is not None
    writer.close()


async def test_listen_reuse_sets_so_reuseaddr(broker: AsyncBroker) -> None:
    # A port with a connection in TIME_WAIT (the broker's side closed first) can be listened on
    # again only with reuse.
    listener = await broker.tcp_listen(0, reuse=True, hostname="127.0.0.1")
    _, port, _, _ = await listener.addresses(port_numbers=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ports = await listener.accept(timeout=5)
    assert ports is not None
    await ports[1].close()
    await ports[0].close()
    assert await read_until_eof(reader) == b""
    writer.close()
    await listener.close()
    with pytest.raises(NetworkErrnoError) as info:
        await broker.tcp_listen(port, hostname="127.0.0.1")
    assert info.value.errno == errno.EADDRINUSE
    again = await broker.tcp_listen(port, reuse=True, hostname="127.0.0.1")
    assert (await again.addresses(port_numbers=True))[1] == port


async def test_listen_backlog_is_honoured(broker: AsyncBroker) -> None:
    backlog = 1
    listener = await broker.tcp_listen(0, backlog, hostname="127.0.0.1")
    _, port, _, _ = await listener.addresses(port_numbers=True)
    loop = asyncio.get_running_loop()
    socks, established = [], 0
    try:
        for _ in range(6):
            sock = socket.socket()
            sock.setblocking(False)
            socks.append(sock)
            try:
                async with asyncio.timeout(0.5):
                    await loop.sock_connect(sock, ("127.0.0.1", port))
                established += 1
            except (TimeoutError, OSError):
                pass
        # Linux queues backlog + 1 completed connections; the rest wait in SYN state.
        assert 1 <= established <= backlog + 1
        assert await listener.accept_ready()
    finally:
        for sock in socks:
            sock.close()


async def test_listen_on_a_port_in_use_is_a_network_errno_error(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    _, port, _, _ = await listener.addresses(port_numbers=True)
    with pytest.raises(NetworkErrnoError) as info:
        await broker.tcp_listen(port, hostname="127.0.0.1")
    assert info.value.errno == errno.EADDRINUSE and info.value.errno_family == "posix"
    assert info.value.message.startswith("tcp-listen: listen failed")


# ───────────────────────────── connect ─────────────────────────────


async def test_connect_refused_carries_errno(broker: AsyncBroker) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NetworkErrnoError) as info:
        await broker.tcp_connect("127.0.0.1", port)
    err = info.value
    assert (err.errno, err.errno_family) == (errno.ECONNREFUSED, "posix")
    assert err.message.startswith("tcp-connect: connection failed\n  hostname: 127.0.0.1\n")
    assert "system error: Connection refused; errno=111" in err.message


async def test_connect_unknown_host_carries_the_resolver_code(broker: AsyncBroker) -> None:
    with pytest.raises(NetworkErrnoError) as info:
        await broker.tcp_connect(netns.UNKNOWN_HOST, 80)  # for real: the suite's hosts file has no such name
    assert info.value.errno_family == "gai"
    assert info.value.errno == socket.EAI_NONAME
    assert "gai_err=" in info.value.message


async def test_connect_local_hostname_without_local_port_is_a_contract_error(broker: AsyncBroker) -> None:
    with pytest.raises(ContractError) as info:
        await broker.tcp_connect("127.0.0.1", 9, local_hostname="127.0.0.1")
    assert "local port" in info.value.message


async def test_connect_with_local_address_and_port(broker: AsyncBroker, peer: PeerServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local_port = probe.getsockname()[1]
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port, "127.0.0.1", local_port)
    _, writer = await peer.next()
    assert writer.get_extra_info("peername")[1] == local_port
    assert await i.addresses(port_numbers=True) == ("127.0.0.1", local_port, "127.0.0.1", peer.port)


async def test_connect_with_local_port_only(broker: AsyncBroker, peer: PeerServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local_port = probe.getsockname()[1]
    i, _o = await broker.tcp_connect("127.0.0.1", peer.port, local_port=local_port)
    await peer.next()
    assert (await i.addresses(port_numbers=True))[1] == local_port


# ───────────────────────────── accept ─────────────────────────────


async def test_accept_blocks_until_a_client_connects(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    _, port, _, _ = await listener.addresses(port_numbers=True)
    pending = asyncio.ensure_future(listener.accept())
    await asyncio.sleep(0.1)
    assert not pending.done()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(5):
        ports = await pending
    assert ports is not None
    i, o = ports
    await o.write(b"hello", flush=True)
    assert await reader.readexactly(5) == b"hello"
    writer.write(b"back")
    assert await i.read_bytes(4) == b"back"
    writer.close()


async def test_accept_timeout_returns_nothing(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    assert await listener.accept(timeout=0.05) is None


async def test_cancelled_accept_never_loses_the_connection(broker: AsyncBroker) -> None:
    """Accepts cancelled a random moment after their connection arrives: each connection is the
    result of the cancelled accept or of a later one, exactly once, alive and carrying its bytes."""
    rng = random.Random(207)
    listener = await broker.tcp_listen(0, 2 * RACES, hostname="127.0.0.1")  # room for every connection
    _, port, _, _ = await listener.addresses(port_numbers=True)
    peers: list[Peer] = []
    accepted: list[tuple[InputPort, OutputPort]] = []
    try:
        for n in range(RACES):
            pending = asyncio.ensure_future(listener.accept())
            await random_moment(rng)
            peers.append(await asyncio.open_connection("127.0.0.1", port))
            peers[-1][1].write(b"%08d" % n)
            await random_moment(rng)
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                ports = await pending
                assert ports is not None
                accepted.append(ports)
        while (ports := await listener.accept(timeout=0.5)) is not None:
            accepted.append(ports)
        assert sorted(await identify(accepted, peers)) == list(range(RACES))
    finally:
        for _, writer in peers:
            writer.close()


async def test_accept_ready(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    _, port, _, _ = await listener.addresses(port_numbers=True)
    assert await listener.accept_ready() is False
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(100):
        if await listener.accept_ready():
            break
        await asyncio.sleep(0.01)
    assert await listener.accept_ready() is True
    assert await listener.accept(timeout=5) is not None
    assert await listener.accept_ready() is False
    writer.close()


# ───────────────────────────── close ─────────────────────────────


async def test_close_listener_ends_unaccepted_clients(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    _, port, _, _ = await listener.addresses(port_numbers=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await listener.close()
    assert await read_until_eof(reader) == b""
    writer.close()


async def test_close_listener_leaves_accepted_clients(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    _, port, _, _ = await listener.addresses(port_numbers=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ports = await listener.accept(timeout=5)
    assert ports is not None
    await listener.close()
    await ports[1].write(b"still here", flush=True)
    assert await reader.readexactly(10) == b"still here"
    writer.close()


async def test_closed_listener_refuses_everything(broker: AsyncBroker) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    await listener.close()
    for attempt in (listener.close(), listener.accept(timeout=1), listener.accept_ready(), listener.addresses()):
        with pytest.raises(NetworkError) as info:
            await attempt
        assert info.value.kind == "exn:fail:network"
        assert "listener is closed" in info.value.message


async def test_a_blocked_accept_fails_when_its_listener_closes(broker: AsyncBroker, door: object) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    pending = asyncio.ensure_future(listener.accept())
    await asyncio.sleep(0.1)
    await listener.close()
    with pytest.raises(NetworkError):
        async with asyncio.timeout(5):
            await pending


# ───────────────────────────── describe and addresses ─────────────────────────────


async def test_describe_answers_the_predicates(broker: AsyncBroker, peer: PeerServer) -> None:
    listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    i, o, _ = await connected(broker, peer)
    assert (await listener.describe())["kind"] == "tcp-listener"
    assert await broker.tcp_listener(listener) and not await broker.tcp_port(listener)
    info_in, info_out = await i.describe(), await o.describe()
    assert (info_in["kind"], info_out["kind"]) == ("tcp-input-port", "tcp-output-port")
    assert await broker.tcp_port(i) and await broker.tcp_port(o) and not await broker.tcp_listener(i)
    assert info_in["closed"] is False and info_out["buffer_mode"] == "block"
    assert info_in["custodian"] == broker.custodian.handle
    await o.close()
    described = await o.describe()
    assert described["closed"] is True and described["state"] == "closed"


async def test_addresses_of_ports_match_the_peer(broker: AsyncBroker, peer: PeerServer) -> None:
    i, o, (_, writer) = await connected(broker, peer)
    peer_local = writer.get_extra_info("sockname")
    peer_remote = writer.get_extra_info("peername")
    expected = ("127.0.0.1", peer_remote[1], "127.0.0.1", peer_local[1])
    assert await i.addresses(port_numbers=True) == expected
    assert await o.addresses(port_numbers=True) == expected
    assert await o.addresses() == ("127.0.0.1", "127.0.0.1")


# ───────────────────────────── read ─────────────────────────────


async def test_read_avail_returns_what_is_there(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o, (_, writer) = await connected(broker, peer)
    writer.write(b"abcdef")
    await writer.drain()
    got = b""
    while len(got) < 6:
        chunk = await i.read(4)
        assert isinstance(chunk, bytes) and 1 <= len(chunk) <= 4
        got += chunk
    assert got == b"abcdef"


async def test_read_nowait_returns_zero_bytes_when_nothing_is_there(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o, _ = await connected(broker, peer)
    assert await i.read_bytes_avail_nowait(10) == b""


async def test_read_exact_waits_for_the_whole_amount(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o, (_, writer) = await connected(broker, peer)
    pending = asyncio.ensure_future(i.read_bytes(6))
    writer.write(b"abc")
    await asyncio.sleep(0.1)
    assert not pending.done()
    writer.write(b"def")
    async with asyncio.timeout(5):
        assert await pending == b"abcdef"


async def test_read_exact_returns_fewer_only_at_eof(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o, (_, writer) = await connected(broker, peer)
    writer.write(b"abc")
    writer.write_eof()
    assert await i.read_bytes(10) == b"abc"
    assert await i.read_bytes(10) is EOF


async def test_eof_is_distinct_from_zero_bytes(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o, (_, writer) = await connected(broker, peer)
    reply = await broker.call("Ports.Read", port=i.handle, mode="nowait")
    assert reply["data"] == b"" and reply["eof"] is False
    writer.write_eof()
    reply = await broker.call("Ports.Read", port=i.handle)
    assert reply["data"] == b"" and reply["eof"] is True


async def test_peek_does_not_consume(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o, (_, writer) = await connected(broker, peer)
    writer.write(b"xyz")
    assert await i.read(3, mode="exact", peek=True) == b"xyz"
    assert await i.peek_bytes_avail(2) == b"xy"
    assert await i.read_bytes(3) == b"xyz"


async def test_read_timeout_returns_nothing_and_consumes_nothing(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o, (_, writer) = await connected(broker, peer)
    writer.write(b"ab")
    assert await i.read(5, mode="exact", timeout=0.1) is None
    assert await i.read_bytes(2) == b"ab"


async def test_read_arguments_are_checked(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o, _ = await connected(broker, peer)
    with pytest.raises(ContractError):
        await i.read(-1)
    with pytest.raises(ContractError):
        await i.read(10, mode="sometimes")
    with pytest.raises(ContractError):
        await i.read(10, timeout=-1)


# ───────────────────────────── write and buffering ─────────────────────────────


async def test_output_is_block_buffered_until_flush(broker: AsyncBroker, peer: PeerServer) -> None:
    _i, o, (reader, _) = await connected(broker, peer)
    assert await o.write(b"held") == 4
    assert await silent_for(reader)
    await o.flush()
    assert await reader.readexactly(4) == b"held"


async def test_a_full_buffer_is_flushed(broker: AsyncBroker, peer: PeerServer) -> None:
    _i, o, (reader, _) = await connected(broker, peer)
    await o.write(b"x" * 4096)
    assert await reader.readexactly(4096) == b"x" * 4096


async def test_line_mode_flushes_at_newline(broker: AsyncBroker, peer: PeerServer) -> None:
    _i, o, (reader, _) = await connected(broker, peer)
    await o.set_buffer_mode("line")
    await o.write(b"partial")
    assert await silent_for(reader)
    await o.write(b" line\n")
    assert await reader.readexactly(13) == b"partial line\n"
    assert (await o.describe())["buffer_mode"] == "line"


async def test_none_mode_writes_straight_through(broker: AsyncBroker, peer: PeerServer) -> None:
    _i, o, (reader, _) = await connected(broker, peer)
    await o.write(b"wait")
    await o.set_buffer_mode("none")
    assert await reader.readexactly(4) == b"wait"
    await o.write(b"now")
    assert await reader.readexactly(3) == b"now"


async def test_write_with_flush_and_close_flushes(broker: AsyncBroker, peer: PeerServer) -> None:
    _i, o, (reader, _) = await connected(broker, peer)
    await o.write(b"one", flush=True)
    assert await reader.readexactly(3) == b"one"
    await o.write(b"two")
    await o.close()
    assert await read_until_eof(reader) == b"two"


async def test_bad_buffer_mode_is_a_contract_error(broker: AsyncBroker, peer: PeerServer) -> None:
    i, o, _ = await connected(broker, peer)
    with pytest.raises(ContractError):
        await o.set_buffer_mode("sometimes")
    with pytest.raises(ContractError) as info:
        await i.set_buffer_mode("line")
    assert (
        info.value.message
        == f"file-stream-buffer-mode: 'line buffering not supported for an input port\n  port: {i.handle}"
    )


# ───────────────────────────── closing, half-close, abandon ─────────────────────────────


async def test_closing_the_output_port_half_closes(broker: AsyncBroker, peer: PeerServer) -> None:
    i, o, (reader, writer) = await connected(broker, peer)
    await o.close()
    assert await read_until_eof(reader) == b""
    writer.write(b"reply after FIN")
    await writer.drain()
    assert await i.read_bytes(15) == b"reply after FIN"
    writer.close()
    assert await i.read() is EOF


async def test_closing_both_ports_closes_the_connection(broker: AsyncBroker, peer: PeerServer) -> None:
    i, o, (reader, _) = await connected(broker, peer)
    await i.close()
    assert await silent_for(reader)
    await o.close()
    assert await read_until_eof(reader) == b""


async def test_abandon_sends_no_fin_until_the_input_port_closes(broker: AsyncBroker, peer: PeerServer) -> None:
    i, o, (reader, _) = await connected(broker, peer)
    await o.write(b"last words")
    await o.abandon()
    assert await reader.readexactly(10) == b"last words"
    assert await silent_for(reader, 0.3)
    assert (await o.describe())["state"] == "abandoned"
    await i.close()
    assert await read_until_eof(reader) == b""


async def test_abandon_of_an_input_port_closes_it(broker: AsyncBroker, peer: PeerServer) -> None:
    i, _o, _ = await connected(broker, peer)
    await broker.tcp_abandon_port(i)
    assert (await i.describe())["closed"] is True


async def test_closed_ports_refuse_reads_and_writes_but_close_again_quietly(
    broker: AsyncBroker, peer: PeerServer
) -> None:
    # Racket's plain exn:fail, naming the port; tcp-addresses is exn:fail:network, as its docs say.
    i, o, _ = await connected(broker, peer)
    await i.close()
    await o.close()
    refusals = [
        (i.read(), f"read-bytes-avail!: input port is closed\n  input port: {i.handle}"),
        (i.set_buffer_mode("none"), f"file-stream-buffer-mode: input port is closed\n  input port: {i.handle}"),
        (o.write(b"x"), f"write-bytes: output port is closed\n  output port: {o.handle}"),
        (o.flush(), f"flush-output: output port is closed\n  output port: {o.handle}"),
    ]
    for attempt, message in refusals:
        with pytest.raises(FailError) as failed:
            await attempt
        assert (failed.value.kind, failed.value.message) == ("exn:fail", message)
    for port in (i, o):
        with pytest.raises(NetworkError) as info:
            await port.addresses()
        assert (info.value.kind, info.value.message) == (
            "exn:fail:network",
            f"tcp-addresses: port is closed\n  port: {port.handle}",
        )
    await i.close()
    await o.close()


async def test_wrong_kind_of_handle_is_a_contract_error(broker: AsyncBroker, peer: PeerServer) -> None:
    i, o, _ = await connected(broker, peer)
    with pytest.raises(ContractError) as info:
        await broker.call("Ports.Write", port=i.handle, data=b"x")
    assert "output-port?" in info.value.message
    with pytest.raises(ContractError):
        await broker.tcp_accept(o.handle)
