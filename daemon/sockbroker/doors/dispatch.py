"""RPC ↔ typed core method, written once for every door.

A front door decodes a request into the proto's field names (:func:`sockbroker_wire.codec.to_dict`),
and :func:`call` finds the RPC in :data:`UNARY`, calls the one :class:`~sockbroker.core.broker.Api`
method it names inside a :class:`~sockbroker.core.breaks.Call`, and encodes the typed result as the
reply message's fields. The door then writes the reply and tells the call whether the reply was
delivered (:meth:`~sockbroker.core.breaks.Call.finish`): an undelivered reply's effects are given
back. Streams and attachment are served by the doors with :meth:`Api.attach`,
:meth:`Api.port_stream` and :meth:`Api.udp_stream` directly (every RPC the proto declares streaming).

The admin API's unary calls (:data:`ADMIN`) go the same way to the one :class:`~sockbroker.core.admin.Admin`
method each names, with the caller's principal and no session; its event stream is served by the
doors with :meth:`Admin.watch_events`, each event encoded by :func:`admin_event`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from sockbroker_wire.routes import Route

from ..core import events as hub
from ..core.admin import Admin, SessionInfo
from ..core.breaks import Call
from ..core.broker import Addresses, Api, AttachEvent, Broker, Datagram, Principal, ReadResult, SyncResult
from ..core.channels import TICKET_SECONDS, Ticket
from ..core.errors import ContractError, contract_violation
from ..core.sync import EVENTS, Event
from ..core.tcp import TcpConnection

__all__ = ["ADMIN", "UNARY", "AdminUnary", "Unary", "admin_event", "call", "events", "opened"]

Args = Mapping[str, Any]
Fields = dict[str, Any]


@dataclass(frozen=True)
class Unary:
    """One unary RPC: how to call its core method, and how to encode what the method returns."""

    method: Callable[[Api, Args], Any]
    encode: Callable[[Any], Fields]


def _nothing(_: object) -> Fields:
    return {}


def _handle(field: str) -> Callable[[Any], Fields]:
    return lambda resource: {field: resource.handle}


def _connection(conn: TcpConnection | None) -> Fields:
    return {} if conn is None else {"in": conn.in_port.handle, "out": conn.out_port.handle}


def _datagram(got: Datagram | None) -> Fields:
    return {} if got is None else {"data": got.data, "count": got.count, "host": got.host, "port": got.port}


def _addresses(got: Addresses) -> Fields:
    return {k: v for k, v in vars(got).items() if v is not None}


def _ticket(ticket: Ticket) -> Fields:
    return {"ticket": ticket.value, "address": ticket.address, "expires_seconds": TICKET_SECONDS}


def _read(got: ReadResult) -> Fields:
    return {"data": got.data, "eof": got.eof}


def _synced(got: SyncResult | None) -> Fields:
    if got is None:
        return {}
    value = got.value
    if isinstance(value, TcpConnection):
        result: Fields = {"connection": _connection(value)}
    elif isinstance(value, Datagram):
        result = {"datagram": _datagram(value)}
    elif isinstance(value, bool):
        result = {"sent": value}
    else:
        result = {"ready": value}
    return {"index": got.index, "result": result}


def events(specs: object) -> list[Event]:
    """``Events.Sync``'s ``events``: each a proto ``Event`` (one oneof member) as a typed event."""
    if not isinstance(specs, list):
        raise contract_violation("sync", "a list of events", specs)
    found = []
    for spec in specs:
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise contract_violation("sync", "an event with exactly one kind", spec)
        ((kind, args),) = spec.items()
        cls = EVENTS.get(kind)
        if cls is None:
            raise ContractError("sync", "unknown event kind", {"event": kind})
        found.append(cls(**(args or {})))
    return found


