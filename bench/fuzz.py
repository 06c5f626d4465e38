"""Fuzzing at full size: every REST operation (schemathesis) and every gRPC RPC (hypothesis)
against a daemon process, with the figures DESIGN §10 and issue 8 ask for.

The fuzzing itself is ``tests/reliability/fuzzing.py``, imported, not copied: the bounded tests
(``tests/reliability/test_fuzz_rest.py``, ``test_fuzz_grpc.py``) run it against the suite's
in-process daemon with a few examples per operation; this runs it against
``python -m sockbroker serve`` (loopback ports picked free beforehand, a fresh token file) with
many, and a fresh seed if asked. Every address a request carries stays on this machine (see that
module).

    python -m bench.fuzz                            # 200 examples per operation and mode, both doors
    python -m bench.fuzz -n 30 --door grpc --only Udp.SendTo --seed 3

Prints one row per door (requests tried, 5xx / INTERNAL / UNKNOWN, findings), then the daemon's
figures (crashes, ERROR lines and tracebacks in its log, descriptors and RSS before and after),
then every finding with its request. Exits 1 if anything was found.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from sockbroker_wire.routes import routes

from bench.common import LOOPBACK
from bench.procs import REPO_DIR, fd_count, free_port, rss_kib

if TYPE_CHECKING:
    from reliability.fuzzing import Tally

__all__ = ["main"]

START_WITHIN = 30.0


def _fuzzing() -> Any:
    """``tests/reliability/fuzzing.py``: the fuzzers the test suite runs, shared, not written twice."""
    tests = str(REPO_DIR / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("reliability.fuzzing")


@dataclass
class DaemonProcess:
    """``python -m sockbroker serve`` on two loopback ports picked free, in a session of its own."""

    flags: list[str]
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    grpc_port: int = 0
    rest_port: int = 0
    token: str = ""
    logs: list[Path] = field(default_factory=list)

    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rest_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.grpc_port, self.rest_port = free_port(), free_port()
        token_file = self.directory / "token"
        log = self.directory / f"daemon-{len(self.logs)}.log"
        self.logs.append(log)
        argv = [sys.executable, "-m", "sockbroker", "serve", "--grpc-address", f"{LOOPBACK}:{self.grpc_port}"]
        argv += ["--rest-address", f"{LOOPBACK}:{self.rest_port}", "--token-file", str(token_file), *self.flags]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_DIR / "daemon"), str(REPO_DIR / "proto" / "python"), *filter(None, [env.get("PYTHONPATH")])]
        )
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=REPO_DIR, start_new_session=True
            )
        end = time.monotonic() + START_WITHIN
        while True:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the daemon (pid {self.pid}) is not serving:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException, OSError):
                if token_file.exists() and requests.get(f"{self.rest_url}/healthz", timeout=1).status_code == 200:
                    self.token = token_file.read_text().strip()
                    return
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
                break

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.logs[-1].read_text(errors="replace").splitlines()[-lines:])

    def error_lines(self) -> list[str]:
        """Lines of every log this run's daemons wrote that are errors or start a traceback."""
        found = []
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                    found.append(line)
        return found


@contextlib.contextmanager
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, for the gRPC fuzzer's grpc.aio calls."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class Run:
    tallies: list[Tally] = field(default_factory=list)
    crashes: int = 0
    fds: tuple[int, int] = (0, 0)
    rss_kib: tuple[int, int] = (0, 0)
    error_lines: list[str] = field(default_factory=list)
    seconds: float = 0.0


