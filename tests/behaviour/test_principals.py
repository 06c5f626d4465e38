"""Principals from the config (DESIGN §5): each proves itself by a token file, by a TLS client
certificate (subject or subject alternative name), or by its uid/gid on the REST door's Unix
socket (``SO_PEERCRED``), and gets its own policy and limits; sessions and handles are invisible
across principals; a reload (SIGHUP's ``Daemon.reload``) changes policies without a restart.

Both doors are tested where the daemon can tell: tokens and certificates on gRPC and REST;
peer credentials on REST's Unix socket only (gRPC shows its handlers no peer credentials:
docs/security.md). Denied targets are on loopback (127.0.0.2, other ports).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
import trustme
from cryptography import x509
from helpers import PeerServer, daemon_settings, serving
from sockbroker.config import Settings
from sockbroker.server import Daemon
from sockbroker_client import (
    AsyncBroker,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)

LOOPBACK = "127.0.0.1"
DOORS = ["grpc", "rest"]
#: An unprivileged uid and gid that no principal names, and one that does.
STRANGER, NOBODY = 65533, 65534


def _options(folder: pathlib.Path, **principals: Any) -> dict[str, Any]:
    return {"principals": principals, "rest_unix_socket": _socket(folder), "rest_unix_socket_mode": "0666"}


def _socket(folder: pathlib.Path) -> pathlib.Path:
    """The REST door's Unix socket, in a folder other users may pass through (pytest's are 0700)."""
    return (folder / "public").resolve() / "rest.sock"


def _settings(folder: pathlib.Path, **principals: Any) -> Settings:
    return daemon_settings(folder / "token", **_options(folder, **principals))


def _principals(folder: pathlib.Path, *, alice_connect: list[str]) -> dict[str, Any]:
    return {
        "alice": {
            "token_file": folder / "alice.token",
            "max_sessions": 3,
            "policy": {"allow_connect": alice_connect, "allow_listen": ["127.0.0.1/32"]},
        },
        "local": {"unix_uid": [os.getuid()], "policy": {"allow_connect": ["127.0.0.1/32"]}},
        "nobody": {"unix_gid": [NOBODY]},
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """The daemon's files; its Unix socket in a 0711 folder under /tmp, linked in as ``public``."""
    folder = tmp_path_factory.mktemp("principals")
    public = pathlib.Path(tempfile.mkdtemp(prefix="sockbroker-principals-", dir="/tmp"))
    public.chmod(0o711)
    (folder / "public").symlink_to(public)
    yield folder
    shutil.rmtree(public, ignore_errors=True)


@pytest.fixture(scope="module")
async def daemon(folder: pathlib.Path) -> AsyncIterator[Daemon]:
    options = _options(folder, **_principals(folder, alice_connect=["127.0.0.1/32"]))
    async with serving(folder / "token", **options) as running:
        yield running


def _target(daemon: Daemon, door: str) -> str:
    return f"{LOOPBACK}:{daemon.grpc_port}" if door == "grpc" else f"http://{LOOPBACK}:{daemon.rest_port}"


@pytest.fixture
async def connect(daemon: Daemon) -> AsyncIterator[Any]:
    opened: list[AsyncBroker] = []

    async def open_one(door: str, **options: Any) -> AsyncBroker:
        broker = await AsyncBroker.connect(_target(daemon, door), transport=door, **options)
        opened.append(broker)
        return broker

    yield open_one
    for broker in opened:
        try:
            await broker.aclose()
        except Exception:
            await broker.channel.aclose()


def _token(folder: pathlib.Path, name: str) -> str:
    return (folder / f"{name}.token").read_text().strip()


@pytest.mark.parametrize("door", DOORS)
async def test_a_token_file_principal_has_its_own_policy_and_quota(
    door: str, connect: Any, folder: pathlib.Path, daemon: Daemon, peer: PeerServer
) -> None:
    token = _token(folder, "alice")
    assert (folder / "alice.token").stat().st_mode & 0o777 == 0o600  # created for it, private
    alice = await connect(door, token=token)
    assert daemon.broker.sessions.find(alice.session).principal == "alice"  # type: ignore[union-attr]
    assert await alice.tcp_connect(LOOPBACK, peer.port) is not None
    with pytest.raises(PermissionDeniedError) as denied:
        await alice.tcp_connect("127.0.0.2", peer.port)
    assert "[principals.alice.policy]" in str(denied.value)
    others = [await connect(door, token=token, attach=False) for _ in range(2)]
    with pytest.raises(ResourceExhaustedError):
        await connect(door, token=token)  # max_sessions = 3
    for broker in others:
        await broker.aclose()


@pytest.mark.parametrize("door", DOORS)
async def test_sessions_and_handles_are_invisible_across_principals(
    door: str, connect: Any, folder: pathlib.Path, daemon: Daemon
) -> None:
    alice = await connect(door, token=_token(folder, "alice"))
    owner = await connect(door, token_file=folder / "token")
    listener = await owner.tcp_listen(0, hostname=LOOPBACK)
    with pytest.raises(NotFoundError):
        await alice.describe(listener.handle)
    with pytest.raises(NotFoundError):
        await alice.channel.call("Sessions.KeepAlive", {}, owner.session)  # its session, alice's token


