"""The admin API (DESIGN §5): the daemon's sessions seen from above, for admin principals only.

:class:`Admin` is the core of ``sockbroker.admin.v1.Admin``, typed as :class:`.broker.Api` is:
a door decodes a call, passes the caller's principal (found as for every call), and encodes
what the method returns. Every method first checks that the caller is an admin principal
(:attr:`.broker.Principal.admin`); any other gets ``permission-denied``, and the hub an
``admin.deny`` event. A session or a handle is named by its id, whoever holds it; one that does
not exist (or no longer: a dropped session's handles are gone with it) is ``not-found``.

* :meth:`~Admin.list_sessions`, :meth:`~Admin.describe_session`: what is open. A session's
  principal, state, age, handles and traffic; its custodian tree, depth first, each custodian
  with its handles: kind, state, addresses, bytes and datagrams in and out (:mod:`.traffic`),
  age.
* :meth:`~Admin.kill_session` drops a session as every drop does: every socket it holds is
  closed, and its client's next call is ``not-found``. :meth:`~Admin.kill_handle` closes one
  handle as a shutdown of its custodian would: a TCP port closes its connection (both ports), a
  custodian its subtree, a session's root custodian the session. Each publishes
  ``admin.kill_session`` / ``admin.kill_handle`` with the admin's name, the session, the target
  and the reason, before the ``session.drop`` a drop publishes.
* :meth:`~Admin.watch_events` hands every event of the hub (:mod:`.events`) to the caller,
  after a first ``events.watch`` that says the watch has begun, until the caller cancels.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BrokerError, NotFoundError, PermissionDeniedError, contract_violation
from .events import Event
from .resources import Custodian, Resource
from .sessions import Session
from .tcp import TcpInputPort, TcpListener, TcpOutputPort
from .traffic import principal_label, session_traffic
from .udp import UdpSocket

if TYPE_CHECKING:
    from .broker import Broker, Principal

__all__ = ["MAX_REASON", "Admin", "CustodianInfo", "HandleInfo", "Killed", "SessionDescription", "SessionInfo"]

#: The longest reason a kill may give (it goes into the audit log and every watcher's queue).
MAX_REASON = 1000


@dataclass(frozen=True)
class SessionInfo:
    """One session at a glance (``SessionSummary``)."""

    session: str
    principal: str
    custodian: str
    state: str
    attachments: int
    lease_seconds: float
    opened_at: float
    age_seconds: float
    handles: int
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True)
class HandleInfo:
    """One handle that is not a custodian; None for what its kind does not have."""

    handle: str
    kind: str
    state: str
    closed: bool
    age_seconds: float
    local_host: str | None = None
    local_port: int | None = None
    remote_host: str | None = None
    remote_port: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    datagrams_in: int | None = None
    datagrams_out: int | None = None
    channel: str | None = None


@dataclass(frozen=True)
class CustodianInfo:
    """One custodian of a session's tree and its own handles (its children come after it)."""

    custodian: str
    parent: str
    depth: int
    age_seconds: float
    handles: tuple[HandleInfo, ...]


@dataclass(frozen=True)
class SessionDescription:
    summary: SessionInfo
    #: Depth first from the root: each custodian comes after its parent.
    custodians: tuple[CustodianInfo, ...]


@dataclass(frozen=True)
class Killed:
    """What a kill did: the session it was in, and how many handles closed (custodians included)."""

    session: str
    closed: int


