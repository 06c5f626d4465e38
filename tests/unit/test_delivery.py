"""The REST door's test of delivery (``doors/_delivery.py``): real loopback sockets, no door."""

from __future__ import annotations

import asyncio
import pathlib
import socket
from collections.abc import Iterator

import pytest
from sockbroker.doors._delivery import Delivery


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
