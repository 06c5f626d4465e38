"""Racket's ``sync`` over the broker's events.

An event is checked for readiness (level-triggered) and, once chosen, *performed* synchronously
in the same turn of the event loop, so nothing can come between the choice and the effect and a
cancelled sync performs nothing. Among several ready events the choice is random, as Racket's.
Argument errors (ranges, kinds, unknown handles, name resolution) are raised before waiting.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._net import Signal, check_timeout, wait_any
from .errors import ContractError, contract_violation
from .resources import Custodian
from .tcp import TcpInputPort, TcpListener, TcpOutputPort
from .udp import UdpSocket, check_receive_max, datagram_slice

if TYPE_CHECKING:
    from .sessions import Session

__all__ = ["EVENT_KINDS", "sync"]

Result = dict[str, Any]


class _Event:
    """One event of a sync: ``ready()`` without effect, ``perform()`` the effect or None if raced."""

    signal: Signal

    def ready(self) -> bool:
        raise NotImplementedError  # pragma: no cover

    def arm(self) -> Signal:
        return self.signal

    def perform(self) -> Result | None:
        raise NotImplementedError  # pragma: no cover


class _AcceptEvt(_Event):
    def __init__(self, listener: TcpListener, custodian: Custodian) -> None:
        self.listener, self.custodian = listener, custodian

    def ready(self) -> bool:
        return self.listener.closed or self.listener.accept_ready("tcp-accept-evt")

    def arm(self) -> Signal:
        return self.listener.arm()

    def perform(self) -> Result | None:
        conn = self.listener.try_accept(self.custodian, "tcp-accept-evt")
        return None if conn is None else {"connection": {"in": conn.in_port.handle, "out": conn.out_port.handle}}


class _ListenerReadyEvt(_AcceptEvt):
    def perform(self) -> Result | None:
        self.listener.ensure_open("sync")
        return {"ready": self.listener.handle}


class _PortReadEvt(_Event):
    def __init__(self, port: TcpInputPort) -> None:
        self.port = port
        self.signal = port.conn.readable

    def ready(self) -> bool:
        conn = self.port.conn
        return self.port.closed or bool(conn.rx) or conn.rx_done

    def perform(self) -> Result | None:
        return {"ready": self.port.handle}


class _PortWriteEvt(_Event):
    def __init__(self, port: TcpOutputPort) -> None:
        self.port = port
        self.signal = port.conn.writable

    def ready(self) -> bool:
        return self.port.closed or self.port.conn.write_ready

    def perform(self) -> Result | None:
        return {"ready": self.port.handle}


class _UdpEvt(_Event):
    """Ready events of a UDP socket: ready at once when the socket is closed."""

    def __init__(self, sock: UdpSocket, writing: bool) -> None:
        self.sock, self.writing = sock, writing

    def ready(self) -> bool:
        if self.sock.closed:
            return True
        return self.sock.send_ready() if self.writing else self.sock.receive_ready()

    def arm(self) -> Signal:
        return self.sock.arm_writable() if self.writing else self.sock.arm_readable()

    def perform(self) -> Result | None:
        return {"ready": self.sock.handle}


class _UdpReceiveEvt(_UdpEvt):
    def __init__(self, sock: UdpSocket, max_bytes: int) -> None:
        super().__init__(sock, writing=False)
        self.max = max_bytes

    def perform(self) -> Result | None:
        got = self.sock.try_receive(self.max, "udp-receive!-evt")
        if got is None:
            return None
        data, count, host, port = got
        return {"datagram": {"data": data, "count": count, "host": host, "port": port}}


class _UdpSendEvt(_UdpEvt):
    def __init__(self, sock: UdpSocket, data: bytes, sockaddr: tuple[Any, ...] | None, who: str) -> None:
        super().__init__(sock, writing=True)
        self.data, self.sockaddr, self.who = data, sockaddr, who

    def perform(self) -> Result | None:
        return {"sent": True} if self.sock.perform_send(self.sockaddr, self.data, self.who) else None


async def _build(session: Session, kind: str, args: Mapping[str, Any]) -> _Event:
    lookup = session.table.lookup
    if kind == "tcp_accept":
        listener = lookup(args.get("listener"), TcpListener, "tcp-accept-evt")
        return _AcceptEvt(listener, session.custodian(args.get("custodian"), "tcp-accept-evt"))
    if kind == "listener_ready":
        listener = lookup(args.get("listener"), TcpListener, "sync")
        return _ListenerReadyEvt(listener, session.root)
    if kind == "port_read_ready":
        return _PortReadEvt(lookup(args.get("port"), TcpInputPort, "sync"))
    if kind == "port_write_ready":
        return _PortWriteEvt(lookup(args.get("port"), TcpOutputPort, "sync"))
    if kind == "udp_receive_ready":
        return _UdpEvt(lookup(args.get("udp"), UdpSocket, "udp-receive-ready-evt"), writing=False)
    if kind == "udp_send_ready":
        return _UdpEvt(lookup(args.get("udp"), UdpSocket, "udp-send-ready-evt"), writing=True)
    if kind == "udp_receive":
        who = "udp-receive!-evt"
        sock = lookup(args.get("udp"), UdpSocket, who)
        return _UdpReceiveEvt(sock, check_receive_max(who, args.get("max")))
    if kind == "udp_send":
        who = "udp-send-evt"
        sock = lookup(args.get("udp"), UdpSocket, who)
        data = datagram_slice(who, args.get("data") or b"", args.get("start"), args.get("end"))
        return _UdpSendEvt(sock, data, None, who)
    if kind == "udp_send_to":
        who = "udp-send-to-evt"
        sock = lookup(args.get("udp"), UdpSocket, who)
        data = datagram_slice(who, args.get("data") or b"", args.get("start"), args.get("end"))
        sockaddr = await sock.destination(who, args.get("hostname"), args.get("port"))
        return _UdpSendEvt(sock, data, sockaddr, who)
    raise ContractError("sync", "unknown event kind", {"event": kind})


#: The event kinds Events.Sync takes: each is a oneof member of the proto's Event.
EVENT_KINDS = (
    "tcp_accept",
    "listener_ready",
    "port_read_ready",
    "port_write_ready",
    "udp_receive_ready",
    "udp_send_ready",
    "udp_receive",
    "udp_send",
    "udp_send_to",
)


async def sync(session: Session, events: Sequence[Mapping[str, Any]], timeout: float | None) -> Result:
    """sync / sync/timeout: perform exactly one ready event; ``{}`` when the timeout passes."""
    check_timeout("sync/timeout", timeout)
    if not events and timeout is None:
        # Racket's (sync) with no events blocks for ever; a daemon call that can only end by
        # cancellation is a hang, so it is refused (with a timeout, it waits that long).
        raise ContractError("sync", "no events and no timeout: the call could never end")
    built: list[_Event] = []
    for spec in events:
        if len(spec) != 1:
            raise contract_violation("sync", "an event with exactly one kind", dict(spec))
        ((kind, args),) = spec.items()
        built.append(await _build(session, kind, args or {}))
    try:
        async with asyncio.timeout(timeout):
            while True:
                order = list(range(len(built)))
                random.shuffle(order)
                for index in order:
                    event = built[index]
                    if event.ready():
                        result = event.perform()
                        if result is not None:
                            return {"index": index, "result": result}
                if timeout == 0:
                    return {}
                await wait_any([event.arm() for event in built])
    except TimeoutError:
        return {}
