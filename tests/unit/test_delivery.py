"""The doors' tests of delivery (``doors/_delivery.py``): real loopback sockets, no door.

A reply is delivered when the client's kernel acknowledged all of it. The REST door writes its
replies itself (``handed``); gRPC core writes them in threads of its own (``written``, with a
thread standing in for core here)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import pathlib
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from sockbroker.doors._delivery import Delivery
from sockbroker.doors.grpc import _client_of, _Connections


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the daemon's side, the client's side) of one loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        daemon, _ = server.accept()
    try:
        yield daemon, client
    finally:
        daemon.close()
        client.close()


def _write(daemon: socket.socket, reply: bytes) -> Delivery:
    """Write ``reply`` as the REST door does: note the connection before and after."""
    delivery = Delivery.of(daemon.fileno())
    assert delivery is not None
    with contextlib.suppress(OSError):
        daemon.sendall(reply)
    delivery.handed(len(reply))
    return delivery


async def test_a_reply_the_clients_kernel_acknowledged_is_delivered(pair: tuple[socket.socket, socket.socket]) -> None:
    daemon, client = pair
    delivery = _write(daemon, b"reply" * 1000)
    assert await delivery.acknowledged(within=2) is True
    assert client.recv(65536)  # the client never had to read it for it to count


async def test_a_reply_to_a_client_that_closed_first_is_not_delivered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    daemon, client = pair
    client.close()
    await asyncio.sleep(0.05)  # the client's FIN is in; its kernel will answer the reply with a reset
    delivery = _write(daemon, b"reply")
    assert await delivery.acknowledged(within=2) is False


async def test_a_reply_whose_write_met_a_reset_is_not_delivered(pair: tuple[socket.socket, socket.socket]) -> None:
    """The client resets between the door's last look and its write: the write fails and queues
    nothing. Counting only what was queued after it, that was "all acknowledged"."""
    daemon, client = pair
    daemon.sendall(b"an earlier reply")
    assert client.recv(64) == b"an earlier reply"
    await asyncio.sleep(0.05)  # acknowledged
    delivery = Delivery.of(daemon.fileno())
    assert delivery is not None
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionResetError):
        daemon.send(b"reply")
    delivery.handed(len(b"reply"))
    assert await delivery.acknowledged(within=2) is False


async def test_a_reply_still_in_the_doors_buffer_waits_for_its_acknowledgement(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    daemon, client = pair
    delivery = Delivery.of(daemon.fileno())
    assert delivery is not None
    daemon.sendall(b"head")
    delivery.handed(len(b"head"), buffered=len(b"tail"))  # the rest has not reached the socket yet
    client.close()  # so it never will be acknowledged
    assert await delivery.acknowledged(within=2) is False


async def test_a_unix_socket_cannot_tell_and_counts_as_delivered() -> None:
    left, right = socket.socketpair()
    with left, right:
        delivery = _write(left, b"reply")
        assert await delivery.acknowledged(within=0.1) is True


def test_a_descriptor_that_is_no_socket_has_no_delivery(tmp_path: pathlib.Path) -> None:
    with (tmp_path / "file").open("wb") as file:
        assert Delivery.of(file.fileno()) is None


REPLY = b"reply" * 100


def _write_soon(sock: socket.socket, data: bytes) -> asyncio.Future[None]:
    """Write ``data`` from another thread, as gRPC core does, a moment from now."""

    def write() -> None:
        time.sleep(0.005)
        with contextlib.suppress(OSError):
            sock.sendall(data)

    return asyncio.get_running_loop().run_in_executor(None, write)


def _watch(daemon: socket.socket) -> Delivery:
    delivery = Delivery.of(daemon.fileno())
    assert delivery is not None
    return delivery


async def test_a_reply_written_while_the_client_is_there_is_delivered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    daemon, client = pair
    delivery = _watch(daemon)
    writer = _write_soon(daemon, REPLY)
    assert await delivery.written(len(REPLY), within=2) is True
    await writer
    assert client.recv(65536) == REPLY


async def test_part_of_a_reply_is_not_the_reply(pair: tuple[socket.socket, socket.socket]) -> None:
    daemon, client = pair
    delivery = _watch(daemon)
    daemon.sendall(REPLY[:10])  # a frame of its own (a window update, a FIN) is not the reply
    client.close()
    await asyncio.sleep(0.05)
    assert await delivery.written(len(REPLY), within=2) is False


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
async def test_a_client_that_left_before_the_write_does_not_get_it(
    pair: tuple[socket.socket, socket.socket], reset: bool
) -> None:
    daemon, client = pair
    delivery = _watch(daemon)
    if reset:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    writer = _write_soon(daemon, REPLY)  # after a FIN this reaches a closed socket; after a reset it fails
    assert await delivery.written(len(REPLY), within=2) is False
    await writer


#: A classic BPF program, ``ret #0``: the kernel drops every packet for the socket it is attached to.
_DROP_ALL = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))


async def test_a_reply_written_to_a_connected_client_that_never_accepts_it_is_not_delivered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The reply leaves the daemon while the client is still connected, but its kernel never
    accepts it (it drops every packet, then resets): written is not delivered."""
    daemon, client = pair
    client.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HP", 1, ctypes.addressof(_DROP_ALL)))  # SO_ATTACH_FILTER
    delivery = _watch(daemon)
    daemon.sendall(REPLY)
    outcome = asyncio.ensure_future(delivery.written(len(REPLY), within=2))
    await asyncio.sleep(0.05)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    assert await outcome is False


