"""Where a daemon's time goes during a benchmark group: py-spy samples, summed up.

    python -m bench.run --only unary --profile DIR     # records DIR/unary.txt while the group runs
    python -m bench.profile DIR/unary.txt [--match TEXT ...] [--top N]

``bench.run --profile DIR`` attaches ``py-spy record --native`` to each group's daemon from its
start to the group's end. py-spy stops the daemon for each sample (native frames need it) and runs
beside it on the same cores, so the figures of a profiled run carry its cost: take figures from a
run without it. The file holds py-spy's raw format: one collapsed stack (Python and native frames)
and its sample count a line. With native frames py-spy samples every thread, waiting or not.

The summary counts the samples on the CPU (not waiting in one of :data:`WAITS`; ``--all`` keeps
them) whose stack contains every ``--match`` text (e.g. the handler of one path, ``port_stream``,
when a group measures several), and gives their share by whose code the innermost frame is
(:func:`origin`), by innermost frame (self time: a system call appears as its libc function, so
``send`` is the kernel's copy and wake-up), and by any frame (inclusive).
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
#: The C sources of uvloop and libuv (py-spy names a native frame by its source file only).
UVLOOP_SOURCES = frozenset({"loop.c", "core.c", "linux.c", "poll.c", "stream.c", "udp.c", "queue.h", "loop-watcher.c"})
#: Native modules of packages, by their file's first name.
_LIBRARIES = {"cygrpc": "grpc", "_message": "protobuf", "loop": "uvloop", "speedups": "websockets"}
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
    writes the file); py-spy's own messages go to ``output`` + ``.log``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy(), "record", "--pid", str(pid), "--native", "--format", "raw"]
    argv += ["--rate", str(rate), "--output", str(output)]
    log = output.with_name(output.name + ".log")
    with log.open("w") as messages:
        sampler = subprocess.Popen(argv, stdout=messages, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            if sampler.poll() is None:
                sampler.send_signal(signal.SIGINT)
            try:
                sampler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()
    if not output.exists():
        print(f"py-spy wrote no profile for pid {pid}: {log.read_text().strip()[-500:]}", file=sys.stderr)


def frame_name(frame: str) -> str:
    """A frame's function, with its file's folder and name for a Python frame
    (``TcpConnection.send (core/tcp.py)``), its file for a C one (``Loop__run (loop.c)``), or its
    library for an unnamed native one (``? (libc.so.6)``)."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    name, where = match["name"], Path(match["where"].rsplit(":", 1)[0])
    if name.startswith("0x"):
        return f"? ({where.name})"
    return f"{name} ({where.parent.name}/{where.name})" if where.parent.name else f"{name} ({where.name})"


def origin(frame: str) -> str:
    """Whose code a frame runs: ``sockbroker`` (the daemon and its wire package), a package
    installed beside it (``grpc``, ``websockets``, ``protobuf``…), ``Python`` (the standard library
    and the interpreter), ``uvloop`` (uvloop and its libuv), or another native library
    (``libc.so.6``: system calls and the C library, memcpy included). py-spy names a Python file
    from its package (``sockbroker/core/tcp.py``, ``asyncio/queues.py``)."""
    match = _FRAME.match(frame)
    where = match["where"].rsplit(":", 1)[0] if match else ""
    path = Path(where)
    parts = path.parts[path.parts.index("site-packages") + 1 :] if "site-packages" in path.parts else path.parts
    if where.startswith("<"):
        return "Python" if where.startswith("<frozen") else "generated code"  # exec'd: dataclasses, namedtuples
    if path.suffix == ".py":
        if "sockbroker" in parts or "sockbroker_wire" in parts:
            return "sockbroker"
        top = parts[0] if (len(parts) > 1 and not path.is_absolute()) or "site-packages" in path.parts else ""
        if top and top not in sys.stdlib_module_names:
            return "grpc" if top.startswith("grpc") else top
        return "Python"
    if path.suffix in (".c", ".h"):
        return "uvloop" if path.name in UVLOOP_SOURCES else "Python"
    module = path.name.split(".")[0]
    if module in _LIBRARIES:
        return _LIBRARIES[module]
    return "Python" if module.startswith("libpython") or module in sys.stdlib_module_names else path.name or "?"


def parse(lines: Sequence[str]) -> list[Stack]:
    """The stacks of a raw profile, with their sample counts and innermost frame's origin."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            raw = stack.split(";")
            stacks.append(Stack([frame_name(f) for f in raw], int(count), origin(raw[-1])))
    return stacks


def waiting(frames: Sequence[str]) -> bool:
    """Whether a stack is off the CPU: one of its frames is a wait (:data:`WAITS`)."""
    return any(frame.startswith(WAITS) for frame in frames)


@dataclass
class Stack:
    frames: list[str]  # outermost first
    count: int
    origin: str  # of the innermost frame


@dataclass
class Summary:
    samples: int
    waiting: int
    origins: list[tuple[str, int]]
    self_time: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]

    def lines(self, total: int) -> list[str]:
        def share(count: int) -> str:
            return f"{100 * count / max(self.samples, 1):5.1f} %"

        out = [
            f"{self.samples} samples counted ({100 * self.samples / max(total, 1):.0f} % of the file's {total}; "
            f"{self.waiting} matching ones waiting, left out)"
        ]
        out += ["", "self, by whose code the innermost frame is:"] + [f"  {share(n)}  {o}" for o, n in self.origins]
        out += ["", "self (innermost frame):"] + [f"  {share(n)}  {name}" for name, n in self.self_time]
        out += ["", "inclusive (anywhere in the stack):"] + [f"  {share(n)}  {name}" for name, n in self.inclusive]
        return out


def summarise(stacks: list[Stack], match: Sequence[str] = (), top: int = 20, *, waits: bool = False) -> Summary:
    """Self and inclusive sample counts by function (and self by origin), over the stacks that
    contain every ``match`` text (in any frame's name) and, unless ``waits``, are on the CPU."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    origins: collections.Counter[str] = collections.Counter()
    samples = waited = 0
    for stack in stacks:
        frames, count = stack.frames, stack.count
        if not all(any(text in frame for frame in frames) for text in match):
            continue
        if not waits and waiting(frames):
            waited += count
            continue
        samples += count
        own[frames[-1]] += count
        origins[stack.origin] += count
        for name in set(frames):
            anywhere[name] += count
    return Summary(samples, waited, origins.most_common(), own.most_common(top), anywhere.most_common(top))


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
    total = sum(stack.count for stack in stacks)
    print("\n".join(summarise(stacks, args.match, args.top, waits=args.all).lines(total)))


if __name__ == "__main__":
    main(sys.argv[1:])
