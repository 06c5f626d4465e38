"""The REST front door (FastAPI): decode, one core call, encode.

Routes come from the ``google.api.http`` option of each RPC (:mod:`sockbroker.wire`): GET and
DELETE take their arguments from the path and query string, POST and PUT from the path and a
JSON body whose members are the proto's field names. Requests are parsed as proto JSON, so both
doors accept exactly the same arguments. Data routes (any RPC with a ``data`` field) also take
a raw ``application/octet-stream`` body (other arguments in the query string) and, when asked
with ``Accept: application/octet-stream``, answer raw bytes with the other members as
``Sockbroker-<Member>`` headers.

Errors are RFC 9457 ``application/problem+json`` with ``kind``, ``errno`` and ``errno_family``,
converted once, here, through :data:`~sockbroker.core.errors.WIRE_STATUS`. WebSocket routes
report an error as a final text frame ``{"error": problem}`` and close with code 4000 + the
HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketDisconnect, WebSocketState

from . import __version__
from .core.api import BLOCKING, STREAMS, Broker, Principal
from .core.errors import (
    WIRE_STATUS,
    BreakError,
    BrokerError,
    ContractError,
    NotFoundError,
    ResourceExhaustedError,
    contract_violation,
)
from .core.sessions import Session
from .core.streams import datagram_batches, relay_port, send_datagrams
from .metrics import Metrics
from .wire import Route, from_dict, from_json, pack_datagrams, parse_scalar, routes, to_dict, to_json, unpack_datagrams

__all__ = ["SESSION_HEADER", "create_app", "problem"]

log = logging.getLogger(__name__)

SESSION_HEADER = "sockbroker-session"
CALL_HEADER = "sockbroker-call"
OCTETS = "application/octet-stream"
PROBLEM = "application/problem+json"


def problem(exc: BrokerError) -> tuple[int, dict[str, Any]]:
    """The one conversion of a core error to an HTTP status and an RFC 9457 body."""
    _, status = WIRE_STATUS[exc.kind]
    return status, {
        "type": f"urn:sockbroker:error:{exc.kind}",
        "title": exc.kind,
        "status": status,
        "detail": exc.message,
        "kind": exc.kind,
        "errno": exc.errno,
        "errno_family": exc.errno_family,
    }


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

    def respond(self, route: Route, result: dict[str, Any], request: Request) -> Response:
        message = from_dict(route.output, result)
        fields = route.output.DESCRIPTOR.fields_by_name
        if "data" in fields and OCTETS in request.headers.get("accept", ""):
            encoded = to_json(message)
            headers = {
                f"Sockbroker-{name.replace('_', '-').title()}": json.dumps(value)
                for name, value in encoded.items()
                if name != "data"
            }
            return Response(message.data, media_type=OCTETS, headers=headers)  # type: ignore[attr-defined]
        return JSONResponse(to_json(message))

    def unary(self, route: Route) -> Callable[[Request], Awaitable[Response]]:
        blocking = route.name in BLOCKING

        async def endpoint(request: Request) -> Response:
            try:
                principal = self.principal(request.headers)
                args = await self.arguments(route, request)
                headers = request.headers
                call = self.broker.call(
                    route.name, principal, headers.get(SESSION_HEADER), args, headers.get(CALL_HEADER)
                )
                result = await (_unless_disconnected(request, call, route.name) if blocking else call)
            except BrokerError as exc:
                self.count(route.name, exc.kind)
                return _problem_response(exc)
            self.count(route.name, "ok")
            return self.respond(route, result, request)

        endpoint.__name__ = route.name.replace(".", "_")
        endpoint.__doc__ = f"{route.name} (gRPC `{route.grpc_path}`)."
        return endpoint

    # ── WebSockets ─────────────────────────────────────────────────────────
    async def websocket(
        self, name: str, ws: WebSocket, body: Callable[[Session], Awaitable[None]], path_session: str | None = None
    ) -> None:
        await ws.accept()
        try:
            principal = self.principal(ws.headers)
            header = ws.headers.get(SESSION_HEADER)
            if path_session and header and header != path_session:
                raise ContractError(name, "the session in the path differs from the session header")
            session = self.broker.session(principal, path_session or header, name)
            await body(session)
        except BrokerError as exc:
            self.count(name, exc.kind)
            status, payload = problem(exc)
            if ws.client_state is WebSocketState.CONNECTED:
                try:
                    await ws.send_text(json.dumps({"error": payload}))
                    await ws.close(code=4000 + status, reason=exc.kind)
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
        async def body(session: Session) -> None:
            session.attach()
            broken = True
            try:
                await ws.send_text(json.dumps(session.attach_event("attached")))
                while True:
                    text = await ws.receive_text()
                    if _json_object(text, "sessions-attach").get("detach"):
                        broken = False
                        await ws.send_text(json.dumps(session.attach_event("detached")))
                        return
            finally:
                session.detach(broken=broken)

        await self.websocket("Sessions.Attach", ws, body, ws.path_params["session"])

    async def port_stream(self, ws: WebSocket) -> None:
        async def body(session: Session) -> None:
            async def incoming() -> AsyncIterator[tuple[bytes, bool]]:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    if message.get("bytes") is not None:
                        yield message["bytes"], False
                    elif message.get("text") is not None and _json_object(message["text"], "tcp-stream").get("eof"):
                        yield b"", True
                        return

            async def emit(data: bytes | None) -> None:
                if data is None:
                    await ws.send_text('{"eof": true}')
                else:
                    await ws.send_bytes(data)

            await relay_port(session, ws.path_params["port"], incoming(), emit)

        await self.websocket("Ports.Stream", ws, body)

    async def udp_stream(self, ws: WebSocket) -> None:
        """Datagrams both ways on one WebSocket. ``?direction=receive`` only streams what the
        socket receives (Udp.ReceiveStream); ``send`` only sends what the client sends
        (Udp.SendStream), and answers the client's ``{"done": true}`` with ``{"sent": n}``;
        ``both`` (the default) does both. An error on either side ends the WebSocket with it."""
        handle = ws.path_params["udp"]
        max_param = ws.query_params.get("max")
        direction = ws.query_params.get("direction", "both")

        async def body(session: Session) -> None:
            who = "udp-stream"
            if direction not in ("receive", "send", "both"):
                raise contract_violation(who, "(or/c 'receive 'send 'both)", direction)
            batches = None
            if direction != "send":  # argument and state errors surface now
                batches = datagram_batches(session, handle, _int_param(max_param, who))
            finished = asyncio.Event()

            async def frames() -> AsyncIterator[tuple[bytes, str, int]]:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        finished.set()
                        return
                    if message.get("bytes") is not None:
                        if direction == "receive":
                            raise ContractError(who, "this stream only receives")
                        try:
                            datagrams = unpack_datagrams(message["bytes"])
                        except ValueError as exc:
                            raise ContractError(who, "malformed datagram frame", {"reason": str(exc)}) from None
                        for datagram in datagrams:
                            yield datagram
                    elif message.get("text") is not None and _json_object(message["text"], who).get("done"):
                        return

            async def incoming() -> None:
                sent = await send_datagrams(session, handle, frames())
                if not finished.is_set():
                    await ws.send_text(json.dumps({"sent": sent}))

            async def outgoing() -> None:
                assert batches is not None
                async for batch, _dropped in batches:
                    await ws.send_bytes(pack_datagrams(batch))

            tasks = [asyncio.ensure_future(incoming())]
            if batches is not None:
                tasks.append(asyncio.ensure_future(outgoing()))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # the first error of either side ends the stream with it
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        await self.websocket("Udp.ReceiveStream", ws, body)


async def _unless_disconnected(request: Request, call: Awaitable[dict[str, Any]], who: str) -> dict[str, Any]:
    """Run ``call`` but cancel it if the HTTP client goes away first (the operation then has no
    effect: the core performs nothing after a cancelled wait)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work = asyncio.ensure_future(call)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            raise BreakError(who, "the client went away")
    return work.result()


def _int_param(text: str | None, who: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ContractError(who, "bad query parameter", {"parameter": "max", "given": text}) from None


def _json_object(text: str, who: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ContractError(who, "malformed JSON frame") from None
    if not isinstance(value, dict):
        raise ContractError(who, "a JSON frame must be an object")
    return value


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
        if route.name in STREAMS:
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
