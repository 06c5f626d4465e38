"""The Racket error scenarios, run against the daemon through any door.

DESIGN.md §4: where Racket 8.7 raises for an operation and the documentation is silent, the
daemon raises Racket's kind, errno and first message line; where DESIGN or the docs decide
otherwise, the daemon departs on purpose, and :data:`DECIDED` says how and why. ``errors.rkt``
(beside this file) runs each scenario in Racket; this module runs the same scenarios (same ids)
through a broker of any door: the async client over gRPC or REST, the in-process core channel,
or the blocking client's adapter. Two users:

* ``tests/behaviour/test_racket_errors.py``, in the normal suite, against Racket's answers as
  recorded in :data:`RACKET_JSONL` (no racket process at test time);
* ``compare.py``, the side-by-side table against a fresh ``racket`` run or a saved one.

Re-recording Racket's answers (after a change to ``errors.rkt``, or for another Racket version):
``racket tests/racket/errors.rkt > tests/racket/racket-8.7.jsonl`` (3–6 minutes: one racket
process per scenario); see ``README.md`` beside this file.

Loopback only; no name is resolved but "localhost" (answered by /etc/hosts). 192.0.2.1
(TEST-NET) is only bound to, which the kernel refuses before any packet is sent.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import socket
import struct
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sockbroker_client import (
    BrokerError,
    port_read_ready_evt,
    port_write_ready_evt,
    tcp_accept_evt,
    tcp_listener_evt,
    udp_receive_evt,
    udp_receive_ready_evt,
    udp_send_ready_evt,
    udp_send_to_evt,
)

__all__ = [
    "DECIDED",
    "NOT_OFFERED",
    "POLICY",
    "RACKET_JSONL",
    "SCENARIOS",
    "SCENARIO_TIMEOUT",
    "Ctx",
    "Decided",
    "Outcome",
    "load_racket",
    "run_scenario",
]

HERE = pathlib.Path(__file__).resolve().parent
#: Racket 8.7's answers, one JSON object per scenario, as ``errors.rkt`` printed them.
RACKET_JSONL = HERE / "racket-8.7.jsonl"
SCENARIO_TIMEOUT = 10.0
GROUP = "239.255.0.1"
BIG = b"A" * 65508

#: The daemon's policy for these scenarios: what is under test is the operation, not the policy.
#: 192.0.2.1 (TEST-NET, not on this machine) may be listened on so that the kernel refuses it;
#: every group may be joined so that the group's validity is what is checked.
POLICY: dict[str, list[str]] = {
    "allow_listen": ["127.0.0.0/8", "::1/128", "192.0.2.1/32"],
    "allow_connect": ["127.0.0.0/8", "::1/128"],
    "allow_multicast": ["239.255.0.0/16", "127.0.0.0/8", "ff00::/8"],
}


# ═════════════════════════════ outcomes ═════════════════════════════


@dataclass(frozen=True)
class Outcome:
    kind: str | None  # None: nothing raised
    errno: int | None = None
    first_line: str | None = None
    message: str | None = None
    result: str | None = None

    @classmethod
    def from_racket(cls, row: dict[str, Any]) -> Outcome:
        return cls(row["kind"], row.get("errno"), row.get("first_line"), row.get("message"), row.get("result"))

    def key(self) -> tuple[str | None, int | None, str | None]:
        """What DESIGN §4 compares: kind, errno, first message line."""
        return self.kind, self.errno, self.first_line

    def labels(self) -> list[str]:
        """The field names of the detail lines (``  socket: …`` → ``socket``)."""
        lines = (self.message or "").split("\n")[1:]
        return [line.strip().split(":", 1)[0] for line in lines if line.startswith("  ") and ":" in line]

    def show(self) -> str:
        if self.kind is None:
            return f"no error → {self.result}"
        if self.kind in ("n/a", "timeout", "setup-failed", "crash") and not self.first_line:
            return self.kind + (f" ({self.result})" if self.result else "")
        errno = f" {self.errno}" if self.errno is not None else ""
        return f"{self.kind}{errno}: {self.first_line}"


def outcome_of(exc: BaseException) -> Outcome:
    if isinstance(exc, BrokerError):
        message = exc.message
        return Outcome(exc.kind, exc.errno, message.split("\n", 1)[0], message)
    text = f"{type(exc).__name__}: {exc}"
    return Outcome("client:" + type(exc).__name__, None, text.split("\n", 1)[0], text)


async def probe(operation: Callable[[], Awaitable[Any]]) -> Outcome:
    """Run the operation under test: what it raises (or returns) is the scenario's outcome."""
    try:
        value = await operation()
    except Exception as exc:
        return outcome_of(exc)
    return Outcome(None, result=repr(value)[:80])


