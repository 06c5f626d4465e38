"""The accept loop shared by the doors that take raw connections (the channel door, the proxy door).

A door hands :class:`Listeners` its listening sockets and a coroutine that serves one connection.
Each accepted connection runs in a task; while it is *waiting* (it has not yet said who it is and
what it wants) it counts against ``connections_per_door``, and past that the oldest waiting one
is cancelled. The serving coroutine calls :meth:`Listeners.settled` once the connection is past
its opening exchange. A connection whose descriptor would pass the daemon's ceiling is closed at
once; when ``accept`` itself fails (out of descriptors) the listener rests for
:data:`ACCEPT_RETRY` seconds instead of spinning the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from ..core._net import descriptor_ceiling
from ..core.broker import Broker

__all__ = ["ACCEPT_RETRY", "Listeners", "readable"]

log = logging.getLogger(__name__)

#: Seconds a listener rests after an accept failed (out of descriptors).
ACCEPT_RETRY = 0.1

#: Serves one accepted connection; the flag says whether it came through a Unix socket.
Serve = Callable[[socket.socket, bool], Coroutine[Any, Any, None]]


class Listeners:
    """The listening sockets of one door and the connections still in their opening exchange."""

    def __init__(self, name: str, broker: Broker, serve: Serve) -> None:
        self.name = name
        self.broker = broker
        self.loop = asyncio.get_running_loop()
        self._serve = serve
        self.sockets: list[tuple[socket.socket, bool]] = []
        #: Connections not yet past their opening exchange, oldest first.
        self._waiting: dict[asyncio.Task[None], None] = {}
        self._warned_at = -60.0

    def listen(self, sock: socket.socket, *, unix: bool) -> None:
        """Accept on ``sock`` (already listening) from now on."""
        sock.setblocking(False)
        self.sockets.append((sock, unix))
        self.loop.add_reader(sock.fileno(), self._accept, sock, unix)

    def settled(self) -> None:
        """The running connection is past its opening exchange: it no longer counts as waiting."""
        self._waiting.pop(asyncio.current_task(), None)  # type: ignore[arg-type]

    def _accept(self, listening: socket.socket, unix: bool) -> None:
        limits = self.broker.limits
        for _ in range(64):  # a burst is taken in turns with the rest of the loop's work
            try:
                conn, _addr = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: try again in a moment, not in a busy loop
                self._pause(listening, unix, exc)
                return
            if conn.fileno() >= descriptor_ceiling(limits):
                conn.close()
                continue
            conn.setblocking(False)
            while len(self._waiting) >= limits.connections_per_door:
                oldest = next(iter(self._waiting))
                oldest.cancel()  # it closes its connection as it ends
                del self._waiting[oldest]
            task = self.loop.create_task(self._serve(conn, unix))
            self._waiting[task] = None
            task.add_done_callback(functools.partial(self._served, conn))

    def _pause(self, listening: socket.socket, unix: bool, exc: OSError) -> None:
        """Accepting failed (out of descriptors): stop watching the listener for a moment (it stays
        readable while connections wait, and would spin the loop), saying so at most once a minute."""
        now = self.loop.time()
        if now - self._warned_at >= 60.0:
            self._warned_at = now
            log.warning("%s: accept failed (%s); retrying every %g s", self.name, exc.strerror or exc, ACCEPT_RETRY)
        fd = listening.fileno()
        self.loop.remove_reader(fd)

        def resume() -> None:
            if listening.fileno() == fd:  # not closed meanwhile
                self.loop.add_reader(fd, self._accept, listening, unix)

        self.loop.call_later(ACCEPT_RETRY, resume)

    def _served(self, conn: socket.socket, task: asyncio.Task[None]) -> None:
        """A connection's task ended. Cancelled (evicted, or the door closing), perhaps before it
        ever ran: its connection is closed here."""
        self._waiting.pop(task, None)
        if task.cancelled():
            conn.close()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: %r", self.name, task.exception())

    async def close(self) -> None:
        """Stop accepting, and end the connections still in their opening exchange."""
        for sock, _unix in self.sockets:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets.clear()
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel()  # each closes its connection as it ends
        await asyncio.gather(*waiting, return_exceptions=True)
        self._waiting.clear()


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def readable(conn: socket.socket) -> None:
    """Wait until ``conn`` has bytes (or its end) to read, without reading them."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(conn.fileno(), _wake, ready)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
