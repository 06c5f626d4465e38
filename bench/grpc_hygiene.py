"""The gRPC door under abuse at full size (issue 8), against a daemon in its own process.

``hygiene``: a good client's unary latency (``Sessions.KeepAlive``, p50 of sequential calls) with
the door idle, then while ``--idle`` connections that never send a byte and ``--slowloris``
connections that send the HTTP/2 preface and half a request and then trickle nothing are open
(opened as fast as the bench can, from one process). The daemon closes the silent ones after
``header_timeout``, the others after ``unauthenticated_timeout`` or past ``connections_per_door``.
Goal (issue 8): the good client's p50 within 2x of idle.

``memory``: the daemon's RSS while ``--connections`` gRPC connections each run ``--writes``
concurrent ``Ports.Write`` calls of ``--size-mib`` MiB to TCP peers that read (``--peers read``)
or never read (``--peers stall``). Goal (DESIGN §7 P8): RSS growth <= 64 MiB.

    python -m bench.grpc_hygiene hygiene --idle 10000 --slowloris 2000
    python -m bench.grpc_hygiene memory --connections 4 --writes 2 --size-mib 30

The daemon is ``python -m sockbroker serve`` on 127.0.0.1 port 0 (its ports read from its runtime
file), extra flags after ``--``; it is stopped by its pid. Both sides need many descriptors: the
bench raises its own soft limit to the hard one, the daemon raises its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import h2.config
import h2.connection
from sockbroker_wire.v1 import broker_pb2 as pb
from sockbroker_wire.v1 import broker_pb2_grpc as rpc

from bench.common import LOOPBACK, MIB
from bench.procs import REPO_DIR

__all__ = ["main"]


@dataclass
class Daemon:
    pid: int
    grpc_port: int
    token: str

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@contextlib.contextmanager
def daemon(flags: list[str]) -> Iterator[Daemon]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_DIR / "daemon"), str(REPO_DIR / "proto" / "python"), *filter(None, [env.get("PYTHONPATH")])]
    )
    with tempfile.TemporaryDirectory(prefix="sockbroker-grpc-hygiene-") as tmp:
        token_file, runtime, log = Path(tmp) / "token", Path(tmp) / "runtime.json", Path(tmp) / "log"
        argv = [sys.executable, "-m", "sockbroker", "serve", "--grpc-address", f"{LOOPBACK}:0"]
        argv += ["--rest-address", f"{LOOPBACK}:0", "--token-file", str(token_file), "--runtime-file", str(runtime)]
        with log.open("wb") as out:
            proc = subprocess.Popen([*argv, *flags], stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
        try:
            end = time.monotonic() + 30
            while not runtime.exists():
                if proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"the daemon did not start:\n{log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)
            time.sleep(0.1)
            info = json.loads(runtime.read_text())
            port = int(str(info["grpc_address"]).rsplit(":", 1)[1])
            yield Daemon(proc.pid, port, token_file.read_text().strip())
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _p50(stub: rpc.SessionsStub, session: str, auth: list[tuple[str, str]], calls: int) -> float:
    request = pb.SessionRequest(session=session)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await stub.KeepAlive(request, metadata=auth, timeout=30)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _slowloris(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "POST"), (":scheme", "http"), (":path", "/sockbroker.v1.Sessions/Open")]
    conn.send_headers(1, [*headers, (":authority", LOOPBACK), ("content-type", "application/grpc")])
    data = conn.data_to_send()
    sock.sendall(data[:-5])  # the HEADERS frame's last bytes never come
    return sock


async def hygiene(args: argparse.Namespace) -> int:
    with daemon(args.daemon_flags) as d:
        auth = [("authorization", f"Bearer {d.token}")]
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{d.grpc_port}") as channel:
            stub = rpc.SessionsStub(channel)
            session = (await stub.Open(pb.OpenSessionRequest(lease_seconds=3600), metadata=auth)).session
            idle_p50 = await _p50(stub, session, auth, args.calls)
            rss0, fds0 = d.rss_mib(), d.fds()
            print(f"idle: p50 {idle_p50:.3f} ms, daemon RSS {rss0:.0f} MiB, {fds0} fds", flush=True)
            attackers: list[socket.socket] = []
            failed: Counter[str] = Counter()
            start = time.monotonic()
            for i in range(args.idle + args.slowloris):
                try:
                    if i < args.idle:
                        attackers.append(socket.create_connection((LOOPBACK, d.grpc_port)))
                    else:
                        attackers.append(_slowloris(d.grpc_port))
                except OSError as exc:
                    failed[type(exc).__name__] += 1
                if i % 500 == 0:
                    await asyncio.sleep(0)
            opened = time.monotonic() - start
            print(f"opened {len(attackers)} attacking connections in {opened:.1f} s (failed: {dict(failed)})")
            attack_p50 = await _p50(stub, session, auth, args.calls)
            peak_fds, peak_rss = d.fds(), d.rss_mib()
            print(f"under attack: p50 {attack_p50:.3f} ms, daemon RSS {peak_rss:.0f} MiB, {peak_fds} fds", flush=True)
            await asyncio.sleep(args.hold)
            late_p50 = await _p50(stub, session, auth, args.calls)
            print(f"after {args.hold:.0f} s: p50 {late_p50:.3f} ms, daemon RSS {d.rss_mib():.0f} MiB, {d.fds()} fds")
            for sock in attackers:
                sock.close()
        ratio = max(attack_p50, late_p50) / idle_p50
        print(f"good client's p50 under attack / idle = {ratio:.2f} (goal <= 2)")
        return 0 if ratio <= 2 else 1


def _outcome(result: object) -> str:
    if isinstance(result, grpc.aio.AioRpcError):
        return str(result.code().name)
    return type(result).__name__ if isinstance(result, BaseException) else "ok"


async def memory(args: argparse.Namespace) -> int:
    with daemon(args.daemon_flags) as d:
        auth = [("authorization", f"Bearer {d.token}")]
        listener = socket.create_server((LOOPBACK, 0), backlog=4096)
        peers: list[socket.socket] = []
        channels = [
            grpc.aio.insecure_channel(f"{LOOPBACK}:{d.grpc_port}", options=[("grpc.max_send_message_length", -1)])
            for _ in range(args.connections)
        ]
        payload = os.urandom(args.size_mib * MIB)
        rss0 = d.rss_mib()
        calls = []
        for channel in channels:
            opened = await rpc.SessionsStub(channel).Open(pb.OpenSessionRequest(lease_seconds=3600), metadata=auth)
            md = [*auth, ("sockbroker-session", opened.session)]
            for _ in range(args.writes):
                connect = pb.ConnectRequest(hostname=LOOPBACK, port=listener.getsockname()[1])
                reply = await rpc.TcpStub(channel).Connect(connect, metadata=md)
                peer, _ = listener.accept()
                peer.setblocking(False)
                peers.append(peer)
                write = pb.WriteRequest(port=reply.out, data=payload)
                calls.append(rpc.PortsStub(channel).Write(write, metadata=md, timeout=args.within))

        async def drain() -> None:
            while True:
                for peer in peers:
                    with contextlib.suppress(OSError):
                        while peer.recv(1 << 20):
                            pass
                await asyncio.sleep(0.005)

        drainer = asyncio.create_task(drain()) if args.peers == "read" else None
        everything = asyncio.gather(*calls, return_exceptions=True)
        peak = rss0
        end = time.monotonic() + args.within
        while not everything.done() and time.monotonic() < end:
            peak = max(peak, d.rss_mib())
            await asyncio.sleep(0.02)
        peak = max(peak, d.rss_mib())
        results = await everything
        outcomes = Counter(_outcome(r) for r in results)
        if drainer is not None:
            drainer.cancel()
        for channel in channels:
            await channel.close()
        for peer in peers:
            peer.close()
        listener.close()
        growth = peak - rss0
        print(
            f"{args.connections} connections x {args.writes} concurrent Ports.Write of {args.size_mib} MiB, peers "
            f"{args.peers}: RSS {rss0:.0f} -> peak {peak:.0f} MiB (growth {growth:.0f} MiB, goal <= 64); "
            f"outcomes {dict(outcomes)}"
        )
        return 0 if growth <= 64 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    h = sub.add_parser("hygiene")
    h.add_argument("--idle", type=int, default=10_000)
    h.add_argument("--slowloris", type=int, default=2_000)
    h.add_argument("--calls", type=int, default=400)
    h.add_argument("--hold", type=float, default=12.0, help="seconds to keep the attack open")
    m = sub.add_parser("memory")
    m.add_argument("--connections", type=int, default=4)
    m.add_argument("--writes", type=int, default=2)
    m.add_argument("--size-mib", type=int, default=30)
    m.add_argument("--peers", choices=["read", "stall"], default="read")
    m.add_argument("--within", type=float, default=60.0)
    for p in (h, m):
        p.add_argument("daemon_flags", nargs="*", help="flags for sockbroker serve (after --)")
    args = parser.parse_args(argv)
    _raise_nofile()
    return asyncio.run(hygiene(args) if args.mode == "hygiene" else memory(args))


if __name__ == "__main__":
    sys.exit(main())
