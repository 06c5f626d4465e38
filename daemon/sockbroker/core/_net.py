"""Small pieces shared by the TCP and UDP modules: contracts, resolution, wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import socket
import struct
from collections.abc import Mapping

from .errors import ContractError, ResourceExhaustedError, contract_violation, from_os_error
from .limits import Limits

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple]  # type: ignore[type-arg]

__all__ = [
    "Signal",
    "can_accept",
    "descriptor_ceiling",
    "lendable",
    "check_port",
    "drop_every_packet",
    "host_of",
    "resolve",
    "wait_any",
]


def descriptor_ceiling(limits: Limits) -> int:
    """Descriptors below this number may be lent to clients; the rest are the front doors'."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return soft - min(2 * limits.connections_per_door + 512, soft // 2)


def lendable(limits: Limits, who: str, sock: socket.socket) -> None:
    """Refuse (and close) a new socket for a client whose descriptor is in the doors' reserve.

    Linux gives the lowest free descriptor, so a new one numbered N means N are open below it:
    refusing every lent socket numbered past the ceiling keeps lent sockets under it, in O(1),
    with no count to keep."""
    if sock.fileno() >= descriptor_ceiling(limits):
        sock.close()
        raise ResourceExhaustedError(who, "too many open sockets", {"limit": descriptor_ceiling(limits)})


#: A classic BPF program of one instruction, ``ret #0``: keep nothing of any packet.
_DROP_ALL = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, k = 0
_SO_ATTACH_FILTER, _SO_DETACH_FILTER = 26, 27  # asm-generic/socket.h (Python names neither)


def drop_every_packet(sock: socket.socket, drop: bool = True) -> None:
    """From now on (``drop``) the kernel drops every packet for ``sock`` before TCP sees it, or no
    longer does. On a connection: nothing more is accepted or acknowledged, and what came before
    stays readable. On a listening socket: SYNs are dropped (connecting clients retransmit them,
    backing off) while connections already made are untouched, their sockets filtered by their own
    filter; a connection made while none was attached has none."""
    if drop:
        program = struct.pack("HP", 1, ctypes.addressof(_DROP_ALL))  # struct sock_fprog
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)
    else:
        with contextlib.suppress(FileNotFoundError):  # ENOENT: no filter attached
            sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)


def can_accept(limits: Limits, who: str, listening: socket.socket) -> None:
    """Before an accept, which must not take a peer's connection off the queue only to drop it:
    a duplicate of the listening socket tells the number the accepted socket would get."""
    probe = os.dup(listening.fileno())
    os.close(probe)
    if probe >= descriptor_ceiling(limits):
        raise ResourceExhaustedError(who, "too many open sockets", {"limit": descriptor_ceiling(limits)})


def check_port(who: str, value: object, *, listen: bool = False, optional: bool = False) -> int | None:
    """``port-number?`` is 1–65535, ``listen-port-number?`` 0–65535."""
    if value is None and optional:
        return None
    low = 0 if listen else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise contract_violation(who, "listen-port-number?" if listen else "port-number?", value)
    return value


def check_timeout(who: str, value: float | None) -> float | None:
    if value is None:
        return None
    if not value >= 0 or value == float("inf"):
        raise contract_violation(who, "(or/c #f (>=/c 0))", value)
    return value


def check_hostname(who: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > 253 or "\x00" in value:
        raise contract_violation(who, "string?" if not optional else "(or/c string? #f)", value)
    return value


def host_of(sockaddr: tuple) -> str:  # type: ignore[type-arg]
    return str(sockaddr[0]).split("%", 1)[0]


async def resolve(
    who: str,
    host: str | None,
    port: int,
    *,
    kind: socket.SocketKind,
    family: int = socket.AF_UNSPEC,
    passive: bool = False,
    details: Mapping[str, object] | None = None,
    what: str = "host not found",
) -> list[AddrInfo]:
    """getaddrinfo on the loop's resolver, with errors as ``exn:fail:network:errno`` (``gai``):
    ``who: what``, in Racket's words: ``host not found`` (``tcp-connect``), ``address-resolution
    error`` (``tcp-listen``), ``can't resolve address`` (UDP; ``can't resolve multicast address``
    and ``can't resolve interface address`` for a multicast group and its interface)."""
    loop = asyncio.get_running_loop()
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=kind, flags=flags)
    except UnicodeError as exc:
        raise ContractError(who, "bad hostname", {"hostname": host, "reason": str(exc)}) from None
    except OSError as exc:
        raise from_os_error(who, what, exc, details or {"hostname": host}) from None
    return infos  # type: ignore[return-value]


class Signal:
    """A level-triggered wake-up: waiters re-check their condition after every :meth:`fire`."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def __bool__(self) -> bool:
        return bool(self._waiters)

    async def wait(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)

    def add(self, fut: asyncio.Future[None]) -> None:
        self._waiters.append(fut)

    def discard(self, fut: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)

    def fire(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


async def wait_any(signals: list[Signal]) -> None:
    """Wait until any of the signals fires."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for signal in signals:
        signal.add(fut)
    try:
        await fut
    finally:
        if not fut.done():
            fut.cancel()
        for signal in signals:
            signal.discard(fut)
