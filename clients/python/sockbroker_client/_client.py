"""The asyncio client: Racket's racket/tcp and racket/udp, named by one rule.

The rule: take the Racket name, turn ``-`` into ``_``, drop ``!`` and ``?``, and write ``*``
(the never-blocking forms) as ``_nowait``; methods of a handle drop the ``tcp-``/``udp-``
prefix where the handle already says it (``tcp-accept-ready? l`` → ``l.accept_ready()`` as well
as ``broker.tcp_accept_ready(l)``). So ``tcp-accept-ready?`` → ``tcp_accept_ready``,
``udp-receive!*`` → ``udp_receive_nowait``, ``udp-multicast-join-group!`` →
``udp_multicast_join_group``, ``read-bytes-avail!*`` → ``read_bytes_avail_nowait``.

What a read returns follows Racket too: bytes; :data:`EOF` (Racket's eof object) at end of file;
``b""`` from the never-blocking ``read_bytes_avail_nowait`` when nothing is there (Racket's
``read-bytes-avail!*`` returns 0); and None when a read's ``timeout`` passes first (as
``sync/timeout`` returns ``#f``), having consumed nothing. Test ``data is EOF`` and
``data is None``: all three of ``EOF``, ``None`` and ``b""`` are false.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
from collections.abc import AsyncIterator, Coroutine, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

from sockbroker_wire.paths import default_token_file as daemon_token_file

from ._breaks import breakable
from ._channel import ChannelSocket, redeem
from ._errors import BrokerError, ContractError
from ._files import read_token_file, runtime_file, runtime_target
from ._transport import Channel, GrpcTransport, PortStream, RestTransport

__all__ = [
    "EOF",
    "AsyncBroker",
    "Connecting",
    "Custodian",
    "Datagram",
    "InputPort",
    "Listener",
    "OutputPort",
    "UdpSocket",
    "default_token_file",
]


class _Eof:
    """Racket's eof object: what a read returns at end of file (distinct from zero bytes)."""

    def __repr__(self) -> str:
        return "EOF"

    def __bool__(self) -> bool:
        return False


EOF = _Eof()


def default_token_file() -> pathlib.Path:
    """``$SOCKBROKER_TOKEN_FILE``, else where the daemon writes it by default."""
    configured = os.environ.get("SOCKBROKER_TOKEN_FILE")
    return pathlib.Path(configured) if configured else daemon_token_file()


#: Per transport: the environment variable naming the target, and the target when nothing names one.
_TARGETS = {"grpc": ("SOCKBROKER_GRPC", "127.0.0.1:50051"), "rest": ("SOCKBROKER_REST", "http://127.0.0.1:8080")}
_URL_SCHEMES = ("http://", "https://", "http+unix://")


def _transport_for(target: str | None, transport: str | None) -> str:
    """The transport to use: the one asked for, else REST for an ``http(s)://`` target and gRPC
    for anything else (DESIGN §9). A target that contradicts the transport is a contract error."""
    if transport is not None and transport not in _TARGETS:
        raise ContractError(f"connect: transport must be 'grpc' or 'rest', not {transport!r}")
    is_url = bool(target) and str(target).startswith(_URL_SCHEMES)
    if transport is None:
        return "rest" if is_url else "grpc"
    if target and transport == "grpc" and is_url:
        raise ContractError(f"connect: {target} is a REST URL; a gRPC target is HOST:PORT (or leave transport out)")
    if target and transport == "rest" and not is_url:
        raise ContractError(
            f"connect: a REST target is a URL, http://HOST:PORT, https://HOST:PORT or http+unix://PATH, not {target}"
        )
    return transport


def _default_target(transport: str, token_file: pathlib.Path) -> str:
    """``$SOCKBROKER_GRPC`` / ``$SOCKBROKER_REST``, else what the running daemon's runtime file says
    (``$SOCKBROKER_RUNTIME_FILE``, else ``runtime.json`` beside ``token_file``), else the default port."""
    variable, fallback = _TARGETS[transport]
    return os.environ.get(variable) or runtime_target(transport, runtime_file(token_file)) or fallback


@dataclass(frozen=True)
class Datagram:
    data: bytes
    host: str
    port: int


