"""REST fuzzing of every operation with schemathesis, from the daemon's own ``/openapi.json``.

Each operation gets schema-valid and schema-violating arguments, garbage bodies of any content
type, and calls without or with a wrong token, aimed at random handles and at live ones (see
``reliability/fuzzing.py``); the streaming routes' WebSockets get random frames. Nothing may
answer 5xx (but DESIGN §4's 502 for an errno the OS gave), stray from the document (status,
content type, headers, body), let an unauthenticated call through, hang, or log an error.
Bounded: ``SOCKBROKER_FUZZ_EXAMPLES`` examples per operation and mode (default 4), derandomized,
so CI sees the same requests every run; ``python -m bench.fuzz`` runs the same at full size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability.fuzzing import (
    HOSTS,
    WEBSOCKETS,
    LogWatch,
    Pool,
    RestFuzzer,
    Sink,
    WebSocketFuzzer,
    examples,
    is_safe_host,
    patch_openapi,
    sanitize_json,
)
from sockbroker.server import Daemon
from sockbroker_wire.routes import routes

OPERATIONS = [r.name for r in routes() if not r.streaming]
EXAMPLES = examples(4)


@pytest.fixture(scope="module")
async def fuzzer(daemon: Daemon, sink: Sink) -> AsyncIterator[RestFuzzer]:
    made = await asyncio.to_thread(RestFuzzer, f"http://127.0.0.1:{daemon.rest_port}", sink)
    yield made
    made.close()


def test_the_document_has_every_operation(fuzzer: RestFuzzer) -> None:
    assert sorted(fuzzer.operations) == sorted(OPERATIONS)


@pytest.mark.parametrize("name", OPERATIONS)
async def test_operation_holds_under_fuzzing(
    name: str, fuzzer: RestFuzzer, pool: Pool, daemon: Daemon, daemon_log: LogWatch
) -> None:
    sessions = len(daemon.broker.sessions)
    tally = await asyncio.to_thread(fuzzer.fuzz, name, pool, EXAMPLES)
    await asyncio.to_thread(pool.close)
    assert not tally.findings, f"REST {name}: the daemon misbehaved under fuzzing:\n{tally.report()}"
    assert len(daemon.broker.sessions) <= sessions, f"REST {name}: fuzzing left sessions open"
    assert tally.requests >= EXAMPLES * 2, tally
    assert not daemon_log.records, f"REST {name}: the daemon logged errors:\n" + "\n".join(daemon_log.lines())


@pytest.mark.parametrize("path", sorted(WEBSOCKETS))
async def test_websocket_holds_under_fuzzing(path: str, daemon: Daemon, pool: Pool, daemon_log: LogWatch) -> None:
    """The streaming routes are WebSockets, outside the OpenAPI document: random control and data
    frames, bad credentials, closes and dropped connections. Every failure must end with an error
    frame and a close code 4000 + a status below 500, never 1011 or a connection dropped without
    a close frame."""
    fuzzer = WebSocketFuzzer(f"http://127.0.0.1:{daemon.rest_port}")
    tally = await asyncio.to_thread(fuzzer.fuzz, path, pool, EXAMPLES * 2)
    assert not tally.findings, f"WebSocket {path}: the daemon misbehaved under fuzzing:\n{tally.report()}"
    assert tally.requests >= EXAMPLES * 2, tally
    assert not daemon_log.records, f"WebSocket {path}: the daemon logged errors:\n" + "\n".join(daemon_log.lines())


# ── the fuzzer itself: what it may send stays on this machine ─────────────

UNSAFE = ["example.com", "no-such-host.invalid", "localhost.", "10.0.0.1", "192.0.2.1", "239.255.0.1", "8.8.8.8"]
UNSAFE += ["::1%eth0", "1.2.3", "0177.0.0.1", "fe80::1", "2001:db8::1", "::ffff:10.0.0.1", "256.0.0.1"]


@pytest.mark.parametrize("host", UNSAFE)
def test_hosts_off_this_machine_are_never_sent(host: str) -> None:
    assert not is_safe_host(host)
    body = {"hostname": host, "port": 53, "events": [{"udp_send_to": {"hostname": host, "port": "53"}}]}
    clean = sanitize_json(body, [4242])
    assert clean == {"hostname": "", "port": 4242, "events": [{"udp_send_to": {"hostname": "", "port": 4242}}]}


def test_generated_hosts_are_all_safe() -> None:
    assert all(is_safe_host(h) for h in HOSTS)


@settings(max_examples=25, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_negative_cases_are_made_safe(data: st.DataObject, fuzzer: RestFuzzer) -> None:
    """Schema-violating hosts and ports (anything at all) are replaced before they are sent."""
    operation = fuzzer.operations[data.draw(st.sampled_from(["Tcp.Connect", "Udp.SendTo", "Events.Sync"]))]
    case = data.draw(operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    clean = sanitize_json(case.body, [4242])

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("hostname", "host", "local_hostname") and isinstance(item, str):
                    assert is_safe_host(item), item
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(clean)


def test_the_patched_document_narrows_only_addresses_ports_and_names(fuzzer: RestFuzzer) -> None:
    patched = patch_openapi(fuzzer.document, 4242)
    connect = patched["paths"]["/v1/tcp/connections"]["post"]["requestBody"]["content"]["application/json"]
    properties = connect["schema"]["properties"]
    assert properties["hostname"]["enum"] == list(HOSTS)
    assert 4242 in properties["port"]["enum"] and all(not 1 <= p <= 65535 for p in properties["port"]["enum"][1:])
    assert (
        properties["timeout"]
        == fuzzer.document["paths"]["/v1/tcp/connections"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]["properties"]["timeout"]
    )
