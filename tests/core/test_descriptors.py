"""Sockets lent to clients cannot take the front doors' descriptors (DESIGN §5: no session can lock
the doors out by opening sockets). The daemon's descriptor limit is lowered for the test, so a few
dozen sockets reach the ceiling; past it every way of making a socket is a typed
``resource-exhausted`` error, and the reserve stays free for the doors."""

from __future__ import annotations

import gc
import os
import resource
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from sockbroker.core._net import descriptor_ceiling
from sockbroker.core.broker import Api, Broker, Principal
from sockbroker.core.errors import ResourceExhaustedError
from sockbroker.core.limits import Limits
from sockbroker.core.policy import Policy

POLICY = Policy(allow_connect=("127.0.0.0/8",), allow_listen=("127.0.0.0/8",), allow_ports=("0-65535",))
LIMITS = Limits(connections_per_door=16)
RESERVE = 2 * LIMITS.connections_per_door + 512
#: Sockets the test may lend before the ceiling.
ROOM = 12


@pytest.fixture
def low_limit() -> Iterator[int]:
    """The soft descriptor limit lowered so that :data:`ROOM` more descriptors reach the ceiling.

    The garbage collector is held off meanwhile: collecting a socket an earlier test dropped would
    open a hole below the ceiling (other in-process daemons may still close one of theirs)."""
    gc.collect()
    gc.disable()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    # Fill the holes below the highest descriptor: new sockets then get numbers past it.
    fillers = []
    while (probe := os.dup(0)) < highest:
        fillers.append(probe)
    os.close(probe)
    ceiling = highest + 1 + ROOM
    # The reserve is at most half the limit (descriptor_ceiling): choose the limit either way.
    resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling + RESERVE if ceiling >= RESERVE else 2 * ceiling, hard))
    assert descriptor_ceiling(LIMITS) == ceiling
    try:
        yield ceiling
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)
        gc.enable()


def _descriptors() -> set[int]:
    return set(map(int, os.listdir("/proc/self/fd")))


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    broker = Broker(LIMITS, [Principal("test", "t" * 43, POLICY)])
    try:
        yield broker.open_session(broker.principals[0])
    finally:
        broker.close()


async def test_lent_sockets_stop_at_the_ceiling_and_leave_the_reserve_to_the_doors(low_limit: int, api: Api) -> None:
    listener = await api.tcp_listen(0, hostname="127.0.0.1", backlog=64)
    with pytest.raises(ResourceExhaustedError, match="too many open sockets") as refused:
        for _ in range(ROOM * 2):
            await api.udp_open()
    assert refused.value.kind == "resource-exhausted"
    # Lent up to the ceiling, never past it: the last descriptor below it is taken, and listing
    # them takes the lowest free one, at most the ceiling itself (so the refused socket was
    # closed). Other parts of the process (the suite's daemon, a client's thread) may close a
    # descriptor of theirs meanwhile: a hole below the ceiling is theirs, not a lent socket's.
    fds = _descriptors()
    assert low_limit - 1 in fds and max(fds) <= low_limit
    # Every other way of making a socket is refused the same way, and none leaks a descriptor: past
    # the ceiling there is only the test's own peer and, right after it, the listing's.
    with pytest.raises(ResourceExhaustedError):
        await api.tcp_listen(0, hostname="127.0.0.1")
    with pytest.raises(ResourceExhaustedError):
        await api.tcp_connect("127.0.0.1", listener.port)
    peer = socket.create_connection(("127.0.0.1", listener.port))  # the doors' reserve is free
    with pytest.raises(ResourceExhaustedError):  # refused before the accept: the peer stays queued
        await api.tcp_accept(listener.handle, timeout=1)
    assert max(_descriptors() - {peer.fileno()}) <= max(peer.fileno(), low_limit) + 1
    # Closing lent sockets makes room again: the queued peer is accepted, not lost.
    for handle in [h for h, r in api.session.root.resources.items() if r.kind == "udp"][:4]:
        api.udp_close(handle)
    conn = await api.tcp_accept(listener.handle, timeout=5)
    assert conn is not None and conn.remote[1] == peer.getsockname()[1]
    peer.close()
