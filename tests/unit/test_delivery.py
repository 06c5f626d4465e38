"""The doors' tests of delivery (``doors/_delivery.py``): real loopback sockets, no door.

``Delivery`` is the REST door's (the client's kernel acknowledged the reply); ``Written`` the gRPC
door's (gRPC core wrote the reply, in a thread of its own here, while the client was there)."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from sockbroker.doors._delivery import Delivery, Written


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


async def test_a_reply_the_clients_kernel_acknowledged_is_delivered(pair: tuple[socket.socket, socket.socket]) -> None:
    daemon, client = pair
    daemon.sendall(b"reply" * 1000)
    delivery = Delivery.of(daemon.fileno())
    assert delivery is not None
    assert await delivery.acknowledged(within=2) is True
    assert client.recv(65536)  # the client never had to read it for it to count


async def test_a_reply_to_a_client_that_closed_first_is_not_delivered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    daemon, client = pair
    client.close()
    await asyncio.sleep(0.05)  # the client's FIN is in; its kernel will answer the reply with a reset
    daemon.sendall(b"reply")
    delivery = Delivery.of(daemon.fileno())
    assert delivery is not None
    assert await delivery.acknowledged(within=2) is False


async def test_a_unix_socket_cannot_tell_and_counts_as_delivered() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"reply")
        delivery = Delivery.of(left.fileno())
        assert delivery is not None
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


async def test_a_reply_written_while_the_client_is_there_is_delivered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    daemon, client = pair
    written = Written(daemon.fileno(), len(REPLY))
    writer = _write_soon(daemon, REPLY)
    assert await written.outcome(within=2) is True
    await writer
    assert client.recv(65536) == REPLY


async def test_part_of_a_reply_is_not_the_reply(pair: tuple[socket.socket, socket.socket]) -> None:
    daemon, client = pair
    written = Written(daemon.fileno(), len(REPLY))
    daemon.sendall(REPLY[:10])  # a frame of its own (a window update, a FIN) is not the reply
    client.close()
    await asyncio.sleep(0.05)
    assert await written.outcome(within=2) is False


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
async def test_a_client_that_left_before_the_write_does_not_get_it(
    pair: tuple[socket.socket, socket.socket], reset: bool
) -> None:
    daemon, client = pair
    written = Written(daemon.fileno(), len(REPLY))
    if reset:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    writer = _write_soon(daemon, REPLY)  # after a FIN this reaches a closed socket; after a reset it fails
    assert await written.outcome(within=2) is False
    await writer


async def test_a_reply_core_holds_for_a_connected_client_counts_as_delivered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    daemon, _ = pair
    written = Written(daemon.fileno(), len(REPLY))
    assert await written.outcome(within=0.05) is True  # nothing written, nobody gone
