"""The two ways to reach the broker: gRPC and REST (+ WebSocket). Both speak plain dicts.

Routes, messages, conversions, WebSocket frames and the error table all come from the wire
package (:mod:`sockbroker_wire`), never from the daemon, so the client cannot drift from it.
Whatever goes wrong — an error the daemon reported on either door, a refused or broken
connection, a malformed reply — reaches the caller as a typed exception of :mod:`._errors`,
made in one place: :func:`_broker_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, Protocol
from urllib.parse import quote

import grpc
import httpx
import websockets
from google.protobuf import json_format
from sockbroker_wire import frames
from sockbroker_wire.admin.v1 import admin_pb2
from sockbroker_wire.codec import from_dict, from_json, to_dict
from sockbroker_wire.errors import (
    UNAVAILABLE,
    WireError,
    from_grpc_error,
    from_problem,
    from_ws_close,
    from_ws_error_frame,
)
from sockbroker_wire.routes import Route, route
from sockbroker_wire.v1 import broker_pb2 as pb

from ._errors import BrokerError, UnauthenticatedError, error_from_wire

__all__ = ["Channel", "GrpcTransport", "PortStream", "RestTransport", "Transport"]

_CLOSE = object()


class PortStream(Protocol):
    """A byte stream over one TCP connection (``Ports.Stream``)."""

    async def send(self, data: bytes) -> None: ...
    async def send_eof(self) -> None: ...
    async def receive(self) -> bytes | None: ...
    async def aclose(self) -> None: ...


class Channel(Protocol):
    """What a transport gives the client."""

    name: str

    async def call(
        self, method: str, args: dict[str, Any], session: str | None, call_id: str | None = None
    ) -> dict[str, Any]: ...
    async def attach(self, session: str) -> Any: ...
    async def port_stream(self, session: str, port: str) -> PortStream: ...
    def receive_datagrams(
        self, session: str, udp: str, max_bytes: int | None
    ) -> AsyncIterator[tuple[bytes, str, int]]: ...
    async def send_datagrams(self, session: str, udp: str, datagrams: AsyncIterator[tuple[bytes, str, int]]) -> int: ...
    def watch_events(self) -> AsyncGenerator[dict[str, Any], None]: ...
    async def aclose(self) -> None: ...


Transport = Channel


# ═════════════════════════════ errors ═════════════════════════════

#: What a transport raises when the daemon cannot be reached or the connection breaks.
_TRANSPORT_ERRORS = (grpc.RpcError, httpx.HTTPError, websockets.WebSocketException, OSError)


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


def _broker_error(problem: object, target: str) -> BrokerError:
    """The one place the client turns a failure into a typed error, for both doors.

    ``problem`` is an error decoded already (:class:`WireError`), a failed gRPC call, an HTTP
    response that is not a success, a malformed frame or reply (ValueError), or any other
    transport exception: a refused, broken or timed-out connection means no daemon answered at
    ``target`` (:class:`BrokerUnavailableError`)."""
    if isinstance(problem, WireError):
        wire = problem
    elif isinstance(problem, grpc.RpcError):
        wire = from_grpc_error(problem)
    elif isinstance(problem, httpx.Response):
        try:
            body: object = problem.json()
        except ValueError:
            body = problem.text
        wire = from_problem(problem.status_code, body)
    elif isinstance(problem, websockets.InvalidStatus):
        response = problem.response
        try:
            body = json.loads(response.body or b"")
        except ValueError:
            body = (response.body or b"").decode("utf-8", "replace")
        wire = from_problem(response.status_code, body)
    elif isinstance(problem, websockets.ConnectionClosed):
        closed = problem.rcvd
        wire = from_ws_close(closed.code if closed else None, closed.reason if closed else None) or WireError(
            UNAVAILABLE, f"the WebSocket broke ({problem})"
        )
    elif isinstance(problem, ValueError):
        wire = WireError("exn:fail:network", f"{target} sent a malformed reply: {_first_line(str(problem))}")
    else:
        wire = WireError(UNAVAILABLE, f"{type(problem).__name__}: {problem}")
    if wire.kind == UNAVAILABLE:
        reason = _first_line(wire.message)
        wire = WireError(
            UNAVAILABLE,
            f"no daemon at {target}: start it with `sockbroker serve`" + (f" ({reason})" if reason else ""),
            status=wire.status,
        )
    return error_from_wire(wire)


@contextlib.contextmanager
def _translated(target: str) -> Iterator[None]:
    """Run a block of transport calls; any transport exception leaves it as a typed error."""
    try:
        yield
    except _TRANSPORT_ERRORS as exc:
        raise _broker_error(exc, target) from None


def _error_frame(text: str, target: str) -> BrokerError | None:
    """The typed error of a WebSocket text frame ``{"error": …}``; None for another frame."""
    try:
        wire = from_ws_error_frame(text)
    except ValueError as exc:
        return _broker_error(exc, target)
    return None if wire is None else _broker_error(wire, target)


# ═════════════════════════════ gRPC ═════════════════════════════


class _Queue:
    """An async iterator fed by ``put``; ``close`` ends it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)

    async def put(self, item: Any) -> None:
        await self._queue.put(item)

    def close(self) -> None:
        self._queue.put_nowait(_CLOSE)

    def __aiter__(self) -> _Queue:
        return self

    async def __anext__(self) -> Any:
        item = await self._queue.get()
        if item is _CLOSE:
            raise StopAsyncIteration
        return item


