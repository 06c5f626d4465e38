"""The REST door under abuse (issue 8, DESIGN §5): bad bodies and frames, bodies in flight,
connection hygiene and browser safety, against a daemon of this module's own with small limits.

No client library: raw sockets where the abuse is on the wire (unfinished headers, a body that
never comes, a frame sent whole before reading), httpx and websockets for the rest.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import pathlib
import statistics
import struct
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import websockets
from helpers import read_until_eof, serving
from sockbroker.server import Daemon

CONNECTIONS = 64
TIMEOUT = 0.5  # header, unauthenticated and idle timeouts
MAX_BODY = 65536
IN_FLIGHT = 2 * MAX_BODY
#: A closed connection must be seen closed within its timeout plus this (a loaded 2-core machine).
SLACK = 1.5
#: A frame larger than loopback's socket buffers (a few MiB each way).
BIG_FRAME = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("rest-abuse") / "token"


@pytest.fixture(scope="module")
async def daemon(token_file: pathlib.Path) -> AsyncIterator[Daemon]:
    async with serving(
        token_file,
        connections_per_door=CONNECTIONS,
        header_timeout=TIMEOUT,
        unauthenticated_timeout=TIMEOUT,
        idle_timeout=TIMEOUT,
        max_request_bytes=MAX_BODY,
        request_bytes_in_flight=IN_FLIGHT,
        allowed_hosts=["sockbroker.test"],
        allowed_origins=["http://app.test"],
    ) as d:
        yield d


@pytest.fixture(scope="module")
def token(token_file: pathlib.Path, daemon: Daemon) -> str:
    return token_file.read_text().strip()


@pytest.fixture
async def http(daemon: Daemon, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{daemon.rest_port}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        yield client


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever the test does, nothing is logged with a traceback or at ERROR."""
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


async def _open(daemon: Daemon) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", daemon.rest_port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the daemon sends before it closes the connection, which it must do within ``seconds``."""
    return await read_until_eof(reader, within=seconds)


