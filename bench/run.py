"""Run the benchmark: every row of DESIGN §7 against its baseline, in paired rounds, in one run.

    PYTHONPATH=daemon:proto/python python -m bench.run [--quick] [--rounds N] [--only GROUP ...]
                                                       [--abuse-json FILE] [--daemon-arg=ARG ...]

Groups (``--only``): p1 (fd hand-off, relay channel), streams (P2, P3), unary (P4), udp (P5),
connections (P6), reclaim (P7), proxy (§11: the proxy door's CONNECT against dante, socat and
microsocks). Each group starts its processes and one daemon once, warms every probe up, then
measures every probe once per round, baseline and broker side by side, the order reversed every
other round. P8 comes from a ``python -m bench.abuse --json FILE`` run
(``--abuse-json FILE``). The table and ``bench/results.json`` (every round) follow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import uvloop

from bench import baselines
from bench.common import FULL, QUICK, UDP_PACED_RATE, Figure, Probe, Sample, Sizes
from bench.procs import BENCH_DIR, Stage, raise_nofile

NOFILE_WANTED = 65_536
GROUP_CAP = {"full": 900.0, "quick": 90.0}
ROUNDS = 5
WARMUP_GRACE = 60.0  # a warm-up also starts the group's processes and daemon
ABUSE_KEY = "broker.abuse_rss_growth"


# ───────────────────────────── groups ─────────────────────────────


def p1(stage: Stage) -> list[Probe]:
    from bench import broker  # needs sockbroker_wire importable: PYTHONPATH=daemon:proto/python

    return [baselines.direct(stage), broker.handoff_probe(stage), baselines.socat(stage), broker.relay_probe(stage)]


def streams(stage: Stage) -> list[Probe]:
    from bench import broker

    bare_64k, bare_1m = baselines.grpc_streams(stage)
    broker_64k, broker_1m = broker.ports_streams(stage)
    return [
        bare_64k, broker_64k, bare_1m, broker_1m,
        baselines.websockify(stage), baselines.fastapi_ws(stage), broker.rest_ws(stage),
    ]  # fmt: skip


def unary(stage: Stage) -> list[Probe]:
    from bench import broker

    return [baselines.grpc_unary(stage), broker.unary(stage)]


def udp(stage: Stage) -> list[Probe]:
    from bench import broker

    return [
        baselines.plain_udp_max(stage), broker.udp_max(stage),
        baselines.plain_udp_paced(stage), broker.udp_paced(stage),
    ]  # fmt: skip


def connections(stage: Stage) -> list[Probe]:
    from bench import broker

    return [broker.connections(stage)]


def reclaim(stage: Stage) -> list[Probe]:
    from bench import broker

    return [baselines.direct_close(stage), broker.reclaim(stage)]


def proxy(stage: Stage) -> list[Probe]:
    from bench import proxy

    return proxy.probes(stage)


GROUPS: dict[str, Callable[[Stage], list[Probe]]] = {
    "p1": p1,
    "streams": streams,
    "unary": unary,
    "udp": udp,
    "connections": connections,
    "reclaim": reclaim,
    "proxy": proxy,
}


# ───────────────────────────── rounds ─────────────────────────────


@dataclass
class Series:
    """One figure's samples, by round."""

    figure: Figure
    samples: dict[int, Sample] = field(default_factory=dict)

    def values(self) -> list[float]:
        return [sample.value for sample in self.samples.values()]

    def cpu(self) -> float | None:
        cpus = [s.cpu_per_gib for s in self.samples.values() if s.cpu_per_gib is not None]
        return statistics.median(cpus) if cpus else None

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.figure.unit,
            "shape": self.figure.shape,
            "rounds": [
                {"round": r, "value": s.value, "cpu_s_per_gib": s.cpu_per_gib, "extra": s.extra}
                for r, s in sorted(self.samples.items())
            ],
        }


@dataclass
class Run:
    """What a run produced: every figure's series, errors by figure, and for each group the 1-minute
    load at its start and the seconds it took."""

    series: dict[str, Series] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def fail(self, probe: Probe, when: str, error: BaseException) -> None:
        text = f"{when}: {type(error).__name__}: {error or 'a wall-clock cap was reached'}"
        print(f"  {probe.name} failed ({when}):\n{traceback.format_exc(limit=4)}", file=sys.stderr)
        for figure in probe.figures:
            self.errors.setdefault(figure.key, text)


