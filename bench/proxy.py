"""The proxy door's CONNECT throughput (DESIGN §11) against dante, microsocks and socat.

Every probe is the sink upload of common.py over one loopback TCP connection through a relay to
the sink, 256 KiB writes, the connection (and its SOCKS5 exchange) opened before the clock:

- ``broker.proxy``: SOCKS5 CONNECT through the daemon's proxy door (``--proxy-address
  127.0.0.1:0``; the port is read from the daemon's runtime file), username/password with the
  daemon's token (RFC 1929), a session of the proxy connection's own (CPU: the daemon);
- ``baseline.dante``: SOCKS5 CONNECT through ``danted`` (Debian ``dante-server``) with a minimal
  configuration written to a temporary directory, no authentication (CPU: danted and its children);
- ``baseline.microsocks``: SOCKS5 CONNECT through ``microsocks -i 127.0.0.1 -p PORT``, no
  authentication (CPU: microsocks);
- ``baseline.proxy_socat``: ``socat -b 262144`` relaying TCP to the sink, as P1's socat (CPU: socat
  and its forked child).

The SOCKS5 client (RFC 1928 CONNECT to an IPv4 address, RFC 1929 username/password) is here, so
the bench needs no SOCKS library.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import baselines
from bench.baselines import TCP_CHUNK, meter, stream_probe
from bench.clients import Timed, socket_upload
from bench.common import KIB, LOOPBACK, Probe
from bench.procs import Helper, Stage, free_port, program

#: What a SOCKS5 reply code means (RFC 1928 §6).
REPLIES = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}
NO_AUTH, USER_PASSWORD, NO_METHOD = 0x00, 0x02, 0xFF
RUNTIME_CAP = 30.0
#: The username the bench gives the proxy door: not a session id, so each proxy connection
#: gets a session of its own (docs/proxy.md).
PROXY_USER = "bench"

Credentials = tuple[str, str]


class SocksError(RuntimeError):
    """A SOCKS5 server refused, or answered what RFC 1928/1929 does not allow."""


def greeting(credentials: Credentials | None) -> bytes:
    """The client's greeting: the one method it offers (username/password or none)."""
    return bytes([0x05, 0x01, USER_PASSWORD if credentials else NO_AUTH])


def password_request(credentials: Credentials) -> bytes:
    """RFC 1929's username/password request."""
    user, password = (part.encode() for part in credentials)
    if not 0 < len(user) < 256 or not 0 < len(password) < 256:
        raise ValueError("a SOCKS5 username and password are 1 to 255 bytes each")
    return bytes([0x01, len(user)]) + user + bytes([len(password)]) + password


def connect_request(host: str, port: int) -> bytes:
    """RFC 1928's CONNECT to an IPv4 address."""
    return bytes([0x05, 0x01, 0x00, 0x01]) + ipaddress.IPv4Address(host).packed + struct.pack(">H", port)


def reply_rest(head: bytes) -> int:
    """From the first 5 bytes of a CONNECT reply, how many follow (the rest of the bound address
    and its port); raises :class:`SocksError` for a refusal."""
    version, code, _reserved, kind, first = head
    if version != 0x05:
        raise SocksError(f"not a SOCKS5 reply: {head!r}")
    if code:
        raise SocksError(f"CONNECT refused: 0x{code:02x} {REPLIES.get(code, 'unassigned code')}")
    sizes = {0x01: 4, 0x04: 16, 0x03: first + 1}
    if kind not in sizes:
        raise SocksError(f"CONNECT reply with address type 0x{kind:02x}")
    return sizes[kind] - 1 + 2


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            raise SocksError(f"the SOCKS5 server closed the connection ({data!r} read of {size} bytes)")
        data += piece
    return data


def socks5_connect(sock: socket.socket, host: str, port: int, credentials: Credentials | None) -> None:
    """The SOCKS5 exchange on a connected ``sock``, up to the CONNECT's success reply: then it
    carries the target connection's bytes."""
    sock.sendall(greeting(credentials))
    version, method = receive_exactly(sock, 2)
    if version != 0x05 or method == NO_METHOD:
        raise SocksError(f"the SOCKS5 server accepts none of the methods offered (answer {version:#x} {method:#x})")
    if credentials:
        if method != USER_PASSWORD:
            raise SocksError(f"the SOCKS5 server chose method 0x{method:02x}, not username/password")
        sock.sendall(password_request(credentials))
        if receive_exactly(sock, 2)[1]:
            raise SocksError("the SOCKS5 server rejected the username and password")
    elif method != NO_AUTH:
        raise SocksError(f"the SOCKS5 server chose method 0x{method:02x}, not 'no authentication'")
    sock.sendall(connect_request(host, port))
    receive_exactly(sock, reply_rest(receive_exactly(sock, 5)))


