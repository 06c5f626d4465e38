"""Shared fixtures: one in-process daemon on loopback ports, and the front doors to reach it.

The daemon runs on the test session's event loop with both real front doors listening on
127.0.0.1; behavioural tests take the ``door`` fixture and run once per door, through the
Python client (gRPC transport, REST transport).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import netns
import pytest
from blocking_adapter import AdaptedBroker
from core_channel import CoreChannel
from helpers import daemon_settings, target
from sockbroker.server import Daemon
from sockbroker_client import AsyncBroker

#: An unclosed socket's error names where it was made (tests/socket_origins.py).
pytest_plugins = ["socket_origins"]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """The suite runs in a private network namespace (DESIGN §10): a bare ``pytest`` re-runs itself
    in one, through tests/netns.py, before any test; where none can be made, it stops with one line."""
    netns.rerun_pytest_inside(config)


#: The doors every behavioural test runs through: the core in process, gRPC and REST through the
#: async client, and the blocking client (over gRPC) through an adapter that awaits it in threads.
DOORS = ("core", "grpc", "rest", "blocking")

# Every daemon a test starts in a process of its own takes a free port for its proxy door, as it
# does for its other doors (the default, 1080, would be shared by daemons running at once);
# test_readme.py clears this to run the README's daemon with the defaults.
os.environ.setdefault("SOCKBROKER_PROXY_ADDRESS", "127.0.0.1:0")

# The stress and session tests hold thousands of sockets (both ends live in this process).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(_soft, min(_hard, 65536)), _hard))

Connect = Callable[..., Awaitable[AsyncBroker]]


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("sockbroker") / "token"


@pytest.fixture(scope="session")
async def daemon(token_file: pathlib.Path) -> AsyncIterator[Daemon]:
    settings = daemon_settings(token_file)
    d = Daemon(settings)
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture(params=DOORS)
async def door(request: pytest.FixtureRequest, daemon: Daemon, token_file: pathlib.Path) -> AsyncIterator[Connect]:
    """A function that opens a session through this door; sessions are closed afterwards."""
    opened: list[AsyncBroker] = []
    kind = request.param

    async def connect(**options: Any) -> AsyncBroker:
        options.setdefault("token_file", token_file)
        if kind == "core":
            token_path = pathlib.Path(options.pop("token_file"))
            token = options.pop("token", None) or await asyncio.to_thread(lambda: token_path.read_text().strip())
            broker = await AsyncBroker.over(CoreChannel(daemon.broker, token), **options)
        elif kind == "blocking":
            broker = await AdaptedBroker.connect(target(daemon, "grpc"), transport="grpc", **options)  # type: ignore[assignment]
        else:
            broker = await AsyncBroker.connect(target(daemon, kind), transport=kind, **options)
        opened.append(broker)
        return broker

    connect.door = kind  # type: ignore[attr-defined]
    yield connect
    for broker in opened:
        try:
            await broker.aclose()
        except Exception:
            await broker.channel.aclose()


@pytest.fixture
async def broker(door: Connect) -> AsyncBroker:
    return await door()