class _Handle:
    def __init__(self, broker: AsyncBroker, handle: str) -> None:
        self.broker = broker
        self.handle = handle

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.handle}>"

    def __str__(self) -> str:
        return self.handle

    async def describe(self) -> dict[str, Any]:
        return await self.broker.describe(self)

    async def addresses(self, port_numbers: bool = False) -> tuple[Any, ...]:
        return await self.broker.tcp_addresses(self, port_numbers)

    async def _close_on_exit(self) -> None:
        """What leaving ``async with`` does; each kind of handle says."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """``async with handle:`` closes it on leaving (a custodian is shut down); a handle closed
        already inside the block is not an error there."""
        try:
            await self._close_on_exit()
        except BrokerError:
            if not (await self.describe()).get("closed"):
                raise


def _h(value: Any) -> Any:
    """A handle object (async, or wrapped by the blocking client) as its handle string."""
    handle = getattr(value, "handle", None)
    return handle if isinstance(handle, str) else value


class Custodian(_Handle):
    async def delegate(
        self,
        *,
        expires_seconds: float,
        allow_connect: Sequence[str] = (),
        allow_listen: Sequence[str] = (),
        allow_ports: Sequence[str] = (),
        allow_multicast: Sequence[str] = (),
        allow_multicast_interface: Sequence[str] = (),
        allow_handoff: bool = False,
    ) -> str:
        """A bearer token for sessions under this custodian (:meth:`AsyncBroker.delegate`)."""
        return await self.broker.delegate(
            self,
            expires_seconds=expires_seconds,
            allow_connect=allow_connect,
            allow_listen=allow_listen,
            allow_ports=allow_ports,
            allow_multicast=allow_multicast,
            allow_multicast_interface=allow_multicast_interface,
            allow_handoff=allow_handoff,
        )

    async def shutdown_all(self) -> None:
        await self.broker.custodian_shutdown_all(self)

    async def _close_on_exit(self) -> None:
        await self.shutdown_all()


class Listener(_Handle):
    async def accept(
        self, *, custodian: Custodian | str | None = None, timeout: float | None = None
    ) -> tuple[InputPort, OutputPort] | None:
        return await self.broker.tcp_accept(self, custodian=custodian, timeout=timeout)

    async def accept_ready(self) -> bool:
        return await self.broker.tcp_accept_ready(self)

    async def close(self) -> None:
        await self.broker.tcp_close(self)

    async def _close_on_exit(self) -> None:
        await self.close()


class _Port(_Handle):
    """What both ports of a TCP connection can do."""

    async def set_buffer_mode(self, mode: str) -> None:
        await self.broker.call("Ports.SetBufferMode", port=self.handle, mode=mode)

    async def close(self) -> None:
        await self.broker.call("Ports.Close", port=self.handle)

    async def abandon(self) -> None:
        await self.broker.tcp_abandon_port(self.handle)

    async def _close_on_exit(self) -> None:
        await self.close()


class InputPort(_Port):
    async def read(
        self, max_bytes: int = 65536, *, mode: str = "avail", peek: bool = False, timeout: float | None = None
    ) -> bytes | _Eof | None:
        """read-bytes-avail! (``avail``), read-bytes-avail!* (``nowait``), read-bytes (``exact``).

        Bytes; :data:`EOF` at end of file; ``b""`` when ``nowait`` finds nothing; None when
        ``timeout`` passed before anything came (nothing was consumed)."""
        reply = await self.broker.call(
            "Ports.Read", port=self.handle, max=max_bytes, mode=mode, peek=peek, timeout=timeout
        )
        if reply.get("eof"):
            return EOF
        data: bytes = reply.get("data", b"")
        # A waiting read comes back empty only when its timeout passed (the daemon's rule, docs/semantics.md).
        if not data and timeout is not None and mode != "nowait" and max_bytes > 0:
            return None
        return data

    async def read_bytes_avail(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes | _Eof | None:
        return await self.read(max_bytes, timeout=timeout)

    async def read_bytes_avail_nowait(self, max_bytes: int = 65536) -> bytes | _Eof | None:
        return await self.read(max_bytes, mode="nowait")

    async def read_bytes(self, amount: int, *, timeout: float | None = None) -> bytes | _Eof | None:
        return await self.read(amount, mode="exact", timeout=timeout)

    async def peek_bytes_avail(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes | _Eof | None:
        return await self.read(max_bytes, peek=True, timeout=timeout)

    async def open_channel(self, mode: str = "relay") -> ChannelSocket:
        """The connection out of band (``Ports.OpenChannel``): a plain socket carrying its bytes,
        relayed by the daemon (``relay``) or the connection's own (``handoff``)."""
        return await self.broker.open_channel(self, mode)


class OutputPort(_Port):
    async def write(self, data: bytes, *, flush: bool = False) -> int:
        return int((await self.broker.call("Ports.Write", port=self.handle, data=data, flush=flush)).get("written", 0))

    write_bytes = write

    async def flush(self) -> None:
        await self.broker.call("Ports.Flush", port=self.handle)

    flush_output = flush


def _datagram(reply: dict[str, Any]) -> tuple[int, str, int, bytes] | tuple[None, None, None, None]:
    if reply.get("count") is None:
        return None, None, None, None
    return int(reply["count"]), str(reply["host"]), int(reply["port"]), bytes(reply.get("data", b""))


