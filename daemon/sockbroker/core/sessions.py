"""Sessions: a client's hold on the broker, kept alive by an attachment or a lease.

A session lives while an attachment is open **or** its lease has not run out; any call renews
the lease. When the attachment breaks, the lease runs out, the session is closed, or the daemon
stops, the session *drops*: its root custodian is shut down, closing every socket it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from ._net import Signal
from .breaks import Calls
from .budget import Budget
from .errors import ContractError, NotFoundError, ResourceExhaustedError
from .events import Event, Events
from .limits import Limits
from .resources import Custodian, HandleTable
from .states import SESSION, SessionState
from .traffic import Traffic, principal_label

if TYPE_CHECKING:
    from .policy import Policy

__all__ = ["Session", "SessionManager"]

log = logging.getLogger(__name__)


class Session:
    """One client's session: its id, principal, root custodian, handle table and lease."""

    def __init__(self, manager: SessionManager, principal: str, policy: Policy, lease_seconds: float) -> None:
        self.id = f"ses_{secrets.token_urlsafe(16)}"
        self.principal = principal
        self.policy = policy
        self.limits = manager.limits
        #: Bytes this session's ports and streams hold, inside the daemon's budget.
        self.budget = Budget(manager.limits.session_buffer, manager.budget)
        self.lease_seconds = lease_seconds
        #: When it opened (``time.time()``: seconds since the epoch, for the admin API).
        self.opened_at = time.time()
        #: What its closed handles carried, and through it its principal's totals (:mod:`.traffic`).
        self.traffic = Traffic(manager.traffic_of(principal))
        self.table = HandleTable(max_handles=manager.limits.handles_per_session)
        self.root = Custodian(self.table, None, "sessions-open")
        self.state = SessionState.LEASED
        self.attachments = 0
        #: Running calls by id, and the effects of finished ones (``Sessions.CancelCall``).
        self.calls = Calls(self.budget, manager.limits.cancel_hold_bytes)
        #: Requests carrying bytes to send that this session has in flight (:meth:`sending`).
        self._sending = 0
        self._room = Signal()
        self._manager = manager
        self._deadline = time.monotonic() + lease_seconds
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    @property
    def dropped(self) -> bool:
        return self.state is SessionState.DROPPED

    # ── lease ──────────────────────────────────────────────────────────────
    def renew(self) -> None:
        self._deadline = time.monotonic() + self.lease_seconds

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._deadline - time.monotonic())
        self._timer = loop.call_later(delay, self._lease_check)

    def _lease_check(self) -> None:
        self._timer = None
        if self.dropped:
            return
        if self.state is SessionState.LEASED and time.monotonic() >= self._deadline:
            log.info("session %s: lease expired", self.id)
            self._manager.drop(self, reason="lease expired")
            return
        if self.attachments:
            self.renew()
        self._arm()

    # ── attachments ────────────────────────────────────────────────────────
    def attach(self) -> None:
        self.attachments += 1
        self.state = SESSION.next(self.state, "attach")
        self.renew()

    def detach(self, *, broken: bool) -> None:
        """An attachment ended. A broken one (the client went away) drops the session at once."""
        self.attachments = max(0, self.attachments - 1)
        if self.dropped:
            return
        if broken:
            log.info("session %s: attachment broke", self.id)
            self._manager.drop(self, reason="attachment broke")
        else:
            self.state = SESSION.next(self.state, "detach" if self.attachments else "detach-last")
            self.renew()

    def drop(self, reason: str) -> None:
        """Drop this session on purpose (closed by its client, root custodian shut down)."""
        self._manager.drop(self, reason=reason)

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """A request that carries bytes to send (a write, a datagram) runs inside this block, and
        its door reads it from the client only once admitted: while the session's own byte budget
        is full, one such request at a time. So a flood of big writes makes the daemon hold the
        session's budget plus one request, however many calls are sent at once: the rest wait
        unread, held back by their transport's flow control. (One always goes on, so a session
        whose budget is full of unread bytes can still write; and only the session's own budget
        counts, so another session filling the daemon's cannot make this one's writes queue.)"""
        while self._sending and self.budget.full_here:
            self.budget.when_room(self._room.fire)
            await self._room.wait()
        self._sending += 1
        try:
            yield
        finally:
            self._sending -= 1
            self._room.fire()

    def custodian(self, handle: object, who: str) -> Custodian:
        """The custodian a new handle goes under: the named one, or the session's root."""
        custodian = self.root if handle is None or handle == "" else self.table.lookup(handle, Custodian, who)
        custodian.check_usable(who)
        return custodian

    def _close(self) -> None:
        self.state = SESSION.next(self.state, "drop")
        self.calls.cancel_all()
        self._room.fire()  # a request waiting to be received goes on, to be refused
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.table.discard()
        self.root.force_close()


