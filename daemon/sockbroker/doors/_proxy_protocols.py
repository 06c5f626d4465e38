"""The proxy door's two protocols on the wire (:mod:`.proxy` says what the door does with them).

* SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): :class:`Socks` reads the
  greeting, the authentication and the request, and writes the replies; :func:`unwrap` reads the
  header of a UDP datagram, :func:`packed` writes an address.
* HTTP CONNECT: :class:`Http` reads the request head (exactly, a peek finding its end) with its
  ``Proxy-Authorization: Basic`` credentials, and writes the status line.

Refusals: :func:`socks_reply` and :func:`http_status` map a core error to a SOCKS5 reply code and
an HTTP status; :class:`Refusal` is a request refused by the door itself (malformed, or asking for
what the door does not serve); :class:`Ended` is a client that left (or was answered and closed)
in the middle of its opening exchange.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import errno
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass

from sockbroker_wire.errors import WIRE_STATUS

from ..core.broker import Broker, Credentials, Principal
from ..core.errors import BrokerError, NetworkErrnoError, UnauthenticatedError
from ._listeners import readable

__all__ = [
    "MAX_HEAD",
    "SOCKS_VERSION",
    "WHO",
    "Command",
    "Ended",
    "Http",
    "Refusal",
    "Reply",
    "Request",
    "Socks",
    "http_status",
    "packed",
    "recv_exact",
    "socks_reply",
    "unwrap",
]

log = logging.getLogger(__name__)

#: The longest HTTP request head the door reads.
MAX_HEAD = 8192
#: The ``who`` of the door's own refusals.
WHO = "proxy"

SOCKS_VERSION = 5
_USERPASS = 0x02
_NO_ACCEPTABLE = 0xFF


class Command(enum.IntEnum):
    CONNECT = 1
    BIND = 2
    UDP_ASSOCIATE = 3


class Reply(enum.IntEnum):
    """SOCKS5 reply codes (RFC 1928 §6)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


_ERRNO_REPLY = {
    errno.ECONNREFUSED: Reply.REFUSED,
    errno.ENETUNREACH: Reply.NETWORK_UNREACHABLE,
    errno.ENETDOWN: Reply.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: Reply.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Reply.HOST_UNREACHABLE,
    errno.ETIMEDOUT: Reply.HOST_UNREACHABLE,
}


def socks_reply(exc: BrokerError) -> Reply:
    """The SOCKS5 reply for a refusal: the policy's denial ``0x02``; the OS's refusal by its errno
    (a name that does not resolve is ``0x04``); anything else ``0x01``. (Linux reports an ICMP
    time-exceeded as EHOSTUNREACH, so ``0x06`` is never sent.)"""
    if exc.kind == "permission-denied":
        return Reply.NOT_ALLOWED
    if isinstance(exc, NetworkErrnoError):
        if exc.errno_family == "gai":
            return Reply.HOST_UNREACHABLE
        return _ERRNO_REPLY.get(exc.errno or 0, Reply.GENERAL_FAILURE)
    return Reply.GENERAL_FAILURE


def http_status(exc: BrokerError) -> int:
    """The HTTP status for a refusal: the daemon's one table (DESIGN §4), with ``407`` for
    missing or wrong credentials (a proxy's own 401)."""
    status = WIRE_STATUS.get(exc.kind, ("", 500))[1]
    return 407 if status == 401 else status


_REASONS = {
    200: "Connection established",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    409: "Conflict",
    429: "Too Many Requests",
    499: "Client Closed Request",
    502: "Bad Gateway",
}


class Refusal(Exception):
    """A request refused by the door itself (malformed, or asking what the door does not do)."""

    def __init__(self, reply: Reply, status: int, message: str) -> None:
        super().__init__(message)
        self.reply = reply
        self.status = status


class Ended(Exception):
    """The client left, or was answered and closed, in the middle of its opening exchange."""


@dataclass(frozen=True)
class Request:
    command: Command
    host: str
    port: int
    username: str
    principal: Principal


def unwrap(data: bytes) -> tuple[str, int, bytes] | None:
    """A client's datagram: (host, port, payload), None for a fragment; ValueError when malformed."""
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError("not a SOCKS5 UDP header")
    if data[2] != 0:
        return None
    kind = data[3]
    try:
        if kind == 1:
            host, at = socket.inet_ntop(socket.AF_INET, data[4:8]), 8
        elif kind == 4:
            host, at = socket.inet_ntop(socket.AF_INET6, data[4:20]), 20
        elif kind == 3:
            size = data[4]
            host, at = data[5 : 5 + size].decode("utf-8"), 5 + size
        else:
            raise ValueError(f"address type {kind}")
        (port,) = struct.unpack("!H", data[at : at + 2])
    except (IndexError, struct.error) as exc:  # (a bad name's UnicodeDecodeError is a ValueError)
        raise ValueError(f"a short SOCKS5 UDP header: {exc}") from None
    return host, port, data[at + 2 :]


