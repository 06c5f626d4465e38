"""Give-back at full size: the raw-client races of ``tests/behaviour/test_giveback.py`` against a
daemon process, at least 5,000 cancellations per operation kind per door (DESIGN §2, issue 7).

The scenarios are those of ``tests/rawwire.py``, imported, not copied: bare sockets speak HTTP/1.1
and HTTP/2 (gRPC) to the daemon, give each blocking call up at a random moment while its result
arrives, then drain what is left and account for every datagram, connection and byte. The daemon
is started by ``rawwire.daemon_process`` (``python -m sockbroker serve`` on 127.0.0.1 port 0 for
both doors, a fresh token file; its ports are read from /proc) and stopped by its pid at the end.

    python -m bench.giveback                    # 5,000 given up per kind per door, ~10 min
    python -m bench.giveback -n 500 --gave-up 0 --door rest --kind Udp.Receive

Prints one row per door and kind, and exits 1 if any row fails (lost > 0.1 % of what was sent,
anything duplicated, a connection that does not carry its bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import LOOPBACK
from bench.procs import REPO_DIR, raise_nofile

__all__ = ["main"]

#: The bench holds one peer socket per connection of the accept scenarios.
OPEN_FILES = 65536


def _rawwire() -> Any:
    """``tests/rawwire.py``: the scenarios the test suite runs, shared rather than written twice."""
    tests = str(REPO_DIR / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("rawwire")


async def run(args: argparse.Namespace) -> list[Any]:
    rawwire = _rawwire()
    tallies = []
    with rawwire.daemon_process(*args.daemon_arg) as (rest_port, grpc_port, token):
        print(f"daemon: REST on {LOOPBACK}:{rest_port}, gRPC on {LOOPBACK}:{grpc_port}")
        print(f"at least {args.n} calls per row, and until {args.gave_up} gave up")
        print(rawwire.Tally.HEADER, flush=True)
        for door_name in args.door:
            for kind in args.kind:
                if door_name == "rest":
                    door = rawwire.RestDoor(rest_port, token, spin=True, longest=args.longest)
                else:
                    door = rawwire.GrpcDoor(grpc_port, token, spin=True, longest=args.longest)
                try:
                    tally = await rawwire.run_kind(door, kind, args.n, args.seed, gave_up=args.gave_up)
                finally:
                    await door.aclose()
                print(tally.row(), flush=True)
                tallies.append(tally)
    return tallies


def main(argv: list[str] | None = None) -> int:
    kinds = list(_rawwire().KINDS)
    parser = argparse.ArgumentParser(prog="python -m bench.giveback", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="raw calls per kind per door, at least (default 5000)")
    parser.add_argument(
        "--gave-up",
        type=int,
        default=5000,
        help="and more calls until this many gave up (default 5000; at most 20 calls per one)",
    )
    parser.add_argument("--door", action="append", choices=["rest", "grpc"], help="repeatable; default both")
    parser.add_argument("--kind", action="append", choices=kinds, help="repeatable; default every kind")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--longest", type=float, default=0.004, help="longest random moment before giving up, in s (default 0.004)"
    )
    parser.add_argument("--daemon-arg", action="append", default=[], help="one more daemon flag (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    args.door = args.door or ["rest", "grpc"]
    args.kind = args.kind or kinds
    raise_nofile(OPEN_FILES)
    started = time.perf_counter()
    tallies = asyncio.run(run(args))
    failed = [t for t in tallies if not t.ok]
    print(f"{len(tallies) - len(failed)} of {len(tallies)} rows ok in {time.perf_counter() - started:.0f} s")
    if args.json:
        rows = [dict(asdict(t), allowed_loss=t.allowed_loss, ok=t.ok) for t in tallies]
        args.json.write_text(
            json.dumps({"n": args.n, "gave_up": args.gave_up, "seed": args.seed, "rows": rows}, indent=2) + "\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
