"""Memory bounded by bytes (DESIGN §5, P8): what the core buffers for a session is charged to the
session's budget and the daemon's, producers wait (or drop, for datagrams) when a budget is full,
and a closed handle frees its buffers at once, whichever way it was closed.

Real sockets on loopback: the peers are plain sockets of this test, so the daemon's buffers fill
exactly as a misbehaving peer would fill them.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from sockbroker.core.broker import Api, Broker, Principal
from sockbroker.core.budget import Budget
from sockbroker.core.limits import Limits
from sockbroker.core.policy import Policy
from sockbroker.core.sync import PortReadReadyEvt
from sockbroker.core.tcp import TcpConnection

POLICY = Policy(allow_connect=("127.0.0.0/8",), allow_listen=("127.0.0.0/8",), allow_ports=("0-65535",))
KIB = 1024
MIB = 1024 * KIB
#: Small budgets, so that a few peers fill them.
PORT_BUFFER = 64 * KIB
SESSION_BUFFER = 1 * MIB
DAEMON_BUFFER = 3 * MIB // 2
#: One chunk a socket reader takes past a full budget (it checked before it read).
CHUNK = 256 * KIB


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    limits = Limits(
        port_receive_buffer=PORT_BUFFER,
        port_send_buffer=PORT_BUFFER,
        session_buffer=SESSION_BUFFER,
        daemon_buffer=DAEMON_BUFFER,
        udp_stream_buffer=64 * KIB,
    )
    b = Broker(limits, [Principal("test", "t" * 43, POLICY)])
    try:
        yield b
    finally:
        b.close()


def api_of(broker: Broker) -> Api:
    return broker.open_session(broker.principals[0])


async def peers(api: Api, count: int) -> tuple[list[socket.socket], list[TcpConnection]]:
    """``count`` connections accepted by the session, and the test's plain-socket peers."""
    listener = await api.tcp_listen(0, hostname="127.0.0.1", backlog=count)
    port = listener.port
    socks: list[socket.socket] = []
    conns: list[TcpConnection] = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
        conn = await api.tcp_accept(listener.handle, timeout=5)
        assert conn is not None
        conns.append(conn)
    return socks, conns


async def fill(sock: socket.socket, total: int) -> int:
    """Send up to ``total`` bytes without blocking: as much as the kernels take. Returns the count."""
    sent = 0
    chunk = b"x" * (64 * KIB)
    deadline = time.monotonic() + 5
    while sent < total and time.monotonic() < deadline:
        try:
            sent += sock.send(chunk[: total - sent])
        except BlockingIOError:
            await asyncio.sleep(0.01)
    return sent


def rx_total(conns: list[TcpConnection]) -> int:
    return sum(len(c.rx) for c in conns)


def test_budget_counts_nested_levels_and_wakes_in_measure() -> None:
    async def body() -> None:
        daemon = Budget(4 * CHUNK)
        session = Budget(2 * CHUNK, daemon)
        woken: list[int] = []
        session.charge(2 * CHUNK)
        assert session.full and not daemon.full
        for i in range(5):
            session.when_room(functools.partial(woken.append, i))
        session.release(CHUNK)  # room for one chunk: one waiter, the oldest
        await asyncio.sleep(0)
        assert woken == [0]
        session.release(CHUNK)  # room for two chunks: two more
        await asyncio.sleep(0)
        assert woken == [0, 1, 2]
        session.forget(woken.clear)  # forgetting what never waited is harmless
        daemon.charge(4 * CHUNK)  # another session fills the daemon: this one is full through it
        assert session.full and daemon.used == 4 * CHUNK
        session.when_room(lambda: woken.append(9))
        daemon.release(4 * CHUNK)
        await asyncio.sleep(0)
        assert woken[-1] == 9 and session.used == 0

    asyncio.run(body())


async def test_a_custodian_shutdown_frees_the_receive_buffers_it_closes(broker: Broker) -> None:
    api = api_of(broker)
    custodian = api.make_custodian()
    listener = await api.tcp_listen(0, hostname="127.0.0.1")
    peer = socket.create_connection(("127.0.0.1", listener.port))
    conn = await api.tcp_accept(listener.handle, custodian=custodian.handle, timeout=5)
    assert conn is not None
    peer.setblocking(False)
    await fill(peer, PORT_BUFFER)
    await until(lambda: len(conn.rx) == PORT_BUFFER)
    session = api.session
    assert session.budget.used == PORT_BUFFER
    api.custodian_shutdown_all(custodian.handle)
    # The port's tombstone stays (its handle answers "closed"), but its bytes are gone.
    assert len(conn.rx) == 0 and session.budget.used == 0 and broker.sessions.budget.used == 0
    peer.close()


