"""The REST door under connection and body abuse, at full size (issue 8, DESIGN §5, §7 P8).

Two scenarios, each against a daemon process of its own (``python -m sockbroker serve``, its
default limits unless ``--daemon-arg`` says otherwise):

- ``connections``: an attacker process holds ``--idle`` connections that never send a byte and
  ``--slowloris`` connections that send a request line and then one header byte a second,
  reopening each one the daemon closes; meanwhile a client holding the token makes unary calls
  (``Sessions.KeepAlive``), on one kept-alive connection and on a fresh connection each. Reported:
  the good client's p50 with no attack and under it (goal: within 2×), how long the attacker's
  connections lived, what the daemon closed and why (``/metrics``), the daemon's RSS growth.
- ``bodies``: ``--writers`` concurrent ``Ports.Write`` calls of ``--body-mib`` MiB each, raw
  (``application/octet-stream``) and then JSON (base64), to a peer that reads, ``--rounds``
  times; then bodies over the limit (a 413 each). Reported: the daemon's peak RSS growth (VmHWM
  after a reset, goal ≤ 64 MiB) and the outcomes.

    python -m bench.rest_hygiene                                   # both, full size
    python -m bench.rest_hygiene --only connections --idle 2000 --slowloris 500 --attack-seconds 20
    python -m bench.rest_hygiene --only bodies --body-mib 30 --daemon-arg=--max-request-bytes=33554432

The attacker needs ~``idle + slowloris`` descriptors, the daemon ``connections_per_door``: both
raise their soft RLIMIT_NOFILE to the hard limit. Every socket is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import pathlib
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx

from bench.common import LOOPBACK, MIB, percentile
from bench.procs import REPO_DIR, free_port, raise_nofile, rss_kib

__all__ = ["main"]


# ── the daemon ─────────────────────────────────────────────────────────────────
class Daemon:
    def __init__(self, extra: list[str]) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="bench-rest-hygiene-"))
        self.port = free_port()
        self.log = (self.dir / "daemon.log").open("wb")
        argv = [
            sys.executable,
            "-m",
            "sockbroker",
            "serve",
            "--grpc-address=127.0.0.1:0",
            f"--rest-address={LOOPBACK}:{self.port}",
            f"--token-file={self.dir / 'token'}",
            "--log-level=warning",
            *extra,
        ]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, cwd=REPO_DIR, start_new_session=True)
        self.url = f"http://{LOOPBACK}:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the daemon did not start: {(self.dir / 'daemon.log').read_text()[-2000:]}")
            time.sleep(0.1)
        self.token = (self.dir / "token").read_text().strip()
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def rss_mib(self) -> float:
        return rss_kib(self.proc.pid) / 1024

    def reset_peak(self) -> None:
        pathlib.Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def peak_mib(self) -> float:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", headers=self.auth, timeout=10).text
        values = {}
        for line in text.splitlines():
            if line.startswith("sockbroker_door_") and 'door="rest"' in line and "_created" not in line:
                name, value = line.rsplit(" ", 1)
                values[name.replace('door="rest",', "").replace('{door="rest"}', "")] = float(value)
        return values

    def log_errors(self) -> list[str]:
        text = (self.dir / "daemon.log").read_text(errors="replace")
        return [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line or "ERROR:" in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def daemon(extra: list[str]) -> Iterator[Daemon]:
    d = Daemon(extra)
    try:
        yield d
    finally:
        d.stop()


# ── the attacker (a process of its own: ``--attacker``) ────────────────────────────
def attacker(port: int, idle: int, slowloris: int, seconds: float, rate: int) -> dict[str, Any]:  # noqa: PLR0915
    """Hold ``idle`` silent and ``slowloris`` dribbling connections for ``seconds``, reopening
    each one the daemon closes (at most ``rate`` new connections a second)."""
    raise_nofile(idle + slowloris + 1000)
    selector = selectors.DefaultSelector()
    born: dict[socket.socket, tuple[str, float]] = {}
    lifetimes: dict[str, list[float]] = {"idle": [], "slowloris": []}
    opened = 0
    failed: Counter[str] = Counter()
    wanted = {"idle": idle, "slowloris": slowloris}
    held = Counter[str]()
    request_line = f"POST /v1/sessions HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n".encode()
    dribble = b"X-Slowloris: " + b"a" * 1000
    end = time.monotonic() + seconds
    next_dribble = time.monotonic() + 1
    position = 0
    while time.monotonic() < end:
        budget = rate // 20
        for kind in ("idle", "slowloris"):
            while held[kind] < wanted[kind] and budget > 0:
                budget -= 1
                sock = socket.socket()
                sock.setblocking(False)
                err = sock.connect_ex((LOOPBACK, port))
                if err not in (0, 115):  # EINPROGRESS
                    failed[os.strerror(err)] += 1
                    sock.close()
                    continue
                if kind == "slowloris":
                    with contextlib.suppress(OSError):
                        sock.send(request_line)
                born[sock] = (kind, time.monotonic())
                held[kind] += 1
                opened += 1
                selector.register(sock, selectors.EVENT_READ)
        for key, _ in selector.select(0.05):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            sock = ready
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                continue  # a response (e.g. 408/400): wait for the close
            kind, start = born.pop(sock)
            lifetimes[kind].append(time.monotonic() - start)
            held[kind] -= 1
            selector.unregister(sock)
            sock.close()
        if time.monotonic() >= next_dribble:  # one header byte a second on every slowloris connection
            next_dribble += 1
            for sock, (kind, _) in list(born.items()):
                if kind == "slowloris":
                    with contextlib.suppress(OSError):
                        sock.send(dribble[position % len(dribble) : position % len(dribble) + 1])
            position += 1
    for sock in list(born):
        sock.close()
    return {
        "opened": opened,
        "connect_failures": dict(failed),
        "closed_by_daemon": {kind: len(times) for kind, times in lifetimes.items()},
        "lifetime_p50_s": {kind: round(statistics.median(t), 3) if t else None for kind, t in lifetimes.items()},
        "lifetime_max_s": {kind: round(max(t), 3) if t else None for kind, t in lifetimes.items()},
    }


async def _fresh_call(d: Daemon, path: str) -> bool:
    """One call on a connection of its own (``Connection: close``), on a bare socket."""
    reader, writer = await asyncio.open_connection(LOOPBACK, d.port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{d.port}\r\nAuthorization: Bearer {d.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
        )
        reply = await reader.read()
        return reply.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def good_client(d: Daemon, calls: int, pause: float) -> dict[str, float]:
    """p50/p99 (ms) of ``Sessions.KeepAlive`` on one kept-alive connection and on fresh ones."""
    kept: list[float] = []
    fresh: list[float] = []
    failures = 0
    async with httpx.AsyncClient(base_url=d.url, headers=d.auth, timeout=10) as http:
        session = (await http.post("/v1/sessions", json={"lease_seconds": 600})).json()["session"]
        path = f"/v1/sessions/{session}/keepalive"
        for _ in range(calls):
            started = time.perf_counter()
            try:
                ok = (await http.post(path, json={})).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                kept.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1
            started = time.perf_counter()
            try:
                ok = await asyncio.wait_for(_fresh_call(d, path), 10)
            except (OSError, TimeoutError):
                ok = False
            if ok:
                fresh.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1
            await asyncio.sleep(pause)
        await http.delete(f"/v1/sessions/{session}")
    return {
        "kept_p50_ms": round(statistics.median(kept), 2) if kept else float("nan"),
        "kept_p99_ms": round(percentile(kept, 0.99), 2) if kept else float("nan"),
        "fresh_p50_ms": round(statistics.median(fresh), 2) if fresh else float("nan"),
        "fresh_p99_ms": round(percentile(fresh, 0.99), 2) if fresh else float("nan"),
        "failures": failures,
    }


class RssSampler:
    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.peak = d.rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, self.d.rss_mib())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def connections(args: argparse.Namespace) -> dict[str, Any]:
    with daemon(args.daemon_arg) as d:
        quiet = asyncio.run(good_client(d, args.calls, 0.01))
        baseline = d.rss_mib()
        sampler = RssSampler(d)
        attack = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.rest_hygiene",
                "--attacker",
                str(d.port),
                str(args.idle),
                str(args.slowloris),
                str(args.attack_seconds),
                str(args.rate),
            ],
            stdout=subprocess.PIPE,
            cwd=REPO_DIR,
            start_new_session=True,
        )
        time.sleep(min(args.attack_seconds / 3, (args.idle + args.slowloris) / args.rate + 2))  # the attack builds up
        during_metrics = d.metrics()
        loaded = asyncio.run(good_client(d, args.calls, 0.01))
        out, _ = attack.communicate(timeout=args.attack_seconds + 120)
        peak = sampler.stop()
        time.sleep(1)
        return {
            "idle": args.idle,
            "slowloris": args.slowloris,
            "good_client_quiet": quiet,
            "good_client_under_attack": loaded,
            "fresh_p50_ratio": round(loaded["fresh_p50_ms"] / quiet["fresh_p50_ms"], 2),
            "kept_p50_ratio": round(loaded["kept_p50_ms"] / quiet["kept_p50_ms"], 2),
            "attacker": json.loads(out),
            "daemon_metrics_during": during_metrics,
            "daemon_metrics_after": d.metrics(),
            "rss_baseline_mib": round(baseline, 1),
            "rss_peak_mib": round(peak, 1),
            "rss_growth_mib": round(peak - baseline, 1),
            "daemon_log_errors": d.log_errors()[:5],
        }


# ── bodies in flight ───────────────────────────────────────────────────────────────
class Sink:
    """A TCP server that reads and discards everything (the peer of the big writes)."""

    def __init__(self) -> None:
        self.server = socket.create_server((LOOPBACK, 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        with conn:
            while conn.recv(1 << 20):
                pass


async def _big_writes(d: Daemon, writers: int, size: int, rounds: int, encoding: str) -> Counter[str]:
    sink = Sink()
    outcomes: Counter[str] = Counter()
    data = os.urandom(size)
    async with httpx.AsyncClient(base_url=d.url, headers=d.auth, timeout=300) as http:
        session = (await http.post("/v1/sessions", json={"lease_seconds": 600})).json()["session"]
        headers = {**d.auth, "Sockbroker-Session": session}
        outs = []
        for _ in range(writers):
            pair = await http.post(
                "/v1/tcp/connections", json={"hostname": LOOPBACK, "port": sink.port}, headers=headers
            )
            outs.append(pair.json()["out"])

        async def write(out: str) -> None:
            if encoding == "raw":
                content: bytes = data
                media = "application/octet-stream"
            else:
                content = json.dumps({"data": base64.b64encode(data).decode(), "flush": True}).encode()
                media = "application/json"
            try:
                reply = await http.post(
                    f"/v1/tcp/ports/{out}/write",
                    params={"flush": "true"} if encoding == "raw" else None,
                    content=content,
                    headers={**headers, "Content-Type": media},
                )
                outcomes[str(reply.status_code)] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1

        for _ in range(rounds):
            await asyncio.gather(*(write(out) for out in outs))
        await http.delete(f"/v1/sessions/{session}", headers=headers)
    sink.server.close()
    return outcomes


def bodies(args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    with daemon(args.daemon_arg) as d:
        asyncio.run(_big_writes(d, 1, 1 << 16, 1, "raw"))  # warm up
        size = int(args.body_mib * MIB)
        for encoding in ("raw", "json"):
            time.sleep(0.5)
            baseline = d.rss_mib()
            d.reset_peak()
            started = time.monotonic()
            outcomes = asyncio.run(_big_writes(d, args.writers, size, args.rounds, encoding))
            rows[encoding] = {
                "writers": args.writers,
                "body_mib": args.body_mib,
                "outcomes": dict(outcomes),
                "seconds": round(time.monotonic() - started, 2),
                "rss_baseline_mib": round(baseline, 1),
                "rss_peak_mib": round(d.peak_mib(), 1),
                "rss_growth_mib": round(d.peak_mib() - baseline, 1),
            }
        rows["daemon_log_errors"] = d.log_errors()[:5]  # type: ignore[assignment]
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--attacker":
        port, idle, slow, seconds, rate = argv[1:6]
        print(json.dumps(attacker(int(port), int(idle), int(slow), float(seconds), int(rate))))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.rest_hygiene", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("connections", "bodies"), action="append")
    parser.add_argument("--idle", type=int, default=10_000, help="silent connections held (default 10,000)")
    parser.add_argument("--slowloris", type=int, default=2_000, help="dribbling connections held (default 2,000)")
    parser.add_argument("--attack-seconds", type=float, default=40.0, help="how long the attack lasts (default 40)")
    parser.add_argument("--rate", type=int, default=4_000, help="new attacker connections a second at most")
    parser.add_argument("--calls", type=int, default=200, help="good-client calls per phase (default 200)")
    parser.add_argument("--writers", type=int, default=8, help="concurrent big writes (default 8)")
    parser.add_argument("--body-mib", type=float, default=4.0, help="size of each write (default 4 MiB: the limit)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent writes (default 3)")
    parser.add_argument("--daemon-arg", action="append", default=[], help="one more daemon flag (repeatable)")
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = parser.parse_args(argv)
    raise_nofile(args.idle + args.slowloris + 1000)
    results: dict[str, Any] = {}
    for name in args.only or ("connections", "bodies"):
        results[name] = connections(args) if name == "connections" else bodies(args)
        print(json.dumps({name: results[name]}, indent=2), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
