"""The private event loop behind the blocking client, and how a blocking call is cancelled.

Every blocking call is a coroutine of the async client run on one loop in a daemon thread. The
caller's thread waits for it; when the wait is interrupted (Ctrl-C, or :class:`Canceller.cancel`
from another thread) the coroutine is *cancelled* on the loop, exactly as an asyncio task would
be, and the caller waits until it has ended: the async client and the daemon then settle the
call (the daemon gives back what a cancelled call had taken), so the next call finds it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._errors import BreakError, BrokerError, FailError

__all__ = ["Call", "Canceller", "Runner"]

T = TypeVar("T")

#: How long closing the broker waits for its loop thread to end.
STOP_SECONDS = 5.0


class _Active(threading.local):
    """The cancellers entered on this thread, innermost last."""

    def __init__(self) -> None:
        self.cancellers: list[Canceller] = []


_active = _Active()


class Canceller:
    """Cancels, from any thread, the blocking calls made inside ``with canceller:``.

    ::

        canceller = Canceller()

        def worker() -> None:
            with canceller:
                ports = listener.accept()   # BreakError once canceller.cancel() is called

        threading.Thread(target=worker).start()
        ...
        canceller.cancel()

    A cancelled call raises :class:`BreakError` (Racket's ``exn:break``) unless its result had
    already arrived, in which case it returns it: a result is never thrown away. Once cancelled,
    a canceller cancels every later call made inside it too. Ctrl-C needs no canceller: it
    cancels the call of the main thread the same way and the ``KeyboardInterrupt`` propagates.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[Call[Any]] = set()
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Cancel every call running inside this canceller, now and from now on (any thread)."""
        with self._lock:
            self._cancelled = True
            calls = list(self._calls)
        for call in calls:
            call.cancel_soon()

    def __enter__(self) -> Canceller:
        _active.cancellers.append(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _active.cancellers.remove(self)

    def _watch(self, call: Call[Any]) -> None:
        """Called on the loop when ``call`` starts."""
        with self._lock:
            if not self._cancelled:
                self._calls.add(call)
                return
        call.cancel()

    def _forget(self, call: Call[Any]) -> None:
        with self._lock:
            self._calls.discard(call)


class Call(Generic[T]):
    """One coroutine submitted to the loop, and its outcome for the waiting thread."""

    def __init__(self, coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> None:
        self._coro = coro
        self._loop = loop
        self._task: asyncio.Task[T] | None = None
        self._cancellers = tuple(_active.cancellers)
        self.outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    @property
    def task(self) -> asyncio.Task[T] | None:
        """The task running the coroutine, once started (read it on the loop)."""
        return self._task

    def start(self) -> None:
        """On the loop: run the coroutine as a task."""
        self._task = self._loop.create_task(self._coro)
        self._task.add_done_callback(self._settle)
        for canceller in self._cancellers:
            canceller._watch(self)

    def cancel(self) -> None:
        """On the loop: cancel the task (it settles when it has ended)."""
        if self._task is not None:
            self._task.cancel()

    def cancel_soon(self) -> None:
        """From any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs any more
            self._loop.call_soon_threadsafe(self.cancel)

    def cancel_and_wait(self) -> None:
        """From the waiting thread: cancel, and return once the coroutine has ended (however)."""
        self.cancel_soon()
        concurrent.futures.wait([self.outcome])  # a second Ctrl-C leaves at once

    def _settle(self, task: asyncio.Task[T]) -> None:
        for canceller in self._cancellers:
            canceller._forget(self)
        if task.cancelled():
            self.outcome.set_exception(BreakError("the blocking call was cancelled"))
        elif (exc := task.exception()) is not None:
            self.outcome.set_exception(exc)
        else:
            self.outcome.set_result(task.result())


class Runner:
    """An event loop in a daemon thread; ``run(coro)`` is a blocking call on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop.run_forever, name="sockbroker-client", daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its outcome.

        Ctrl-C while waiting cancels the coroutine, waits until it has ended, and re-raises
        ``KeyboardInterrupt``. A :class:`Canceller` cancels it from another thread.
        """
        return self.wait(self.submit(coro))

    def wait(self, call: Call[T]) -> T:
        """Wait for a submitted call; Ctrl-C cancels it, waits until it has ended, and re-raises."""
        try:
            return call.outcome.result()
        except KeyboardInterrupt:
            call.cancel_and_wait()
            raise

    def run_soon(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` without waiting: for clean-ups started where no thread may wait."""
        if self.in_loop_thread():
            self._loop.create_task(coro)
            return
        with contextlib.suppress(BrokerError):
            self.submit(coro)

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> Call[T]:
        """Start ``coro`` on the loop without waiting for it."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("a blocking sockbroker call from inside the client's own event loop would never end")
        call = Call(coro, self._loop)
        with self._lock:
            if self._closed or not self._thread.is_alive():
                coro.close()
                raise FailError("the blocking broker is closed")
            self._loop.call_soon_threadsafe(call.start)
        return call

    def stop(self) -> None:
        """Cancel whatever still runs, end the loop thread, close the loop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            finished: concurrent.futures.Future[None] = concurrent.futures.Future()
            # Queued after every call already submitted, so those have started and are cancelled.
            self._loop.call_soon_threadsafe(self._loop.create_task, self._finish(finished))
        if self.in_loop_thread():
            return  # the task ends the loop; the thread cannot wait for itself
        with contextlib.suppress(concurrent.futures.TimeoutError):
            finished.result(timeout=STOP_SECONDS)
        self._thread.join(timeout=STOP_SECONDS)
        if not self._thread.is_alive():
            self._loop.close()

    async def _finish(self, finished: concurrent.futures.Future[None]) -> None:
        try:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._loop.shutdown_asyncgens()
        finally:
            self._loop.stop()
            finished.set_result(None)