async def measure(probe: Probe, round_index: int | None, run: Run, cap: float) -> bool:
    """One call of a probe: its warm-up (``round_index`` None) or a round; False if it failed
    (recorded in ``run``)."""
    try:
        async with asyncio.timeout(cap):
            if round_index is None:
                if probe.warmup is not None:
                    await probe.warmup()
            else:
                for key, sample in (await probe.run()).items():
                    run.series[key].samples[round_index] = sample
    except Exception as error:  # one probe failing must not stop the others
        run.fail(probe, "warm-up" if round_index is None else f"round {round_index}", error)
        return False
    return True


async def run_group(name: str, stage: Stage, rounds: int, cap: float, run: Run) -> None:
    """Warm every probe up, then ``rounds`` rounds, each probe once, the order reversed every
    other round (so each pair's baseline and broker alternate going first)."""
    probes = GROUPS[name](stage)
    for probe in probes:
        for figure in probe.figures:
            run.series[figure.key] = Series(figure)
    try:
        async with asyncio.timeout(cap):
            live = [probe for probe in probes if await measure(probe, None, run, probe.cap + WARMUP_GRACE)]
            for index in range(rounds):
                for probe in live if index % 2 == 0 else live[::-1]:
                    if (probe.every_round or index == 0) and not any(f.key in run.errors for f in probe.figures):
                        await measure(probe, index, run, probe.cap)
    except TimeoutError:
        for probe in probes:
            for figure in probe.figures:
                run.errors.setdefault(figure.key, f"group {name}: its {cap:.0f} s cap was reached")


async def run_groups(
    names: list[str],
    sizes: Sizes,
    rounds: int,
    cap: float,
    command: list[str],
    args: list[str],
    profiles: Path | None = None,
) -> Run:
    run = Run()
    for name in names:
        print(f"· {name} …", file=sys.stderr, flush=True)
        run.load[name] = os.getloadavg()[0]
        begin = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:  # every process of the group stops here
            profile = None if profiles is None else profiles / f"{name}.txt"
            await run_group(name, Stage(sizes, stack, command, args, profile), rounds, cap, run)
        run.seconds[name] = round(time.monotonic() - begin, 1)
        print(f"  {name}: {run.seconds[name]:.0f} s", file=sys.stderr, flush=True)
    return run


# ───────────────────────────── P8 from bench.abuse ─────────────────────────────


