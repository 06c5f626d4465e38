"""tests/socket_origins.py: the suite notes where each socket was made, until it is closed."""

from __future__ import annotations

import socket

from socket_origins import _made_by_anyio_connect, made_at


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


def test_a_socket_of_an_anyio_connection_attempt_is_recognised() -> None:
    """Such a socket, left unclosed by a cancelled httpx connect, is reported on stderr instead of
    failing an unrelated test (tests/socket_origins.py says why)."""
    namespace: dict[str, object] = {"socket": socket}
    exec(
        compile("def connect_tcp():\n    return socket.socket()\n", "/x/anyio/_backends/_asyncio.py", "exec"), namespace
    )
    made = namespace["connect_tcp"]()  # type: ignore[operator]
    other = _make_a_socket()
    try:
        assert _made_by_anyio_connect(made) and not _made_by_anyio_connect(other)
    finally:
        made.close()
        other.close()
