"""Run the benchmark: baselines and sockbroker side by side, a table, and ``bench/results.json``.

    PYTHONPATH=daemon:proto/python python -m bench.run [--quick] [--only NAME ...] [--daemon-arg=ARG ...]

Groups (``--only`` takes a group, or ``baseline`` / ``broker`` for a whole side):
baseline.tcp, baseline.socat, baseline.websockify, baseline.grpc, baseline.ws, baseline.udp,
broker.grpc-stream, broker.ws-stream, broker.unary, broker.udp, broker.connections,
broker.reclaim.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import uvloop

from bench.baselines import BASELINES
from bench.common import FULL, QUICK, Measurement, Sizes
from bench.procs import BENCH_DIR, raise_nofile

NOFILE_WANTED = 65_536
GROUP_CAP = {"full": 900.0, "quick": 60.0}
Results = dict[str, Measurement]
#: A group measures with the sizes given; broker groups start the daemon with the command given.
Group = Callable[[Sizes, list[str]], Awaitable[dict[str, Measurement]]]


# ───────────────────────────── the table ─────────────────────────────


@dataclass(frozen=True)
class Target:
    """A goal of DESIGN.md §7: on the ratio broker/baseline, or on the broker figure alone."""

    on_ratio: bool
    at_least: bool
    bound: float

    def text(self) -> str:
        sign = "≥" if self.at_least else "≤"
        return f"{sign} {self.bound:g}{'x' if self.on_ratio else ''}"

    def met(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


@dataclass(frozen=True)
class Row:
    label: str
    baseline: str | None
    broker: str | None
    target: Target | None = None


def at_least_ratio(bound: float) -> Target:
    return Target(on_ratio=True, at_least=True, bound=bound)


ROWS = [
    Row("TCP, plain loopback socket, 256 KiB (MB/s)", "baseline.tcp", None),
    Row("TCP via socat -b 256 KiB (MB/s)", "baseline.socat", None),
    Row("TCP via websockify, 64 KiB frames (MB/s)", "baseline.websockify", None),
    Row("Ports.Stream 64 KiB vs bare grpc.aio (MB/s)", "baseline.grpc_stream_64k", "broker.grpc_stream_64k",
        at_least_ratio(0.8)),
    Row("Ports.Stream 1 MiB vs bare grpc.aio (MB/s)", "baseline.grpc_stream_1m", "broker.grpc_stream_1m",
        at_least_ratio(0.8)),
    Row("Ports.Stream 64 KiB vs websockify (MB/s)", "baseline.websockify", "broker.grpc_stream_64k",
        at_least_ratio(3.0)),
    Row("Ports.Stream 1 MiB vs websockify (MB/s)", "baseline.websockify", "broker.grpc_stream_1m",
        at_least_ratio(3.0)),
    Row("REST WebSocket 64 KiB vs bare FastAPI WS (MB/s)", "baseline.ws", "broker.ws", at_least_ratio(0.8)),
    Row("REST WebSocket 64 KiB vs websockify (MB/s)", "baseline.websockify", "broker.ws", at_least_ratio(3.0)),
    Row("Unary p50 latency, sequential (ms)", "baseline.grpc_unary_p50", "broker.grpc_unary_p50",
        Target(on_ratio=True, at_least=False, bound=1.3)),
    Row("Unary calls/s, 64 concurrent callers", "baseline.grpc_unary_64", "broker.grpc_unary_64",
        at_least_ratio(0.8)),
    Row("UDP 1,200 B: plain socket receive (datagrams/s)", "baseline.udp", None),
    Row("UDP 1,200 B via Udp.ReceiveStream vs bare gRPC stream (msgs/s)", "baseline.grpc_messages", "broker.udp",
        Target(on_ratio=False, at_least=True, bound=100_000)),
    Row("Daemon RSS per idle TCP connection (KiB)", None, "broker.rss_per_connection",
        Target(on_ratio=False, at_least=False, bound=20)),
    Row("Dropped session, 1,000 sockets: fds reclaimed (s)", None, "broker.reclaim",
        Target(on_ratio=False, at_least=False, bound=1.0)),
]  # fmt: skip


def row_json(row: Row, results: Results) -> dict[str, Any]:
    baseline = results.get(row.baseline or "")
    broker = results.get(row.broker or "")
    ratio = broker.value / baseline.value if broker and baseline and baseline.value else None
    judged = ratio if row.target and row.target.on_ratio else (broker.value if broker else None)
    verdict = None if row.target is None or judged is None else ("pass" if row.target.met(judged) else "FAIL")
    return {
        "measurement": row.label,
        "baseline": baseline.value if baseline else None,
        "broker": broker.value if broker else None,
        "ratio": ratio,
        "target": row.target.text() if row.target else None,
        "verdict": verdict,
    }


def cell(value: float | None) -> str:
    if value is None:
        return "—"
    return format(value, ",.0f" if abs(value) >= 1000 else ".1f" if abs(value) >= 10 else ".3f")


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'measurement':66} {'baseline':>12} {'broker':>12} {'ratio':>7}  {'target':10} verdict"
    print(header)
    print("─" * len(header))
    for row in rows:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        print(
            f"{row['measurement']:66} {cell(row['baseline']):>12} {cell(row['broker']):>12} {ratio:>7}  "
            f"{row['target'] or '—':10} {row['verdict'] or '—'}"
        )


# ───────────────────────────── groups ─────────────────────────────


def baseline_group(measure: Callable[[Sizes], Awaitable[Results]]) -> Group:
    async def run(sizes: Sizes, _daemon_command: list[str]) -> Results:
        return await measure(sizes)

    return run


def broker_group(name: str) -> Group:
    async def run(sizes: Sizes, daemon_command: list[str]) -> Results:
        from bench import broker  # needs sockbroker importable: PYTHONPATH=daemon:proto/python

        with broker.daemon(daemon_command) as started:
            return await broker.BROKER[name](started, sizes)

    return run


#: Run order: each broker group right after the baseline it is compared with, so that a change
#: in the machine's load during the run skews both sides of a ratio alike.
ORDER = [
    "baseline.tcp", "baseline.socat", "baseline.websockify",
    "baseline.grpc", "broker.grpc-stream", "broker.unary",
    "baseline.ws", "broker.ws-stream",
    "baseline.udp", "broker.udp",
    "broker.connections", "broker.reclaim",
]  # fmt: skip


def group(name: str) -> Group:
    side, _, short = name.partition(".")
    return baseline_group(BASELINES[short]) if side == "baseline" else broker_group(short)


GROUPS: dict[str, Group] = {name: group(name) for name in ORDER}


def selected(only: list[str]) -> list[str]:
    if not only:
        return list(GROUPS)
    unknown = [name for name in only if not any(g == name or g.startswith(name + ".") for g in GROUPS)]
    if unknown:
        raise SystemExit(f"unknown group(s) {unknown}; known: {', '.join(GROUPS)}")
    return [g for g in GROUPS if any(g == name or g.startswith(name + ".") for name in only)]


@dataclass
class Run:
    """What a run produced: figures by key, errors by group, the 1-minute load at each group's start."""

    results: Results = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)