class Admin:
    """The admin calls on one broker."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def _check(self, caller: Principal, who: str) -> None:
        if caller.admin:
            return
        self._broker.events.publish(Event("admin.deny", caller.name, operation=who, reason="not an admin principal"))
        raise PermissionDeniedError(who, "only an admin principal may use the admin API", {"principal": caller.name})

    def _session(self, session: object, who: str) -> Session:
        if not isinstance(session, str) or not session:
            raise contract_violation(who, "session-id?", session)
        found = self._broker.sessions.find(session)
        if found is None:
            raise NotFoundError(who, "no such session", {"session": session})
        return found

    def _handle(self, handle: object, who: str) -> tuple[Session, Resource]:
        """The session that holds ``handle`` (open, or closed and still remembered), and its resource."""
        if not isinstance(handle, str) or not handle:
            raise contract_violation(who, "handle?", handle)
        for session in self._broker.sessions:
            resource = session.table.find(handle)
            if resource is not None:
                return session, resource
        raise NotFoundError(who, "no such handle", {"handle": handle})

    # ── looking ────────────────────────────────────────────────────────────
    def list_sessions(self, caller: Principal, *, principal: str = "") -> list[SessionInfo]:
        """Every open session, oldest first; with ``principal``, that principal's (a name without
        ``/`` includes its delegated callers', ``NAME/…``)."""
        self._check(caller, "admin-list-sessions")
        now = time.time()
        found = [
            _summary(session, now)
            for session in self._broker.sessions
            if not principal
            or session.principal == principal
            or ("/" not in principal and principal_label(session.principal) == principal)
        ]
        return sorted(found, key=lambda info: info.opened_at)

    def describe_session(self, caller: Principal, session: str) -> SessionDescription:
        """A session's summary and its custodian tree."""
        who = "admin-describe-session"
        self._check(caller, who)
        found = self._session(session, who)
        now = time.monotonic()
        custodians = tuple(
            CustodianInfo(
                custodian.handle,
                custodian.parent.handle if custodian.parent is not None else "",
                depth,
                now - custodian.opened,
                tuple(_handle(resource, now) for resource in custodian.resources.values()),
            )
            for custodian, depth in _tree(found.root)
        )
        return SessionDescription(_summary(found, time.time()), custodians)

    # ── killing ────────────────────────────────────────────────────────────
    def kill_session(self, caller: Principal, session: str, *, reason: str = "") -> Killed:
        """Drop ``session`` (any principal's): every socket it holds is closed."""
        who = "admin-kill-session"
        self._check(caller, who)
        reason = _reason(who, reason)
        found = self._session(session, who)
        closed = len(found.table)
        self._broker.events.publish(Event("admin.kill_session", caller.name, found.id, who, found.id, reason))
        found.drop(_why(caller, reason))
        return Killed(found.id, closed)

    def kill_handle(self, caller: Principal, handle: str, *, reason: str = "") -> Killed:
        """Close ``handle`` (any session's) as a shutdown of its custodian would."""
        who = "admin-kill-handle"
        self._check(caller, who)
        reason = _reason(who, reason)
        session, resource = self._handle(handle, who)
        before = len(session.table)
        self._broker.events.publish(Event("admin.kill_handle", caller.name, session.id, who, handle, reason))
        if resource is session.root:
            session.drop(_why(caller, reason))
        elif isinstance(resource, TcpInputPort | TcpOutputPort):
            resource.conn.force_close_ports()
        else:
            resource.force_close()
        return Killed(session.id, before - (0 if session.dropped else len(session.table)))

    # ── watching ───────────────────────────────────────────────────────────
    async def watch_events(self, caller: Principal, emit: Callable[[Event], Awaitable[None]]) -> None:
        """Every event from now on, to ``emit``, until cancelled: first ``events.watch`` (the
        watch has begun), then each event as it is published (``events.lost`` when this watcher
        fell behind and lost the oldest: :class:`.events.Watcher`)."""
        who = "admin-watch-events"
        self._check(caller, who)
        watcher = self._broker.events.watch()
        try:
            await emit(Event("events.watch", caller.name, operation=who))
            async for event in watcher:
                await emit(event)
        finally:
            watcher.close()


def _summary(session: Session, now: float) -> SessionInfo:
    bytes_in, bytes_out = session_traffic(session)
    return SessionInfo(
        session=session.id,
        principal=session.principal,
        custodian=session.root.handle,
        state=session.state.value,
        attachments=session.attachments,
        lease_seconds=session.lease_seconds,
        opened_at=session.opened_at,
        age_seconds=max(0.0, now - session.opened_at),
        handles=len(session.table),
        bytes_in=bytes_in,
        bytes_out=bytes_out,
    )


def _tree(root: Custodian) -> Iterator[tuple[Custodian, int]]:
    """The custodians under ``root`` (itself first), depth first, with their depth."""
    pending = [(root, 0)]
    while pending:
        custodian, depth = pending.pop()
        yield custodian, depth
        pending.extend((child, depth + 1) for child in reversed(custodian.children.values()))


def _handle(resource: Resource, now: float) -> HandleInfo:
    """What a handle shows: its state, addresses, traffic and age, by kind."""
    if isinstance(resource, TcpInputPort | TcpOutputPort):
        conn = resource.conn
        return HandleInfo(
            resource.handle,
            resource.kind,
            resource.state.value,
            resource.closed or conn.closed,
            now - conn.opened,
            *conn.local,
            *conn.remote,
            bytes_in=conn.bytes_in,
            bytes_out=conn.bytes_out,
            channel=None if conn.carrier is None else conn.carrier.mode,
        )
    if isinstance(resource, TcpListener):
        return HandleInfo(
            resource.handle,
            resource.kind,
            resource.state.value,
            resource.closed,
            now - resource.opened,
            resource.host,
            resource.port,
        )
    assert isinstance(resource, UdpSocket), resource  # a custodian's resources: these three kinds
    addresses: tuple[str | None, int | None, str | None, int | None] = (None, None, None, None)
    try:
        local_host, local_port, remote_host, remote_port = resource.addresses("admin-describe-session")
    except BrokerError:
        pass  # closed, or handed off: its client holds the socket
    else:  # each address only when the socket has one: bound, connected
        addresses = (
            local_host if local_port else None,
            local_port or None,
            remote_host if remote_port else None,
            remote_port or None,
        )
    return HandleInfo(
        resource.handle,
        resource.kind,
        resource.state.value,
        resource.closed,
        now - resource.opened,
        *addresses,
        bytes_in=resource.bytes_in,
        bytes_out=resource.bytes_out,
        datagrams_in=resource.datagrams_in,
        datagrams_out=resource.datagrams_out,
        channel="handoff" if resource.handed_off else None,
    )


def _reason(who: str, reason: object) -> str:
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise contract_violation(who, f"(and/c string? (at most {MAX_REASON} characters))", reason)
    return reason


def _why(caller: Principal, reason: str) -> str:
    """A kill's reason as its drop says it."""
    return f"killed by admin {caller.name}" + (f": {reason}" if reason else "")
