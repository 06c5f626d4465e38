"""Handles, custodians and the session's handle table.

A *resource* is anything a handle names: a listener, a port, a UDP socket, a custodian. Every
resource is managed by exactly one custodian; shutting a custodian down closes every resource of
it and of its descendants (Racket's ``custodian-shutdown-all``), children first, and never stops
half way: a resource whose close fails is still forgotten and its fd released.

Handles carry 128 random bits behind a human prefix (``lst_``, ``tin_``…). A handle is looked up
only in the table of the session that made it, so another session's handle is simply unknown.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import ClassVar, TypeVar

from .errors import ContractError, NetworkError, NotFoundError, ResourceExhaustedError, contract_violation
from .states import CUSTODIAN, CustodianState

__all__ = ["Custodian", "HandleTable", "Resource", "new_handle"]

log = logging.getLogger(__name__)

R = TypeVar("R", bound="Resource")


def new_handle(prefix: str) -> str:
    """An opaque handle: the prefix only helps humans; 16 random bytes make it unguessable."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


class Resource:
    """Something a handle names. Subclasses set :attr:`kind`, :attr:`prefix` and :attr:`predicate`."""

    #: Slots for what every resource has; a subclass without slots of its own keeps a ``__dict__``.
    __slots__ = ("custodian", "handle")

    kind: ClassVar[str] = "resource"
    prefix: ClassVar[str] = "res"
    #: The Racket predicate a contract error names when another kind of handle is given.
    predicate: ClassVar[str] = "resource?"

    def __init__(self) -> None:
        self.handle = new_handle(self.prefix)
        self.custodian: Custodian | None = None

    @property
    def closed(self) -> bool:
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def force_close(self) -> None:
        """Release everything now (custodian shutdown, session drop). Idempotent; never raises."""
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def describe(self) -> dict[str, object]:
        return {
            "handle": self.handle,
            "kind": self.kind,
            "closed": self.closed,
            "custodian": self.custodian.handle if self.custodian else "",
        }

    def ensure_open(self, who: str) -> None:
        if self.closed:
            raise NetworkError(who, f"{self.kind.replace('-', ' ')} is closed", {"handle": self.handle})

    def _forget(self) -> None:
        """Called by subclasses once closed: leave the custodian (the table keeps a tombstone)."""
        if self.custodian is not None:
            self.custodian.resources.pop(self.handle, None)
            self.custodian.table.note_closed(self)