async def test_a_session_reads_no_more_than_its_budget_and_loses_nothing(broker: Broker) -> None:
    api = api_of(broker)
    count = 24  # 24 x 64 KiB = 1.5 MiB offered against a 1 MiB session budget
    socks, conns = await peers(api, count)
    for sock in socks:
        await fill(sock, PORT_BUFFER)
    await until(lambda: api.session.budget.full)
    await asyncio.sleep(0.1)  # the readers had every chance to read past the budget
    assert rx_total(conns) <= SESSION_BUFFER + CHUNK
    assert api.session.budget.used == rx_total(conns)
    # Reading frees the budget and the paused readers resume: every byte arrives, in order.
    for conn in conns:
        got = 0
        while got < PORT_BUFFER:
            result = await api.read(conn.in_port.handle, max_bytes=PORT_BUFFER, timeout=5)
            assert result.data and set(result.data) == {ord("x")}
            got += len(result.data)
        assert got == PORT_BUFFER
    assert api.session.budget.used == 0
    for sock in socks:
        sock.close()


async def test_the_daemon_budget_holds_across_sessions_and_frees_on_drop(broker: Broker) -> None:
    first, second = api_of(broker), api_of(broker)
    socks1, conns1 = await peers(first, 16)  # 1 MiB: the first session's whole budget
    socks2, conns2 = await peers(second, 16)
    for sock in socks1:
        await fill(sock, PORT_BUFFER)
    await until(lambda: first.session.budget.full)
    for sock in socks2:  # the daemon's 1.5 MiB leave the second session half of its own budget
        await fill(sock, PORT_BUFFER)
    await until(lambda: broker.sessions.budget.full)
    await asyncio.sleep(0.1)
    assert rx_total(conns1) + rx_total(conns2) <= DAEMON_BUFFER + CHUNK
    assert first.session.budget.used <= SESSION_BUFFER + CHUNK
    # Dropping the first session frees its share at once; the second session's readers resume.
    held_by_second = rx_total(conns2)
    first.close_session()
    assert first.session.budget.used == 0
    await until(lambda: rx_total(conns2) > held_by_second)
    assert broker.sessions.budget.used == second.session.budget.used == rx_total(conns2)
    for sock in socks1 + socks2:
        sock.close()


async def test_writers_queue_no_more_while_the_budget_is_full_and_go_on_when_it_frees(broker: Broker) -> None:
    api = api_of(broker)
    listener = await api.tcp_listen(0, hostname="127.0.0.1", backlog=32)
    socks: list[socket.socket] = []
    conns: list[TcpConnection] = []
    for _ in range(32):  # small kernel buffers both sides: what a write leaves stays in tx
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", listener.port))
        socks.append(sock)
        conn = await api.tcp_accept(listener.handle, timeout=5)
        assert conn is not None
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        conns.append(conn)
    data = b"y" * (60 * KIB)  # under the port's own bound: only the budget makes a writer wait
    first = [asyncio.create_task(api.write(c.out_port.handle, data, flush=True)) for c in conns]
    await asyncio.sleep(0.3)
    assert api.session.budget.full and api.session.budget.used == sum(len(c.tx) for c in conns)
    # Once the budget is full, a connection that already has bytes queued queues no more.
    queued = [len(c.tx) for c in conns]
    second = [asyncio.create_task(api.write(c.out_port.handle, data, flush=True)) for c in conns]
    await asyncio.sleep(0.3)
    assert [len(c.tx) for c in conns] == queued and not any(w.done() for w in second)
    # The peers read: every writer goes on, every byte arrives, and the budget is back to zero.
    loop = asyncio.get_running_loop()
    for sock in socks:
        sock.setblocking(False)

    async def drain(sock: socket.socket) -> int:
        got = 0
        while got < 2 * len(data):
            chunk = await loop.sock_recv(sock, MIB)
            assert chunk
            got += len(chunk)
        return got

    received = await asyncio.wait_for(asyncio.gather(*first, *second, *(drain(s) for s in socks)), 30)
    assert received[len(first) + len(second) :] == [2 * len(data)] * len(socks)
    await until(lambda: api.session.budget.used == 0)
    for sock in socks:
        sock.close()


async def test_a_stalled_datagram_stream_holds_no_more_than_its_bytes(broker: Broker) -> None:
    api = api_of(broker)
    receiver = await api.udp_open(family_hostname="127.0.0.1")
    await api.udp_bind(receiver.handle, "127.0.0.1", 0)
    port = receiver.addresses()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first = asyncio.Event()

    async def stalled(batch: object, dropped: int) -> None:  # takes one batch, then never returns
        first.set()
        await asyncio.Event().wait()

    stream = asyncio.create_task(api.udp_stream(receiver.handle, direction="receive", emit=stalled))
    sender.sendto(b"first", ("127.0.0.1", port))
    await asyncio.wait_for(first.wait(), 5)
    limit = broker.limits.udp_stream_buffer
    for size in (1, 1000):  # tiny datagrams cost their objects too, not just their payload
        for _ in range(400):
            sender.sendto(b"z" * size, ("127.0.0.1", port))
        await until(lambda: receiver.queue_dropped > 0)
        assert receiver._stream is not None and receiver._stream.queued <= limit
        assert api.session.budget.used == receiver._stream.queued
    stream.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stream
    api.udp_close(receiver.handle)
    assert api.session.budget.used == 0
    sender.close()


