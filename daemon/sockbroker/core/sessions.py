"""Sessions: a client's hold on the broker, kept alive by an attachment or a lease.

A session lives while an attachment is open **or** its lease has not run out; any call renews
the lease. When the attachment breaks, the lease runs out, the session is closed, or the daemon
stops, the session *drops*: its root custodian is shut down, closing every socket it holds.

A session opened with ``grace_seconds`` does not drop when its attachment breaks or its lease
runs out: it waits that long, every handle, queued byte and given-back result intact, for
``Sessions.Resume`` with its resume token (each resume gives a new one). Attachments made before
a resume no longer count: their breaking later changes nothing.

A session's policy is its principal's as it is now (a reload changes it for the next
operation), or for a delegated token's session the delegation's intersection; every denial is
published as a ``policy.deny`` event (:class:`SessionPolicy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

from ._net import Signal
from .breaks import Calls
from .budget import Budget
from .errors import ContractError, NotFoundError, PermissionDeniedError, ResourceExhaustedError
from .events import Event, Events
from .limits import Limits
from .resources import Custodian, HandleTable
from .states import SESSION, SessionState
from .traffic import Traffic, principal_label

if TYPE_CHECKING:
    from .policy import Policy
    from .principals import Principal

__all__ = ["Session", "SessionManager", "SessionPolicy"]

log = logging.getLogger(__name__)


class SessionPolicy:
    """A session's policy as it is now: its source is asked again after a reload (the manager's
    ``generation`` moved), and each denial is published as a ``policy.deny`` event."""

    def __init__(self, session: Session, source: Callable[[], Policy]) -> None:
        self._session = session
        self._source = source
        self._generation = -1
        self._policy: Policy | None = None

    @property
    def current(self) -> Policy:
        generation = self._session._manager.generation
        if self._policy is None or self._generation != generation:
            self._policy, self._generation = self._source(), generation
        return self._policy

    def _judged(self, who: str, target: str, check: Callable[[Policy], None]) -> None:
        """Run one check of the current policy; a denial is published, then raised."""
        try:
            check(self.current)
        except PermissionDeniedError as exc:
            session = self._session
            reason = exc.message.split("\n", 1)[0]
            session._manager.events.publish(Event("policy.deny", session.principal, session.id, who, target, reason))
            raise

    def check_connect(self, who: str, host: str, port: int) -> None:
        self._judged(who, _endpoint(host, port), lambda policy: policy.check_connect(who, host, port))

    def check_listen(self, who: str, host: str, port: int) -> None:
        self._judged(who, _endpoint(host, port), lambda policy: policy.check_listen(who, host, port))

    def check_multicast(self, who: str, group: str) -> None:
        self._judged(who, group, lambda policy: policy.check_multicast(who, group))

    def check_multicast_interface(self, who: str, interface: str) -> None:
        self._judged(who, interface, lambda policy: policy.check_multicast_interface(who, interface))

    def check_handoff(self, who: str, *, udp: bool) -> None:
        self._judged(who, "udp" if udp else "tcp", lambda policy: policy.check_handoff(who, udp=udp))


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Session:
    """One client's session: its id, principal, root custodian, handle table, lease and grace."""

    def __init__(
        self,
        manager: SessionManager,
        caller: Principal,
        account: Principal,
        policy: Callable[[], Policy],
        lease_seconds: float,
        grace_seconds: float,
        parent: Custodian | None,
    ) -> None:
        self.id = f"ses_{secrets.token_urlsafe(16)}"
        #: Who opened it (a delegated token's principal is ``NAME/dlg_…``), and the configured
        #: principal whose quotas it counts against.
        self.principal = caller.name
        self.caller = caller
        self.account = account.name
        self.policy = SessionPolicy(self, policy)
        self.limits = manager.limits
        #: Bytes this session's ports and streams hold, inside the daemon's budget.
        self.budget = Budget(account.session_buffer or manager.limits.session_buffer, manager.budget)
        self.lease_seconds = lease_seconds
        self.grace_seconds = grace_seconds
        #: The token that takes the session back within its grace period (None without one).
        self.resume_token = _resume_token() if grace_seconds > 0 else None
        #: When it opened (``time.time()``: seconds since the epoch, for the admin API).
        self.opened_at = time.time()
        #: What its closed handles carried, and through it its principal's totals (:mod:`.traffic`).
        self.traffic = Traffic(manager.traffic_of(caller.name))
        self.table = HandleTable(max_handles=account.max_handles_per_session or manager.limits.handles_per_session)
        #: The root custodian: a child of ``parent`` (a delegation's custodian, in the delegating
        #: session) when there is one; shutting that down drops this session.
        self.root = Custodian(self.table, parent, "sessions-open")
        if parent is not None:
            self.root.on_shutdown(lambda: self.drop("its delegation's custodian was shut down"))
        self.state = SessionState.LEASED
        self.attachments = 0
        #: Counts resumes: an attachment made before the latest resume no longer holds the session.
        self.epoch = 0
        #: Running calls by id, and the effects of finished ones (``Sessions.CancelCall``).
        self.calls = Calls(self.budget, manager.limits.cancel_hold_bytes)
        #: Requests carrying bytes to send that this session has in flight (:meth:`sending`).
        self._sending = 0
        self._room = Signal()
        #: Fired when the session drops (its attachments end then), with :attr:`drop_reason`.
        self.gone = Signal()
        self.drop_reason = ""
        self._manager = manager
        self._deadline = time.monotonic() + lease_seconds
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    @property
    def dropped(self) -> bool:
        return self.state is SessionState.DROPPED

    # ── lease and grace ────────────────────────────────────────────────────
    def renew(self) -> None:
        self._deadline = time.monotonic() + self.lease_seconds

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._deadline - time.monotonic())
        self._timer = loop.call_later(delay, self._lease_check)

    def _lease_check(self) -> None:
        self._timer = None
        if self.dropped:
            return
        expired = time.monotonic() >= self._deadline
        if self.state is SessionState.GRACE:
            if expired:
                self._manager.drop(self, reason="not resumed within its grace period")
                return
        elif self.state is SessionState.LEASED and expired:
            log.info("session %s: lease expired", self.id)
            self._lost("lease expired", "lease-expired")  # dropped, or the grace period armed
            return
        elif self.attachments:
            self.renew()
        self._arm()

    def _lost(self, reason: str, event: str) -> None:
        """The attachment broke or the lease ran out: drop, or wait for a resume."""
        if self.grace_seconds <= 0:
            self._manager.drop(self, reason=reason)
            return
        self.state = SESSION.next(self.state, "grace")
        self.attachments = 0
        self._deadline = time.monotonic() + self.grace_seconds
        self._arm()
        log.info("session %s: %s; waiting %.3g s for a resume", self.id, reason, self.grace_seconds)
        self._manager.events.publish(Event("session.grace", self.principal, self.id, event, reason=reason))

    def resume(self) -> str:
        """Take the session back (its token checked by the manager): leased again, a new resume
        token, and the attachments made before no longer count."""
        self.state = SESSION.next(self.state, "resume")
        self.epoch += 1
        self.attachments = 0
        self.resume_token = _resume_token()
        self.renew()
        self._arm()
        return self.resume_token

    # ── attachments ────────────────────────────────────────────────────────
    def attach(self) -> int:
        """An attachment opened; its epoch, to give back to :meth:`detach`."""
        self.attachments += 1
        self.state = SESSION.next(self.state, "attach")
        self.renew()
        return self.epoch

    def detach(self, *, broken: bool, epoch: int) -> None:
        """An attachment ended. A broken one (the client went away) drops the session at once, or
        starts its grace period. One made before a resume changes nothing."""
        if epoch != self.epoch or self.dropped or self.state is SessionState.GRACE:
            return
        self.attachments = max(0, self.attachments - 1)
        if broken:
            log.info("session %s: attachment broke", self.id)
            self._lost("attachment broke", "break")
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
        self.resume_token = None
        self.calls.cancel_all()
        self._room.fire()  # a request waiting to be received goes on, to be refused
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.table.discard()
        self.root.force_close()
        self.gone.fire()


