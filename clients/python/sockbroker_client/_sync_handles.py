"""The blocking client's handles: one explicit method per method of the async handle.

Each wraps the async handle of the same kind (``_async``) and runs its coroutine of the same name
on the broker's loop thread. ``with handle:`` closes it on leaving (a custodian is shut down).
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._channel import ChannelSocket
from ._client import Custodian as _AsyncCustodian
from ._client import InputPort as _AsyncInputPort
from ._client import Listener as _AsyncListener
from ._client import OutputPort as _AsyncOutputPort
from ._client import UdpSocket as _AsyncUdpSocket
from ._client import _Eof, _Handle
from ._errors import BrokerError
from ._sync_streams import BlockingDatagramStream, Feed, Frame

if TYPE_CHECKING:
    from ._sync import Broker

__all__ = [
    "BLOCKING_CLASSES",
    "BlockingCustodian",
    "BlockingHandle",
    "BlockingInputPort",
    "BlockingListener",
    "BlockingOutputPort",
    "BlockingUdpSocket",
    "ReceiveResult",
    "call_arg",
    "handle_of",
    "optional_handle",
]

T = TypeVar("T")

#: udp-receive!'s result: (count, host, port, data), or all None when nothing came.
ReceiveResult = tuple[int, str, int, bytes] | tuple[None, None, None, None]


def handle_of(value: BlockingHandle | str) -> str:
    """A handle argument as the string the async API takes."""
    return value.handle if isinstance(value, BlockingHandle) else value


def optional_handle(value: BlockingHandle | str | None) -> str | None:
    return None if value is None else handle_of(value)


def call_arg(value: object) -> object:
    """A ``call`` argument: blocking handles as their handle strings, everything else as is."""
    return value.handle if isinstance(value, BlockingHandle) else value


class BlockingHandle:
    """What every blocking handle has: its handle string, its broker, describe and addresses.

    ``with handle:`` closes it on leaving the block (a custodian is shut down); a handle closed
    already inside the block is not an error there.
    """

    def __init__(self, broker: Broker, target: _Handle) -> None:
        self.broker = broker
        self._async = target

    @property
    def handle(self) -> str:
        return self._async.handle

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.handle}>"

    def __str__(self) -> str:
        return self.handle

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.broker._runner.run(coro)

    def describe(self) -> dict[str, Any]:
        """Kind, state and custodian of this handle."""
        return self._run(self._async.describe())

    def addresses(self, port_numbers: bool = False) -> tuple[Any, ...]:
        """tcp-addresses / udp-addresses of this handle."""
        return self._run(self._async.addresses(port_numbers))

    def _close_on_exit(self) -> None:
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.broker._runner.closed:
            return  # the session is closed, and every handle with it
        try:
            self._close_on_exit()
        except BrokerError:
            if not self.describe().get("closed"):
                raise


class BlockingCustodian(BlockingHandle):
    """A custodian (Racket's resource group); ``with`` shuts it down on leaving."""

    _async: _AsyncCustodian

    def __init__(self, broker: Broker, target: _AsyncCustodian) -> None:
        super().__init__(broker, target)

    def shutdown_all(self) -> None:
        """custodian-shutdown-all."""
        self._run(self._async.shutdown_all())

    def delegate(
        self,
        *,
        expires_seconds: float,
        allow_connect: Sequence[str] = (),
        allow_listen: Sequence[str] = (),
        allow_ports: Sequence[str] = (),
        allow_multicast: Sequence[str] = (),
        allow_multicast_interface: Sequence[str] = (),
        allow_handoff: bool = False,
    ) -> str:
        """A bearer token for sessions under this custodian (:meth:`AsyncBroker.delegate`)."""
        return self._run(
            self._async.delegate(
                expires_seconds=expires_seconds,
                allow_connect=allow_connect,
                allow_listen=allow_listen,
                allow_ports=allow_ports,
                allow_multicast=allow_multicast,
                allow_multicast_interface=allow_multicast_interface,
                allow_handoff=allow_handoff,
            )
        )

    def _close_on_exit(self) -> None:
        self.shutdown_all()


class BlockingListener(BlockingHandle):
    """A TCP listener."""

    _async: _AsyncListener

    def __init__(self, broker: Broker, target: _AsyncListener) -> None:
        super().__init__(broker, target)

    def accept(
        self, *, custodian: BlockingCustodian | str | None = None, timeout: float | None = None
    ) -> tuple[BlockingInputPort, BlockingOutputPort] | None:
        """tcp-accept; with a ``timeout``, None when no client came in time."""
        ports = self._run(self._async.accept(custodian=optional_handle(custodian), timeout=timeout))
        return None if ports is None else self.broker._ports(ports)

    def accept_ready(self) -> bool:
        """tcp-accept-ready?"""
        return self._run(self._async.accept_ready())

    def close(self) -> None:
        """tcp-close."""
        self._run(self._async.close())

    def _close_on_exit(self) -> None:
        self.close()


class _BlockingPort(BlockingHandle):
    """What both ports of a TCP connection can do."""

    _async: _AsyncInputPort | _AsyncOutputPort

    def set_buffer_mode(self, mode: str) -> None:
        """file-stream-buffer-mode: ``"block"``, ``"line"`` or ``"none"`` (output ports)."""
        self._run(self._async.set_buffer_mode(mode))

    def close(self) -> None:
        """close-input-port / close-output-port."""
        self._run(self._async.close())

    def abandon(self) -> None:
        """tcp-abandon-port."""
        self._run(self._async.abandon())

    def _close_on_exit(self) -> None:
        self.close()


class BlockingInputPort(_BlockingPort):
    """The input port of a TCP connection; reads return bytes, :data:`EOF` at end of file, ``b""``
    when ``read_bytes_avail_nowait`` finds nothing, and None when a ``timeout`` passed."""

    _async: _AsyncInputPort

    def __init__(self, broker: Broker, target: _AsyncInputPort) -> None:
        super().__init__(broker, target)

    def read(
        self, max_bytes: int = 65536, *, mode: str = "avail", peek: bool = False, timeout: float | None = None
    ) -> bytes | _Eof | None:
        """read-bytes-avail! (``avail``), read-bytes-avail!* (``nowait``), read-bytes (``exact``).

        Bytes; :data:`EOF` at end of file; ``b""`` when ``nowait`` finds nothing; None when
        ``timeout`` passed before anything came (nothing was consumed)."""
        return self._run(self._async.read(max_bytes, mode=mode, peek=peek, timeout=timeout))

    def read_bytes_avail(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes | _Eof | None:
        """read-bytes-avail!: waits for at least one byte (or EOF)."""
        return self._run(self._async.read_bytes_avail(max_bytes, timeout=timeout))

    def read_bytes_avail_nowait(self, max_bytes: int = 65536) -> bytes | _Eof | None:
        """read-bytes-avail!*: what is there now, maybe zero bytes."""
        return self._run(self._async.read_bytes_avail_nowait(max_bytes))

    def read_bytes(self, amount: int, *, timeout: float | None = None) -> bytes | _Eof | None:
        """read-bytes: exactly ``amount`` bytes, fewer only at EOF."""
        return self._run(self._async.read_bytes(amount, timeout=timeout))

    def peek_bytes_avail(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes | _Eof | None:
        """peek-bytes-avail!: like read_bytes_avail, consuming nothing."""
        return self._run(self._async.peek_bytes_avail(max_bytes, timeout=timeout))

    def open_channel(self, mode: str = "relay") -> ChannelSocket:
        """The connection out of band (``Ports.OpenChannel``): a plain socket, relayed or handed off."""
        return self._run(self._async.open_channel(mode))


class BlockingOutputPort(_BlockingPort):
    """The output port of a TCP connection (block-buffered until flushed, as in Racket)."""

    _async: _AsyncOutputPort

    def __init__(self, broker: Broker, target: _AsyncOutputPort) -> None:
        super().__init__(broker, target)

    def write(self, data: bytes, *, flush: bool = False) -> int:
        """write-bytes: returns how many bytes were taken; ``flush`` flushes afterwards."""
        return self._run(self._async.write(data, flush=flush))

    write_bytes = write

    def flush(self) -> None:
        """flush-output."""
        self._run(self._async.flush())

    flush_output = flush


class BlockingUdpSocket(BlockingHandle):
    """A UDP socket; every ``udp-…`` function of the broker is also a method here, prefix dropped."""

    _async: _AsyncUdpSocket

    def __init__(self, broker: Broker, target: _AsyncUdpSocket) -> None:
        super().__init__(broker, target)

    def bind(self, hostname: str | None, port: int, reuse: bool = False) -> None:
        """udp-bind!"""
        self._run(self._async.bind(hostname, port, reuse))

    def open_channel(self, mode: str = "handoff") -> ChannelSocket:
        """The socket's own descriptor (``Udp.OpenChannel``), as a plain socket."""
        return self._run(self._async.open_channel(mode))

    def connect(self, hostname: str | None, port: int | None) -> None:
        """udp-connect! (``None, None`` disconnects)."""
        self._run(self._async.connect(hostname, port))

    def send_to(
        self,
        hostname: str,
        port: int,
        data: bytes,
        start: int = 0,
        end: int | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        """udp-send-to (``wait=False``: udp-send-to*)."""
        return self._run(self._async.send_to(hostname, port, data, start, end, wait=wait, timeout=timeout))

    def send_to_nowait(self, hostname: str, port: int, data: bytes, start: int = 0, end: int | None = None) -> bool:
        """udp-send-to*"""
        return self._run(self._async.send_to_nowait(hostname, port, data, start, end))

    def send(
        self, data: bytes, start: int = 0, end: int | None = None, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        """udp-send (to the connected peer)."""
        return self._run(self._async.send(data, start, end, wait=wait, timeout=timeout))

    def send_nowait(self, data: bytes, start: int = 0, end: int | None = None) -> bool:
        """udp-send*"""
        return self._run(self._async.send_nowait(data, start, end))

    def receive(self, max_bytes: int = 65535, *, wait: bool = True, timeout: float | None = None) -> ReceiveResult:
        """udp-receive!: (count, host, port, data); all None when nothing came (nowait, timeout)."""
        return self._run(self._async.receive(max_bytes, wait=wait, timeout=timeout))

    def receive_nowait(self, max_bytes: int = 65535) -> ReceiveResult:
        """udp-receive!*"""
        return self._run(self._async.receive_nowait(max_bytes))

    def set_receive_buffer_size(self, size: int) -> None:
        """udp-set-receive-buffer-size!"""
        self._run(self._async.set_receive_buffer_size(size))

    def close(self) -> None:
        """udp-close."""
        self._run(self._async.close())

    def bound(self) -> bool:
        """udp-bound?"""
        return self._run(self._async.bound())

    def connected(self) -> bool:
        """udp-connected?"""
        return self._run(self._async.connected())

    def ttl(self) -> int:
        """udp-ttl"""
        return self._run(self._async.ttl())

    def set_ttl(self, ttl: int) -> None:
        """udp-set-ttl!"""
        self._run(self._async.set_ttl(ttl))

    def multicast_join_group(self, group: str, interface: str | None = None) -> None:
        """udp-multicast-join-group!"""
        self._run(self._async.multicast_join_group(group, interface))

    def multicast_leave_group(self, group: str, interface: str | None = None) -> None:
        """udp-multicast-leave-group!"""
        self._run(self._async.multicast_leave_group(group, interface))

    def multicast_interface(self) -> str:
        """udp-multicast-interface"""
        return self._run(self._async.multicast_interface())

    def multicast_set_interface(self, interface: str | None) -> None:
        """udp-multicast-set-interface!"""
        self._run(self._async.multicast_set_interface(interface))

    def multicast_loopback(self) -> bool:
        """udp-multicast-loopback?"""
        return self._run(self._async.multicast_loopback())

    def multicast_set_loopback(self, loopback: bool) -> None:
        """udp-multicast-set-loopback!"""
        self._run(self._async.multicast_set_loopback(loopback))

    def multicast_ttl(self) -> int:
        """udp-multicast-ttl"""
        return self._run(self._async.multicast_ttl())

    def multicast_set_ttl(self, ttl: int) -> None:
        """udp-multicast-set-ttl!"""
        self._run(self._async.multicast_set_ttl(ttl))

    def receive_stream(self, max_bytes: int | None = None) -> BlockingDatagramStream:
        """Datagrams as they arrive (``Udp.ReceiveStream`` / the UDP WebSocket), as an iterator.

        The stream opens in the daemon at the first ``next()``; while open it takes every
        datagram the socket receives. ``close()``, leaving a ``with`` block, or leaving a ``for``
        loop over ``sock.receive_stream()`` (once nothing else refers to it) ends it there.
        """
        return BlockingDatagramStream(self.broker._runner, self._async.receive_stream(max_bytes))

    def send_stream(self, datagrams: Iterable[Frame]) -> int:
        """Send ``(data, host, port)`` tuples (host "" = the connected peer); returns how many.

        A list or tuple goes as it is; any other iterable is consumed on the calling thread, one
        frame at a time, so a generator may block or call the broker.
        """
        runner = self.broker._runner
        if isinstance(datagrams, Sequence):
            return runner.run(self._async.send_stream(datagrams))
        feed = Feed()
        sending = runner.submit(self._async.send_stream(feed.frames()))
        try:
            for frame in datagrams:
                if not runner.run(feed.put(frame, sending)):
                    break  # the stream ended early: its outcome says why
            else:
                runner.run(feed.put(None, sending))
        except BaseException:
            sending.cancel_and_wait()
            raise
        return runner.wait(sending)

    def _close_on_exit(self) -> None:
        self.close()


BLOCKING_CLASSES: tuple[tuple[type[_Handle], Any], ...] = (
    (_AsyncInputPort, BlockingInputPort),
    (_AsyncOutputPort, BlockingOutputPort),
    (_AsyncListener, BlockingListener),
    (_AsyncUdpSocket, BlockingUdpSocket),
    (_AsyncCustodian, BlockingCustodian),
)
