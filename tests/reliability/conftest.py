"""Fixtures of the reliability tests: the fuzzers' sink port, and a pool of live objects per test."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator, Iterator

import pytest
from reliability.fuzzing import LogWatch, Pool, Sink
from sockbroker.server import Daemon


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    made = Sink()
    yield made
    made.close()


@pytest.fixture
async def pool(daemon: Daemon, token_file: pathlib.Path, sink: Sink) -> AsyncIterator[Pool]:
    """A session of its own with live handles, made (and closed) from a thread: the in-process
    daemon answers on this event loop, which the blocking HTTP client must leave free."""
    token = token_file.read_text().strip()  # noqa: ASYNC240 - a tiny local file
    made = Pool(f"http://127.0.0.1:{daemon.rest_port}", token, sink)
    yield made
    await asyncio.to_thread(made.close)


@pytest.fixture
def daemon_log() -> Iterator[LogWatch]:
    """Errors and tracebacks the in-process daemon logs during the test."""
    with LogWatch().watching() as watch:
        yield watch
