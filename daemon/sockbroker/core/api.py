"""The broker's operations, by RPC name: plain arguments in, plain results out.

Both front doors decode a request into a ``dict`` of the proto's field names (absent optional
fields as ``None``), call :meth:`Broker.call` with the RPC's full name (``"Tcp.Listen"``), and
encode the ``dict`` it returns. Nothing here knows gRPC, HTTP, protobuf or pydantic, so a rule
written here holds on every door alike.

Racket's names map to the operations by one rule: the RPC ``Service.Method`` is the Racket
function of the table in DESIGN.md §3; a ``?`` becomes nothing, ``!`` becomes nothing, ``*``
(the never-blocking forms) becomes ``wait=false`` or ``mode=nowait``, and ``/enable-break`` is
every blocking call (each one can be cancelled).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import tcp, udp
from .errors import ContractError, UnauthenticatedError, contract_violation
from .events import sync
from .policy import Policy
from .resources import Custodian, Resource
from .sessions import Limits, Session, SessionManager
from .tcp import TcpInputPort, TcpListener, TcpOutputPort, _Port
from .udp import UdpSocket

__all__ = ["BLOCKING", "OPERATIONS", "STREAMS", "Broker", "Principal"]

log = logging.getLogger(__name__)

Args = Mapping[str, Any]
Result = dict[str, Any]
Operation = Callable[[Session, Args], Awaitable[Result]]

#: RPC full name → operation. Sessions.Open is special: it makes the session.
OPERATIONS: dict[str, Operation] = {}
#: Operations that may wait (on the network or a peer): a door cancels them when the client goes.
BLOCKING = frozenset(
    {
        "Tcp.Connect",
        "Tcp.Accept",
        "Ports.Read",
        "Ports.Write",
        "Ports.Flush",
        "Udp.SendTo",
        "Udp.Send",
        "Udp.Receive",
        "Udp.MulticastJoin",
        "Udp.MulticastLeave",
        "Udp.Bind",
        "Udp.Connect",
        "Events.Sync",
        "Tcp.Listen",
        "Udp.Open",
        "Udp.SetMulticastInterface",
    }
)
#: Streaming RPCs; each door serves them over its own transport with the core's stream objects.
STREAMS = frozenset({"Sessions.Attach", "Ports.Stream", "Udp.ReceiveStream", "Udp.SendStream"})


def operation(name: str) -> Callable[[Operation], Operation]:
    def register(fn: Operation) -> Operation:
        OPERATIONS[name] = fn
        return fn

    return register


@dataclass(frozen=True)
class Principal:
    """Who a token speaks for, and what the policy lets it do."""

    name: str
    token: str = field(repr=False)
    policy: Policy = field(default_factory=Policy)


class Broker:
    """The core's front: authentication, sessions, and the operation table."""

    def __init__(self, limits: Limits, principals: list[Principal]) -> None:
        if not principals:
            raise ValueError("at least one principal is needed")
        self.limits = limits
        self.principals = principals
        self.sessions = SessionManager(limits)
        #: True once the daemon has begun to stop (health checks answer NOT_SERVING).
        self.stopping = False

    def authenticate(self, token: str | None) -> Principal:
        """The principal whose token this is; ``unauthenticated`` otherwise (constant time)."""
        found = None
        candidate = (token or "").encode()
        for principal in self.principals:
            if hmac.compare_digest(candidate, principal.token.encode()):
                found = principal
        if found is None or not token:
            raise UnauthenticatedError("sockbroker", "missing or wrong bearer token")
        return found

    def authenticate_header(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <token>`` value (gRPC metadata or HTTP header)."""
        scheme, _, token = (authorization or "").partition(" ")
        return self.authenticate(token.strip() if scheme.lower() == "bearer" else None)

    def session(self, principal: Principal, session_id: str | None, who: str) -> Session:
        return self.sessions.get(session_id or "", principal.name, who)

    async def open_session(self, principal: Principal, args: Args) -> Result:
        session = self.sessions.open(principal.name, principal.policy, args.get("lease_seconds"))
        return {"session": session.id, "custodian": session.root.handle, "lease_seconds": session.lease_seconds}

    async def call(
        self, method: str, principal: Principal, session_id: str | None, args: Args, call_id: str | None = None
    ) -> Result:
        """Run one unary operation for ``principal`` in the named session. A blocking operation
        tagged with ``call_id`` can be broken by ``Sessions.CancelCall``."""
        if method == "Sessions.Open":
            return await self.open_session(principal, args)
        op = OPERATIONS.get(method)
        if op is None:
            raise ContractError("sockbroker", "unknown operation", {"method": method})
        named = args.get("session") if method.startswith("Sessions.") else None
        if named and session_id and named != session_id:
            raise ContractError(method, "the session in the path differs from the session header")
        session = self.session(principal, named or session_id, method)
        if call_id is None or method not in BLOCKING:
            return await op(session, args)
        return await session.run_call(call_id, method, lambda: op(session, args))

    def close(self) -> None:
        """Drop every session: every socket of every client is closed."""
        self.stopping = True
        self.sessions.drop_all(reason="daemon stopping")


# ───────────────────────────── sessions ─────────────────────────────


@operation("Sessions.KeepAlive")
async def _keepalive(s: Session, a: Args) -> Result:
    s.renew()
    return {"lease_seconds": s.lease_seconds}


@operation("Sessions.CancelCall")
async def _cancel_call(s: Session, a: Args) -> Result:
    s.cancel_call(a.get("call"))
    return {}


@operation("Sessions.Close")
async def _close_session(s: Session, a: Args) -> Result:
    s._manager.drop(s, reason="closed by the client")
    return {}


# ───────────────────────────── custodians ─────────────────────────────


@operation("Custodians.Create")
async def _make_custodian(s: Session, a: Args) -> Result:
    parent = s.custodian(a.get("parent"), "make-custodian")
    return {"custodian": Custodian(s.table, parent).handle}


@operation("Custodians.Shutdown")
async def _shutdown_custodian(s: Session, a: Args) -> Result:
    custodian = s.table.lookup(a.get("custodian"), Custodian, "custodian-shutdown-all")
    if custodian is s.root:
        s._manager.drop(s, reason="root custodian shut down")
    else:
        custodian.force_close()
    return {}


@operation("Custodians.Describe")
async def _describe_custodian(s: Session, a: Args) -> Result:
    return s.table.lookup(a.get("custodian"), Custodian, "custodian-describe").describe()


# ───────────────────────────── tcp ─────────────────────────────


def _connection(conn: tcp.TcpConnection | None) -> Result:
    return {} if conn is None else {"in": conn.in_port.handle, "out": conn.out_port.handle}


@operation("Tcp.Listen")
async def _tcp_listen(s: Session, a: Args) -> Result:
    listener = await tcp.tcp_listen(
        s,
        port=a.get("port"),  # type: ignore[arg-type]
        backlog=a.get("backlog"),
        reuse=bool(a.get("reuse")),
        hostname=a.get("hostname"),
        custodian=a.get("custodian"),
    )
    return {"listener": listener.handle}


@operation("Tcp.Connect")
async def _tcp_connect(s: Session, a: Args) -> Result:
    conn = await tcp.tcp_connect(
        s,
        hostname=a.get("hostname"),  # type: ignore[arg-type]
        port=a.get("port"),  # type: ignore[arg-type]
        local_hostname=a.get("local_hostname"),
        local_port=a.get("local_port"),
        custodian=a.get("custodian"),
        timeout=a.get("timeout"),
    )
    return _connection(conn)


@operation("Tcp.Accept")
async def _tcp_accept(s: Session, a: Args) -> Result:
    who = "tcp-accept"
    listener = s.table.lookup(a.get("listener"), TcpListener, who)
    custodian = s.custodian(a.get("custodian"), who)
    return _connection(await listener.accept(custodian, a.get("timeout"), who))


@operation("Tcp.AcceptReady")
async def _tcp_accept_ready(s: Session, a: Args) -> Result:
    listener = s.table.lookup(a.get("listener"), TcpListener, "tcp-accept-ready?")
    return {"ready": listener.accept_ready()}


@operation("Tcp.Close")
async def _tcp_close(s: Session, a: Args) -> Result:
    s.table.lookup(a.get("listener"), TcpListener, "tcp-close").close()
    return {}


@operation("Tcp.AbandonPort")
async def _tcp_abandon(s: Session, a: Args) -> Result:
    who = "tcp-abandon-port"
    port: _Port = s.table.lookup(a.get("port"), (TcpInputPort, TcpOutputPort), who)
    port.abandon(who)
    return {}


# ───────────────────────────── handles ─────────────────────────────


@operation("Handles.Addresses")
async def _addresses(s: Session, a: Args) -> Result:
    who = "tcp-addresses"
    resource: Resource = s.table.lookup(a.get("handle"), (TcpListener, TcpInputPort, TcpOutputPort, UdpSocket), who)
    if isinstance(resource, UdpSocket):
        who = "udp-addresses"
    local_host, local_port, remote_host, remote_port = resource.addresses(who)  # type: ignore[attr-defined]
    if a.get("port_numbers"):
        return {
            "local_host": local_host,
            "local_port": local_port,
            "remote_host": remote_host,
            "remote_port": remote_port,
        }
    return {"local_host": local_host, "remote_host": remote_host}


@operation("Handles.Describe")
async def _describe(s: Session, a: Args) -> Result:
    handle = a.get("handle")
    resource = s.table.lookup(handle, Resource, "describe")
    info = resource.describe()
    if isinstance(resource, Custodian):
        return {
            "handle": resource.handle,
            "kind": resource.kind,
            "closed": resource.closed,
            "custodian": info["parent"],
        }
    return info


# ───────────────────────────── ports ─────────────────────────────


@operation("Ports.Read")
async def _read(s: Session, a: Args) -> Result:
    port = s.table.lookup(a.get("port"), TcpInputPort, "read-bytes-avail!")
    data, eof = await port.read(a.get("max"), a.get("mode") or "", peek=bool(a.get("peek")), timeout=a.get("timeout"))
    return {"data": data, "eof": eof}


@operation("Ports.Write")
async def _write(s: Session, a: Args) -> Result:
    port = s.table.lookup(a.get("port"), TcpOutputPort, "write-bytes")
    data = a.get("data") or b""
    if not isinstance(data, (bytes, bytearray)):
        raise contract_violation("write-bytes", "bytes?", data)
    return {"written": await port.write(bytes(data), flush=bool(a.get("flush")))}


@operation("Ports.Flush")
async def _flush(s: Session, a: Args) -> Result:
    await s.table.lookup(a.get("port"), TcpOutputPort, "flush-output").flush()
    return {}


@operation("Ports.SetBufferMode")
async def _buffer_mode(s: Session, a: Args) -> Result:
    port: _Port = s.table.lookup(a.get("port"), (TcpInputPort, TcpOutputPort), "file-stream-buffer-mode")
    port.set_buffer_mode(a.get("mode") or "")  # type: ignore[attr-defined]
    return {}


@operation("Ports.Close")
async def _close_port(s: Session, a: Args) -> Result:
    port: _Port = s.table.lookup(a.get("port"), (TcpInputPort, TcpOutputPort), "close-port")
    port.close()  # type: ignore[attr-defined]
    return {}


# ───────────────────────────── udp ─────────────────────────────


def _udp(s: Session, a: Args, who: str) -> UdpSocket:
    return s.table.lookup(a.get("udp"), UdpSocket, who)


def _datagram(got: tuple[bytes, int, str, int] | None) -> Result:
    if got is None:
        return {}
    data, count, host, port = got
    return {"data": data, "count": count, "host": host, "port": port}


@operation("Udp.Open")
async def _udp_open(s: Session, a: Args) -> Result:
    sock = await udp.udp_open(
        s, family_hostname=a.get("family_hostname"), family_port=a.get("family_port"), custodian=a.get("custodian")
    )
    return {"udp": sock.handle}


@operation("Udp.Bind")
async def _udp_bind(s: Session, a: Args) -> Result:
    await _udp(s, a, "udp-bind!").bind(a.get("hostname"), a.get("port"), bool(a.get("reuse")))
    return {}


@operation("Udp.Connect")
async def _udp_connect(s: Session, a: Args) -> Result:
    await _udp(s, a, "udp-connect!").connect(a.get("hostname"), a.get("port"))
    return {}


def _wait(a: Args) -> bool:
    wait = a.get("wait")
    return True if wait is None else bool(wait)


@operation("Udp.SendTo")
async def _udp_send_to(s: Session, a: Args) -> Result:
    sent = await _udp(s, a, "udp-send-to").send_to(
        a.get("hostname"),
        a.get("port"),
        a.get("data") or b"",
        a.get("start"),
        a.get("end"),
        wait=_wait(a),
        timeout=a.get("timeout"),
    )
    return {"sent": sent}


@operation("Udp.Send")
async def _udp_send(s: Session, a: Args) -> Result:
    sent = await _udp(s, a, "udp-send").send(
        a.get("data") or b"", a.get("start"), a.get("end"), wait=_wait(a), timeout=a.get("timeout")
    )
    return {"sent": sent}


@operation("Udp.Receive")
async def _udp_receive(s: Session, a: Args) -> Result:
    got = await _udp(s, a, "udp-receive!").receive(a.get("max"), wait=_wait(a), timeout=a.get("timeout"))
    return _datagram(got)


@operation("Udp.SetReceiveBufferSize")
async def _udp_rcvbuf(s: Session, a: Args) -> Result:
    _udp(s, a, "udp-set-receive-buffer-size!").set_receive_buffer_size(a.get("size"))
    return {}


@operation("Udp.Close")
async def _udp_close(s: Session, a: Args) -> Result:
    _udp(s, a, "udp-close").close()
    return {}


@operation("Udp.GetTtl")
async def _udp_ttl(s: Session, a: Args) -> Result:
    return {"ttl": _udp(s, a, "udp-ttl").ttl()}


@operation("Udp.SetTtl")
async def _udp_set_ttl(s: Session, a: Args) -> Result:
    _udp(s, a, "udp-set-ttl!").set_ttl(a.get("ttl"))
    return {}


@operation("Udp.MulticastJoin")
async def _udp_join(s: Session, a: Args) -> Result:
    await _udp(s, a, "udp-multicast-join-group!").multicast_join(a.get("group"), a.get("interface"))
    return {}


@operation("Udp.MulticastLeave")
async def _udp_leave(s: Session, a: Args) -> Result:
    await _udp(s, a, "udp-multicast-leave-group!").multicast_leave(a.get("group"), a.get("interface"))
    return {}


@operation("Udp.GetMulticastInterface")
async def _udp_mif(s: Session, a: Args) -> Result:
    return {"interface": _udp(s, a, "udp-multicast-interface").multicast_interface()}


@operation("Udp.SetMulticastInterface")
async def _udp_set_mif(s: Session, a: Args) -> Result:
    await _udp(s, a, "udp-multicast-set-interface!").set_multicast_interface(a.get("interface"))
    return {}


@operation("Udp.GetMulticastLoopback")
async def _udp_mloop(s: Session, a: Args) -> Result:
    return {"loopback": _udp(s, a, "udp-multicast-loopback?").multicast_loopback()}


@operation("Udp.SetMulticastLoopback")
async def _udp_set_mloop(s: Session, a: Args) -> Result:
    _udp(s, a, "udp-multicast-set-loopback!").set_multicast_loopback(bool(a.get("loopback")))
    return {}


@operation("Udp.GetMulticastTtl")
async def _udp_mttl(s: Session, a: Args) -> Result:
    return {"ttl": _udp(s, a, "udp-multicast-ttl").multicast_ttl()}


@operation("Udp.SetMulticastTtl")
async def _udp_set_mttl(s: Session, a: Args) -> Result:
    _udp(s, a, "udp-multicast-set-ttl!").set_multicast_ttl(a.get("ttl"))
    return {}


# ───────────────────────────── events ─────────────────────────────


@operation("Events.Sync")
async def _sync(s: Session, a: Args) -> Result:
    return await sync(s, a.get("events") or [], a.get("timeout"))
