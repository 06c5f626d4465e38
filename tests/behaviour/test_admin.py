"""The admin API (DESIGN §5, docs/admin.md) on every door, with real sockets.

What it shows of live TCP and UDP handles (their custodian tree, kinds, addresses, bytes and
datagrams in and out, ages), what its kills do (a session drops as any drop does, a handle closes
as its custodian's shutdown would), its event stream, and its refusals: a principal that is not
an admin is denied every call on both doors, and bad input gets a typed error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
import websockets
from blocking_adapter import AdaptedAdmin
from core_channel import CoreChannel
from helpers import PeerServer, eventually, read_until_eof, target
from sockbroker.core.admin import MAX_REASON
from sockbroker.core.broker import Principal
from sockbroker.core.events import Event
from sockbroker.server import Daemon
from sockbroker_client import AsyncAdmin, AsyncBroker, ContractError, NotFoundError, PermissionDeniedError
from sockbroker_wire import frames
from sockbroker_wire.errors import from_grpc_error
from sockbroker_wire.routes import routes

#: The doors the admin client runs through: the core in process, gRPC, REST, and the blocking
#: client (over gRPC) through the test adapter.
ADMIN_DOORS = ("core", "grpc", "rest", "blocking")
ADMIN_ROUTES = [r for r in routes() if r.admin]


@pytest.fixture
def token(token_file: pathlib.Path) -> str:
    return token_file.read_text().strip()


@pytest.fixture(params=ADMIN_DOORS)
async def admin(request: pytest.FixtureRequest, daemon: Daemon, token: str) -> AsyncIterator[AsyncAdmin]:
    kind = request.param
    if kind == "core":
        made = AsyncAdmin(CoreChannel(daemon.broker, token), owns_channel=True)
    elif kind == "blocking":
        made = await AdaptedAdmin.connect(target(daemon, "grpc"), token=token, transport="grpc")  # type: ignore[assignment]
    else:
        made = await AsyncAdmin.connect(target(daemon, kind), token=token, transport=kind)
    yield made
    await made.aclose()


@pytest.fixture
async def client(daemon: Daemon, token: str) -> AsyncIterator[AsyncBroker]:
    """A session to look at (over gRPC, attached); closed afterwards if no test killed it."""
    opened = await AsyncBroker.connect(target(daemon, "grpc"), token=token)
    yield opened
    with contextlib.suppress(NotFoundError):
        await opened.aclose()


@pytest.fixture
def viewer(daemon: Daemon) -> Iterator[Principal]:
    """A principal that is not an admin (its policy may do anything the test daemon's may)."""
    principal = Principal("viewer", secrets.token_urlsafe(32), daemon.broker.principals[0].policy)
    daemon.broker.principals.append(principal)
    yield principal
    daemon.broker.principals.remove(principal)


def _udp_peer() -> socket.socket:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    return peer


def _handles(described: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["handle"]: h for custodian in described["custodians"] for h in custodian["handles"]}


# ───────────────────────────── looking ─────────────────────────────


async def _busy(client: AsyncBroker, peer: PeerServer) -> Any:
    """In ``client``'s session: a custodian with a listener and a child custodian holding a TCP
    connection that moved 1000 bytes out and 300 in; a UDP socket in the root that sent 3
    datagrams (60 bytes) and received one (50 bytes)."""
    child = await client.make_custodian()
    grandchild = await client.make_custodian(child)
    listener = await client.tcp_listen(0, hostname="127.0.0.1", custodian=child)
    i, o = await client.tcp_connect("127.0.0.1", peer.port, custodian=grandchild)
    reader, writer = await peer.next()
    await o.write(b"x" * 1000, flush=True)
    assert await reader.readexactly(1000) == b"x" * 1000
    writer.write(b"y" * 300)
    await writer.drain()
    assert await i.read_bytes(300, timeout=5) == b"y" * 300
    loop = asyncio.get_running_loop()
    with _udp_peer() as remote:
        sock = await client.udp_open_socket("127.0.0.1")
        await sock.bind("127.0.0.1", 0)
        _, udp_port, _, _ = await sock.addresses(port_numbers=True)
        for size in (10, 20, 30):
            await sock.send_to("127.0.0.1", remote.getsockname()[1], b"d" * size)
        for _ in range(3):
            await asyncio.wait_for(loop.sock_recvfrom(remote, 100), 5)
        remote.sendto(b"r" * 50, ("127.0.0.1", udp_port))
        count, _, _, _ = await sock.receive(timeout=5)
        assert count == 50
    return child, grandchild, listener, i, o, sock, udp_port


async def test_describe_shows_the_custodian_tree_with_addresses_bytes_and_ages(
    admin: AsyncAdmin, client: AsyncBroker, peer: PeerServer
) -> None:
    child, grandchild, listener, i, o, sock, udp_port = await _busy(client, peer)
    described = await admin.describe_session(client.session)
    summary = described["summary"]
    assert (summary["session"], summary["principal"], summary["custodian"]) == (
        client.session,
        "default",
        client.custodian.handle,
    )
    assert (summary["state"], summary["attachments"], summary["handles"]) == ("attached", 1, 7)
    assert (summary["bytes_in"], summary["bytes_out"]) == (300 + 50, 1000 + 60)
    assert 0 <= summary["age_seconds"] < 60 and summary["lease_seconds"] > 0
    tree = [(c["custodian"], c["parent"], c["depth"]) for c in described["custodians"]]
    assert tree == [
        (client.custodian.handle, "", 0),
        (child.handle, client.custodian.handle, 1),
        (grandchild.handle, child.handle, 2),
    ]
    assert [[h["handle"] for h in c["handles"]] for c in described["custodians"]] == [
        [sock.handle],
        [listener.handle],
        [i.handle, o.handle],
    ]
    handles = _handles(described)
    local_host, local_port, remote_host, remote_port = await i.addresses(port_numbers=True)
    for port, kind in ((i, "tcp-input-port"), (o, "tcp-output-port")):
        shown = handles[port.handle]
        assert (shown["kind"], shown["state"], shown["closed"]) == (kind, "open", False)
        assert (shown["local_host"], shown["local_port"]) == (local_host, local_port)
        assert (shown["remote_host"], shown["remote_port"]) == (remote_host, remote_port) == ("127.0.0.1", peer.port)
        assert (shown["bytes_in"], shown["bytes_out"]) == (300, 1000)
        assert "datagrams_in" not in shown and "channel" not in shown
    shown = handles[listener.handle]
    _, listening_port, _, _ = await listener.addresses(port_numbers=True)
    assert (shown["kind"], shown["state"], shown["local_port"]) == ("tcp-listener", "listening", listening_port)
    assert "bytes_in" not in shown and "remote_host" not in shown
    shown = handles[sock.handle]
    assert (shown["kind"], shown["state"], shown["local_port"]) == ("udp", "bound", udp_port)
    assert (shown["datagrams_in"], shown["bytes_in"], shown["datagrams_out"], shown["bytes_out"]) == (1, 50, 3, 60)
    assert "remote_host" not in shown  # not connected
    assert all(0 <= h["age_seconds"] < 60 for h in handles.values())
    assert all(0 <= c["age_seconds"] < 60 for c in described["custodians"])

    listed = {s["session"]: s for s in await admin.list_sessions()}
    assert listed[client.session] == {**summary, "age_seconds": listed[client.session]["age_seconds"]}
    assert client.session in {s["session"] for s in await admin.list_sessions("default")}
    assert await admin.list_sessions("nobody") == []
    assert client.session not in {s["session"] for s in await admin.list_sessions("default/dlg_x")}


async def test_a_sessions_totals_keep_what_its_closed_handles_carried(
    admin: AsyncAdmin, client: AsyncBroker, peer: PeerServer
) -> None:
    i, o = await client.tcp_connect("127.0.0.1", peer.port)
    reader, writer = await peer.next()
    await o.write(b"a" * 500, flush=True)
    assert await reader.readexactly(500) == b"a" * 500
    writer.write(b"b" * 200)
    await writer.drain()
    assert await i.read_bytes(200, timeout=5) == b"b" * 200
    await i.close()
    await o.close()
    assert await read_until_eof(reader) == b""
    described = await admin.describe_session(client.session)
    assert _handles(described) == {}
    assert (described["summary"]["bytes_in"], described["summary"]["bytes_out"]) == (200, 500)


async def test_a_relay_channel_counts_into_its_connection(
    admin: AsyncAdmin, client: AsyncBroker, peer: PeerServer
) -> None:
    i, _ = await client.tcp_connect("127.0.0.1", peer.port)
    reader, writer = await peer.next()
    up, down = os.urandom(300_000), os.urandom(200_000)
    with await i.open_channel("relay") as channel:
        sending = asyncio.ensure_future(asyncio.wait_for(asyncio.to_thread(channel.sendall, up), 20))
        assert await reader.readexactly(len(up)) == up
        await sending
        writer.write(down)
        await writer.drain()

        def receive() -> bytes:
            got = bytearray()
            while len(got) < len(down):
                got += channel.recv(len(down) - len(got))
            return bytes(got)

        assert await asyncio.wait_for(asyncio.to_thread(receive), 20) == down
        shown = _handles(await admin.describe_session(client.session))[i.handle]
        assert (shown["bytes_in"], shown["bytes_out"], shown["channel"]) == (len(down), len(up), "relay")


async def test_a_datagram_stream_counts_what_it_takes_and_a_hand_off_stops_the_count(
    admin: AsyncAdmin, client: AsyncBroker, peer: PeerServer
) -> None:
    sock = await client.udp_open_socket("127.0.0.1")
    await sock.bind("127.0.0.1", 0)
    _, udp_port, _, _ = await sock.addresses(port_numbers=True)
    stream = sock.receive_stream()
    with _udp_peer() as remote:
        for size in range(1, 6):  # queued in the kernel: the stream takes them when it starts
            remote.sendto(b"s" * size, ("127.0.0.1", udp_port))
        got = [(await asyncio.wait_for(anext(stream), 5)).data for _ in range(5)]
    await stream.aclose()  # type: ignore[attr-defined]
    assert sorted(len(d) for d in got) == [1, 2, 3, 4, 5]
    shown = _handles(await admin.describe_session(client.session))[sock.handle]
    assert (shown["datagrams_in"], shown["bytes_in"]) == (5, 15)

    # A handed-off connection: what its client moves itself is not the daemon's to count.
    i, _ = await client.tcp_connect("127.0.0.1", peer.port)
    reader, _ = await peer.next()
    with await i.open_channel("handoff") as channel:
        await asyncio.to_thread(channel.sendall, b"h" * 1000)
        assert await reader.readexactly(1000) == b"h" * 1000
        shown = _handles(await admin.describe_session(client.session))[i.handle]
        assert (shown["bytes_in"], shown["bytes_out"], shown["channel"]) == (0, 0, "handoff")


# ───────────────────────────── killing ─────────────────────────────


async def test_killing_a_session_closes_its_sockets_and_its_client_gets_not_found(
    admin: AsyncAdmin, client: AsyncBroker, peer: PeerServer, daemon: Daemon
) -> None:
    await client.tcp_connect("127.0.0.1", peer.port)
    reader, _ = await peer.next()
    sock = await client.udp_open_socket("127.0.0.1")
    await sock.bind("127.0.0.1", 0)
    killed = await admin.kill_session(client.session, reason="a test")
    assert killed == {"session": client.session, "closed": 4}  # the root custodian, two ports, a UDP socket
    assert daemon.broker.sessions.find(client.session) is None
    assert await read_until_eof(reader) == b""
    with pytest.raises(NotFoundError):
        await client.tcp_listen(0, hostname="127.0.0.1")
    assert client.session not in {s["session"] for s in await admin.list_sessions()}
    for call in (admin.describe_session, admin.kill_session):
        with pytest.raises(NotFoundError):
            await call(client.session)


async def test_killing_a_handle_closes_it_as_its_custodians_shutdown_would(
    admin: AsyncAdmin, client: AsyncBroker, peer: PeerServer
) -> None:
    custodian = await client.make_custodian()
    await client.tcp_listen(0, hostname="127.0.0.1", custodian=custodian)
    await client.tcp_connect("127.0.0.1", peer.port, custodian=custodian)
    reader_a, _ = await peer.next()
    i, o = await client.tcp_connect("127.0.0.1", peer.port)
    reader_b, _ = await peer.next()
    sock = await client.udp_open_socket("127.0.0.1")

    # A port: its whole connection, both ports.
    assert await admin.kill_handle(o.handle, reason="stuck") == {"session": client.session, "closed": 2}
    assert await read_until_eof(reader_b) == b""
    assert (await i.describe())["closed"] and (await o.describe())["closed"]
    # A UDP socket.
    assert await admin.kill_handle(sock.handle) == {"session": client.session, "closed": 1}
    assert (await sock.describe())["closed"]
    # A custodian: its subtree (itself, a listener, two ports); the session lives on.
    assert await admin.kill_handle(custodian.handle) == {"session": client.session, "closed": 4}
    assert await read_until_eof(reader_a) == b""
    assert (await client.describe_custodian(custodian))["shut_down"]
    await client.keep_alive()
    assert await admin.kill_handle(custodian.handle) == {"session": client.session, "closed": 0}  # again: nothing
    # The root custodian: the session.
    assert await admin.kill_handle(client.custodian.handle) == {"session": client.session, "closed": 1}
    with pytest.raises(NotFoundError):
        await client.keep_alive()
    with pytest.raises(NotFoundError):
        await admin.kill_handle(o.handle)  # its session is gone, and its handles with it


# ───────────────────────────── watching ─────────────────────────────


async def _next(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(events), 10)


async def test_watching_sees_a_session_open_its_handle_killed_then_the_session(
    admin: AsyncAdmin, daemon: Daemon, token: str, peer: PeerServer
) -> None:
    async with contextlib.aclosing(admin.watch_events()) as events:
        first = await _next(events)
        assert (first["event"], first["principal"], first["operation"]) == (
            "events.watch",
            "default",
            "admin-watch-events",
        )
        other = await AsyncBroker.connect(target(daemon, "rest"), token=token, attach=False)
        try:
            _, o = await other.tcp_connect("127.0.0.1", peer.port)
            await admin.kill_handle(o.handle, reason="first")
            await admin.kill_session(other.session, reason="second")
        finally:
            await other.channel.aclose()
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["event"] != "session.drop":
            event = await _next(events)
            if event["session"] == other.session:
                seen.append(event)
    assert [(e["event"], e["principal"], e["target"], e["reason"]) for e in seen] == [
        ("session.open", "default", other.custodian.handle, ""),
        ("admin.kill_handle", "default", o.handle, "first"),
        ("admin.kill_session", "default", other.session, "second"),
        ("session.drop", "default", "", "killed by admin default: second"),
    ]
    assert all(e["time"] > 0 for e in seen)


async def test_a_watcher_that_goes_away_is_forgotten(admin: AsyncAdmin, daemon: Daemon) -> None:
    before = daemon.broker.events.watchers
    async with contextlib.aclosing(admin.watch_events()) as events:
        await _next(events)
        assert daemon.broker.events.watchers == before + 1
    await eventually(lambda: daemon.broker.events.watchers == before, within=5)


# ───────────────────────────── refusals ─────────────────────────────


async def test_a_principal_that_is_not_an_admin_is_denied_every_call_on_both_doors(
    daemon: Daemon, viewer: Principal
) -> None:
    watcher = daemon.broker.events.watch()
    watched = aiter(watcher)
    metadata = (("authorization", f"Bearer {viewer.token}"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.grpc_port}") as channel:
            for r in ADMIN_ROUTES:
                kinds = {"request_serializer": r.input.SerializeToString, "response_deserializer": r.output.FromString}
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    if r.server_streaming:
                        stream = channel.unary_stream(r.grpc_path, **kinds)(r.input(), metadata=metadata, timeout=10)
                        async for _ in stream:
                            pass
                    else:
                        await channel.unary_unary(r.grpc_path, **kinds)(r.input(), metadata=metadata, timeout=10)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, r.name
                assert from_grpc_error(info.value).kind == "permission-denied", r.name
        headers = {"Authorization": f"Bearer {viewer.token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.rest_port}", headers=headers) as http:
            for r in ADMIN_ROUTES:
                if r.streaming:
                    continue
                path = r.path.replace("{session}", "ses_x").replace("{handle}", "tin_x")
                response = await http.request(r.verb.upper(), path)
                assert response.status_code == 403, (r.name, response.text)
                assert response.json()["kind"] == "permission-denied"
        async with websockets.connect(
            f"ws://127.0.0.1:{daemon.rest_port}/v1/admin/events", additional_headers=headers
        ) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["error"]["kind"] == "permission-denied"
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == frames.error_close_code(403)
        denied: list[Event] = []
        while len(denied) < 2 * len(ADMIN_ROUTES):
            event = await asyncio.wait_for(anext(watched), 10)
            if event.event == "admin.deny":
                denied.append(event)
    finally:
        watcher.close()
    assert {e.principal for e in denied} == {"viewer"}
    assert {e.operation for e in denied} == {
        "admin-list-sessions",
        "admin-describe-session",
        "admin-kill-session",
        "admin-kill-handle",
        "admin-watch-events",
    }


async def test_a_non_admin_client_gets_permission_denied(daemon: Daemon, viewer: Principal) -> None:
    for kind in ("grpc", "rest"):
        async with AsyncAdmin.connect(target(daemon, kind), token=viewer.token, transport=kind) as denied:
            with pytest.raises(PermissionDeniedError):
                await denied.list_sessions()
            with pytest.raises(PermissionDeniedError):
                async with contextlib.aclosing(denied.watch_events()) as events:
                    await _next(events)


async def test_bad_input_gets_typed_errors(admin: AsyncAdmin, client: AsyncBroker) -> None:
    for call, name in (
        (admin.describe_session, "ses_nothing"),
        (admin.kill_session, "ses_nothing"),
        (admin.kill_handle, "tin_nothing"),
    ):
        with pytest.raises(NotFoundError):
            await call(name)
    for call, name in ((admin.kill_session, client.session), (admin.kill_handle, client.custodian.handle)):
        with pytest.raises(ContractError) as info:
            await call(name, "x" * (MAX_REASON + 1))
        assert "contract violation" in info.value.message
    await client.keep_alive()  # a refused kill killed nothing
    for call in (admin.describe_session, admin.kill_session, admin.kill_handle):
        with pytest.raises(ContractError):
            await call("")


async def test_bad_requests_at_the_raw_doors_get_typed_errors(daemon: Daemon, token: str) -> None:
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.grpc_port}") as channel:
        for name, payload, code in (
            ("DescribeSession", b"", grpc.StatusCode.INVALID_ARGUMENT),  # no session named
            ("KillHandle", b"\xff\xff", grpc.StatusCode.INVALID_ARGUMENT),  # not a message
            ("KillSession", b"\n\x05ses_x", grpc.StatusCode.NOT_FOUND),
        ):
            call = channel.unary_unary(
                f"/sockbroker.admin.v1.Admin/{name}", request_serializer=bytes, response_deserializer=bytes
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(payload, metadata=metadata, timeout=10)
            assert info.value.code() == code, (name, info.value.details())
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.rest_port}", headers=headers) as http:
        for method, path, params, status in (
            ("GET", "/v1/admin/sessions", {"nope": "1"}, 400),
            ("GET", "/v1/admin/sessions/ses_x", {}, 404),
            ("DELETE", "/v1/admin/handles/tin_x", {"reason": "x" * (MAX_REASON + 1)}, 400),
            ("POST", "/v1/admin/sessions", {}, 400),  # no such method on the route
        ):
            response = await http.request(method, path, params=params)
            assert response.status_code == status, (path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
    # The event stream takes no frames: an unknown JSON object is ignored, anything else ends it.
    async with websockets.connect(
        f"ws://127.0.0.1:{daemon.rest_port}/v1/admin/events", additional_headers=headers
    ) as ws:
        first = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(first, bytes) and frames.decode_admin_event(first)["event"] == "events.watch"
        await ws.send('{"hello": 1}')
        await ws.send(b"\x00")
        message = await asyncio.wait_for(ws.recv(), 10)
        while isinstance(message, bytes):  # events of other sessions may come first
            message = await asyncio.wait_for(ws.recv(), 10)
        assert json.loads(message)["error"]["kind"] == "exn:fail:contract"
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == frames.error_close_code(400)