class SessionManager:
    """All sessions of the daemon, by id. Each open and each drop is published on ``events``
    (``session.open``, ``session.drop`` with its reason)."""

    def __init__(self, limits: Limits, events: Events | None = None) -> None:
        self.limits = limits
        self.events = events if events is not None else Events()
        #: Bytes every session's ports and streams hold together.
        self.budget = Budget(limits.daemon_buffer)
        self._sessions: dict[str, Session] = {}
        self.dropped_total = 0
        #: What every principal's closed handles carried, by :func:`.traffic.principal_label`:
        #: kept for the daemon's life (one entry per principal name before its ``/``).
        self.traffic: dict[str, Traffic] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __iter__(self) -> Iterator[Session]:
        """Every open session (a snapshot: dropping sessions while iterating is fine)."""
        return iter(list(self._sessions.values()))

    def find(self, session_id: str) -> Session | None:
        """The session with this id, whoever holds it (the admin API's lookup)."""
        return self._sessions.get(session_id)

    def handle_count(self) -> int:
        return sum(len(s.table) for s in self._sessions.values())

    def traffic_of(self, principal: str) -> Traffic:
        """The totals of the principal a caller's name belongs to (``alice/dlg_…``: ``alice``)."""
        label = principal_label(principal)
        found = self.traffic.get(label)
        if found is None:
            found = self.traffic[label] = Traffic()
        return found

    def open(self, principal: str, policy: Policy, lease_seconds: float | None) -> Session:
        who = "sessions-open"
        if lease_seconds is None:
            lease = self.limits.lease_seconds
        elif not (lease_seconds > 0 and lease_seconds < float("inf")):
            raise ContractError(who, "contract violation", {"expected": "positive-real?", "given": lease_seconds})
        else:
            lease = min(max(lease_seconds, self.limits.min_lease_seconds), self.limits.max_lease_seconds)
        held = sum(1 for s in self._sessions.values() if s.principal == principal)
        if held >= self.limits.sessions_per_principal:
            raise ResourceExhaustedError(who, "too many sessions", {"limit": self.limits.sessions_per_principal})
        session = Session(self, principal, policy, lease)
        self._sessions[session.id] = session
        log.info("session %s opened for %s", session.id, principal)
        self.events.publish(Event("session.open", principal, session.id, who, session.root.handle))
        return session

    def get(self, session_id: str, principal: str, who: str) -> Session:
        """The caller's session, renewed. Another principal's session is unknown to it."""
        session = self._sessions.get(session_id) if session_id else None
        if session is None or session.principal != principal:
            raise NotFoundError(who, "no such session", {"session": session_id or "(none given)"})
        session.renew()
        return session

    def drop(self, session: Session, *, reason: str) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        self.dropped_total += 1
        log.info("session %s dropped: %s", session.id, reason)
        session._close()
        self.events.publish(Event("session.drop", session.principal, session.id, reason=reason))

    def drop_all(self, *, reason: str) -> None:
        for session in list(self._sessions.values()):
            self.drop(session, reason=reason)
