"""What the daemon moved for its clients: bytes (and datagrams) from and to peers.

Each connection and UDP socket counts its own traffic where the daemon reads and writes its
socket (one integer add per system call, never per byte): ``bytes_in`` from the peer,
``bytes_out`` to it, and for UDP ``datagrams_in`` / ``datagrams_out``. A connection's relay
channel counts into the connection too (what it splices from and to the peer); a handed-off
socket's count stops at the hand-off, since its client moves the bytes from then on.

When a connection or a socket closes, or a connection's ports are both gone while it lingers
to send its last bytes, its counts so far are *carried* into its session's :class:`Traffic`, and
from there into its principal's, which outlives every session. So a session's total is what its
open handles count (:func:`live_traffic`) plus what its closed ones carried
(:func:`session_traffic`), a principal's is its own :class:`Traffic` plus its open sessions'
live counts, and nothing is lost when a handle closes or a session drops. A connection given
back to its listener by a cancelled accept (out of every custodian until it is accepted again)
carries its counts too, so no total ever goes down. Principals are counted by their name before
the first ``/`` (:func:`principal_label`): a delegated caller ``alice/dlg_…`` counts as ``alice``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .states import PortState
from .tcp import TcpInputPort, TcpOutputPort
from .udp import UdpSocket

if TYPE_CHECKING:
    from .sessions import Session

__all__ = ["Traffic", "live_traffic", "principal_label", "session_traffic"]


def principal_label(name: str) -> str:
    """The principal a caller's name belongs to: the part before the first ``/``."""
    return name.split("/", 1)[0]


class Traffic:
    """What closed handles carried: of one session, or of one principal (a session's ``parent``)."""

    __slots__ = ("bytes_in", "bytes_out", "datagrams_in", "datagrams_out", "parent")

    def __init__(self, parent: Traffic | None = None) -> None:
        self.parent = parent
        self.bytes_in = self.bytes_out = 0
        self.datagrams_in = self.datagrams_out = 0

    def carry(self, bytes_in: int, bytes_out: int, datagrams_in: int = 0, datagrams_out: int = 0) -> None:
        """A handle's counts, carried here and into the parent's totals."""
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.datagrams_in += datagrams_in
        self.datagrams_out += datagrams_out
        if self.parent is not None:
            self.parent.carry(bytes_in, bytes_out, datagrams_in, datagrams_out)


def live_traffic(session: Session) -> tuple[int, int]:
    """(bytes in, bytes out) that a session's open connections and UDP sockets count now, not yet
    carried. A connection counts once: through its input port while that is open, else through
    its output port."""
    bytes_in = bytes_out = 0
    for resource in session.root.walk():
        if isinstance(resource, TcpInputPort | TcpOutputPort):
            conn = resource.conn
            counted_here = isinstance(resource, TcpInputPort) or conn.in_port.state is not PortState.OPEN
            if counted_here and not conn.closed:
                bytes_in += conn.bytes_in
                bytes_out += conn.bytes_out
        elif isinstance(resource, UdpSocket) and not resource.closed:
            bytes_in += resource.bytes_in
            bytes_out += resource.bytes_out
    return bytes_in, bytes_out


def session_traffic(session: Session) -> tuple[int, int]:
    """(bytes in, bytes out) of a session over its life: :func:`live_traffic` plus what its closed
    handles carried."""
    bytes_in, bytes_out = live_traffic(session)
    return session.traffic.bytes_in + bytes_in, session.traffic.bytes_out + bytes_out