def _resume_token() -> str:
    return f"sbr_{secrets.token_urlsafe(24)}"


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
        #: Moves on every policy reload: each session's policy is asked again.
        self.generation = 0
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

    def open(
        self,
        caller: Principal,
        account: Principal,
        policy: Callable[[], Policy],
        *,
        lease_seconds: float | None = None,
        grace_seconds: float | None = None,
        parent: Custodian | None = None,
    ) -> Session:
        """A new session for ``caller``, counted against ``account``'s quotas (``max_sessions``,
        ``max_grace_seconds``, the handle and byte limits), under ``parent`` when it is a
        delegated token's."""
        who = "sessions-open"
        lease = self._seconds(who, lease_seconds, self.limits.lease_seconds)
        lease = min(max(lease, self.limits.min_lease_seconds), self.limits.max_lease_seconds)
        grace = self._seconds(who, grace_seconds, 0.0, zero=True)
        most = account.max_grace_seconds if account.max_grace_seconds is not None else self.limits.max_grace_seconds
        grace = min(grace, most)
        limit = account.max_sessions or self.limits.sessions_per_principal
        held = sum(1 for s in self._sessions.values() if s.account == account.name)
        if held >= limit:
            raise ResourceExhaustedError(who, "too many sessions", {"principal": account.name, "limit": limit})
        session = Session(self, caller, account, policy, lease, grace, parent)
        self._sessions[session.id] = session
        log.info("session %s opened for %s", session.id, caller.name)
        self.events.publish(Event("session.open", caller.name, session.id, who, session.root.handle))
        return session

    @staticmethod
    def _seconds(who: str, given: float | None, default: float, *, zero: bool = False) -> float:
        if given is None:
            return default
        if not ((given >= 0 if zero else given > 0) and given < float("inf")):
            expected = "(>=/c 0)" if zero else "positive-real?"
            raise ContractError(who, "contract violation", {"expected": expected, "given": given})
        return float(given)

    def get(self, session_id: str, principal: str, who: str) -> Session:
        """The caller's session, renewed. Another principal's session is unknown to it; one
        waiting for a resume answers nothing else."""
        session = self._sessions.get(session_id) if session_id else None
        if session is None or session.principal != principal:
            raise NotFoundError(who, "no such session", {"session": session_id or "(none given)"})
        if session.state is SessionState.GRACE:
            raise NotFoundError(
                who, "the session lost its attachment: take it back with Sessions.Resume", {"session": session_id}
            )
        session.renew()
        return session

    def resume(self, session_id: str, token: str, principal: str, who: str) -> Session:
        """``Sessions.Resume``: the caller's session, taken back with its resume token. A wrong,
        spent or late token is ``not-found``, as for a session that never was."""
        session = self._sessions.get(session_id) if session_id else None
        expected = session.resume_token if session is not None else None
        if (
            session is None
            or session.principal != principal
            or expected is None
            or not hmac.compare_digest(expected.encode(), str(token).encode())
        ):
            raise NotFoundError(who, "no such session to resume", {"session": session_id or "(none given)"})
        session.resume()
        log.info("session %s resumed", session.id)
        self.events.publish(Event("session.resume", principal, session.id, "Sessions.Resume"))
        return session

    def drop(self, session: Session, *, reason: str) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        self.dropped_total += 1
        log.info("session %s dropped: %s", session.id, reason)
        session.drop_reason = reason
        session._close()
        self.events.publish(Event("session.drop", session.principal, session.id, reason=reason))

    def drop_all(self, *, reason: str) -> None:
        for session in list(self._sessions.values()):
            self.drop(session, reason=reason)
