"""Shared pieces of the benchmark: the sink protocol, payloads, timing and results.

Every throughput figure in this suite has one shape, the *sink upload*: the client sends an
8-byte big-endian length ``N`` followed by ``N`` payload bytes, in messages (or frames, or
socket writes) of a fixed size, through whatever path is being measured, to a sink that counts
them. When the sink has counted all ``N`` bytes it sends back one ack byte; the clock stops when
the client receives it. Throughput is ``N / elapsed`` in MB/s (1 MB = 10**6 bytes).

The run measures each probe once per round, five rounds or more (``bench.run --rounds``); a
:class:`Sample` is one probe's figure in one round.
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

HEADER = struct.Struct(">Q")
ACK = b"\x01"
MB = 1_000_000
KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
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
class Sample:
    """One round's figure of one probe: its value, the metered process's CPU-seconds per GiB moved
    (throughput figures only), and whatever else the round saw."""

    value: float
    cpu_per_gib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Figures = dict[str, Sample]


@dataclass(frozen=True)
class Figure:
    """What a probe measures: its key (``baseline.…`` / ``broker.…``), unit, and shape in words."""

    key: str
    unit: str
    shape: str


@dataclass(frozen=True)
class Probe:
    """One side of a comparison. ``run`` measures once (one round) and returns a Sample per figure;
    ``warmup`` runs once before the first round, untimed, and starts what the probe needs;
    ``cap`` bounds each call; ``every_round`` False: measured in the first round only."""

    figures: tuple[Figure, ...]
    run: Callable[[], Awaitable[Figures]]
    warmup: Callable[[], Awaitable[object]] | None = None
    cap: float = 120.0
    every_round: bool = True

    @property
    def name(self) -> str:
        return self.figures[0].key


def cpu_per_gib(cpu_seconds: float, moved: int) -> float:
    """CPU-seconds per GiB for ``cpu_seconds`` spent while ``moved`` bytes went through."""
    return cpu_seconds / (moved / GIB) if moved else 0.0


def mb_per_s(total: int, seconds: float) -> float:
    return total / seconds / MB


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
    """How much work each round of each probe does."""

    stream_bytes: int
    warmup_bytes: int
    unary_sequential: int
    unary_concurrent: int
    udp_seconds: float
    udp_paced_seconds: float
    connections: int
    reclaim_sockets: int
    stream_cap: float


#: DESIGN §7 P5: the paced rate at which nothing may be lost.
UDP_PACED_RATE = 100_000
#: DESIGN §7 P6: the idle connections one daemon should hold (capped here by the fd limit).
CONNECTIONS_WANTED = 100_000

FULL = Sizes(
    stream_bytes=512 * MB,
    warmup_bytes=16 * MB,
    unary_sequential=2_000,
    unary_concurrent=10_000,
    udp_seconds=3.0,
    udp_paced_seconds=5.0,
    connections=CONNECTIONS_WANTED,
    reclaim_sockets=10_000,
    stream_cap=60.0,
)
QUICK = Sizes(
    stream_bytes=64 * MB,
    warmup_bytes=4 * MB,
    unary_sequential=200,
    unary_concurrent=1_000,
    udp_seconds=0.5,
    udp_paced_seconds=1.0,
    connections=1_000,
    reclaim_sockets=1_000,
    stream_cap=15.0,
)
