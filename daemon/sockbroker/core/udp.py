"""racket/udp on real sockets.

A :class:`UdpSocket` is one non-blocking datagram socket. Its lifecycle is :data:`.states.UDP`
(unbound, bound, connected, closed). The open states are *observed* from the kernel
(``getsockname`` / ``getpeername``) after every call that can change them — bind, connect,
disconnect, the first send (which binds an ephemeral port) — in :meth:`UdpSocket._settle`, the
one place a state changes; which operation each state allows is the table :data:`.states.UDP_REQUIRES`.

Every blocking operation waits for readiness and then performs its effect synchronously, so a
cancelled wait has no effect: a cancelled receive consumes no datagram, a cancelled send sends
nothing. Readiness is one shared ``add_reader`` / ``add_writer`` registration per socket and
direction, fanned out through a :class:`Signal`, so concurrent waiters never clobber each other.
The same primitives (:meth:`~UdpSocket.receive_ready`, :meth:`~UdpSocket.try_receive`,
:meth:`~UdpSocket.send_ready`, :meth:`~UdpSocket.perform_send`) serve ``sync``.

Decisions where Racket's documentation is silent or the kernel differs:

* A connected socket receives only from its peer: datagrams the kernel queued *before* the
  connect (it keeps them) are discarded on receive.
* ``udp-set-receive-buffer-size!`` above ``/proc/sys/net/core/rmem_max``: Linux would silently
  clamp; the docs require ``exn:fail:network``, so the daemon raises it as
  :class:`NetworkErrnoError` ``ENOBUFS`` — what BSD and macOS kernels return in that case.
* IPv6 sockets: TTL, multicast TTL and multicast loopback map to ``IPV6_UNICAST_HOPS``,
  ``IPV6_MULTICAST_HOPS`` and ``IPV6_MULTICAST_LOOP``; join, leave and the multicast interface
  are Racket's IPv4 options on every socket, and the kernel answers (Linux accepts them on an
  IPv6 socket, for its IPv4-mapped traffic).
* Addresses resolve as Racket resolves them: a hostname with any family, a multicast group and
  its interface as IPv4. The kernel then decides: an IPv6 address on an IPv4 socket is
  ``EAFNOSUPPORT``, an IPv4 address bound on an IPv6 socket ``EINVAL``, and an IPv6 socket
  connects and sends to an IPv4 address (as ``::ffff:a.b.c.d``). A name with answers of both
  families takes the first one of the socket's family (Racket takes the very first, so a
  ``localhost`` that lists ``::1`` first would fail on an IPv4 socket there).
* Largest datagram: 65,507 bytes on IPv4, 65,527 on IPv6; above is ``EMSGSIZE``, nothing sent.
  ``max`` of a receive is 0–65,535.
* Disconnecting keeps the socket's binding (bind's, or the one a send made): Linux drops an
  ephemeral port on disconnect, so the same address and port are bound again at once. A socket
  bound only by its connect is unbound again after the disconnect.
* ``udp-open-socket`` with a family hostname or port resolves them as Racket does (the first
  address's family); a port alone resolves the loopback name, which may well be IPv6.
* While a datagram stream is open, its reader drains the socket: datagrams go to the stream
  (plain receives may still win a race for one, never both). Each wake-up takes up to
  :data:`_BATCH` datagrams (``recvfrom`` in a loop: Python has no ``recvmmsg``, and one through
  ctypes measured no faster — the kernel's per-datagram work, not the system call, is the cost).
* A socket's receive buffer is raised to :data:`STREAM_RECEIVE_BUFFER` (4 MiB, capped by
  ``/proc/sys/net/core/rmem_max``, which the daemon reads and never writes) while a datagram
  stream is open, and set back when it ends: a stream is there for throughput, and a burst the
  loop cannot take at once waits in the kernel instead of being dropped there. A size the client
  set with ``udp-set-receive-buffer-size!`` wins: the daemon then leaves the buffer alone.
* ``kernel_dropped`` is the kernel's own count of the datagrams it dropped for the socket (a
  full receive buffer, a bad checksum), read with ``SO_MEMINFO`` when asked.
* The socket counts the datagrams it takes from the kernel (a stream's that its queue then drops
  included; a connected socket's foreign ones not) and the datagrams it sends, with their bytes
  (a truncated datagram counts whole), and carries the counts into its session's totals when it
  closes (:mod:`.traffic`). A datagram given back and received again counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._net import Signal, check_hostname, check_port, check_timeout, host_of, lendable, resolve
from .breaks import took
from .budget import Budget
from .errors import (
    ContractError,
    FailError,
    NetworkErrnoError,
    NetworkError,
    contract_violation,
    from_os_error,
    os_errors,
    show,
)
from .resources import Resource
from .states import UDP, UDP_REQUIRES, UdpState

if TYPE_CHECKING:
    from .limits import Limits
    from .sessions import Session, SessionPolicy
    from .traffic import Traffic

__all__ = [
    "check_receive_max",
    "MAX_BATCH_BYTES",
    "MAX_DATAGRAM",
    "MAX_RECEIVE",
    "STREAM_RECEIVE_BUFFER",
    "UdpSocket",
    "UdpState",
    "datagram_slice",
    "udp_open",
]

log = logging.getLogger(__name__)

#: The largest payload of one datagram, by address family.
MAX_DATAGRAM: dict[int, int] = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
#: The largest ``max`` a receive takes.
MAX_RECEIVE = 65535
#: Bytes (payloads, plus :data:`_BATCH_OVERHEAD` a datagram) past which a batch of a datagram
#: stream is cut (gRPC's default limit is 4 MiB).
MAX_BATCH_BYTES = 1 << 20
#: What a datagram costs in a batch besides its payload (its record or message), so that a batch
#: of empty datagrams is bounded too.
_BATCH_OVERHEAD = 64
#: Datagrams a stream's reader takes from the socket per wake-up before yielding the loop.
_BATCH = 256
#: The receive buffer (``SO_RCVBUF``) of a socket while a datagram stream is open, at most
#: ``/proc/sys/net/core/rmem_max``.
STREAM_RECEIVE_BUFFER = 4 << 20
#: Foreign datagrams (queued before a connect) skipped per receive before reporting "none yet".
_SKIP_LIMIT = 1024
#: ``getsockopt(SOL_SOCKET, SO_MEMINFO)``: the socket's memory counters, ``u32`` each; the
#: ninth (``SK_MEMINFO_DROPS``) counts the datagrams the kernel dropped for it.
_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55) if sys.platform.startswith("linux") else None
_MEMINFO_DROPS = 8
_RMEM_MAX = "/proc/sys/net/core/rmem_max"
#: Errors a UDP socket reports from ICMP: a datagram stream skips them, a receive raises them.
_SOFT_ERRORS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN})
_FAMILY_NAME = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
#: Racket's words for a resolver error, by what was resolved.
_CANT_RESOLVE = "can't resolve address"
_CANT_RESOLVE_GROUP = "can't resolve multicast address"
_CANT_RESOLVE_INTERFACE = "can't resolve interface address"

Datagram = tuple[bytes, int, str, int]
SockAddr = tuple[Any, ...]


#: (IPv4 option, IPv6 option) for each setting that both families have.
_TTL = ((socket.IPPROTO_IP, socket.IP_TTL), (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS))
_MULTICAST_TTL = ((socket.IPPROTO_IP, socket.IP_MULTICAST_TTL), (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS))
_MULTICAST_LOOP = ((socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP), (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP))


def datagram_slice(who: str, data: object, start: object, end: object) -> bytes:
    """``(subbytes data start end)`` with Racket's checks; ``None`` means the default."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise contract_violation(who, "bytes?", data)
    length = len(data)
    first = 0 if start is None else start
    last = length if end is None else end
    for value in (first, last):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise contract_violation(who, "exact-nonnegative-integer?", value)
    assert isinstance(first, int) and isinstance(last, int)
    if first > length:
        raise ContractError(
            who, "starting index is out of range", {"starting index": first, "valid range": f"[0, {length}]"}
        )
    if last < first or last > length:
        raise ContractError(
            who,
            "ending index is out of range",
            {"ending index": last, "starting index": first, "valid range": f"[{first}, {length}]"},
        )
    return bytes(data[first:last])


