"""Every lifecycle of the core, as tables: everything that changes a state goes through here.

After h11's ``_state.py``: each lifecycle is a :class:`Lifecycle` — ``state → event → next
state`` — and an event a state does not list is a :class:`StateError` naming the lifecycle, the
state and the event (a bug in the daemon, never a client's mistake: the operations check what a
client may do, with Racket's errors, before they move a state).

=============  =========================================================================
lifecycle      states
=============  =========================================================================
PORT           a TCP input or output port: open → closed, or (output) open → abandoned
CONNECTION     the socket under a pair of ports: what it does when a port changes state
LISTENER       listening → closed
UDP            unbound → bound → connected ⇄ bound; any → closed (observed from the kernel)
CUSTODIAN      active → shut-down
SESSION        open: leased ⇄ attached; → grace (waits for a resume) → leased; → dropped
CALL           running → delivered | given-back; delivered → given-back (late CancelCall)
=============  =========================================================================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "CALL",
    "CONNECTION",
    "CUSTODIAN",
    "LISTENER",
    "PORT",
    "SESSION",
    "UDP",
    "UDP_REQUIRES",
    "CallState",
    "ConnectionAction",
    "CustodianState",
    "Lifecycle",
    "ListenerState",
    "PortState",
    "SessionState",
    "StateError",
    "UdpState",
]

S = TypeVar("S", bound=enum.Enum)


class StateError(RuntimeError):
    """A transition the table does not have: a bug in the daemon, never a client's mistake."""

    def __init__(self, lifecycle: str, state: enum.Enum, event: str) -> None:
        super().__init__(f"{lifecycle}: no transition from {state.value!r} on {event!r}")
        self.lifecycle, self.state, self.event = lifecycle, state, event


@dataclass(frozen=True)
class Lifecycle(Generic[S]):
    """One state machine: ``transitions[state][event]`` is the next state."""

    name: str
    transitions: Mapping[S, Mapping[str, S]]

    def next(self, state: S, event: str) -> S:
        try:
            return self.transitions[state][event]
        except KeyError:
            raise StateError(self.name, state, event) from None

    def allows(self, state: S, event: str) -> bool:
        return event in self.transitions.get(state, {})


# ── TCP ports and their connection ─────────────────────────────────────────────────────────
class PortState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"
    #: Output ports only: closed without sending FIN until the input port closes too.
    ABANDONED = "abandoned"


PORT: Lifecycle[PortState] = Lifecycle(
    "tcp port",
    {
        PortState.OPEN: {"close": PortState.CLOSED, "abandon": PortState.ABANDONED, "force-close": PortState.CLOSED},
        # close-input-port / close-output-port are idempotent in Racket; a shutdown closes all.
        PortState.CLOSED: {"close": PortState.CLOSED, "force-close": PortState.CLOSED},
        PortState.ABANDONED: {"close": PortState.ABANDONED, "force-close": PortState.CLOSED},
    },
)


class ConnectionAction(enum.Enum):
    NOTHING = "nothing"
    #: Half-close: send FIN once queued bytes are out; the peer reads EOF and may still write.
    FIN = "fin"
    #: Release the socket (gracefully: queued bytes still go out, bounded by a linger time).
    CLOSE = "close"


#: (input port state, output port state) → what the connection's socket does.
CONNECTION: Mapping[tuple[PortState, PortState], ConnectionAction] = {
    (PortState.OPEN, PortState.OPEN): ConnectionAction.NOTHING,
    (PortState.OPEN, PortState.CLOSED): ConnectionAction.FIN,
    (PortState.OPEN, PortState.ABANDONED): ConnectionAction.NOTHING,  # tcp-abandon-port: no FIN yet
    (PortState.CLOSED, PortState.OPEN): ConnectionAction.NOTHING,  # TCP has no "no longer reading" state
    (PortState.CLOSED, PortState.CLOSED): ConnectionAction.CLOSE,
    (PortState.CLOSED, PortState.ABANDONED): ConnectionAction.CLOSE,  # the FIN goes now
}


# ── listeners ──────────────────────────────────────────────────────────────────────────────
class ListenerState(enum.Enum):
    LISTENING = "listening"
    CLOSED = "closed"


LISTENER: Lifecycle[ListenerState] = Lifecycle(
    "tcp listener",
    {
        ListenerState.LISTENING: {"close": ListenerState.CLOSED, "force-close": ListenerState.CLOSED},
        ListenerState.CLOSED: {"force-close": ListenerState.CLOSED},
    },
)


