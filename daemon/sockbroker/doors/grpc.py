"""The gRPC front door: decode, one core call, encode.

Handlers are made from the proto's descriptors (:mod:`sockbroker_wire.routes`), so every RPC is
served and none is written by hand: unary RPCs go through :func:`.dispatch.call`, the streaming
ones to the core's stream methods. Core errors become a status exactly once, through the wire
package's table (:func:`sockbroker_wire.errors.grpc_status`).

Delivery: a unary reply counts as delivered unless the call ends cancelled (the client cancelled,
or its deadline passed, before the reply reached it); then the call's effects are given back.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message
from sockbroker_wire.codec import from_dict, to_dict
from sockbroker_wire.errors import grpc_status
from sockbroker_wire.routes import PACKAGE, Route, routes
from sockbroker_wire.v1 import broker_pb2 as pb

from ..core.broker import Api, AttachEvent, Broker, Direction
from ..core.errors import BrokerError, ContractError
from ..metrics import Metrics
from . import dispatch

__all__ = ["CALL_METADATA", "SESSION_METADATA", "error_status", "generic_handlers"]

log = logging.getLogger(__name__)

SESSION_METADATA = "sockbroker-session"
CALL_METADATA = "sockbroker-call"

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def error_status(exc: BrokerError) -> grpc.Status:
    """A core error as a gRPC status with its ErrorInfo detail (the wire package's table)."""
    return grpc_status(exc.kind, exc.message, errno=exc.errno, errno_family=exc.errno_family)


class _Malformed:
    """A request whose bytes did not decode: answered with a contract error, not INTERNAL."""

    def __init__(self, error: str) -> None:
        self.error = error


def _decoder(cls: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    def decode(data: bytes) -> Message | _Malformed:
        try:
            return cls.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return _Malformed(str(exc))

    return decode


def _checked(message: Any, who: str) -> Any:
    if isinstance(message, _Malformed):
        raise ContractError(who, "malformed request", {"reason": message.error})
    return message


async def _frames(requests: AsyncIterator[Any], who: str) -> AsyncIterator[Any]:
    async for message in requests:
        yield _checked(message, who)


_GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR


def _peer_address(peer: str) -> tuple[str, int] | None:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` (``context.peer()``) as (host, port)."""
    scheme, _, rest = peer.partition(":")
    host, _, port = rest.rpartition(":")
    if scheme not in ("ipv4", "ipv6") or not port.isdigit():
        return None
    return urllib.parse.unquote(host).strip("[]"), int(port)


def _peer_of(fd: int) -> tuple[str, int] | None:
    """The peer of socket ``fd`` (borrowed, never closed), or None."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        address = sock.getpeername()
    except OSError:
        return None
    finally:
        sock.detach()
    if not isinstance(address, tuple):
        return None
    host = str(address[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:") :]  # gRPC listens dual-stack; context.peer() names the IPv4 address
    return host, int(address[1])


class _Connections:
    """The daemon's socket of each gRPC client connection, found from ``context.peer()``, so the
    door can look at it as the REST door looks at its own: a FIN or a reset already waiting
    there means the client has gone. gRPC itself tells a handler of a client's cancel or close
    only some 50-100 µs later (and never once the reply is written), so without this look a
    reply written at once after the client left would count as delivered."""

    def __init__(self) -> None:
        self._fds: dict[tuple[str, int], int] = {}

    def gone(self, peer: str) -> bool:
        address = _peer_address(peer)
        if address is None:
            return False  # a Unix socket peer has no address to find it by
        fd = self._fds.get(address)
        if fd is None or _peer_of(fd) != address:
            fd = self._find(address)
        if fd is None:
            return True  # the connection's socket is gone already
        poller = select.poll()
        poller.register(fd, _GONE)
        return any(events & _GONE for _, events in poller.poll(0))

    def _find(self, address: tuple[str, int]) -> int | None:
        self._fds = {a: fd for a, fd in self._fds.items() if _peer_of(fd) == a}
        for name in reversed(os.listdir("/proc/self/fd")):
            fd = int(name)
            try:
                if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                    continue
            except OSError:
                continue
            if _peer_of(fd) == address:
                self._fds[address] = fd
                return fd
        return None


class _Door:
    def __init__(self, broker: Broker, metrics: Metrics | None) -> None:
        self.broker = broker
        self.metrics = metrics
        self.connections = _Connections()

    def _metadata(self, context: Context) -> dict[str, str]:
        return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}

    def api(self, context: Context, who: str) -> Api:
        metadata = self._metadata(context)
        principal = self.broker.authenticate_header(metadata.get("authorization"))
        return self.broker.api(principal, metadata.get(SESSION_METADATA), who)

    def count(self, method: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count("grpc", method, outcome)

    async def abort(self, name: str, context: Context, exc: BrokerError) -> NoReturn:
        self.count(name, exc.kind)
        status = error_status(exc)
        await context.abort(status.code, status.details, status.trailing_metadata)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def guard(self, name: str, context: Context, body: Awaitable[Any]) -> Any:
        """Run a handler's body; a core error ends the call with its status."""
        try:
            result = await body
        except BrokerError as exc:
            await self.abort(name, context, exc)
        self.count(name, "ok")
        return result

    # ── unary ──────────────────────────────────────────────────────────────
    def unary(self, route: Route) -> grpc.RpcMethodHandler:
        """A unary RPC. Its reply goes out with its status in one write; right before, the door
        looks at the client's connection (:class:`_Connections`): a client already gone did not
        get the reply, and the call's effects are given back. A cancel that gRPC reports while the
        call runs (the handler is cancelled) gives them back too."""

        async def body(request: Any, context: Context) -> Message:
            message = _checked(request, route.name)
            metadata = self._metadata(context)
            principal = self.broker.authenticate_header(metadata.get("authorization"))
            fields, call = await dispatch.call(
                self.broker,
                route.name,
                principal,
                metadata.get(SESSION_METADATA),
                to_dict(message),
                metadata.get(CALL_METADATA),
            )
            try:
                reply = from_dict(route.output, fields)
            except BaseException:
                if call is not None:
                    call.finish(delivered=False)
                raise
            if call is not None:
                call.finish(delivered=not (call.holds and self.connections.gone(context.peer())))
            return reply

        async def handler(request: Any, context: Context) -> Message:
            return await self.guard(route.name, context, body(request, context))  # type: ignore[no-any-return]

        return grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=_decoder(route.input), response_serializer=route.output.SerializeToString
        )

    # ── streams ────────────────────────────────────────────────────────────
    async def attach(self, requests: AsyncIterator[Any], context: Context) -> None:
        async def body() -> None:
            api = self.api(context, "sessions-attach")

            async def detaches() -> AsyncIterator[bool]:
                async for request in _frames(requests, "sessions-attach"):
                    yield bool(request.detach)

            async def emit(event: AttachEvent) -> None:
                await context.write(pb.AttachEvent(**dispatch.opened(event)))

            await api.attach(detaches(), emit)

        await self.guard("Sessions.Attach", context, body())

    async def port_stream(self, requests: AsyncIterator[Any], context: Context) -> None:
        async def body() -> None:
            api = self.api(context, "tcp-stream")
            frames = _frames(requests, "tcp-stream")
            first = await anext(frames, None)
            if first is None:
                raise ContractError("tcp-stream", "the stream ended before its first frame")

            async def incoming() -> AsyncIterator[tuple[bytes, bool]]:
                frame = first
                while True:
                    yield frame.data, frame.eof
                    if frame.eof:
                        return
                    frame = await anext(frames, None)
                    if frame is None:
                        return

            async def emit(data: bytes | None) -> None:
                await context.write(pb.StreamFrame(eof=True) if data is None else pb.StreamFrame(data=data))

            await api.port_stream(first.port, incoming(), emit)

        await self.guard("Ports.Stream", context, body())

    @staticmethod
    def _emit_batches(context: Context) -> Callable[[Sequence[tuple[bytes, str, int]], int], Awaitable[None]]:
        async def emit(batch: Sequence[tuple[bytes, str, int]], dropped: int) -> None:
            datagrams = [pb.Datagram(data=data, host=host, port=port) for data, host, port in batch]
            await context.write(pb.DatagramBatch(datagrams=datagrams, queue_dropped=dropped))

        return emit

    async def receive_stream(self, request: Any, context: Context) -> None:
        async def body() -> None:
            message = _checked(request, "udp-receive-stream")
            api = self.api(context, "udp-receive-stream")
            await api.udp_stream(
                message.udp,
                direction=Direction.RECEIVE,
                emit=self._emit_batches(context),
                max_bytes=message.max if message.HasField("max") else None,
            )

        await self.guard("Udp.ReceiveStream", context, body())

    async def send_stream(self, requests: AsyncIterator[Any], context: Context) -> Message:
        async def body() -> Message:
            api = self.api(context, "udp-send-stream")
            frames = _frames(requests, "udp-send-stream")
            first = await anext(frames, None)
            if first is None:
                raise ContractError("udp-send-stream", "the stream ended before its first frame")

            async def batches() -> AsyncIterator[Sequence[tuple[bytes, str, int]]]:
                batch = first
                while batch is not None:
                    yield [(d.data, d.host, d.port) for d in batch.datagrams]
                    batch = await anext(frames, None)

            sent = await api.udp_stream(first.udp, direction=Direction.SEND, incoming=batches())
            return pb.SendStreamReply(sent=sent)

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
        raise LookupError(route.name)  # pragma: no cover - the proto streams exactly these four


def generic_handlers(broker: Broker, metrics: Metrics | None = None) -> list[grpc.GenericRpcHandler]:
    """One generic handler per service, every RPC of the proto included."""
    door = _Door(broker, metrics)
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for route in routes():
        handler = door.stream(route) if route.streaming else door.unary(route)
        by_service.setdefault(route.service, {})[route.method] = handler
    return [
        grpc.method_handlers_generic_handler(f"{PACKAGE}.{service}", methods) for service, methods in by_service.items()
    ]
