"""The Python driver for the conformance scenarios (tests/conformance/README.md is the contract).

It runs one scenario of ``scenarios.json`` through an :class:`AsyncBroker`: each step's
operation is one entry of :data:`OPERATIONS` (Racket's name → a client call), its arguments are
evaluated by :meth:`Run.evaluate`, its result is turned into the README's value forms by
:func:`normalise` and checked by :meth:`Run.match`. A step that does not do what the scenario
says raises :class:`StepFailed`, naming the step, its op and what differed.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

from sockbroker_client import (
    EOF,
    AsyncBroker,
    BrokerError,
    Custodian,
    InputPort,
    Listener,
    OutputPort,
    UdpSocket,
    tcp_accept_evt,
    udp_receive_ready_evt,
)

__all__ = ["CAPABILITIES", "SCENARIOS", "UNSUPPORTED", "Run", "StepFailed", "load"]

SCENARIOS = pathlib.Path(__file__).with_name("scenarios.json")

#: Capabilities this client lacks: none, the Python client has custodians and events.
UNSUPPORTED: frozenset[str] = frozenset()

#: The only format version this driver reads.
VERSION = 1

HANDLE_TYPES: dict[str, type] = {
    "listener": Listener,
    "input-port": InputPort,
    "output-port": OutputPort,
    "udp": UdpSocket,
    "custodian": Custodian,
}


class StepFailed(AssertionError):
    """A step did not do what its scenario says."""

    def __init__(self, index: int, op: str, detail: str) -> None:
        super().__init__(f"step {index} ({op}): {detail}")
        self.index, self.op, self.detail = index, op, detail


class _Event(dict[str, Any]):
    """An event made by an event constructor: the client's event dict, told apart from data."""


def load(path: pathlib.Path = SCENARIOS) -> dict[str, Any]:
    """The scenarios file, refused when its version is not the one this driver reads."""
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if document.get("version") != VERSION:
        raise ValueError(f"{path}: version {document.get('version')!r}; this driver reads version {VERSION}")
    return document


CAPABILITIES: frozenset[str] = frozenset(load()["capabilities"])


def normalise(value: Any) -> Any:
    """A client result in the README's value forms: tuples become lists, handles and bytes stay."""
    if isinstance(value, tuple):
        return [normalise(item) for item in value]
    return value


def describe(value: Any) -> str:
    """A value as a failure message shows it."""
    if value is EOF:
        return "eof"
    for name, cls in HANDLE_TYPES.items():
        if isinstance(value, cls):
            return f"<{name} {value}>"
    if isinstance(value, _Event):
        return "<event>"
    if isinstance(value, list):
        return "[" + ", ".join(describe(item) for item in value) + "]"
    return json.dumps(value) if isinstance(value, (bool, int, str)) or value is None else repr(value)