async def _response(reader: asyncio.StreamReader, within: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers, body


def _post_head(
    daemon: Daemon, token: str, path: str, length: int, media: str = "application/octet-stream", session: str = ""
) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{daemon.rest_port}\r\nAuthorization: Bearer {token}\r\n"
        + (f"Sockbroker-Session: {session}\r\n" if session else "")
        + f"Content-Type: {media}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


# ── 1. bad bodies and frames: a typed error, never a 500 or a traceback ────────────────
@pytest.mark.parametrize(
    "body",
    [b"[" * 60_000, b'{"port": ' + b"[" * 100 + b"]" * 100 + b"}", b'{"a":' * 65 + b"1" + b"}" * 65],
    ids=["60000-open-brackets", "depth-101", "depth-65"],
)
async def test_deeply_nested_json_is_a_typed_400(http: httpx.AsyncClient, no_tracebacks: None, body: bytes) -> None:
    response = await http.post("/v1/tcp/listeners", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["kind"], problem["status"]) == ("exn:fail:contract", 400)
    assert "nested deeper than 64 levels" in problem["detail"]


async def test_json_at_the_depth_limit_is_parsed(http: httpx.AsyncClient) -> None:
    body = b'{"a":' * 63 + b"1" + b"}" * 63  # depth 63 inside the request object: 64 in all
    response = await http.post("/v1/sessions", content=b'{"x": ' + body + b"}")
    assert response.status_code == 400
    assert "nested deeper" not in response.json()["detail"]  # refused for the unknown member, not the depth


async def _session(http: httpx.AsyncClient) -> dict[str, str]:
    session = (await http.post("/v1/sessions", json={})).json()["session"]
    return {"Authorization": http.headers["Authorization"], "Sockbroker-Session": session}


async def _ws_open(
    daemon: Daemon, path: str, headers: dict[str, str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake on a bare socket (the client below sends a frame whole, then reads)."""
    reader, writer = await _open(daemon)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{daemon.rest_port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    key = (mask * (length // 4 + 1))[:length]  # masked with one big-integer XOR, not a loop per byte
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return head + mask + masked


async def _frames_until_close(reader: asyncio.StreamReader) -> tuple[list[bytes], int, str]:
    """The server's frames, then its close frame's code and reason (the test fails on a reset or
    an end of stream with no close frame)."""
    seen: list[bytes] = []
    async with asyncio.timeout(10):
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(length)
            if first & 0x0F == 8:
                code = struct.unpack("!H", payload[:2])[0]
                return seen, code, payload[2:].decode()
            seen.append(payload)


async def test_bad_websocket_frames_get_a_close_frame(
    daemon: Daemon, http: httpx.AsyncClient, no_tracebacks: None
) -> None:
    """Each bad frame is sent whole before the client reads anything: the daemon must still be
    heard closing (a close frame with a code and a reason). The too-big frame is larger than the
    sockets' buffers, so the client is still writing it when the daemon refuses it: the daemon
    must read and discard the rest, not reset the connection under the client's feet."""
    cases = [
        ("too big", 2, os.urandom(BIG_FRAME), 1009, "exceeds limit"),
        ("not UTF-8", 1, b"\xff\xfe\xfd", 1007, "not UTF-8"),
        ("too deep", 1, b"[" * 60_000, 4400, "exn:fail:contract"),
        ("deep, under the size limit", 1, b"[" * 65 + b"]" * 65, 4400, "exn:fail:contract"),
        ("malformed", 1, b"{nope", 4400, "exn:fail:contract"),
    ]
    for name, opcode, payload, code, reason in cases:
        for route in ("attach", "stream"):
            headers = await _session(http)
            if route == "attach":
                path = f"/v1/sessions/{headers['Sockbroker-Session']}/attach"
            else:
                udp = (await http.post("/v1/udp/sockets", json={}, headers=headers)).json()["udp"]
                path = f"/v1/udp/sockets/{udp}/stream?direction=send"
            reader, writer = await _ws_open(daemon, path, headers)
            try:
                writer.write(_frame(opcode, payload))
                await writer.drain()
                frames, got_code, got_reason = await _frames_until_close(reader)
            finally:
                writer.close()
            assert (got_code, reason in got_reason) == (code, True), (name, route, got_code, got_reason)
            if code >= 4000:  # the daemon's own errors come with their problem first (docs/wire.md)
                assert json.loads(frames[-1])["error"]["kind"] == "exn:fail:contract", (name, route)


async def test_a_binary_frame_on_the_attachment_is_a_contract_error(
    daemon: Daemon, http: httpx.AsyncClient, no_tracebacks: None
) -> None:
    headers = await _session(http)
    url = f"ws://127.0.0.1:{daemon.rest_port}/v1/sessions/{headers['Sockbroker-Session']}/attach"
    async with websockets.connect(url, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["event"] == "attached"
        await ws.send(b"binary")
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))["error"]
        assert error["kind"] == "exn:fail:contract" and "text frames only" in error["detail"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


# ── 2. bodies in flight ──────────────────────────────────────────────────────────────
async def test_a_body_over_the_limit_is_a_413_before_it_is_sent(daemon: Daemon, token: str) -> None:
    reader, writer = await _open(daemon)
    try:
        writer.write(_post_head(daemon, token, "/v1/tcp/ports/tout_x/write", 1 << 30))  # the body never comes
        status, headers, body = await _response(reader)
    finally:
        writer.close()
    assert status == 413 and headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert (problem["kind"], problem["status"]) == ("resource-exhausted", 413)


async def test_a_chunked_body_over_the_limit_is_a_413(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"\0" * MAX_BODY

    headers = {**await _session(http), "content-type": "application/octet-stream"}
    response = await http.post("/v1/tcp/ports/tout_x/write", content=chunks(), headers=headers)
    assert response.status_code == 413 and response.json()["kind"] == "resource-exhausted"


def _in_flight(text: str) -> float:
    for line in text.splitlines():
        if line.startswith('sockbroker_door_request_bytes_in_flight{door="rest"}'):
            return float(line.split()[-1])
    raise AssertionError("no sockbroker_door_request_bytes_in_flight metric")


async def test_bodies_wait_for_the_door_budget(daemon: Daemon, token: str, http: httpx.AsyncClient) -> None:
    """Two bodies whose sizes fill the budget are admitted before a byte of them arrives; a third
    waits, unread, until one of them is done; then it is served."""
    path = "/v1/tcp/ports/tout_x/write"
    session = (await _session(http))["Sockbroker-Session"]  # a write's body is read in its session
    first, second, third = [await _open(daemon) for _ in range(3)]
    try:
        for _, writer in (first, second):
            writer.write(_post_head(daemon, token, path, MAX_BODY, session=session))
        await _in_flight_becomes(http, IN_FLIGHT)
        third[1].write(_post_head(daemon, token, path, MAX_BODY, session=session) + b"\0" * MAX_BODY)
        with pytest.raises(TimeoutError):
            await _response(third[0], within=0.5)  # waiting for the budget
        first[1].write(b"\0" * MAX_BODY)
        status, _, _ = await _response(first[0])
        assert status == 404  # the body was read; then the handle is unknown
        status, _, _ = await _response(third[0])  # admitted once the first gave its bytes back
        assert status == 404
        second[1].write(b"\0" * MAX_BODY)
        assert (await _response(second[0]))[0] == 404
        await _in_flight_becomes(http, 0)
    finally:
        for _, writer in (first, second, third):
            writer.close()


async def _in_flight_becomes(http: httpx.AsyncClient, wanted: float, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (last := _in_flight((await http.get("/metrics")).text)) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"bytes in flight: wanted {wanted}, last saw {last}")
        await asyncio.sleep(0.02)


# ── 3. connection hygiene ────────────────────────────────────────────────────────────
def _closed_by(text: str) -> dict[str, float]:
    prefix = 'sockbroker_door_connections_closed_total{door="rest",reason="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


async def test_idle_and_slowloris_connections_are_closed_in_time(daemon: Daemon, http: httpx.AsyncClient) -> None:
    before = _closed_by((await http.get("/metrics")).text)
    idle = [await _open(daemon) for _ in range(20)]
    slow = [await _open(daemon) for _ in range(10)]
    for _, writer in slow:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{daemon.rest_port}\r\n".encode())

    async def dribble(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for i in range(40):  # a header byte every 0.05 s: never done within the header timeout
                writer.write(b"X-Slow: 1\r\n"[i % 11 : i % 11 + 1])
                await asyncio.sleep(0.05)

    dribblers = [asyncio.ensure_future(dribble(writer)) for _, writer in slow]
    try:
        started = time.monotonic()
        for reader, _ in idle + slow:
            assert await _closed_within(reader, TIMEOUT + SLACK) == b""
        assert time.monotonic() - started < TIMEOUT + SLACK
    finally:
        for task in dribblers:
            task.cancel()
        for _, writer in idle + slow:
            writer.close()
    after = _closed_by((await http.get("/metrics")).text)
    timeouts = ("header_timeout", "unauthenticated_timeout")  # both are due at once here
    assert sum(after.get(reason, 0) - before.get(reason, 0) for reason in timeouts) >= 30


async def test_a_token_holding_connection_is_closed_when_idle_not_before(daemon: Daemon, token: str) -> None:
    reader, writer = await _open(daemon)
    try:
        for _ in range(3):  # requests spaced under the idle timeout keep it open, past the other timeouts
            host, authorization = f"Host: 127.0.0.1:{daemon.rest_port}", f"Authorization: Bearer {token}"
            writer.write(f"GET /metrics HTTP/1.1\r\n{host}\r\n{authorization}\r\n\r\n".encode())
            assert (await _response(reader))[0] == 200
            await asyncio.sleep(TIMEOUT * 0.6)
        started = time.monotonic()
        assert await _closed_within(reader, TIMEOUT + SLACK) == b""
        assert time.monotonic() - started >= TIMEOUT * 0.3
    finally:
        writer.close()


async def test_without_a_token_a_busy_connection_is_closed_too(daemon: Daemon) -> None:
    reader, writer = await _open(daemon)
    try:
        closed = False
        for _ in range(int((TIMEOUT + SLACK) / 0.1)):
            try:
                writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{daemon.rest_port}\r\n\r\n".encode())
                await _response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                closed = True
                break
            await asyncio.sleep(0.1)
        assert closed, "a connection without a token outlived unauthenticated_timeout"
    finally:
        writer.close()


async def test_an_attached_websocket_is_never_idle(daemon: Daemon, http: httpx.AsyncClient) -> None:
    headers = await _session(http)
    url = f"ws://127.0.0.1:{daemon.rest_port}/v1/sessions/{headers['Sockbroker-Session']}/attach"
    async with websockets.connect(url, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["event"] == "attached"
        await asyncio.sleep(3 * TIMEOUT + SLACK)  # past every timeout
        await ws.send(json.dumps({"detach": True}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["event"] == "detached"


async def test_a_full_door_closes_the_oldest_unauthenticated_never_the_token_holder(
    daemon: Daemon, token: str, http: httpx.AsyncClient
) -> None:
    """The door is full of connections without a token; a client with one is still served (on
    a new connection and on the one it keeps), quickly, while they are churned through."""
    before = _closed_by((await http.get("/metrics")).text)
    keeper = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{daemon.rest_port}", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    await keeper.get("/metrics")  # its connection is authenticated from now on
    crowd = [await _open(daemon) for _ in range(2 * CONNECTIONS)]
    latencies = []
    try:
        evicted = [reader for reader, _ in crowd[:CONNECTIONS]]
        for reader in evicted[:8]:  # the oldest went first, at once, long before their timeouts
            assert await _closed_within(reader, TIMEOUT / 2) == b""
        for _ in range(20):
            for client in (http, keeper):  # a fresh connection each time (http: keep-alive is off below)
                started = time.monotonic()
                response = await client.get("/metrics", headers={"Connection": "close"} if client is http else None)
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200
            crowd.append(await _open(daemon))  # and the crowd keeps coming
    finally:
        for _, writer in crowd:
            writer.close()
        await keeper.aclose()
    assert statistics.median(latencies) < 0.1, latencies
    after = _closed_by((await http.get("/metrics")).text)
    assert after.get("evicted", 0) - before.get("evicted", 0) >= CONNECTIONS


async def test_oversized_request_headers_are_a_431(daemon: Daemon) -> None:
    reader, writer = await _open(daemon)
    try:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{daemon.rest_port}\r\n".encode())
        writer.write(b"X-Big: " + b"a" * (64 * 1024) + b"\r\n")
        response = await _closed_within(reader, 5)
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 431 "), response[:100]
    assert b'"kind":"resource-exhausted"' in response


# ── 4. browser safety ────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("{local}", 200),
        ("localhost:{port}", 200),
        ("[::1]:{port}", 200),
        ("sockbroker.test:{port}", 200),  # allowed_hosts
        ("evil.example:{port}", 400),  # a rebound DNS name
        ("localhost", 400),  # not the daemon's port
        ("localhost:1", 400),
        ("sockbroker.test:1", 400),
        ("", 400),
    ],
)
async def test_the_host_header_must_name_the_daemon(
    daemon: Daemon, http: httpx.AsyncClient, host: str, status: int
) -> None:
    value = host.format(local=f"127.0.0.1:{daemon.rest_port}", port=daemon.rest_port)
    response = await http.post("/v1/sessions", json={}, headers={"Host": value})
    assert response.status_code == status, response.text
    if status == 400:
        problem = response.json()
        assert problem["kind"] == "exn:fail:contract" and "DNS-rebinding" in problem["detail"]
    else:
        await http.delete(f"/v1/sessions/{response.json()['session']}")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 101),  # no Origin: not a browser
        ({"Origin": "http://app.test"}, 101),  # allowed_origins
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Host": "evil.example"}, 400),
    ],
)
async def test_websocket_origin_and_host_are_checked_before_the_handshake(
    daemon: Daemon, http: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    session = await _session(http)
    url = f"ws://127.0.0.1:{daemon.rest_port}/v1/sessions/{session['Sockbroker-Session']}/attach"
    if status == 101:
        async with websockets.connect(url, additional_headers={**session, **headers}) as ws:
            assert json.loads(await ws.recv())["event"] == "attached"
        return
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, additional_headers={**session, **headers})
    assert refused.value.response.status_code == status
    assert json.loads(refused.value.response.body)["status"] == status


async def test_there_is_no_cors(http: httpx.AsyncClient) -> None:
    preflight = await http.options(
        "/v1/sessions", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert not [name for name in preflight.headers if name.lower().startswith("access-control-")]
    response = await http.post("/v1/sessions", json={}, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    await http.delete(f"/v1/sessions/{response.json()['session']}")


async def test_a_websocket_to_no_route_is_a_typed_404(
    daemon: Daemon, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    session = await _session(http)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"ws://127.0.0.1:{daemon.rest_port}/v1/no/such/stream", additional_headers=session)
    assert refused.value.response.status_code == 404
    problem = json.loads(refused.value.response.body)
    assert problem["status"] == 404 and problem["kind"] == "not-found" and "no such route" in problem["detail"]
    # A refusal is a complete answer: uvicorn logged "returned without completing handshake" for it.
    await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
