"""racket/tcp on real sockets: listeners, connections, and their two ports.

A connection is one non-blocking socket watched by the event loop, with two bounded buffers:

* ``rx``: bytes from the peer not yet read by the client. When it holds ``port_receive_buffer``
  bytes the daemon stops reading the socket, so a peer flooding an unread port fills the kernel
  buffers and then blocks: memory stays bounded (backpressure, not unbounded buffering).
* ``tx``: bytes handed to the socket that the kernel has not taken yet. A writer waits while it
  holds more than ``port_send_buffer`` bytes.

On top sit Racket's ports. The output port keeps Racket's own block buffer (4096 bytes): bytes
wait in the daemon until a flush, a full buffer, a newline in ``line`` mode, every write in
``none`` mode, or close. The lifecycle of each port is :class:`PortState`; the connection's
socket is released when neither port is open (the table :data:`.states.CONNECTION`).

Every blocking operation waits on readiness and performs its effect synchronously afterwards, so
a cancelled wait has no effect: an accept that is cancelled accepts nothing, a read that is
cancelled consumes nothing.

A connection counts the bytes it reads from and writes to its socket (``bytes_in``,
``bytes_out``: one add per system call) and carries them into its session's totals when it
closes (:mod:`.traffic`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import re
import select
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ._net import Signal, can_accept, check_hostname, check_port, check_timeout, host_of, lendable, resolve
from .breaks import Source, took
from .budget import Budget
from .errors import (
    ContractError,
    FailError,
    NetworkErrnoError,
    NetworkError,
    contract_violation,
    from_os_error,
    os_errors,
)
from .resources import Custodian, Resource
from .states import CONNECTION, LISTENER, PORT, ConnectionAction, ListenerState, PortState

if TYPE_CHECKING:
    from .limits import Limits
    from .sessions import Session
    from .traffic import Traffic

__all__ = [
    "BufferMode",
    "Carrier",
    "Port",
    "PortState",
    "ReadMode",
    "TcpConnection",
    "TcpInputPort",
    "TcpListener",
    "TcpOutputPort",
    "tcp_connect",
    "tcp_listen",
]

log = logging.getLogger(__name__)

#: The largest read a client may ask for in one call.
MAX_READ = 16 * 1024 * 1024
#: How long a gracefully closed socket may take to hand its last bytes to a slow peer.
LINGER_SECONDS = 30.0
_RECV_CHUNK = 256 * 1024
#: Chunks from ``recv`` shorter than this are gathered together (:class:`_Received`).
_GATHER = 4096
_NEWLINE = re.compile(b"\n")  # searches any buffer (a view too) without copying it
#: Buffers one ``sendmsg`` hands the kernel at most (Linux takes up to 1024).
_SEND_VECTORS = 64


class Carrier(Protocol):
    """What carries a connection's bytes instead of its ports (:mod:`.channels`)."""

    #: ``relay`` or ``handoff``.
    mode: str

    def stop(self) -> None:
        """The connection is closing: stop carrying (called before its socket closes)."""


class _Queue:
    """Bytes queued for a peer, kept as the callers' own buffers (no copy): a write's bytes wait
    here as they came, and the kernel takes them with one ``sendmsg`` of many buffers. A caller
    gives its buffer up when it queues it (the doors' bytes are immutable). The deque is made on
    the first append: an idle connection does not pay for it (DESIGN §7 P6)."""

    __slots__ = ("_size", "_views")

    def __init__(self) -> None:
        self._views: deque[memoryview] | None = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, view: memoryview) -> None:
        if view:
            if self._views is None:
                self._views = deque()
            self._views.append(view)
            self._size += len(view)

    def send(self, sock: socket.socket) -> int:
        """Send what the kernel takes now; returns the count (raises what ``sendmsg`` raises)."""
        views = self._views
        if views is None:
            return 0
        sent = sock.sendmsg([views[i] for i in range(min(len(views), _SEND_VECTORS))])
        self._size -= sent
        left = sent
        while left:
            head = views[0]
            if len(head) > left:
                views[0] = head[left:]
                break
            left -= len(head)
            views.popleft()
        return sent