class _GrpcPortStream:
    def __init__(self, call: Any, outgoing: _Queue, target: str) -> None:
        self._call, self._out, self._target = call, outgoing, target
        self._eof_sent = False

    async def send(self, data: bytes) -> None:
        await self._out.put(pb.StreamFrame(data=data))

    async def send_eof(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            await self._out.put(pb.StreamFrame(eof=True))

    async def receive(self) -> bytes | None:
        with _translated(self._target):
            frame = await self._call.read()
        if frame is grpc.aio.EOF or frame.eof:
            return None
        return bytes(frame.data)

    async def aclose(self) -> None:
        _end(self._call, self._out)


def _end(call: Any, outgoing: _Queue) -> None:
    """Cancel a streaming call and end its requests: a call the daemon already ended (a dropped
    session's attachment, a finished stream) is not cancelled, and gRPC would leave the task that
    sends its requests waiting for ever."""
    call.cancel()
    with contextlib.suppress(asyncio.QueueFull):
        outgoing.close()


class _GrpcAttachment:
    def __init__(self, call: Any, outgoing: _Queue, target: str) -> None:
        self._call, self._out, self._target = call, outgoing, target

    async def detach(self) -> None:
        await self._out.put(pb.AttachRequest(detach=True))
        with _translated(self._target):
            while (event := await self._call.read()) is not grpc.aio.EOF:
                if event.event == "detached":
                    break

    async def aclose(self) -> None:
        _end(self._call, self._out)


class GrpcTransport:
    name = "grpc"

    def __init__(
        self,
        target: str,
        token: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        max_message: int = 32 * 1024 * 1024,
    ) -> None:
        options = [("grpc.max_receive_message_length", max_message), ("grpc.max_send_message_length", max_message)]
        self.target = target
        self.channel = (
            grpc.aio.secure_channel(target, credentials, options=options)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=options)
        )
        self._token = token
        self._stubs: dict[str, Any] = {}

    def _metadata(self, session: str | None, call_id: str | None = None) -> tuple[tuple[str, str], ...]:
        metadata = [("authorization", f"Bearer {self._token}")] if self._token else []
        if session:
            metadata.append(("sockbroker-session", session))
        if call_id:
            metadata.append(("sockbroker-call", call_id))
        return tuple(metadata)

    def _stub(self, r: Route) -> Any:
        stub = self._stubs.get(r.name)
        if stub is None:
            serialize, deserialize = r.input.SerializeToString, r.output.FromString
            if r.client_streaming and r.server_streaming:
                stub = self.channel.stream_stream(r.grpc_path, serialize, deserialize)
            elif r.server_streaming:
                stub = self.channel.unary_stream(r.grpc_path, serialize, deserialize)
            elif r.client_streaming:
                stub = self.channel.stream_unary(r.grpc_path, serialize, deserialize)
            else:
                stub = self.channel.unary_unary(r.grpc_path, serialize, deserialize)
            self._stubs[r.name] = stub
        return stub

    async def call(
        self, method: str, args: dict[str, Any], session: str | None, call_id: str | None = None
    ) -> dict[str, Any]:
        r = route(method)
        request = from_dict(r.input, args)
        with _translated(self.target):
            reply = await self._stub(r)(request, metadata=self._metadata(session, call_id))
        return to_dict(reply)

    async def attach(self, session: str) -> _GrpcAttachment:
        outgoing = _Queue()
        call = self._stub(route("Sessions.Attach"))(outgoing, metadata=self._metadata(session))
        with _translated(self.target):
            first = await call.read()
        if first is grpc.aio.EOF:
            raise UnauthenticatedError("the attachment ended at once")
        return _GrpcAttachment(call, outgoing, self.target)

    async def port_stream(self, session: str, port: str) -> _GrpcPortStream:
        outgoing = _Queue()
        await outgoing.put(pb.StreamFrame(port=port))
        call = self._stub(route("Ports.Stream"))(outgoing, metadata=self._metadata(session))
        return _GrpcPortStream(call, outgoing, self.target)

    async def receive_datagrams(
        self, session: str, udp: str, max_bytes: int | None
    ) -> AsyncIterator[tuple[bytes, str, int]]:
        request = (
            pb.UdpReceiveStreamRequest(udp=udp, max=max_bytes, packed=True)
            if max_bytes is not None
            else pb.UdpReceiveStreamRequest(udp=udp, packed=True)
        )
        call = self._stub(route("Udp.ReceiveStream"))(request, metadata=self._metadata(session))
        try:
            with _translated(self.target):
                async for batch in call:
                    try:
                        datagrams = frames.batch_datagrams(batch)
                    except ValueError as exc:
                        raise _broker_error(exc, self.target) from None
                    for datagram in datagrams:
                        yield datagram
        finally:
            call.cancel()

    async def send_datagrams(self, session: str, udp: str, datagrams: AsyncIterator[tuple[bytes, str, int]]) -> int:
        async def requests() -> AsyncIterator[pb.DatagramBatch]:
            first = True
            async for data, host, port in datagrams:
                datagram = pb.Datagram(data=data, host=host, port=port)
                yield pb.DatagramBatch(udp=udp if first else "", datagrams=[datagram])
                first = False

        with _translated(self.target):
            reply = await self._stub(route("Udp.SendStream"))(requests(), metadata=self._metadata(session))
        return int(reply.sent)

    async def watch_events(self) -> AsyncGenerator[dict[str, Any], None]:
        """``Admin.WatchEvents``: each event's fields, until the caller closes the generator."""
        call = self._stub(route("Admin.WatchEvents"))(admin_pb2.WatchEventsRequest(), metadata=self._metadata(None))
        try:
            with _translated(self.target):
                async for event in call:
                    yield to_dict(event)
        finally:
            call.cancel()

    async def aclose(self) -> None:
        await self.channel.close()


