"""The blocking client: :class:`Broker`, one explicit method per method of :class:`AsyncBroker`.

Each method runs the coroutine of the same name on a private event loop thread (:mod:`._runner`)
and waits for it; handles come back as the ``Blocking…`` classes of :mod:`._sync_handles`, inside
tuples and ``sync`` results too. Streams are plain iterators (:mod:`._sync_streams`):
``for datagram in sock.receive_stream(): ...`` (leaving the loop, ``close()`` or ``with`` ends
the stream in the daemon), ``sock.send_stream(iterable)``, ``for chunk in broker.tcp_stream(port)``.

Ctrl-C during a call cancels it (the daemon gives back anything it had taken) and raises
``KeyboardInterrupt``; :class:`Canceller` does the same from another thread. Methods are written
out rather than generated so that readers, IDEs and type checkers see them;
``tests/client/test_blocking.py`` checks that they match the async API name for name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from ._channel import ChannelSocket
from ._client import AsyncBroker, _SessionOptions
from ._client import InputPort as _AsyncInputPort
from ._client import OutputPort as _AsyncOutputPort
from ._client import UdpSocket as _AsyncUdpSocket
from ._runner import Runner
from ._sync_handles import (
    BLOCKING_CLASSES,
    BlockingCustodian,
    BlockingHandle,
    BlockingInputPort,
    BlockingListener,
    BlockingOutputPort,
    BlockingUdpSocket,
    ReceiveResult,
    call_arg,
    handle_of,
    optional_handle,
)
from ._sync_streams import BlockingPortStream
from ._transport import Channel

__all__ = ["Broker"]

T = TypeVar("T")


class _AsyncClosable(Protocol):
    async def aclose(self) -> None: ...


A = TypeVar("A", bound=_AsyncClosable)


class OnLoopThread(Generic[A]):
    """A blocking object over an async one whose coroutines run on a private loop thread:
    ``close()`` (and leaving ``with``) closes the async object, then ends the thread."""

    def __init__(self, async_object: A, runner: Runner) -> None:
        self._async = async_object
        self._runner = runner

    @classmethod
    def _opened(cls, opening: Coroutine[Any, Any, A]) -> Self:
        """The object over what ``opening`` makes, run on a new loop thread (stopped if it fails)."""
        runner = Runner()
        try:
            return cls(runner.run(opening), runner)
        except BaseException:
            runner.stop()
            raise

    def _end(self, ending: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``ending()`` once, then stop the loop thread."""
        if self._runner.closed:
            return
        try:
            self._runner.run(ending())
        finally:
            self._runner.stop()

    def close(self) -> None:
        """Close it (a broker: its session, every handle in it), its channel and the loop thread.
        Idempotent."""
        self._end(self._async.aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ═════════════════════════════ the broker ═════════════════════════════


class Broker(OnLoopThread[AsyncBroker]):
    """A session with the broker, blocking API: ``with Broker.connect() as broker: ...``.

    The same methods as :class:`AsyncBroker`, without ``await``. Leaving the ``with`` block (or
    :meth:`close`) closes the session, every handle in it, and the private loop thread.
    """

    def __init__(self, async_broker: AsyncBroker, runner: Runner) -> None:
        super().__init__(async_broker, runner)
        #: The session's root custodian (Racket's ``current-custodian``).
        self.custodian = BlockingCustodian(self, async_broker.custodian)

    @property
    def session(self) -> str:
        return self._async.session

    @property
    def lease_seconds(self) -> float:
        return self._async.lease_seconds

    @property
    def grace_seconds(self) -> float:
        return self._async.grace_seconds

    @property
    def resume_token(self) -> str:
        return self._async.resume_token

    @property
    def resumption(self) -> tuple[str, str]:
        """``(session, resume_token)``: what ``connect(resume=...)`` takes back."""
        return self._async.resumption

    @property
    def transport(self) -> str:
        """``"grpc"`` or ``"rest"``."""
        return self._async.channel.name

    def __repr__(self) -> str:
        return f"<Broker {self.transport} session={self.session}>"

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    # ── session ────────────────────────────────────────────────────────────
    @classmethod
    def connect(
        cls,
        target: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        transport: str | None = None,
        attach: bool = True,
        lease_seconds: float | None = None,
        grace_seconds: float | None = None,
        resume: tuple[str, str] | None = None,
        credentials: Any = None,
        verify: Any = True,
    ) -> Broker:
        """Open a session, or take one back (``resume``); the arguments are
        :meth:`AsyncBroker.connect`'s (an ``http(s)://`` target picks REST)."""
        return cls._opened(
            AsyncBroker._open(
                target,
                token=token,
                token_file=token_file,
                transport=transport,
                options=_SessionOptions(attach, lease_seconds, grace_seconds, resume),
                credentials=credentials,
                verify=verify,
            )
        )

    @classmethod
    def over(
        cls,
        channel: Channel | Callable[[], Channel],
        *,
        attach: bool = True,
        lease_seconds: float | None = None,
        grace_seconds: float | None = None,
        resume: tuple[str, str] | None = None,
    ) -> Broker:
        """Open (or resume) a session over a transport of your own (:meth:`AsyncBroker.over`).

        The channel is used on the broker's private loop thread. A gRPC channel binds to the loop
        it is made on, so pass a function that makes the channel: it is called on that thread.
        """

        async def open_session() -> AsyncBroker:
            made = channel() if callable(channel) else channel
            return await AsyncBroker.over(
                made, attach=attach, lease_seconds=lease_seconds, grace_seconds=grace_seconds, resume=resume
            )

        return cls._opened(open_session())

    def call(self, method: str, **args: Any) -> dict[str, Any]:
        """Any RPC by name (``"Tcp.Listen"``) with the proto's field names; handles may be objects."""
        return self._run(self._async.call(method, **{k: call_arg(v) for k, v in args.items()}))

    def keep_alive(self) -> float:
        """Renew the session's lease; returns its length in seconds."""
        return self._run(self._async.keep_alive())

    def detach(self) -> None:
        """End the attachment without dropping the session (the lease holds it from now on)."""
        self._run(self._async.detach())

    def abandon(self) -> None:
        """Close the channel and the loop thread without closing the session
        (:meth:`AsyncBroker.abandon`): resume it with ``connect(resume=broker.resumption)``."""
        self._end(self._async.abandon)

    # ── custodians and handles ─────────────────────────────────────────────
    def make_custodian(self, parent: BlockingCustodian | str | None = None) -> BlockingCustodian:
        """make-custodian: a child of ``parent`` (default: the session's root)."""
        return BlockingCustodian(self, self._run(self._async.make_custodian(optional_handle(parent))))

    def custodian_shutdown_all(self, custodian: BlockingCustodian | str) -> None:
        """custodian-shutdown-all: close every handle of the custodian and of its descendants."""
        self._run(self._async.custodian_shutdown_all(handle_of(custodian)))

    def describe_custodian(self, custodian: BlockingCustodian | str) -> dict[str, Any]:
        """The custodian's handles and children (how to find what a lost reply had created)."""
        return self._run(self._async.describe_custodian(handle_of(custodian)))

    def delegate(
        self,
        custodian: BlockingCustodian | str,
        *,
        expires_seconds: float,
        allow_connect: Sequence[str] = (),
        allow_listen: Sequence[str] = (),
        allow_ports: Sequence[str] = (),
        allow_multicast: Sequence[str] = (),
        allow_multicast_interface: Sequence[str] = (),
        allow_handoff: bool = False,
    ) -> str:
        """``Custodians.Delegate``: a bearer token for a sandboxed child (:meth:`AsyncBroker.delegate`)."""
        return self._run(
            self._async.delegate(
                handle_of(custodian),
                expires_seconds=expires_seconds,
                allow_connect=allow_connect,
                allow_listen=allow_listen,
                allow_ports=allow_ports,
                allow_multicast=allow_multicast,
                allow_multicast_interface=allow_multicast_interface,
                allow_handoff=allow_handoff,
            )
        )

    def describe(self, handle: BlockingHandle | str) -> dict[str, Any]:
        """Kind, state and custodian of any handle."""
        return self._run(self._async.describe(handle_of(handle)))

    def tcp_addresses(self, handle: BlockingHandle | str, port_numbers: bool = False) -> tuple[Any, ...]:
        """tcp-addresses / udp-addresses: (local, remote) hosts, with ports when ``port_numbers``."""
        return self._run(self._async.tcp_addresses(handle_of(handle), port_numbers))

    udp_addresses = tcp_addresses

    def tcp_listener(self, handle: BlockingHandle | str) -> bool:
        """tcp-listener?"""
        return self._run(self._async.tcp_listener(handle_of(handle)))

    def tcp_port(self, handle: BlockingHandle | str) -> bool:
        """tcp-port?"""
        return self._run(self._async.tcp_port(handle_of(handle)))

    def udp(self, handle: BlockingHandle | str) -> bool:
        """udp?"""
        return self._run(self._async.udp(handle_of(handle)))

    # ── tcp ────────────────────────────────────────────────────────────────
    def tcp_listen(
        self,
        port: int,
        backlog: int = 4,
        reuse: bool = False,
        hostname: str | None = None,
        *,
        custodian: BlockingCustodian | str | None = None,
    ) -> BlockingListener:
        """tcp-listen."""
        listener = self._run(
            self._async.tcp_listen(port, backlog, reuse, hostname, custodian=optional_handle(custodian))
        )
        return BlockingListener(self, listener)

    def tcp_connect(
        self,
        hostname: str,
        port: int,
        local_hostname: str | None = None,
        local_port: int | None = None,
        *,
        custodian: BlockingCustodian | str | None = None,
        timeout: float | None = None,
    ) -> tuple[BlockingInputPort, BlockingOutputPort]:
        """tcp-connect: the connection's input and output ports."""
        ports = self._run(
            self._async.tcp_connect(
                hostname, port, local_hostname, local_port, custodian=optional_handle(custodian), timeout=timeout
            )
        )
        return self._ports(ports)

    def tcp_accept(
        self,
        listener: BlockingListener | str,
        *,
        custodian: BlockingCustodian | str | None = None,
        timeout: float | None = None,
    ) -> tuple[BlockingInputPort, BlockingOutputPort] | None:
        """tcp-accept; with a ``timeout``, None when no client came in time."""
        ports = self._run(
            self._async.tcp_accept(handle_of(listener), custodian=optional_handle(custodian), timeout=timeout)
        )
        return None if ports is None else self._ports(ports)

    def tcp_accept_ready(self, listener: BlockingListener | str) -> bool:
        """tcp-accept-ready?"""
        return self._run(self._async.tcp_accept_ready(handle_of(listener)))

    def tcp_close(self, listener: BlockingListener | str) -> None:
        """tcp-close."""
        self._run(self._async.tcp_close(handle_of(listener)))

    def tcp_abandon_port(self, port: BlockingInputPort | BlockingOutputPort | str) -> None:
        """tcp-abandon-port: close without a FIN while the other port of the connection is open."""
        self._run(self._async.tcp_abandon_port(handle_of(port)))

    def open_channel(self, port: BlockingInputPort | str, mode: str = "relay") -> ChannelSocket:
        """The connection of ``port`` out of band (``Ports.OpenChannel``): a plain socket."""
        return self._run(self._async.open_channel(handle_of(port), mode))

    def udp_open_channel(self, sock: BlockingUdpSocket | str, mode: str = "handoff") -> ChannelSocket:
        """The UDP socket's own descriptor (``Udp.OpenChannel``): a plain socket."""
        return self._run(self._async.udp_open_channel(handle_of(sock), mode))

    def tcp_stream(self, port: BlockingInputPort | str) -> BlockingPortStream:
        """A byte stream over the connection of ``port`` (``Ports.Stream`` / the WebSocket)."""
        return BlockingPortStream(self._runner, self._run(self._async.tcp_stream(handle_of(port))))

    def _ports(self, ports: tuple[_AsyncInputPort, _AsyncOutputPort]) -> tuple[BlockingInputPort, BlockingOutputPort]:
        return BlockingInputPort(self, ports[0]), BlockingOutputPort(self, ports[1])

    # ── udp ────────────────────────────────────────────────────────────────
    def udp_open_socket(
        self,
        family_hostname: str | None = None,
        family_port: int | None = None,
        *,
        custodian: BlockingCustodian | str | None = None,
    ) -> BlockingUdpSocket:
        """udp-open-socket."""
        sock = self._run(
            self._async.udp_open_socket(family_hostname, family_port, custodian=optional_handle(custodian))
        )
        return BlockingUdpSocket(self, sock)

    def _udp(self, sock: BlockingUdpSocket | str) -> BlockingUdpSocket:
        if isinstance(sock, BlockingUdpSocket):
            return sock
        return BlockingUdpSocket(self, _AsyncUdpSocket(self._async, sock))

    # The udp-… functions: each is the UdpSocket method of the same name (Racket's naming rule).
    def udp_bind(self, sock: BlockingUdpSocket | str, hostname: str | None, port: int, reuse: bool = False) -> None:
        """udp-bind!"""
        self._udp(sock).bind(hostname, port, reuse)

    def udp_connect(self, sock: BlockingUdpSocket | str, hostname: str | None, port: int | None) -> None:
        """udp-connect! (``None, None`` disconnects)."""
        self._udp(sock).connect(hostname, port)

    def udp_send_to(
        self,
        sock: BlockingUdpSocket | str,
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
        return self._udp(sock).send_to(hostname, port, data, start, end, wait=wait, timeout=timeout)

    def udp_send_to_nowait(
        self,
        sock: BlockingUdpSocket | str,
        hostname: str,
        port: int,
        data: bytes,
        start: int = 0,
        end: int | None = None,
    ) -> bool:
        """udp-send-to*"""
        return self._udp(sock).send_to_nowait(hostname, port, data, start, end)

    def udp_send(
        self,
        sock: BlockingUdpSocket | str,
        data: bytes,
        start: int = 0,
        end: int | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        """udp-send (to the connected peer)."""
        return self._udp(sock).send(data, start, end, wait=wait, timeout=timeout)

    def udp_send_nowait(
        self, sock: BlockingUdpSocket | str, data: bytes, start: int = 0, end: int | None = None
    ) -> bool:
        """udp-send*"""
        return self._udp(sock).send_nowait(data, start, end)

    def udp_receive(
        self, sock: BlockingUdpSocket | str, max_bytes: int = 65535, *, wait: bool = True, timeout: float | None = None
    ) -> ReceiveResult:
        """udp-receive!: (count, host, port, data); all None when nothing came (nowait, timeout)."""
        return self._udp(sock).receive(max_bytes, wait=wait, timeout=timeout)

    def udp_receive_nowait(self, sock: BlockingUdpSocket | str, max_bytes: int = 65535) -> ReceiveResult:
        """udp-receive!*"""
        return self._udp(sock).receive_nowait(max_bytes)

    def udp_set_receive_buffer_size(self, sock: BlockingUdpSocket | str, size: int) -> None:
        """udp-set-receive-buffer-size!"""
        self._udp(sock).set_receive_buffer_size(size)

    def udp_close(self, sock: BlockingUdpSocket | str) -> None:
        """udp-close."""
        self._udp(sock).close()

    def udp_bound(self, sock: BlockingUdpSocket | str) -> bool:
        """udp-bound?"""
        return self._udp(sock).bound()

    def udp_connected(self, sock: BlockingUdpSocket | str) -> bool:
        """udp-connected?"""
        return self._udp(sock).connected()

    def udp_ttl(self, sock: BlockingUdpSocket | str) -> int:
        """udp-ttl"""
        return self._udp(sock).ttl()

    def udp_set_ttl(self, sock: BlockingUdpSocket | str, ttl: int) -> None:
        """udp-set-ttl!"""
        self._udp(sock).set_ttl(ttl)

    def udp_multicast_join_group(self, sock: BlockingUdpSocket | str, group: str, interface: str | None = None) -> None:
        """udp-multicast-join-group!"""
        self._udp(sock).multicast_join_group(group, interface)

    def udp_multicast_leave_group(
        self, sock: BlockingUdpSocket | str, group: str, interface: str | None = None
    ) -> None:
        """udp-multicast-leave-group!"""
        self._udp(sock).multicast_leave_group(group, interface)

    def udp_multicast_interface(self, sock: BlockingUdpSocket | str) -> str:
        """udp-multicast-interface"""
        return self._udp(sock).multicast_interface()

    def udp_multicast_set_interface(self, sock: BlockingUdpSocket | str, interface: str | None) -> None:
        """udp-multicast-set-interface!"""
        self._udp(sock).multicast_set_interface(interface)

    def udp_multicast_loopback(self, sock: BlockingUdpSocket | str) -> bool:
        """udp-multicast-loopback?"""
        return self._udp(sock).multicast_loopback()

    def udp_multicast_set_loopback(self, sock: BlockingUdpSocket | str, loopback: bool) -> None:
        """udp-multicast-set-loopback!"""
        self._udp(sock).multicast_set_loopback(loopback)

    def udp_multicast_ttl(self, sock: BlockingUdpSocket | str) -> int:
        """udp-multicast-ttl"""
        return self._udp(sock).multicast_ttl()

    def udp_multicast_set_ttl(self, sock: BlockingUdpSocket | str, ttl: int) -> None:
        """udp-multicast-set-ttl!"""
        self._udp(sock).multicast_set_ttl(ttl)

    # ── events ─────────────────────────────────────────────────────────────
    def sync(self, *events: dict[str, Any], timeout: float | None = None) -> tuple[int, Any] | None:
        """sync / sync/timeout: (index, result) of the one event performed; None on timeout.

        Events come from the ``*_evt`` functions; accepted ports in a result are blocking ports.
        """
        chosen = self._run(self._async.sync(*events, timeout=timeout))
        if chosen is None:
            return None
        index, result = chosen
        return int(index), self._blocking(result)

    def _blocking(self, value: object) -> Any:
        """An async result with its handles (also inside tuples) made blocking."""
        if isinstance(value, tuple):
            return tuple(self._blocking(v) for v in value)
        for async_class, blocking_class in BLOCKING_CLASSES:
            if isinstance(value, async_class):
                return blocking_class(self, value)
        return value