async def run_groups(names: list[str], sizes: Sizes, cap: float, daemon_command: list[str]) -> Run:
    run = Run()
    for name in names:
        print(f"· {name} …", file=sys.stderr, flush=True)
        run.load[name] = os.getloadavg()[0]
        try:
            async with asyncio.timeout(cap):
                figures = await GROUPS[name](sizes, daemon_command)
        except Exception as error:  # one group failing must not stop the others
            run.errors[name] = f"{type(error).__name__}: {error or 'a wall-clock cap was reached'}"
            print(f"  {name} failed:\n{traceback.format_exc(limit=3)}", file=sys.stderr)
            continue
        side = name.partition(".")[0]
        run.results.update({f"{side}.{key}": figure for key, figure in figures.items()})
    return run


# ───────────────────────────── report ─────────────────────────────


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    versions: dict[str, str | None] = {}
    for package in ("grpcio", "protobuf", "fastapi", "uvicorn", "websockets", "uvloop", "websockify"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "socat": socat_version(),
        "packages": versions,
    }


def socat_version() -> str | None:
    try:
        out = subprocess.run(["socat", "-V"], capture_output=True, text=True, timeout=5, check=False).stdout
    except OSError:
        return None
    return next((line.split()[2] for line in out.splitlines() if line.startswith("socat version")), None)


def report(mode: str, run: Run, output: Path) -> None:
    rows = [row_json(row, run.results) for row in ROWS]
    print_table(rows)
    for name, error in run.errors.items():
        print(f"! {name}: {error}")
    document = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "machine": machine(),
        "rows": rows,
        "measurements": {key: figure.to_json() for key, figure in run.results.items()},
        "errors": run.errors,
        "load_1min_at_group_start": run.load,
    }
    output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwritten: {output}")


DEFAULT_DAEMON = shlex.join([sys.executable, "-m", "sockbroker", "serve"])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes; the whole run takes under a minute")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this group (repeatable)")
    parser.add_argument(
        "--daemon-command",
        default=DEFAULT_DAEMON,
        metavar="CMD",
        help="how to start the daemon; the address and token-file flags are appended (default: %(default)s)",
    )
    parser.add_argument(
        "--daemon-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for the daemon (repeatable; write --daemon-arg=--flag)",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json", help="where to write the JSON")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    mode = "quick" if args.quick else "full"
    raise_nofile(NOFILE_WANTED)  # every helper and daemon inherits it
    names = selected(args.only)
    command = [*shlex.split(args.daemon_command), *args.daemon_arg]
    run = uvloop.run(run_groups(names, QUICK if args.quick else FULL, GROUP_CAP[mode], command))
    report(mode, run, args.output)


if __name__ == "__main__":
    main(sys.argv[1:])