class Custodian(Resource):
    """Racket's resource group: manages resources and child custodians.

    A child may belong to another session's table: the root custodian of a session opened with a
    delegated token is a child of the delegation's custodian, so shutting that down shuts the
    delegated session down too; neither session sees the other's handles (:meth:`describe`)."""

    kind = "custodian"
    prefix = "cst"
    predicate = "custodian?"
    #: Called once when it shuts down (a delegation's revocation, a delegated session's drop).
    _on_shutdown: list[Callable[[], None]] | None = None

    def __init__(self, table: HandleTable, parent: Custodian | None, who: str = "make-custodian") -> None:
        super().__init__()
        if parent is not None:
            parent.check_usable(who)
        table.register(self, who)
        self.custodian = parent
        self.table = table
        self.parent = parent
        # Plain dicts keep their order too, at half an OrderedDict's cost per entry (DESIGN §7 P6).
        self.children: dict[str, Custodian] = {}
        self.resources: dict[str, Resource] = {}
        self.state = CustodianState.ACTIVE
        #: When it was made (``time.monotonic()``): the admin API's age.
        self.opened = time.monotonic()
        if parent is not None:
            parent.children[self.handle] = self

    @property
    def closed(self) -> bool:
        return self.state is CustodianState.SHUT_DOWN

    def check_usable(self, who: str) -> None:
        if self.closed:
            raise ContractError(who, "the custodian has been shut down", {"custodian": self.handle})

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when this custodian shuts down (at once if it has)."""
        if self.closed:
            callback()
            return
        if self._on_shutdown is None:
            self._on_shutdown = []
        self._on_shutdown.append(callback)

    def adopt(self, resource: R, who: str) -> R:
        """Place a new resource under this custodian and register its handle."""
        self.check_usable(who)
        self.table.register(resource, who)
        resource.custodian = self
        self.resources[resource.handle] = resource
        return resource

    def release(self, resource: Resource) -> None:
        """Let go of a live resource without closing it (a connection given back to its listener):
        its handle is unknown until a custodian adopts it again."""
        if self.resources.pop(resource.handle, None) is not None:
            self.table.unregister(resource)
            resource.custodian = None

    def force_close(self) -> None:
        """custodian-shutdown-all: children first, then own resources; never stops half way."""
        if self.closed:
            return
        self.state = CUSTODIAN.next(self.state, "shutdown")
        for child in list(self.children.values()):
            child.force_close()
        for resource in list(self.resources.values()):
            try:
                resource.force_close()
            except Exception:  # a failing close must not keep the rest open
                log.exception("closing %s during custodian shutdown", resource.handle)
        self.resources.clear()
        if self.parent is not None:
            self.parent.children.pop(self.handle, None)
        self.table.note_closed(self)
        callbacks, self._on_shutdown = self._on_shutdown, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:  # the shutdown is done; one failing follower must not stop the rest
                log.exception("after shutting down %s", self.handle)

    def describe(self) -> dict[str, object]:
        """Its handles and children, within its own session: another session's custodian (a
        delegated session's root, or the delegation's custodian above one) is not shown."""
        parent = self.parent if self.parent is not None and self.parent.table is self.table else None
        return {
            "custodian": self.handle,
            "parent": parent.handle if parent is not None else "",
            "shut_down": self.closed,
            "handles": [{"handle": r.handle, "kind": r.kind, "closed": r.closed} for r in self.resources.values()],
            "children": [h for h, child in self.children.items() if child.table is self.table],
        }

    def walk(self) -> Iterator[Resource]:
        """Its resources and descendants in its own session."""
        yield from self.resources.values()
        for child in self.children.values():
            if child.table is self.table:
                yield child
                yield from child.walk()


class HandleTable:
    """One session's handles: live ones, and a bounded number of closed ones as tombstones.

    Tombstones let a closed handle answer "closed" (a network error, and the predicates) rather
    than "not found"; past ``tombstones`` of them, the oldest are forgotten.
    """

    def __init__(self, *, max_handles: int, tombstones: int = 4096) -> None:
        self._live: dict[str, Resource] = {}
        self._closed: OrderedDict[str, Resource] = OrderedDict()
        self._max_handles = max_handles
        self._tombstones = tombstones
        self._discarded = False

    def __len__(self) -> int:
        return len(self._live)

    def register(self, resource: Resource, who: str) -> None:
        if len(self._live) >= self._max_handles:
            raise ResourceExhaustedError(who, "too many handles in this session", {"limit": self._max_handles})
        self._live[resource.handle] = resource

    def unregister(self, resource: Resource) -> None:
        self._live.pop(resource.handle, None)

    def check_room(self, count: int, who: str) -> None:
        """Raise before any socket is made if ``count`` more handles would pass the quota."""
        if len(self._live) + count > self._max_handles:
            raise ResourceExhaustedError(who, "too many handles in this session", {"limit": self._max_handles})

    def discard(self) -> None:
        """The session is being dropped: every handle is forgotten at once (no tombstones), so
        closing ten thousand resources does not file ten thousand tombstones (DESIGN §7 P7)."""
        self._discarded = True
        self._live.clear()
        self._closed.clear()

    def note_closed(self, resource: Resource) -> None:
        if self._discarded or self._live.pop(resource.handle, None) is None:
            return
        self._closed[resource.handle] = resource
        while len(self._closed) > self._tombstones:
            self._closed.popitem(last=False)

    def find(self, handle: object) -> Resource | None:
        if not isinstance(handle, str):
            return None
        return self._live.get(handle) or self._closed.get(handle)

    def lookup(self, handle: object, cls: type[R] | tuple[type[R], ...], who: str) -> R:
        """The resource named by ``handle``, of one of the given classes.

        Unknown (or another session's) handles are ``not-found``; a handle of the wrong kind is
        a contract violation naming the expected Racket predicate.
        """
        if not isinstance(handle, str) or not handle:
            raise contract_violation(who, _predicates(cls), handle)
        resource = self.find(handle)
        if resource is None:
            raise NotFoundError(who, "no such handle", {"handle": handle})
        if not isinstance(resource, cls):
            raise contract_violation(who, _predicates(cls), f"{handle} ({resource.kind})")
        return resource


def _predicates(cls: type[Resource] | tuple[type[Resource], ...]) -> str:
    classes = cls if isinstance(cls, tuple) else (cls,)
    names = [c.predicate for c in classes]
    return names[0] if len(names) == 1 else "(or/c " + " ".join(names) + ")"