class UdpSocket(_Handle):
    """A UDP socket; every ``udp-…`` function of the broker is also a method here, prefix dropped."""

    async def _call(self, method: str, **args: Any) -> dict[str, Any]:
        return await self.broker.call(method, udp=self.handle, **args)

    async def bind(self, hostname: str | None, port: int, reuse: bool = False) -> None:
        await self._call("Udp.Bind", hostname=hostname, port=port, reuse=reuse)

    async def connect(self, hostname: str | None, port: int | None) -> None:
        await self._call("Udp.Connect", hostname=hostname, port=port)

    async def send_to(
        self,
        hostname: str,
        port: int,
        data: bytes,
        start: int = 0,
        end: int | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        return bool(
            (
                await self._call(
                    "Udp.SendTo",
                    hostname=hostname,
                    port=port,
                    data=data,
                    start=start,
                    end=end,
                    wait=wait,
                    timeout=timeout,
                )
            ).get("sent")
        )

    async def send_to_nowait(
        self, hostname: str, port: int, data: bytes, start: int = 0, end: int | None = None
    ) -> bool:
        return await self.send_to(hostname, port, data, start, end, wait=False)

    async def send(
        self, data: bytes, start: int = 0, end: int | None = None, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        return bool(
            (await self._call("Udp.Send", data=data, start=start, end=end, wait=wait, timeout=timeout)).get("sent")
        )

    async def send_nowait(self, data: bytes, start: int = 0, end: int | None = None) -> bool:
        return await self.send(data, start, end, wait=False)

    async def receive(
        self, max_bytes: int = 65535, *, wait: bool = True, timeout: float | None = None
    ) -> tuple[int, str, int, bytes] | tuple[None, None, None, None]:
        """udp-receive!: (count, host, port, data); all None when nothing came (nowait, timeout)."""
        return _datagram(await self._call("Udp.Receive", max=max_bytes, wait=wait, timeout=timeout))

    async def receive_nowait(
        self, max_bytes: int = 65535
    ) -> tuple[int, str, int, bytes] | tuple[None, None, None, None]:
        return await self.receive(max_bytes, wait=False)

    async def set_receive_buffer_size(self, size: int) -> None:
        await self._call("Udp.SetReceiveBufferSize", size=size)

    async def close(self) -> None:
        await self._call("Udp.Close")

    async def open_channel(self, mode: str = "handoff") -> ChannelSocket:
        """The socket's own descriptor (``Udp.OpenChannel``), as a plain socket."""
        return await self.broker.udp_open_channel(self, mode)

    async def _close_on_exit(self) -> None:
        await self.close()

    async def bound(self) -> bool:
        return bool((await self.describe()).get("bound"))

    async def connected(self) -> bool:
        return bool((await self.describe()).get("connected"))

    async def ttl(self) -> int:
        return int((await self._call("Udp.GetTtl"))["ttl"])

    async def set_ttl(self, ttl: int) -> None:
        await self._call("Udp.SetTtl", ttl=ttl)

    async def multicast_join_group(self, group: str, interface: str | None = None) -> None:
        await self._call("Udp.MulticastJoin", group=group, interface=interface)

    async def multicast_leave_group(self, group: str, interface: str | None = None) -> None:
        await self._call("Udp.MulticastLeave", group=group, interface=interface)

    async def multicast_interface(self) -> str:
        return str((await self._call("Udp.GetMulticastInterface"))["interface"])

    async def multicast_set_interface(self, interface: str | None) -> None:
        await self._call("Udp.SetMulticastInterface", interface=interface)

    async def multicast_loopback(self) -> bool:
        return bool((await self._call("Udp.GetMulticastLoopback"))["loopback"])

    async def multicast_set_loopback(self, loopback: bool) -> None:
        await self._call("Udp.SetMulticastLoopback", loopback=loopback)

    async def multicast_ttl(self) -> int:
        return int((await self._call("Udp.GetMulticastTtl"))["ttl"])

    async def multicast_set_ttl(self, ttl: int) -> None:
        await self._call("Udp.SetMulticastTtl", ttl=ttl)

    def receive_stream(self, max_bytes: int | None = None) -> AsyncIterator[Datagram]:
        """Datagrams as they arrive (``Udp.ReceiveStream`` / the UDP WebSocket)."""
        return self.broker._receive_stream(self, max_bytes)

    async def send_stream(
        self, datagrams: AsyncIterator[tuple[bytes, str, int]] | Iterable[tuple[bytes, str, int]]
    ) -> int:
        """Send ``(data, host, port)`` tuples (host "" = the connected peer); returns how many."""
        return await self.broker._send_stream(self, datagrams)


class _Closable(Protocol):
    async def aclose(self) -> None: ...


_Opened = TypeVar("_Opened", bound=_Closable)


class Connecting(Generic[_Opened]):
    """What :meth:`AsyncBroker.connect` (and ``AsyncAdmin.connect``) returns: ``await`` it for the
    broker, or use it in ``async with`` directly, which closes the session on leaving the block."""

    def __init__(self, opening: Coroutine[Any, Any, _Opened]) -> None:
        self._opening = opening
        self._broker: _Opened | None = None

    def __await__(self) -> Generator[Any, None, _Opened]:
        return self._opening.__await__()

    async def __aenter__(self) -> _Opened:
        self._broker = await self._opening
        return self._broker

    async def __aexit__(self, *exc: object) -> None:
        if self._broker is not None:
            await self._broker.aclose()


@dataclass(frozen=True)
class _SessionOptions:
    """How ``connect`` opens its session: attached, its lease, its grace period, or a resume."""

    attach: bool
    lease_seconds: float | None
    grace_seconds: float | None
    resume: tuple[str, str] | None


async def open_transport(
    target: str | None,
    *,
    token: str | None,
    token_file: str | os.PathLike[str] | None,
    transport: str | None,
    credentials: Any,
    verify: Any,
) -> Channel:
    """A channel to the daemon: the transport, target and token as :meth:`AsyncBroker.connect`
    finds them."""
    kind = _transport_for(target, transport)
    path = pathlib.Path(token_file) if token_file else default_token_file()
    if token is None:
        token = os.environ.get("SOCKBROKER_TOKEN")
    if token is None:
        token = await asyncio.to_thread(read_token_file, path)
    if not target:
        target = await asyncio.to_thread(_default_target, kind, path)
    if kind == "grpc":
        return GrpcTransport(target, token, credentials=credentials)
    return RestTransport(target, token, verify=verify)


class AsyncBroker:
    """A session with the broker. ``async with AsyncBroker.connect(...) as broker: ...``"""

    def __init__(
        self,
        channel: Channel,
        session: str,
        custodian: str,
        lease_seconds: float,
        grace_seconds: float = 0.0,
        resume_token: str = "",
    ) -> None:
        self.channel = channel
        self.session = session
        self.custodian = Custodian(self, custodian)
        self.lease_seconds = lease_seconds
        #: The grace period the daemon granted (0: none), and the token that takes the session
        #: back within it: ``AsyncBroker.connect(..., resume=broker.resumption)`` from another
        #: process or after the connection broke. Each resume gives a new token.
        self.grace_seconds = grace_seconds
        self.resume_token = resume_token
        self._attachment: Any = None

    @property
    def resumption(self) -> tuple[str, str]:
        """``(session, resume_token)``: what ``connect(resume=...)`` takes back."""
        return self.session, self.resume_token

    # ── session ────────────────────────────────────────────────────────────
    @classmethod
    def connect(
        cls,
        target: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        transport: str | None = None,
        attach: bool = True,
        lease_seconds: float | None = None,
        grace_seconds: float | None = None,
        resume: tuple[str, str] | None = None,
        credentials: Any = None,
        verify: Any = True,
    ) -> Connecting[AsyncBroker]:
        """Open a session: ``async with AsyncBroker.connect() as broker:`` (or ``await`` it).

        ``target``: ``HOST:PORT`` for gRPC, ``http(s)://HOST:PORT`` for REST, or
        ``http+unix://PATH`` for REST on the daemon's Unix socket (``--rest-unix-socket``: with
        ``token=""`` the daemon names the caller by its uid or gid); ``transport``
        (``"grpc"`` or ``"rest"``) defaults to what the target says, gRPC without a target.
        The token defaults to ``$SOCKBROKER_TOKEN``, then the token file (``$SOCKBROKER_TOKEN_FILE``
        or the daemon's default path), which must be a regular file of at most 4096 bytes
        (``TokenFileError`` otherwise). The target defaults to ``$SOCKBROKER_GRPC`` /
        ``$SOCKBROKER_REST``, then the addresses in the running daemon's runtime file
        (``$SOCKBROKER_RUNTIME_FILE``, or ``runtime.json`` beside the token file), then
        ``127.0.0.1:50051`` / ``http://127.0.0.1:8080``. With
        ``attach`` (the default) the session is held by an attachment stream, so it drops
        the moment this process dies. TLS: ``credentials`` (``grpc.ssl_channel_credentials(...)``)
        for gRPC; an ``https://`` target and ``verify`` (a CA bundle path or ``ssl.SSLContext``)
        for REST.

        ``grace_seconds`` asks the daemon to keep the session that long after its attachment
        breaks or its lease runs out (bounded by the daemon's ``max_grace_seconds``);
        ``resume=(session, resume_token)`` takes such a session back instead of opening one,
        every handle intact (``broker.resumption`` of the old broker). ``NotFoundError`` when
        the token is wrong or the grace period is over.
        """
        return Connecting(
            cls._open(
                target,
                token=token,
                token_file=token_file,
                transport=transport,
                options=_SessionOptions(attach, lease_seconds, grace_seconds, resume),
                credentials=credentials,
                verify=verify,
            )
        )

    @classmethod
    async def _open(
        cls,
        target: str | None,
        *,
        token: str | None,
        token_file: str | os.PathLike[str] | None,
        transport: str | None,
        options: _SessionOptions,
        credentials: Any,
        verify: Any,
    ) -> AsyncBroker:
        channel = await open_transport(
            target, token=token, token_file=token_file, transport=transport, credentials=credentials, verify=verify
        )
        return await cls.over(
            channel,
            attach=options.attach,
            lease_seconds=options.lease_seconds,
            grace_seconds=options.grace_seconds,
            resume=options.resume,
        )

    @classmethod
    async def over(
        cls,
        channel: Channel,
        *,
        attach: bool = True,
        lease_seconds: float | None = None,
        grace_seconds: float | None = None,
        resume: tuple[str, str] | None = None,
    ) -> AsyncBroker:
        """Open a session (or, with ``resume``, take one back) over an already made ``channel``
        (a transport of your own); the broker owns the channel from here and closes it with the
        session."""
        try:
            if resume is not None:
                session, token = resume
                reply = await channel.call("Sessions.Resume", {"session": session, "resume_token": token}, session)
            else:
                args = {"lease_seconds": lease_seconds, "grace_seconds": grace_seconds}
                reply = await channel.call("Sessions.Open", {k: v for k, v in args.items() if v is not None}, None)
            broker = cls(
                channel,
                reply["session"],
                reply["custodian"],
                float(reply["lease_seconds"]),
                float(reply.get("grace_seconds") or 0.0),
                reply.get("resume_token") or "",
            )
            if attach:
                broker._attachment = await channel.attach(broker.session)
        except BaseException:
            await channel.aclose()
            raise
        return broker

    async def call(self, method: str, **args: Any) -> dict[str, Any]:
        """Any RPC by name (``"Tcp.Listen"``) with the proto's field names; handles may be objects.

        Cancelling the calling task cancels the call in the daemon, which gives back whatever the
        call had already obtained to the next caller (see ``_breaks``)."""
        plain = {k: _h(v) for k, v in args.items()}

        async def run(call_id: str) -> dict[str, Any]:
            return await self.channel.call(method, plain, self.session, call_id)

        async def cancel(call_id: str) -> None:
            await self.channel.call("Sessions.CancelCall", {"call": call_id}, self.session)

        return await breakable(run, cancel)

    async def keep_alive(self) -> float:
        return float((await self.call("Sessions.KeepAlive"))["lease_seconds"])

    async def detach(self) -> None:
        """End the attachment without dropping the session (the lease holds it from now on)."""
        if self._attachment is not None:
            attachment, self._attachment = self._attachment, None
            try:
                await attachment.detach()
            finally:
                await attachment.aclose()

    async def abandon(self) -> None:
        """Close the channel without closing the session, as a crash or a broken network would:
        the attachment breaks, so the session drops — or, opened with ``grace_seconds``, waits
        for ``connect(resume=broker.resumption)``."""
        try:
            if self._attachment is not None:
                attachment, self._attachment = self._attachment, None
                await attachment.aclose()
        finally:
            await self.channel.aclose()

    async def aclose(self) -> None:
        """Close the session (every handle in it) and the channel."""
        try:
            await self.call("Sessions.Close")
        finally:
            if self._attachment is not None:
                await self._attachment.aclose()
            await self.channel.aclose()

    async def __aenter__(self) -> AsyncBroker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ── custodians and handles ─────────────────────────────────────────────
    async def make_custodian(self, parent: Custodian | str | None = None) -> Custodian:
        return Custodian(self, (await self.call("Custodians.Create", parent=_h(parent)))["custodian"])

    async def custodian_shutdown_all(self, custodian: Custodian | str) -> None:
        await self.call("Custodians.Shutdown", custodian=_h(custodian))

    async def describe_custodian(self, custodian: Custodian | str) -> dict[str, Any]:
        return await self.call("Custodians.Describe", custodian=_h(custodian))

    async def delegate(
        self,
        custodian: Custodian | str,
        *,
        expires_seconds: float,
        allow_connect: Sequence[str] = (),
        allow_listen: Sequence[str] = (),
        allow_ports: Sequence[str] = (),
        allow_multicast: Sequence[str] = (),
        allow_multicast_interface: Sequence[str] = (),
        allow_handoff: bool = False,
    ) -> str:
        """``Custodians.Delegate``: a bearer token for a sandboxed child. Sessions opened with it
        (``AsyncBroker.connect(token=...)``) live under ``custodian`` with this session's policy
        narrowed to the lists given (an empty list allows nothing of its kind; ports ``"0-65535"``
        for all). It ends after ``expires_seconds``, or when ``custodian`` is shut down, and every
        session opened with it then drops."""
        reply = await self.call(
            "Custodians.Delegate",
            custodian=_h(custodian),
            allow_connect=list(allow_connect),
            allow_listen=list(allow_listen),
            allow_ports=list(allow_ports),
            allow_multicast=list(allow_multicast),
            allow_multicast_interface=list(allow_multicast_interface),
            allow_handoff=allow_handoff,
            expires_seconds=expires_seconds,
        )
        return str(reply["token"])

    async def describe(self, handle: _Handle | str) -> dict[str, Any]:
        return await self.call("Handles.Describe", handle=_h(handle))

    async def tcp_addresses(self, handle: _Handle | str, port_numbers: bool = False) -> tuple[Any, ...]:
        reply = await self.call("Handles.Addresses", handle=_h(handle), port_numbers=port_numbers)
        if port_numbers:
            return reply["local_host"], reply["local_port"], reply["remote_host"], reply["remote_port"]
        return reply["local_host"], reply["remote_host"]

    udp_addresses = tcp_addresses

    async def tcp_listener(self, handle: _Handle | str) -> bool:
        return bool((await self.describe(handle))["kind"] == "tcp-listener")

    async def tcp_port(self, handle: _Handle | str) -> bool:
        return (await self.describe(handle))["kind"] in ("tcp-input-port", "tcp-output-port")

    async def udp(self, handle: _Handle | str) -> bool:
        return bool((await self.describe(handle))["kind"] == "udp")

    # ── tcp ────────────────────────────────────────────────────────────────
    async def tcp_listen(
        self,
        port: int,
        backlog: int = 4,
        reuse: bool = False,
        hostname: str | None = None,
        *,
        custodian: Custodian | str | None = None,
    ) -> Listener:
        reply = await self.call(
            "Tcp.Listen", port=port, backlog=backlog, reuse=reuse, hostname=hostname, custodian=_h(custodian)
        )
        return Listener(self, reply["listener"])

    def _ports(self, reply: dict[str, Any]) -> tuple[InputPort, OutputPort] | None:
        if reply.get("in") is None:
            return None
        return InputPort(self, reply["in"]), OutputPort(self, reply["out"])

    async def tcp_connect(
        self,
        hostname: str,
        port: int,
        local_hostname: str | None = None,
        local_port: int | None = None,
        *,
        custodian: Custodian | str | None = None,
        timeout: float | None = None,
    ) -> tuple[InputPort, OutputPort]:
        reply = await self.call(
            "Tcp.Connect",
            hostname=hostname,
            port=port,
            local_hostname=local_hostname,
            local_port=local_port,
            custodian=_h(custodian),
            timeout=timeout,
        )
        ports = self._ports(reply)
        assert ports is not None
        return ports

    async def tcp_accept(
        self, listener: Listener | str, *, custodian: Custodian | str | None = None, timeout: float | None = None
    ) -> tuple[InputPort, OutputPort] | None:
        """tcp-accept; with a ``timeout``, None when no client came in time."""
        reply = await self.call("Tcp.Accept", listener=_h(listener), custodian=_h(custodian), timeout=timeout)
        return self._ports(reply)

    async def tcp_accept_ready(self, listener: Listener | str) -> bool:
        return bool((await self.call("Tcp.AcceptReady", listener=_h(listener))).get("ready"))

    async def tcp_close(self, listener: Listener | str) -> None:
        await self.call("Tcp.Close", listener=_h(listener))

    async def tcp_abandon_port(self, port: InputPort | OutputPort | str) -> None:
        await self.call("Tcp.AbandonPort", port=_h(port))

    async def open_channel(self, port: InputPort | str, mode: str = "relay") -> ChannelSocket:
        """The connection of input port ``port`` out of band (``Ports.OpenChannel``, DESIGN §8): a
        plain blocking socket. ``relay``: a connection to the daemon that carries the connection's
        bytes both ways, spliced by the daemon (half-close carried). ``handoff``: the connection's
        own socket, passed over the daemon's Unix socket; closing the port, its custodian or the
        session shuts it down. Either way the ports then only close (docs/channels.md)."""
        reply = await self.call("Ports.OpenChannel", port=_h(port), mode=mode)
        return await asyncio.to_thread(redeem, reply["ticket"], reply["address"], mode)

    async def udp_open_channel(self, sock: UdpSocket | str, mode: str = "handoff") -> ChannelSocket:
        """The UDP socket's own descriptor (``Udp.OpenChannel``, mode ``handoff``), as a plain
        blocking socket; closing the handle, its custodian or the session shuts it down."""
        reply = await self.call("Udp.OpenChannel", udp=_h(sock), mode=mode)
        return await asyncio.to_thread(redeem, reply["ticket"], reply["address"], mode, udp=True)

    async def tcp_stream(self, port: InputPort | str) -> PortStream:
        """A byte stream over the connection of ``port`` (``Ports.Stream`` / the WebSocket)."""
        return await self.channel.port_stream(self.session, _h(port) or "")

    # ── udp ────────────────────────────────────────────────────────────────
    async def udp_open_socket(
        self,
        family_hostname: str | None = None,
        family_port: int | None = None,
        *,
        custodian: Custodian | str | None = None,
    ) -> UdpSocket:
        reply = await self.call(
            "Udp.Open", family_hostname=family_hostname, family_port=family_port, custodian=_h(custodian)
        )
        return UdpSocket(self, reply["udp"])

    async def _receive_stream(self, sock: UdpSocket, max_bytes: int | None) -> AsyncIterator[Datagram]:
        async for data, host, port in self.channel.receive_datagrams(self.session, sock.handle, max_bytes):
            yield Datagram(data, host, port)

    async def _send_stream(
        self, sock: UdpSocket, datagrams: AsyncIterator[tuple[bytes, str, int]] | Iterable[tuple[bytes, str, int]]
    ) -> int:
        async def frames() -> AsyncIterator[tuple[bytes, str, int]]:
            if isinstance(datagrams, AsyncIterator):
                async for item in datagrams:
                    yield item
            else:
                for item in datagrams:
                    yield item

        return await self.channel.send_datagrams(self.session, sock.handle, frames())

    # ── udp, by the naming rule: every UdpSocket method is also ``udp_<method>`` here ──
    def _udp(self, sock: UdpSocket | str) -> UdpSocket:
        return sock if isinstance(sock, UdpSocket) else UdpSocket(self, sock)

    async def udp_bind(self, sock: UdpSocket | str, hostname: str | None, port: int, reuse: bool = False) -> None:
        """``udp-bind!``: :meth:`UdpSocket.bind`."""
        return await self._udp(sock).bind(hostname, port, reuse)

    async def udp_connect(self, sock: UdpSocket | str, hostname: str | None, port: int | None) -> None:
        """``udp-connect!``: :meth:`UdpSocket.connect`."""
        return await self._udp(sock).connect(hostname, port)

    async def udp_send_to(
        self,
        sock: UdpSocket | str,
        hostname: str,
        port: int,
        data: bytes,
        start: int = 0,
        end: int | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        """``udp-send-to``: :meth:`UdpSocket.send_to`."""
        return await self._udp(sock).send_to(hostname, port, data, start, end, wait=wait, timeout=timeout)

    async def udp_send_to_nowait(
        self, sock: UdpSocket | str, hostname: str, port: int, data: bytes, start: int = 0, end: int | None = None
    ) -> bool:
        """``udp-send-to*``: :meth:`UdpSocket.send_to_nowait`."""
        return await self._udp(sock).send_to_nowait(hostname, port, data, start, end)

    async def udp_send(
        self,
        sock: UdpSocket | str,
        data: bytes,
        start: int = 0,
        end: int | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        """``udp-send``: :meth:`UdpSocket.send`."""
        return await self._udp(sock).send(data, start, end, wait=wait, timeout=timeout)

    async def udp_send_nowait(self, sock: UdpSocket | str, data: bytes, start: int = 0, end: int | None = None) -> bool:
        """``udp-send*``: :meth:`UdpSocket.send_nowait`."""
        return await self._udp(sock).send_nowait(data, start, end)

    async def udp_receive(
        self, sock: UdpSocket | str, max_bytes: int = 65535, *, wait: bool = True, timeout: float | None = None
    ) -> tuple[int, str, int, bytes] | tuple[None, None, None, None]:
        """``udp-receive!``: :meth:`UdpSocket.receive`."""
        return await self._udp(sock).receive(max_bytes, wait=wait, timeout=timeout)

    async def udp_receive_nowait(
        self, sock: UdpSocket | str, max_bytes: int = 65535
    ) -> tuple[int, str, int, bytes] | tuple[None, None, None, None]:
        """``udp-receive!*``: :meth:`UdpSocket.receive_nowait`."""
        return await self._udp(sock).receive_nowait(max_bytes)

    async def udp_set_receive_buffer_size(self, sock: UdpSocket | str, size: int) -> None:
        """``udp-set-receive-buffer-size!``: :meth:`UdpSocket.set_receive_buffer_size`."""
        return await self._udp(sock).set_receive_buffer_size(size)

    async def udp_close(self, sock: UdpSocket | str) -> None:
        """``udp-close``: :meth:`UdpSocket.close`."""
        return await self._udp(sock).close()

    async def udp_bound(self, sock: UdpSocket | str) -> bool:
        """``udp-bound?``: :meth:`UdpSocket.bound`."""
        return await self._udp(sock).bound()

    async def udp_connected(self, sock: UdpSocket | str) -> bool:
        """``udp-connected?``: :meth:`UdpSocket.connected`."""
        return await self._udp(sock).connected()

    async def udp_ttl(self, sock: UdpSocket | str) -> int:
        """``udp-ttl``: :meth:`UdpSocket.ttl`."""
        return await self._udp(sock).ttl()

    async def udp_set_ttl(self, sock: UdpSocket | str, ttl: int) -> None:
        """``udp-set-ttl!``: :meth:`UdpSocket.set_ttl`."""
        return await self._udp(sock).set_ttl(ttl)

    async def udp_multicast_join_group(self, sock: UdpSocket | str, group: str, interface: str | None = None) -> None:
        """``udp-multicast-join-group!``: :meth:`UdpSocket.multicast_join_group`."""
        return await self._udp(sock).multicast_join_group(group, interface)

    async def udp_multicast_leave_group(self, sock: UdpSocket | str, group: str, interface: str | None = None) -> None:
        """``udp-multicast-leave-group!``: :meth:`UdpSocket.multicast_leave_group`."""
        return await self._udp(sock).multicast_leave_group(group, interface)

    async def udp_multicast_interface(self, sock: UdpSocket | str) -> str:
        """``udp-multicast-interface``: :meth:`UdpSocket.multicast_interface`."""
        return await self._udp(sock).multicast_interface()

    async def udp_multicast_set_interface(self, sock: UdpSocket | str, interface: str | None) -> None:
        """``udp-multicast-set-interface!``: :meth:`UdpSocket.multicast_set_interface`."""
        return await self._udp(sock).multicast_set_interface(interface)

    async def udp_multicast_loopback(self, sock: UdpSocket | str) -> bool:
        """``udp-multicast-loopback?``: :meth:`UdpSocket.multicast_loopback`."""
        return await self._udp(sock).multicast_loopback()

    async def udp_multicast_set_loopback(self, sock: UdpSocket | str, loopback: bool) -> None:
        """``udp-multicast-set-loopback!``: :meth:`UdpSocket.multicast_set_loopback`."""
        return await self._udp(sock).multicast_set_loopback(loopback)

    async def udp_multicast_ttl(self, sock: UdpSocket | str) -> int:
        """``udp-multicast-ttl``: :meth:`UdpSocket.multicast_ttl`."""
        return await self._udp(sock).multicast_ttl()

    async def udp_multicast_set_ttl(self, sock: UdpSocket | str, ttl: int) -> None:
        """``udp-multicast-set-ttl!``: :meth:`UdpSocket.multicast_set_ttl`."""
        return await self._udp(sock).multicast_set_ttl(ttl)

    # ── events ─────────────────────────────────────────────────────────────
    async def sync(self, *events: dict[str, Any], timeout: float | None = None) -> tuple[int, Any] | None:
        """sync / sync/timeout: (index, result) of the one event performed; None on timeout."""
        for event in events:
            if not isinstance(event, dict) or len(event) != 1:
                raise ContractError("sync: expected an event made by one of the *_evt functions")
        reply = await self.call("Events.Sync", events=list(events), timeout=timeout)
        if reply.get("index") is None:
            return None
        result = reply.get("result") or {}
        value: Any
        ((kind, value),) = result.items() if result else (("ready", None),)
        if kind == "connection":
            return reply["index"], self._ports(value)
        if kind == "datagram":
            return reply["index"], _datagram(value)
        return reply["index"], value


def _evt(kind: str, **args: Any) -> dict[str, Any]:
    return {kind: {k: _h(v) for k, v in args.items() if v is not None}}


def tcp_accept_evt(listener: Listener | str, custodian: Custodian | str | None = None) -> dict[str, Any]:
    return _evt("tcp_accept", listener=listener, custodian=custodian)


def tcp_listener_evt(listener: Listener | str) -> dict[str, Any]:
    """A listener as an event: ready when tcp-accept would not block."""
    return _evt("listener_ready", listener=listener)


def port_read_ready_evt(port: InputPort | str) -> dict[str, Any]:
    return _evt("port_read_ready", port=port)


def port_write_ready_evt(port: OutputPort | str) -> dict[str, Any]:
    return _evt("port_write_ready", port=port)


def udp_receive_ready_evt(sock: UdpSocket | str) -> dict[str, Any]:
    return _evt("udp_receive_ready", udp=sock)


def udp_send_ready_evt(sock: UdpSocket | str) -> dict[str, Any]:
    return _evt("udp_send_ready", udp=sock)


def udp_receive_evt(sock: UdpSocket | str, max_bytes: int | None = None) -> dict[str, Any]:
    return _evt("udp_receive", udp=sock, max=max_bytes)


def udp_send_evt(
    sock: UdpSocket | str, data: bytes, start: int | None = None, end: int | None = None
) -> dict[str, Any]:
    return _evt("udp_send", udp=sock, data=data, start=start, end=end)


def udp_send_to_evt(
    sock: UdpSocket | str, hostname: str, port: int, data: bytes, start: int | None = None, end: int | None = None
) -> dict[str, Any]:
    return _evt("udp_send_to", udp=sock, hostname=hostname, port=port, data=data, start=start, end=end)


EVENTS = (
    tcp_accept_evt,
    tcp_listener_evt,
    port_read_ready_evt,
    port_write_ready_evt,
    udp_receive_ready_evt,
    udp_send_ready_evt,
    udp_receive_evt,
    udp_send_evt,
    udp_send_to_evt,
)

__all__ += [f.__name__ for f in EVENTS]
