"""The REST front door (FastAPI): decode, one core call, encode.

Routes come from the ``google.api.http`` option of each RPC (:mod:`sockbroker_wire.routes`): GET and
DELETE take their arguments from the path and query string, POST and PUT from the path and a
JSON body whose members are the proto's field names. Requests are parsed as proto JSON, so both
doors accept exactly the same arguments. Data routes (any RPC with a ``data`` field) also take
a raw ``application/octet-stream`` body (other arguments in the query string) and, when asked
with ``Accept: application/octet-stream``, answer raw bytes with the other members as
``Sockbroker-<Member>`` headers.

Errors are RFC 9457 ``application/problem+json`` with ``kind``, ``errno`` and ``errno_family``,
converted once, here, through the wire package's table (:func:`sockbroker_wire.errors.problem`).
WebSocket routes speak the frames of :mod:`sockbroker_wire.frames` (docs/wire.md) and report an
error as a final text frame ``{"error": problem}`` and a close with code 4000 + the HTTP status.

Delivery: every unary call runs while the door watches for the HTTP client leaving; a client
gone before the reply is written (seen by the server, or pending in the kernel as a FIN or a
reset on the connection) did not get it, and the call's effects are given back
(:class:`_Reply`). uvicorn runs with :class:`Protocol`, which shows the door the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import select
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sockbroker_wire import errors as wire_errors
from sockbroker_wire import frames
from sockbroker_wire.codec import from_dict, from_json, parse_scalar, to_dict, to_json
from sockbroker_wire.routes import Route, routes
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .. import __version__
from ..core.breaks import Call
from ..core.broker import Api, AttachEvent, Broker, Principal
from ..core.errors import BreakError, BrokerError, ContractError, NotFoundError, ResourceExhaustedError
from ..metrics import Metrics
from . import dispatch
from ._delivery import Delivery, settle_later

__all__ = ["CALL_HEADER", "SESSION_HEADER", "Protocol", "create_app", "problem"]

log = logging.getLogger(__name__)

SESSION_HEADER = "sockbroker-session"
CALL_HEADER = "sockbroker-call"
OCTETS = "application/octet-stream"
PROBLEM = "application/problem+json"


def problem(exc: BrokerError) -> tuple[int, dict[str, Any]]:
    """A core error as an HTTP status and an RFC 9457 body (the wire package's table)."""
    return wire_errors.problem(exc.kind, exc.message, errno=exc.errno, errno_family=exc.errno_family)


def _problem_response(exc: BrokerError) -> JSONResponse:
    status, body = problem(exc)
    headers = {"WWW-Authenticate": 'Bearer realm="sockbroker"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class _Door:
    def __init__(self, broker: Broker, metrics: Metrics | None, max_body: int) -> None:
        self.broker = broker
        self.metrics = metrics
        self.max_body = max_body

    def principal(self, headers: Any) -> Principal:
        return self.broker.authenticate_header(headers.get("authorization"))

    def count(self, method: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count("rest", method, outcome)

    async def body(self, request: Request, who: str) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise ResourceExhaustedError(who, "request body too large", {"limit": self.max_body})
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise ResourceExhaustedError(who, "request body too large", {"limit": self.max_body})
            chunks.append(chunk)
        return b"".join(chunks)

    async def arguments(self, route: Route, request: Request) -> dict[str, Any]:
        who = route.name
        fields = route.input.DESCRIPTOR.fields_by_name
        raw: bytes | None = None
        values: dict[str, Any] = {}
        for name, text in request.query_params.items():
            if name not in fields:
                raise ContractError(who, "unknown query parameter", {"parameter": name})
            try:
                values[name] = parse_scalar(route.input, name, text)
            except ValueError as exc:
                raise ContractError(who, "bad query parameter", {"parameter": name, "reason": str(exc)}) from None
        if route.body:
            body = await self.body(request, who)
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media == OCTETS:
                if "data" not in fields:
                    raise ContractError(who, "this route takes no raw body")
                raw = body
            elif body.strip():
                try:
                    decoded = json.loads(body)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise ContractError(who, "malformed JSON body", {"reason": str(exc)}) from None
                if not isinstance(decoded, dict):
                    raise ContractError(who, "the JSON body must be an object")
                values.update(decoded)
        for name, text in request.path_params.items():
            if name in values and values[name] != text:
                raise ContractError(who, "a path argument differs from the body", {"member": name})
            values[name] = text
        try:
            message = from_json(route.input, values)
        except json_format.ParseError as exc:
            raise ContractError(who, "bad argument", {"reason": str(exc)}) from None
        if raw is not None:
            setattr(message, "data", raw)  # noqa: B010 - every such route has a bytes `data` field
        return to_dict(message)

    def respond(self, route: Route, result: dict[str, Any], request: Request, call: Call | None) -> Response:
        message = from_dict(route.output, result)
        fields = route.output.DESCRIPTOR.fields_by_name
        if "data" in fields and OCTETS in request.headers.get("accept", ""):
            encoded = to_json(message)
            headers = {
                f"Sockbroker-{name.replace('_', '-').title()}": json.dumps(value)
                for name, value in encoded.items()
                if name != "data"
            }
            return _Reply(call, message.data, media_type=OCTETS, headers=headers)  # type: ignore[attr-defined]
        body = json.dumps(to_json(message), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return _Reply(call, body.encode(), media_type="application/json")

    def unary(self, route: Route) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            call: Call | None = None
            try:
                principal = self.principal(request.headers)
                args = await self.arguments(route, request)
                headers = request.headers
                work = dispatch.call(
                    self.broker, route.name, principal, headers.get(SESSION_HEADER), args, headers.get(CALL_HEADER)
                )
                result, call = await _unless_disconnected(request, work, route.name)
                response = self.respond(route, result, request, call)
            except BrokerError as exc:
                if call is not None:
                    call.finish(delivered=False)
                self.count(route.name, exc.kind)
                return _problem_response(exc)
            except BaseException:
                if call is not None:
                    call.finish(delivered=False)
                raise
            self.count(route.name, "ok")
            return response

        endpoint.__name__ = route.name.replace(".", "_")
        endpoint.__doc__ = f"{route.name} (gRPC `{route.grpc_path}`)."
        return endpoint

    # ── WebSockets ─────────────────────────────────────────────────────────
    async def websocket(
        self, name: str, ws: WebSocket, body: Callable[[Api], Awaitable[None]], path_session: str | None = None
    ) -> None:
        await ws.accept()
        try:
            principal = self.principal(ws.headers)
            api = self.broker.api(principal, ws.headers.get(SESSION_HEADER), name, named=path_session)
            await body(api)
        except BrokerError as exc:
            self.count(name, exc.kind)
            status, payload = problem(exc)
            if ws.client_state is WebSocketState.CONNECTED:
                try:
                    await ws.send_text(frames.encode_text(frames.ErrorFrame(payload)))
                    await ws.close(code=frames.error_close_code(status), reason=exc.kind)
                except (WebSocketDisconnect, RuntimeError):
                    pass
            return
        except WebSocketDisconnect:
            pass
        self.count(name, "ok")
        if ws.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError):
                await ws.close()

    async def attach(self, ws: WebSocket) -> None:
        async def body(api: Api) -> None:
            async def detaches() -> AsyncIterator[bool]:
                while True:
                    text = await ws.receive_text()
                    yield isinstance(_text_frame(text, "sessions-attach"), frames.Detach)

            async def emit(event: AttachEvent) -> None:
                await ws.send_text(frames.encode_text(frames.AttachEvent(**vars(event))))

            await api.attach(detaches(), emit)

        await self.websocket("Sessions.Attach", ws, body, ws.path_params["session"])

    async def port_stream(self, ws: WebSocket) -> None:
        async def body(api: Api) -> None:
            async def incoming() -> AsyncIterator[tuple[bytes, bool]]:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    if message.get("bytes") is not None:
                        yield message["bytes"], False
                    elif message.get("text") is not None and isinstance(
                        _text_frame(message["text"], "tcp-stream"), frames.Eof
                    ):
                        yield b"", True
                        return

            async def emit(data: bytes | None) -> None:
                if data is None:
                    await ws.send_text(frames.encode_text(frames.Eof()))
                else:
                    await ws.send_bytes(data)

            await api.port_stream(ws.path_params["port"], incoming(), emit)

        await self.websocket("Ports.Stream", ws, body)

    async def udp_stream(self, ws: WebSocket) -> None:
        """Datagrams both ways on one WebSocket, ``?direction=receive|send|both`` (the default):
        the core's :meth:`Api.udp_stream`. The client's ``{"done": true}`` ends what it sends and
        is answered with ``{"sent": n}``."""
        handle = ws.path_params["udp"]
        who = "udp-stream"

        async def body(api: Api) -> None:
            disconnected = asyncio.Event()

            async def incoming() -> AsyncIterator[Sequence[tuple[bytes, str, int]]]:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        disconnected.set()
                        return
                    if message.get("bytes") is not None:
                        try:
                            frame = frames.decode_datagrams(message["bytes"], udp=handle)
                        except ValueError as exc:
                            raise ContractError(who, "malformed datagram frame", {"reason": str(exc)}) from None
                        yield frame.datagrams
                    elif message.get("text") is not None and isinstance(_text_frame(message["text"], who), frames.Done):
                        return

            async def emit(batch: Sequence[tuple[bytes, str, int]], dropped: int) -> None:
                await ws.send_bytes(frames.encode_datagrams(batch, queue_dropped=dropped))

            sent = await api.udp_stream(
                handle,
                direction=ws.query_params.get("direction", "both"),
                incoming=incoming(),
                emit=emit,
                max_bytes=_int_param(ws.query_params.get("max"), who),
            )
            if not disconnected.is_set():
                await ws.send_text(frames.encode_text(frames.Sent(sent)))

        await self.websocket("Udp.ReceiveStream", ws, body)


class Protocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, showing the door each request's connection (for :class:`_Reply`)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {_TRANSPORT: self.transport}  # type: ignore[dict-item]


_TRANSPORT = "sockbroker.transport"
_GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR


def _connection(scope: Scope) -> Any:
    """The socket of the request's connection (uvicorn's transport, shown by :class:`Protocol`)."""
    transport = (scope.get("extensions") or {}).get(_TRANSPORT)
    if transport is None or transport.is_closing():
        return None
    return transport.get_extra_info("socket")


def _client_gone(sock: Any) -> bool:
    """Has the HTTP client closed or reset its connection, even if the server has not read it yet?"""
    fd = sock.fileno() if sock is not None else -1
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, _GONE)
    return any(events & _GONE for _, events in poller.poll(0))


@contextlib.contextmanager
def _corked(sock: Any) -> Iterator[None]:
    """Hold the reply's status line, headers and body in the kernel until all are written, so
    they leave in one segment: a client that reads between two writes would see half a reply."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    except (OSError, AttributeError):
        yield  # not a TCP socket (a Unix socket sends each write whole)
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


class _Reply(Response):
    """A reply whose call learns whether it was delivered: a client gone before the reply is
    written did not get it, and the call's effects are given back. What the client's kernel
    accepted counts as delivered."""

    def __init__(self, call: Call | None, content: bytes, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call, self.call = self.call, None
        if call is None:
            await super().__call__(scope, receive, send)
            return
        sock = _connection(scope)
        if sock is None or call.holds == 0:
            call.finish(delivered=sock is not None)
            await super().__call__(scope, receive, send)
            return
        held: list[Message] = []
        handed_off = False

        async def deliver(message: Message) -> None:
            # The status line waits for the body: right before both leave, in one segment, the
            # door looks at the connection one last time; then the call waits, in a task of its
            # own, for the client's kernel to acknowledge the reply (``_delivery``).
            nonlocal handed_off
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if _client_gone(sock):
                call.finish(delivered=False)
                for pending in (*held, message):
                    await send(pending)  # to nobody
                return
            with _corked(sock):
                for pending in (*held, message):
                    await send(pending)
            held.clear()
            transport = (scope.get("extensions") or {}).get(_TRANSPORT)
            settle_later(
                Delivery.of(sock.fileno()),
                lambda delivered: call.finish(delivered=delivered),
                ready=None if transport is None else lambda: transport.get_write_buffer_size() == 0,
            )
            handed_off = True

        try:
            await super().__call__(scope, receive, deliver)
        finally:
            if not handed_off:
                call.finish(delivered=False)  # a no-op once settled; gives back if nothing was sent


async def _unless_disconnected(
    request: Request, work: Awaitable[tuple[dict[str, Any], Call | None]], who: str
) -> tuple[dict[str, Any], Call | None]:
    """Run ``work`` but cancel it if the HTTP client goes away first (a cancelled wait performed
    nothing; what a finished call took is given back when the client is gone)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone = watch.done()
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise BreakError(who, "the client went away")
    result, call = task.result()
    if gone and call is not None:
        call.finish(delivered=False)
        raise BreakError(who, "the client went away")
    return result, call


def _int_param(text: str | None, who: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ContractError(who, "bad query parameter", {"parameter": "max", "given": text}) from None


def _text_frame(text: str, who: str) -> frames.TextFrame | None:
    try:
        return frames.decode_text(text)
    except ValueError as exc:
        raise ContractError(who, "malformed JSON frame", {"reason": str(exc)}) from None


# ── OpenAPI: schemas generated from the proto, not hand-copied ─────────────
_JSON_TYPES = {
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
}


def _schema(descriptor: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name in skip:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            item: dict[str, Any] = _schema(field.message_type)
        else:
            item = dict(_JSON_TYPES.get(field.type, {"type": "integer"}))
        if field.is_repeated:
            item = {"type": "array", "items": item}
        elif field.has_presence:
            item["nullable"] = True
        if field.containing_oneof is not None:
            item["description"] = f"one of `{field.containing_oneof.name}`: give exactly one member"
        properties[field.name] = item
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _openapi_extra(route: Route) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "responses": {
            "200": {"content": {"application/json": {"schema": _schema(route.output.DESCRIPTOR)}}},
            "default": {"description": "An error", "content": {PROBLEM: {"schema": {"type": "object"}}}},
        },
        "parameters": [
            {
                "name": "Sockbroker-Session",
                "in": "header",
                "required": route.service != "Sessions",
                "schema": {"type": "string"},
            }
        ],
    }
    if route.body:
        extra["requestBody"] = {
            "content": {"application/json": {"schema": _schema(route.input.DESCRIPTOR, route.path_fields)}}
        }
    else:
        extra["parameters"] += [
            {"name": f.name, "in": "query", "required": False, "schema": {"type": "string"}}
            for f in route.input.DESCRIPTOR.fields
            if f.name not in route.path_fields
        ]
    extra["parameters"] += [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in route.path_fields
    ]
    return extra


def create_app(broker: Broker, metrics: Metrics | None = None, *, max_body: int = 32 * 1024 * 1024) -> FastAPI:
    app = FastAPI(
        title="sockbroker",
        version=__version__,
        description="Real TCP and UDP sockets, lent on opaque handles (racket/tcp and racket/udp).",
    )
    door = _Door(broker, metrics, max_body)
    websockets = {
        "Sessions.Attach": door.attach,
        "Ports.Stream": door.port_stream,
        "Udp.ReceiveStream": door.udp_stream,
        "Udp.SendStream": door.udp_stream,
    }
    served: set[str] = set()
    for route in routes():
        if route.streaming:
            if route.path not in served:
                app.add_api_websocket_route(route.path, websockets[route.name], name=route.name)
                served.add(route.path)
            continue
        app.add_api_route(
            route.path,
            door.unary(route),
            methods=[route.verb.upper()],
            name=route.name,
            summary=route.name,
            openapi_extra=_openapi_extra(route),
            tags=[route.service],
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        if broker.stopping:
            return JSONResponse({"status": "NOT_SERVING"}, status_code=503)
        return JSONResponse({"status": "SERVING"})

    if metrics is not None:
        registry = metrics.registry

        @app.get("/metrics", include_in_schema=False)
        async def metrics_route() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # No route (404) or no such method on a route (405): answered from the one table.
        who = f"{request.method} {request.url.path}"
        error = (
            NotFoundError(who, "no such route")
            if exc.status_code == 404
            else ContractError(who, "bad request", {"reason": str(exc.detail)})
        )
        return _problem_response(error)

    return app
