"""The benchmark's UDP blaster: ``python -m bench.blast --port N [--rate R] [--seconds S]``.

Sends datagrams of ``--size`` bytes to 127.0.0.1:PORT as fast as it can, or paced at ``--rate``
datagrams/s (what is due every 0.5 ms), for at most ``--seconds`` and ``--count`` datagrams, then
prints ``SENT <n>``. A module of its own, importing nothing heavy, so that it starts at once.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from bench.common import LOOPBACK

PACE_STEP = 0.0005
BURST = 256


def blast(port: int, size: int, seconds: float, count: int, rate: int) -> int:
    """Datagrams sent (a send the kernel refused, ECONNREFUSED or ENOBUFS, is not counted)."""
    payload = bytes(size)
    sent = 0
    begin = time.monotonic()
    end = begin + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        while sent < count and (now := time.monotonic()) < end:
            burst = min(BURST, count - sent) if not rate else min(count, round((now - begin) * rate)) - sent
            if burst <= 0:
                time.sleep(PACE_STEP)
                continue
            for _ in range(burst):
                try:
                    sock.send(payload)
                except OSError:
                    continue
                sent += 1
    return sent


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.blast", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="destination port on 127.0.0.1")
    parser.add_argument("--size", type=int, default=1200, help="datagram size")
    parser.add_argument("--seconds", type=float, default=5.0, help="longest run")
    parser.add_argument("--count", type=int, default=10_000_000, help="most datagrams")
    parser.add_argument("--rate", type=int, default=0, help="datagrams/s (0: as fast as it can)")
    args = parser.parse_args(argv)
    sent = blast(args.port, args.size, args.seconds, args.count, args.rate)
    print(f"SENT {sent}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
