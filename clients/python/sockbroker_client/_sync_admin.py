"""The admin API, blocking: :class:`Admin`, one explicit method per method of :class:`AsyncAdmin`.

As with :class:`Broker`, each method runs the coroutine of the same name on a private event loop
thread and waits for it (Ctrl-C or a :class:`Canceller` cancels it); ``watch_events`` is a plain
iterator whose ``close()`` (or leaving ``with``) ends the stream in the daemon.
``tests/client/test_blocking.py`` checks that the methods match the async API name for name.
"""

from __future__ import annotations

import os
from typing import Any

from ._admin import AsyncAdmin
from ._sync import OnLoopThread
from ._sync_streams import BlockingStream

__all__ = ["Admin"]


class Admin(OnLoopThread[AsyncAdmin]):
    """The admin calls, blocking: ``with Admin.connect() as admin: admin.list_sessions()``.

    :class:`AsyncAdmin`'s methods without ``await``; it opens no session. Leaving the ``with``
    block (or :meth:`close`) closes the channel and the private loop thread.
    """

    @property
    def transport(self) -> str:
        """``"grpc"`` or ``"rest"``."""
        return self._async.channel.name

    def __repr__(self) -> str:
        return f"<Admin {self.transport}>"

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
    ) -> Admin:
        """The admin API of the daemon at ``target``; the arguments are :meth:`AsyncAdmin.connect`'s."""

        async def opening() -> AsyncAdmin:
            return await AsyncAdmin.connect(
                target, token=token, token_file=token_file, transport=transport, credentials=credentials, verify=verify
            )

        return cls._opened(opening())

    def list_sessions(self, principal: str | None = None) -> list[dict[str, Any]]:
        """Every open session, oldest first; with ``principal``, that principal's (and its delegated callers')."""
        return self._runner.run(self._async.list_sessions(principal))

    def describe_session(self, session: str) -> dict[str, Any]:
        """A session's ``summary`` and its ``custodians``, depth first, each with its ``handles``."""
        return self._runner.run(self._async.describe_session(session))

    def kill_session(self, session: str, reason: str = "") -> dict[str, Any]:
        """Drop ``session`` (every socket it holds is closed); ``{"session", "closed"}``."""
        return self._runner.run(self._async.kill_session(session, reason))

    def kill_handle(self, handle: str, reason: str = "") -> dict[str, Any]:
        """Close ``handle`` of any session as a shutdown of its custodian would; ``{"session", "closed"}``."""
        return self._runner.run(self._async.kill_handle(handle, reason))

    def watch_events(self) -> BlockingStream[dict[str, Any]]:
        """The daemon's events as they happen, first ``events.watch``: ``with admin.watch_events()
        as events: for event in events: ...``; ``close()`` ends the stream in the daemon."""
        return BlockingStream(self._runner, self._async.watch_events())
