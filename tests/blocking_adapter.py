"""The AsyncBroker API on top of the blocking ``Broker`` (and AsyncAdmin's on ``Admin``): the behavioural
suite through the blocking client.

Each ``Adapted…`` class has the methods of its async counterpart, name for name and parameter for
parameter (``tests/client/test_blocking.py`` checks it), and each method runs the blocking method
of the same name in a worker thread, as ``asyncio.to_thread`` does, on a thread pool of the
adapter's own (blocked accepts must not starve the loop's default executor, which
``asyncio.open_connection`` needs for its address lookups).

Cancelling the awaiting task cancels the blocking call through a :class:`Canceller` (what Ctrl-C
does to a blocking program), waits until it has ended, and then behaves as an asyncio call
does: cancelled, unless the call had already produced its result, which is then returned rather
than thrown away. So the suite's "a cancelled … never loses …" tests hold the blocking client
to the same promise as the async one.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, ParamSpec, Protocol, Self, TypeVar

from sockbroker_client import (
    Admin,
    BlockingCustodian,
    BlockingInputPort,
    BlockingListener,
    BlockingOutputPort,
    BlockingPortStream,
    BlockingUdpSocket,
    Broker,
    Canceller,
    ChannelSocket,
    Datagram,
)
from sockbroker_client._transport import Channel

__all__ = [
    "AdaptedAdmin",
    "AdaptedBroker",
    "AdaptedCustodian",
    "AdaptedInputPort",
    "AdaptedListener",
    "AdaptedOutputPort",
    "AdaptedPortStream",
    "AdaptedUdpSocket",
]

P = ParamSpec("P")
T = TypeVar("T")

ReceiveResult = tuple[int, str, int, bytes] | tuple[None, None, None, None]
Frame = tuple[bytes, str, int]

#: Threads for blocking calls in flight at once (the suite holds a few dozen at most).
WORKERS = 64


async def _in_thread(pool: ThreadPoolExecutor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker thread; cancelling the caller cancels the call."""
    canceller = Canceller()

    def call() -> T:
        with canceller:
            return fn(*args, **kwargs)

    context = contextvars.copy_context()
    work = asyncio.get_running_loop().run_in_executor(pool, context.run, call)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        canceller.cancel()
        while not work.done():  # the call ends promptly once cancelled; wait for its outcome
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                continue
            except BaseException:
                break
        if work.cancelled() or work.exception() is not None:
            raise  # cancelled in time (BreakError), or failed: the caller sees its cancellation
        return work.result()  # the result had arrived: returned, never lost


class _ChannelView:
    """What the suite reads of ``broker.channel``: the transport's name, and ``aclose``."""

    def __init__(self, broker: AdaptedBroker) -> None:
        self._broker = broker
        self.name = broker._blocking.transport

    async def aclose(self) -> None:
        await self._broker.aclose()


class _Closable(Protocol):
    def close(self) -> None: ...


B = TypeVar("B", bound=_Closable)


async def _opened(fn: Callable[P, B], *args: P.args, **kwargs: P.kwargs) -> tuple[B, ThreadPoolExecutor]:
    """``fn(*args, **kwargs)`` (a blocking ``connect``) in a worker thread of a new pool, which the
    adapter made from its result owns; the pool is shut down if ``fn`` fails."""
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="blocking-adapter")
    try:
        return await _in_thread(pool, fn, *args, **kwargs), pool
    except BaseException:
        pool.shutdown(wait=False)
        raise