class _Received:
    """Bytes from the peer not yet read, kept as the chunks ``recv`` returned (no copy), so a read
    that takes whole chunks (a stream's, most often) hands them on as they are. A read that ends
    inside a chunk copies what it takes and leaves a view of the rest (that chunk stays alive
    until the rest is read: one chunk per connection at most); a read across chunks joins them
    (one copy). Short chunks are gathered into one ``bytearray`` as they come, so a peer that
    sends tiny segments costs a copy of each byte, not an object per segment. The deque is made
    when the first bytes come: an idle connection does not pay for it (DESIGN §7 P6)."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: deque[bytes | bytearray | memoryview] | None = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _deque(self) -> deque[bytes | bytearray | memoryview]:
        if self._chunks is None:
            self._chunks = deque()
        return self._chunks

    def append(self, data: bytes) -> None:
        chunks = self._deque()
        if len(data) < _GATHER and chunks and isinstance(chunks[-1], bytearray) and len(chunks[-1]) < _GATHER:
            chunks[-1] += data
        elif len(data) < _GATHER:
            chunks.append(bytearray(data))
        else:
            chunks.append(data)
        self._size += len(data)

    def prepend(self, data: bytes) -> None:
        """Bytes a read took go back in front of the rest."""
        if data:
            self._deque().appendleft(data)
            self._size += len(data)

    def take(self, n: int, *, peek: bool) -> bytes:
        """The first ``n`` bytes or fewer (all there are); removed unless ``peek``."""
        chunks = self._chunks
        if chunks is None:
            return b""
        pieces: list[bytes | bytearray | memoryview] = []
        left = n
        for chunk in chunks:
            if left <= 0:
                break
            pieces.append(chunk if len(chunk) <= left else memoryview(chunk)[:left])
            left -= len(pieces[-1])
        taken = n - left
        if not peek:
            self._size -= taken
            for _ in range(len(pieces) - 1):
                chunks.popleft()
            if pieces:
                last = chunks[0]
                if len(pieces[-1]) == len(last):
                    chunks.popleft()
                else:
                    chunks[0] = memoryview(last)[len(pieces[-1]) :]
        if len(pieces) == 1 and type(pieces[0]) is bytes:
            return pieces[0]
        return b"".join(pieces)


class BufferMode(enum.Enum):
    BLOCK = "block"
    LINE = "line"
    NONE = "none"


class ReadMode(enum.Enum):
    AVAIL = "avail"
    NOWAIT = "nowait"
    EXACT = "exact"


#: Racket's name for each read, by (mode, peek).
_READ_WHO = {
    (ReadMode.AVAIL, False): "read-bytes-avail!",
    (ReadMode.NOWAIT, False): "read-bytes-avail!*",
    (ReadMode.EXACT, False): "read-bytes",
    (ReadMode.AVAIL, True): "peek-bytes-avail!",
    (ReadMode.NOWAIT, True): "peek-bytes-avail!*",
    (ReadMode.EXACT, True): "peek-bytes",
}


def _parse_enum(enum_cls: type[enum.Enum], value: str, who: str, default: enum.Enum | None = None) -> enum.Enum:
    if value == "" and default is not None:
        return default
    try:
        return enum_cls(value)
    except ValueError:
        choices = " ".join(f"'{m.value}" for m in enum_cls)
        raise contract_violation(who, f"(or/c {choices})", value) from None


# ═════════════════════════════ connection ═════════════════════════════


class TcpConnection:
    """One connected socket and its buffers. Owned by its two ports. (Slots: an idle connection
    costs the daemon its objects and nothing else, DESIGN §7 P6.)"""

    __slots__ = (
        "_closing",
        "_linger",
        "_reading",
        "_shut_wr_pending",
        "_writing",
        "budget",
        "bytes_in",
        "bytes_out",
        "carrier",
        "closed",
        "fd",
        "in_port",
        "local",
        "loop",
        "opened",
        "out_port",
        "readable",
        "remote",
        "reset_unreported",
        "rx",
        "rx_eof",
        "rx_error",
        "rx_high",
        "rx_want",
        "sock",
        "traffic",
        "tx",
        "tx_error",
        "tx_high",
        "unsettled",
        "writable",
    )

    def __init__(self, sock: socket.socket, limits: Limits, budget: Budget, traffic: Traffic) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        #: The session's byte budget: ``rx`` and ``tx`` are charged to it (:mod:`.budget`).
        self.budget = budget
        #: The session's totals, where this connection's counts go when it closes (:mod:`.traffic`).
        self.traffic = traffic
        #: Bytes read from the peer and written to it (a relay channel's included), not yet carried.
        self.bytes_in = self.bytes_out = 0
        #: When it was made (``time.monotonic()``): the admin API's age of its ports.
        self.opened = time.monotonic()
        self.fd = sock.fileno()
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local = _sockname(sock.getsockname)
        self.remote = _sockname(sock.getpeername)
        self.rx = _Received()
        self.rx_eof = False
        self.rx_error: OSError | None = None
        #: The reader took the peer's reset (ECONNRESET) and no read has reported it yet: a
        #: writer that now gets EPIPE is told ECONNRESET, as it would be had nobody read.
        self.reset_unreported = False
        self.rx_high = limits.port_receive_buffer
        #: An exact read of more than rx_high bytes raises the bar while it waits.
        self.rx_want = 0
        self.tx = _Queue()
        self.tx_high = limits.port_send_buffer
        self.tx_error: OSError | None = None
        self.readable = Signal()
        self.writable = Signal()
        #: Bytes a read took whose reply is not settled yet: the next read waits (``.breaks``).
        self.unsettled = Source()
        self.closed = False
        self._reading = False
        self._writing = False
        self._shut_wr_pending = False
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None
        #: The channel that carries the socket's bytes (:mod:`.channels`): the ports are idle.
        self.carrier: Carrier | None = None
        self.in_port = TcpInputPort(self)
        self.out_port = TcpOutputPort(self, limits.port_buffer_size)
        self._start_reading()

    # ── reading ────────────────────────────────────────────────────────────
    def _start_reading(self) -> None:
        if self._reading or self.closed:
            return
        if self.budget.full:  # the session or the daemon holds all it may: read when there is room
            self.budget.when_room(self._on_room)
            return
        self.loop.add_reader(self.fd, self._on_readable)
        self._reading = True

    def _on_room(self) -> None:
        if not self.rx_done and len(self.rx) < max(self.rx_high, self.rx_want):
            self._start_reading()
        if self.tx:
            self.writable.fire()

    def _stop_reading(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.fd)
            self._reading = False

    def demand(self) -> None:
        """A reader is about to wait for bytes: read the socket for it even past a full budget, so a
        client reading a port always gets what its peer sent, whatever its other ports hold. The
        overshoot is one chunk per waiting read (an exact read: up to what it asked for)."""
        if not self._reading and not self.closed and not self.rx_done:
            self.loop.add_reader(self.fd, self._on_readable)
            self._reading = True

    @property
    def _demanded(self) -> bool:
        return bool(self.readable) and len(self.rx) < max(1, self.rx_want)

    def _on_readable(self) -> None:
        if self.budget.full and not self._demanded:  # full, maybe by another reader in this same turn
            self._stop_reading()
            self.budget.when_room(self._on_room)
            return
        try:
            data = self.sock.recv(_RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.rx_error = exc
            self.reset_unreported = exc.errno == errno.ECONNRESET
            self._stop_reading()
        else:
            if data:
                size = len(data)
                self.bytes_in += size
                self.rx.append(data)
                self.budget.charge(size)
                if len(self.rx) >= max(self.rx_high, self.rx_want):
                    self._stop_reading()
            else:
                self.rx_eof = True
                self._stop_reading()
        self.readable.fire()

    @property
    def rx_done(self) -> bool:
        """Nothing more will arrive from the peer (for the ports: a channel carries the rest)."""
        return self.rx_eof or self.rx_error is not None or self.closed or self.carrier is not None

    def take(self, n: int, *, peek: bool) -> bytes:
        data = self.rx.take(n, peek=peek)
        if not peek:
            self.budget.release(len(data))
            if not self.rx_done and len(self.rx) < max(self.rx_high, self.rx_want):
                self._start_reading()
        return data

    def want(self, n: int) -> None:
        self.rx_want = n
        if not self.rx_done and len(self.rx) < max(self.rx_high, n):
            self._start_reading()

    # ── writing ────────────────────────────────────────────────────────────
    def send(self, data: bytes | bytearray | memoryview, who: str) -> None:
        """Queue bytes for the peer: what the kernel takes now goes at once, the rest is queued as it
        is (``data`` is the connection's now, never copied). Raises the network error that broke
        the connection."""
        self._check_tx(who)
        if not data:
            return
        view = memoryview(data)
        if not self.tx:
            try:
                sent = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                raise self._write_error(self._tx_failed(exc)) from None
            self.bytes_out += sent
            view = view[sent:]
        if view:
            self.tx.append(view)
            self.budget.charge(len(view))
            if not self._writing:
                self.loop.add_writer(self.fd, self._on_writable)
                self._writing = True

    def _check_tx(self, who: str) -> None:
        if self.tx_error is not None:
            raise self._write_error(self.tx_error)
        if self.closed:
            raise FailError(who, "output port is closed", {"output port": self.out_port.handle})

    def _write_error(self, exc: OSError) -> NetworkErrnoError:
        # Racket's fd ports raise this without a ``who`` (``error writing to stream port``).
        return from_os_error(None, "error writing to stream port", exc, {"port": self.out_port.handle})

    def _on_writable(self) -> None:
        try:
            sent = self.tx.send(self.sock)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._tx_failed(exc)
            return
        self.bytes_out += sent
        self.budget.release(sent)
        if not self.tx:
            self._stop_writing()
            self._after_drain()
        if len(self.tx) <= self.tx_high and self.writable:
            self.writable.fire()

    def _stop_writing(self) -> None:
        if self._writing:
            self.loop.remove_writer(self.fd)
            self._writing = False

    def _tx_failed(self, exc: OSError) -> OSError:
        """The socket refused a send: the connection can send no more. Returns the error to report."""
        if exc.errno == errno.EPIPE and self.reset_unreported:
            self.reset_unreported = False
            exc = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        self.tx_error = exc
        self._drop_tx()
        self._stop_writing()
        self.writable.fire()
        self._after_drain()
        return exc

    def _after_drain(self) -> None:
        if self._shut_wr_pending:
            self._shut_wr_pending = False
            self._shutdown_write_now()
        if self._closing:
            self._finalize()

    @property
    def write_ready(self) -> bool:
        """``tx`` is under its bound, and under the budget's unless it is empty."""
        if self.tx_error is not None or self.closed or not self.tx or self.carrier is not None:
            return True
        return len(self.tx) <= self.tx_high and not self.budget.full

    async def drain(self, who: str) -> None:
        """Wait until the kernel has taken enough that ``tx`` is under its bounds."""
        while not self.write_ready:
            if len(self.tx) <= self.tx_high:
                self.budget.when_room(self._on_room)
            await self.writable.wait()
        self._check_tx(who)

    async def room(self) -> None:
        """Before queueing more: while this connection already has bytes queued and the budget is
        full, wait. (A connection with nothing queued may try the kernel, and queues at most what
        one write leaves; the doors bound the writes in flight.)"""
        while self.tx and self.budget.full and self.tx_error is None and not self.closed:
            self.budget.when_room(self._on_room)
            await self.writable.wait()

    def _drop_tx(self) -> None:
        self.budget.release(len(self.tx))
        self.tx = _Queue()

    def _drop_rx(self) -> None:
        self.budget.release(len(self.rx))
        self.rx = _Received()

    def shutdown_write(self) -> None:
        """Send FIN once every queued byte is out."""
        if self.tx:
            self._shut_wr_pending = True
        else:
            self._shutdown_write_now()

    def _shutdown_write_now(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    # ── channels ───────────────────────────────────────────────────────────
    def carry(self, carrier: Carrier) -> bytes:
        """From now on ``carrier`` moves the socket's bytes (:mod:`.channels`; nothing may be
        queued for the peer): the connection stops reading and writing it, and its ports only
        close. Returns the bytes read from the peer that no client has read, for the channel."""
        assert not self.tx and not self.closed, "a channel starts on a drained, open connection"
        self._stop_reading()
        self._stop_writing()
        self.carrier = carrier
        early = self.rx.take(len(self.rx), peek=True)
        self._drop_rx()
        self.readable.fire()
        self.writable.fire()
        return early

    # ── closing ────────────────────────────────────────────────────────────
    def close(self) -> None:
        """Graceful: release the socket once queued bytes are out (bounded by a linger time)."""
        if self.closed or self._closing:
            return
        self._closing = True
        self._stop_reading()
        self.carry_traffic()  # no port shows it any more, whether it lingers or not
        if self.tx and self.tx_error is None:
            self._linger = self.loop.call_later(LINGER_SECONDS, self.force_close)
        else:
            self._finalize()

    def force_close(self) -> None:
        self._finalize()

    def force_close_ports(self) -> None:
        """Both ports closed at once (a cancelled connect's connection: nobody will use it)."""
        self.in_port.force_close()
        self.out_port.force_close()

    def _finalize(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._stop_reading()
        self._stop_writing()
        if self.carrier is not None:
            self.carrier.stop()
        self.carry_traffic()
        try:
            self.sock.close()
        except OSError:  # pragma: no cover - close of a valid fd does not fail on Linux
            log.exception("closing fd %s", self.fd)
        # A closed connection frees its buffers at once, whichever way it was closed.
        self._drop_tx()
        self._drop_rx()
        self.budget.forget(self._on_room)
        self.readable.fire()
        self.writable.fire()

    def carry_traffic(self) -> None:
        """The bytes counted so far go into the session's totals (:mod:`.traffic`); counting
        starts again from zero (a lingering connection still sends its last bytes)."""
        self.traffic.carry(self.bytes_in, self.bytes_out)
        self.bytes_in = self.bytes_out = 0

    def port_closed(self) -> None:
        """A port changed state: apply the rule for the pair (:data:`.states.CONNECTION`). A
        carried connection closes whole: closing either port ends its channel."""
        if self.carrier is not None:
            self.force_close_ports()
            return
        action = CONNECTION[(self.in_port.state, self.out_port.state)]
        if action is ConnectionAction.FIN:
            self.shutdown_write()
        elif action is ConnectionAction.CLOSE:
            self._drop_rx()
            self.close()

    def give_back(self, data: bytes) -> None:
        """Bytes a cancelled read took go back to the front of the buffer."""
        if self.closed or self.in_port.state is not PortState.OPEN or self.carrier is not None:
            return
        self.rx.prepend(data)
        self.budget.charge(len(data))
        self.readable.fire()

    @property
    def open(self) -> bool:
        return self.in_port.state is PortState.OPEN and self.out_port.state is PortState.OPEN and not self.closed


def _sockname(getter: object) -> tuple[str, int]:
    try:
        address = getter()  # type: ignore[operator]
    except OSError:
        return ("0.0.0.0", 0)
    return host_of(address), int(address[1])


# ═════════════════════════════ ports ═════════════════════════════


class _Port(Resource):
    predicate = "tcp-port?"
    __slots__ = ("_mode", "conn", "state")

    def __init__(self, conn: TcpConnection) -> None:
        super().__init__()
        self.conn = conn
        self.state = PortState.OPEN
        self._mode = BufferMode.BLOCK

    @property
    def closed(self) -> bool:
        return self.state is not PortState.OPEN

    def ensure_open(self, who: str) -> None:
        """Racket's plain ``exn:fail`` for an operation on a closed port (``input port is closed``),
        and on a port whose connection a channel carries."""
        kind = "input port" if isinstance(self, TcpInputPort) else "output port"
        if self.state is not PortState.OPEN:
            raise FailError(who, f"{kind} is closed", {kind: self.handle})
        carrier = self.conn.carrier
        if carrier is not None:
            raise FailError(who, f"the connection is carried by a {carrier.mode} channel", {kind: self.handle})

    def _transition(self, event: str) -> None:
        was = self.state
        self.state = PORT.next(was, event)
        if was is PortState.OPEN:
            self._forget()
            if event != "force-close":
                self.conn.port_closed()

    def force_close(self) -> None:
        self._transition("force-close")
        self.conn.force_close()

    def addresses(self, who: str) -> tuple[str, int, str, int]:
        # The docs of tcp-addresses name exn:fail:network for a closed port (8.7: a contract error).
        if self.state is not PortState.OPEN:
            raise NetworkError(who, "port is closed", {"port": self.handle})
        return (*self.conn.local, *self.conn.remote)

    @property
    def buffer_mode(self) -> BufferMode:
        return self._mode

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["state"] = self.state.value
        info["buffer_mode"] = self.buffer_mode.value
        return info

    def abandon(self, who: str) -> None:
        raise NotImplementedError  # pragma: no cover


class TcpInputPort(_Port):
    __slots__ = ()
    kind = "tcp-input-port"
    prefix = "tin"
    predicate = "(and/c tcp-port? input-port?)"

    def set_buffer_mode(self, mode: str) -> None:
        who = "file-stream-buffer-mode"
        self.ensure_open(who)
        parsed = _parse_enum(BufferMode, mode, who)
        if parsed is BufferMode.LINE:
            raise ContractError(who, "'line buffering not supported for an input port", {"port": self.handle})
        self._mode = parsed  # type: ignore[assignment]

    async def read(self, max_bytes: int | None, mode: str, *, peek: bool, timeout: float | None) -> tuple[bytes, bool]:
        """Racket's read-bytes-avail! family. Returns (data, eof); EOF comes with no bytes."""
        parsed = _parse_enum(ReadMode, mode, "read-bytes-avail!", ReadMode.AVAIL)
        who = _READ_WHO[(parsed, peek)]  # type: ignore[index]
        amount = 65536 if max_bytes is None else max_bytes
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_READ:
            raise contract_violation(who, f"(integer-in 0 {MAX_READ})", max_bytes)
        check_timeout(who, timeout)
        self.ensure_open(who)
        try:
            async with asyncio.timeout(timeout):
                if self.conn.unsettled.busy:  # bytes in limbo come first: wait until they are settled
                    if parsed is ReadMode.NOWAIT:
                        return b"", False
                    await self.conn.unsettled.settled()
                if parsed is ReadMode.EXACT:
                    return await self._read_exact(amount, peek, who)
                return await self._read_avail(amount, peek, parsed is ReadMode.NOWAIT, who)
        except TimeoutError:
            return b"", False

    def _ready_or_raise(self, who: str) -> bool:
        """Is there something to report (bytes, EOF)? Raises on a closed port or a broken peer."""
        self.ensure_open(who)
        conn = self.conn
        if conn.rx:
            return True
        if conn.rx_error is not None:
            conn.reset_unreported = False
            # Racket's fd ports raise this without a ``who`` (``error reading from stream port``).
            raise from_os_error(None, "error reading from stream port", conn.rx_error, {"port": self.handle})
        return conn.rx_eof

    async def _read_avail(self, amount: int, peek: bool, nowait: bool, who: str) -> tuple[bytes, bool]:
        conn = self.conn
        while not self._ready_or_raise(who):
            if nowait or amount == 0:
                return b"", False
            conn.demand()
            await conn.readable.wait()
        if conn.rx:
            return self._take(amount, peek), False
        return b"", True

    def _take(self, amount: int, peek: bool) -> bytes:
        data = self.conn.take(amount, peek=peek)
        if data and not peek:
            conn = self.conn
            took(lambda: conn.give_back(data), conn.unsettled, len(data))
        return data

    async def _read_exact(self, amount: int, peek: bool, who: str) -> tuple[bytes, bool]:
        # Nothing is consumed until the whole amount (or EOF) is there: a cancelled exact read
        # leaves every byte for the next reader.
        conn = self.conn
        conn.want(amount)
        try:
            while True:
                ready = self._ready_or_raise(who)
                if len(conn.rx) >= amount or (ready and conn.rx_done):
                    break
                conn.demand()
                await conn.readable.wait()
        finally:
            conn.rx_want = 0
        if amount == 0:
            return b"", False
        if conn.rx:
            return self._take(amount, peek), False
        return b"", True

    def close(self) -> None:
        """close-input-port: idempotent, as in Racket."""
        self._transition("close")

    def abandon(self, who: str) -> None:
        self.close()


class TcpOutputPort(_Port):
    __slots__ = ("buffer", "buffer_size")
    kind = "tcp-output-port"
    prefix = "tout"
    predicate = "(and/c tcp-port? output-port?)"

    def __init__(self, conn: TcpConnection, buffer_size: int) -> None:
        super().__init__(conn)
        self.buffer = bytearray()
        self.buffer_size = buffer_size

    def set_buffer_mode(self, mode: str) -> None:
        who = "file-stream-buffer-mode"
        self.ensure_open(who)
        self._mode = _parse_enum(BufferMode, mode, who)  # type: ignore[assignment]
        if self._mode is BufferMode.NONE:
            self.flush_buffer(who)

    async def write(self, data: bytes | memoryview, *, flush: bool) -> int:
        """write-bytes: buffer per the mode, then wait until the peer's queue has room."""
        who = "write-bytes"
        self.ensure_open(who)
        # Bytes waiting for room count against the budget too, so that they hold back what the
        # session's gRPC door reads next (``Session.sending``) and what its ports read.
        budget = self.conn.budget
        budget.charge(len(data))
        try:
            await self.conn.room()
        finally:
            budget.release(len(data))
        self.ensure_open(who)
        if (
            flush
            or self._mode is BufferMode.NONE
            or len(self.buffer) + len(data) >= self.buffer_size
            or (self._mode is BufferMode.LINE and _NEWLINE.search(data) is not None)
        ):
            self.flush_buffer(who)
            self.conn.send(data, who)  # queued as it is: a big write is not copied
        else:
            self.buffer += data
        await self.conn.drain(who)
        return len(data)

    async def write_through(self, data: bytes | memoryview) -> None:
        """The streaming path: every frame goes straight to the socket."""
        who = "write-bytes"
        self.ensure_open(who)
        await self.conn.room()
        self.ensure_open(who)
        self.flush_buffer(who)
        self.conn.send(data, who)
        await self.conn.drain(who)

    async def flush(self) -> None:
        who = "flush-output"
        self.ensure_open(who)
        self.flush_buffer(who)
        await self.conn.drain(who)

    def flush_buffer(self, who: str) -> None:
        """Queue the block-buffered bytes for the peer now (no wait)."""
        if self.buffer:
            data, self.buffer = self.buffer, bytearray()
            self.conn.send(data, who)

    def close(self) -> None:
        """close-output-port: flush, then FIN (or full close when the input port is closed)."""
        self._close_as("close", "close-output-port")

    def abandon(self, who: str) -> None:
        self._close_as("abandon", who)

    def _close_as(self, event: str, who: str) -> None:
        if self.state is not PortState.OPEN:
            return
        try:
            self.flush_buffer(who)
        finally:
            self._transition(event)

    def force_close(self) -> None:
        self.buffer.clear()
        super().force_close()


#: Either port of a connection.
Port = TcpInputPort | TcpOutputPort


# ═════════════════════════════ listener ═════════════════════════════


class TcpListener(Resource):
    kind = "tcp-listener"
    prefix = "lst"
    predicate = "tcp-listener?"

    def __init__(self, socks: list[socket.socket], limits: Limits, budget: Budget, traffic: Traffic) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.socks = socks
        self.limits = limits
        self.budget = budget
        #: The session's totals, for the connections it accepts.
        self.traffic = traffic
        self.opened = time.monotonic()
        self.host = "0.0.0.0"
        self.port = socks[0].getsockname()[1]
        self.state = ListenerState.LISTENING
        self._armed = False
        self._turn = 0
        self.ready = Signal()
        #: Connections given back by cancelled accepts: the next accept takes them first.
        self._returned: deque[TcpConnection] = deque()

    @property
    def closed(self) -> bool:
        return self.state is ListenerState.CLOSED

    # readiness: one reader per socket, armed while someone waits, fired once
    def arm(self) -> Signal:
        if not self._armed and not self.closed:
            for sock in self.socks:
                self.loop.add_reader(sock.fileno(), self._on_ready)
            self._armed = True
        return self.ready

    async def wait_ready(self) -> None:
        await self.arm().wait()

    def _disarm(self) -> None:
        if self._armed:
            for sock in self.socks:
                self.loop.remove_reader(sock.fileno())
            self._armed = False

    def _on_ready(self) -> None:
        self._disarm()
        self.ready.fire()

    def accept_ready(self, who: str = "tcp-accept-ready?") -> bool:
        self.ensure_open(who)
        if self._returned:
            return True
        poller = select.poll()
        for sock in self.socks:
            poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))

    def try_accept(self, custodian: Custodian, who: str) -> TcpConnection | None:
        """Accept one waiting client now, or None. The new ports are in ``custodian`` on return."""
        self.ensure_open(who)
        custodian.check_usable(who)
        custodian.table.check_room(2, who)
        if self._returned:
            conn = self._returned.popleft()
            custodian.adopt(conn.in_port, who)
            custodian.adopt(conn.out_port, who)
            self._took(conn)
            return conn
        count = len(self.socks)
        for i in range(count):
            sock = self.socks[(self._turn + i) % count]
            can_accept(self.limits, who, sock)
            try:
                client, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:
                raise from_os_error(who, "accept failed", exc) from None
            self._turn = (self._turn + i + 1) % count
            conn = adopt_connection(client, custodian, self.limits, self.budget, self.traffic, who)
            self._took(conn)
            return conn
        return None

    def _took(self, conn: TcpConnection) -> None:
        took(lambda: self.give_back(conn))

    def give_back(self, conn: TcpConnection) -> None:
        """A cancelled accept's connection goes back to the front of the queue, its ports out of
        their custodian; the next accept adopts them again. Closed meanwhile: nothing to give."""
        if not conn.open:
            return
        for port in (conn.in_port, conn.out_port):
            if port.custodian is not None:
                port.custodian.release(port)
        conn.carry_traffic()  # out of every custodian until it is accepted again
        if self.closed:
            conn.force_close()
            return
        self._returned.appendleft(conn)
        self.ready.fire()

    async def accept(
        self, custodian: Custodian, timeout: float | None, who: str = "tcp-accept"
    ) -> TcpConnection | None:
        """tcp-accept; None when ``timeout`` passes first."""
        check_timeout(who, timeout)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    conn = self.try_accept(custodian, who)
                    if conn is not None:
                        return conn
                    await self.wait_ready()
        except TimeoutError:
            return None

    def addresses(self, who: str) -> tuple[str, int, str, int]:
        self.ensure_open(who)
        return (self.host, self.port, "0.0.0.0", 0)

    def ensure_open(self, who: str) -> None:
        if self.closed:
            raise NetworkError(who, "listener is closed", {"listener": self.handle})

    def close(self, who: str = "tcp-close") -> None:
        """tcp-close: a second close is a network error, as the docs say."""
        self.ensure_open(who)
        self.force_close()

    def force_close(self) -> None:
        if self.closed:
            return
        self.state = LISTENER.next(self.state, "force-close")
        while self._returned:
            self._returned.popleft().force_close()
        self._disarm()
        for sock in self.socks:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                log.exception("closing listener socket")
        self._forget()
        self.ready.fire()


def adopt_connection(
    sock: socket.socket, custodian: Custodian, limits: Limits, budget: Budget, traffic: Traffic, who: str
) -> TcpConnection:
    """Wrap a connected socket and register its two ports; the socket never leaks."""
    try:
        conn = TcpConnection(sock, limits, budget, traffic)
        custodian.adopt(conn.in_port, who)
        custodian.adopt(conn.out_port, who)
    except BaseException:
        try:
            conn.force_close()
        except NameError:
            sock.close()
        raise
    return conn


# ═════════════════════════════ operations ═════════════════════════════


async def tcp_listen(
    session: Session,
    *,
    port: int,
    backlog: int | None,
    reuse: bool,
    hostname: str | None,
    custodian: str | None,
) -> TcpListener:
    who = "tcp-listen"
    check_port(who, port, listen=True)
    if backlog is None:
        backlog = 4
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 0:
        raise contract_violation(who, "exact-nonnegative-integer?", backlog)
    check_hostname(who, hostname, optional=True)
    owner = session.custodian(custodian, who)
    owner.table.check_room(1, who)
    details = {"hostname": hostname or "#f", "port number": port}
    infos = await resolve(
        who, hostname, port, kind=socket.SOCK_STREAM, passive=True, details=details, what="address-resolution error"
    )
    seen: set[tuple[int, str]] = set()
    addresses = []
    for family, _, _, _, sockaddr in infos:
        key = (family, host_of(sockaddr))
        if key not in seen:
            seen.add(key)
            addresses.append((family, sockaddr))
    for _, sockaddr in addresses:
        session.policy.check_listen(who, host_of(sockaddr), port)
    # Port 0 with several addresses: every socket takes the port the first one got.
    last_exc: OSError | None = None
    for _attempt in range(8):
        try:
            socks = _bind_all(addresses, port, backlog, reuse, session.limits, who)
        except OSError as exc:
            last_exc = exc
            if port == 0 and len(addresses) > 1 and exc.errno == errno.EADDRINUSE:
                continue
            break
        listener = TcpListener(socks, session.limits, session.budget, session.traffic)
        if hostname is not None:
            listener.host = host_of(socks[0].getsockname())
        try:
            return owner.adopt(listener, who)
        except BaseException:
            listener.force_close()
            raise
    assert last_exc is not None
    raise from_os_error(who, "listen failed", last_exc, details)


def _bind_all(
    addresses: Sequence[tuple[int, tuple]],  # type: ignore[type-arg]
    port: int,
    backlog: int,
    reuse: bool,
    limits: Limits,
    who: str,
) -> list[socket.socket]:
    socks: list[socket.socket] = []
    bound = port
    try:
        for family, sockaddr in addresses:
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT and len(addresses) > 1:
                    continue  # no IPv6 here: its addresses are ignored, as Racket does
                raise
            socks.append(sock)
            lendable(limits, who, sock)
            sock.setblocking(False)
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((sockaddr[0], bound, *sockaddr[2:]))
            sock.listen(backlog)
            if bound == 0:
                bound = sock.getsockname()[1]
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if not socks:
        raise OSError(errno.EAFNOSUPPORT, "no usable address family")
    return socks


async def tcp_connect(
    session: Session,
    *,
    hostname: str,
    port: int,
    local_hostname: str | None,
    local_port: int | None,
    custodian: str | None,
    timeout: float | None,
) -> TcpConnection:
    who = "tcp-connect"
    check_hostname(who, hostname)
    check_port(who, port)
    check_hostname(who, local_hostname, optional=True)
    check_port(who, local_port, optional=True)
    check_timeout(who, timeout)
    if local_hostname is not None and local_port is None:
        raise ContractError(
            who,
            "no local port number supplied when local hostname was supplied",
            {"local hostname": local_hostname},
        )
    owner = session.custodian(custodian, who)
    owner.table.check_room(2, who)
    details = {"hostname": hostname, "port number": port}
    try:
        async with asyncio.timeout(timeout):
            sock = await _connect_any(session, who, hostname, port, local_hostname, local_port, details)
    except TimeoutError:
        raise NetworkErrnoError(who, "connection failed", details, code=errno.ETIMEDOUT) from None
    conn = adopt_connection(sock, owner, session.limits, session.budget, session.traffic, who)
    took(conn.force_close_ports)
    return conn


async def _connect_any(
    session: Session,
    who: str,
    hostname: str,
    port: int,
    local_hostname: str | None,
    local_port: int | None,
    details: dict[str, object],
) -> socket.socket:
    infos = await resolve(who, hostname, port, kind=socket.SOCK_STREAM, details=details)
    local: dict[int, tuple] = {}  # type: ignore[type-arg]
    if local_hostname is not None:
        assert local_port is not None
        for family, _, _, _, sockaddr in await resolve(
            who,
            local_hostname,
            local_port,
            kind=socket.SOCK_STREAM,
            passive=True,
            details={"local hostname": local_hostname},
        ):
            session.policy.check_listen(who, host_of(sockaddr), local_port)
            local.setdefault(family, sockaddr)
    loop = asyncio.get_running_loop()
    allowed = []
    denial: Exception | None = None
    for family, _, _, _, sockaddr in infos:
        try:
            session.policy.check_connect(who, host_of(sockaddr), port)
        except Exception as exc:
            denial = denial or exc
            continue
        allowed.append((family, sockaddr))
    if not allowed and denial is not None:
        raise denial
    last: OSError | None = None
    for family, sockaddr in allowed:
        if local_hostname is not None and family not in local:
            continue
        with os_errors(who, "connection failed", details):
            sock = socket.socket(family, socket.SOCK_STREAM)
        lendable(session.limits, who, sock)
        try:
            sock.setblocking(False)
            if local_port is not None:
                wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
                sock.bind(local.get(family, (wildcard, local_port)))
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if last is None:
        last = OSError(errno.EADDRNOTAVAIL, "no address of the local hostname's family")
    raise from_os_error(who, "connection failed", last, details)