def load_racket(path: pathlib.Path = RACKET_JSONL) -> dict[str, Outcome]:
    """Racket's answers, as ``errors.rkt`` printed them (one JSON object a line)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["scenario"]: Outcome.from_racket(row) for row in rows}


# ═════════════════════════════ fixtures ═════════════════════════════


class Ctx:
    """One scenario's session (a broker of any door: async client, core channel, blocking
    adapter), and the raw loopback peers it may need (closed afterwards)."""

    def __init__(self, broker: Any) -> None:
        self.b = broker
        self._sockets: list[socket.socket] = []

    def raw_listener(self, host: str = "127.0.0.1") -> socket.socket:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.bind((host, 0))
        s.listen(8)
        s.setblocking(False)
        self._sockets.append(s)
        return s

    def free_port(self, host: str = "127.0.0.1") -> int:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])

    def raw_udp(self) -> tuple[socket.socket, int]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        self._sockets.append(s)
        return s, int(s.getsockname()[1])

    async def accept_raw(self, listener: socket.socket) -> socket.socket:
        loop = asyncio.get_running_loop()
        conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
        self._sockets.append(conn)
        return conn

    async def conn(self) -> tuple[Any, Any]:
        """A daemon connection to a daemon listener on loopback (both ends the daemon's)."""
        listener = await self.b.tcp_listen(0, 4, True, "127.0.0.1")
        port = (await listener.addresses(True))[1]
        ports: tuple[Any, Any] = await self.b.tcp_connect("127.0.0.1", port)
        await listener.accept(timeout=5)
        return ports

    async def closed_listener(self) -> Any:
        listener = await self.b.tcp_listen(0, 4, True, "127.0.0.1")
        await listener.close()
        return listener

    async def udp_bound(self) -> Any:
        sock = await self.b.udp_open_socket()
        await sock.bind("127.0.0.1", 0)
        return sock

    async def udp_port(self, sock: Any) -> int:
        return int((await self.b.tcp_addresses(sock, True))[1])

    async def udp_closed(self) -> Any:
        sock = await self.b.udp_open_socket()
        await sock.close()
        return sock

    async def udp_connected(self) -> Any:
        peer = await self.udp_bound()
        sock = await self.udp_bound()
        await sock.connect("127.0.0.1", await self.udp_port(peer))
        return sock, await self.udp_port(peer)

    async def shut_down_custodian(self) -> Any:
        custodian = await self.b.make_custodian()
        await self.b.custodian_shutdown_all(custodian)
        return custodian

    async def reset_conn(self) -> tuple[Any, Any]:
        """A daemon connection whose peer has reset it (closed with SO_LINGER 0 after data came)."""
        raw = self.raw_listener()
        ports: tuple[Any, Any] = await self.b.tcp_connect("127.0.0.1", raw.getsockname()[1])
        peer = await self.accept_raw(raw)
        await ports[1].write(b"unread", flush=True)
        await asyncio.sleep(0.1)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        await asyncio.sleep(0.2)
        return ports

    async def call_with_id(self, method: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
        """One RPC tagged with a call id, through this broker's own channel."""
        channel = getattr(self.b, "channel", None)
        if callable(getattr(channel, "call", None)):
            reply: dict[str, Any] = await channel.call(method, args, self.b.session, call_id)  # type: ignore[union-attr]
            return reply
        # The blocking client (tests/blocking_adapter.py): its session's channel, on its own loop.
        blocking = self.b._blocking
        coro = blocking._async.channel.call(method, args, blocking.session, call_id)
        result: dict[str, Any] = await asyncio.to_thread(blocking._run, coro)
        return result

    async def probe_break(self, method: str, args: dict[str, Any]) -> Outcome:
        """A blocking call broken by ``Sessions.CancelCall`` after a moment (Racket: break-thread)."""
        call_id = "cmp-" + uuid.uuid4().hex[:12]
        task = asyncio.ensure_future(self.call_with_id(method, args, call_id))
        await asyncio.sleep(0.2)
        await self.b.call("Sessions.CancelCall", call=call_id)
        return await probe(lambda: asyncio.wait_for(task, 5))

    def close(self) -> None:
        for s in self._sockets:
            s.close()


Scenario = Callable[[Ctx], Awaitable[Outcome]]
#: Every scenario the daemon can run, by the id ``errors.rkt`` gives it.
SCENARIOS: dict[str, Scenario] = {}
#: Scenarios of ``errors.rkt`` that have no daemon operation to run, and why.
NOT_OFFERED: dict[str, str] = {
    "udp/receive/start-past-end": "Udp.Receive takes a max, not a buffer with a start index",
}


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    def register(f: Scenario) -> Scenario:
        SCENARIOS[name] = f
        return f

    return register


def simple(name: str, make: Callable[[Ctx], Awaitable[Callable[[], Awaitable[Any]]]]) -> None:
    """A scenario whose setup returns the operation under test."""

    async def run(ctx: Ctx) -> Outcome:
        return await probe(await make(ctx))

    SCENARIOS[name] = run


async def run_scenario(name: str, broker: Any) -> Outcome:
    """Run one scenario in ``broker``'s session: its outcome, ``timeout`` or ``setup-failed``."""
    ctx = Ctx(broker)
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            return await SCENARIOS[name](ctx)
    except TimeoutError:
        return Outcome("timeout")
    except Exception as exc:
        failed = outcome_of(exc)
        return Outcome("setup-failed", failed.errno, failed.first_line, failed.message)
    finally:
        ctx.close()


# ═════════════════════════════ scenarios (ids as in errors.rkt) ═════════════════════════════


def _closed_in(
    op: Callable[[Ctx, Any], Awaitable[Any]],
) -> Callable[[Ctx], Awaitable[Callable[[], Awaitable[Any]]]]:
    async def make(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
        i, _ = await ctx.conn()
        await i.close()
        return lambda: op(ctx, i)

    return make


def _closed_out(
    op: Callable[[Ctx, Any], Awaitable[Any]], *, abandon: bool = False
) -> Callable[[Ctx], Awaitable[Callable[[], Awaitable[Any]]]]:
    async def make(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
        _, o = await ctx.conn()
        await (o.abandon() if abandon else o.close())
        return lambda: op(ctx, o)

    return make


simple("tcp/in-closed/read-bytes-avail!", _closed_in(lambda c, i: i.read_bytes_avail(10, timeout=2)))
simple("tcp/in-closed/read-bytes-avail!*", _closed_in(lambda c, i: i.read_bytes_avail_nowait(10)))
simple("tcp/in-closed/read-bytes", _closed_in(lambda c, i: i.read_bytes(10, timeout=2)))
simple("tcp/in-closed/peek-bytes-avail!", _closed_in(lambda c, i: i.peek_bytes_avail(10, timeout=2)))
simple("tcp/in-closed/tcp-addresses", _closed_in(lambda c, i: c.b.tcp_addresses(i, True)))
simple("tcp/in-closed/tcp-abandon-port", _closed_in(lambda c, i: i.abandon()))
simple("tcp/in-closed/file-stream-buffer-mode-set", _closed_in(lambda c, i: i.set_buffer_mode("none")))
simple("tcp/in-closed/file-stream-buffer-mode-get", _closed_in(lambda c, i: c.b.describe(i)))
simple("tcp/in-closed/close-input-port", _closed_in(lambda c, i: i.close()))
simple("tcp/in-closed/sync-read-ready", _closed_in(lambda c, i: c.b.sync(port_read_ready_evt(i), timeout=0)))

simple("tcp/out-closed/write-bytes", _closed_out(lambda c, o: o.write(b"x")))
simple("tcp/out-closed/flush-output", _closed_out(lambda c, o: o.flush()))
simple("tcp/out-closed/tcp-addresses", _closed_out(lambda c, o: c.b.tcp_addresses(o, True)))
simple("tcp/out-closed/tcp-abandon-port", _closed_out(lambda c, o: o.abandon()))
simple("tcp/out-closed/file-stream-buffer-mode-set", _closed_out(lambda c, o: o.set_buffer_mode("none")))
simple("tcp/out-closed/file-stream-buffer-mode-get", _closed_out(lambda c, o: c.b.describe(o)))
simple("tcp/out-closed/close-output-port", _closed_out(lambda c, o: o.close()))
simple("tcp/out-closed/sync-write-ready", _closed_out(lambda c, o: c.b.sync(port_write_ready_evt(o), timeout=0)))
simple("tcp/out-abandoned/write-bytes", _closed_out(lambda c, o: o.write(b"x"), abandon=True))


async def _wrong_direction_write(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
    i, _ = await ctx.conn()
    return lambda: ctx.b.call("Ports.Write", port=i.handle, data=b"x")


async def _wrong_direction_read(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
    _, o = await ctx.conn()
    return lambda: ctx.b.call("Ports.Read", port=o.handle, max=1, timeout=2)


async def _line_on_input(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
    i, _ = await ctx.conn()
    return lambda: i.set_buffer_mode("line")


simple("tcp/in/write-bytes", _wrong_direction_write)
simple("tcp/out/read-bytes-avail!", _wrong_direction_read)
simple("tcp/in/file-stream-buffer-mode-line", _line_on_input)


@scenario("tcp/reset/read-bytes-avail!")
async def _reset_read(ctx: Ctx) -> Outcome:
    i, _ = await ctx.reset_conn()
    return await probe(lambda: i.read_bytes_avail(10, timeout=2))


@scenario("tcp/reset/write-bytes+flush")
async def _reset_write(ctx: Ctx) -> Outcome:
    _, o = await ctx.reset_conn()

    async def three_writes() -> None:
        for _ in range(3):
            await o.write(b"x", flush=True)
            await asyncio.sleep(0.05)

    return await probe(three_writes)


def _closed_listener(
    op: Callable[[Ctx, Any], Awaitable[Any]],
) -> Callable[[Ctx], Awaitable[Callable[[], Awaitable[Any]]]]:
    async def make(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
        listener = await ctx.closed_listener()
        return lambda: op(ctx, listener)

    return make


simple("tcp/listener-closed/tcp-accept", _closed_listener(lambda c, lst: lst.accept(timeout=2)))
simple("tcp/listener-closed/tcp-accept-ready?", _closed_listener(lambda c, lst: lst.accept_ready()))
simple("tcp/listener-closed/tcp-close", _closed_listener(lambda c, lst: lst.close()))
simple("tcp/listener-closed/tcp-addresses", _closed_listener(lambda c, lst: c.b.tcp_addresses(lst, True)))
simple("tcp/listener-closed/sync-accept-evt", _closed_listener(lambda c, lst: c.b.sync(tcp_accept_evt(lst), timeout=0)))
simple("tcp/listener-closed/sync-listener", _closed_listener(lambda c, lst: c.b.sync(tcp_listener_evt(lst), timeout=0)))


async def _listen_in_use(ctx: Ctx, reuse: bool) -> Callable[[], Awaitable[Any]]:
    first = await ctx.b.tcp_listen(0, 4, reuse, "127.0.0.1")
    port = (await first.addresses(True))[1]
    return lambda: ctx.b.tcp_listen(port, 4, reuse, "127.0.0.1")


async def _const(f: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    return f


simple("tcp/listen/in-use", lambda c: _listen_in_use(c, False))
simple("tcp/listen/in-use-reuse", lambda c: _listen_in_use(c, True))
simple("tcp/listen/port-70000", lambda c: _const(lambda: c.b.tcp_listen(70000, 4, False, "127.0.0.1")))
simple("tcp/listen/port-negative", lambda c: _const(lambda: c.b.tcp_listen(-1, 4, False, "127.0.0.1")))
simple("tcp/listen/backlog-negative", lambda c: _const(lambda: c.b.tcp_listen(0, -1, False, "127.0.0.1")))
simple("tcp/listen/address-not-local", lambda c: _const(lambda: c.b.tcp_listen(0, 4, False, "192.0.2.1")))

simple("tcp/connect/refused", lambda c: _const(lambda: c.b.tcp_connect("127.0.0.1", c.free_port())))
simple("tcp/connect/refused-ipv6", lambda c: _const(lambda: c.b.tcp_connect("::1", c.free_port("::1"))))
simple(
    "tcp/connect/local-hostname-without-port",
    lambda c: _const(lambda: c.b.tcp_connect("127.0.0.1", c.free_port(), "127.0.0.1", None)),
)
simple("tcp/connect/port-0", lambda c: _const(lambda: c.b.tcp_connect("127.0.0.1", 0)))
simple("tcp/connect/port-70000", lambda c: _const(lambda: c.b.tcp_connect("127.0.0.1", 70000)))
simple(
    "tcp/connect/local-port-0", lambda c: _const(lambda: c.b.tcp_connect("127.0.0.1", c.free_port(), "127.0.0.1", 0))
)


async def _local_port_in_use(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
    taken, target = ctx.raw_listener(), ctx.raw_listener()
    return lambda: ctx.b.tcp_connect("127.0.0.1", target.getsockname()[1], "127.0.0.1", taken.getsockname()[1])


async def _local_family_mismatch(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
    target = ctx.raw_listener()
    return lambda: ctx.b.tcp_connect("127.0.0.1", target.getsockname()[1], "::1", ctx.free_port("::1"))


simple("tcp/connect/local-port-in-use", _local_port_in_use)
simple("tcp/connect/local-family-mismatch", _local_family_mismatch)


@scenario("tcp/accept/break")
async def _accept_break(ctx: Ctx) -> Outcome:
    listener = await ctx.b.tcp_listen(0, 4, True, "127.0.0.1")
    return await ctx.probe_break("Tcp.Accept", {"listener": listener.handle})


@scenario("udp/receive/break")
async def _receive_break(ctx: Ctx) -> Outcome:
    sock = await ctx.udp_bound()
    return await ctx.probe_break("Udp.Receive", {"udp": sock.handle, "max": 10})


async def _under_shut_down(ctx: Ctx, what: str) -> Callable[[], Awaitable[Any]]:
    custodian = await ctx.shut_down_custodian()
    if what == "listen":
        return lambda: ctx.b.tcp_listen(0, 4, True, "127.0.0.1", custodian=custodian)
    if what == "connect":
        target = ctx.raw_listener()
        return lambda: ctx.b.tcp_connect("127.0.0.1", target.getsockname()[1], custodian=custodian)
    return lambda: ctx.b.udp_open_socket(custodian=custodian)


simple("custodian/shut-down/tcp-listen", lambda c: _under_shut_down(c, "listen"))
simple("custodian/shut-down/tcp-connect", lambda c: _under_shut_down(c, "connect"))
simple("custodian/shut-down/udp-open-socket", lambda c: _under_shut_down(c, "udp"))


@scenario("custodian/shut-down/udp-send-to")
async def _send_after_shutdown(ctx: Ctx) -> Outcome:
    custodian = await ctx.b.make_custodian()
    sock = await ctx.b.udp_open_socket(custodian=custodian)
    target = await ctx.udp_bound()
    port = (await target.addresses(port_numbers=True))[1]
    await ctx.b.custodian_shutdown_all(custodian)
    return await probe(lambda: sock.send_to("127.0.0.1", port, b"x"))


# UDP: open, bind, connect
simple("udp/open/family-port-0", lambda c: _const(lambda: c.b.udp_open_socket("127.0.0.1", 0)))


def _on(
    setup: Callable[[Ctx], Awaitable[Any]], op: Callable[[Ctx, Any], Awaitable[Any]]
) -> Callable[[Ctx], Awaitable[Callable[[], Awaitable[Any]]]]:
    async def make(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
        sock = await setup(ctx)
        return lambda: op(ctx, sock)

    return make


async def _fresh(ctx: Ctx) -> Any:
    return await ctx.b.udp_open_socket()


async def _bound(ctx: Ctx) -> Any:
    return await ctx.udp_bound()


async def _closed(ctx: Ctx) -> Any:
    return await ctx.udp_closed()


async def _connected(ctx: Ctx) -> Any:
    return await ctx.udp_connected()


simple("udp/close/twice", _on(_closed, lambda c, u: u.close()))
simple("udp/bind/twice", _on(_bound, lambda c, u: u.bind("127.0.0.1", 0)))
simple("udp/bind/closed", _on(_closed, lambda c, u: u.bind("127.0.0.1", 0)))
simple("udp/bind/port-70000", _on(_fresh, lambda c, u: u.bind("127.0.0.1", 70000)))


async def _bind_in_use(ctx: Ctx, reuse: bool) -> Callable[[], Awaitable[Any]]:
    first = await ctx.udp_bound()
    port = await ctx.udp_port(first)
    second = await ctx.b.udp_open_socket()
    return lambda: second.bind("127.0.0.1", port, reuse)


simple("udp/bind/in-use", lambda c: _bind_in_use(c, False))
simple("udp/bind/in-use-reuse", lambda c: _bind_in_use(c, True))
simple("udp/bind/address-not-local", _on(_fresh, lambda c, u: u.bind("192.0.2.1", 0)))
simple("udp/connect/hostname-only", _on(_fresh, lambda c, u: u.connect("127.0.0.1", None)))
simple("udp/connect/port-only", _on(_fresh, lambda c, u: u.connect(None, 5000)))
simple("udp/connect/port-0", _on(_fresh, lambda c, u: u.connect("127.0.0.1", 0)))
simple("udp/connect/closed", _on(_closed, lambda c, u: u.connect("127.0.0.1", 5000)))


# UDP: an IPv6 socket given IPv4 addresses
async def _udp6(ctx: Ctx) -> Any:
    return await ctx.b.udp_open_socket("::1", None)


async def _family_mismatch(ctx: Ctx, op: str) -> Callable[[], Awaitable[Any]]:
    sock = await _udp6(ctx)
    _, port = ctx.raw_udp()
    if op == "bind":
        return lambda: sock.bind("127.0.0.1", 0)
    if op == "connect":
        return lambda: sock.connect("127.0.0.1", port)
    return lambda: sock.send_to("127.0.0.1", port, b"x")


simple("udp/bind/family-mismatch", lambda c: _family_mismatch(c, "bind"))
simple("udp/connect/family-mismatch", lambda c: _family_mismatch(c, "connect"))
simple("udp/send-to/family-mismatch", lambda c: _family_mismatch(c, "send-to"))

# UDP: an IPv4 socket given IPv6 addresses
simple("udp/bind/ipv6-on-ipv4", _on(_fresh, lambda c, u: u.bind("::1", 0)))
simple("udp/connect/ipv6-on-ipv4", _on(_fresh, lambda c, u: u.connect("::1", 9)))
simple("udp/send-to/ipv6-on-ipv4", _on(_fresh, lambda c, u: u.send_to("::1", 9, b"x")))

# UDP: send, send-to, receive
simple("udp/send/unconnected", _on(_fresh, lambda c, u: u.send(b"x")))
simple("udp/send-to/connected", _on(_connected, lambda c, up: up[0].send_to("127.0.0.1", up[1], b"x")))
simple("udp/send-to/port-0", _on(_fresh, lambda c, u: u.send_to("127.0.0.1", 0, b"x")))


def _send_to_range(start: int, end: int | None) -> Callable[[Ctx], Awaitable[Callable[[], Awaitable[Any]]]]:
    async def make(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
        sock = await ctx.b.udp_open_socket()
        _, port = ctx.raw_udp()
        return lambda: sock.send_to("127.0.0.1", port, b"abc", start, end)

    return make


simple("udp/send-to/start-past-end", _send_to_range(4, None))
simple("udp/send-to/end-past-length", _send_to_range(0, 10))
simple("udp/send-to/end-before-start", _send_to_range(2, 1))
simple("udp/send/end-past-length", _on(_connected, lambda c, up: up[0].send(b"abc", 0, 10)))


async def _too_big_to(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
    sock = await ctx.b.udp_open_socket()
    _, port = ctx.raw_udp()
    return lambda: sock.send_to("127.0.0.1", port, BIG)


simple("udp/send-to/too-big", _too_big_to)
simple("udp/send/too-big", _on(_connected, lambda c, up: up[0].send(BIG)))
simple("udp/receive/unbound", _on(_fresh, lambda c, u: u.receive(10, timeout=2)))
simple("udp/receive*/unbound", _on(_fresh, lambda c, u: u.receive_nowait(10)))

# UDP: options
simple("udp/set-receive-buffer-size/huge", _on(_fresh, lambda c, u: u.set_receive_buffer_size(2**40)))
simple("udp/set-receive-buffer-size/int-max", _on(_fresh, lambda c, u: u.set_receive_buffer_size(2**31 - 1)))
simple("udp/set-receive-buffer-size/zero", _on(_fresh, lambda c, u: u.set_receive_buffer_size(0)))
simple("udp/set-ttl/0", _on(_fresh, lambda c, u: u.set_ttl(0)))
simple("udp/set-ttl/256", _on(_fresh, lambda c, u: u.set_ttl(256)))
simple("udp/multicast-set-ttl/256", _on(_fresh, lambda c, u: u.multicast_set_ttl(256)))
simple("udp/multicast-set-ttl/0", _on(_fresh, lambda c, u: u.multicast_set_ttl(0)))

# UDP: multicast groups (interface 127.0.0.1)
simple("udp/multicast-join/unicast", _on(_bound, lambda c, u: u.multicast_join_group("127.0.0.1", "127.0.0.1")))
simple("udp/multicast-join/ipv6-group", _on(_bound, lambda c, u: u.multicast_join_group("ff02::1", "127.0.0.1")))
simple(
    "udp/multicast-join/name-not-address", _on(_bound, lambda c, u: u.multicast_join_group("localhost", "127.0.0.1"))
)


async def _join_twice(ctx: Ctx) -> Callable[[], Awaitable[Any]]:
    sock = await ctx.udp_bound()
    await sock.multicast_join_group(GROUP, "127.0.0.1")
    return lambda: sock.multicast_join_group(GROUP, "127.0.0.1")


simple("udp/multicast-join/twice", _join_twice)
simple("udp/multicast-leave/not-joined", _on(_bound, lambda c, u: u.multicast_leave_group(GROUP, "127.0.0.1")))

# UDP: multicast interfaces
simple("udp/multicast-join/ipv6-interface", _on(_bound, lambda c, u: u.multicast_join_group(GROUP, "::1")))
simple("udp/multicast-set-interface/ipv6", _on(_fresh, lambda c, u: u.multicast_set_interface("::1")))
simple("udp/multicast-set-interface/not-local", _on(_fresh, lambda c, u: u.multicast_set_interface("192.0.2.1")))


# UDP: IPv4 multicast options on an IPv6 socket
async def _bound6(ctx: Ctx) -> Any:
    sock = await _udp6(ctx)
    await sock.bind("::1", 0)
    return sock


simple("udp/multicast-join/ipv6-socket", _on(_bound6, lambda c, u: u.multicast_join_group(GROUP, "127.0.0.1")))
simple("udp/multicast-ttl/ipv6-socket", _on(_udp6, lambda c, u: u.multicast_ttl()))
simple("udp/multicast-interface/ipv6-socket", _on(_udp6, lambda c, u: u.multicast_interface()))

# UDP: every operation on a closed socket
CLOSED_UDP: dict[str, Callable[[Ctx, Any], Awaitable[Any]]] = {
    "udp-addresses": lambda c, u: c.b.tcp_addresses(u, True),
    "udp-send-to": lambda c, u: u.send_to("127.0.0.1", 9, b"x"),
    "udp-send-to*": lambda c, u: u.send_to_nowait("127.0.0.1", 9, b"x"),
    "udp-send": lambda c, u: u.send(b"x"),
    "udp-receive!": lambda c, u: u.receive(10, timeout=2),
    "udp-receive!*": lambda c, u: u.receive_nowait(10),
    "udp-set-receive-buffer-size!": lambda c, u: u.set_receive_buffer_size(65536),
    "udp-ttl": lambda c, u: u.ttl(),
    "udp-set-ttl!": lambda c, u: u.set_ttl(1),
    "udp-multicast-join-group!": lambda c, u: u.multicast_join_group(GROUP, "127.0.0.1"),
    "udp-multicast-leave-group!": lambda c, u: u.multicast_leave_group(GROUP, "127.0.0.1"),
    "udp-multicast-interface": lambda c, u: u.multicast_interface(),
    "udp-multicast-set-interface!": lambda c, u: u.multicast_set_interface("127.0.0.1"),
    "udp-multicast-loopback?": lambda c, u: u.multicast_loopback(),
    "udp-multicast-set-loopback!": lambda c, u: u.multicast_set_loopback(True),
    "udp-multicast-ttl": lambda c, u: u.multicast_ttl(),
    "udp-multicast-set-ttl!": lambda c, u: u.multicast_set_ttl(1),
    "udp-bound?": lambda c, u: u.bound(),
    "udp-connected?": lambda c, u: u.connected(),
    "sync-udp-receive-ready-evt": lambda c, u: c.b.sync(udp_receive_ready_evt(u), timeout=0),
    "sync-udp-send-ready-evt": lambda c, u: c.b.sync(udp_send_ready_evt(u), timeout=0),
    "sync-udp-receive!-evt": lambda c, u: c.b.sync(udp_receive_evt(u, 10), timeout=0),
    "sync-udp-send-to-evt": lambda c, u: c.b.sync(udp_send_to_evt(u, "127.0.0.1", 9, b"x"), timeout=0),
}
for _name, _op in CLOSED_UDP.items():
    simple(f"udp/closed/{_name}", _on(_closed, _op))


# ═════════════════════════════ what DESIGN / the docs decide ═════════════════════════════


@dataclass(frozen=True)
class Decided:
    """The daemon's answer where it departs from Racket 8.7 on purpose: kind (None: nothing
    raised), errno and first line, exactly; ``why`` names the rule (docs/semantics.md lists each)."""

    kind: str | None
    errno: int | None
    first_line: str | None
    why: str

    def key(self) -> tuple[str | None, int | None, str | None]:
        return self.kind, self.errno, self.first_line

    def matches(self, got: Outcome) -> bool:
        return got.key() == self.key()


_DOCS_LISTENER = "the docs: a closed listener is exn:fail:network (8.7: exn:fail:contract)"
_CUSTODIAN = "DESIGN §2: a shut-down custodian is exn:fail:contract (8.7: exn:fail, and no check in udp-open-socket)"
_CRASH_CONNECT = "8.7 crashes (invalid memory reference, then 'terminated in atomic mode'): DESIGN decides"
_TOO_BIG = "DESIGN §3: over 65,507 bytes is a network error, nothing sent (8.7 sends half, then fails in string-append)"
_RMEM = "the docs: a size over the system maximum is exn:fail:network (8.7: Linux clamps silently)"
_DESCRIBE = "the buffer mode is read with Handles.Describe, which answers for a closed port (closed: true)"

#: Where the daemon departs from Racket 8.7 on purpose, scenario by scenario.
DECIDED: dict[str, Decided] = {
    **{
        f"tcp/listener-closed/{op}": Decided("exn:fail:network", None, f"{who}: listener is closed", _DOCS_LISTENER)
        for op, who in [
            ("tcp-accept", "tcp-accept"),
            ("tcp-accept-ready?", "tcp-accept-ready?"),
            ("tcp-close", "tcp-close"),
            ("tcp-addresses", "tcp-addresses"),
            ("sync-accept-evt", "tcp-accept-evt"),
        ]
    },
    "tcp/listener-closed/sync-listener": Decided(
        "exn:fail:network",
        None,
        "sync: listener is closed",
        "DESIGN §3: a closed listener refuses every operation (8.7: a closed listener is ready)",
    ),
    **{
        f"tcp/{side}-closed/tcp-addresses": Decided(
            "exn:fail:network",
            None,
            "tcp-addresses: port is closed",
            "the docs of tcp-addresses: a closed port is exn:fail:network (8.7: exn:fail:contract)",
        )
        for side in ("in", "out")
    },
    **{
        f"tcp/{side}-closed/file-stream-buffer-mode-get": Decided(None, None, None, _DESCRIBE) for side in ("in", "out")
    },
    "udp/bind/twice": Decided(
        "exn:fail:network",
        None,
        "udp-bind!: udp socket is already bound",
        "the docs of udp-bind!: already bound is exn:fail:network (8.7: exn:fail:contract)",
    ),
    **{
        f"custodian/shut-down/{who}": Decided(
            "exn:fail:contract", None, f"{who}: the custodian has been shut down", _CUSTODIAN
        )
        for who in ("tcp-listen", "tcp-connect", "udp-open-socket")
    },
    "custodian/shut-down/udp-send-to": Decided(
        "exn:fail:network",
        None,
        "udp-send-to: udp socket is closed",
        "DESIGN §2: a shutdown closes every handle of the custodian, UDP sockets too (8.7 leaves them open)",
    ),
    "udp/send-to/too-big": Decided("exn:fail:network:errno", 90, "udp-send-to: send failed", _TOO_BIG),
    "udp/send/too-big": Decided("exn:fail:network:errno", 90, "udp-send: send failed", _TOO_BIG),
    "tcp/connect/local-port-in-use": Decided(
        "exn:fail:network:errno", 98, "tcp-connect: connection failed", _CRASH_CONNECT
    ),
    "tcp/connect/local-family-mismatch": Decided(
        "exn:fail:network:errno", 99, "tcp-connect: connection failed", _CRASH_CONNECT
    ),
    **{
        f"udp/set-receive-buffer-size/{case}": Decided(
            "exn:fail:network:errno",
            105,
            "udp-set-receive-buffer-size!: size is greater than the maximum allowed by the system",
            _RMEM,
        )
        for case in ("huge", "int-max")
    },
}
