"""Where a daemon's time goes during a benchmark group: py-spy samples, summed up.

    python -m bench.run --only unary --profile DIR     # records DIR/unary.txt while the group runs
    python -m bench.profile DIR/unary.txt [--match TEXT ...] [--top N]

``bench.run --profile DIR`` attaches ``py-spy record --native`` to each group's
daemon from its start to the group's end. py-spy stops the daemon for each sample (native frames
need it) and runs beside it on the same cores, so the figures of a profiled run carry its cost:
take figures from a run without it. The file holds
py-spy's raw format, one collapsed stack (Python and native frames) and its sample count a line;
only threads that were running are sampled.

The summary counts the samples on the CPU (not waiting in one of :data:`WAITS`; ``--all`` keeps
them) and gives, for those whose stack contains every ``--match`` text (e.g. the handler
of one path, ``port_stream``, when a group measures several), the share of samples in which each
function is the innermost frame (self time: a system call appears as its libc function, so that
``send`` is the kernel's copy and wake-up) and the share in which it appears at all (inclusive).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Samples per second: each stops the daemon while its native stack is read, so few (a row of a few
#: seconds still gets hundreds).
RATE = 50
#: Functions that wait (for events, a lock, the GIL): a stack holding one is off the CPU. With native
#: frames py-spy cannot tell an idle thread from a busy one, so the summary leaves these out.
WAITS = (
    "epoll_wait ", "epoll_pwait ", "poll ", "select ", "pselect ", "nanosleep ", "clock_nanosleep ",
    "pthread_cond_wait ", "pthread_cond_timedwait ", "PyThread_acquire_lock_timed ", "take_gil ",
)  # fmt: skip
#: A frame of the raw format: ``name (file:line)`` or ``0xADDR (library)``.
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<where>[^()]*)\)$")


def py_spy() -> str:
    """The py-spy executable beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    return found


@contextlib.contextmanager
def recording(pid: int, output: Path, rate: int = RATE) -> Iterator[None]:
    """Sample process ``pid`` into ``output`` while the block runs (SIGINT ends py-spy, which then
    writes the file)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy(), "record", "--pid", str(pid), "--native", "--format", "raw"]
    argv += ["--rate", str(rate), "--output", str(output)]
    sampler = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        if sampler.poll() is None:
            sampler.send_signal(signal.SIGINT)
        try:
            _out, err = sampler.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sampler.kill()
            _out, err = sampler.communicate()
        if not output.exists():
            print(f"py-spy wrote no profile for pid {pid}: {err.strip()[-500:]}", file=sys.stderr)


def frame_name(frame: str) -> str:
    """A frame's function, with its file's name for Python and C frames (``send_bytes (tcp.py)``),
    or its library for an unnamed native one (``? (libc.so.6)``)."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    name, where = match["name"], match["where"].rsplit(":", 1)[0]
    if name.startswith("0x"):
        return f"? ({where})"
    return f"{name} ({Path(where).name})"


def parse(lines: Sequence[str]) -> list[tuple[list[str], int]]:
    """The stacks of a raw profile (outermost frame first) and their sample counts."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks.append(([frame_name(f) for f in stack.split(";")], int(count)))
    return stacks


def waiting(frames: Sequence[str]) -> bool:
    """Whether a stack is off the CPU: one of its frames is a wait (:data:`WAITS`)."""
    return any(frame.startswith(WAITS) for frame in frames)


@dataclass
class Summary:
    samples: int
    waiting: int
    self_time: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]

    def lines(self, total: int) -> list[str]:
        def share(count: int) -> str:
            return f"{100 * count / max(self.samples, 1):5.1f} %"

        out = [
            f"{self.samples} samples counted ({100 * self.samples / max(total, 1):.0f} % of the file's {total}; "
            f"{self.waiting} matching ones waiting, left out)"
        ]
        out += ["", "self (innermost frame):"] + [f"  {share(n)}  {name}" for name, n in self.self_time]
        out += ["", "inclusive (anywhere in the stack):"] + [f"  {share(n)}  {name}" for name, n in self.inclusive]
        return out


def summarise(
    stacks: list[tuple[list[str], int]], match: Sequence[str] = (), top: int = 20, *, waits: bool = False
) -> Summary:
    """Self and inclusive sample counts by function, over the stacks that contain every ``match``
    text (in any frame's name) and, unless ``waits``, are on the CPU."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    samples = waited = 0
    for frames, count in stacks:
        if not all(any(text in frame for frame in frames) for text in match):
            continue
        if not waits and waiting(frames):
            waited += count
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            anywhere[name] += count
    return Summary(samples, waited, own.most_common(top), anywhere.most_common(top))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path, help="a raw py-spy profile (bench.run --profile DIR writes them)")
    parser.add_argument(
        "--match", action="append", default=[], metavar="TEXT", help="only stacks with a frame naming this"
    )
    parser.add_argument("--all", action="store_true", help="count the samples waiting too")
    parser.add_argument("--top", type=int, default=20, help="functions listed per table (default: %(default)s)")
    args = parser.parse_args(argv)
    stacks = parse(args.profile.read_text().splitlines())
    total = sum(count for _, count in stacks)
    print("\n".join(summarise(stacks, args.match, args.top, waits=args.all).lines(total)))


if __name__ == "__main__":
    main(sys.argv[1:])