def _unix_client(folder: pathlib.Path, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(_socket(folder))), base_url="http://localhost", headers=headers
    )


async def test_a_unix_peer_is_the_principal_of_its_uid(folder: pathlib.Path, daemon: Daemon) -> None:
    assert _socket(folder).stat().st_mode & 0o777 == 0o666
    async with _unix_client(folder) as client:
        opened = await client.post("/v1/sessions", json={})
        assert opened.status_code == 200, opened.text
        session = opened.json()["session"]
        assert daemon.broker.sessions.find(session).principal == "local"  # type: ignore[union-attr]
        denied = await client.post(
            "/v1/tcp/connections", json={"hostname": "127.0.0.2", "port": 9}, headers={"Sockbroker-Session": session}
        )
        assert denied.status_code == 403 and "[principals.local.policy]" in denied.json()["detail"]
        await client.delete(f"/v1/sessions/{session}", headers={"Sockbroker-Session": session})
    async with _unix_client(folder, token=_token(folder, "alice")) as client:  # a token decides over the peer
        opened = await client.post("/v1/sessions", json={})
        session = opened.json()["session"]
        assert daemon.broker.sessions.find(session).principal == "alice"  # type: ignore[union-attr]
        await client.delete(f"/v1/sessions/{session}", headers={"Sockbroker-Session": session})


async def test_the_python_client_is_a_unix_peer_principal(
    folder: pathlib.Path, daemon: Daemon, peer: PeerServer
) -> None:
    """``http+unix://PATH`` with no token: the bundled client is named by its uid, attached over
    a WebSocket on the same socket, and its sockets work."""
    broker = await AsyncBroker.connect(f"http+unix://{_socket(folder)}", token="")
    try:
        assert daemon.broker.sessions.find(broker.session).principal == "local"  # type: ignore[union-attr]
        assert daemon.broker.sessions.find(broker.session).attachments == 1  # type: ignore[union-attr]
        ports = await broker.tcp_connect(LOOPBACK, peer.port)
        assert ports is not None
        reader, _ = await peer.next()
        await ports[1].write(b"from a peer", flush=True)
        assert await reader.readexactly(11) == b"from a peer"
    finally:
        await broker.aclose()


