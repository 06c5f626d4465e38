"""What happens to sessions, policies and handles, told once: the audit log and the admin API's
event stream (``Admin.WatchEvents``) are both fed from here.

An :class:`Event` is one fact: a session opened, resumed, lost its attachment into its grace
period, or dropped; a policy denied an address; a delegation was made or revoked; an admin killed
a session or a handle; the policy was reloaded. :meth:`Events.publish` hands it at once, on the
loop, to every sink (the audit log writes its line there) and to every watcher. A watcher holds
at most ``max_queued`` events: a watcher that does not keep up loses the oldest, and the next
event it reads says how many (``events.lost``), so a slow admin client never grows the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

__all__ = ["Event", "Events", "Watcher"]

#: Events one watcher may have queued before the oldest are dropped.
WATCH_QUEUE = 1024


@dataclass(frozen=True)
class Event:
    """One audited fact. ``event`` is a dotted name (``session.open``, ``policy.deny``…);
    ``principal`` who acted (a delegated caller is ``NAME/dlg_…``); ``session`` the session it
    concerns; ``operation`` the Racket-style operation or admin call; ``target`` what it was done
    to (an address, a handle, a session); ``reason`` why."""

    event: str
    principal: str = ""
    session: str = ""
    operation: str = ""
    target: str = ""
    reason: str = ""
    time: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, object]:
        """The event's members, empty ones left out (``time`` is seconds since the epoch)."""
        return {key: value for key, value in vars(self).items() if value != ""}


class Watcher:
    """One subscriber's queue of events, bounded; iterate it to receive them."""

    def __init__(self, events: Events, max_queued: int) -> None:
        self._events = events
        self._queue: collections.deque[Event] = collections.deque()
        self._max = max_queued
        self._lost = 0
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, event: Event) -> None:
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self._lost += 1
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._events._watchers.discard(self)
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while not self.closed:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            if self._lost:
                lost, self._lost = self._lost, 0
                yield Event("events.lost", reason=f"{lost} events dropped: the watcher fell behind")
            yield self._queue.popleft()


class Events:
    """The daemon's event hub: sinks are called in order for every event, watchers are fed."""

    def __init__(self) -> None:
        self._sinks: list[Callable[[Event], None]] = []
        self._watchers: set[Watcher] = set()

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        self._sinks.append(sink)

    def publish(self, event: Event) -> None:
        for sink in self._sinks:
            sink(event)
        for watcher in self._watchers:
            watcher.offer(event)

    def watch(self, max_queued: int = WATCH_QUEUE) -> Watcher:
        """A new watcher, fed from now on until :meth:`Watcher.close`."""
        watcher = Watcher(self, max_queued)
        self._watchers.add(watcher)
        return watcher

    @property
    def watchers(self) -> int:
        return len(self._watchers)