#: Every unary RPC but ``Sessions.Open`` and ``Sessions.Resume`` (which find no live session
#: first: :func:`call`).
UNARY: dict[str, Unary] = {
    # sessions
    "Sessions.KeepAlive": Unary(lambda api, a: api.keep_alive(), lambda lease: {"lease_seconds": lease}),
    "Sessions.CancelCall": Unary(lambda api, a: api.cancel_call(a["call"]), _nothing),
    "Sessions.Close": Unary(lambda api, a: api.close_session(), _nothing),
    # custodians and handles
    "Custodians.Create": Unary(lambda api, a: api.make_custodian(parent=a.get("parent")), _handle("custodian")),
    "Custodians.Shutdown": Unary(lambda api, a: api.custodian_shutdown_all(a["custodian"]), _nothing),
    "Custodians.Describe": Unary(lambda api, a: api.describe_custodian(a["custodian"]), dict),
    "Custodians.Delegate": Unary(
        lambda api, a: api.delegate(
            a["custodian"],
            allow_connect=a.get("allow_connect", ()),
            allow_listen=a.get("allow_listen", ()),
            allow_ports=a.get("allow_ports", ()),
            allow_multicast=a.get("allow_multicast", ()),
            allow_multicast_interface=a.get("allow_multicast_interface", ()),
            allow_handoff=a.get("allow_handoff", False),
            expires_seconds=a.get("expires_seconds"),
        ),
        lambda delegation: {"token": delegation.token, "expires_seconds": delegation.seconds},
    ),
    "Handles.Describe": Unary(lambda api, a: api.describe(a["handle"]), dict),
    "Handles.Addresses": Unary(lambda api, a: api.addresses(a["handle"], port_numbers=a["port_numbers"]), _addresses),
    # tcp
    "Tcp.Listen": Unary(
        lambda api, a: api.tcp_listen(
            a["port"],
            backlog=a.get("backlog"),
            reuse=a["reuse"],
            hostname=a.get("hostname"),
            custodian=a.get("custodian"),
        ),
        _handle("listener"),
    ),
    "Tcp.Connect": Unary(
        lambda api, a: api.tcp_connect(
            a["hostname"],
            a["port"],
            local_hostname=a.get("local_hostname"),
            local_port=a.get("local_port"),
            custodian=a.get("custodian"),
            timeout=a.get("timeout"),
        ),
        _connection,
    ),
    "Tcp.Accept": Unary(
        lambda api, a: api.tcp_accept(a["listener"], custodian=a.get("custodian"), timeout=a.get("timeout")),
        _connection,
    ),
    "Tcp.AcceptReady": Unary(lambda api, a: api.tcp_accept_ready(a["listener"]), lambda ready: {"ready": ready}),
    "Tcp.Close": Unary(lambda api, a: api.tcp_close(a["listener"]), _nothing),
    "Tcp.AbandonPort": Unary(lambda api, a: api.tcp_abandon_port(a["port"]), _nothing),
    # ports
    "Ports.Read": Unary(
        lambda api, a: api.read(
            a["port"], max_bytes=a.get("max"), mode=a["mode"], peek=a["peek"], timeout=a.get("timeout")
        ),
        _read,
    ),
    "Ports.Write": Unary(lambda api, a: api.write(a["port"], a["data"], flush=a["flush"]), lambda n: {"written": n}),
    "Ports.Flush": Unary(lambda api, a: api.flush(a["port"]), _nothing),
    "Ports.SetBufferMode": Unary(lambda api, a: api.set_buffer_mode(a["port"], a["mode"]), _nothing),
    "Ports.Close": Unary(lambda api, a: api.close_port(a["port"]), _nothing),
    "Ports.OpenChannel": Unary(lambda api, a: api.open_channel(a["port"], a["mode"]), _ticket),
    # udp
    "Udp.Open": Unary(
        lambda api, a: api.udp_open(
            family_hostname=a.get("family_hostname"), family_port=a.get("family_port"), custodian=a.get("custodian")
        ),
        _handle("udp"),
    ),
    "Udp.Bind": Unary(lambda api, a: api.udp_bind(a["udp"], a.get("hostname"), a["port"], reuse=a["reuse"]), _nothing),
    "Udp.Connect": Unary(lambda api, a: api.udp_connect(a["udp"], a.get("hostname"), a.get("port")), _nothing),
    "Udp.SendTo": Unary(
        lambda api, a: api.udp_send_to(
            a["udp"],
            a["hostname"],
            a["port"],
            a["data"],
            start=a.get("start"),
            end=a.get("end"),
            wait=a.get("wait", True),
            timeout=a.get("timeout"),
        ),
        lambda sent: {"sent": sent},
    ),
    "Udp.Send": Unary(
        lambda api, a: api.udp_send(
            a["udp"],
            a["data"],
            start=a.get("start"),
            end=a.get("end"),
            wait=a.get("wait", True),
            timeout=a.get("timeout"),
        ),
        lambda sent: {"sent": sent},
    ),
    "Udp.Receive": Unary(
        lambda api, a: api.udp_receive(
            a["udp"], max_bytes=a.get("max"), wait=a.get("wait", True), timeout=a.get("timeout")
        ),
        _datagram,
    ),
    "Udp.SetReceiveBufferSize": Unary(lambda api, a: api.udp_set_receive_buffer_size(a["udp"], a["size"]), _nothing),
    "Udp.Close": Unary(lambda api, a: api.udp_close(a["udp"]), _nothing),
    "Udp.OpenChannel": Unary(lambda api, a: api.udp_open_channel(a["udp"], a["mode"]), _ticket),
    "Udp.GetTtl": Unary(lambda api, a: api.udp_ttl(a["udp"]), lambda ttl: {"ttl": ttl}),
    "Udp.SetTtl": Unary(lambda api, a: api.udp_set_ttl(a["udp"], a["ttl"]), _nothing),
    "Udp.MulticastJoin": Unary(
        lambda api, a: api.udp_multicast_join_group(a["udp"], a["group"], a.get("interface")), _nothing
    ),
    "Udp.MulticastLeave": Unary(
        lambda api, a: api.udp_multicast_leave_group(a["udp"], a["group"], a.get("interface")), _nothing
    ),
    "Udp.GetMulticastInterface": Unary(
        lambda api, a: api.udp_multicast_interface(a["udp"]), lambda interface: {"interface": interface}
    ),
    "Udp.SetMulticastInterface": Unary(
        lambda api, a: api.udp_multicast_set_interface(a["udp"], a.get("interface")), _nothing
    ),
    "Udp.GetMulticastLoopback": Unary(
        lambda api, a: api.udp_multicast_loopback(a["udp"]), lambda loopback: {"loopback": loopback}
    ),
    "Udp.SetMulticastLoopback": Unary(lambda api, a: api.udp_multicast_set_loopback(a["udp"], a["loopback"]), _nothing),
    "Udp.GetMulticastTtl": Unary(lambda api, a: api.udp_multicast_ttl(a["udp"]), lambda ttl: {"ttl": ttl}),
    "Udp.SetMulticastTtl": Unary(lambda api, a: api.udp_multicast_set_ttl(a["udp"], a["ttl"]), _nothing),
    # events
    "Events.Sync": Unary(lambda api, a: api.sync(events(a.get("events", [])), timeout=a.get("timeout")), _synced),
}