async def _open_as(path: pathlib.Path, uid: int, gid: int) -> tuple[int, str]:
    """``POST /v1/sessions`` over a Unix socket connected as ``uid``/``gid``: the kernel records a
    socket's peer credentials at ``connect``, from the effective ids, which are changed for that
    call alone (the test runs as root)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.setegid(gid)
        os.seteuid(uid)
        try:
            sock.connect(str(path))
        finally:
            os.seteuid(0)
            os.setegid(0)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        request = b"POST /v1/sessions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        await loop.sock_sendall(sock, request + b"content-length: 2\r\nconnection: close\r\n\r\n{}")
        reply = b""
        async with asyncio.timeout(10):
            while chunk := await loop.sock_recv(sock, 65536):
                reply += chunk
    finally:
        sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body).get("session", "") if status == 200 else ""


@pytest.mark.parametrize(("gid", "expected"), [(NOBODY, "nobody"), (STRANGER, None)])
async def test_another_users_process_is_its_principal_or_nobody(
    folder: pathlib.Path, daemon: Daemon, gid: int, expected: str | None
) -> None:
    """A process of another user reaches the 0666 socket; only its gid names a principal."""
    if os.geteuid() != 0:
        pytest.fail("this test connects as another user: the suite runs as root (DESIGN §10, .ci/run)")
    status, session = await _open_as(_socket(folder), STRANGER, gid)
    if expected is None:
        assert status == 401
        return
    assert status == 200
    found = daemon.broker.sessions.find(session)
    assert found is not None and found.principal == expected
    daemon.broker.sessions.drop(found, reason="test over")


async def test_a_reload_changes_policies_without_a_restart(
    folder: pathlib.Path, daemon: Daemon, connect: Any, peer: PeerServer
) -> None:
    alice = await connect("grpc", token=_token(folder, "alice"))
    nobody_session = daemon.broker.open_session(daemon.broker.identities.named("nobody"))  # type: ignore[arg-type]
    kept = await alice.tcp_connect(LOOPBACK, peer.port)
    assert kept is not None
    reader, _ = await peer.next()
    with pytest.raises(PermissionDeniedError):
        await alice.tcp_connect("127.0.0.2", peer.port)
    wider = _principals(folder, alice_connect=["127.0.0.0/8"])
    del wider["nobody"]
    daemon._reload = lambda: _settings(folder, **wider)
    try:
        assert daemon.reload()
        # The handle made before still works; the next operation sees the new policy.
        await kept[1].write(b"still here", flush=True)
        assert await reader.readexactly(10) == b"still here"
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.2", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            assert await alice.tcp_connect("127.0.0.2", port) is not None
        finally:
            server.close()
        # A principal no longer configured loses its sessions.
        assert nobody_session.session.dropped
        # Bad settings are refused whole: the old ones stay.
        daemon._reload = lambda: _settings(folder, alice={"policy": {}})  # no way to prove itself
        assert not daemon.reload()
        assert daemon.broker.identities.named("alice") is not None
    finally:
        daemon._reload = lambda: _settings(folder, **_principals(folder, alice_connect=["127.0.0.1/32"]))
        assert daemon.reload()


# ───────────────────────────── TLS client certificates ─────────────────────────────


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certs(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """The daemon's certificate and the clients' (``ci`` by SAN, ``ops`` by subject, ``stranger``)."""
    folder = tmp_path_factory.mktemp("mtls")
    found = {}
    for name, issued in {
        "server": ca.issue_cert(LOOPBACK, "localhost"),
        "ci": ca.issue_cert("ci.example.test"),
        "ops": ca.issue_cert("ops.example.test"),
        "stranger": ca.issue_cert("stranger.example.test"),
    }.items():
        path = folder / f"{name}.pem"
        issued.private_key_and_cert_chain_pem.write_to_path(str(path))
        found[name] = path
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    found["ca"] = folder / "ca.pem"
    return found


def _subject(path: pathlib.Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).subject.rfc4514_string()


@pytest.fixture(scope="module")
async def mtls(certs: dict[str, pathlib.Path], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    folder = tmp_path_factory.mktemp("mtls-daemon")
    principals = {
        "ci": {"tls_san": ["ci.example.test"], "policy": {"allow_connect": ["127.0.0.1/32"]}},
        "ops": {"tls_subject": _subject(certs["ops"]), "admin": True},
    }
    async with serving(
        folder / "token",
        tls_cert=certs["server"],
        tls_key=certs["server"],
        tls_client_ca=certs["ca"],
        principals=principals,
    ) as running:
        yield running


async def _by_certificate(daemon: Daemon, door: str, certs: dict[str, pathlib.Path], who: str) -> AsyncBroker:
    """A session opened with ``who``'s certificate and no token."""
    if door == "grpc":
        pem = certs[who].read_bytes()
        credentials = grpc.ssl_channel_credentials(certs["ca"].read_bytes(), pem, pem)
        return await AsyncBroker.connect(
            f"{LOOPBACK}:{daemon.grpc_port}", transport="grpc", token="", credentials=credentials
        )
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    context.load_cert_chain(str(certs[who]))
    return await AsyncBroker.connect(
        f"https://{LOOPBACK}:{daemon.rest_port}", transport="rest", token="", verify=context
    )


@pytest.mark.parametrize("door", DOORS)
async def test_a_client_certificate_names_its_principal(
    door: str, mtls: Daemon, certs: dict[str, pathlib.Path], peer: PeerServer
) -> None:
    ci = await _by_certificate(mtls, door, certs, "ci")
    ops = await _by_certificate(mtls, door, certs, "ops")
    try:
        assert mtls.broker.sessions.find(ci.session).principal == "ci"  # type: ignore[union-attr]
        assert mtls.broker.sessions.find(ops.session).principal == "ops"  # type: ignore[union-attr]
        with pytest.raises(PermissionDeniedError):
            await ci.tcp_connect("127.0.0.2", peer.port)
        with pytest.raises(NotFoundError):
            await ci.describe(ops.custodian.handle)
    finally:
        await ci.aclose()
        await ops.aclose()
    with pytest.raises(UnauthenticatedError):
        await _by_certificate(mtls, door, certs, "stranger")  # a valid certificate no principal names


@pytest.mark.parametrize("door", DOORS)
async def test_a_token_decides_over_the_certificate(door: str, mtls: Daemon, certs: dict[str, pathlib.Path]) -> None:
    token = mtls.settings.token_file.read_text().strip()
    pem = certs["ci"].read_bytes()
    if door == "grpc":
        credentials = grpc.ssl_channel_credentials(certs["ca"].read_bytes(), pem, pem)
        options: dict[str, Any] = {"credentials": credentials}
        target = f"{LOOPBACK}:{mtls.grpc_port}"
    else:
        context = ssl.create_default_context(cafile=str(certs["ca"]))
        context.load_cert_chain(str(certs["ci"]))
        options = {"verify": context}
        target = f"https://{LOOPBACK}:{mtls.rest_port}"
    broker = await AsyncBroker.connect(target, transport=door, token=token, **options)
    try:
        assert mtls.broker.sessions.find(broker.session).principal == "default"  # type: ignore[union-attr]
    finally:
        await broker.aclose()
    with pytest.raises(UnauthenticatedError):
        await AsyncBroker.connect(target, transport=door, token="wrong", **options)
