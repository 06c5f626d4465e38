"""What a new user of the Python client ran into (issue 9, item 6), one test each, on a real daemon.

- ``async with AsyncBroker.connect()`` works (it raised TypeError: ``connect`` was a coroutine);
- an ``http(s)://`` target picks REST without ``transport="rest"`` (DESIGN §9);
- a read whose timeout passes returns None, distinct from :data:`EOF` and from the ``b""`` of
  the never-blocking read (it returned ``b""``, as false as EOF);
- ``async with`` on a handle closes it, as ``with`` does on a blocking one;
- no daemon at the target is one line saying how to start one.

The other snags are covered where their code is tested: the missing token file's one-line
message in ``test_token_file.py`` (``test_a_missing_or_unopenable_token_file_is_a_typed_error``),
and the blocking ``Broker``'s explicit methods and iterator streams in ``test_blocking.py``
(``test_every_async_method_has_an_explicit_blocking_twin``, ``test_nothing_is_forwarded_by_getattr``,
``test_datagram_streams_are_iterators``).
"""

from __future__ import annotations

import asyncio
import pathlib
import socket

import pytest
from helpers import target
from sockbroker.server import Daemon
from sockbroker_client import (
    EOF,
    AsyncBroker,
    Broker,
    BrokerUnavailableError,
    Connecting,
    ContractError,
    NotFoundError,
)

TRANSPORTS = ("grpc", "rest")


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_async_with_connect_opens_and_closes_the_session(
    daemon: Daemon, token_file: pathlib.Path, kind: str
) -> None:
    opening = AsyncBroker.connect(target(daemon, kind), token_file=token_file)
    assert isinstance(opening, Connecting)
    async with opening as broker:
        assert broker.channel.name == kind and broker.session.startswith("ses_")
        listener = await broker.tcp_listen(0, hostname="127.0.0.1")
    async with await AsyncBroker.connect(target(daemon, kind), token_file=token_file) as other:  # awaiting works too
        with pytest.raises(NotFoundError):  # the first session and its listener are gone
            await other.call("Handles.Describe", handle=listener.handle)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_the_target_picks_the_transport(daemon: Daemon, token_file: pathlib.Path, kind: str) -> None:
    async with AsyncBroker.connect(target(daemon, kind), token_file=token_file) as broker:
        assert broker.channel.name == kind

    def blocking() -> str:
        with Broker.connect(target(daemon, kind), token_file=token_file) as broker:
            return broker.transport

    assert await asyncio.to_thread(blocking) == kind


@pytest.mark.parametrize(
    ("given", "transport", "message"),
    [
        ("http://127.0.0.1:9", "grpc", "is a REST URL"),
        ("127.0.0.1:9", "rest", "a REST target is a URL"),
        ("127.0.0.1:9", "smtp", "transport must be 'grpc' or 'rest'"),
    ],
)
async def test_a_target_that_contradicts_the_transport_is_a_contract_error(
    token_file: pathlib.Path, given: str, transport: str, message: str
) -> None:
    with pytest.raises(ContractError, match=message):
        await AsyncBroker.connect(given, transport=transport, token="x" * 43)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_a_timed_out_read_is_none_nowait_is_empty_and_eof_is_eof(
    daemon: Daemon, token_file: pathlib.Path, kind: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        async with AsyncBroker.connect(target(daemon, kind), token_file=token_file) as broker:
            i, _o = await broker.tcp_connect("127.0.0.1", server.getsockname()[1])
            peer, _ = await asyncio.to_thread(server.accept)
            with peer:
                assert await i.read_bytes_avail(timeout=0.1) is None
                assert await i.read_bytes(4, timeout=0.1) is None
                assert await i.peek_bytes_avail(timeout=0.1) is None
                assert await i.read_bytes_avail_nowait() == b""  # Racket's read-bytes-avail!* returns 0
                peer.sendall(b"data")
                assert await i.read_bytes(4, timeout=5) == b"data"  # nothing was lost to the timeouts
                peer.shutdown(socket.SHUT_WR)
                assert await i.read_bytes_avail(timeout=5) is EOF
                assert await i.read_bytes_avail_nowait() is EOF


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_async_with_on_a_handle_closes_it(daemon: Daemon, token_file: pathlib.Path, kind: str) -> None:
    async with AsyncBroker.connect(target(daemon, kind), token_file=token_file) as broker:
        async with await broker.tcp_listen(0, hostname="127.0.0.1") as listener:
            port = (await listener.addresses(port_numbers=True))[1]
            i, o = await broker.tcp_connect("127.0.0.1", port)
            async with o:
                pass
            assert (await o.describe())["closed"] is True
            async with i:
                await i.close()  # closed inside the block: leaving it is no error
        assert (await listener.describe())["closed"] is True
        custodian = await broker.make_custodian()
        async with custodian:
            sock = await broker.udp_open_socket(custodian=custodian)
        assert (await sock.describe())["closed"] is True  # shut down with its custodian


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_no_daemon_is_one_line_saying_how_to_start_one(kind: str) -> None:
    port = _free_port()
    where = f"127.0.0.1:{port}" if kind == "grpc" else f"http://127.0.0.1:{port}"
    with pytest.raises(BrokerUnavailableError) as caught:
        async with asyncio.timeout(20):
            await AsyncBroker.connect(where, token="x" * 43)
    message = str(caught.value)
    assert message.startswith(f"no daemon at {where}: start it with `sockbroker serve`"), message
    assert "\n" not in message