# ── UDP sockets ────────────────────────────────────────────────────────────────────────────
class UdpState(enum.Enum):
    UNBOUND = "unbound"
    BOUND = "bound"
    CONNECTED = "connected"
    CLOSED = "closed"


#: The open states are observed from the kernel (getsockname / getpeername) after every call that
#: can change them; ``observe-*`` events are what was seen.
UDP: Lifecycle[UdpState] = Lifecycle(
    "udp socket",
    {
        state: {
            "observe-unbound": UdpState.UNBOUND,
            "observe-bound": UdpState.BOUND,
            "observe-connected": UdpState.CONNECTED,
            "close": UdpState.CLOSED,
        }
        for state in (UdpState.UNBOUND, UdpState.BOUND, UdpState.CONNECTED)
    }
    | {UdpState.CLOSED: {"close": UdpState.CLOSED}},
)

#: operation → (open states that allow it, what the network error says in the others). A closed
#: socket refuses every operation ("udp socket is closed").
UDP_REQUIRES: Mapping[str, tuple[frozenset[UdpState], str]] = {
    "bind": (frozenset({UdpState.UNBOUND}), "udp socket is already bound"),
    "send-to": (frozenset({UdpState.UNBOUND, UdpState.BOUND}), "udp socket is connected"),
    "send": (frozenset({UdpState.CONNECTED}), "udp socket is not connected"),
    "receive": (frozenset({UdpState.BOUND, UdpState.CONNECTED}), "udp socket is not bound"),
    "any": (frozenset({UdpState.UNBOUND, UdpState.BOUND, UdpState.CONNECTED}), ""),
}


# ── custodians ─────────────────────────────────────────────────────────────────────────────
class CustodianState(enum.Enum):
    ACTIVE = "active"
    SHUT_DOWN = "shut-down"


CUSTODIAN: Lifecycle[CustodianState] = Lifecycle(
    "custodian",
    {
        CustodianState.ACTIVE: {"shutdown": CustodianState.SHUT_DOWN},
        CustodianState.SHUT_DOWN: {"shutdown": CustodianState.SHUT_DOWN},
    },
)


# ── sessions ───────────────────────────────────────────────────────────────────────────────
class SessionState(enum.Enum):
    #: Alive while its lease runs; any call renews it.
    LEASED = "leased"
    #: Alive while at least one attachment is open.
    ATTACHED = "attached"
    #: Lost its attachment or its lease, and waits ``grace_seconds`` for ``Sessions.Resume``.
    GRACE = "grace"
    DROPPED = "dropped"


SESSION: Lifecycle[SessionState] = Lifecycle(
    "session",
    {
        SessionState.LEASED: {
            "attach": SessionState.ATTACHED,
            "lease-expired": SessionState.DROPPED,
            "grace": SessionState.GRACE,  # the lease ran out, and the session has a grace period
            "resume": SessionState.LEASED,  # resumed before the daemon saw the old attachment go
            "drop": SessionState.DROPPED,
        },
        SessionState.ATTACHED: {
            "attach": SessionState.ATTACHED,
            "detach-last": SessionState.LEASED,  # detached on purpose: the lease holds it now
            "detach": SessionState.ATTACHED,  # another attachment is still open
            "break": SessionState.DROPPED,  # an attachment broke: the client is gone
            "grace": SessionState.GRACE,  # an attachment broke, and the session has a grace period
            "resume": SessionState.LEASED,  # the attachments before the resume no longer hold it
            "drop": SessionState.DROPPED,
        },
        SessionState.GRACE: {
            "resume": SessionState.LEASED,
            "drop": SessionState.DROPPED,
        },
        SessionState.DROPPED: {"drop": SessionState.DROPPED, "break": SessionState.DROPPED},
    },
)


# ── calls (see .breaks) ────────────────────────────────────────────────────────────────────
class CallState(enum.Enum):
    RUNNING = "running"
    DELIVERED = "delivered"
    GIVEN_BACK = "given-back"


CALL: Lifecycle[CallState] = Lifecycle(
    "call",
    {
        CallState.RUNNING: {"deliver": CallState.DELIVERED, "give-back": CallState.GIVEN_BACK},
        CallState.DELIVERED: {"give-back": CallState.GIVEN_BACK},
        CallState.GIVEN_BACK: {},
    },
)