class _Pooled(Generic[B]):
    """An adapter over a blocking object, with a thread pool of its own that ends with it."""

    def __init__(self, blocking: B, pool: ThreadPoolExecutor) -> None:
        self._blocking = blocking
        self._pool = pool
        self._closed = False

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await _in_thread(self._pool, fn, *args, **kwargs)

    async def _end(self, fn: Callable[[], None]) -> None:
        """``fn`` (the blocking ``close`` or ``abandon``) once; the adapter's threads end with it."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._run(fn)
        finally:
            self._pool.shutdown(wait=False)

    async def aclose(self) -> None:
        """The blocking ``close``, which is idempotent; the adapter's threads end with it."""
        await self._end(self._blocking.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AdaptedBroker(_Pooled[Broker]):
    """:class:`AsyncBroker`'s methods, each running :class:`Broker`'s in a worker thread."""

    def __init__(self, blocking: Broker, pool: ThreadPoolExecutor) -> None:
        super().__init__(blocking, pool)
        self.session = blocking.session
        self.lease_seconds = blocking.lease_seconds
        self.grace_seconds = blocking.grace_seconds
        self.resume_token = blocking.resume_token
        self.resumption = blocking.resumption
        self.custodian = AdaptedCustodian(self, blocking.custodian)
        self.channel = _ChannelView(self)

    def _adapt(self, value: object) -> Any:
        """A blocking result with its handles (also inside tuples) adapted."""
        if isinstance(value, tuple):
            return tuple(self._adapt(v) for v in value)
        for blocking_class, adapted_class in _ADAPTED_CLASSES:
            if isinstance(value, blocking_class):
                return adapted_class(self, value)
        return value

    def _ports(self, ports: tuple[BlockingInputPort, BlockingOutputPort]) -> tuple[AdaptedInputPort, AdaptedOutputPort]:
        return AdaptedInputPort(self, ports[0]), AdaptedOutputPort(self, ports[1])

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
    ) -> Awaitable[AdaptedBroker]:
        """Awaitable, as ``AsyncBroker.connect`` is (the suite never uses it in ``async with``)."""
        return cls._connect(
            target,
            token=token,
            token_file=token_file,
            transport=transport,
            attach=attach,
            lease_seconds=lease_seconds,
            grace_seconds=grace_seconds,
            resume=resume,
            credentials=credentials,
            verify=verify,
        )

    @classmethod
    async def _connect(cls, target: str | None, **options: Any) -> AdaptedBroker:
        return cls(*await _opened(Broker.connect, target, **options))

    @classmethod
    async def over(
        cls,
        channel: Channel,
        *,
        attach: bool = True,
        lease_seconds: float | None = None,
        grace_seconds: float | None = None,
        resume: tuple[str, str] | None = None,
    ) -> AdaptedBroker:
        return cls(
            *await _opened(
                Broker.over,
                channel,
                attach=attach,
                lease_seconds=lease_seconds,
                grace_seconds=grace_seconds,
                resume=resume,
            )
        )

    async def call(self, method: str, **args: Any) -> dict[str, Any]:
        return await self._run(self._blocking.call, method, **{k: _b(v) for k, v in args.items()})

    async def keep_alive(self) -> float:
        return await self._run(self._blocking.keep_alive)

    async def detach(self) -> None:
        await self._run(self._blocking.detach)

    async def abandon(self) -> None:
        await self._end(self._blocking.abandon)

    # ── custodians and handles ─────────────────────────────────────────────
    async def make_custodian(self, parent: AdaptedCustodian | str | None = None) -> AdaptedCustodian:
        return AdaptedCustodian(self, await self._run(self._blocking.make_custodian, _b(parent)))

    async def custodian_shutdown_all(self, custodian: AdaptedCustodian | str) -> None:
        await self._run(self._blocking.custodian_shutdown_all, _b(custodian))

    async def delegate(
        self,
        custodian: AdaptedCustodian | str,
        *,
        expires_seconds: float,
        allow_connect: Sequence[str] = (),
        allow_listen: Sequence[str] = (),
        allow_ports: Sequence[str] = (),
        allow_multicast: Sequence[str] = (),
        allow_multicast_interface: Sequence[str] = (),
        allow_handoff: bool = False,
    ) -> str:
        return await self._run(
            self._blocking.delegate,
            _b(custodian),
            expires_seconds=expires_seconds,
            allow_connect=allow_connect,
            allow_listen=allow_listen,
            allow_ports=allow_ports,
            allow_multicast=allow_multicast,
            allow_multicast_interface=allow_multicast_interface,
            allow_handoff=allow_handoff,
        )

    async def describe_custodian(self, custodian: AdaptedCustodian | str) -> dict[str, Any]:
        return await self._run(self._blocking.describe_custodian, _b(custodian))

    async def describe(self, handle: _AdaptedHandle | str) -> dict[str, Any]:
        return await self._run(self._blocking.describe, _b(handle))

    async def tcp_addresses(self, handle: _AdaptedHandle | str, port_numbers: bool = False) -> tuple[Any, ...]:
        return await self._run(self._blocking.tcp_addresses, _b(handle), port_numbers)

    udp_addresses = tcp_addresses

    async def tcp_listener(self, handle: _AdaptedHandle | str) -> bool:
        return await self._run(self._blocking.tcp_listener, _b(handle))

    async def tcp_port(self, handle: _AdaptedHandle | str) -> bool:
        return await self._run(self._blocking.tcp_port, _b(handle))

    async def udp(self, handle: _AdaptedHandle | str) -> bool:
        return await self._run(self._blocking.udp, _b(handle))

    # ── tcp ────────────────────────────────────────────────────────────────
    async def tcp_listen(
        self,
        port: int,
        backlog: int = 4,
        reuse: bool = False,
        hostname: str | None = None,
        *,
        custodian: AdaptedCustodian | str | None = None,
    ) -> AdaptedListener:
        listener = await self._run(self._blocking.tcp_listen, port, backlog, reuse, hostname, custodian=_b(custodian))
        return AdaptedListener(self, listener)

    async def tcp_connect(
        self,
        hostname: str,
        port: int,
        local_hostname: str | None = None,
        local_port: int | None = None,
        *,
        custodian: AdaptedCustodian | str | None = None,
        timeout: float | None = None,
    ) -> tuple[AdaptedInputPort, AdaptedOutputPort]:
        ports = await self._run(
            self._blocking.tcp_connect,
            hostname,
            port,
            local_hostname,
            local_port,
            custodian=_b(custodian),
            timeout=timeout,
        )
        return self._ports(ports)

    async def tcp_accept(
        self,
        listener: AdaptedListener | str,
        *,
        custodian: AdaptedCustodian | str | None = None,
        timeout: float | None = None,
    ) -> tuple[AdaptedInputPort, AdaptedOutputPort] | None:
        ports = await self._run(self._blocking.tcp_accept, _b(listener), custodian=_b(custodian), timeout=timeout)
        return None if ports is None else self._ports(ports)

    async def tcp_accept_ready(self, listener: AdaptedListener | str) -> bool:
        return await self._run(self._blocking.tcp_accept_ready, _b(listener))

    async def tcp_close(self, listener: AdaptedListener | str) -> None:
        await self._run(self._blocking.tcp_close, _b(listener))

    async def tcp_abandon_port(self, port: AdaptedInputPort | AdaptedOutputPort | str) -> None:
        await self._run(self._blocking.tcp_abandon_port, _b(port))

    async def open_channel(self, port: AdaptedInputPort | str, mode: str = "relay") -> ChannelSocket:
        return await self._run(self._blocking.open_channel, _b(port), mode)

    async def udp_open_channel(self, sock: AdaptedUdpSocket | str, mode: str = "handoff") -> ChannelSocket:
        return await self._run(self._blocking.udp_open_channel, _b(sock), mode)

    async def tcp_stream(self, port: AdaptedInputPort | str) -> AdaptedPortStream:
        return AdaptedPortStream(self, await self._run(self._blocking.tcp_stream, _b(port)))

    # ── udp ────────────────────────────────────────────────────────────────
    async def udp_open_socket(
        self,
        family_hostname: str | None = None,
        family_port: int | None = None,
        *,
        custodian: AdaptedCustodian | str | None = None,
    ) -> AdaptedUdpSocket:
        sock = await self._run(self._blocking.udp_open_socket, family_hostname, family_port, custodian=_b(custodian))
        return AdaptedUdpSocket(self, sock)

    async def udp_bind(
        self, sock: AdaptedUdpSocket | str, hostname: str | None, port: int, reuse: bool = False
    ) -> None:
        await self._run(self._blocking.udp_bind, _b(sock), hostname, port, reuse)

    async def udp_connect(self, sock: AdaptedUdpSocket | str, hostname: str | None, port: int | None) -> None:
        await self._run(self._blocking.udp_connect, _b(sock), hostname, port)

    async def udp_send_to(
        self,
        sock: AdaptedUdpSocket | str,
        hostname: str,
        port: int,
        data: bytes,
        start: int = 0,
        end: int | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        return await self._run(
            self._blocking.udp_send_to, _b(sock), hostname, port, data, start, end, wait=wait, timeout=timeout
        )

    async def udp_send_to_nowait(
        self,
        sock: AdaptedUdpSocket | str,
        hostname: str,
        port: int,
        data: bytes,
        start: int = 0,
        end: int | None = None,
    ) -> bool:
        return await self._run(self._blocking.udp_send_to_nowait, _b(sock), hostname, port, data, start, end)

    async def udp_send(
        self,
        sock: AdaptedUdpSocket | str,
        data: bytes,
        start: int = 0,
        end: int | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        return await self._run(self._blocking.udp_send, _b(sock), data, start, end, wait=wait, timeout=timeout)

    async def udp_send_nowait(
        self, sock: AdaptedUdpSocket | str, data: bytes, start: int = 0, end: int | None = None
    ) -> bool:
        return await self._run(self._blocking.udp_send_nowait, _b(sock), data, start, end)

    async def udp_receive(
        self, sock: AdaptedUdpSocket | str, max_bytes: int = 65535, *, wait: bool = True, timeout: float | None = None
    ) -> ReceiveResult:
        return await self._run(self._blocking.udp_receive, _b(sock), max_bytes, wait=wait, timeout=timeout)

    async def udp_receive_nowait(self, sock: AdaptedUdpSocket | str, max_bytes: int = 65535) -> ReceiveResult:
        return await self._run(self._blocking.udp_receive_nowait, _b(sock), max_bytes)

    async def udp_set_receive_buffer_size(self, sock: AdaptedUdpSocket | str, size: int) -> None:
        await self._run(self._blocking.udp_set_receive_buffer_size, _b(sock), size)

    async def udp_close(self, sock: AdaptedUdpSocket | str) -> None:
        await self._run(self._blocking.udp_close, _b(sock))

    async def udp_bound(self, sock: AdaptedUdpSocket | str) -> bool:
        return await self._run(self._blocking.udp_bound, _b(sock))

    async def udp_connected(self, sock: AdaptedUdpSocket | str) -> bool:
        return await self._run(self._blocking.udp_connected, _b(sock))

    async def udp_ttl(self, sock: AdaptedUdpSocket | str) -> int:
        return await self._run(self._blocking.udp_ttl, _b(sock))

    async def udp_set_ttl(self, sock: AdaptedUdpSocket | str, ttl: int) -> None:
        await self._run(self._blocking.udp_set_ttl, _b(sock), ttl)

    async def udp_multicast_join_group(
        self, sock: AdaptedUdpSocket | str, group: str, interface: str | None = None
    ) -> None:
        await self._run(self._blocking.udp_multicast_join_group, _b(sock), group, interface)

    async def udp_multicast_leave_group(
        self, sock: AdaptedUdpSocket | str, group: str, interface: str | None = None
    ) -> None:
        await self._run(self._blocking.udp_multicast_leave_group, _b(sock), group, interface)

    async def udp_multicast_interface(self, sock: AdaptedUdpSocket | str) -> str:
        return await self._run(self._blocking.udp_multicast_interface, _b(sock))

    async def udp_multicast_set_interface(self, sock: AdaptedUdpSocket | str, interface: str | None) -> None:
        await self._run(self._blocking.udp_multicast_set_interface, _b(sock), interface)

    async def udp_multicast_loopback(self, sock: AdaptedUdpSocket | str) -> bool:
        return await self._run(self._blocking.udp_multicast_loopback, _b(sock))

    async def udp_multicast_set_loopback(self, sock: AdaptedUdpSocket | str, loopback: bool) -> None:
        await self._run(self._blocking.udp_multicast_set_loopback, _b(sock), loopback)

    async def udp_multicast_ttl(self, sock: AdaptedUdpSocket | str) -> int:
        return await self._run(self._blocking.udp_multicast_ttl, _b(sock))

    async def udp_multicast_set_ttl(self, sock: AdaptedUdpSocket | str, ttl: int) -> None:
        await self._run(self._blocking.udp_multicast_set_ttl, _b(sock), ttl)

    # ── events ─────────────────────────────────────────────────────────────
    async def sync(self, *events: dict[str, Any], timeout: float | None = None) -> tuple[int, Any] | None:
        chosen = await self._run(self._blocking.sync, *events, timeout=timeout)
        return None if chosen is None else (chosen[0], self._adapt(chosen[1]))


def _b(value: Any) -> Any:
    """An argument for the blocking API: adapted handles as their blocking handles."""
    return value._blocking if isinstance(value, _AdaptedHandle) else value


# ═════════════════════════════ handles ═════════════════════════════


class _AdaptedHandle:
    def __init__(self, broker: AdaptedBroker, blocking: Any) -> None:
        self.broker = broker
        self._blocking = blocking

    @property
    def handle(self) -> str:
        handle: str = self._blocking.handle
        return handle

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.handle}>"

    def __str__(self) -> str:
        return self.handle

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.broker._run(fn, *args, **kwargs)

    async def describe(self) -> dict[str, Any]:
        return await self._run(self._blocking.describe)

    async def addresses(self, port_numbers: bool = False) -> tuple[Any, ...]:
        return await self._run(self._blocking.addresses, port_numbers)

    async def __aenter__(self) -> Any:
        await self._run(self._blocking.__enter__)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._run(self._blocking.__exit__, *exc)


class AdaptedCustodian(_AdaptedHandle):
    _blocking: BlockingCustodian

    async def shutdown_all(self) -> None:
        await self._run(self._blocking.shutdown_all)

    async def delegate(
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
        return await self._run(
            self._blocking.delegate,
            expires_seconds=expires_seconds,
            allow_connect=allow_connect,
            allow_listen=allow_listen,
            allow_ports=allow_ports,
            allow_multicast=allow_multicast,
            allow_multicast_interface=allow_multicast_interface,
            allow_handoff=allow_handoff,
        )


class AdaptedListener(_AdaptedHandle):
    _blocking: BlockingListener

    async def accept(
        self, *, custodian: AdaptedCustodian | str | None = None, timeout: float | None = None
    ) -> tuple[AdaptedInputPort, AdaptedOutputPort] | None:
        ports = await self._run(self._blocking.accept, custodian=_b(custodian), timeout=timeout)
        return None if ports is None else self.broker._ports(ports)

    async def accept_ready(self) -> bool:
        return await self._run(self._blocking.accept_ready)

    async def close(self) -> None:
        await self._run(self._blocking.close)


class _AdaptedPort(_AdaptedHandle):
    _blocking: BlockingInputPort | BlockingOutputPort

    async def set_buffer_mode(self, mode: str) -> None:
        await self._run(self._blocking.set_buffer_mode, mode)

    async def close(self) -> None:
        await self._run(self._blocking.close)

    async def abandon(self) -> None:
        await self._run(self._blocking.abandon)


class AdaptedInputPort(_AdaptedPort):
    _blocking: BlockingInputPort

    async def read(
        self, max_bytes: int = 65536, *, mode: str = "avail", peek: bool = False, timeout: float | None = None
    ) -> Any:
        return await self._run(self._blocking.read, max_bytes, mode=mode, peek=peek, timeout=timeout)

    async def read_bytes_avail(self, max_bytes: int = 65536, *, timeout: float | None = None) -> Any:
        return await self._run(self._blocking.read_bytes_avail, max_bytes, timeout=timeout)

    async def read_bytes_avail_nowait(self, max_bytes: int = 65536) -> Any:
        return await self._run(self._blocking.read_bytes_avail_nowait, max_bytes)

    async def read_bytes(self, amount: int, *, timeout: float | None = None) -> Any:
        return await self._run(self._blocking.read_bytes, amount, timeout=timeout)

    async def peek_bytes_avail(self, max_bytes: int = 65536, *, timeout: float | None = None) -> Any:
        return await self._run(self._blocking.peek_bytes_avail, max_bytes, timeout=timeout)

    async def open_channel(self, mode: str = "relay") -> ChannelSocket:
        return await self._run(self._blocking.open_channel, mode)


class AdaptedOutputPort(_AdaptedPort):
    _blocking: BlockingOutputPort

    async def write(self, data: bytes, *, flush: bool = False) -> int:
        return await self._run(self._blocking.write, data, flush=flush)

    write_bytes = write

    async def flush(self) -> None:
        await self._run(self._blocking.flush)

    flush_output = flush


class AdaptedUdpSocket(_AdaptedHandle):
    _blocking: BlockingUdpSocket

    async def bind(self, hostname: str | None, port: int, reuse: bool = False) -> None:
        await self._run(self._blocking.bind, hostname, port, reuse)

    async def open_channel(self, mode: str = "handoff") -> ChannelSocket:
        return await self._run(self._blocking.open_channel, mode)

    async def connect(self, hostname: str | None, port: int | None) -> None:
        await self._run(self._blocking.connect, hostname, port)

    async def send_to(
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
        return await self._run(self._blocking.send_to, hostname, port, data, start, end, wait=wait, timeout=timeout)

    async def send_to_nowait(
        self, hostname: str, port: int, data: bytes, start: int = 0, end: int | None = None
    ) -> bool:
        return await self._run(self._blocking.send_to_nowait, hostname, port, data, start, end)

    async def send(
        self, data: bytes, start: int = 0, end: int | None = None, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        return await self._run(self._blocking.send, data, start, end, wait=wait, timeout=timeout)

    async def send_nowait(self, data: bytes, start: int = 0, end: int | None = None) -> bool:
        return await self._run(self._blocking.send_nowait, data, start, end)

    async def receive(
        self, max_bytes: int = 65535, *, wait: bool = True, timeout: float | None = None
    ) -> ReceiveResult:
        return await self._run(self._blocking.receive, max_bytes, wait=wait, timeout=timeout)

    async def receive_nowait(self, max_bytes: int = 65535) -> ReceiveResult:
        return await self._run(self._blocking.receive_nowait, max_bytes)

    async def set_receive_buffer_size(self, size: int) -> None:
        await self._run(self._blocking.set_receive_buffer_size, size)

    async def close(self) -> None:
        await self._run(self._blocking.close)

    async def bound(self) -> bool:
        return await self._run(self._blocking.bound)

    async def connected(self) -> bool:
        return await self._run(self._blocking.connected)

    async def ttl(self) -> int:
        return await self._run(self._blocking.ttl)

    async def set_ttl(self, ttl: int) -> None:
        await self._run(self._blocking.set_ttl, ttl)

    async def multicast_join_group(self, group: str, interface: str | None = None) -> None:
        await self._run(self._blocking.multicast_join_group, group, interface)

    async def multicast_leave_group(self, group: str, interface: str | None = None) -> None:
        await self._run(self._blocking.multicast_leave_group, group, interface)

    async def multicast_interface(self) -> str:
        return await self._run(self._blocking.multicast_interface)

    async def multicast_set_interface(self, interface: str | None) -> None:
        await self._run(self._blocking.multicast_set_interface, interface)

    async def multicast_loopback(self) -> bool:
        return await self._run(self._blocking.multicast_loopback)

    async def multicast_set_loopback(self, loopback: bool) -> None:
        await self._run(self._blocking.multicast_set_loopback, loopback)

    async def multicast_ttl(self) -> int:
        return await self._run(self._blocking.multicast_ttl)

    async def multicast_set_ttl(self, ttl: int) -> None:
        await self._run(self._blocking.multicast_set_ttl, ttl)

    def receive_stream(self, max_bytes: int | None = None) -> AsyncIterator[Datagram]:
        """The blocking stream's iterator, one ``next`` per ``anext``; ``aclose`` closes it."""
        return self._receive_stream(max_bytes)

    async def _receive_stream(self, max_bytes: int | None) -> AsyncGenerator[Datagram, None]:
        stream = self._blocking.receive_stream(max_bytes)  # opens nothing until the first next
        try:
            while (datagram := await self._run(next, stream, None)) is not None:
                yield datagram
        finally:
            await self._run(stream.close)

    async def send_stream(self, datagrams: AsyncIterator[Frame] | Iterable[Frame]) -> int:
        """An async iterator is pulled from the test's loop, frame by frame, by the worker thread."""
        if isinstance(datagrams, AsyncIterator):
            frames: Iterable[Frame] = _pulled(datagrams, asyncio.get_running_loop())
        else:
            frames = datagrams
        return await self._run(self._blocking.send_stream, frames)


def _pulled(frames: AsyncIterator[Frame], loop: asyncio.AbstractEventLoop) -> Iterator[Frame]:
    """An async iterator of the test's loop as a plain iterator for a worker thread."""

    async def pull() -> Frame | None:
        return await anext(frames, None)

    while (frame := asyncio.run_coroutine_threadsafe(pull(), loop).result()) is not None:
        yield frame


class AdaptedPortStream:
    """``PortStream`` (send, send_eof, receive, aclose) over :class:`BlockingPortStream`."""

    def __init__(self, broker: AdaptedBroker, blocking: BlockingPortStream) -> None:
        self._broker = broker
        self._blocking = blocking

    async def send(self, data: bytes) -> None:
        await self._broker._run(self._blocking.send, data)

    async def send_eof(self) -> None:
        await self._broker._run(self._blocking.send_eof)

    async def receive(self) -> bytes | None:
        return await self._broker._run(self._blocking.receive)

    async def aclose(self) -> None:
        await self._broker._run(self._blocking.close)


_ADAPTED_CLASSES: tuple[tuple[type[Any], type[_AdaptedHandle]], ...] = (
    (BlockingInputPort, AdaptedInputPort),
    (BlockingOutputPort, AdaptedOutputPort),
    (BlockingListener, AdaptedListener),
    (BlockingUdpSocket, AdaptedUdpSocket),
    (BlockingCustodian, AdaptedCustodian),
)


class AdaptedAdmin(_Pooled[Admin]):
    """:class:`AsyncAdmin`'s methods, each running :class:`Admin`'s in a worker thread."""

    @classmethod
    def connect(
        cls,
        target: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        transport: str | None = None,
        credentials: Any = None,
        verify: Any = True,
    ) -> Awaitable[AdaptedAdmin]:
        """Awaitable, as ``AsyncAdmin.connect`` is (the suite never uses it in ``async with``)."""
        return cls._connect(
            target, token=token, token_file=token_file, transport=transport, credentials=credentials, verify=verify
        )

    @classmethod
    async def _connect(cls, target: str | None, **options: Any) -> AdaptedAdmin:
        return cls(*await _opened(Admin.connect, target, **options))

    async def list_sessions(self, principal: str | None = None) -> list[dict[str, Any]]:
        return await self._run(self._blocking.list_sessions, principal)

    async def describe_session(self, session: str) -> dict[str, Any]:
        return await self._run(self._blocking.describe_session, session)

    async def kill_session(self, session: str, reason: str = "") -> dict[str, Any]:
        return await self._run(self._blocking.kill_session, session, reason)

    async def kill_handle(self, handle: str, reason: str = "") -> dict[str, Any]:
        return await self._run(self._blocking.kill_handle, handle, reason)

    def watch_events(self) -> AsyncGenerator[dict[str, Any], None]:
        """The blocking stream's iterator, one ``next`` per ``anext``; ``aclose`` closes it."""
        return self._watch_events()

    async def _watch_events(self) -> AsyncGenerator[dict[str, Any], None]:
        events = self._blocking.watch_events()  # opens nothing until the first next
        try:
            while (event := await self._run(next, events, None)) is not None:
                yield event
        finally:
            await self._run(events.close)
