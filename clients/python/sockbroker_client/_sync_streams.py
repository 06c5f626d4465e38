"""The blocking client's streams: iterators over the async client's streams.

:class:`BlockingStream` is a plain iterator over an async client's stream (``UdpSocket.receive_stream``
as :class:`BlockingDatagramStream`, ``AsyncAdmin.watch_events``); a generator inside it closes the
async stream in its ``finally``, so leaving a ``for`` loop over it (once nothing else refers to it),
``close()`` or ``with`` ends the stream in the daemon.
:class:`BlockingPortStream` is ``Ports.Stream``; :class:`Feed` carries a send stream's frames
from the calling thread to the loop one at a time, so the caller's iterable may block.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from ._client import Datagram
from ._runner import Call, Runner
from ._transport import PortStream

__all__ = ["BlockingDatagramStream", "BlockingPortStream", "BlockingStream", "Feed", "Frame"]

T = TypeVar("T")

#: What a send stream sends: (data, host, port); host "" is the connected peer.
Frame = tuple[bytes, str, int]


class Feed:
    """Frames handed from the calling thread to the async send stream, one at a time."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize=16)

    async def frames(self) -> AsyncIterator[Frame]:
        while (frame := await self._queue.get()) is not None:
            yield frame

    async def put(self, frame: Frame | None, sending: Call[Any]) -> bool:
        """Queue ``frame`` (None ends the stream); False when the stream ended before taking it."""
        task = sending.task
        assert task is not None  # started: submitted before this coroutine
        put = asyncio.ensure_future(self._queue.put(frame))
        await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            return False
        return True


class BlockingStream(Iterator[T]):
    """The items of an async client's stream, blocking; ``close()`` ends the stream."""

    def __init__(self, runner: Runner, stream: AsyncIterator[T]) -> None:
        self._pull = _pull(runner, stream)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        return next(self._pull)

    def close(self) -> None:
        """End the stream in the daemon (idempotent)."""
        self._pull.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BlockingDatagramStream(BlockingStream[Datagram]):
    """The datagrams of ``UdpSocket.receive_stream``, blocking; ``close()`` ends the stream."""


class _End:
    """What ``_next`` returns when the async iterator is exhausted."""


async def _next(stream: AsyncIterator[T]) -> T | _End:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return _End()


def _pull(runner: Runner, stream: AsyncIterator[T]) -> Generator[T, None, None]:
    """A generator over an async iterator: its ``finally`` (close, or garbage) closes the stream."""
    try:
        while not isinstance(item := runner.run(_next(stream)), _End):
            yield item
    finally:
        if isinstance(stream, AsyncGenerator) and not runner.closed and not sys.is_finalizing():
            if runner.in_loop_thread():  # collected on the loop itself: nobody may wait there
                runner.run_soon(stream.aclose())
            else:
                runner.run(stream.aclose())


class BlockingPortStream:
    """A byte stream over one TCP connection (``Ports.Stream``), blocking.

    ``send``/``send_eof``/``receive`` as in the async API; iterating yields received chunks
    until the peer's EOF. ``close()`` (or leaving ``with``) ends the stream.
    """

    def __init__(self, runner: Runner, stream: PortStream) -> None:
        self._runner = runner
        self._stream = stream
        self._closed = False

    def send(self, data: bytes) -> None:
        """Send bytes to the peer."""
        self._runner.run(self._stream.send(data))

    def send_eof(self) -> None:
        """Half-close: the peer reads EOF; receiving goes on."""
        self._runner.run(self._stream.send_eof())

    def receive(self) -> bytes | None:
        """The next chunk from the peer; None at its EOF."""
        return self._runner.run(self._stream.receive())

    def close(self) -> None:
        """End the stream (idempotent)."""
        if not self._closed and not self._runner.closed:
            self._closed = True
            self._runner.run(self._stream.aclose())

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.receive()) is not None:
            yield chunk

    def __enter__(self) -> BlockingPortStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