async def recv_exact(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes, read without reading further; :class:`Ended` when the client leaves."""
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise Ended
        data += chunk
    return data


def _authenticate(broker: Broker, password: str) -> Principal:
    return broker.authenticate(Credentials(authorization=f"Bearer {password}"))


def packed(host: str, port: int) -> bytes:
    """A SOCKS5 address: its type, the address, the port."""
    address = ipaddress.ip_address(host.partition("%")[0])
    kind = 1 if address.version == 4 else 4
    return bytes([kind]) + address.packed + struct.pack("!H", port)


class Socks:
    """SOCKS5 (RFC 1928) with username/password (RFC 1929); the version byte is read."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()

    async def request(self, broker: Broker) -> Request:
        client = self.client
        (count,) = await recv_exact(client, 1)
        methods = await recv_exact(client, count)
        if _USERPASS not in methods:
            await self.loop.sock_sendall(client, bytes([SOCKS_VERSION, _NO_ACCEPTABLE]))
            raise Ended
        await self.loop.sock_sendall(client, bytes([SOCKS_VERSION, _USERPASS]))
        version, size = await recv_exact(client, 2)
        username = await recv_exact(client, size)
        (size,) = await recv_exact(client, 1)
        password = await recv_exact(client, size)
        try:
            if version != 1:
                raise UnauthenticatedError(WHO, "username/password version 1 expected")
            principal = _authenticate(broker, password.decode("utf-8", "replace"))
        except UnauthenticatedError:
            await self.loop.sock_sendall(client, b"\x01\x01")
            raise Ended from None
        await self.loop.sock_sendall(client, b"\x01\x00")
        version, command, _reserved, kind = await recv_exact(client, 4)
        if kind == 1:
            host = socket.inet_ntop(socket.AF_INET, await recv_exact(client, 4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, await recv_exact(client, 16))
        elif kind == 3:
            (size,) = await recv_exact(client, 1)
            host = (await recv_exact(client, size)).decode("utf-8", "replace")
        else:
            raise Refusal(Reply.ADDRESS_TYPE_NOT_SUPPORTED, 400, f"address type {kind} is not served")
        (port,) = struct.unpack("!H", await recv_exact(client, 2))
        if version != SOCKS_VERSION:
            raise Refusal(Reply.GENERAL_FAILURE, 400, f"SOCKS version {version} in a request")
        if command not in tuple(Command):
            raise Refusal(Reply.COMMAND_NOT_SUPPORTED, 400, f"command {command} is not served")
        return Request(Command(command), host, port, username.decode("utf-8", "replace"), principal)

    async def answer(self, reply: Reply, bound: tuple[str, int]) -> None:
        await self.loop.sock_sendall(self.client, bytes([SOCKS_VERSION, reply, 0]) + packed(*bound))

    async def succeed(self, bound: tuple[str, int]) -> None:
        await self.answer(Reply.SUCCEEDED, bound)

    async def refuse(self, reply: Reply, status: int, message: str) -> None:
        log.debug("proxy: SOCKS5 reply %#04x: %s", reply, message)
        with contextlib.suppress(OSError):
            await self.answer(reply, ("0.0.0.0", 0))
        self.client.close()


class Http:
    """HTTP CONNECT with ``Proxy-Authorization: Basic``; the first byte is read."""

    def __init__(self, client: socket.socket, first: bytes) -> None:
        self.client = client
        self.first = first
        self.loop = asyncio.get_running_loop()

    async def request(self, broker: Broker) -> Request:
        head = await self._head()
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise Refusal(Reply.GENERAL_FAILURE, 400, "not an HTTP request line") from None
        if not version.startswith("HTTP/1."):
            raise Refusal(Reply.GENERAL_FAILURE, 400, f"{version}: HTTP/1.x expected")
        if method != "CONNECT":
            raise Refusal(Reply.COMMAND_NOT_SUPPORTED, 405, f"{method}: this proxy serves CONNECT only")
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise Refusal(Reply.GENERAL_FAILURE, 400, f"{target}: HOST:PORT expected")
        credentials = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "proxy-authorization":
                credentials = value.strip()
        scheme, _, encoded = credentials.partition(" ")
        if scheme.lower() != "basic":
            raise UnauthenticatedError(WHO, "Proxy-Authorization: Basic credentials expected")
        try:
            username, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise UnauthenticatedError(WHO, "Proxy-Authorization: Basic credentials expected") from None
        principal = _authenticate(broker, password)
        return Request(Command.CONNECT, host.strip("[]"), int(port), username, principal)

    async def _head(self) -> bytes:
        """The request head up to its blank line, and not a byte further (a peek finds the end)."""
        head = self.first
        while True:
            await readable(self.client)
            peeked = self.client.recv(MAX_HEAD, socket.MSG_PEEK)
            if not peeked:
                raise Ended
            end = (head + peeked).find(b"\r\n\r\n", max(0, len(head) - 3))
            head += self.client.recv(len(peeked) if end < 0 else end + 4 - len(head))
            if end >= 0:
                return head[:-4]
            if len(head) >= MAX_HEAD:
                raise Refusal(Reply.GENERAL_FAILURE, 400, f"no end of the request head in {MAX_HEAD} bytes")

    async def succeed(self, bound: tuple[str, int]) -> None:
        await self.loop.sock_sendall(self.client, b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def refuse(self, reply: Reply, status: int, message: str) -> None:
        body = f"{message}\n".encode()
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if status == 407:
            head.append('Proxy-Authenticate: Basic realm="sockbroker"')
        with contextlib.suppress(OSError):
            await self.loop.sock_sendall(self.client, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.client.close()
