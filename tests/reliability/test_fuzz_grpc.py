"""gRPC fuzzing of every RPC of ``proto/sockbroker/v1/broker.proto`` and
``proto/sockbroker/admin/v1/admin.proto`` with hypothesis.

Requests are built from the descriptors (:mod:`sockbroker_wire.routes`): well-typed messages with
arbitrary values, raw garbage bytes, and messages cut short or with bytes appended; sent with
valid, missing, wrong or junk metadata, at random and at live handles (``reliability/fuzzing.py``).
Streaming RPCs get a few messages, then a half-close or a cancel at a random moment. No call may
end INTERNAL, UNKNOWN or UNIMPLEMENTED, hang, answer bytes that do not decode, or make the
daemon log an error. Bounded: ``SOCKBROKER_FUZZ_EXAMPLES`` examples per RPC (default 6),
derandomized; ``python -m bench.fuzz`` runs the same at full size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from reliability.fuzzing import GrpcFuzzer, LogWatch, Pool, Sink, attempts, examples, is_safe_host
from sockbroker.server import Daemon
from sockbroker_wire.routes import routes
from sockbroker_wire.v1 import broker_pb2 as pb

RPCS = [r.name for r in routes()]
EXAMPLES = examples(6)


@pytest.fixture(scope="module")
async def fuzzer(daemon: Daemon) -> AsyncIterator[GrpcFuzzer]:
    loop = asyncio.get_running_loop()
    made = await asyncio.to_thread(GrpcFuzzer, f"127.0.0.1:{daemon.grpc_port}", loop)
    yield made
    await made.channel.close()


@pytest.mark.parametrize("name", RPCS)
async def test_rpc_holds_under_fuzzing(
    name: str, fuzzer: GrpcFuzzer, pool: Pool, daemon: Daemon, daemon_log: LogWatch
) -> None:
    sessions = len(daemon.broker.sessions)
    tally = await asyncio.to_thread(fuzzer.fuzz, name, pool, EXAMPLES)
    await asyncio.to_thread(pool.close)
    assert not tally.findings, f"gRPC {name}: the daemon misbehaved under fuzzing:\n{tally.report()}"
    assert len(daemon.broker.sessions) <= sessions, f"gRPC {name}: fuzzing left sessions open"
    assert tally.requests >= EXAMPLES, tally
    assert not daemon_log.records, f"gRPC {name}: the daemon logged errors:\n" + "\n".join(daemon_log.lines())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.grpc_port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


# ── the fuzzer itself: what it may send stays on this machine ─────────────


@settings(max_examples=40, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(attempt=attempts(next(r for r in routes() if r.name == "Events.Sync")))
def test_built_requests_carry_only_safe_hosts(attempt: object, sink: Sink) -> None:
    pool = Pool("http://127.0.0.1:1", "token", sink)
    pool.refs = {"@session": "ses_x"}
    pool.ports = {"@listener-port": 40000, "@udp-port": 40001}
    for request in attempt.messages:  # type: ignore[attr-defined]
        data = request.encode(pb.SyncRequest, pool)
        try:
            message = pb.SyncRequest.FromString(data)
        except Exception:
            continue  # the daemon cannot decode it either
        for event in message.events:
            for name in ("udp_send_to",):
                sent = getattr(event, name)
                assert is_safe_host(sent.hostname), sent.hostname
                assert not 1 <= sent.port <= 65535 or sent.port in pool.safe_ports, sent.port