async def test_a_port_the_client_reads_gets_its_bytes_when_the_budget_is_full(broker: Broker) -> None:
    api = api_of(broker)
    socks, conns = await peers(api, 24)  # 1.5 MiB offered against a 1 MiB session budget
    for sock in socks:
        await fill(sock, PORT_BUFFER)
    await until(lambda: api.session.budget.full)
    await asyncio.sleep(0.1)
    starved = [c for c in conns if not c.rx]
    assert starved, "every port read before the budget filled: nothing to show"
    # A read, an exact read and a sync on a port that holds nothing yet all get their bytes.
    first = await api.read(starved[0].in_port.handle, max_bytes=100, timeout=5)
    assert first.data == b"x" * 100
    if len(starved) > 1:
        exact = await api.read(starved[1].in_port.handle, max_bytes=PORT_BUFFER, mode="exact", timeout=5)
        assert exact.data == b"x" * PORT_BUFFER
    if len(starved) > 2:
        port = starved[2].in_port.handle
        synced = await api.sync([PortReadReadyEvt(port)], timeout=5)
        assert synced is not None and synced.value == port
    for sock in socks:
        sock.close()


async def test_a_new_datagram_stream_gets_its_datagrams_when_the_budget_is_full(broker: Broker) -> None:
    api = api_of(broker)
    socks, _conns = await peers(api, 24)  # other ports of the session fill its budget
    for sock in socks:
        await fill(sock, PORT_BUFFER)
    await until(lambda: api.session.budget.full)
    receiver = await api.udp_open(family_hostname="127.0.0.1")
    await api.udp_bind(receiver.handle, "127.0.0.1", 0)
    got: list[bytes] = []
    arrived = asyncio.Event()

    async def emit(batch: Sequence[tuple[bytes, str, int]], dropped: int) -> None:
        got.extend(data for data, _host, _port in batch)
        arrived.set()

    stream = asyncio.create_task(api.udp_stream(receiver.handle, direction="receive", emit=emit))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3):  # one at a time, as the consumer takes each
        arrived.clear()
        sender.sendto(b"d%d" % i, ("127.0.0.1", receiver.addresses()[1]))
        await asyncio.wait_for(arrived.wait(), 5)
    assert got == [b"d0", b"d1", b"d2"]
    stream.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stream
    sender.close()
    for sock in socks:
        sock.close()


async def test_big_writes_are_queued_whole_in_order_and_never_copied(broker: Broker) -> None:
    """A write the kernel cannot take at once waits in the queue as the writer's own buffer (it was
    copied twice: into the port's buffer, then into the send queue), charged to the budget; two
    writes at once arrive whole and in order, and one cancelled while it waits still arrives."""
    api = api_of(broker)
    listener = await api.tcp_listen(0, hostname="127.0.0.1")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", listener.port))
    conn = await api.tcp_accept(listener.handle, timeout=5)
    assert conn is not None
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    first, second = (bytes([n]) * (400 * KIB) for n in (1, 2))  # both fit the session's budget
    writes = [asyncio.create_task(api.write(conn.out_port.handle, data, flush=True)) for data in (first, second)]
    await until(lambda: len(conn.tx) > len(first))
    assert any(view.obj is second for view in conn.tx._views or ())  # the writer's buffer itself
    assert api.session.budget.used == len(conn.tx)
    writes[1].cancel()  # its bytes are queued: the write stands, whole
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    got = bytearray()
    deadline = time.monotonic() + 30
    while len(got) < len(first) + len(second) and time.monotonic() < deadline:
        got += await asyncio.wait_for(loop.sock_recv(sock, MIB), 5)
    assert await writes[0] == len(first)
    assert bytes(got) == first + second
    await until(lambda: api.session.budget.used == 0)
    sock.close()


async def test_requests_carrying_bytes_go_one_at_a_time_while_the_budget_is_full(broker: Broker) -> None:
    """``Session.sending``: the doors read a write's body only once admitted. With room in the
    session's own budget, any number go at once; with it full, one (so a session full of unread
    bytes can still write), the next when it ends or when room comes."""
    api = api_of(broker)
    order: list[str] = []

    async def send(name: str, hold: asyncio.Event) -> None:
        async with api.sending():
            order.append(f"{name} in")
            await hold.wait()
        order.append(f"{name} out")

    first, second, third = asyncio.Event(), asyncio.Event(), asyncio.Event()
    # Another session filling the daemon's budget does not make this session's writes queue.
    broker.sessions.budget.charge(DAEMON_BUFFER)
    tasks = [asyncio.create_task(send("a", first)), asyncio.create_task(send("b", second))]
    await asyncio.sleep(0.05)
    assert order == ["a in", "b in"]  # room in the session's own budget: both at once
    broker.sessions.budget.release(DAEMON_BUFFER)
    api.session.budget.charge(SESSION_BUFFER)  # the session's ports fill its budget
    tasks.append(asyncio.create_task(send("c", third)))
    await asyncio.sleep(0.05)
    assert "c in" not in order
    first.set()
    second.set()
    await asyncio.sleep(0.05)
    assert order[-1] == "c in"  # the others ended: one goes on, the budget still full
    third.set()
    await asyncio.gather(*tasks)
    api.session.budget.release(SESSION_BUFFER)