def check_receive_max(who: str, value: object) -> int:
    """A receive's ``max``: 0 to 65535, 65535 when absent."""
    amount = MAX_RECEIVE if value is None else value
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_RECEIVE:
        raise contract_violation(who, f"(integer-in 0 {MAX_RECEIVE})", value)
    return amount


def _check_byte(who: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise contract_violation(who, "byte?", value)
    return value


_libc: Any = None


def _syscall(name: str, *args: object) -> int:
    """A libc socket call on raw arguments; a failure is the OSError of its errno."""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        # (fd, const struct sockaddr *, socklen_t); sendto adds the buffer, its length and flags.
        libc.bind.argtypes = libc.connect.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
        libc.sendto.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint32,
        ]
        libc.sendto.restype = ctypes.c_ssize_t
        _libc = libc
    result = int(getattr(_libc, name)(*args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _disconnect(sock: socket.socket) -> None:
    """connect(fd, {AF_UNSPEC}): dissolve a UDP association (Python's connect cannot say it)."""
    address = ctypes.create_string_buffer(struct.pack("=H14x", socket.AF_UNSPEC), 16)
    _syscall("connect", sock.fileno(), address, 16)


def _family_of(sockaddr: SockAddr) -> int:
    return socket.AF_INET6 if len(sockaddr) == 4 else socket.AF_INET


def _raw_sockaddr(sockaddr: SockAddr) -> Any:
    """``struct sockaddr_in`` / ``sockaddr_in6`` of a resolved address, whatever the socket's family:
    Python builds a socket address from the socket's own family, Racket hands the kernel the
    resolved one, so the kernel (not a resolver) says what it thinks of an address of the other family."""
    if len(sockaddr) == 4:
        host, port, flowinfo, scope = sockaddr
        packed = (
            struct.pack("=H", socket.AF_INET6)
            + struct.pack("!HI", port, flowinfo)
            + socket.inet_pton(socket.AF_INET6, host)
            + struct.pack("=I", scope)
        )
    else:
        host, port = sockaddr
        packed = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_pton(socket.AF_INET, host)
        packed += bytes(16 - len(packed))
    return ctypes.create_string_buffer(packed, len(packed))


class _Stream:
    """The queue between a socket's reader and one datagram stream's consumer, bounded in bytes:
    its own ``capacity`` and the session's budget. Each datagram costs its payload plus
    ``overhead`` (its objects), so a flood of tiny datagrams is bounded too."""

    __slots__ = ("budget", "capacity", "dropped", "error", "items", "max_bytes", "overhead", "queued", "signal")

    def __init__(self, max_bytes: int, capacity: int, overhead: int, budget: Budget) -> None:
        self.max_bytes = max_bytes
        self.capacity = capacity
        self.overhead = overhead
        self.budget = budget
        #: Bytes the queue holds, as charged to the budget.
        self.queued = 0
        #: Datagrams this stream dropped because its queue (or the session's budget) was full.
        self.dropped = 0
        self.items: deque[tuple[bytes, str, int]] = deque()
        self.error: BaseException | None = None
        self.signal = Signal()

    def _cost(self, items: Iterable[tuple[bytes, str, int]]) -> int:
        return sum(len(item[0]) + self.overhead for item in items)

    def rooms(self) -> tuple[int, int]:
        """Bytes the queue may still take: (under its own capacity, under the session's budget
        and its parents'). A datagram is queued while it fits the first and the budget is not
        yet full — or the queue is empty: a stream is never starved by what other streams and
        ports of its session hold, as a waiting read takes a chunk past a full budget."""
        return self.capacity - self.queued, self.budget.room

    def queued_more(self, cost: int) -> None:
        """The reader appended datagrams of ``cost`` bytes (payloads and overheads) to ``items``."""
        self._charge(cost)

    def put_back(self, items: list[tuple[bytes, str, int]]) -> None:
        """Datagrams given back go first, room or not: they were the socket's already."""
        self.items.extendleft(reversed(items))
        self._charge(self._cost(items))

    def take_batch(self, max_batch_bytes: int) -> list[tuple[bytes, str, int]]:
        """The queued datagrams, oldest first, up to ``max_batch_bytes`` (each counts its payload
        plus :data:`_BATCH_OVERHEAD`); always one at least. The queue must not be empty."""
        items, overhead = self.items, self.overhead
        first = items.popleft()
        batch = [first]
        size = len(first[0]) + _BATCH_OVERHEAD
        freed = len(first[0]) + overhead
        while items:
            length = len(items[0][0])
            size += length + _BATCH_OVERHEAD
            if size > max_batch_bytes:
                break
            batch.append(items.popleft())
            freed += length + overhead
        self._charge(-freed)
        return batch

    def take_all(self) -> list[tuple[bytes, str, int]]:
        items = list(self.items)
        self.items.clear()
        self._charge(-self.queued)
        return items

    def _charge(self, cost: int) -> None:
        self.queued += cost
        if cost >= 0:
            self.budget.charge(cost)
        else:
            self.budget.release(-cost)


class UdpSocket(Resource):
    """One UDP socket (``udp?``)."""

    kind = "udp"
    prefix = "udp"
    predicate = "udp?"

    def __init__(
        self, sock: socket.socket, limits: Limits, policy: SessionPolicy, budget: Budget, traffic: Traffic
    ) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        #: The session's byte budget: a datagram stream's queue is charged to it.
        self.budget = budget
        #: The session's totals, where this socket's counts go when it closes (:mod:`.traffic`).
        self.traffic = traffic
        #: Datagrams (and their bytes) taken from the kernel and sent.
        self.datagrams_in = self.datagrams_out = self.bytes_in = self.bytes_out = 0
        self.opened = time.monotonic()
        self.fd = sock.fileno()
        self.family = socket.AddressFamily(sock.family)
        self.limits = limits
        #: The session's policy as it is at each operation (a reload changes it), checked on
        #: resolved addresses right before each send, bind, connect and join.
        self.policy = policy
        self.state = UdpState.UNBOUND
        self._peer: SockAddr | None = None
        #: The local address of the binding made by bind or a send (not by a connect): a
        #: disconnect that makes the kernel drop it (an ephemeral port) restores it.
        self._binding: SockAddr | None = None
        self.queue_dropped = 0
        self._kernel_dropped = 0
        #: The client set the receive buffer's size (udp-set-receive-buffer-size!): a stream leaves it.
        self._receive_buffer_chosen = False
        self.readable = Signal()
        self.writable = Signal()
        self._reading = False
        self._writing = False
        self._stream: _Stream | None = None
        #: Datagrams given back by cancelled receives: the next receive takes them first.
        self._returned: deque[tuple[bytes, str, int]] = deque()
        #: A client holds the socket's descriptor (:mod:`.channels`): the daemon only closes it.
        self.handed_off = False
        self._settle()

    # ── state ──────────────────────────────────────────────────────────────
    @property
    def closed(self) -> bool:
        return self.state is UdpState.CLOSED

    @property
    def bound(self) -> bool:
        return self.state in (UdpState.BOUND, UdpState.CONNECTED)

    @property
    def connected(self) -> bool:
        return self.state is UdpState.CONNECTED

    def _settle(self) -> None:
        """Observe the kernel's binding and association: every open-state change happens here."""
        if self.state is UdpState.CLOSED:
            return
        try:
            self._peer = tuple(self.sock.getpeername())
        except OSError:
            self._peer = None
        if self._peer is not None:
            self.state = UDP.next(self.state, "observe-connected")
            return
        local = tuple(self.sock.getsockname())
        if local[1] != 0:
            self.state = UDP.next(self.state, "observe-bound")
            self._binding = local
        else:
            self.state = UDP.next(self.state, "observe-unbound")
            self._binding = None

    def _require(self, operation: str, who: str) -> None:
        if self.state is UdpState.CLOSED:
            raise NetworkError(who, "udp socket is closed", {"socket": self.handle})
        if self.handed_off:
            raise FailError(who, "the socket is handed off: its client holds the descriptor", {"socket": self.handle})
        allowed, message = UDP_REQUIRES[operation]
        if self.state not in allowed:
            raise NetworkError(who, message, {"socket": self.handle})

    def ensure_open(self, who: str) -> None:
        self._require("any", who)

    @property
    def kernel_dropped(self) -> int:
        """Datagrams the kernel dropped for this socket (``SO_MEMINFO``); once closed, the last count."""
        self._count_kernel_drops()
        return self._kernel_dropped

    def _count_kernel_drops(self) -> None:
        if _SO_MEMINFO is None or self.closed:
            return
        start, end = 4 * _MEMINFO_DROPS, 4 * (_MEMINFO_DROPS + 1)
        with contextlib.suppress(OSError):
            raw = self.sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, end)
            if len(raw) >= end:
                self._kernel_dropped = int.from_bytes(raw[start:end], sys.byteorder)

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["bound"] = self.bound
        info["connected"] = self.connected
        info["family"] = _FAMILY_NAME.get(self.family, str(self.family))
        info["queue_dropped"] = min(self.queue_dropped, 2**32 - 1)
        info["kernel_dropped"] = min(self.kernel_dropped, 2**32 - 1)
        return info

    def addresses(self, who: str = "tcp-addresses") -> tuple[str, int, str, int]:
        """udp-addresses, which Racket defines as tcp-addresses (its errors name that)."""
        self.ensure_open(who)
        with os_errors(who, "could not get address"):
            local = self.sock.getsockname()
        local_host, local_port = (host_of(local), int(local[1])) if local[1] else ("0.0.0.0", 0)
        if self._peer is None:
            return local_host, local_port, "0.0.0.0", 0
        return local_host, local_port, host_of(self._peer), int(self._peer[1])

    # ── readiness (one registration per direction, shared by every waiter) ──
    def arm_readable(self) -> Signal:
        if not self._reading and not self.closed:
            self.loop.add_reader(self.fd, self._on_readable)
            self._reading = True
        return self.readable

    def arm_writable(self) -> Signal:
        if not self._writing and not self.closed:
            self.loop.add_writer(self.fd, self._on_writable)
            self._writing = True
        return self.writable

    async def wait_readable(self) -> None:
        await self.arm_readable().wait()

    async def wait_writable(self) -> None:
        await self.arm_writable().wait()

    def _stop_reading(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.fd)
            self._reading = False

    def _stop_writing(self) -> None:
        if self._writing:
            self.loop.remove_writer(self.fd)
            self._writing = False

    def _on_readable(self) -> None:
        stream = self._stream
        if stream is None:
            self._stop_reading()
        else:
            self._drain_into(stream)
        self.readable.fire()

    def _on_writable(self) -> None:
        self._stop_writing()
        self.writable.fire()

    def _poll(self, events: int) -> bool:
        poller = select.poll()
        poller.register(self.fd, events)
        return bool(poller.poll(0))

    def receive_ready(self) -> bool:
        """Would a receive not block? (True too when it would raise: closed or unbound.)"""
        if self.state not in (UdpState.BOUND, UdpState.CONNECTED) or self._returned:
            return True
        return self._poll(select.POLLIN)

    def send_ready(self) -> bool:
        """Would a send not block? (True too when it would raise: closed.)"""
        if self.closed:
            return True
        return self._poll(select.POLLOUT)

    # ── receiving ──────────────────────────────────────────────────────────
    def _recv_one(self) -> tuple[bytes, str, int] | None:
        """One whole datagram now — a given-back one first — or None when none waits. Raises OSError.
        It is read whole (so a cancelled receive can give all of it back)."""
        if self._returned:
            return self._returned.popleft()
        for _ in range(_SKIP_LIMIT):
            try:
                data, address = self.sock.recvfrom(MAX_RECEIVE)
            except (BlockingIOError, InterruptedError):
                return None
            if self._peer is not None and tuple(address[:2]) != self._peer[:2]:
                continue  # queued before the connect: a connected socket hears only its peer
            self.datagrams_in += 1
            self.bytes_in += len(data)
            return data, host_of(address), int(address[1])
        return None

    def give_back(self, datagrams: list[tuple[bytes, str, int]]) -> None:
        """Datagrams a cancelled receive (or an undelivered stream batch) took go back to the
        front of the socket's queue, in order; the next receive or stream gets them."""
        if self.closed or not datagrams:
            return
        if self._stream is not None:
            self._stream.put_back(datagrams)
            self._stream.signal.fire()
        else:
            self._returned.extendleft(reversed(datagrams))
        self.readable.fire()

    def try_receive(self, max_bytes: int, who: str = "udp-receive!-evt") -> Datagram | None:
        """Receive one datagram now, or None. Never blocks."""
        amount = check_receive_max(who, max_bytes)
        self._require("receive", who)
        with os_errors(who, "receive failed", {"socket": self.handle}):
            got = self._recv_one()
        if got is None:
            return None
        took(lambda: self.give_back([got]), size=len(got[0]) + self.limits.datagram_overhead)
        whole, host, port = got
        data = whole[:amount]
        return data, len(data), host, port

    async def receive(
        self, max_bytes: object = None, *, wait: bool = True, timeout: float | None = None
    ) -> Datagram | None:
        """udp-receive! (``wait``) / udp-receive!* : (data, count, host, port), or None."""
        who = "udp-receive!" if wait else "udp-receive!*"
        amount = check_receive_max(who, max_bytes)
        check_timeout(who, timeout)
        try:
            async with asyncio.timeout(timeout if wait else None):
                while True:
                    got = self.try_receive(amount, who)
                    if got is not None or not wait:
                        return got
                    await self.wait_readable()
        except TimeoutError:
            return None

    # ── sending ────────────────────────────────────────────────────────────
    def _check_size(self, who: str, data: bytes, details: dict[str, object]) -> None:
        limit = MAX_DATAGRAM.get(self.family, MAX_DATAGRAM[socket.AF_INET])
        if len(data) > limit:
            details = {**details, "length": len(data), "maximum": limit}
            raise NetworkErrnoError(who, "send failed", details, code=errno.EMSGSIZE)

    def perform_send(self, sockaddr: SockAddr | None, data: bytes, who: str = "udp-send-evt") -> bool:
        """Send now to ``sockaddr`` (resolved) or, when None, to the peer. False when it would block."""
        details: dict[str, object] = {"socket": self.handle}
        if sockaddr is None:
            self._require("send", who)
        else:
            self._require("send-to", who)
            details = {"address": host_of(sockaddr), "port number": sockaddr[1]}
        self._check_size(who, data, details)
        try:
            if sockaddr is None:
                self.sock.send(data)
            elif _family_of(sockaddr) == self.family:
                self.sock.sendto(data, sockaddr)
            else:
                address = _raw_sockaddr(sockaddr)
                _syscall("sendto", self.fd, data, len(data), 0, address, len(address))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise from_os_error(who, "send failed", exc, details) from None
        finally:
            if self.state is UdpState.UNBOUND:
                self._settle()  # the kernel bound an ephemeral port (even for a send it then refused)
        self.datagrams_out += 1
        self.bytes_out += len(data)
        return True

    async def _send_loop(
        self, who: str, sockaddr: SockAddr | None, data: bytes, wait: bool, timeout: float | None
    ) -> bool:
        try:
            async with asyncio.timeout(timeout if wait else None):
                while not self.perform_send(sockaddr, data, who):
                    if not wait:
                        return False
                    await self.wait_writable()
        except TimeoutError:
            return False
        return True

    async def send_to(
        self,
        hostname: object,
        port: object,
        data: object,
        start: object = None,
        end: object = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
        who: str | None = None,
    ) -> bool:
        """udp-send-to (``wait``) / udp-send-to* : True once queued, False if it would block/timed out."""
        who = who or ("udp-send-to" if wait else "udp-send-to*")
        check_hostname(who, hostname)
        check_port(who, port)
        payload = datagram_slice(who, data, start, end)
        check_timeout(who, timeout)
        self._require("send-to", who)
        self._check_size(who, payload, {"address": hostname, "port number": port})
        sockaddr = await self.destination(who, hostname, port)
        return await self._send_loop(who, sockaddr, payload, wait, timeout)

    async def destination(self, who: str, hostname: object, port: object) -> SockAddr:
        """Where a send-to goes: checked, resolved (any family), allowed by policy."""
        name = check_hostname(who, hostname)
        number = check_port(who, port)
        assert name is not None and number is not None
        sockaddr = await self._resolve_one(who, name, number, passive=False)
        self.policy.check_connect(who, host_of(sockaddr), number)
        self._check_multicast_send(who, sockaddr)
        return sockaddr

    def _check_multicast_send(self, who: str, sockaddr: SockAddr) -> None:
        """A datagram to an IPv4 multicast group goes out on the socket's multicast interface
        (``udp-multicast-set-interface!``; 0.0.0.0, the kernel's choice, until set): the policy
        must allow that interface too. It is judged at each send, not when it is set (setting it
        answers as Racket does; only sending uses it)."""
        host = sockaddr[0]
        # 224.0.0.0/4 on an IPv4 socket, looked at cheaply: this runs for every datagram sent
        if (
            host[:1] == "2"
            and len(sockaddr) == 2
            and self.family == socket.AF_INET
            and 224 <= int(host.partition(".")[0]) <= 239
        ):
            with os_errors(who, "getsockopt failed", {"socket": self.handle}):
                interface = self.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)
            self.policy.check_multicast_interface(who, socket.inet_ntoa(interface))

    async def send(
        self,
        data: object,
        start: object = None,
        end: object = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
        who: str | None = None,
    ) -> bool:
        """udp-send (``wait``) / udp-send* : to the connected peer."""
        who = who or ("udp-send" if wait else "udp-send*")
        payload = datagram_slice(who, data, start, end)
        check_timeout(who, timeout)
        self._require("send", who)
        self._check_size(who, payload, {"socket": self.handle})
        self.check_peer_send(who)
        return await self._send_loop(who, None, payload, wait, timeout)

    def check_peer_send(self, who: str) -> None:
        """Before a send to the connected peer: a multicast group's interface is judged now."""
        if self._peer is not None:
            self._check_multicast_send(who, self._peer)

    async def send_datagram(self, data: bytes, hostname: str | None, port: int | None) -> None:
        """One frame of a send stream: to ``hostname``:``port``, or to the peer when hostname is None."""
        who = "udp-send-stream"
        if hostname is None:
            await self.send(data, wait=True, who=who)
        else:
            await self.send_to(hostname, port, data, wait=True, who=who)

    # ── binding and association ────────────────────────────────────────────
    async def _resolve_one(self, who: str, hostname: str | None, port: int, *, passive: bool) -> SockAddr:
        """Where ``hostname`` is, in any family (Racket's lookup), for the kernel to judge: IP
        literals skip the resolver, no hostname is this socket's wildcard, and of a name's answers
        the first of this socket's family wins, else the very first."""
        if hostname is None:
            return ("::", port, 0, 0) if self.family == socket.AF_INET6 else ("0.0.0.0", port)
        if "%" not in hostname:
            try:
                literal = ipaddress.ip_address(hostname)
            except ValueError:
                pass
            else:
                return (str(literal), port) if literal.version == 4 else (str(literal), port, 0, 0)
        details = {"address": hostname, "port number": port}
        infos = await resolve(
            who, hostname, port, kind=socket.SOCK_DGRAM, passive=passive, details=details, what=_CANT_RESOLVE
        )
        if not infos:  # pragma: no cover - getaddrinfo never answers an empty list
            raise NetworkErrnoError(who, _CANT_RESOLVE, details, code=socket.EAI_NONAME, family="gai")
        chosen = next((info for info in infos if info[0] == self.family), infos[0])
        return tuple(chosen[4])

    def _to_kernel(self, call: str, sockaddr: SockAddr) -> None:
        """``bind`` or ``connect`` to a resolved address, of either family."""
        if _family_of(sockaddr) == self.family:
            getattr(self.sock, call)(sockaddr)
        else:
            address = _raw_sockaddr(sockaddr)
            _syscall(call, self.fd, address, len(address))

    async def bind(self, hostname: object, port: object, reuse: object = False) -> None:
        """udp-bind!: only once; ``reuse`` sets SO_REUSEADDR."""
        who = "udp-bind!"
        hostname = check_hostname(who, hostname, optional=True)
        port = check_port(who, port, listen=True)
        assert port is not None
        self._require("bind", who)
        details: dict[str, object] = {"address": hostname or "#f", "port number": port}
        sockaddr = await self._resolve_one(who, hostname, port, passive=True)
        self.policy.check_listen(who, host_of(sockaddr), port)
        self._require("bind", who)  # the state may have changed while resolving
        try:
            with os_errors(who, "can't bind as reusable" if reuse else "can't bind", details):
                if reuse:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._to_kernel("bind", sockaddr)
        finally:
            self._settle()

    async def connect(self, hostname: object, port: object) -> None:
        """udp-connect!: connect, re-connect, or (both None) disconnect."""
        who = "udp-connect!"
        hostname = check_hostname(who, hostname, optional=True)
        port = check_port(who, port, optional=True)
        if (hostname is None) != (port is None):
            raise ContractError(
                who,
                "last second and third arguments must be both #f or both non-#f",
                {"second argument": show(hostname), "third argument": show(port)},
            )
        self.ensure_open(who)
        if hostname is None or port is None:
            try:
                with os_errors(who, "can't disconnect", {"socket": self.handle}):
                    if self._peer is not None:
                        _disconnect(self.sock)
                        # Linux forgets an ephemeral port on disconnect; the binding stays, as Racket's
                        # "the binding of a bound socket cannot be changed" wants.
                        if self._binding is not None and self.sock.getsockname()[1] == 0:
                            self.sock.bind(self._binding)
            finally:
                self._settle()
            return
        details: dict[str, object] = {"address": hostname, "port number": port}
        sockaddr = await self._resolve_one(who, hostname, port, passive=False)
        self.policy.check_connect(who, host_of(sockaddr), port)
        self.ensure_open(who)
        try:
            with os_errors(who, "can't connect", details):
                self._to_kernel("connect", sockaddr)
        finally:
            self._settle()

    # ── options ────────────────────────────────────────────────────────────
    def _getopt(self, who: str, level: int, option: int) -> int:
        self.ensure_open(who)
        with os_errors(who, "getsockopt failed", {"socket": self.handle}):
            return self.sock.getsockopt(level, option)

    def _setopt(self, who: str, level: int, option: int, value: int | bytes) -> None:
        self.ensure_open(who)
        with os_errors(who, "setsockopt failed", {"socket": self.handle}):
            self.sock.setsockopt(level, option, value)

    def _by_family(self, v4: tuple[int, int], v6: tuple[int, int]) -> tuple[int, int]:
        return v6 if self.family == socket.AF_INET6 else v4

    def set_receive_buffer_size(self, size: object) -> None:
        """udp-set-receive-buffer-size!: above the system's maximum is ENOBUFS (Linux would clamp)."""
        who = "udp-set-receive-buffer-size!"
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise contract_violation(who, "exact-positive-integer?", size)
        self.ensure_open(who)
        limit = _rmem_max()
        if limit is not None and size > limit:
            raise NetworkErrnoError(
                who,
                "size is greater than the maximum allowed by the system",
                {"size": size, "maximum": limit},
                code=errno.ENOBUFS,
            )
        self._setopt(who, socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        self._receive_buffer_chosen = True

    def _byte_option(self, who: str, pair: tuple[tuple[int, int], tuple[int, int]]) -> int:
        return self._getopt(who, *self._by_family(*pair))

    def _set_byte_option(self, who: str, pair: tuple[tuple[int, int], tuple[int, int]], value: object) -> None:
        self._setopt(who, *self._by_family(*pair), _check_byte(who, value))

    def ttl(self) -> int:
        return self._byte_option("udp-ttl", _TTL)

    def set_ttl(self, ttl: object) -> None:
        self._set_byte_option("udp-set-ttl!", _TTL, ttl)

    def multicast_ttl(self) -> int:
        return self._byte_option("udp-multicast-ttl", _MULTICAST_TTL)

    def set_multicast_ttl(self, ttl: object) -> None:
        self._set_byte_option("udp-multicast-set-ttl!", _MULTICAST_TTL, ttl)

    def multicast_loopback(self) -> bool:
        level, option = self._by_family(*_MULTICAST_LOOP)
        return bool(self._getopt("udp-multicast-loopback?", level, option))

    def set_multicast_loopback(self, loopback: object) -> None:
        level, option = self._by_family(*_MULTICAST_LOOP)
        self._setopt("udp-multicast-set-loopback!", level, option, 1 if loopback else 0)

    def multicast_interface(self) -> str:
        """udp-multicast-interface: "0.0.0.0" when the kernel chooses."""
        who = "udp-multicast-interface"
        self.ensure_open(who)
        with os_errors(who, "getsockopt failed", {"socket": self.handle}):
            raw = self.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)
        return socket.inet_ntoa(raw[:4])

    @staticmethod
    async def _in_addr(who: str, hostname: str | None, what: str) -> bytes:
        """The ``in_addr`` of a multicast group or interface: Racket resolves both as IPv4 whatever
        the socket's family (an IPv6 one is ``gai_err=-9``, no lookup made); None is INADDR_ANY."""
        if hostname is None:
            return bytes(4)
        with contextlib.suppress(ValueError):
            return ipaddress.IPv4Address(hostname).packed
        infos = await resolve(
            who, hostname, 0, kind=socket.SOCK_DGRAM, family=socket.AF_INET, details={"address": hostname}, what=what
        )
        return socket.inet_aton(host_of(infos[0][4]))

    async def set_multicast_interface(self, hostname: object) -> None:
        who = "udp-multicast-set-interface!"
        hostname = check_hostname(who, hostname, optional=True)
        address = await self._in_addr(who, hostname, _CANT_RESOLVE)
        self._setopt(who, socket.IPPROTO_IP, socket.IP_MULTICAST_IF, address)

    async def multicast_join(self, group: object, interface: object) -> None:
        await self._membership("udp-multicast-join-group!", socket.IP_ADD_MEMBERSHIP, group, interface)

    async def multicast_leave(self, group: object, interface: object) -> None:
        await self._membership("udp-multicast-leave-group!", socket.IP_DROP_MEMBERSHIP, group, interface)

    async def _membership(self, who: str, option: int, group: object, interface: object) -> None:
        """Join or leave as Racket does: resolve the group and the interface (IPv4), then the
        kernel answers. The policy names the groups that may be joined, so it judges multicast
        addresses; any other address is no group, and the kernel refuses it without effect
        (``EINVAL`` to join, ``EADDRNOTAVAIL`` to leave)."""
        name = check_hostname(who, group)
        interface = check_hostname(who, interface, optional=True)
        address = await self._in_addr(who, name, _CANT_RESOLVE_GROUP)
        local = await self._in_addr(who, interface, _CANT_RESOLVE_INTERFACE)
        self.ensure_open(who)
        if ipaddress.IPv4Address(address).is_multicast:
            self.policy.check_multicast(who, socket.inet_ntoa(address))
        details = {"socket": self.handle, "group": group, "interface": interface or "#f"}
        with os_errors(who, "setsockopt failed", details):
            self.sock.setsockopt(socket.IPPROTO_IP, option, address + local)

    # ── datagram streams ───────────────────────────────────────────────────
    def stream_batches(
        self, max_bytes: object = None, *, max_batch_bytes: int = MAX_BATCH_BYTES
    ) -> AsyncGenerator[tuple[list[tuple[bytes, str, int]], int], None]:
        """Datagrams as they arrive, in batches of whatever is queued: ``(datagrams, dropped)``,
        until the socket closes.

        A reader drains the socket into a queue of at most ``limits.udp_stream_buffer`` bytes,
        charged to the session's budget; when the consumer lags and the queue (or the budget) is
        full, new datagrams are dropped and counted (``queue_dropped``). One stream per socket at
        a time. Argument and state errors are raised here, at the call; the stream itself starts
        on the first iteration.

        ``dropped`` counts the datagrams this stream has dropped so far. A batch holds at least
        one datagram and, past the first, no more than ``max_batch_bytes`` (payloads plus 64 bytes
        a datagram, for its record). While the stream is open the socket's receive buffer is
        raised (see the module's notes).
        """
        who = "udp-receive-stream"
        amount = self._check_stream(who, max_bytes)
        return self._stream_batches(amount, max_batch_bytes, who)

    def _check_stream(self, who: str, max_bytes: object) -> int:
        amount = check_receive_max(who, max_bytes)
        self._require("receive", who)
        if self._stream is not None:
            raise NetworkError(who, "a datagram stream is already open", {"socket": self.handle})
        return amount

    @contextlib.contextmanager
    def _claim_stream(self, max_bytes: int, who: str) -> Iterator[_Stream]:
        """Be the socket's one stream: its reader runs until the block ends, however it ends."""
        self._check_stream(who, max_bytes)
        limits = self.limits
        stream = _Stream(max_bytes, limits.udp_stream_buffer, limits.datagram_overhead, self.budget)
        stream.put_back(list(self._returned))
        self._returned.clear()
        self._stream = stream
        restore = self._raise_receive_buffer()
        try:
            self._drain_into(stream)  # what is already queued in the kernel
            self.arm_readable()
            yield stream
        finally:
            if self._stream is stream:
                self._stream = None
                # What the stream took but never sent stays the socket's: the next receive gets it.
                self._returned.extendleft(reversed(stream.take_all()))
                if not self.readable:
                    self._stop_reading()
            stream.take_all()
            if restore is not None and not self._receive_buffer_chosen and not self.closed:
                with contextlib.suppress(OSError):
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, restore)

    def _raise_receive_buffer(self) -> int | None:
        """Raise ``SO_RCVBUF`` to :data:`STREAM_RECEIVE_BUFFER` (at most ``rmem_max``) for a stream,
        unless the client chose its size or it is that large already; the size to set back after
        the stream, or None to leave it. Linux reports twice the size set (its bookkeeping), the
        default as it is: setting back half the reported size restores either."""
        if self._receive_buffer_chosen:
            return None
        limit = _rmem_max()
        target = STREAM_RECEIVE_BUFFER if limit is None else min(STREAM_RECEIVE_BUFFER, limit)
        try:
            current = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            if current >= target:
                return None
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, target)
        except OSError:  # the buffer stays as it was; the stream works all the same
            return None
        return max(1, current // 2)

    async def _stream_ready(self, stream: _Stream) -> bool:
        """Wait for queued datagrams: True when some are there, False once the socket is closed."""
        while not stream.items:
            if stream.error is not None:
                raise stream.error
            if self.closed:
                return False
            await stream.signal.wait()
        return True

    async def _stream_batches(
        self, max_bytes: int, max_batch_bytes: int, who: str
    ) -> AsyncGenerator[tuple[list[tuple[bytes, str, int]], int], None]:
        with self._claim_stream(max_bytes, who) as stream:
            while await self._stream_ready(stream):
                yield stream.take_batch(max_batch_bytes), stream.dropped

    def _drain_into(self, stream: _Stream) -> None:
        """Move what the kernel holds, up to :data:`_BATCH` datagrams, into the stream's queue,
        and drop (and count) what the queue has no room for. The hot path of a stream: one
        ``recvfrom`` per datagram and nothing else that a loop can hoist, the budget charged once."""
        recvfrom = self.sock.recvfrom
        items, limit, overhead = stream.items, stream.max_bytes, stream.overhead
        peer = None if self._peer is None else self._peer[:2]
        capacity_room, budget_room = stream.rooms()
        queued = dropped = taken = size = 0
        for _ in range(_BATCH):
            try:
                data, address = recvfrom(MAX_RECEIVE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _SOFT_ERRORS:
                    continue  # an ICMP report about an earlier send: not the stream's end
                stream.error = from_os_error("udp-receive-stream", "receive failed", exc, {"socket": self.handle})
                self._stop_reading()
                break
            if peer is not None and address[:2] != peer:
                continue  # queued before the connect: a connected socket hears only its peer
            taken += 1
            size += len(data)
            if len(data) > limit:
                data = data[:limit]
            cost = len(data) + overhead
            if queued + cost > capacity_room or (queued >= budget_room and items):
                dropped += 1
                continue
            items.append((data, host_of(address), address[1]))
            queued += cost
        if queued:
            stream.queued_more(queued)
        if dropped:
            self.queue_dropped += dropped
            stream.dropped += dropped
        if taken:
            self.datagrams_in += taken
            self.bytes_in += size
        if taken or stream.error is not None:
            stream.signal.fire()

    # ── closing ────────────────────────────────────────────────────────────
    def close(self, who: str = "udp-close") -> None:
        """udp-close: discards unreceived datagrams; a second close is a network error."""
        if self.closed:
            raise NetworkError(who, "udp socket was already closed", {"socket": self.handle})
        self.force_close()

    def hand_off(self) -> list[tuple[bytes, str, int]]:
        """A client takes the socket's descriptor (:mod:`.channels`): from now on every operation
        but close fails, and close shuts the socket down first, so the client's copy dies too.
        Returns the datagrams the daemon had taken from the kernel that no client has received
        (given back by cancelled receives), for the client."""
        who = "udp-open-channel"
        self._require("any", who)
        if self._stream is not None:
            raise FailError(who, "the socket has a datagram stream open: end it first", {"socket": self.handle})
        early, self._returned = list(self._returned), deque()
        self.handed_off = True
        self._stop_reading()
        self._stop_writing()
        self.readable.fire()
        self.writable.fire()
        return early

    def force_close(self) -> None:
        if self.state is UdpState.CLOSED:
            return
        self._count_kernel_drops()  # the last count, for a describe after the close
        self.traffic.carry(self.bytes_in, self.bytes_out, self.datagrams_in, self.datagrams_out)
        if self.handed_off:  # the client's copy of the socket dies with this one
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.state = UDP.next(self.state, "close")
        self._peer = None
        self._returned.clear()
        try:
            self._stop_reading()
            self._stop_writing()
        except Exception:  # a closed loop: the fd is released all the same
            log.exception("unwatching udp fd %s", self.fd)
        finally:
            try:
                self.sock.close()
            except OSError:  # pragma: no cover - close of a valid fd does not fail on Linux
                log.exception("closing udp fd %s", self.fd)
            stream = self._stream
            if stream is not None:
                stream.take_all()
                stream.signal.fire()
            self._forget()
            self.readable.fire()
            self.writable.fire()


def _rmem_max() -> int | None:
    try:
        with open(_RMEM_MAX, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


async def udp_open(
    session: Session,
    *,
    family_hostname: str | None = None,
    family_port: int | None = None,
    custodian: str | None = None,
) -> UdpSocket:
    """udp-open-socket: IPv4 unless ``family_hostname`` / ``family_port`` resolve otherwise."""
    who = "udp-open-socket"
    check_hostname(who, family_hostname, optional=True)
    check_port(who, family_port, optional=True)
    owner = session.custodian(custodian, who)
    owner.table.check_room(1, who)
    family = socket.AF_INET
    if family_hostname is not None or family_port is not None:
        details = {"address": family_hostname or "#f", "port number": family_port or "#f"}
        infos = await resolve(
            who, family_hostname, family_port or 0, kind=socket.SOCK_DGRAM, details=details, what=_CANT_RESOLVE
        )
        family = infos[0][0]
    with os_errors(who, "creation failed"):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    lendable(session.limits, who, sock)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        udp = UdpSocket(sock, session.limits, session.policy, session.budget, session.traffic)
    except BaseException:
        sock.close()
        raise
    try:
        return owner.adopt(udp, who)
    except BaseException:
        udp.force_close()
        raise
