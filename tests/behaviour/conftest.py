from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from helpers import PeerServer


@pytest.fixture
async def peer() -> AsyncIterator[PeerServer]:
    server = PeerServer()
    await server.start()
    yield server
    await server.close()