# ═════════════════════════════ REST ═════════════════════════════


async def _close_unread(ws: Any) -> None:
    """Close a WebSocket whose unread messages are given up. Its queue may be full of them, and a
    full queue pauses reading (websockets' flow control), so ``close()`` alone would never read
    the daemon's answering close frame and would wait out its ``close_timeout`` (10 s): what
    arrives meanwhile is read and dropped until the connection ends (the daemon stops sending
    once it has the close frame)."""
    closing = asyncio.ensure_future(ws.close())
    try:
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            async for _ in ws:
                pass
    finally:
        await closing


class _WsPortStream:
    def __init__(self, ws: Any, target: str) -> None:
        self._ws, self._target = ws, target

    async def _send(self, message: str | bytes) -> None:
        try:
            await self._ws.send(message)
        except websockets.ConnectionClosed as exc:
            raise await self._closed(exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise _broker_error(exc, self._target) from None

    async def _closed(self, exc: websockets.ConnectionClosed) -> BrokerError:
        """Why sending failed: the daemon's error frame (it arrives before the close that reports
        it, so it may still be queued), else its close code; a stream that ended normally is a
        closed port, as in Racket."""
        if from_ws_close(exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else None) is None:
            return _broker_error(WireError("exn:fail", f"the stream to {self._target} is closed ({exc})"), self._target)
        with contextlib.suppress(*_TRANSPORT_ERRORS):  # TimeoutError included
            async with asyncio.timeout(1.0):  # recv raises once the queue is empty and the TCP closed
                while True:
                    message = await self._ws.recv()
                    error = _error_frame(message, self._target) if isinstance(message, str) else None
                    if error is not None:
                        return error
        return _broker_error(exc, self._target)

    async def send(self, data: bytes) -> None:
        await self._send(data)

    async def send_eof(self) -> None:
        await self._send(frames.encode_text(frames.Eof()))

    async def receive(self) -> bytes | None:
        try:
            message = await self._ws.recv()
        except websockets.ConnectionClosedOK:
            return None
        except _TRANSPORT_ERRORS as exc:
            raise _broker_error(exc, self._target) from None
        if isinstance(message, bytes):
            return message
        error = _error_frame(message, self._target)
        if error is not None:
            raise error
        return None

    async def aclose(self) -> None:
        await _close_unread(self._ws)


class _WsAttachment:
    def __init__(self, ws: Any, target: str) -> None:
        self._ws, self._target = ws, target

    async def detach(self) -> None:
        with _translated(self._target):
            await self._ws.send(frames.encode_text(frames.Detach()))
            async for message in self._ws:
                if not isinstance(message, str):
                    continue
                error = _error_frame(message, self._target)
                if error is not None:
                    raise error
                event = frames.decode_text(message)
                if isinstance(event, frames.AttachEvent) and event.event == "detached":
                    break

    async def aclose(self) -> None:
        await self._ws.close()


def _ssl_context(verify: Any) -> ssl.SSLContext:
    """``verify`` as a TLS context: True (the system's CAs), False (no verification), a CA bundle
    path, or a context of the caller's own."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, (str, os.PathLike)):
        return ssl.create_default_context(cafile=os.fspath(verify))
    context = ssl.create_default_context()
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


#: A REST target on the daemon's Unix socket (``--rest-unix-socket``): ``http+unix://`` and the
#: socket's path, e.g. ``http+unix:///run/sockbroker/rest.sock``.
UNIX_SCHEME = "http+unix://"


class RestTransport:
    name = "rest"

    def __init__(self, base_url: str, token: str, *, verify: Any = True, timeout: float | None = None) -> None:
        self.target = base_url.rstrip("/")
        self._token = token
        #: The Unix socket of an ``http+unix://`` target (its requests say ``Host: localhost``).
        self._unix = self.target[len(UNIX_SCHEME) :] if self.target.startswith(UNIX_SCHEME) else None
        self.base_url = "http://localhost" if self._unix is not None else self.target
        #: One TLS context for the HTTP calls and the WebSockets (``https://`` targets only).
        self._ssl = _ssl_context(verify) if self.base_url.startswith("https://") else None
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            verify=self._ssl if self._ssl is not None else True,
            limits=limits,
            transport=httpx.AsyncHTTPTransport(uds=self._unix, limits=limits) if self._unix is not None else None,
        )

    def _headers(self, session: str | None, call_id: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        if session:
            headers["Sockbroker-Session"] = session
        if call_id:
            headers["Sockbroker-Call"] = call_id
        return headers

    def _path(self, r: Route, args: dict[str, Any]) -> str:
        path = r.path
        for name in r.path_fields:
            path = path.replace("{" + name + "}", quote(str(args.get(name, "")), safe=""))
        return path

    async def call(
        self, method: str, args: dict[str, Any], session: str | None, call_id: str | None = None
    ) -> dict[str, Any]:
        r = route(method)
        if "session" in r.path_fields and not args.get("session"):
            args = {**args, "session": session}
        encoded = json_format.MessageToDict(from_dict(r.input, args), preserving_proto_field_name=True)
        for name in r.path_fields:
            encoded.pop(name, None)
        request: dict[str, Any] = {"headers": self._headers(session, call_id)}
        if r.body:
            request["json"] = encoded
        else:
            request["params"] = {k: json.dumps(v) if isinstance(v, bool) else v for k, v in encoded.items()}
        with _translated(self.target):
            response = await self.http.request(r.verb.upper(), self._path(r, args), **request)
        if response.status_code != 200:
            raise _broker_error(response, self.target)
        try:
            return to_dict(from_json(r.output, response.json()))
        except (ValueError, json_format.ParseError) as exc:
            raise _broker_error(exc, self.target) from None

    def _ws_url(self, path: str) -> str:
        return "ws" + self.base_url[len("http") :] + path

    async def _ws(self, path: str, session: str | None) -> Any:
        with _translated(self.target):
            if self._unix is not None:
                return await websockets.unix_connect(
                    self._unix,
                    self._ws_url(path),
                    additional_headers=self._headers(session),
                    max_size=None,
                    compression=None,
                )
            return await websockets.connect(
                self._ws_url(path),
                additional_headers=self._headers(session),
                max_size=None,
                compression=None,
                ssl=self._ssl,
            )

    async def attach(self, session: str) -> _WsAttachment:
        ws = await self._ws(f"/v1/sessions/{quote(session, safe='')}/attach", None)
        try:
            with _translated(self.target):
                first = await ws.recv()
            error = _error_frame(first, self.target) if isinstance(first, str) else None
            if error is not None:
                raise error
        except BaseException:
            await ws.close()
            raise
        return _WsAttachment(ws, self.target)

    async def port_stream(self, session: str, port: str) -> _WsPortStream:
        ws = await self._ws(f"/v1/tcp/connections/{quote(port, safe='')}/stream", session)
        return _WsPortStream(ws, self.target)

    async def receive_datagrams(
        self, session: str, udp: str, max_bytes: int | None
    ) -> AsyncIterator[tuple[bytes, str, int]]:
        query = "?direction=receive&packed=true" + (f"&max={max_bytes}" if max_bytes is not None else "")
        ws = await self._ws(f"/v1/udp/sockets/{quote(udp, safe='')}/stream{query}", session)
        try:
            while True:
                try:
                    message = await ws.recv()
                except websockets.ConnectionClosedOK:
                    return
                except _TRANSPORT_ERRORS as exc:
                    raise _broker_error(exc, self.target) from None
                if isinstance(message, bytes):
                    try:
                        frame = frames.decode_datagrams(message, udp=udp)
                    except ValueError as exc:
                        raise _broker_error(exc, self.target) from None
                    for datagram in frame.datagrams:
                        yield datagram
                else:
                    error = _error_frame(message, self.target)
                    if error is not None:
                        raise error
        finally:
            await _close_unread(ws)

    async def send_datagrams(self, session: str, udp: str, datagrams: AsyncIterator[tuple[bytes, str, int]]) -> int:
        ws = await self._ws(f"/v1/udp/sockets/{quote(udp, safe='')}/stream?direction=send", session)
        try:
            try:
                async for data, host, port in datagrams:
                    await ws.send(frames.encode_datagrams([(data, host, port)]))
                await ws.send(frames.encode_text(frames.Done()))
            except websockets.ConnectionClosed:
                pass  # the daemon ended the stream: its reason is the next message
            with _translated(self.target):
                async for message in ws:
                    if not isinstance(message, str):
                        continue
                    error = _error_frame(message, self.target)
                    if error is not None:
                        raise error
                    try:
                        report = frames.decode_text(message)
                    except ValueError as exc:
                        raise _broker_error(exc, self.target) from None
                    if isinstance(report, frames.Sent):
                        return report.sent
            raise _broker_error(
                WireError("exn:fail:network", "the datagram stream ended without a report"), self.target
            )
        finally:
            await ws.close()

    async def watch_events(self) -> AsyncGenerator[dict[str, Any], None]:
        """``WS /v1/admin/events``: each binary frame's event, until the caller closes the generator."""
        ws = await self._ws("/v1/admin/events", None)
        try:
            while True:
                try:
                    message = await ws.recv()
                except websockets.ConnectionClosedOK:
                    return
                except _TRANSPORT_ERRORS as exc:
                    raise _broker_error(exc, self.target) from None
                if isinstance(message, str):
                    error = _error_frame(message, self.target)
                    if error is not None:
                        raise error
                    continue
                try:
                    event = frames.decode_admin_event(message)
                except ValueError as exc:
                    raise _broker_error(exc, self.target) from None
                yield event
        finally:
            await _close_unread(ws)

    async def aclose(self) -> None:
        await self.http.aclose()
