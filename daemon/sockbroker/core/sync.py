"""Racket's ``sync`` over the broker's events.

An event is checked for readiness (level-triggered) and, once chosen, *performed* synchronously
in the same turn of the event loop, so nothing can come between the choice and the effect and a
cancelled sync performs nothing. Among several ready events the choice is random, as Racket's.
Argument errors (ranges, kinds, unknown handles, name resolution) are raised before waiting.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._net import Signal, check_timeout, wait_any
from .errors import ContractError
from .resources import Custodian
from .tcp import TcpConnection, TcpInputPort, TcpListener, TcpOutputPort
from .udp import UdpSocket, check_receive_max, datagram_slice

if TYPE_CHECKING:
    from .sessions import Session

__all__ = [
    "EVENTS",
    "Event",
    "ListenerReadyEvt",
    "PortReadReadyEvt",
    "PortWriteReadyEvt",
    "TcpAcceptEvt",
    "UdpReceiveEvt",
    "UdpReceiveReadyEvt",
    "UdpSendEvt",
    "UdpSendReadyEvt",
    "UdpSendToEvt",
    "sync",
]

#: What a performed event gives: a connection, a datagram (data, count, host, port), the handle
#: that is ready, or True for a datagram sent.
Result = TcpConnection | tuple[bytes, int, str, int] | str | bool


# ── the events a client names (field names are the proto's) ────────────────────────────────
@dataclass(frozen=True)
class TcpAcceptEvt:
    """``tcp-accept-evt``: accepts (into ``custodian``) when chosen."""

    listener: str
    custodian: str | None = None


@dataclass(frozen=True)
class ListenerReadyEvt:
    """A listener as an event: ready when ``tcp-accept`` would not block; accepts nothing."""

    listener: str


@dataclass(frozen=True)
class PortReadReadyEvt:
    port: str


@dataclass(frozen=True)
class PortWriteReadyEvt:
    port: str


@dataclass(frozen=True)
class UdpReceiveReadyEvt:
    udp: str


@dataclass(frozen=True)
class UdpSendReadyEvt:
    udp: str


@dataclass(frozen=True)
class UdpReceiveEvt:
    """``udp-receive!-evt``: receives (at most ``max`` bytes) when chosen."""

    udp: str
    max: int | None = None


@dataclass(frozen=True)
class UdpSendEvt:
    """``udp-send-evt``: sends to the connected peer when chosen."""

    udp: str
    data: bytes = b""
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class UdpSendToEvt:
    """``udp-send-to-evt``."""

    udp: str
    hostname: str = ""
    port: int = 0
    data: bytes = b""
    start: int | None = None
    end: int | None = None


Event = (
    TcpAcceptEvt
    | ListenerReadyEvt
    | PortReadReadyEvt
    | PortWriteReadyEvt
    | UdpReceiveReadyEvt
    | UdpSendReadyEvt
    | UdpReceiveEvt
    | UdpSendEvt
    | UdpSendToEvt
)

#: The proto's ``Event`` oneof member → its event class.
EVENTS: dict[str, type[Event]] = {
    "tcp_accept": TcpAcceptEvt,
    "listener_ready": ListenerReadyEvt,
    "port_read_ready": PortReadReadyEvt,
    "port_write_ready": PortWriteReadyEvt,
    "udp_receive_ready": UdpReceiveReadyEvt,
    "udp_send_ready": UdpSendReadyEvt,
    "udp_receive": UdpReceiveEvt,
    "udp_send": UdpSendEvt,
    "udp_send_to": UdpSendToEvt,
}


class _Ready:
    """One event of a sync: ``ready()`` without effect, ``perform()`` the effect or None if raced."""

    signal: Signal

    def ready(self) -> bool:
        raise NotImplementedError  # pragma: no cover

    def arm(self) -> Signal:
        return self.signal

    def perform(self) -> Result | None:
        raise NotImplementedError  # pragma: no cover


class _AcceptEvt(_Ready):
    def __init__(self, listener: TcpListener, custodian: Custodian) -> None:
        self.listener, self.custodian = listener, custodian

    def ready(self) -> bool:
        return self.listener.closed or self.listener.accept_ready("tcp-accept-evt")

    def arm(self) -> Signal:
        return self.listener.arm()

    def perform(self) -> Result | None:
        return self.listener.try_accept(self.custodian, "tcp-accept-evt")


class _ListenerReadyEvt(_AcceptEvt):
    def perform(self) -> Result | None:
        self.listener.ensure_open("sync")
        return self.listener.handle


class _PortReadEvt(_Ready):
    def __init__(self, port: TcpInputPort) -> None:
        self.port = port
        self.signal = port.conn.readable

    def ready(self) -> bool:
        conn = self.port.conn
        return self.port.closed or bool(conn.rx) or conn.rx_done

    def arm(self) -> Signal:
        self.port.conn.demand()  # a sync waiting on the port reads it past a full budget, as a read does
        return self.signal

    def perform(self) -> Result | None:
        return self.port.handle


class _PortWriteEvt(_Ready):
    def __init__(self, port: TcpOutputPort) -> None:
        self.port = port
        self.signal = port.conn.writable

    def ready(self) -> bool:
        return self.port.closed or self.port.conn.write_ready

    def perform(self) -> Result | None:
        return self.port.handle


class _UdpEvt(_Ready):
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
        return self.sock.handle


class _UdpReceiveEvt(_UdpEvt):
    def __init__(self, sock: UdpSocket, max_bytes: int) -> None:
        super().__init__(sock, writing=False)
        self.max = max_bytes

    def perform(self) -> Result | None:
        return self.sock.try_receive(self.max, "udp-receive!-evt")


class _UdpSendEvt(_UdpEvt):
    def __init__(self, sock: UdpSocket, data: bytes, sockaddr: tuple[Any, ...] | None, who: str) -> None:
        super().__init__(sock, writing=True)
        self.data, self.sockaddr, self.who = data, sockaddr, who

    def perform(self) -> Result | None:
        return True if self.sock.perform_send(self.sockaddr, self.data, self.who) else None


async def _build(session: Session, event: Event) -> _Ready:
    lookup = session.table.lookup
    match event:
        case TcpAcceptEvt(listener, custodian):
            found = lookup(listener, TcpListener, "tcp-accept-evt")
            return _AcceptEvt(found, session.custodian(custodian, "tcp-accept-evt"))
        case ListenerReadyEvt(listener):
            return _ListenerReadyEvt(lookup(listener, TcpListener, "sync"), session.root)
        case PortReadReadyEvt(port):
            return _PortReadEvt(lookup(port, TcpInputPort, "sync"))
        case PortWriteReadyEvt(port):
            return _PortWriteEvt(lookup(port, TcpOutputPort, "sync"))
        case UdpReceiveReadyEvt(udp):
            return _UdpEvt(lookup(udp, UdpSocket, "udp-receive-ready-evt"), writing=False)
        case UdpSendReadyEvt(udp):
            return _UdpEvt(lookup(udp, UdpSocket, "udp-send-ready-evt"), writing=True)
        case UdpReceiveEvt(udp, max_bytes):
            who = "udp-receive!-evt"
            return _UdpReceiveEvt(lookup(udp, UdpSocket, who), check_receive_max(who, max_bytes))
        case UdpSendEvt(udp, data, start, end):
            who = "udp-send-evt"
            sock = lookup(udp, UdpSocket, who)
            payload = datagram_slice(who, data, start, end)
            sock.check_peer_send(who)
            return _UdpSendEvt(sock, payload, None, who)
        case UdpSendToEvt(udp, hostname, port, data, start, end):
            who = "udp-send-to-evt"
            sock = lookup(udp, UdpSocket, who)
            payload = datagram_slice(who, data, start, end)
            return _UdpSendEvt(sock, payload, await sock.destination(who, hostname, port), who)
    raise ContractError("sync", "unknown event kind", {"event": repr(event)})


async def sync(session: Session, events: Sequence[Event], timeout: float | None) -> tuple[int, Result] | None:
    """sync / sync/timeout: perform exactly one ready event, ``(index, result)``; None when the
    timeout passes."""
    check_timeout("sync/timeout", timeout)
    if not events and timeout is None:
        # Racket's (sync) with no events blocks for ever; a daemon call that can only end by
        # cancellation is a hang, so it is refused (with a timeout, it waits that long).
        raise ContractError("sync", "no events and no timeout: the call could never end")
    built = [await _build(session, event) for event in events]
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
                            return index, result
                if timeout == 0:
                    return None
                await wait_any([event.arm() for event in built])
    except TimeoutError:
        return None
