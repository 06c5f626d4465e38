"""Sockets lent to clients cannot take the front doors' descriptors (DESIGN §5: no session can lock
the doors out by opening sockets). The daemon's descriptor limit is lowered for the test, so a few
dozen sockets reach the ceiling; past it every way of making a socket is a typed
``resource-exhausted`` error, and the reserve stays free for the doors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator

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


@contextlib.contextmanager
def low_limit() -> Iterator[int]:
    """The soft descriptor limit lowered so that :data:`ROOM` more descriptors reach the ceiling,
    with the collector held off (collecting a socket would open a hole below the ceiling)."""
    gc.collect()
    gc.disable()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(_descriptors())
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


def test_lent_sockets_stop_at_the_ceiling_and_leave_the_reserve_to_the_doors() -> None:
    """In an interpreter of its own: nothing else in it opens or closes a descriptor meanwhile (in
    the suite's process, its daemon and clients' threads may, and a hole below the ceiling would
    let a socket through that the test expects refused)."""
    done = subprocess.run(
        [sys.executable, __file__],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok"


async def _at_the_ceiling() -> None:
    broker = Broker(LIMITS, [Principal("test", "t" * 43, POLICY)])
    try:
        with low_limit() as ceiling:
            await _lend_up_to(broker.open_session(broker.principals[0]), ceiling)
    finally:
        broker.close()


async def _lend_up_to(api: Api, low_limit: int) -> None:
    listener = await api.tcp_listen(0, hostname="127.0.0.1", backlog=64)
    with pytest.raises(ResourceExhaustedError, match="too many open sockets") as refused:
        for _ in range(ROOM * 2):
            await api.udp_open()
    assert refused.value.kind == "resource-exhausted"
    # Lent up to the ceiling, never past it: every descriptor below it is taken, and listing them
    # takes the lowest free one, the ceiling itself (so the refused socket was closed).
    assert set(range(low_limit)) <= _descriptors() <= set(range(low_limit + 1))
    # Every other way of making a socket is refused the same way, and none leaks a descriptor.
    before = len(_descriptors())
    with pytest.raises(ResourceExhaustedError):
        await api.tcp_listen(0, hostname="127.0.0.1")
    with pytest.raises(ResourceExhaustedError):
        await api.tcp_connect("127.0.0.1", listener.port)
    peer = socket.create_connection(("127.0.0.1", listener.port))  # the doors' reserve is free
    with pytest.raises(ResourceExhaustedError):  # refused before the accept: the peer stays queued
        await api.tcp_accept(listener.handle, timeout=1)
    assert len(_descriptors()) == before + 1
    # Closing lent sockets makes room again: the queued peer is accepted, not lost.
    for handle in [h for h, r in api.session.root.resources.items() if r.kind == "udp"][:4]:
        api.udp_close(handle)
    conn = await api.tcp_accept(listener.handle, timeout=5)
    assert conn is not None and conn.remote[1] == peer.getsockname()[1]
    peer.close()


if __name__ == "__main__":
    asyncio.run(_at_the_ceiling())
    print("ok")
