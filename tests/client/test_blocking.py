"""The blocking client: explicit methods that mirror the async API, and what only it has.

The first tests are structural: every public method of ``AsyncBroker`` and of each async handle
has an explicitly written blocking counterpart with the same parameters (and so does the test
adapter that runs the behavioural suite through the blocking client), so the two APIs cannot
drift apart. The others run real blocking programs (in a worker thread, since the test daemon
shares this test's event loop) against the daemon on both doors: ``with`` blocks, iterable
streams, results with blocking handles inside, and cancellation by another thread and by Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import pathlib
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import blocking_adapter
import pytest
import sockbroker_client
from blocking_adapter import (
    AdaptedAdmin,
    AdaptedBroker,
    AdaptedCustodian,
    AdaptedInputPort,
    AdaptedListener,
    AdaptedOutputPort,
    AdaptedPortStream,
    AdaptedUdpSocket,
)
from helpers import target
from sockbroker.server import Daemon
from sockbroker_client import (
    EOF,
    Admin,
    AsyncAdmin,
    AsyncBroker,
    BlockingCustodian,
    BlockingInputPort,
    BlockingListener,
    BlockingOutputPort,
    BlockingPortStream,
    BlockingUdpSocket,
    BreakError,
    Broker,
    Canceller,
    Custodian,
    Datagram,
    FailError,
    InputPort,
    Listener,
    NetworkError,
    NotFoundError,
    OutputPort,
    UdpSocket,
    _runner,
    _sync,
    _sync_admin,
    _sync_handles,
    _sync_streams,
    tcp_accept_evt,
)
from sockbroker_client._transport import PortStream

# ───────────────────────────── the APIs cannot drift ─────────────────────────────

BLOCKING = [
    (AsyncBroker, Broker),
    (Custodian, BlockingCustodian),
    (Listener, BlockingListener),
    (InputPort, BlockingInputPort),
    (OutputPort, BlockingOutputPort),
    (UdpSocket, BlockingUdpSocket),
    (PortStream, BlockingPortStream),
    (AsyncAdmin, Admin),
]
ADAPTED = [
    (AsyncBroker, AdaptedBroker),
    (Custodian, AdaptedCustodian),
    (Listener, AdaptedListener),
    (InputPort, AdaptedInputPort),
    (OutputPort, AdaptedOutputPort),
    (UdpSocket, AdaptedUdpSocket),
    (PortStream, AdaptedPortStream),
    (AsyncAdmin, AdaptedAdmin),
]
SYNC_MODULES = {m.__name__ for m in (_sync, _sync_admin, _sync_handles, _sync_streams)}
#: Async names whose blocking counterpart has the blocking name.
BLOCKING_NAME = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}

Parameter = tuple[str, Any, Any]


def _methods(cls: type) -> dict[str, Callable[..., Any]]:
    """Public methods (and async context-manager methods) defined by ``cls`` or its own bases."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__ == "typing":
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") and name not in BLOCKING_NAME and name not in ("__enter__", "__exit__"):
                continue
            function = value.__func__ if isinstance(value, classmethod | staticmethod) else value
            if inspect.isfunction(function):
                found[name] = function
    return found


def _parameters(function: Callable[..., Any]) -> list[Parameter]:
    """Name, kind and default of each parameter after ``self`` / ``cls``."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


def _expected_parameters(async_class: type, name: str, function: Callable[..., Any]) -> list[Parameter]:
    """The parameters of an async method; the generated ``udp_*`` functions are ``sock`` + the socket method's."""
    parameters = _parameters(function)
    generated = [kind for _, kind, _ in parameters] == [
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    ]
    if async_class is AsyncBroker and name.startswith("udp_") and generated:
        return parameters[:1] + _parameters(getattr(UdpSocket, name.removeprefix("udp_")))
    return parameters


