"""The admin API (``sockbroker.admin.v1.Admin``, docs/admin.md) from Python, over gRPC or REST.

``async with AsyncAdmin.connect() as admin:`` finds the daemon and the token as
``AsyncBroker.connect`` does, but opens no session: the admin calls need none, only a token
whose principal may use the admin API (anyone else gets ``PermissionDeniedError``). Replies are
the proto's fields as plain values (``list_sessions()[0]["bytes_in"]``, an int on both
transports); a session or handle that does not exist is ``NotFoundError``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any

from ._client import Connecting, open_transport
from ._errors import ContractError
from ._transport import Channel

__all__ = ["AsyncAdmin"]


def _named(value: object, what: str, who: str) -> str:
    """A session or handle id, as a string; empty is refused here, the same on both transports (an
    empty path segment over REST would name another route)."""
    named = str(value) if value is not None else ""
    if not named:
        raise ContractError(f"{who}: {what} required")
    return named


class AsyncAdmin:
    """The admin calls on one channel to the daemon (one it opened with :meth:`connect`, closed by
    :meth:`aclose`; or a channel of the caller's, left open)."""

    def __init__(self, channel: Channel, *, owns_channel: bool = False) -> None:
        self.channel = channel
        self._owns_channel = owns_channel

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
    ) -> Connecting[AsyncAdmin]:
        """The admin API of the daemon at ``target`` (the arguments of ``AsyncBroker.connect``):
        ``async with AsyncAdmin.connect() as admin:`` (or ``await`` it)."""

        async def opening() -> AsyncAdmin:
            channel = await open_transport(
                target, token=token, token_file=token_file, transport=transport, credentials=credentials, verify=verify
            )
            return cls(channel, owns_channel=True)

        return Connecting(opening())

    async def aclose(self) -> None:
        if self._owns_channel:
            await self.channel.aclose()

    async def __aenter__(self) -> AsyncAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, method: str, **args: Any) -> dict[str, Any]:
        return await self.channel.call(f"Admin.{method}", args, None)

    async def list_sessions(self, principal: str | None = None) -> list[dict[str, Any]]:
        """Every open session (``SessionSummary`` fields), oldest first; with ``principal``, that
        principal's (``alice`` includes its delegated callers ``alice/dlg_…``)."""
        reply = await self._call("ListSessions", principal=principal or "")
        return list(reply.get("sessions", []))

    async def describe_session(self, session: str) -> dict[str, Any]:
        """A session's ``summary`` and its ``custodians``, depth first, each with its ``handles``."""
        return await self._call("DescribeSession", session=_named(session, "a session", "describe_session"))

    async def kill_session(self, session: str, reason: str = "") -> dict[str, Any]:
        """Drop ``session`` (every socket it holds is closed); ``{"session", "closed"}``."""
        return await self._call("KillSession", session=_named(session, "a session", "kill_session"), reason=reason)

    async def kill_handle(self, handle: str, reason: str = "") -> dict[str, Any]:
        """Close ``handle`` of any session as a shutdown of its custodian would; ``{"session", "closed"}``."""
        return await self._call("KillHandle", handle=_named(handle, "a handle", "kill_handle"), reason=reason)

    def watch_events(self) -> AsyncGenerator[dict[str, Any], None]:
        r"""The daemon's events as they happen (``AdminEvent`` fields), first ``events.watch``,
        until the caller closes the generator (``async with contextlib.aclosing(...)``)."""
        return self.channel.watch_events()
