"""Per-principal metrics on ``/metrics`` (issue 11, item 5): open sessions and handles, bytes in
and out, and policy denials, by principal, with real sockets. A delegated caller counts as its
principal (the label is the name before ``/``), and nothing is lost when a session drops."""

from __future__ import annotations

import pathlib
import secrets
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from helpers import PeerServer, target
from prometheus_client.parser import text_string_to_metric_families
from sockbroker.core.broker import Principal
from sockbroker.core.events import Event
from sockbroker.server import Daemon
from sockbroker_client import AsyncBroker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def http(daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.rest_port}") as client:
        yield client


async def _scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name.startswith("sockbroker_principal_")
    }


def _of(samples: Samples, name: str, principal: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted({"principal": principal, **labels}.items()))), 0.0)


async def test_sessions_handles_and_bytes_by_principal_and_nothing_lost_on_a_drop(
    http: httpx.AsyncClient, daemon: Daemon, token_file: pathlib.Path, peer: PeerServer
) -> None:
    before = await _scrape(http)
    assert ("sockbroker_principal_sessions", (("principal", "default"),)) in before  # reported at 0 too
    broker = await AsyncBroker.connect(target(daemon, "grpc"), token_file=token_file)
    try:
        i, o = await broker.tcp_connect("127.0.0.1", peer.port)
        reader, writer = await peer.next()
        await o.write(b"o" * 700, flush=True)
        assert await reader.readexactly(700) == b"o" * 700
        writer.write(b"i" * 400)
        await writer.drain()
        assert await i.read_bytes(400, timeout=5) == b"i" * 400
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as remote:
            remote.bind(("127.0.0.1", 0))
            sock = await broker.udp_open_socket("127.0.0.1")
            for _ in range(2):
                await sock.send_to("127.0.0.1", remote.getsockname()[1], b"u" * 25)
        during = await _scrape(http)
    finally:
        await broker.aclose()
    after = await _scrape(http)

    def delta(samples: Samples, name: str, **labels: str) -> float:
        return _of(samples, name, "default", **labels) - _of(before, name, "default", **labels)

    assert delta(during, "sockbroker_principal_sessions") == 1
    assert delta(during, "sockbroker_principal_handles") == 4  # the root custodian, two ports, a UDP socket
    moved = {"in": 400, "out": 700 + 2 * 25}
    for direction, count in moved.items():
        assert delta(during, "sockbroker_principal_bytes_total", direction=direction) == count
        assert delta(after, "sockbroker_principal_bytes_total", direction=direction) == count  # kept after the drop
    assert delta(after, "sockbroker_principal_sessions") == 0
    assert delta(after, "sockbroker_principal_handles") == 0


async def test_a_delegated_caller_counts_as_its_principal(
    http: httpx.AsyncClient, daemon: Daemon, peer: PeerServer
) -> None:
    delegated = Principal("metrics-alice/dlg_test", secrets.token_urlsafe(32), daemon.broker.principals[0].policy)
    daemon.broker.principals.append(delegated)
    try:
        async with AsyncBroker.connect(target(daemon, "rest"), token=delegated.token) as broker:
            _, o = await broker.tcp_connect("127.0.0.1", peer.port)
            reader, _ = await peer.next()
            await o.write(b"d" * 123, flush=True)
            assert await reader.readexactly(123) == b"d" * 123
            during = await _scrape(http)
    finally:
        daemon.broker.principals.remove(delegated)
    assert not any("/" in dict(labels)["principal"] for _, labels in during)
    assert _of(during, "sockbroker_principal_sessions", "metrics-alice") == 1
    assert _of(during, "sockbroker_principal_bytes_total", "metrics-alice", direction="out") == 123
    after = await _scrape(http)
    assert _of(after, "sockbroker_principal_sessions", "metrics-alice") == 0
    assert _of(after, "sockbroker_principal_bytes_total", "metrics-alice", direction="out") == 123


async def test_denials_are_counted_from_the_policy_deny_events(http: httpx.AsyncClient, daemon: Daemon) -> None:
    before = await _scrape(http)
    events = daemon.broker.events
    events.publish(Event("policy.deny", "metrics-bob/dlg_x", "ses_x", "tcp-connect", "10.0.0.1:80", "not allowed"))
    events.publish(Event("policy.deny", "metrics-bob", "ses_y", "udp-send-to", "10.0.0.2:53", "not allowed"))
    events.publish(Event("admin.deny", "metrics-bob", operation="admin-list-sessions"))  # not a policy denial
    after = await _scrape(http)
    name = "sockbroker_principal_denials_total"
    assert _of(after, name, "metrics-bob") - _of(before, name, "metrics-bob") == 2
    assert _of(after, name, "default") == _of(before, name, "default")