def read_abuse(path: Path | None, run: Run) -> None:
    """P8's figure: the worst RSS growth (peak − base, MiB) over the rows of a bench.abuse JSON."""
    what = "worst RSS growth (peak − base) over the scenarios of python -m bench.abuse --json"
    run.series[ABUSE_KEY] = series = Series(Figure(ABUSE_KEY, "MiB", what))
    if path is None:
        run.errors[ABUSE_KEY] = "not run here: pass --abuse-json FILE, written by python -m bench.abuse --json FILE"
        return
    try:
        document = json.loads(path.read_text())
        rows = [row for row in document["rows"] if row.get("rss_peak")]
        worst = max(rows, key=lambda row: float(row["growth"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        run.errors[ABUSE_KEY] = f"{path}: no bench.abuse rows read ({type(error).__name__}: {error})"
        return
    extra = {"file": str(path), "scenario": worst["scenario"], "scenarios": len(rows), "sizes": document.get("sizes")}
    series.samples[0] = Sample(float(worst["growth"]), extra=extra)


# ───────────────────────────── the table ─────────────────────────────


@dataclass(frozen=True)
class Target:
    """A goal of DESIGN.md §7: on the median of the per-round ratios broker/baseline, or on the
    broker's median alone."""

    on_ratio: bool
    at_least: bool
    bound: float
    words: str = ""

    def text(self) -> str:
        sign = "≥" if self.at_least else "≤"
        return self.words or f"{sign} {self.bound:g}{'x' if self.on_ratio else ''}"

    def met(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


def ratio_at_least(bound: float) -> Target:
    return Target(on_ratio=True, at_least=True, bound=bound)


#: A row's note, from the broker figure's first sample (its ``extra``).
#: What a row says under the table, from the first round's extras of its broker and baseline sides.
Note = Callable[[dict[str, Any], dict[str, Any] | None], str | None]


@dataclass(frozen=True)
class Row:
    number: str
    label: str
    baseline: str | None
    broker: str | None
    #: None: the row is shown beside the others, with no goal of its own.
    target: Target | None
    note: Note | None = None


def cores_note(extra: dict[str, Any]) -> str:
    return (
        f"the machine's cores: {extra['machine_cores_busy']:.2f} busy, "
        f"{extra['machine_cores_stolen']:.2f} stolen, of {os.cpu_count()}"
    )


def paced_note(extra: dict[str, Any], _baseline: dict[str, Any] | None) -> str:
    pace = extra["sent"] / extra["seconds"]
    behind = ": the blaster did not get the CPU to keep pace" if pace < 0.95 * UDP_PACED_RATE else ""
    return (
        f"first round: sent {extra['sent']:,} in {extra['seconds']:g} s ({pace:,.0f}/s{behind}), "
        f"received {extra['received']:,}, lost {extra['lost']:,}, "
        f"queue_dropped {extra['queue_dropped']}, kernel_dropped {extra['kernel_dropped']}; "
        f"while the blaster sent, {cores_note(extra)}"
    )


def max_rate_note(extra: dict[str, Any], _baseline: dict[str, Any] | None) -> str:
    return f"first round: sent {extra['sent']:,}, relayed {extra['received']:,}, " + (
        f"queue_dropped {extra['queue_dropped']}, kernel_dropped {extra['kernel_dropped']}; "
        f"while the blaster sent, {cores_note(extra)}"
    )


def unary_note(extra: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    def costs(side: dict[str, Any]) -> str:
        return (
            f"{side['server_cpu_us_per_call']:.0f} µs CPU a call in the server, "
            f"{side['client_cpu_us_per_call']:.0f} µs in the client; {cores_note(side)}"
        )

    said = f"first round, 64 callers: broker {costs(extra)}"
    return said + (f"; baseline {costs(baseline)}" if baseline else "")


def connections_note(extra: dict[str, Any], _baseline: dict[str, Any] | None) -> str:
    held, limit = extra["connections"], extra["nofile_hard_limit"]
    if held >= extra["wanted"]:
        return f"{held:,} connections held"
    return (
        f"{held:,} of {extra['wanted']:,} connections, then the daemon refused ({extra['refused']}): the hard "
        f"RLIMIT_NOFILE here is {limit:,} and may not be raised (no CAP_SYS_RESOURCE); a connection takes one "
        "daemon descriptor and the daemon keeps some for its doors. The verdict judges the RSS each only"
    )


def reclaim_note(extra: dict[str, Any], _baseline: dict[str, Any] | None) -> str | None:
    if extra["sockets"] == 10_000:
        return None
    return f"{extra['sockets']:,} sockets (not 10,000: --quick)"


def abuse_note(extra: dict[str, Any], _baseline: dict[str, Any] | None) -> str:
    return f"worst of {extra['scenarios']} scenarios: {extra['scenario']} ({extra['file']})"


ROWS = [
    Row("P1", "fd hand-off vs direct loopback transfer (MB/s)", "baseline.direct", "broker.handoff",
        ratio_at_least(0.95)),
    Row("P1", "raw relay channel vs socat -b 262144 (MB/s)", "baseline.socat", "broker.relay", ratio_at_least(1.0)),
    Row("P2", "Ports.Stream 64 KiB vs bare grpc.aio bidi (MB/s)", "baseline.grpc_64k", "broker.grpc_64k",
        ratio_at_least(0.7)),
    Row("P2", "Ports.Stream 1 MiB vs bare grpc.aio bidi (MB/s)", "baseline.grpc_1m", "broker.grpc_1m",
        ratio_at_least(0.7)),
    Row("P2", "Ports.Stream 64 KiB vs websockify (MB/s)", "baseline.websockify", "broker.grpc_64k",
        ratio_at_least(2.0)),
    Row("P2", "Ports.Stream 1 MiB vs websockify (MB/s)", "baseline.websockify", "broker.grpc_1m", ratio_at_least(2.0)),
    Row("P3", "WebSocket stream vs bare FastAPI WebSocket (MB/s)", "baseline.ws", "broker.ws", ratio_at_least(0.6)),
    Row("P3", "WebSocket stream vs websockify (MB/s)", "baseline.websockify", "broker.ws", ratio_at_least(3.0)),
    Row("P4", "unary p50, sequential calls (ms)", "baseline.unary_p50", "broker.unary_p50",
        Target(on_ratio=True, at_least=False, bound=1.2)),
    Row("P4", "unary calls/s, 64 callers", "baseline.unary_64", "broker.unary_64", ratio_at_least(0.8),
        unary_note),
    Row("P5", "UDP 1,200 B relayed to one client, full speed (datagrams/s)", "baseline.udp_max", "broker.udp_max",
        Target(on_ratio=False, at_least=True, bound=150_000, words="≥ 150,000/s"), max_rate_note),
    Row("P5", "UDP 1,200 B paced at 100,000/s: datagrams lost", "baseline.udp_paced_lost", "broker.udp_paced_lost",
        Target(on_ratio=False, at_least=False, bound=0, words="0 lost"), paced_note),
    Row("P6", "idle TCP connections: daemon RSS each (KiB)", None, "broker.rss_per_connection",
        Target(on_ratio=False, at_least=False, bound=4, words="≤ 4 KiB"), connections_note),
    Row("P7", "dropped session with 10,000 sockets: fds back (s)", "baseline.reclaim", "broker.reclaim",
        Target(on_ratio=False, at_least=False, bound=0.25, words="≤ 0.25 s"), reclaim_note),
    Row("P8", "memory under abuse: RSS growth (MiB)", None, ABUSE_KEY,
        Target(on_ratio=False, at_least=False, bound=64, words="≤ 64 MiB"), abuse_note),
    Row("§11", "proxy door SOCKS5 CONNECT vs dante (MB/s)", "baseline.dante", "broker.proxy", ratio_at_least(1.0)),
    Row("§11", "proxy door SOCKS5 CONNECT vs socat -b 262144 (MB/s)", "baseline.proxy_socat", "broker.proxy",
        ratio_at_least(1.0)),
    Row("§11", "proxy door SOCKS5 CONNECT vs microsocks (MB/s)", "baseline.microsocks", "broker.proxy", None),
]  # fmt: skip


def side_json(key: str | None, run: Run) -> dict[str, Any] | None:
    series = run.series.get(key or "")
    if key is None or series is None or not series.samples:
        return None
    values = series.values()
    return {
        "key": key,
        "unit": series.figure.unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": len(values),
        "cpu_s_per_gib": series.cpu(),
    }


def per_round_ratios(row: Row, run: Run) -> list[float]:
    baseline, broker = run.series.get(row.baseline or ""), run.series.get(row.broker or "")
    if baseline is None or broker is None:
        return []
    common = sorted(set(baseline.samples) & set(broker.samples))
    return [broker.samples[r].value / baseline.samples[r].value for r in common if baseline.samples[r].value]


def _first_extra(series: Series | None) -> dict[str, Any] | None:
    return series.samples[min(series.samples)].extra if series and series.samples else None


def row_json(row: Row, run: Run) -> dict[str, Any]:
    baseline, broker = side_json(row.baseline, run), side_json(row.broker, run)
    ratios = per_round_ratios(row, run)
    ratio = (
        {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios)}
        if ratios
        else None
    )
    target, judged = row.target, None
    if target is not None:
        judged = (ratio or {}).get("median") if target.on_ratio else (broker or {}).get("median")
    sides = [(key, side) for key, side in ((row.baseline, baseline), (row.broker, broker)) if key is not None]
    missing = []  # why a measured side has no figure, or fewer rounds than the others
    for key, side in sides:
        error = run.errors.get(key)
        if key in run.series and side is None:
            missing.append(f"{key}: {error or 'no sample'}")
        elif side is not None and error:
            missing.append(f"{key}: {side['rounds']} rounds, then {error}")
    if target is not None and judged is not None:
        verdict = "pass" if target.met(judged) else "FAIL"
    elif target is None and ratio is not None:
        verdict = "shown"
    else:
        verdict = "missing" if any(key in run.series for key, _side in sides) else "not run"
    first, first_baseline = (_first_extra(run.series.get(key or "")) for key in (row.broker, row.baseline))
    return {
        "number": row.number,
        "measurement": row.label,
        "baseline": baseline,
        "broker": broker,
        "ratio": ratio,
        "target": "—" if target is None else target.text(),
        "judged": judged,
        "verdict": verdict,
        "missing": missing,
        "note": row.note(first, first_baseline) if row.note and first else None,
    }


def cell(value: float | None) -> str:
    if value is None:
        return "—"
    return format(
        value, ",.0f" if abs(value) >= 1000 else ".1f" if abs(value) >= 10 else ".2f" if abs(value) >= 1 else ".3f"
    )


def side_cell(side: dict[str, Any] | None) -> str:
    return "—" if side is None else cell(side["median"])


def ratio_cell(ratio: dict[str, Any] | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio['median']:.2f}x [{ratio['min']:.2f}–{ratio['max']:.2f}]"


def cpu_cell(row: dict[str, Any]) -> str:
    cpus = [None if side is None else side["cpu_s_per_gib"] for side in (row["baseline"], row["broker"])]
    if cpus == [None, None]:
        return "—"
    return " / ".join("—" if cpu is None else f"{cpu:.2f}" for cpu in cpus)


COLUMNS = ("#", "measurement", "baseline", "broker", "ratio [range]", "CPU s/GiB b / k", "target", "verdict")


def table_cells(row: dict[str, Any]) -> list[str]:
    return [
        row["number"],
        row["measurement"],
        side_cell(row["baseline"]),
        side_cell(row["broker"]),
        ratio_cell(row["ratio"]),
        cpu_cell(row),
        row["target"],
        row["verdict"],
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    widths = [3, 60, 10, 10, 20, 15, 12, 7]
    aligns = "<<>>><<<"
    header = "  ".join(f"{name:{align}{width}}" for name, align, width in zip(COLUMNS, aligns, widths, strict=True))
    print(header)
    print("─" * len(header))
    for row in rows:
        cells = table_cells(row)
        print("  ".join(f"{text:{a}{w}}" for text, a, w in zip(cells, aligns, widths, strict=True)))
    for row in rows:
        for text in notes(row):
            print(f"  {row['number']} {row['measurement']}: {text}")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(text.replace("|", "\\|") for text in table_cells(row)) + " |")
    lines.append("")
    for row in rows:
        lines += [f"- {row['number']} {row['measurement']}: {text}" for text in notes(row)]
    return "\n".join(lines) + "\n"


def notes(row: dict[str, Any]) -> list[str]:
    """What is said under the table for a row: its note, then why a side is missing."""
    missing: list[str] = row["missing"]
    return ([row["note"]] if row["note"] else []) + missing


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


def report(args: argparse.Namespace, mode: str, run: Run) -> None:
    rows = [row_json(row, run) for row in ROWS]
    print_table(rows)
    document = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "rounds": args.rounds,
        "machine": machine(),
        "rows": rows,
        "figures": {key: series.to_json() for key, series in run.series.items()},
        "errors": run.errors,
        "load_1min_at_group_start": run.load,
        "group_seconds": run.seconds,
    }
    args.output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwritten: {args.output}")
    if args.markdown:
        args.markdown.write_text(markdown_table(rows))
        print(f"written: {args.markdown}")


DEFAULT_DAEMON = shlex.join([sys.executable, "-m", "sockbroker", "serve"])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, still paired rounds; under two minutes")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="paired rounds per group (default: %(default)s)")
    parser.add_argument("--only", action="append", default=[], choices=list(GROUPS), help="run only this group")
    parser.add_argument("--abuse-json", type=Path, metavar="FILE", help="P8 from a python -m bench.abuse --json FILE")
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
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy each group's daemon into DIR/GROUP.txt (python -m bench.profile reads them; costs CPU)",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json", help="where to write the JSON")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as Markdown")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    mode = "quick" if args.quick else "full"
    raise_nofile(NOFILE_WANTED)  # every helper and daemon inherits it
    names = [name for name in GROUPS if not args.only or name in args.only]
    sizes = QUICK if args.quick else FULL
    command = shlex.split(args.daemon_command)
    run = uvloop.run(run_groups(names, sizes, args.rounds, GROUP_CAP[mode], command, args.daemon_arg, args.profile))
    read_abuse(args.abuse_json, run)
    report(args, mode, run)


if __name__ == "__main__":
    main(sys.argv[1:])