def _same(a: Any, b: Any) -> bool:
    """Equality of two values: handles by the handle they name, the rest by type and value."""
    if isinstance(a, Listener | InputPort | OutputPort | UdpSocket | Custodian):
        return type(a) is type(b) and str(a) == str(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _as(cls: type, broker: AsyncBroker, value: Any) -> Any:
    """``value`` as a handle object of ``cls``, so the daemon (not Python) judges a wrong kind."""
    if isinstance(value, Listener | InputPort | OutputPort | UdpSocket | Custodian):
        return cls(broker, str(value))
    return value


async def _sync_timeout(broker: AsyncBroker, seconds: float, *events: _Event) -> Any:
    outcome = await broker.sync(*events, timeout=seconds)
    if outcome is None:
        return False
    index, result = outcome
    if "udp_receive_ready" in events[index]:
        return True
    return normalise(result)


Operation = Callable[..., Awaitable[Any]]


async def _listen(
    b: AsyncBroker, port: Any, backlog: Any = 4, reuse: Any = False, hostname: Any = None, *, custodian: Any = None
) -> Any:
    return await b.tcp_listen(port, backlog, reuse, hostname, custodian=custodian)


async def _connect(
    b: AsyncBroker, hostname: Any, port: Any, lh: Any = None, lp: Any = None, *, custodian: Any = None
) -> Any:
    return await b.tcp_connect(hostname, port, lh, lp, custodian=custodian)


async def _accept(b: AsyncBroker, listener: Any, *, custodian: Any = None) -> Any:
    return await b.tcp_accept(listener, custodian=custodian)


async def _udp_open(
    b: AsyncBroker, family_hostname: Any = None, family_port: Any = None, *, custodian: Any = None
) -> Any:
    return await b.udp_open_socket(family_hostname, family_port, custodian=custodian)


async def _udp_receive_nowait(b: AsyncBroker, sock: Any, size: Any) -> Any:
    received = await b.udp_receive_nowait(_as(UdpSocket, b, sock), size)
    return [False] * 4 if received[0] is None else received


async def _ready(value: Any) -> Any:
    """An event constructor's value: made without a call to the daemon."""
    return value


async def _void(call: Awaitable[Any]) -> None:
    """Racket's void for operations whose Python result carries nothing the scenario form has."""
    await call


#: Racket's name → the Python client call. Every function takes the broker, then the step's
#: arguments in Racket's order, plus ``custodian=`` for the operations that make a socket.
OPERATIONS: dict[str, Operation] = {
    "tcp-listen": _listen,
    "tcp-connect": _connect,
    "tcp-accept": _accept,
    "tcp-accept-ready?": lambda b, lst: b.tcp_accept_ready(_as(Listener, b, lst)),
    "tcp-close": lambda b, lst: b.tcp_close(_as(Listener, b, lst)),
    "tcp-addresses": lambda b, h, numbers=False: b.tcp_addresses(h, numbers),
    "tcp-listener?": lambda b, h: b.tcp_listener(h),
    "tcp-port?": lambda b, h: b.tcp_port(h),
    "read-bytes": lambda b, n, i: _as(InputPort, b, i).read_bytes(n),
    "read-bytes-avail!": lambda b, n, i: _as(InputPort, b, i).read_bytes_avail(n),
    "read-bytes-avail!*": lambda b, n, i: _as(InputPort, b, i).read_bytes_avail_nowait(n),
    "peek-bytes-avail!": lambda b, n, i: _as(InputPort, b, i).peek_bytes_avail(n),
    "write-bytes": lambda b, data, o: _as(OutputPort, b, o).write_bytes(data),
    "flush-output": lambda b, o: _as(OutputPort, b, o).flush_output(),
    "close-input-port": lambda b, i: _as(InputPort, b, i).close(),
    "close-output-port": lambda b, o: _as(OutputPort, b, o).close(),
    "udp-open-socket": _udp_open,
    "udp-bind!": lambda b, s, host, port, reuse=False: b.udp_bind(_as(UdpSocket, b, s), host, port, reuse),
    "udp-connect!": lambda b, s, host, port: b.udp_connect(_as(UdpSocket, b, s), host, port),
    "udp-send-to": lambda b, s, host, port, data: _void(b.udp_send_to(_as(UdpSocket, b, s), host, port, data)),
    "udp-send": lambda b, s, data: _void(b.udp_send(_as(UdpSocket, b, s), data)),
    "udp-receive!": lambda b, s, size: b.udp_receive(_as(UdpSocket, b, s), size),
    "udp-receive!*": _udp_receive_nowait,
    "udp-close": lambda b, s: b.udp_close(_as(UdpSocket, b, s)),
    "udp-bound?": lambda b, s: b.udp_bound(_as(UdpSocket, b, s)),
    "udp-connected?": lambda b, s: b.udp_connected(_as(UdpSocket, b, s)),
    "udp-addresses": lambda b, s, numbers=False: b.udp_addresses(_as(UdpSocket, b, s), numbers),
    "make-custodian": lambda b, parent=None: b.make_custodian(parent),
    "custodian-shutdown-all": lambda b, c: b.custodian_shutdown_all(c),
    "tcp-accept-evt": lambda b, lst: _ready(_Event(tcp_accept_evt(lst))),
    "udp-receive-ready-evt": lambda b, s: _ready(_Event(udp_receive_ready_evt(s))),
    "sync/timeout": _sync_timeout,
}

#: The operations that make a socket, and so take a step's ``custodian`` option.
MAKERS = frozenset({"tcp-listen", "tcp-connect", "tcp-accept", "udp-open-socket"})


class Run:
    """One scenario run through one session: the environment, argument evaluation, matching."""

    def __init__(self, broker: AsyncBroker, step_timeout: float) -> None:
        self.broker = broker
        self.step_timeout = step_timeout
        self.env: dict[str, Any] = {}

    async def scenario(self, scenario: dict[str, Any]) -> None:
        """Run every step; the first one that fails raises :class:`StepFailed`."""
        for index, step in enumerate(scenario["steps"]):
            try:
                async with asyncio.timeout(self.step_timeout):
                    await self.step(step)
            except StepFailed as failed:
                raise StepFailed(index, step["op"], failed.detail) from None
            except TimeoutError:
                raise StepFailed(index, step["op"], f"timed out after {self.step_timeout} s") from None

    def _bound(self, name: str) -> Any:
        if name not in self.env:
            raise StepFailed(-1, "", f"{name!r} is not bound")
        return self.env[name]

    async def port_of(self, name: str) -> int:
        """The local port number of the handle bound to ``name``."""
        handle = self._bound(name)
        addresses = await (
            self.broker.udp_addresses(handle, True)
            if isinstance(handle, UdpSocket)
            else self.broker.tcp_addresses(handle, True)
        )
        return int(addresses[1])

    async def evaluate(self, expression: Any) -> Any:
        """An argument expression's value (README: Arguments)."""
        if not isinstance(expression, dict):
            return expression
        if "ref" in expression:
            return self._bound(expression["ref"])
        if "port-of" in expression:
            return await self.port_of(expression["port-of"])
        if "bytes" in expression:
            return expression["bytes"].encode()
        if "hex" in expression:
            return bytes.fromhex(expression["hex"])
        if "random" in expression:
            data = os.urandom(expression["random"])
            self.env[expression["as"]] = data
            return data
        raise StepFailed(-1, "", f"unknown argument expression {expression!r}")

    async def step(self, step: dict[str, Any]) -> None:
        op = step["op"]
        args = [await self.evaluate(arg) for arg in step.get("args", [])]
        options = {}
        if "custodian" in step:
            if op not in MAKERS:
                raise StepFailed(-1, op, "the custodian option is only for operations that make a socket")
            options["custodian"] = await self.evaluate(step["custodian"])
        expected = step.get("expect")
        try:
            value = normalise(await OPERATIONS[op](self.broker, *args, **options))
        except BrokerError as error:
            if isinstance(expected, dict) and "error" in expected:
                self.match_error(expected["error"], error)
                return
            raise StepFailed(-1, op, f"raised {error.kind}: {error.message}") from None
        if isinstance(expected, dict) and "error" in expected:
            raise StepFailed(-1, op, f"expected error {expected['error']['kind']}, got {describe(value)}")
        if "expect" in step and not await self.match(expected, value):
            raise StepFailed(-1, op, f"expected {json.dumps(expected)}, got {describe(value)}")
        self.bind(step.get("as"), value)

    def bind(self, names: str | list[str | None] | None, value: Any) -> None:
        if names is None:
            return
        if isinstance(names, str):
            self.env[names] = value
            return
        if not isinstance(value, list) or len(value) != len(names):
            raise StepFailed(-1, "", f"cannot bind {len(names)} names to {describe(value)}")
        for name, item in zip(names, value, strict=True):
            if name is not None:
                self.env[name] = item

    @staticmethod
    def match_error(expected: dict[str, Any], error: BrokerError) -> None:
        got = f"{error.kind} (errno {error.errno} {error.errno_family}): {error.message}"
        if error.kind != expected["kind"]:
            raise StepFailed(-1, "", f"expected error {expected['kind']}, got {got}")
        if "errno" in expected and [error.errno, error.errno_family] != expected["errno"]:
            raise StepFailed(-1, "", f"expected errno {expected['errno']}, got {got}")
        if "message" in expected and error.message.splitlines()[0] != expected["message"]:
            raise StepFailed(-1, "", f"expected message {expected['message']!r}, got {got}")

    async def match(self, expected: Any, value: Any) -> bool:
        """Whether ``value`` matches the expectation (README: Expectations)."""
        if isinstance(expected, list):
            return (
                isinstance(value, list)
                and len(value) == len(expected)
                and all([await self.match(e, v) for e, v in zip(expected, value, strict=True)])
            )
        if not isinstance(expected, dict):
            return _same(expected, value)
        if "type" in expected:
            return self.has_type(expected["type"], value)
        if "eof" in expected:
            return value is EOF
        if "port-of" in expected:
            return _same(await self.port_of(expected["port-of"]), value)
        return _same(await self.evaluate(expected), value)

    @staticmethod
    def has_type(name: str, value: Any) -> bool:
        if name in HANDLE_TYPES:
            return isinstance(value, HANDLE_TYPES[name])
        checks: dict[str, Callable[[Any], bool]] = {
            "event": lambda v: isinstance(v, _Event),
            "boolean": lambda v: isinstance(v, bool),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "port-number": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535,
            "string": lambda v: isinstance(v, str),
            "bytes": lambda v: isinstance(v, bytes),
        }
        return checks[name](value)
