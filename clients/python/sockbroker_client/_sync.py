"""The blocking client: the same API as :class:`AsyncBroker`, run on a private event loop.

Every coroutine method of the async objects becomes a blocking method here; handles returned
(ports, listeners, sockets) come back wrapped the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import Any

from ._client import AsyncBroker, _Handle

__all__ = ["Broker"]


class _Runner:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sockbroker-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        async def cancel_the_rest() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_the_rest())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class _Blocking:
    """Wraps an async object: coroutine methods block; handles come back wrapped."""

    def __init__(self, target: Any, runner: _Runner) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if isinstance(attr, _Handle):
            return _Blocking(attr, self._runner)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def blocking(*args: Any, **kwargs: Any) -> Any:
            args = tuple(a._target if isinstance(a, _Blocking) else a for a in args)
            kwargs = {k: v._target if isinstance(v, _Blocking) else v for k, v in kwargs.items()}
            return self._wrap(self._runner.run(attr(*args, **kwargs)))

        blocking.__name__ = name
        blocking.__doc__ = attr.__doc__
        return blocking

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, _Handle):
            return _Blocking(value, self._runner)
        if isinstance(value, tuple):
            return tuple(self._wrap(v) for v in value)
        return value

    def __repr__(self) -> str:
        return f"<blocking {self._target!r}>"

    def __str__(self) -> str:
        return str(self._target)


class Broker(_Blocking):
    """A session with the broker, blocking API. ``with Broker.connect() as broker: ...``"""

    @classmethod
    def connect(cls, target: str | None = None, **options: Any) -> Broker:
        runner = _Runner()
        try:
            broker = runner.run(AsyncBroker.connect(target, **options))
        except BaseException:
            runner.stop()
            raise
        return cls(broker, runner)

    def close(self) -> None:
        try:
            self._runner.run(self._target.aclose())
        finally:
            self._runner.stop()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