async def test_a_reply_written_as_the_client_leaves_is_delivered_if_its_kernel_took_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Written, then the client's FIN, both before the door looks: the client's kernel took the
    reply (its FIN acknowledges it), so it is delivered, though unread."""
    daemon, client = pair
    delivery = _watch(daemon)
    daemon.sendall(REPLY)
    client.shutdown(socket.SHUT_RDWR)
    await asyncio.sleep(0.05)
    assert await delivery.written(len(REPLY), within=2) is True


async def test_a_reply_core_holds_for_a_connected_client_counts_as_delivered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    daemon, _ = pair
    delivery = _watch(daemon)
    assert await delivery.written(len(REPLY), within=0.05) is True  # nothing written, nobody gone


def test_the_grpc_door_finds_its_own_connection_not_one_of_the_brokers_with_the_same_peer() -> None:
    """The kernel may give one client port two connections to two places: one to the gRPC door,
    one to a listener of the broker. The door must watch its own connection's socket."""
    with socket.create_server(("127.0.0.1", 0)) as door, socket.create_server(("127.0.0.1", 0)) as listener:
        clients: list[socket.socket] = []
        for server in (door, listener):
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            client.bind(("127.0.0.1", clients[0].getsockname()[1] if clients else 0))
            client.connect(server.getsockname())
            clients.append(client)
        ours, _ = door.accept()
        brokers, _ = listener.accept()  # the higher descriptor: a scan from the top meets it first
        try:
            port = clients[0].getsockname()[1]
            assert brokers.getpeername() == ours.getpeername() == ("127.0.0.1", port)
            ports = {door.getsockname()[1]}
            assert _client_of(brokers.fileno(), ports) is None
            assert _client_of(ours.fileno(), ports) == ("127.0.0.1", port)
            assert _Connections(ports).socket_of(f"ipv4:127.0.0.1:{port}") == ours.fileno()
        finally:
            for sock in (*clients, ours, brokers):
                sock.close()


async def test_a_poked_delivery_looks_again_at_once() -> None:
    """A reply's ACK came while its delivery waited on a long timer: a poke ends the wait."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        daemon, _ = server.accept()
        with client, daemon:
            delivery = _watch(daemon)
            started = asyncio.get_running_loop().time()
            pausing = asyncio.ensure_future(delivery._pause(30))
            await asyncio.sleep(0.01)
            delivery.poke()
            await asyncio.wait_for(pausing, 1)
            assert asyncio.get_running_loop().time() - started < 1
            delivery.handed(0)
            assert await delivery.acknowledged() is True  # nothing to acknowledge; closes its descriptor
