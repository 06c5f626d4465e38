"""The two ways to reach the broker: gRPC and REST (+ WebSocket). Both speak plain dicts.

Routes, paths and conversions come from the proto (:mod:`sockbroker.wire`), so the client cannot
drift from the daemon. Errors come back as the typed exceptions of :mod:`._errors`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import quote

import grpc
import httpx
import websockets
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from sockbroker.v1 import broker_pb2 as pb
from sockbroker.wire import Route, from_dict, from_json, pack_datagrams, route, to_dict, unpack_datagrams

from ._errors import BrokerError, UnauthenticatedError, error_for

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
    async def send_datagrams(self, session: str, udp: str, frames: AsyncIterator[tuple[bytes, str, int]]) -> int: ...
    async def aclose(self) -> None: ...


Transport = Channel


# ═════════════════════════════ gRPC ═════════════════════════════


def _grpc_error(exc: grpc.aio.AioRpcError) -> BrokerError:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    errno = info.metadata.get("errno")
                    return error_for(
                        info.reason,
                        status.message,
                        errno=int(errno) if errno else None,
                        errno_family=info.metadata.get("errno_family"),
                        status=exc.code().name,
                    )
    kind = {
        grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
        grpc.StatusCode.DEADLINE_EXCEEDED: "exn:break",
        grpc.StatusCode.CANCELLED: "exn:break",
        grpc.StatusCode.RESOURCE_EXHAUSTED: "resource-exhausted",
        grpc.StatusCode.NOT_FOUND: "not-found",
        grpc.StatusCode.INVALID_ARGUMENT: "exn:fail:contract",
    }.get(exc.code(), "")
    return error_for(kind, exc.details() or exc.code().name, status=exc.code().name)


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
    def __init__(self, call: Any, outgoing: _Queue) -> None:
        self._call, self._out = call, outgoing
        self._eof_sent = False

    async def send(self, data: bytes) -> None:
        await self._out.put(pb.StreamFrame(data=data))

    async def send_eof(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            await self._out.put(pb.StreamFrame(eof=True))

    async def receive(self) -> bytes | None:
        try:
            frame = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc) from None
        if frame is grpc.aio.EOF or frame.eof:
            return None
        return bytes(frame.data)

    async def aclose(self) -> None:
        self._call.cancel()


class _GrpcAttachment:
    def __init__(self, call: Any, outgoing: _Queue) -> None:
        self._call, self._out = call, outgoing

    async def detach(self) -> None:
        await self._out.put(pb.AttachRequest(detach=True))
        try:
            while (event := await self._call.read()) is not grpc.aio.EOF:
                if event.event == "detached":
                    break
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc) from None

    async def aclose(self) -> None:
        self._call.cancel()


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
        try:
            reply = await self._stub(r)(from_dict(r.input, args), metadata=self._metadata(session, call_id))
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc) from None
        return to_dict(reply)

    async def attach(self, session: str) -> _GrpcAttachment:
        outgoing = _Queue()
        call = self._stub(route("Sessions.Attach"))(outgoing, metadata=self._metadata(session))
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc) from None
        if first is grpc.aio.EOF:
            raise UnauthenticatedError("the attachment ended at once")
        return _GrpcAttachment(call, outgoing)

    async def port_stream(self, session: str, port: str) -> _GrpcPortStream:
        outgoing = _Queue()
        await outgoing.put(pb.StreamFrame(port=port))
        call = self._stub(route("Ports.Stream"))(outgoing, metadata=self._metadata(session))
        return _GrpcPortStream(call, outgoing)

    async def receive_datagrams(
        self, session: str, udp: str, max_bytes: int | None
    ) -> AsyncIterator[tuple[bytes, str, int]]:
        request = (
            pb.UdpReceiveStreamRequest(udp=udp, max=max_bytes)
            if max_bytes is not None
            else pb.UdpReceiveStreamRequest(udp=udp)
        )
        call = self._stub(route("Udp.ReceiveStream"))(request, metadata=self._metadata(session))
        try:
            async for batch in call:
                for datagram in batch.datagrams:
                    yield bytes(datagram.data), datagram.host, datagram.port
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc) from None
        finally:
            call.cancel()

    async def send_datagrams(self, session: str, udp: str, frames: AsyncIterator[tuple[bytes, str, int]]) -> int:
        async def requests() -> AsyncIterator[pb.DatagramBatch]:
            first = True
            async for data, host, port in frames:
                datagram = pb.Datagram(data=data, host=host, port=port)
                yield pb.DatagramBatch(udp=udp if first else "", datagrams=[datagram])
                first = False

        try:
            reply = await self._stub(route("Udp.SendStream"))(requests(), metadata=self._metadata(session))
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc) from None
        return int(reply.sent)

    async def aclose(self) -> None:
        await self.channel.close()


# ═════════════════════════════ REST ═════════════════════════════


def _rest_error(response: httpx.Response) -> BrokerError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    return error_for(
        str(body.get("kind", "")),
        str(body.get("detail", response.text)),
        errno=body.get("errno"),
        errno_family=body.get("errno_family"),
        status=response.status_code,
    )


def _ws_error(text: str) -> BrokerError | None:
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    return error_for(
        str(error.get("kind", "")),
        str(error.get("detail", "")),
        errno=error.get("errno"),
        errno_family=error.get("errno_family"),
        status=error.get("status"),
    )


class _WsPortStream:
    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        await self._ws.send(data)

    async def send_eof(self) -> None:
        await self._ws.send('{"eof": true}')

    async def receive(self) -> bytes | None:
        try:
            message = await self._ws.recv()
        except websockets.ConnectionClosed:
            return None
        if isinstance(message, bytes):
            return message
        error = _ws_error(message)
        if error is not None:
            raise error
        return None

    async def aclose(self) -> None:
        await self._ws.close()


class _WsAttachment:
    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def detach(self) -> None:
        await self._ws.send('{"detach": true}')
        async for message in self._ws:
            if isinstance(message, str) and json.loads(message).get("event") == "detached":
                break

    async def aclose(self) -> None:
        await self._ws.close()


class RestTransport:
    name = "rest"

    def __init__(self, base_url: str, token: str, *, verify: Any = True, timeout: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            verify=verify,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
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
        response = await self.http.request(r.verb.upper(), self._path(r, args), **request)
        if response.status_code != 200:
            raise _rest_error(response)
        return to_dict(from_json(r.output, response.json()))

    def _ws_url(self, path: str) -> str:
        return "ws" + self.base_url[len("http") :] + path

    async def _ws(self, path: str, session: str | None) -> Any:
        return await websockets.connect(
            self._ws_url(path), additional_headers=self._headers(session), max_size=None, compression=None
        )

    async def attach(self, session: str) -> _WsAttachment:
        ws = await self._ws(f"/v1/sessions/{quote(session, safe='')}/attach", None)
        first = await ws.recv()
        error = _ws_error(first) if isinstance(first, str) else None
        if error is not None:
            await ws.close()
            raise error
        return _WsAttachment(ws)

    async def port_stream(self, session: str, port: str) -> _WsPortStream:
        return _WsPortStream(await self._ws(f"/v1/tcp/connections/{quote(port, safe='')}/stream", session))

    async def receive_datagrams(
        self, session: str, udp: str, max_bytes: int | None
    ) -> AsyncIterator[tuple[bytes, str, int]]:
        query = "?direction=receive" + (f"&max={max_bytes}" if max_bytes is not None else "")
        ws = await self._ws(f"/v1/udp/sockets/{quote(udp, safe='')}/stream{query}", session)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    for datagram in unpack_datagrams(message):
                        yield datagram
                else:
                    error = _ws_error(message)
                    if error is not None:
                        raise error
        finally:
            await ws.close()

    async def send_datagrams(self, session: str, udp: str, frames: AsyncIterator[tuple[bytes, str, int]]) -> int:
        ws = await self._ws(f"/v1/udp/sockets/{quote(udp, safe='')}/stream?direction=send", session)
        try:
            try:
                async for data, host, port in frames:
                    await ws.send(pack_datagrams([(data, host, port)]))
                await ws.send('{"done": true}')
            except websockets.ConnectionClosed:
                pass  # the daemon ended the stream: its reason is the next message
            async for message in ws:
                if isinstance(message, str):
                    error = _ws_error(message)
                    if error is not None:
                        raise error
                    return int(json.loads(message)["sent"])
            raise BrokerError("the datagram stream ended without a report", kind="exn:fail:network")
        finally:
            await ws.close()

    async def aclose(self) -> None:
        await self.http.aclose()
