"""The "core door": the Python client's channel straight into the daemon's core, in process.

The behavioural suite runs through it as through gRPC and REST, so a behaviour is pinned on the
core itself, with no transport in between. It does what a front door does and nothing more:
arguments and replies go through the proto (the wire codec fills defaults exactly as a door's
decoding does), unary calls through the doors' one dispatch table, streams and attachment
through the core's stream methods (the admin API's event stream through
:meth:`~sockbroker.core.admin.Admin.watch_events`); core errors become the client's typed errors
by kind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from sockbroker.core.admin import Admin
from sockbroker.core.broker import Api, AttachEvent, Broker, Direction, Principal
from sockbroker.core.errors import BreakError, BrokerError
from sockbroker.core.events import Event
from sockbroker.doors import dispatch
from sockbroker_client._errors import error_from_wire
from sockbroker_wire.codec import from_dict, to_dict
from sockbroker_wire.errors import WireError
from sockbroker_wire.routes import route

__all__ = ["CoreChannel"]

_END = object()


def _client_error(exc: BrokerError) -> Exception:
    return error_from_wire(WireError(exc.kind, exc.message, exc.errno, exc.errno_family, "core"))


@contextlib.contextmanager
def _translated() -> Any:
    try:
        yield
    except BrokerError as exc:
        raise _client_error(exc) from None


class _Attachment:
    def __init__(self, task: asyncio.Task[None], requests: asyncio.Queue[bool], events: asyncio.Queue[Any]) -> None:
        self._task, self._requests, self._events = task, requests, events

    async def detach(self) -> None:
        await self._requests.put(True)
        with _translated():
            await self._task

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class _PortStream:
    def __init__(self, api: Api, port: str) -> None:
        self._outgoing: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        self._incoming: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
        self._error: Exception | None = None
        self._eof_sent = False
        self._task = asyncio.ensure_future(self._run(api, port))

    async def _run(self, api: Api, port: str) -> None:
        async def frames() -> AsyncIterator[tuple[bytes, bool]]:
            while (item := await self._outgoing.get()) is not _END:
                yield item
                if item[1]:
                    return

        try:
            await api.port_stream(port, frames(), self._incoming.put)
        except BrokerError as exc:
            self._error = _client_error(exc)

    async def send(self, data: bytes) -> None:
        await self._outgoing.put((data, False))

    async def send_eof(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            await self._outgoing.put((b"", True))

    async def receive(self) -> bytes | None:
        """The next bytes, None at the peer's EOF or when the stream ended; the stream's error."""
        getting = asyncio.ensure_future(self._incoming.get())
        await asyncio.wait((getting, self._task), return_when=asyncio.FIRST_COMPLETED)
        if getting.done():
            return getting.result()
        getting.cancel()
        if not self._incoming.empty():
            return self._incoming.get_nowait()
        if self._error is not None:
            raise self._error
        return None

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class CoreChannel:
    """A client channel whose daemon is ``broker``, called in process."""

    name = "core"

    def __init__(self, broker: Broker, token: str) -> None:
        self.broker = broker
        self._token = token
        #: Calls in flight: closing the channel cancels them, as a closed connection does a door's.
        self._calls: set[asyncio.Task[tuple[dict[str, Any], Any]]] = set()

    def _principal(self) -> Principal:
        with _translated():
            return self.broker.authenticate_header(f"Bearer {self._token}")

    def _api(self, session: str, who: str) -> Api:
        with _translated():
            return self.broker.api(self._principal(), session, who)

    async def call(
        self, method: str, args: dict[str, Any], session: str | None, call_id: str | None = None
    ) -> dict[str, Any]:
        r = route(method)
        with _translated():
            request = to_dict(from_dict(r.input, args))
            running = asyncio.ensure_future(
                dispatch.call(self.broker, method, self._principal(), session, request, call_id)
            )
            self._calls.add(running)
            try:
                fields, call = await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.cancelled():  # this caller was cancelled: so is its call
                    running.cancel()
                    await asyncio.gather(running, return_exceptions=True)
                    raise
                raise BreakError(method, "the channel closed") from None  # aclose() cancelled it
            finally:
                self._calls.discard(running)
        if call is not None:
            call.finish(delivered=True)
        return to_dict(from_dict(r.output, fields))

    async def attach(self, session: str) -> _Attachment:
        api = self._api(session, "sessions-attach")
        requests: asyncio.Queue[bool] = asyncio.Queue()
        events: asyncio.Queue[AttachEvent] = asyncio.Queue()

        async def detaches() -> AsyncIterator[bool]:
            while True:
                yield await requests.get()

        task = asyncio.ensure_future(api.attach(detaches(), events.put))
        first = await events.get()
        assert first.event == "attached"
        return _Attachment(task, requests, events)

    async def port_stream(self, session: str, port: str) -> _PortStream:
        return _PortStream(self._api(session, "tcp-stream"), port)

    async def receive_datagrams(
        self, session: str, udp: str, max_bytes: int | None
    ) -> AsyncIterator[tuple[bytes, str, int]]:
        api = self._api(session, "udp-receive-stream")
        batches: asyncio.Queue[Any] = asyncio.Queue(maxsize=16)

        async def emit(batch: Sequence[tuple[bytes, str, int]], dropped: int) -> None:
            await batches.put(list(batch))

        async def run() -> None:
            try:
                await api.udp_stream(udp, direction=Direction.RECEIVE, emit=emit, max_bytes=max_bytes)
            except BrokerError as exc:
                await batches.put(_client_error(exc))
            finally:
                await batches.put(_END)

        task = asyncio.ensure_future(run())
        try:
            while (item := await batches.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                for datagram in item:
                    yield datagram
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def send_datagrams(self, session: str, udp: str, datagrams: AsyncIterator[tuple[bytes, str, int]]) -> int:
        api = self._api(session, "udp-send-stream")

        async def batches() -> AsyncIterator[Sequence[tuple[bytes, str, int]]]:
            async for datagram in datagrams:
                yield [datagram]

        with _translated():
            return await api.udp_stream(udp, direction=Direction.SEND, incoming=batches())

    async def watch_events(self) -> AsyncGenerator[dict[str, Any], None]:
        principal = self._principal()
        output = route("Admin.WatchEvents").output
        events: asyncio.Queue[Any] = asyncio.Queue(maxsize=16)

        async def emit(event: Event) -> None:
            await events.put(dispatch.admin_event(event))

        async def run() -> None:
            try:
                await Admin(self.broker).watch_events(principal, emit)
            except BrokerError as exc:
                await events.put(_client_error(exc))

        task = asyncio.ensure_future(run())
        try:
            while True:
                item = await events.get()
                if isinstance(item, Exception):
                    raise item
                yield to_dict(from_dict(output, item))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel the calls in flight, as a door does when its client's connection closes."""
        for running in list(self._calls):
            running.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)