def fuzz(args: argparse.Namespace) -> Run:
    fz = _fuzzing()
    run = Run()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sockbroker-fuzz-") as tmp, event_loop() as loop:
        daemon = DaemonProcess(list(args.daemon_arg), Path(tmp))
        daemon.start()
        sink = fz.Sink()
        time.sleep(0.5)
        before = (fd_count(daemon.pid), rss_kib(daemon.pid))
        try:
            rest, grpc_fuzzer = (
                fz.RestFuzzer(daemon.rest_url, sink),
                fz.GrpcFuzzer(f"{LOOPBACK}:{daemon.grpc_port}", loop),
            )
            work = [("rest", name) for name in sorted(rest.operations)] if "rest" in args.door else []
            work += [("ws", path) for path in sorted(fz.WEBSOCKETS)] if "rest" in args.door else []
            work += [("grpc", r.name) for r in routes()] if "grpc" in args.door else []
            work = [(door, name) for door, name in work if not args.only or name in args.only]
            # (WebSocket rows are named by path: --only /v1/udp/sockets/{udp}/stream)
            for door, name in work:
                pool = fz.Pool(daemon.rest_url, daemon.token, sink)
                try:
                    if door == "ws":  # the streaming routes' WebSockets, twice the examples (one mode)
                        tally = fz.WebSocketFuzzer(daemon.rest_url).fuzz(name, pool, 2 * args.n, seed=args.seed)
                    else:
                        fuzzer = rest if door == "rest" else grpc_fuzzer
                        tally = fuzzer.fuzz(name, pool, args.n, seed=args.seed)
                finally:
                    with contextlib.suppress(requests.RequestException):
                        pool.close()
                run.tallies.append(tally)
                print(_row(tally), flush=True)
                if not daemon.alive():
                    run.crashes += 1
                    print(f"  the daemon died (exit {daemon.proc.returncode if daemon.proc else '?'}); restarting")
                    print(daemon.log_tail())
                    grpc_fuzzer.close()
                    daemon.start()
                    before = (fd_count(daemon.pid), rss_kib(daemon.pid))
                    rest = fz.RestFuzzer(daemon.rest_url, sink)
                    grpc_fuzzer = fz.GrpcFuzzer(f"{LOOPBACK}:{daemon.grpc_port}", loop)
            rest.close()
            grpc_fuzzer.close()
            time.sleep(1.0)  # connections the fuzzers closed are gone from the daemon by now
            run.fds = (before[0], fd_count(daemon.pid))
            run.rss_kib = (before[1], rss_kib(daemon.pid))
        finally:
            daemon.stop()
            sink.close()
            run.error_lines = daemon.error_lines()
    run.seconds = time.monotonic() - started
    return run


def _row(tally: Tally) -> str:
    top = ", ".join(f"{k} {v}" for k, v in tally.outcomes.most_common(4))
    found = len(tally.findings) + tally.dropped
    return (
        f"  {tally.door:<4} {tally.operation:<34} {tally.requests:>6} tried  {tally.server_errors:>3} 5xx/INTERNAL"
        f"  {found:>3} findings  {tally.seconds:6.1f} s  ({top})"
    )


def table(run: Run) -> str:
    lines = [
        "",
        "| door | operations | requests tried | 5xx / INTERNAL / UNKNOWN | findings | gave up (blocking) | s |",
    ]
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for door in ("rest", "ws", "grpc"):
        rows = [t for t in run.tallies if t.door == door]
        if not rows:
            continue
        outcomes: Counter[str] = Counter()
        for t in rows:
            outcomes.update(t.outcomes)
        lines.append(
            f"| {door} | {len(rows)} | {sum(t.requests for t in rows):,} | {sum(t.server_errors for t in rows)} | "
            f"{sum(len(t.findings) + t.dropped for t in rows)} | {sum(t.gave_up for t in rows):,} | "
            f"{sum(t.seconds for t in rows):.0f} |"
        )
    lines += [
        "",
        "| daemon | figure |",
        "| --- | ---: |",
        f"| crashes | {run.crashes} |",
        f"| ERROR lines / tracebacks in its log | {len(run.error_lines)} |",
        f"| open fds before → after | {run.fds[0]} → {run.fds[1]} |",
        f"| RSS before → after | {run.rss_kib[0] / 1024:.0f} → {run.rss_kib[1] / 1024:.0f} MiB |",
        f"| wall time | {run.seconds:.0f} s |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="examples per operation and mode (default 200)")
    parser.add_argument("--door", action="append", choices=["rest", "grpc"], help="repeatable; default both")
    parser.add_argument("--only", action="append", help="one operation, Service.Method (repeatable)")
    parser.add_argument("--seed", type=int, help="hypothesis seed (default: derandomized, as in the tests)")
    parser.add_argument("--daemon-arg", action="append", default=[], help="one more daemon flag (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.door = args.door or ["rest", "grpc"]
    print(f"fuzzing {' and '.join(args.door)}: {args.n} examples per operation and mode, seed {args.seed}", flush=True)
    run = fuzz(args)
    print(table(run))
    findings = [f for t in run.tallies for f in t.findings]
    for finding in findings:
        print(f"\n{finding}")
    for line in run.error_lines[:40]:
        print(f"log: {line}")
    if args.json:
        figures = {
            "n": args.n,
            "seed": args.seed,
            "rows": [
                {
                    "door": t.door,
                    "operation": t.operation,
                    "requests": t.requests,
                    "server_errors": t.server_errors,
                    "gave_up": t.gave_up,
                    "findings": len(t.findings) + t.dropped,
                    "outcomes": dict(t.outcomes),
                    "seconds": round(t.seconds, 2),
                }
                for t in run.tallies
            ],
            "crashes": run.crashes,
            "error_lines": run.error_lines,
            "fds": run.fds,
            "rss_kib": run.rss_kib,
            "findings": [str(f) for f in findings],
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    bad = findings or any(t.dropped for t in run.tallies) or run.crashes or run.error_lines
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