def socks_upload(
    proxy_port: int, sink_port: int, credentials: Credentials | None, total: int, cap: float, pid: int
) -> Timed:
    """Sink upload through the SOCKS5 server on ``proxy_port`` (the CONNECT made before the clock),
    metering process group ``pid``."""
    with socket.create_connection((LOOPBACK, proxy_port), timeout=cap) as sock:
        socks5_connect(sock, LOOPBACK, sink_port, credentials)
        return socket_upload(sock, total, TCP_CHUNK, cap, meter(pid))


# ───────────────────────────── the servers ─────────────────────────────


def dante_config(port: int) -> str:
    """A minimal danted configuration: 127.0.0.1:``port``, no authentication, CONNECT from
    loopback to loopback only."""
    return "\n".join(
        [
            "logoutput: stderr",
            f"internal: {LOOPBACK} port = {port}",
            f"external: {LOOPBACK}",
            "clientmethod: none",
            "socksmethod: none",
            "user.privileged: root",
            "user.unprivileged: nobody",
            "client pass { from: 127.0.0.0/8 to: 127.0.0.0/8 }",
            "socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }",
            "",
        ]
    )


def needed(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is not installed (apt-get install -y {package})")
    return path


@contextlib.contextmanager
def dante(port: int) -> Iterator[Helper]:
    """``danted`` on 127.0.0.1:``port``, its configuration and pid file in a temporary directory."""
    danted = needed("danted", "dante-server")
    with tempfile.TemporaryDirectory(prefix="bench-dante-") as tmp:
        config = Path(tmp) / "danted.conf"
        config.write_text(dante_config(port))
        with program("danted", [danted, "-f", str(config), "-p", str(Path(tmp) / "danted.pid")], port) as helper:
            yield helper


def microsocks(port: int) -> contextlib.AbstractContextManager[Helper]:
    return program("microsocks", [needed("microsocks", "microsocks"), "-i", LOOPBACK, "-p", str(port)], port)


def proxy_port(runtime_file: Path, pid: int) -> int:
    """The proxy door's port, from the runtime file of daemon ``pid`` (written once it listens)."""
    end = time.monotonic() + RUNTIME_CAP
    while time.monotonic() < end:
        with contextlib.suppress(OSError, ValueError):
            content = json.loads(runtime_file.read_text())
            if content.get("pid") == pid:
                address = content.get("proxy_address")
                if not address:
                    raise RuntimeError(f"the daemon has no proxy door ({runtime_file}: proxy_address {address!r})")
                return int(str(address).rpartition(":")[2])
        time.sleep(0.1)
    raise RuntimeError(f"no runtime file of daemon pid {pid} at {runtime_file} within {RUNTIME_CAP:.0f} s")


# ───────────────────────────── the probes ─────────────────────────────


def socks_baseline(stage: Stage, name: str, start: Callable[[int], contextlib.AbstractContextManager[Helper]]) -> Probe:
    """A SOCKS5 server started by ``start(port)``, no authentication."""

    async def once(total: int) -> Timed:
        sink = await stage.peer("tcp-sink")
        port = free_port()
        server: Helper = await stage.shared(name, lambda: start(port))
        return await asyncio.to_thread(
            socks_upload, server.port, sink.port, None, total, stage.sizes.stream_cap, server.pid
        )

    what = f"SOCKS5 CONNECT through {name} to the sink, {TCP_CHUNK // KIB} KiB writes (CPU: {name} and its children)"
    return stream_probe(f"baseline.{name}", what, stage.sizes, once, chunk=TCP_CHUNK)


def broker_proxy(stage: Stage) -> Probe:
    """SOCKS5 CONNECT through the daemon's proxy door, the daemon's token as the password."""
    from bench import broker  # needs sockbroker_wire importable: PYTHONPATH=daemon:proto/python

    async def once(total: int) -> Timed:
        d, _b, _metadata = await broker.client(stage, "--proxy-address", f"{LOOPBACK}:0")
        sink = await stage.peer("tcp-sink")
        port = await asyncio.to_thread(proxy_port, d.runtime_file, d.pid)
        credentials = (PROXY_USER, d.token)
        cap = stage.sizes.stream_cap
        return await asyncio.to_thread(socks_upload, port, sink.port, credentials, total, cap, d.pid)

    what = (
        f"SOCKS5 CONNECT through the daemon's proxy door to the sink, {TCP_CHUNK // KIB} KiB writes (CPU: the daemon)"
    )
    return stream_probe("broker.proxy", what, stage.sizes, once, chunk=TCP_CHUNK)


def probes(stage: Stage) -> list[Probe]:
    """The group ``proxy``: each baseline next to the broker's figure, in the order of the rows."""
    return [
        socks_baseline(stage, "dante", dante),
        broker_proxy(stage),
        baselines.socat(stage, "baseline.proxy_socat"),
        socks_baseline(stage, "microsocks", microsocks),
    ]
