"""Redeeming a channel ticket (DESIGN §8, docs/channels.md): a plain socket out of band.

``Ports.OpenChannel`` / ``Udp.OpenChannel`` give a ticket and an address. The client connects to
the address, writes the ticket and a newline, and reads one line: ``OK`` or ``ERR <kind>
<message>`` (raised here as the typed error of that kind). A relay's connection is then the
connection's byte stream; a hand-off's ``OK`` line carries the socket's descriptor (SCM_RIGHTS),
followed by whatever the daemon had already read from the peer, then the end.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from sockbroker_wire.errors import WireError
from sockbroker_wire.packed import unpack_datagrams

from ._errors import ContractError, error_from_wire

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["ChannelSocket", "redeem"]

#: Seconds to connect, send the ticket and read the answer.
REDEEM_TIMEOUT = 10.0
_MAX_LINE = 4096


class ChannelSocket(socket.socket):
    """A plain socket (the kernel's own, for a hand-off), plus ``early``: what the daemon had
    already read from the peer before the hand-off, which comes before anything the socket reads.

    For a TCP connection ``early`` is bytes, and :meth:`recv` / :meth:`recv_into` (so
    ``makefile()`` too) return them first. For a UDP socket it is a list of
    ``(data, host, port)`` datagrams, which :meth:`recvfrom` returns first. ``select`` and event
    loops do not see them: read ``early`` before waiting for the socket to be readable."""

    early: bytes | list[tuple[bytes, str, int]]

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if isinstance(self.early, bytes) and self.early and not flags:
            data, self.early = self.early[:bufsize], self.early[bufsize:]
            return data
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        if isinstance(self.early, bytes) and self.early and not flags:
            view = memoryview(buffer).cast("B")
            size = min(len(view), nbytes or len(view), len(self.early))
            view[:size] = self.early[:size]
            self.early = self.early[size:]
            return size
        return super().recv_into(buffer, nbytes, flags)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if isinstance(self.early, list) and self.early and not flags:
            data, host, port = self.early.pop(0)
            return data[:bufsize], (host, port)
        return super().recvfrom(bufsize, flags)


def redeem(ticket: str, address: str, mode: str, *, udp: bool = False) -> ChannelSocket:
    """Connect to ``address``, present ``ticket``, and return the channel (blocking; bounded by
    :data:`REDEEM_TIMEOUT`). Raises the daemon's refusal as its typed error."""
    control = _connect(address)
    try:
        control.settimeout(REDEEM_TIMEOUT)
        control.sendall(ticket.encode("ascii") + b"\n")
        if mode == "handoff":
            return _handed_over(control, udp=udp)
        line, rest = _line(control)
        _check(line)
        channel = _adopt(control.detach())
        channel.early = rest  # bytes that came in the same read as the answer: the channel's first
        return channel
    finally:
        control.close()


def _connect(address: str) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = address[len("unix:") :]
    else:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    sock.settimeout(REDEEM_TIMEOUT)
    try:
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def _line(control: socket.socket) -> tuple[bytes, bytes]:
    """The answer line, and what came after it in the same reads."""
    got = b""
    while b"\n" not in got:
        chunk = control.recv(_MAX_LINE)
        if not chunk:
            raise ContractError(f"the channel closed before its answer ({got!r})")
        got += chunk
        if len(got) > _MAX_LINE:
            raise ContractError("the channel's answer is not one line")
    line, _, rest = got.partition(b"\n")
    return line, rest


def _check(line: bytes) -> None:
    text = line.decode("utf-8", "replace")
    if text == "OK":
        return
    if not text.startswith("ERR "):
        raise ContractError(f"the channel answered {text!r}")
    _, kind, message = [*text.split(" ", 2), ""][:3]
    raise error_from_wire(WireError(kind, message))


def _handed_over(control: socket.socket, *, udp: bool) -> ChannelSocket:
    """``OK`` with the descriptor, then the early bytes (or packed datagrams) until the end."""
    data, fds, _flags, _addr = socket.recv_fds(control, _MAX_LINE, 1)
    if b"\n" not in data and not fds:
        more, _ = _line(control)
        data += more + b"\n"
    line, _, rest = data.partition(b"\n")
    if not fds:
        _check(line)
        raise ContractError("the daemon answered OK without a descriptor")
    channel = _adopt(fds[0])
    try:
        _check(line)
        while chunk := control.recv(65536):
            rest += chunk
        channel.early = unpack_datagrams(rest) if udp else rest
    except BaseException:
        channel.close()
        raise
    return channel


def _adopt(fd: int) -> ChannelSocket:
    sock = ChannelSocket(fileno=fd)  # family and type as the kernel says
    sock.settimeout(None)
    return sock
