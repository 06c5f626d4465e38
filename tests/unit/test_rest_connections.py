"""The REST door's cap on connections (``doors/_rest_connections.py``), without a network: a full
door evicts the oldest connection without a token, ``capacity`` at once and then
``capacity / unauthenticated_timeout`` a second, and otherwise takes no new connection (its
acceptor waits in :meth:`Connections.room`, leaving newcomers in the kernel's listen queue)."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import socket
import ssl
from typing import Any, cast

import pytest
import trustme
from sockbroker.doors._rest_connections import Acceptor, Connections

CAPACITY = 4
UNAUTHENTICATED_TIMEOUT = 2.0  # so one eviction every 0.5 s once the first CAPACITY are spent


class _Transport:
    """Enough of a transport for :class:`Connections`: it is aborted when its connection goes."""

    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> None:
        return None  # neither TLS nor a socket: no credentials of the connection's own


def _door() -> Connections:
    return Connections(
        cast(Any, None),
        capacity=CAPACITY,
        header_timeout=60.0,
        unauthenticated_timeout=UNAUTHENTICATED_TIMEOUT,
        bytes_in_flight=1024,
    )


async def _admit(door: Connections, within: float) -> _Transport:
    await asyncio.wait_for(door.room(), within)
    transport = _Transport()
    door.opened(cast(Any, transport))
    return transport


async def test_a_full_door_evicts_at_its_rate_and_otherwise_waits() -> None:
    door = _door()
    first = [await _admit(door, 0.1) for _ in range(CAPACITY)]
    assert len(door) == CAPACITY and not any(t.aborted for t in first)
    second = [await _admit(door, 0.1) for _ in range(CAPACITY)]  # the burst: each evicts the oldest
    assert all(t.aborted for t in first) and not any(t.aborted for t in second)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _admit(door, 5)  # the burst is spent: one eviction per 0.5 s
    assert loop.time() - started >= 0.4
    assert second[0].aborted and len(door) == CAPACITY


async def test_a_door_full_of_token_holders_waits_until_one_leaves() -> None:
    door = _door()
    transports = [await _admit(door, 0.1) for _ in range(CAPACITY)]
    connections = [door.adopt(cast(Any, t)) for t in transports]
    for connection in connections:
        assert connection is not None
        connection.authenticated = True  # what headers_complete does for a valid token
        door._unauthenticated.pop(connection)
    waiting = [asyncio.ensure_future(door.room()) for _ in range(2)]  # one per listening socket
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waiting)  # nobody may be evicted: the door takes no one
    assert connections[0] is not None
    door.closed(connections[0])
    await asyncio.wait_for(asyncio.gather(*waiting), 1)  # both woken by the close, not by a timer


class _Greeter(asyncio.Protocol):
    """Says hello and hangs up: proof that the acceptor served the connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"hello")
        transport.close()


async def test_the_acceptor_goes_on_after_a_connection_it_could_not_serve(caplog: pytest.LogCaptureFixture) -> None:
    """A protocol that fails to start loses its connection, never the door: the next one is served."""
    made: list[str] = []

    def factory() -> asyncio.Protocol:
        made.append("protocol")
        if len(made) == 1:
            raise RuntimeError("a bug in the protocol")
        return _Greeter()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    acceptor = Acceptor(_door(), [listener], factory, ssl_context=None, backlog=8)
    acceptor.start()
    try:
        for expected in (b"", b"hello"):
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            assert await asyncio.wait_for(reader.read(), 5) == expected
            writer.close()
    finally:
        await acceptor.close()
    assert made == ["protocol", "protocol"]
    assert "could not serve an accepted connection" in caplog.text


async def test_an_acceptor_out_of_descriptors_warns_once_and_accepts_when_it_can(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """EMFILE is retried every 0.1 s; the log gets one warning, not ten a second."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    acceptor = Acceptor(_door(), [listener], _Greeter, ssl_context=None, backlog=8)
    acceptor.start()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    client = socket.socket()  # made before the limit: connecting takes no new descriptor
    client.setblocking(False)
    try:
        lowest_free = os.dup(0)
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no new descriptor at all
        try:
            await asyncio.get_running_loop().sock_connect(client, listener.getsockname())
            await asyncio.sleep(0.55)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        client.settimeout(5)
        assert await asyncio.to_thread(client.recv, 16) == b"hello"  # accepted once it could
    finally:
        client.close()
        await acceptor.close()
    warnings = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(warnings) == 1 and "Too many open files" in warnings[0].getMessage()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_closing_acceptor_closes_every_socket_it_accepted(tls: bool) -> None:
    """Connections arriving while the door closes: each accepted socket is served or closed, none
    is left for the collector (a ResourceWarning then fails the test). A TLS connection's task
    may be cancelled before it ran; an accept may complete just as the door is closing."""
    context = None
    if tls:
        authority = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1").configure_cert(context)
    loop = asyncio.get_running_loop()
    for round_ in range(30):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        acceptor = Acceptor(_door(), [listener], _Greeter, ssl_context=context, backlog=64)
        acceptor.start()
        clients = []
        for _ in range(8):
            client = socket.socket()
            client.setblocking(False)
            await loop.sock_connect(client, listener.getsockname())
            clients.append(client)
        for _ in range(round_ % 4):
            await asyncio.sleep(0)
        await acceptor.close()
        for client in clients:
            client.close()
    gc.collect()  # a socket left in a cycle meets the collector here, inside this test