def _defined_in(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO (``object`` excluded) whose own ``__dict__`` defines ``name``."""
    return next((k for k in cls.__mro__ if k is not object and name in vars(k)), None)


def _pair_id(pair: tuple[type, type]) -> str:
    return pair[1].__name__


@pytest.mark.parametrize("pair", BLOCKING, ids=_pair_id)
def test_every_async_method_has_an_explicit_blocking_twin(pair: tuple[type, type]) -> None:
    async_class, blocking_class = pair
    twins = _methods(blocking_class)
    for name, function in _methods(async_class).items():
        blocking_name = BLOCKING_NAME.get(name, name)
        owner = _defined_in(blocking_class, blocking_name)
        assert owner is not None and owner.__module__ in SYNC_MODULES, f"{blocking_class.__name__}.{blocking_name}"
        twin = twins[blocking_name]
        assert not inspect.iscoroutinefunction(twin), f"{blocking_class.__name__}.{blocking_name} is a coroutine"
        if name not in ("__aenter__", "__aexit__"):
            assert twin.__doc__, f"{blocking_class.__name__}.{blocking_name} has no docstring"
            expected = _expected_parameters(async_class, name, function)
            assert _parameters(twin) == expected, f"{blocking_class.__name__}.{blocking_name}"


@pytest.mark.parametrize("pair", BLOCKING, ids=_pair_id)
def test_no_blocking_method_lacks_an_async_twin(pair: tuple[type, type]) -> None:
    async_class, blocking_class = pair
    async_names = {BLOCKING_NAME.get(name, name) for name in _methods(async_class)}
    extra = set(_methods(blocking_class)) - async_names - {"__enter__", "__exit__"}
    assert not extra, f"{blocking_class.__name__} has methods the async API lacks: {sorted(extra)}"


@pytest.mark.parametrize("pair", ADAPTED, ids=_pair_id)
def test_the_test_adapter_mirrors_the_async_api(pair: tuple[type, type]) -> None:
    async_class, adapted_class = pair
    adapted = _methods(adapted_class)
    for name, function in _methods(async_class).items():
        assert name in adapted, f"{adapted_class.__name__}.{name}"
        assert inspect.iscoroutinefunction(adapted[name]) == inspect.iscoroutinefunction(function), name
        assert _parameters(adapted[name]) == _expected_parameters(async_class, name, function), name


@pytest.mark.parametrize(
    "module", [_sync, _sync_admin, _sync_handles, _sync_streams, _runner, blocking_adapter], ids=lambda m: m.__name__
)
def test_nothing_is_forwarded_by_getattr(module: types.ModuleType) -> None:
    assert not hasattr(module, "__getattr__")
    for value in vars(module).values():
        if isinstance(value, type) and value.__module__ == module.__name__:
            assert "__getattr__" not in vars(value) and "__getattribute__" not in vars(value), value


def test_the_package_exports_what_it_names() -> None:
    for name in sockbroker_client.__all__:
        assert hasattr(sockbroker_client, name), name
    public = [
        n
        for m in (_sync, _sync_admin, _sync_handles, _sync_streams)
        for n in m.__all__
        if n.startswith(("Blocking", "Broker", "Admin"))
    ]
    for name in [*public, "Canceller"]:
        assert name in sockbroker_client.__all__, name


# ───────────────────────────── blocking programs against the daemon ─────────────────────────────

TRANSPORTS = ("grpc", "rest")

Connect = Callable[..., Broker]


@pytest.fixture(params=TRANSPORTS)
def connect(request: pytest.FixtureRequest, daemon: Daemon, token_file: pathlib.Path) -> Connect:
    """Opens a blocking session through one door (call it from a worker thread)."""
    kind = request.param

    def connect(**options: Any) -> Broker:
        return Broker.connect(target(daemon, kind), transport=kind, token_file=token_file, **options)

    return connect


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def readme_session(connect: Connect) -> None:
    with connect() as broker:
        assert broker.transport in TRANSPORTS and broker.session
        with broker.tcp_listen(0, hostname="127.0.0.1") as listener:
            _, port, _, _ = broker.tcp_addresses(listener, True)
            client_in, client_out = broker.tcp_connect("127.0.0.1", port)
            ports = listener.accept(timeout=5)
            assert ports is not None
            server_in, server_out = ports
            assert isinstance(server_in, BlockingInputPort) and isinstance(server_out, BlockingOutputPort)
            assert server_in.broker is broker
            client_out.write(b"hello\n", flush=True)
            assert server_in.read_bytes_avail() == b"hello\n"
            with client_out:
                pass  # leaving the block closed it: the server reads EOF
            assert server_in.read() is EOF
            with client_in:
                client_in.close()  # closed inside the block: leaving it is no error
        assert listener.describe()["closed"] is True  # leaving its block closed the listener
        assert _refused(port)
        other = broker.tcp_listen(0, hostname="127.0.0.1")
        other_port = other.addresses(port_numbers=True)[1]
    # Leaving the broker's block closed the session, and the daemon closed its listener.
    assert _refused(other_port)
    with pytest.raises(FailError):
        broker.keep_alive()
    broker.close()  # again: nothing happens


async def test_a_blocking_session_as_in_the_readme(connect: Connect) -> None:
    await asyncio.to_thread(readme_session, connect)


def admin_program(daemon: Daemon, kind: str, token_file: pathlib.Path, connect: Connect) -> None:
    with Admin.connect(target(daemon, kind), transport=kind, token_file=token_file) as admin:
        assert admin.transport == kind
        with admin.watch_events() as events:
            assert next(events)["event"] == "events.watch"
            broker = connect()
            listener = broker.tcp_listen(0, hostname="127.0.0.1")
            listed = {s["session"]: s for s in admin.list_sessions("default")}
            assert listed[broker.session]["handles"] == 2  # its root custodian and the listener
            described = admin.describe_session(broker.session)
            kinds = {h["handle"]: h["kind"] for c in described["custodians"] for h in c["handles"]}
            assert kinds[listener.handle] == "tcp-listener"
            assert admin.kill_session(broker.session, reason="blocking") == {"session": broker.session, "closed": 2}
            seen = []
            for event in itertools.islice(events, 100):  # other tests' sessions may show up too
                if event["session"] == broker.session:
                    seen.append(event["event"])
                if seen[-1:] == ["session.drop"]:
                    break
        assert seen == ["session.open", "admin.kill_session", "session.drop"]
        with pytest.raises(NotFoundError):
            admin.describe_session(broker.session)
        with pytest.raises(NotFoundError):
            broker.keep_alive()
        with contextlib.suppress(NotFoundError):
            broker.close()
    with pytest.raises(FailError):  # closed: a call after close fails, it does not hang
        admin.list_sessions()


async def test_a_blocking_admin_program(
    connect: Connect, request: pytest.FixtureRequest, daemon: Daemon, token_file: pathlib.Path
) -> None:
    kind = request.node.callspec.params["connect"]
    await asyncio.to_thread(admin_program, daemon, kind, token_file, connect)


def datagram_streams(connect: Connect) -> None:
    with connect() as broker:
        receiver = broker.udp_open_socket()
        receiver.bind("127.0.0.1", 0)
        rport = receiver.addresses(port_numbers=True)[1]
        sender = broker.udp_open_socket()
        sender.bind("127.0.0.1", 0)
        sport = sender.addresses(port_numbers=True)[1]

        def frames() -> Iterator[tuple[bytes, str, int]]:
            for n in range(3):
                assert sender.describe()["kind"] == "udp"  # a blocking call inside the iterable
                yield b"g%d" % n, "127.0.0.1", rport

        assert sender.send_stream(frames()) == 3
        assert broker.udp_send_to(sender, "127.0.0.1", rport, b"plain")

        got = []
        for datagram in receiver.receive_stream():
            got.append(datagram)
            if len(got) == 4:
                break  # and the stream ends in the daemon: nothing else refers to it
        assert got == [Datagram(d, "127.0.0.1", sport) for d in (b"g0", b"g1", b"g2", b"plain")]
        time.sleep(0.2)  # the daemon hears the stream end
        assert sender.send_stream([(b"after", "127.0.0.1", rport)]) == 1
        assert receiver.receive(timeout=5)[3] == b"after"  # a plain receive gets datagrams again

        with receiver.receive_stream(2) as stream:
            assert sender.send_to("127.0.0.1", rport, b"truncated")
            assert next(stream) == Datagram(b"tr", "127.0.0.1", sport)


async def test_datagram_streams_are_iterators(connect: Connect) -> None:
    await asyncio.to_thread(datagram_streams, connect)


def byte_stream(connect: Connect) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, connect() as broker:
        i, _o = broker.tcp_connect("127.0.0.1", server.getsockname()[1])
        peer, _ = server.accept()
        with peer, broker.tcp_stream(i) as stream:
            stream.send(b"ping")
            stream.send_eof()
            received = b""
            while chunk := peer.recv(100):
                received += chunk
            assert received == b"ping"
            peer.sendall(b"pong" * 1000)
            peer.shutdown(socket.SHUT_WR)
            assert b"".join(stream) == b"pong" * 1000
        assert i.read() is EOF


async def test_a_port_stream_iterates_over_received_chunks(connect: Connect) -> None:
    await asyncio.to_thread(byte_stream, connect)


def sync_results(connect: Connect) -> None:
    with connect() as broker:
        listener = broker.tcp_listen(0, hostname="127.0.0.1")
        port = listener.addresses(port_numbers=True)[1]
        assert broker.sync(tcp_accept_evt(listener.handle), timeout=0) is None
        with socket.create_connection(("127.0.0.1", port)) as client:
            chosen = broker.sync(tcp_accept_evt(listener.handle), timeout=5)
            assert chosen is not None
            index, (i, o) = chosen
            assert index == 0 and isinstance(i, BlockingInputPort) and isinstance(o, BlockingOutputPort)
            o.write(b"through sync", flush=True)
            assert client.recv(100) == b"through sync"


async def test_sync_results_carry_blocking_handles(connect: Connect) -> None:
    await asyncio.to_thread(sync_results, connect)


def cancelled_from_another_thread(connect: Connect) -> None:
    with connect() as broker:
        custodian = broker.make_custodian()
        assert isinstance(custodian, BlockingCustodian)
        listener = broker.tcp_listen(0, hostname="127.0.0.1", custodian=custodian)
        port = listener.addresses(port_numbers=True)[1]
        canceller = Canceller()
        outcome: list[object] = []

        def blocked() -> None:
            with canceller:
                try:
                    outcome.append(listener.accept())
                except BreakError as exc:
                    outcome.append(exc)

        worker = threading.Thread(target=blocked)
        worker.start()
        time.sleep(0.2)
        canceller.cancel()
        worker.join(timeout=10)
        assert not worker.is_alive() and isinstance(outcome[0], BreakError)
        with canceller, pytest.raises(BreakError):  # once cancelled, always cancelled
            listener.accept_ready()
        with socket.create_connection(("127.0.0.1", port)):
            assert listener.accept(timeout=5) is not None  # the cancelled accept took nothing
        with custodian:
            pass
        with pytest.raises(NetworkError):
            listener.accept_ready()  # the custodian's block shut it down


async def test_another_thread_cancels_a_blocking_call(connect: Connect) -> None:
    await asyncio.to_thread(cancelled_from_another_thread, connect)


INTERRUPTED = """
import sys
from sockbroker_client import Broker

url, transport, token_file = sys.argv[1:4]
with Broker.connect(url, transport=transport, token_file=token_file) as broker:
    listener = broker.tcp_listen(0, hostname="127.0.0.1")
    print(listener.addresses(port_numbers=True)[1], flush=True)
    try:
        listener.accept()
        print("accepted too early", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("accepted" if listener.accept(timeout=10) is not None else "lost", flush=True)
"""


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_ctrl_c_cancels_a_blocking_call_and_loses_nothing(
    daemon: Daemon, token_file: pathlib.Path, transport: str
) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        INTERRUPTED,
        target(daemon, transport),
        transport,
        str(token_file),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            port = int(await proc.stdout.readline())
            await asyncio.sleep(0.3)  # the accept is blocked in the daemon
            proc.send_signal(signal.SIGINT)
            assert await proc.stdout.readline() == b"interrupted\n"
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await proc.stdout.readline() == b"accepted\n"
            writer.close()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
