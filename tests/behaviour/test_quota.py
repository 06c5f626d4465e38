"""A session's handle quota is ``resource-exhausted`` on every door, checked before any socket is
made. A daemon of this module's own with a small quota, so that reaching it takes a few dozen
calls rather than the suite daemon's 5,000."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import serving
from sockbroker.server import Daemon
from sockbroker_client import ResourceExhaustedError

QUOTA = 40


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("quota") / "token"


@pytest.fixture(scope="module")
async def daemon(token_file: pathlib.Path) -> AsyncIterator[Daemon]:
    async with serving(token_file, max_handles_per_session=QUOTA) as d:
        yield d


async def test_quota_is_resource_exhausted(door: Any, daemon: Daemon) -> None:
    broker = await door()
    made = 0
    with pytest.raises(ResourceExhaustedError) as info:
        for _ in range(QUOTA + 1):
            await broker.make_custodian()
            made += 1
    assert made == QUOTA - 1  # the session's root custodian is a handle too
    # DESIGN §4: resource-exhausted is gRPC RESOURCE_EXHAUSTED, HTTP 429.
    assert info.value.status == {"grpc": "RESOURCE_EXHAUSTED", "rest": 429}.get(broker.channel.name, "core")
    assert "too many handles in this session" in info.value.message
