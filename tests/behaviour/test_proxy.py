"""The proxy door (DESIGN §11), driven by real, unmodified clients — curl (SOCKS5 with
``--socks5-hostname``, HTTP CONNECT with ``--proxytunnel``) and PySocks — and by a SOCKS5 client
written here where a test needs an exact byte (reply codes, BIND, half-close).

Every refusal is provoked for real: a policy denial, a port nobody listens on, a network with no
route, a name no hosts file knows, a command and an address type the door does not serve."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import os
import pathlib
import shutil
import socket
import struct
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import netns
import pytest
import socks  # type: ignore[import-untyped]
from helpers import PeerServer, eventually, read_until_eof, run_bounded, serving
from sockbroker.core.events import Event
from sockbroker.server import Daemon
from sockbroker_client import AsyncBroker, FailError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def _curl() -> str:
    found = shutil.which("curl")
    assert found is not None, "curl is missing: scripts/setup.sh --test installs it"
    return found


def _proxy_port(daemon: Daemon) -> int:
    assert daemon.proxy is not None and daemon.proxy.address is not None
    return int(daemon.proxy.address.rpartition(":")[2])


@pytest.fixture(scope="module")
def website(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A local ``http.server`` serving ``/payload`` (1 MiB) from a directory of its own."""
    root = tmp_path_factory.mktemp("site")
    (root / "payload").write_bytes(PAYLOAD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *_args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def token(token_file: pathlib.Path, daemon: Daemon) -> str:
    return token_file.read_text().strip()


async def _fetch(*curl_args: str, seconds: float = 20) -> tuple[int, str]:
    return await run_bounded(_curl(), "--silent", "--show-error", "--max-time", "15", *curl_args, seconds=seconds)


# ── a SOCKS5 client written here, for exact bytes ──────────────────────────
async def _socks(port: int, username: str, password: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A SOCKS5 connection to the door, past its username/password authentication."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05\x01\x02")
    assert await reader.readexactly(2) == b"\x05\x02"
    user, secret = username.encode(), password.encode()
    writer.write(bytes([1, len(user)]) + user + bytes([len(secret)]) + secret)
    assert await reader.readexactly(2) == b"\x01\x00"
    return reader, writer


def _address(host: str) -> bytes:
    try:
        return b"\x01" + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        return b"\x04" + socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return b"\x03" + bytes([len(host)]) + host.encode()


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str, int]:
    """A SOCKS5 reply: its code and the bound address."""
    async with asyncio.timeout(10):
        version, code, _reserved, kind = await reader.readexactly(4)
        assert version == 5
        size = {1: 4, 4: 16}[kind]
        host = socket.inet_ntop(socket.AF_INET if kind == 1 else socket.AF_INET6, await reader.readexactly(size))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
    return code, host, port


