"""Shared pieces of the benchmark: the sink protocol, payloads, timing and results.

Every throughput figure in this suite has one shape, the *sink upload*: the client sends an
8-byte big-endian length ``N`` followed by ``N`` payload bytes, in messages (or frames, or
socket writes) of a fixed size, through whatever path is being measured, to a sink that counts
them. When the sink has counted all ``N`` bytes it sends back one ack byte; the clock stops when
the client receives it. Throughput is ``N / elapsed`` in MB/s (1 MB = 10**6 bytes).
"""

from __future__ import annotations

import math
import os
import statistics
import struct
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

HEADER = struct.Struct(">Q")
ACK = b"\x01"
MB = 1_000_000
KIB = 1024
MIB = 1024 * 1024
LOOPBACK = "127.0.0.1"


class SinkCounter:
    """Counts a sink-protocol byte stream; ``feed`` returns True once, when all bytes are in."""

    def __init__(self) -> None:
        self._header = b""
        self._expected: int | None = None
        self._received = 0
        self.done = False

    def feed(self, data: bytes | memoryview) -> bool:
        if self._expected is None:
            need = HEADER.size - len(self._header)
            self._header += bytes(data[:need])
            data = data[need:]
            if len(self._header) < HEADER.size:
                return False
            (self._expected,) = HEADER.unpack(self._header)
        self._received += len(data)
        if self.done or self._received < self._expected:
            return False
        self.done = True
        return True


def payload_chunks(total: int, size: int) -> Iterator[bytes]:
    """The sink-protocol stream for ``total`` payload bytes, cut into ``size``-byte pieces."""
    block = os.urandom(size)
    stream_len = HEADER.size + total
    first = HEADER.pack(total) + block[: size - HEADER.size]
    yield first[:stream_len]
    remaining = stream_len - len(first)
    while remaining >= size:
        yield block
        remaining -= size
    if remaining > 0:
        yield block[:remaining]


@dataclass
class Measurement:
    """One figure: its value, its unit, how it was taken, and every repetition's value."""

    value: float
    unit: str
    shape: str
    runs: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def throughput(total: int, runs_seconds: list[float], shape: str, **extra: Any) -> Measurement:
    """MB/s from repetition times: the median, with every repetition kept."""
    rates = [total / seconds / MB for seconds in runs_seconds]
    return Measurement(statistics.median(rates), "MB/s", shape, [round(r, 1) for r in rates], extra)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


class Deadline:
    """A hard wall-clock cap: ``check`` raises TimeoutError once it has passed."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def check(self) -> None:
        if self.expired():
            raise TimeoutError(f"{self.what}: over its {self.seconds:.0f} s cap")


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; ``QUICK`` keeps the whole run under a minute."""

    stream_bytes: int
    repeats: int
    warmup_bytes: int
    unary_sequential: int
    unary_concurrent: int
    udp_seconds: float
    connections: int
    reclaim_sockets: int
    stream_cap: float


FULL = Sizes(
    stream_bytes=512 * MB,
    repeats=3,
    warmup_bytes=16 * MB,
    unary_sequential=2_000,
    unary_concurrent=20_000,
    udp_seconds=5.0,
    connections=10_000,
    reclaim_sockets=1_000,
    stream_cap=60.0,
)
QUICK = Sizes(
    stream_bytes=24 * MB,
    repeats=1,
    warmup_bytes=2 * MB,
    unary_sequential=300,
    unary_concurrent=3_000,
    udp_seconds=1.0,
    connections=1_000,
    reclaim_sockets=1_000,
    stream_cap=15.0,
)
