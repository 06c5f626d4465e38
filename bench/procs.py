"""Starting and stopping the benchmark's helper processes, and reading a process's resources.

Each helper runs in its own session (process group), so that helpers that fork per connection
(socat, websockify) are stopped with their children: ``stop`` signals the group whose id is the
pid of the process this module started, never anything found by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

from bench.common import LOOPBACK, Sizes

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEERS = [sys.executable, "-m", "bench.peers"]
READY_PREFIX = "PORT "


class HelperError(RuntimeError):
    """A helper process failed to start; the message carries the tail of its log."""


class Helper:
    """A started process: its Popen, the port it serves on, and its log file."""

    def __init__(self, name: str, argv: Sequence[str], *, reports: bool, env: dict[str, str] | None = None) -> None:
        """``reports``: the helper prints its port on stdout; otherwise stdout goes to the log."""
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if reports else log,
                stderr=log,
                env=env,
                cwd=REPO_DIR,
                start_new_session=True,
            )
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def fail(self, why: str) -> HelperError:
        return HelperError(f"{self.name} (pid {self.pid}): {why}\n{self.log_tail()}")

    def read_line(self, timeout: float) -> str:
        """One line of the helper's stdout, waiting at most ``timeout`` seconds."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise self.fail(f"no output within {timeout:.0f} s")
        line = self.proc.stdout.readline().decode(errors="replace").strip()
        if not line:
            raise self.fail(f"exited with {self.proc.wait(timeout=5)}")
        return line

    def wait_ready_line(self, timeout: float = 20.0) -> int:
        line = self.read_line(timeout)
        if not line.startswith(READY_PREFIX):
            raise self.fail(f"unexpected output {line!r}")
        self.port = int(line.removeprefix(READY_PREFIX))
        return self.port

    def wait_port(self, port: int, timeout: float = 20.0) -> int:
        """Wait until ``port`` on loopback accepts connections (for helpers that print nothing)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise self.fail(f"exited with {self.proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
                self.port = port
                return port
            time.sleep(0.05)
        raise self.fail(f"port {port} not accepting within {timeout:.0f} s")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the helper's process group, then SIGKILL it if it has not exited."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=grace)
        self._signal_group(signal.SIGKILL)  # children a forking helper may have left behind
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.unlink(missing_ok=True)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


@contextlib.contextmanager
def peer(kind: str, *args: str) -> Iterator[Helper]:
    """A ``bench.peers`` helper that reports its port on stdout; stopped when the block ends."""
    helper = Helper(kind, [*PEERS, kind, *args], reports=True)
    try:
        helper.wait_ready_line()
        yield helper
    finally:
        helper.stop()


@contextlib.contextmanager
def program(name: str, argv: Sequence[str], port: int) -> Iterator[Helper]:
    """An external program that serves on ``port``; stopped when the block ends."""
    helper = Helper(name, argv, reports=False)
    try:
        helper.wait_port(port)
        yield helper
    finally:
        helper.stop()


@dataclasses.dataclass
class Stage:
    """What one measurement group shares: its sizes, the daemon's command line (and where its
    profile goes, if one is taken), and the processes and clients its probes start on first use
    (each once, stopped when the group's stack closes).
    A start that failed fails every later use the same way, without being tried again."""

    sizes: Sizes
    stack: AsyncExitStack
    daemon_command: list[str]
    daemon_args: list[str]
    #: Where py-spy writes the daemon's profile while the group runs (``bench.run --profile``).
    profile: Path | None = None
    _started: dict[str, Any] = dataclasses.field(default_factory=dict)
    _failed: dict[str, BaseException] = dataclasses.field(default_factory=dict)

    async def shared(
        self, name: str, make: Callable[[], AbstractContextManager[Any] | AbstractAsyncContextManager[Any]]
    ) -> Any:
        """The value of the context manager ``make()`` entered on the group's stack, once."""
        if name in self._failed:
            raise self._failed[name]
        if name not in self._started:
            try:
                manager = make()
                if isinstance(manager, AbstractAsyncContextManager):
                    self._started[name] = await self.stack.enter_async_context(manager)
                else:
                    self._started[name] = self.stack.enter_context(manager)
            except Exception as error:
                self._failed[name] = error
                raise
        return self._started[name]

    async def peer(self, kind: str, name: str = "") -> Helper:
        """A ``bench.peers`` helper of this kind, shared under ``name`` (default: the kind)."""
        helper: Helper = await self.shared(name or kind, lambda: peer(kind))
        return helper

    def daemon_argv(self, *flags: str) -> list[str]:
        """The daemon's command with a group's own flags, then the run's ``--daemon-arg`` ones."""
        return [*self.daemon_command, *flags, *self.daemon_args]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for programs that cannot report theirs)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit (children inherit it); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
        return wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU-seconds (user + system) spent so far by process group ``pgid``: every member's own time
    and that of the children it has reaped (a forking relay's per-connection child counts while it
    lives, then in its parent's). Every helper runs in a group whose id is its pid."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[2]) == pgid:  # fields[0] is field 3 of proc(5): state, ppid, pgrp, …
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / CLOCK_TICKS


def machine_cpu() -> tuple[float, float]:
    """CPU-seconds the machine has spent so far, summed over its cores: busy (user, nice, system,
    irq and softirq time: the kernel's network work counts, whichever process or kernel thread it
    was charged to) and stolen (by the hypervisor, from /proc/stat's ``steal``)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


class CoresBusy:
    """How many of the machine's cores were busy, and how many stolen, from its start to a reading."""

    def __init__(self) -> None:
        self._began = time.perf_counter()
        self._busy, self._stolen = machine_cpu()

    def reading(self) -> dict[str, float]:
        busy, stolen = machine_cpu()
        seconds = time.perf_counter() - self._began
        return {
            "machine_cores_busy": (busy - self._busy) / seconds,
            "machine_cores_stolen": (stolen - self._stolen) / seconds,
        }


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid: int) -> int:
    """The soft open-file limit of ``pid``, from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError(f"no open-file limit for pid {pid}")