@dataclass(frozen=True)
class AdminUnary:
    """One unary call of the admin API: its :class:`Admin` method, given the caller, and its encoder."""

    method: Callable[[Admin, Principal, Args], Any]
    encode: Callable[[Any], Fields]


def _sessions(found: list[SessionInfo]) -> Fields:
    return {"sessions": [dataclasses.asdict(info) for info in found]}


#: Every unary call of ``sockbroker.admin.v1.Admin``: the typed results' members are the reply's fields.
ADMIN: dict[str, AdminUnary] = {
    "Admin.ListSessions": AdminUnary(
        lambda admin, caller, a: admin.list_sessions(caller, principal=a["principal"]), _sessions
    ),
    "Admin.DescribeSession": AdminUnary(
        lambda admin, caller, a: admin.describe_session(caller, a["session"]), dataclasses.asdict
    ),
    "Admin.KillSession": AdminUnary(
        lambda admin, caller, a: admin.kill_session(caller, a["session"], reason=a["reason"]), dataclasses.asdict
    ),
    "Admin.KillHandle": AdminUnary(
        lambda admin, caller, a: admin.kill_handle(caller, a["handle"], reason=a["reason"]), dataclasses.asdict
    ),
}


def admin_event(event: hub.Event) -> Fields:
    """An event of the hub as an ``AdminEvent``'s fields (``Admin.WatchEvents``)."""
    return event.as_dict()


def opened(event: AttachEvent) -> Fields:
    """``Sessions.Open``'s and ``Sessions.Resume``'s reply (and an attachment event's fields)."""
    fields: Fields = {"session": event.session, "custodian": event.custodian, "lease_seconds": event.lease_seconds}
    if event.event == "opened":
        fields["grace_seconds"] = event.grace_seconds
        fields["resume_token"] = event.resume_token
    else:
        fields["event"] = event.event
    return fields


def sends_bytes(route: Route) -> bool:
    """A request carrying bytes to send (``Ports.Write``, ``Udp.Send``, ``Udp.SendTo``: its input
    has a ``bytes`` field). Both doors read one only once its session admits it
    (:meth:`Api.sending`), after its token and session are checked."""
    return any(f.type == FieldDescriptor.TYPE_BYTES for f in route.input.DESCRIPTOR.fields)


async def call(
    broker: Broker, rpc: str, principal: Principal, session_id: str | None, args: Args, call_id: str | None
) -> tuple[Fields, Call | None]:
    """Run one unary RPC for ``principal`` in the named session: the reply's fields, and the
    :class:`Call` the door settles once it knows whether the reply was delivered (None for
    ``Sessions.Open`` and the admin calls, which give nothing back)."""
    admin = ADMIN.get(rpc)
    if admin is not None:
        return admin.encode(admin.method(Admin(broker), principal, args)), None
    if rpc == "Sessions.Open":
        api = broker.open_session(
            principal, lease_seconds=args.get("lease_seconds"), grace_seconds=args.get("grace_seconds")
        )
        return opened(api.opened()), None
    if rpc == "Sessions.Resume":
        named = args.get("session") or session_id or ""
        if session_id and named != session_id:
            raise ContractError(rpc, "the session in the path differs from the session header")
        return opened(broker.resume_session(principal, named, args.get("resume_token", "")).opened()), None
    entry = UNARY.get(rpc)
    if entry is None:
        raise ContractError("sockbroker", "unknown operation", {"method": rpc})
    named = args.get("session") if rpc.startswith("Sessions.") else None
    api = broker.api(principal, session_id, rpc, named=named)
    running = api.session.calls.start(call_id, rpc)
    pending = None
    try:
        value = entry.method(api, args)
        if inspect.isawaitable(value):
            pending = value
            value = await running.run(lambda: pending)
        fields = entry.encode(value)
    except BaseException:
        running.finish(delivered=False)
        if inspect.iscoroutine(pending):
            pending.close()  # cancelled before it ever ran: nothing to warn about
        raise
    return fields, running
