"""The gRPC front door: decode, one core call, encode.

Handlers are made from the proto's descriptors (:mod:`sockbroker.wire`), so every RPC is served
and none is written by hand; the four streaming RPCs adapt their messages to
:mod:`sockbroker.core.streams`. Core errors become a status exactly once, here, through
:data:`~sockbroker.core.errors.WIRE_STATUS`, with a ``google.rpc.ErrorInfo`` detail.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from .core.api import STREAMS, Broker, Principal
from .core.errors import WIRE_STATUS, BrokerError, ContractError
from .core.sessions import Session
from .core.streams import datagram_batches, relay_port, send_datagrams
from .metrics import Metrics
from .v1 import broker_pb2 as pb
from .wire import PACKAGE, Route, from_dict, routes, to_dict

__all__ = ["SESSION_METADATA", "error_status", "generic_handlers"]

log = logging.getLogger(__name__)

SESSION_METADATA = "sockbroker-session"
CALL_METADATA = "sockbroker-call"
ERROR_DOMAIN = "sockbroker"


def error_status(exc: BrokerError) -> grpc.Status:
    """The one conversion of a core error to a gRPC status with its ErrorInfo detail."""
    code_name, _ = WIRE_STATUS[exc.kind]
    metadata = {}
    if exc.errno is not None:
        metadata = {"errno": str(exc.errno), "errno_family": exc.errno_family or "posix"}
    info = error_details_pb2.ErrorInfo(reason=exc.kind, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    code = grpc.StatusCode[code_name]
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=exc.message, details=[detail]))


class _Malformed:
    """A request whose bytes did not decode: answered with a contract error, not INTERNAL."""

    def __init__(self, error: str) -> None:
        self.error = error


def _decoder(cls: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    def decode(data: bytes) -> Message | _Malformed:
        try:
            return cls.FromString(data)
        except (DecodeError, ValueError) as exc:
            return _Malformed(str(exc))

    return decode


class _Door:
    def __init__(self, broker: Broker, metrics: Metrics | None) -> None:
        self.broker = broker
        self.metrics = metrics

    def principal(self, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Principal, dict[str, str]]:
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        principal = self.broker.authenticate_header(metadata.get("authorization"))
        return principal, metadata

    def session(self, context: grpc.aio.ServicerContext[Any, Any], who: str) -> Session:
        principal, metadata = self.principal(context)
        return self.broker.session(principal, metadata.get(SESSION_METADATA), who)

    def count(self, method: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count("grpc", method, outcome)

    async def abort(self, name: str, context: grpc.aio.ServicerContext[Any, Any], exc: BrokerError) -> NoReturn:
        self.count(name, exc.kind)
        status = error_status(exc)
        await context.abort(status.code, status.details, status.trailing_metadata)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def guard(self, name: str, context: grpc.aio.ServicerContext[Any, Any], body: Awaitable[Any]) -> Any:
        """Run a stream handler's body; a core error ends the call with its status."""
        try:
            result = await body
        except BrokerError as exc:
            await self.abort(name, context, exc)
        self.count(name, "ok")
        return result

    # ── unary ──────────────────────────────────────────────────────────────
    def unary(self, route: Route) -> grpc.RpcMethodHandler:
        async def handler(request: Message | _Malformed, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            try:
                if isinstance(request, _Malformed):
                    raise ContractError(route.name, "malformed request", {"reason": request.error})
                principal, metadata = self.principal(context)
                result = await self.broker.call(
                    route.name, principal, metadata.get(SESSION_METADATA), to_dict(request), metadata.get(CALL_METADATA)
                )
            except BrokerError as exc:
                await self.abort(route.name, context, exc)
            self.count(route.name, "ok")
            return from_dict(route.output, result)

        return grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=_decoder(route.input), response_serializer=route.output.SerializeToString
        )

    # ── streams ────────────────────────────────────────────────────────────
    async def attach(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async def body() -> None:
            session = self.session(context, "sessions-attach")
            session.attach()
            broken = True
            try:
                await context.write(from_dict(pb.AttachEvent, session.attach_event("attached")))
                async for request in requests:
                    if isinstance(request, _Malformed):
                        raise ContractError("sessions-attach", "malformed request", {"reason": request.error})
                    if request.detach:
                        broken = False
                        await context.write(from_dict(pb.AttachEvent, session.attach_event("detached")))
                        return
            finally:
                session.detach(broken=broken)

        await self.guard("Sessions.Attach", context, body())

    async def port_stream(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async def body() -> None:
            session = self.session(context, "tcp-stream")
            first = await _first(requests, "tcp-stream")

            async def incoming() -> AsyncIterator[tuple[bytes, bool]]:
                yield first.data, first.eof
                if first.eof:
                    return
                async for frame in requests:
                    if isinstance(frame, _Malformed):
                        raise ContractError("tcp-stream", "malformed frame", {"reason": frame.error})
                    yield frame.data, frame.eof
                    if frame.eof:
                        return

            async def emit(data: bytes | None) -> None:
                await context.write(pb.StreamFrame(eof=True) if data is None else pb.StreamFrame(data=data))

            await relay_port(session, first.port, incoming(), emit)

        await self.guard("Ports.Stream", context, body())

    async def receive_stream(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async def body() -> None:
            if isinstance(request, _Malformed):
                raise ContractError("udp-receive-stream", "malformed request", {"reason": request.error})
            session = self.session(context, "udp-receive-stream")
            max_bytes = request.max if request.HasField("max") else None
            async for batch, dropped in datagram_batches(session, request.udp, max_bytes):
                datagrams = [pb.Datagram(data=data, host=host, port=port) for data, host, port in batch]
                await context.write(pb.DatagramBatch(datagrams=datagrams, queue_dropped=dropped))

        await self.guard("Udp.ReceiveStream", context, body())

    async def send_stream(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        async def body() -> Message:
            session = self.session(context, "udp-send-stream")
            first = await _first(requests, "udp-send-stream")

            async def frames() -> AsyncIterator[tuple[bytes, str, int]]:
                for datagram in first.datagrams:
                    yield datagram.data, datagram.host, datagram.port
                async for batch in requests:
                    if isinstance(batch, _Malformed):
                        raise ContractError("udp-send-stream", "malformed batch", {"reason": batch.error})
                    for datagram in batch.datagrams:
                        yield datagram.data, datagram.host, datagram.port

            return pb.SendStreamReply(sent=await send_datagrams(session, first.udp, frames()))

        return await self.guard("Udp.SendStream", context, body())  # type: ignore[no-any-return]

    def stream(self, route: Route) -> grpc.RpcMethodHandler:
        decode, encode = _decoder(route.input), route.output.SerializeToString
        if route.name == "Sessions.Attach":
            return grpc.stream_stream_rpc_method_handler(self.attach, decode, encode)
        if route.name == "Ports.Stream":
            return grpc.stream_stream_rpc_method_handler(self.port_stream, decode, encode)
        if route.name == "Udp.ReceiveStream":
            return grpc.unary_stream_rpc_method_handler(self.receive_stream, decode, encode)
        if route.name == "Udp.SendStream":
            return grpc.stream_unary_rpc_method_handler(self.send_stream, decode, encode)
        raise LookupError(route.name)  # pragma: no cover - STREAMS names exactly these four


async def _first(requests: AsyncIterator[Any], who: str) -> Any:
    async for frame in requests:
        if isinstance(frame, _Malformed):
            raise ContractError(who, "malformed frame", {"reason": frame.error})
        return frame
    raise ContractError(who, "the stream ended before its first frame")


def generic_handlers(broker: Broker, metrics: Metrics | None = None) -> list[grpc.GenericRpcHandler]:
    """One generic handler per service, every RPC of the proto included."""
    door = _Door(broker, metrics)
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for route in routes():
        handler = door.stream(route) if route.name in STREAMS else door.unary(route)
        by_service.setdefault(route.service, {})[route.method] = handler
    return [
        grpc.method_handlers_generic_handler(f"{PACKAGE}.{service}", methods) for service, methods in by_service.items()
    ]
