"""Racket 8.7 against sockbroker: the same error scenarios, side by side.

DESIGN.md §4: where Racket raises for an operation and the seed's documentation is silent, the
daemon copies Racket's kind, errno and first message line byte for byte; where DESIGN or the
docs decide otherwise, the daemon departs on purpose. ``errors.rkt`` (beside this file) runs
each scenario in Racket; ``scenarios.py`` runs the same scenarios against the daemon. This script
starts a daemon as a subprocess (``python -m sockbroker serve`` on loopback ports), runs every
scenario through the Python client on both doors, and prints one table row per scenario:

    scenario | Racket kind/errno/first line | daemon kind/errno/first line | verdict

Verdicts compare kind, errno and the first message line: ``same``; ``departs on purpose (…)``
when the daemon gives exactly the answer DESIGN/docs decide (``scenarios.DECIDED``); ``differs``
otherwise (with what DESIGN expects, where it decides); ``n/a`` when the daemon has no such
operation. ``doors disagree`` is appended when gRPC and REST answer differently, and ``detail
fields`` when the field names of the lines after the first differ (DESIGN pins only the first
line; the daemon names handles where Racket prints ``#<udp>``).

The same comparison runs in the normal suite, against the recorded Racket answers and through
every door: ``tests/behaviour/test_racket_errors.py``.

Usage (plain script, not a test)::

    .venv/bin/python tests/racket/compare.py                      # runs racket too (3-6 min)
    .venv/bin/python tests/racket/compare.py udp/close/twice      # only the scenarios named
    .venv/bin/python tests/racket/compare.py --racket-json tests/racket/racket-8.7.jsonl  # the recorded run
    racket tests/racket/errors.rkt > r.jsonl                      # how to record one

Loopback only; no name is resolved but "localhost" (answered by /etc/hosts). Every wait is
bounded; the daemon is stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from sockbroker_client import AsyncBroker

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the scenarios are the module racket.scenarios

from racket.scenarios import (  # noqa: E402
    DECIDED,
    NOT_OFFERED,
    POLICY,
    SCENARIOS,
    Outcome,
    load_racket,
    run_scenario,
)

# ═════════════════════════════ the daemon ═════════════════════════════


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def daemon(workdir: pathlib.Path) -> Iterator[tuple[str, str, pathlib.Path]]:
    """``python -m sockbroker serve`` on two loopback ports; stopped by pid afterwards."""
    grpc_port, rest_port = _free_tcp_port(), _free_tcp_port()
    token_file = workdir / "token"
    command = [
        sys.executable,
        "-m",
        "sockbroker",
        "serve",
        "--grpc-address",
        f"127.0.0.1:{grpc_port}",
        "--rest-address",
        f"127.0.0.1:{rest_port}",
        "--token-file",
        str(token_file),
        "--allow-listen",
        *POLICY["allow_listen"],
        "--allow-connect",
        *POLICY["allow_connect"],
        "--allow-multicast",
        *POLICY["allow_multicast"],
        "--log-level",
        "warning",
    ]
    log = (workdir / "daemon.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode}: {(workdir / 'daemon.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", rest_port), timeout=0.5):
                    pass
                with socket.create_connection(("127.0.0.1", grpc_port), timeout=0.5):
                    pass
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("daemon did not start within 30 s") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}", token_file
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


async def run_door(door: str, target: str, token_file: pathlib.Path, names: list[str]) -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}
    for name in names:
        broker = await AsyncBroker.connect(target, transport=door, token_file=token_file, attach=False)
        try:
            results[name] = await run_scenario(name, broker)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await broker.aclose()
    return results


# ═════════════════════════════ the table ═════════════════════════════


def verdict(name: str, racket: Outcome, grpc: Outcome, rest: Outcome) -> str:
    if name in NOT_OFFERED:
        return f"n/a: {NOT_OFFERED[name]}"
    decided = DECIDED.get(name)
    if racket.key() == grpc.key():
        text = "same"
    elif decided is not None and decided.matches(grpc):
        text = f"departs on purpose ({decided.why})"
    elif decided is not None:
        pinned = "/".join(str(v) for v in decided.key() if v is not None) or "no error"
        text = f"differs (DESIGN/docs expect {pinned}: {decided.why})"
    else:
        text = "differs"
    if grpc.key() != rest.key():
        text += f" · doors disagree: REST gave {rest.show()}"
    if racket.kind == grpc.kind and racket.kind not in (None, "n/a") and racket.labels() != grpc.labels():
        text += f" · detail fields: Racket {racket.labels()}, daemon {grpc.labels()}"
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def racket_answers(path: pathlib.Path | None, only: list[str], workdir: pathlib.Path) -> dict[str, Outcome]:
    """A saved run of ``errors.rkt``, or a fresh one (of the ``only`` scenarios, if any are named)."""
    if path is None:
        run = subprocess.run(
            ["racket", str(HERE / "errors.rkt"), *only], check=False, capture_output=True, text=True, timeout=3600
        )
        if run.returncode != 0:
            raise RuntimeError(f"errors.rkt failed: {run.stderr}")
        path = workdir / "racket.jsonl"
        path.write_text(run.stdout)
    return load_racket(path)


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sockbroker-compare-") as tmp:
        racket = racket_answers(args.racket_json, args.only, pathlib.Path(tmp))
        known = [*SCENARIOS, *NOT_OFFERED]
        # Racket's order first (errors.rkt's), then any scenario Racket has no answer for.
        names = [n for n in [*racket, *known] if n in known and (not args.only or n in args.only)]
        names = list(dict.fromkeys(names))
        runnable = [n for n in names if n in SCENARIOS]
        missing = [n for n in names if n not in racket]
        if missing:
            print(f"no Racket result for: {', '.join(missing)}", file=sys.stderr)
        with daemon(pathlib.Path(tmp)) as doors:
            grpc_target, rest_target, token_file = doors
            grpc = await run_door("grpc", grpc_target, token_file, runnable)
            rest = await run_door("rest", rest_target, token_file, runnable)
    na = Outcome("n/a")
    for name in names:
        if name not in SCENARIOS:
            grpc[name] = rest[name] = na
    counts: dict[str, int] = {}
    print("| scenario | Racket 8.7 | daemon | verdict |")
    print("|---|---|---|---|")
    dump = []
    for name in names:
        r = racket.get(name, Outcome("missing"))
        v = verdict(name, r, grpc[name], rest[name])
        head = v.split(" (", 1)[0].split(":", 1)[0].split(" ·", 1)[0]
        counts[head] = counts.get(head, 0) + 1
        print(f"| `{name}` | {_cell(r.show())} | {_cell(grpc[name].show())} | {_cell(v)} |")
        dump.append({"scenario": name, "racket": r.__dict__, "grpc": grpc[name].__dict__, "rest": rest[name].__dict__})
    print()
    print("; ".join(f"{k}: {n}" for k, n in sorted(counts.items())))
    if args.json:
        args.json.write_text("\n".join(json.dumps(d) for d in dump) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--racket-json", type=pathlib.Path, help="a saved `racket errors.rkt` run (JSON lines)")
    parser.add_argument("--json", type=pathlib.Path, help="also write every outcome (both doors) here")
    parser.add_argument("only", nargs="*", help="scenario ids (default: all)")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
