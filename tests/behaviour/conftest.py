from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from helpers import PeerServer
from sockbroker.core.broker import Principal
from sockbroker.server import Daemon


@pytest.fixture
async def peer() -> AsyncIterator[PeerServer]:
    server = PeerServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def other_token(daemon: Daemon) -> Iterator[str]:
    """The token of a second principal of the test daemon, with the same policy as ``default``."""
    principal = Principal("other", secrets.token_urlsafe(32), daemon.broker.principals[0].policy)
    daemon.broker.principals.append(principal)
    yield principal.token or ""
    daemon.broker.principals.remove(principal)
