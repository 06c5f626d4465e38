"""tests/socket_origins.py: the suite notes where each socket was made, until it is closed."""

from __future__ import annotations

import socket

from socket_origins import made_at


def _make_a_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def test_an_open_socket_says_where_it_was_made_and_a_closed_one_is_forgotten() -> None:
    sock = _make_a_socket()
    try:
        where = made_at(sock)
        assert where is not None and where.splitlines()[0].startswith("  _make_a_socket (")
        assert "test_an_open_socket_says_where_it_was_made" in where
    finally:
        sock.close()
    assert made_at(sock) is None
    detached = socket.socket()
    detached.detach()
    assert made_at(detached) is None