async def _request(
    port: int, token: str, command: int, host: str, target_port: int, *, username: str = "me"
) -> tuple[tuple[int, str, int], asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _socks(port, username, token)
    writer.write(bytes([5, command, 0]) + _address(host) + struct.pack("!H", target_port))
    return await _reply(reader), reader, writer


async def _http_connect(port: int, target: str, authorization: str | None) -> tuple[str, bytes]:
    """An HTTP CONNECT: the status line and what follows the head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if authorization is not None:
        head += f"Proxy-Authorization: {authorization}\r\n"
    writer.write(head.encode() + b"\r\n")
    try:
        answer = await read_until_eof(reader, within=10)
    finally:
        writer.close()
    status, _, rest = answer.partition(b"\r\n")
    return status.decode(), rest.partition(b"\r\n\r\n")[2]


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# ── real clients ───────────────────────────────────────────────────────────
async def test_curl_fetches_through_socks5_with_the_name_resolved_by_the_daemon(
    daemon: Daemon, token: str, website: int, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "got"
    url = f"http://localhost:{website}/payload"
    code, output = await _fetch(
        "--socks5-hostname", f"127.0.0.1:{_proxy_port(daemon)}", "--proxy-user", f"me:{token}", "-o", str(out), url
    )
    assert code == 0, output
    assert out.read_bytes() == PAYLOAD


async def test_curl_fetches_through_http_connect(
    daemon: Daemon, token: str, website: int, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "got"
    code, output = await _fetch(
        "--proxytunnel",
        "--proxy",
        f"http://me:{token}@127.0.0.1:{_proxy_port(daemon)}",
        "-o",
        str(out),
        f"http://127.0.0.1:{website}/payload",
    )
    assert code == 0, output
    assert out.read_bytes() == PAYLOAD


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
async def test_pysocks_fetches_from_ipv4_ipv6_and_a_name(daemon: Daemon, token: str, host: str) -> None:
    peer = PeerServer()
    await peer.start("::1" if host == "::1" else "127.0.0.1")
    try:

        def fetch() -> bytes:
            sock = socks.socksocket(socket.AF_INET)
            sock.set_proxy(socks.SOCKS5, "127.0.0.1", _proxy_port(daemon), rdns=True, username="me", password=token)
            sock.settimeout(10)
            try:
                sock.connect((host, peer.port))
                sock.sendall(b"ping")
                sock.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := sock.recv(65536):
                    got += chunk
                return got
            finally:
                sock.close()

        fetching = asyncio.ensure_future(asyncio.to_thread(fetch))
        reader, writer = await peer.next()
        assert await read_until_eof(reader, within=10) == b"ping"  # the client's FIN reached the peer
        writer.write(b"pong")
        writer.write_eof()
        async with asyncio.timeout(10):
            assert await fetching == b"pong"
    finally:
        await peer.close()


async def test_curl_without_credentials_is_told_no_method_is_acceptable(daemon: Daemon, website: int) -> None:
    code, output = await _fetch(
        "--socks5-hostname", f"127.0.0.1:{_proxy_port(daemon)}", f"http://localhost:{website}/payload"
    )
    assert code != 0
    assert "authentication method" in output.lower(), output


async def test_curl_with_a_wrong_token_is_rejected(daemon: Daemon, website: int) -> None:
    code, output = await _fetch(
        "--socks5-hostname",
        f"127.0.0.1:{_proxy_port(daemon)}",
        "--proxy-user",
        "me:not-the-token",
        f"http://localhost:{website}/payload",
    )
    assert code != 0
    assert "rejected" in output.lower(), output


async def test_socks5_wrong_password_is_answered_failure(daemon: Daemon) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _proxy_port(daemon))
    try:
        writer.write(b"\x05\x01\x02\x01\x02me\x05wrong")
        assert await reader.readexactly(2) == b"\x05\x02"
        assert await read_until_eof(reader, within=5) == b"\x01\x01"
    finally:
        writer.close()


# ── every reply code, provoked for real ────────────────────────────────────
@pytest.fixture(scope="module")
async def routed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    """A daemon whose policy lets connections try 192.0.2.0/24 (TEST-NET-1), where the namespace has no route, and
    that gives a new connection 1 s for its opening exchange."""
    async with serving(
        tmp_path_factory.mktemp("routed") / "token",
        allow_connect=["127.0.0.0/8", "::1/128", "192.0.2.0/24"],
        header_timeout=1.0,
    ) as daemon:
        yield daemon


async def test_reply_codes(daemon: Daemon, token: str, routed: Daemon) -> None:
    port = _proxy_port(daemon)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    cases: list[tuple[int, Any, int]] = [
        (0x02, ("192.0.2.1", 80), 1),  # the policy allows loopback only
        (0x05, ("127.0.0.1", free), 1),  # nobody listens
        (0x04, (netns.UNKNOWN_HOST, 80), 1),  # no hosts file knows it
        (0x07, ("127.0.0.1", 80), 9),  # no such command
    ]
    for expected, (host, target_port), command in cases:
        (code, _host, _port), _reader, writer = await _request(port, token, command, host, target_port)
        writer.close()
        assert code == expected, (host, target_port, command)
    routed_token = routed.broker.principals[0].token or ""
    (code, _, _), _reader, writer = await _request(_proxy_port(routed), routed_token, 1, "192.0.2.1", 80)
    writer.close()
    assert code == 0x03  # no route to 192.0.2.0/24 in the namespace
    # An address type the door does not serve: 0x08, and the connection ends.
    reader, writer = await _socks(port, "me", token)
    writer.write(b"\x05\x01\x00\x05")
    assert (await _reply(reader))[0] == 0x08
    writer.close()
    # A username naming a session the principal does not have: general failure.
    (code, _, _), _reader, writer = await _request(port, token, 1, "127.0.0.1", free, username="ses_nope")
    writer.close()
    assert code == 0x01


async def test_http_connect_status_codes(daemon: Daemon, token: str, peer: PeerServer) -> None:
    port = _proxy_port(daemon)
    status, body = await _http_connect(port, f"127.0.0.1:{peer.port}", None)
    assert status.startswith("HTTP/1.1 407 ")
    status, _ = await _http_connect(port, f"127.0.0.1:{peer.port}", _basic("me", "wrong"))
    assert status.startswith("HTTP/1.1 407 ")
    status, body = await _http_connect(port, "192.0.2.1:80", _basic("me", token))
    assert status.startswith("HTTP/1.1 403 ")
    assert b"192.0.2.1" in body  # the denial says which address
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    status, body = await _http_connect(port, f"127.0.0.1:{free}", _basic("me", token))
    assert status.startswith("HTTP/1.1 502 ")
    assert b"Connection refused" in body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await read_until_eof(reader, within=5)).startswith(b"HTTP/1.1 405 ")
    writer.close()


async def test_garbage_and_silence_are_answered_and_closed(daemon: Daemon, routed: Daemon) -> None:
    port = _proxy_port(daemon)
    for garbage, answer in [
        (b"\x16\x03\x01\x02\x00\r\n\r\n", b"HTTP/1.1 400 "),  # TLS, as if the proxy spoke it
        (b"CONNECT nowhere HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 "),
        (b"CONNECT [::1]:99999 HTTP/1.1\r\nProxy-Authorization: Basic !!\r\n\r\n", b"HTTP/1.1 407 "),
        (b"\x04\x01\x00\x50\x7f\x00\x00\x01me\x00", b"\x00\x5b"),  # SOCKS4: request rejected
        (b"\x05\x01\x00", b"\x05\xff"),  # SOCKS5 offering no authentication only
    ]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        assert (await read_until_eof(reader, within=5)).startswith(answer), garbage
        writer.close()
    # A client that says nothing is closed after the opening exchange's time (1 s here).
    reader, writer = await asyncio.open_connection("127.0.0.1", _proxy_port(routed))
    assert await read_until_eof(reader, within=5) == b""
    writer.close()


# ── relaying ───────────────────────────────────────────────────────────────
async def test_half_close_both_ways_and_the_own_session_goes_with_the_connection(
    daemon: Daemon, token: str, peer: PeerServer
) -> None:
    sessions = len(daemon.broker.sessions)
    (code, _host, _port), reader, writer = await _request(_proxy_port(daemon), token, 1, "127.0.0.1", peer.port)
    assert code == 0
    assert len(daemon.broker.sessions) == sessions + 1
    peer_reader, peer_writer = await peer.next()
    writer.write(b"to the peer")
    writer.write_eof()
    assert await read_until_eof(peer_reader, within=5) == b"to the peer"
    peer_writer.write(b"after your FIN")
    peer_writer.write_eof()
    assert await read_until_eof(reader, within=5) == b"after your FIN"
    writer.close()
    await eventually(lambda: len(daemon.broker.sessions) == sessions, within=5)


async def test_bind_takes_one_incoming_connection(daemon: Daemon, token: str) -> None:
    (code, host, port), reader, writer = await _request(_proxy_port(daemon), token, 2, "0.0.0.0", 0)
    assert code == 0 and host == "127.0.0.1" and port != 0
    peer_reader, peer_writer = await asyncio.open_connection(host, port)
    code, remote_host, remote_port = await _reply(reader)
    assert code == 0
    assert (remote_host, remote_port) == peer_writer.get_extra_info("sockname")[:2]
    peer_writer.write(b"hello binder")
    peer_writer.write_eof()
    async with asyncio.timeout(5):
        assert await reader.readexactly(12) == b"hello binder"
    writer.write(b"hello peer")
    writer.write_eof()
    assert await read_until_eof(peer_reader, within=5) == b"hello peer"
    writer.close()
    peer_writer.close()


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    """A UDP echo server on 127.0.0.1: its port."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    yield transport.get_extra_info("sockname")[1]
    transport.close()


async def test_pysocks_udp_associate_with_a_local_echo(daemon: Daemon, token: str, echo: int) -> None:
    def round_trip() -> tuple[bytes, Any]:
        sock = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.set_proxy(socks.SOCKS5, "127.0.0.1", _proxy_port(daemon), username="me", password=token)
        sock.settimeout(10)
        try:
            sock.sendto(b"ping", ("127.0.0.1", echo))
            return sock.recvfrom(65535)  # type: ignore[no-any-return]
        finally:
            sock.close()

    sessions = len(daemon.broker.sessions)
    async with asyncio.timeout(20):
        data, sender = await asyncio.to_thread(round_trip)
    assert data == b"echo:ping"
    assert tuple(sender) == ("127.0.0.1", echo)
    await eventually(lambda: len(daemon.broker.sessions) == sessions, within=5)


async def test_a_udp_association_lives_in_its_custodian(
    daemon: Daemon, token_file: pathlib.Path, token: str, echo: int
) -> None:
    async with await AsyncBroker.connect(f"http://127.0.0.1:{daemon.rest_port}", token_file=token_file) as broker:
        custodian = await broker.make_custodian()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        try:
            username = f"{broker.session}/{custodian}"
            port = client.getsockname()[1]
            (code, host, relay), reader, writer = await _request(
                _proxy_port(daemon), token, 3, "0.0.0.0", port, username=username
            )
            assert code == 0
            loop = asyncio.get_running_loop()
            header = b"\x00\x00\x00" + _address("127.0.0.1") + struct.pack("!H", echo)
            await loop.sock_sendto(client, header + b"one", (host, relay))
            async with asyncio.timeout(5):
                data, _ = await loop.sock_recvfrom(client, 65535)
            assert data == header + b"echo:one"
            handles = (await broker.describe_custodian(custodian))["handles"]
            assert [h["kind"] for h in handles] == ["udp"]
            # The custodian's shutdown ends the association: the control connection closes.
            await custodian.shutdown_all()
            assert await read_until_eof(reader, within=5) == b""
            writer.close()
        finally:
            client.close()


# ── custodians and delegation ──────────────────────────────────────────────
async def test_a_custodian_shutdown_cuts_a_running_curl_transfer(
    daemon: Daemon, token_file: pathlib.Path, token: str
) -> None:
    peer = PeerServer()
    await peer.start()
    async with await AsyncBroker.connect(f"http://127.0.0.1:{daemon.rest_port}", token_file=token_file) as broker:
        custodian = await broker.make_custodian()
        curl = asyncio.ensure_future(
            _fetch(
                "--socks5-hostname",
                f"127.0.0.1:{_proxy_port(daemon)}",
                "--proxy-user",
                f"{broker.session}/{custodian}:{token}",
                "-o",
                "/dev/null",
                f"http://127.0.0.1:{peer.port}/endless",
            )
        )
        try:
            _reader, writer = await peer.next()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n" + bytes(65536))
            handles = (await broker.describe_custodian(custodian))["handles"]
            assert sorted(h["kind"] for h in handles) == ["tcp-input-port", "tcp-output-port"]
            kinds = {h["kind"]: h["handle"] for h in handles}
            with pytest.raises(FailError, match="carried by a relay channel"):  # the relay owns its bytes
                await broker.call("Ports.Read", port=kinds["tcp-input-port"], mode="nowait")
            with pytest.raises(FailError, match="carried by a relay channel"):
                await broker.call("Ports.Write", port=kinds["tcp-output-port"], data=b"x")
            assert not curl.done()
            await custodian.shutdown_all()
            async with asyncio.timeout(10):
                code, output = await curl
            assert code not in (0, -1), output
        finally:
            curl.cancel()
            await peer.close()


async def test_a_delegated_token_limited_to_one_port(
    daemon: Daemon, token_file: pathlib.Path, website: int, peer: PeerServer
) -> None:
    async with await AsyncBroker.connect(f"http://127.0.0.1:{daemon.rest_port}", token_file=token_file) as broker:
        custodian = await broker.make_custodian()
        delegated = await custodian.delegate(
            expires_seconds=60, allow_connect=["127.0.0.1/32"], allow_ports=[str(website)]
        )
        proxy = f"127.0.0.1:{_proxy_port(daemon)}"
        code, output = await _fetch(
            "--socks5-hostname",
            proxy,
            "--proxy-user",
            f"child:{delegated}",
            "-o",
            "/dev/null",
            f"http://127.0.0.1:{website}/payload",
        )
        assert code == 0, output
        (code, _, _), _reader, writer = await _request(_proxy_port(daemon), delegated, 1, "127.0.0.1", peer.port)
        writer.close()
        assert code == 0x02


# ── sockbroker run ─────────────────────────────────────────────────────────
def _run_command(daemon: Daemon, token_file: pathlib.Path, *program: str, custodian: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "sockbroker", "run", "--url", f"http://127.0.0.1:{daemon.rest_port}"]
    command += ["--token-file", str(token_file), "--proxy", f"127.0.0.1:{_proxy_port(daemon)}"]
    if custodian is not None:
        command += ["--custodian", custodian]
    return [*command, "--", *program]


#: The CLI as a subprocess sees this checkout (as tests/test_cli.py runs it).
_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


async def test_run_puts_a_program_in_a_custodian_of_its_own_session(
    daemon: Daemon, token_file: pathlib.Path, website: int, tmp_path: pathlib.Path
) -> None:
    sessions = len(daemon.broker.sessions)
    out = tmp_path / "got"
    code, output = await run_bounded(
        *_run_command(daemon, token_file, _curl(), "-sS", "-o", str(out), f"http://localhost:{website}/payload"),
        seconds=30,
        env=_ENV,
    )
    assert code == 0, output
    assert out.read_bytes() == PAYLOAD
    assert "connections are in custodian ses_" in output
    await eventually(lambda: len(daemon.broker.sessions) == sessions, within=5)


async def test_run_with_a_custodian_is_cut_by_its_shutdown(daemon: Daemon, token_file: pathlib.Path) -> None:
    peer = PeerServer()
    await peer.start()
    async with await AsyncBroker.connect(f"http://127.0.0.1:{daemon.rest_port}", token_file=token_file) as broker:
        custodian = await broker.make_custodian()
        program = (_curl(), "-sS", "-o", "/dev/null", f"http://127.0.0.1:{peer.port}/stalls")
        running = asyncio.ensure_future(
            run_bounded(
                *_run_command(daemon, token_file, *program, custodian=f"{broker.session}/{custodian}"),
                seconds=30,
                env=_ENV,
            )
        )
        try:
            await peer.next()
            handles = (await broker.describe_custodian(custodian))["handles"]
            assert len(handles) == 2
            await custodian.shutdown_all()
            async with asyncio.timeout(20):
                code, output = await running
            assert code not in (0, -1), output  # curl's own status: the transfer was cut
        finally:
            running.cancel()
            await peer.close()


async def test_run_without_a_program_is_a_usage_error(daemon: Daemon, token_file: pathlib.Path) -> None:
    code, output = await run_bounded(*_run_command(daemon, token_file), seconds=30, env=_ENV)
    assert code == 2
    assert "run needs a program" in output


# ── quotas and the audit log, through the door ─────────────────────────────
async def test_a_session_quota_is_general_failure_and_429(tmp_path: pathlib.Path, peer: PeerServer) -> None:
    """A principal at its session quota: SOCKS5 0x01 and HTTP 429, until its held connection ends."""
    async with serving(tmp_path / "token", max_sessions_per_principal=1) as limited:
        port, token = _proxy_port(limited), limited.broker.principals[0].token or ""
        (code, _, _), _held_reader, held = await _request(port, token, 1, "127.0.0.1", peer.port)
        assert code == 0  # this connection's own session is the principal's one
        _, peer_end = await peer.next()
        try:
            (code, _, _), _reader, writer = await _request(port, token, 1, "127.0.0.1", peer.port)
            writer.close()
            assert code == 0x01
            status, body = await _http_connect(port, f"127.0.0.1:{peer.port}", _basic("me", token))
            assert status.startswith("HTTP/1.1 429 "), status
            assert b"session" in body
        finally:
            held.close()
            peer_end.close()  # both ends closed: the relay ends, and the connection's session with it
        await eventually(lambda: len(limited.broker.sessions) == 0, within=5)
        (code, _, _), _reader, writer = await _request(port, token, 1, "127.0.0.1", peer.port)
        writer.close()
        assert code == 0  # the ended connection's session went with it


async def test_a_denial_through_the_door_is_audited(daemon: Daemon, token: str) -> None:
    watcher = daemon.broker.events.watch()
    watched = aiter(watcher)
    try:
        (code, _, _), _reader, writer = await _request(_proxy_port(daemon), token, 1, "192.0.2.1", 80)
        writer.close()
        assert code == 0x02
        status, _ = await _http_connect(_proxy_port(daemon), "192.0.2.1:443", _basic("me", token))
        assert status.startswith("HTTP/1.1 403 ")
        denied: list[Event] = []
        async with asyncio.timeout(10):
            while len(denied) < 2:
                event = await anext(watched)
                if event.event == "policy.deny":
                    denied.append(event)
    finally:
        watcher.close()
    assert [(e.principal, e.operation) for e in denied] == [("default", "tcp-connect")] * 2
    assert ["192.0.2.1" in e.target for e in denied] == [True, True]
    assert all(e.session.startswith("ses_") and e.reason for e in denied)
