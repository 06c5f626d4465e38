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

Abuse (docs/security.md): connections are held to account by :mod:`._rest_connections` (header,
authentication and idle timeouts, a cap that closes the oldest unauthenticated connection first,
a byte budget for bodies and WebSocket messages in flight). A body's size is taken from that
budget before it is read; a ``Content-Length`` over ``max_request_bytes`` is a 413 at once, JSON
deeper than ``json_max_depth`` a 400. Browser safety: the ``Host`` header must name the daemon
(its address, ``localhost``, ``127.0.0.1``, ``[::1]``, with its port, or ``allowed_hosts``), else
400 — a page on a rebound DNS name reaches nothing; a WebSocket ``Origin``, when there is one,
must be in ``allowed_origins``, else 403 before the handshake. There is no CORS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sockbroker_wire import errors as wire_errors
from sockbroker_wire import frames
from sockbroker_wire.codec import from_dict, from_json, loads, parse_scalar, to_dict, to_json
from sockbroker_wire.routes import Route, routes
from sockbroker_wire.v1.broker_pb2 import UdpReceiveStreamRequest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .. import __version__
from ..core.admin import Admin
from ..core.breaks import Call
from ..core.broker import Api, AttachEvent, Broker, Credentials, Principal
from ..core.errors import (
    BreakError,
    BrokerError,
    ContractError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from ..core.events import Event
from ..metrics import Metrics
from . import dispatch
from ._delivery import Delivery, peer_gone, settle
from ._in_flight import ByteBudget
from ._rest_connections import (
    BEARER_PROTOCOL,
    CONNECTION,
    TRANSPORT,
    Acceptor,
    Connections,
    Protocol,
    WebSocketProtocol,
    bearer_authorization,
)

__all__ = [
    "CALL_HEADER",
    "SESSION_HEADER",
    "Acceptor",
    "BodyTooLarge",
    "Protocol",
    "WebSocketProtocol",
    "create_app",
    "problem",
]

log = logging.getLogger(__name__)

SESSION_HEADER = "sockbroker-session"
CALL_HEADER = "sockbroker-call"
OCTETS = "application/octet-stream"
PROBLEM = "application/problem+json"
#: WebSocket subprotocols the daemon agrees to: its own frames (docs/wire.md) and websockify's
#: ``binary``. Besides one of them, a browser offers ``bearer.<token>`` to authenticate.
SUBPROTOCOLS = ("sockbroker.v1", "binary")
#: Where the Swagger UI and ReDoc pages load their scripts and styles from.
DOCS_ASSETS = "/docs/assets"


def problem(exc: BrokerError) -> tuple[int, dict[str, Any]]:
    """A core error as an HTTP status and an RFC 9457 body (the wire package's table)."""
    return wire_errors.problem(exc.kind, exc.message, errno=exc.errno, errno_family=exc.errno_family)


class BodyTooLarge(ResourceExhaustedError):
    """A request body over ``max_request_bytes``: ``resource-exhausted``, sent as HTTP 413 (the
    status HTTP has for exactly this) rather than the table's 429."""

    http_status = 413


def _problem_response(exc: BrokerError) -> JSONResponse:
    status, body = problem(exc)
    if isinstance(exc, BodyTooLarge):
        status = body["status"] = exc.http_status
    headers = {"WWW-Authenticate": 'Bearer realm="sockbroker"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class _Door:
    def __init__(self, broker: Broker, metrics: Metrics | None, max_body: int, budget: ByteBudget) -> None:
        self.broker = broker
        self.metrics = metrics
        self.max_body = max_body
        self.budget = budget
        self.max_depth = broker.limits.json_max_depth

    def principal(self, request: Request) -> Principal:
        """A request's principal: its ``Authorization`` header, else its connection's client
        certificate or Unix peer (:class:`~._rest_connections.Connection`)."""
        return self._authenticate(request.scope, request.headers.get("authorization"))

    def ws_principal(self, ws: WebSocket) -> Principal:
        """A WebSocket's principal: its ``Authorization`` header or its ``bearer.<token>``
        subprotocol, else its connection's client certificate or Unix peer."""
        authorization = bearer_authorization(ws.headers.get("authorization"), ws.scope.get("subprotocols", ()))
        return self._authenticate(ws.scope, authorization)

    def _authenticate(self, scope: Scope, authorization: str | None) -> Principal:
        connection = (scope.get("extensions") or {}).get(CONNECTION)
        if connection is None:  # served without the door's protocols (an in-process test client)
            return self.broker.authenticate(Credentials(authorization))
        return self.broker.authenticate(connection.credentials(authorization))

    def count(self, method: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count("rest", method, outcome)

    @contextlib.asynccontextmanager
    async def received(
        self,
        route: Route,
        request: Request,
        admission: Callable[[], contextlib.AbstractAsyncContextManager[None]] = contextlib.nullcontext,
    ) -> AsyncIterator[dict[str, Any]]:
        """The call's arguments, its body read and decoded while its size is held in the door's
        byte budget (until the call is done with them: the block's end). A body whose size is
        declared takes that much before a byte of it is read; a chunked one takes the most a body
        may be, and gives back the rest when it has arrived. A declared size over the limit is
        refused first; then the body waits for ``admission`` (the session's, for a write)."""
        if not route.body:
            yield self.arguments(route, request, b"")
            return
        who = route.name
        declared = request.headers.get("content-length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        if size is not None and size > self.max_body:
            raise BodyTooLarge(who, "request body too large", {"size": size, "limit": self.max_body})
        async with admission(), self.budget.holding(self.max_body if size is None else size) as keep:
            chunks, received = [], 0
            try:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > self.max_body:
                        raise BodyTooLarge(who, "request body too large", {"limit": self.max_body})
                    chunks.append(chunk)
            except ClientDisconnect:
                raise BreakError(who, "the client went away while sending its body") from None
            keep(received)
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            del chunks
            arguments = self.arguments(route, request, body)
            del body  # a JSON body is garbage once decoded (a raw one lives on as the data)
            yield arguments

    def arguments(self, route: Route, request: Request, body: bytes) -> dict[str, Any]:
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
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media == OCTETS:
                if "data" not in fields:
                    raise ContractError(who, "this route takes no raw body")
                raw = body
            elif body.strip():
                try:
                    decoded = loads(body, max_depth=self.max_depth)
                except ValueError as exc:  # UnicodeDecodeError and JsonTooDeep are ValueErrors
                    raise ContractError(who, "malformed JSON body", {"reason": str(exc)[:200]}) from None
                if not isinstance(decoded, dict):
                    raise ContractError(who, "the JSON body must be an object")
                values.update(decoded)
                del decoded
        for name, text in request.path_params.items():
            if name in values and values[name] != text:
                raise ContractError(who, "a path argument differs from the body", {"member": name})
            values[name] = text
        try:
            message = from_json(route.input, values)
        except json_format.ParseError as exc:
            raise ContractError(who, "bad argument", {"reason": str(exc)}) from None
        del values
        arguments = to_dict(message)
        if raw is not None:
            arguments["data"] = raw  # every such route has a bytes `data` field; no copy through the message
        return arguments

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
        sends = dispatch.sends_bytes(route)

        async def endpoint(request: Request) -> Response:
            call: Call | None = None
            try:
                principal = self.principal(request)
                headers = request.headers
                # A write's body is read once its session admits it (one at a time while the
                # session's byte budget is full), as over gRPC.
                admission = (
                    (lambda: self.broker.api(principal, headers.get(SESSION_HEADER), route.name).sending())
                    if sends
                    else contextlib.nullcontext
                )
                async with self.received(route, request, admission) as args:
                    work = dispatch.call(
                        self.broker, route.name, principal, headers.get(SESSION_HEADER), args, headers.get(CALL_HEADER)
                    )
                    del args
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
        self,
        name: str,
        ws: WebSocket,
        body: Callable[[Api], Awaitable[None]],
        path_session: str | None = None,
        *,
        api: Api | None = None,
    ) -> None:
        """Accept the WebSocket and run ``body`` on the caller's session (``api`` when the route
        made one); an error is sent as a last frame and a close (docs/wire.md)."""

        async def run() -> None:
            session = api
            if session is None:
                principal = self.ws_principal(ws)
                session = self.broker.api(principal, ws.headers.get(SESSION_HEADER), name, named=path_session)
            await body(session)

        await self.serve_websocket(name, ws, run)

    async def serve_websocket(self, name: str, ws: WebSocket, run: Callable[[], Awaitable[None]]) -> None:
        """Accept the WebSocket and ``run`` it; an error is sent as a last frame and a close
        (docs/wire.md)."""
        await ws.accept(subprotocol=_subprotocol(ws.scope.get("subprotocols", ())))
        try:
            await run()
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

    def text_frame(self, text: str, who: str) -> frames.TextFrame | None:
        try:
            loads(text, max_depth=self.max_depth)  # the frames decoder has no depth limit of its own
            return frames.decode_text(text)
        except ValueError as exc:
            raise ContractError(who, "malformed JSON frame", {"reason": str(exc)[:200]}) from None

    async def attach(self, ws: WebSocket) -> None:
        async def body(api: Api) -> None:
            async def detaches() -> AsyncIterator[bool]:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
                    if message.get("text") is None:
                        raise ContractError("sessions-attach", "the attachment takes JSON text frames only")
                    yield isinstance(self.text_frame(message["text"], "sessions-attach"), frames.Detach)

            async def emit(event: AttachEvent) -> None:
                attached = frames.AttachEvent(event.session, event.custodian, event.lease_seconds, event.event)
                await ws.send_text(frames.encode_text(attached))

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
                        self.text_frame(message["text"], "tcp-stream"), frames.Eof
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
        is answered with ``{"sent": n}``. ``?packed=true`` puts the datagrams of the daemon's
        frames in ``DatagramBatch.packed``."""
        handle = ws.path_params["udp"]
        who = "udp-stream"

        async def body(api: Api) -> None:
            packed = _bool_param(ws.query_params.get("packed"), "packed", who)
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
                    elif message.get("text") is not None and isinstance(
                        self.text_frame(message["text"], who), frames.Done
                    ):
                        return

            async def emit(batch: Sequence[tuple[bytes, str, int]], dropped: int) -> None:
                await ws.send_bytes(frames.encode_datagrams(batch, queue_dropped=dropped, packed=packed))

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

    async def admin_events(self, ws: WebSocket) -> None:
        """``WS /v1/admin/events``: ``Admin.WatchEvents``, each event one binary frame (a serialized
        ``AdminEvent``), until the client closes. The client sends nothing: a JSON object that names
        no frame is ignored (docs/wire.md), any other frame is a contract error."""
        name, who = "Admin.WatchEvents", "admin-watch-events"

        async def run() -> None:
            principal = self.ws_principal(ws)

            async def emit(event: Event) -> None:
                await ws.send_bytes(frames.encode_admin_event(dispatch.admin_event(event)))

            async def client() -> None:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    text = message.get("text")
                    if text is None or self.text_frame(text, who) is not None:
                        raise ContractError(who, "the event stream takes no frames from the client")

            await _until_first(Admin(self.broker).watch_events(principal, emit), client())

        await self.serve_websocket(name, ws, run)

    async def tcp_relay(self, ws: WebSocket) -> None:
        """``WS /v1/tcp/relay?hostname=H&port=P``, websockify's shape (DESIGN §9): one URL opens a
        session of its own and a connection in it under the principal's policy, then carries
        binary frames both ways through :meth:`Api.port_stream`. The WebSocket is the session's
        attachment: when it closes, the session drops and the connection with it. The peer's end
        of file closes the WebSocket after the last bytes. A refusal (no token, a bad argument,
        the policy, the OS) is the HTTP error before the handshake, as websockify clients read no
        error frame."""
        name, who = "Tcp.Relay", "tcp-relay"
        api: Api | None = None
        try:
            principal = self.ws_principal(ws)
            hostname, port = _relay_target(ws.query_params, who)
            api = self.broker.open_session(principal)
            api.session.attach()  # the WebSocket holds the session, whatever its lease
            connection = await api.tcp_connect(hostname, port)
        except BrokerError as exc:
            if api is not None:
                api.close_session()
            self.count(name, exc.kind)
            await ws.send_denial_response(_problem_response(exc))
            return

        async def incoming() -> AsyncIterator[tuple[bytes, bool]]:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":  # the client closed: drop both
                    raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
                if message.get("bytes") is None:
                    raise ContractError(who, "the relay carries binary frames only")
                yield message["bytes"], False

        async def emit(data: bytes | None) -> None:
            if data is None:
                await ws.close()  # the peer's end of file, after everything it sent
            else:
                await ws.send_bytes(data)

        try:
            await self.websocket(
                name, ws, lambda relay: relay.port_stream(connection.in_port.handle, incoming(), emit), api=api
            )
        finally:
            api.close_session()


async def _until_first(*sides: Awaitable[None]) -> None:
    """Run ``sides`` until one ends; the others are cancelled; the first error is raised."""
    tasks = [asyncio.ensure_future(side) for side in sides]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol to answer: the first offered of :data:`SUBPROTOCOLS`; else a
    ``bearer.<token>`` offered alone, since a browser fails a handshake that answers none of what
    it offered (offering ``sockbroker.v1`` too keeps the token out of the reply)."""
    chosen = next((p for p in offered if p in SUBPROTOCOLS), None)
    return chosen or next((p for p in offered if p.startswith(BEARER_PROTOCOL)), None)


def _relay_target(query: Any, who: str) -> tuple[str, int]:
    """The relay's ``hostname`` and ``port`` query parameters (the port is checked by tcp-connect)."""
    unknown = sorted(set(query) - {"hostname", "port"})
    if unknown:
        raise ContractError(who, "unknown query parameter", {"parameter": unknown[0]})
    hostname, port = query.get("hostname"), query.get("port")
    if not hostname or port is None:
        raise ContractError(who, "the relay needs ?hostname=H&port=P")
    try:
        return hostname, int(port)
    except ValueError:
        raise ContractError(who, "bad query parameter", {"parameter": "port", "given": port[:100]}) from None


def _connection(scope: Scope) -> Any:
    """The socket of the request's connection (uvicorn's transport, shown by :class:`Protocol`)."""
    transport = (scope.get("extensions") or {}).get(TRANSPORT)
    if transport is None or transport.is_closing():
        return None
    return transport.get_extra_info("socket")


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
            if peer_gone(sock.fileno() if sock is not None else -1):
                call.finish(delivered=False)
                for pending in (*held, message):
                    await send(pending)  # to nobody
                return
            delivery = Delivery.of(sock.fileno())
            with _corked(sock):
                for pending in (*held, message):
                    await send(pending)
            held.clear()
            if delivery is None:
                call.finish(delivered=False)  # the connection's socket is gone
            else:
                transport = (scope.get("extensions") or {}).get(TRANSPORT)
                buffered = 0 if transport is None else transport.get_write_buffer_size()
                delivery.handed(len(message.get("body", b"")), buffered)
                settle(call, delivery, delivery.acknowledged())
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


def _bool_param(text: str | None, name: str, who: str) -> bool:
    """A boolean query parameter, typed as the unary routes type theirs (absent: false)."""
    if text is None:
        return False
    try:
        return bool(parse_scalar(UdpReceiveStreamRequest, name, text))
    except ValueError:
        raise ContractError(who, "bad query parameter", {"parameter": name, "given": text[:100]}) from None


# ── OpenAPI: schemas generated from the proto, not hand-copied ─────────────
_JSON_TYPES = {
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
}


#: 64-bit integers, which proto JSON writes as strings (a request may give either).
_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _schema(descriptor: Any, skip: tuple[str, ...] = (), *, reply: bool = False) -> dict[str, Any]:
    """A message's JSON schema; ``reply``: as the door writes it (64-bit integers as strings)."""
    properties: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name in skip:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            item: dict[str, Any] = _schema(field.message_type, reply=reply)
        elif reply and field.type in _INT64:
            item = {"type": "string", "pattern": "^-?[0-9]+$", "description": "a 64-bit integer, in decimal"}
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


#: Every error body (RFC 9457, the members of :func:`sockbroker_wire.errors.problem`; docs/errors.md).
_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error: RFC 9457 problem details with the Racket exception kind and the OS errno",
    "required": ["type", "title", "status", "detail", "kind", "errno", "errno_family"],
    "properties": {
        "type": {"type": "string", "description": "urn:sockbroker:error:KIND"},
        "title": {"type": "string", "description": "the kind again"},
        "status": {"type": "integer", "description": "the HTTP status"},
        "detail": {"type": "string", "description": "the message, in Racket's style"},
        "kind": {"type": "string", "enum": sorted(wire_errors.WIRE_STATUS)},
        "errno": {"type": ["integer", "null"], "description": "the OS error number, when the OS gave one"},
        "errno_family": {"type": ["string", "null"], "enum": ["posix", "gai", None]},
    },
}


def _openapi_extra(route: Route) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "responses": {
            "200": {"content": {"application/json": {"schema": _schema(route.output.DESCRIPTOR, reply=True)}}},
            "default": {
                "description": "An error (docs/errors.md)",
                "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            },
        },
        "parameters": []
        if route.admin  # the admin API names no session of its own
        else [
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


class _BrowserSafety:
    """Browser safety (DESIGN §5), before any route: the ``Host`` header must name this daemon
    (DNS-rebinding defence: a page on ``evil.example`` rebound to 127.0.0.1 sends
    ``Host: evil.example``), else a 400; a WebSocket's ``Origin``, when it has one (browsers
    always send it, other clients need not), must be in ``allowed_origins``, else a 403 before the
    handshake, so no page can drive a stream with a token it got elsewhere. A connection on the
    door's Unix socket is a local process (no browser connects to one): it is let through."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str], allowed_origins: Sequence[str]) -> None:
        self.app = app
        self.allowed_hosts = [host.lower() for host in allowed_hosts]
        self.allowed_origins = {origin.lower().rstrip("/") for origin in allowed_origins}

    def hosts(self, scope: Scope) -> set[str]:
        """The Host values that name this daemon on the connection's own address and port."""
        local, port = scope.get("server") or ("127.0.0.1", None)
        names = {"localhost", "127.0.0.1", "[::1]", f"[{local}]" if ":" in local else local}
        names.update(self.allowed_hosts)
        accepted = {f"{name}:{port}" for name in names if not _has_port(name)}
        accepted.update(name for name in self.allowed_hosts if _has_port(name))
        if port == (443 if scope.get("scheme") in ("https", "wss") else 80):
            accepted.update(name for name in names if not _has_port(name))
        return accepted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = (scope.get("extensions") or {}).get(CONNECTION)
        if connection is not None and connection.unix:  # a local process, never a browser's page
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        error: BrokerError | None = None
        if host not in self.hosts(scope):
            error = ContractError(
                "Host",
                "the Host header names none of this daemon's addresses (DNS-rebinding defence)",
                {"host": host[:100], "setting": "allowed_hosts"},
            )
        elif scope["type"] == "websocket" and b"origin" in headers:
            origin = headers[b"origin"].decode("latin-1").lower().rstrip("/")
            if origin not in self.allowed_origins:
                error = PermissionDeniedError(
                    "Origin",
                    "this WebSocket Origin is not allowed",
                    {"origin": origin[:100], "setting": "allowed_origins"},
                )
        if error is None:
            await self.app(scope, receive, send)
            return
        await _refuse(scope, send, error)


async def _refuse(scope: Scope, send: Send, error: BrokerError) -> None:
    """Answer with ``error``'s problem document: a WebSocket is refused before its handshake (ASGI's
    WebSocket denial response), with the same status and body as an HTTP request would get."""
    status, body = problem(error)
    content = json.dumps(body).encode()
    start, end = ("http.response.start", "http.response.body")
    if scope["type"] == "websocket":
        start, end = ("websocket.http.response.start", "websocket.http.response.body")
    await send(
        {
            "type": start,
            "status": status,
            "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(content)).encode())],
        }
    )
    await send({"type": end, "body": content})


def _websocket_not_found(app: FastAPI) -> None:
    """A WebSocket to no route gets a typed 404 (Starlette's router would refuse it with a bare 403)."""
    not_found = app.router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _refuse(scope, send, NotFoundError(f"WebSocket {scope['path']}"[:200], "no such route"))
            return
        await not_found(scope, receive, send)

    app.router.default = default


def _has_port(host: str) -> bool:
    return host.rpartition(":")[2].isdigit() and not host.endswith("]")


def _bearer_security(app: FastAPI) -> None:
    """Every route of the OpenAPI document requires the bearer token (DESIGN §6), as the door does."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the daemon's token (docs/security.md); every call but the health check needs it",
                }
            }
            schema["security"] = [{"bearer": []}]
            schema["components"].setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    broker: Broker,
    metrics: Metrics | None = None,
    *,
    max_body: int = 32 * 1024 * 1024,
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
) -> FastAPI:
    """The REST door. Its connections (``app.state.connections``) are kept by the uvicorn
    protocols :class:`Protocol` and :class:`WebSocketProtocol`, which the server must use."""
    # /docs and /redoc from assets shipped in a Python package (fastapi-offline), under
    # /docs/assets: no CDN, so they work offline and load nothing from off the daemon.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI would ask validator.swagger.io
        title="sockbroker",
        version=__version__,
        description="Real TCP and UDP sockets, lent on opaque handles (racket/tcp and racket/udp).",
    )
    limits = broker.limits
    connections = Connections(
        broker,
        capacity=limits.connections_per_door,
        header_timeout=limits.header_timeout,
        unauthenticated_timeout=limits.unauthenticated_timeout,
        bytes_in_flight=max(limits.request_bytes_in_flight, max_body),
        on_close=None if metrics is None else lambda reason: metrics.connection_closed("rest", reason),
    )
    app.state.connections = connections
    if metrics is not None:
        metrics.watch_door("rest", lambda: len(connections), lambda: connections.budget.used)
    app.add_middleware(_BrowserSafety, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
    door = _Door(broker, metrics, max_body, connections.budget)
    websockets = {
        "Sessions.Attach": door.attach,
        "Ports.Stream": door.port_stream,
        "Udp.ReceiveStream": door.udp_stream,
        "Udp.SendStream": door.udp_stream,
        "Admin.WatchEvents": door.admin_events,
    }
    app.add_api_websocket_route("/v1/tcp/relay", door.tcp_relay, name="Tcp.Relay")  # REST only (docs/api.md)
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

    _bearer_security(app)
    _websocket_not_found(app)

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
