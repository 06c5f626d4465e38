"""Run a command in the test suite's private network namespace (DESIGN §10).

``python tests/netns.py [--] COMMAND [ARG...]`` runs COMMAND in a new network namespace and a new
mount namespace (``unshare --net --mount``), in which:

* the only interface is ``lo``, brought up: 127.0.0.0/8 and ::1 work as usual, and no route leads
  off the machine, so a packet to any other address fails with ENETUNREACH before it is sent;
* ``/etc/hosts`` holds :data:`HOSTS` only and ``/etc/nsswitch.conf`` looks hosts up in ``files``
  only: a name that is not in :data:`HOSTS` fails at once with EAI_NONAME, for real, through
  getaddrinfo, and no DNS query is made. ``/etc/resolv.conf`` names 127.0.0.1 for anything that
  reads it itself (gRPC's c-ares resolver): such a query would stay on ``lo``.

The three files are bind-mounted inside the private mount namespace: the machine's own files are
untouched, and everything disappears with the command. It takes root, or unprivileged user
namespaces (then ``--user --map-root-user`` is added), util-linux (``unshare``, ``mount``) and
iproute2 (``ip``); ``scripts/setup.sh --test`` installs them.

``scripts/test.sh`` runs pytest through this, and ``tests/conftest.py`` makes a bare
``pytest`` re-execute itself through it (:func:`rerun_pytest_inside`), so every way of running the
suite runs it here. The environment variable :data:`MARKER` holds the namespace's inode: a process
is inside when it matches its own namespace, so a stray exported value does not fool it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import pytest

__all__ = ["HOSTS", "MARKER", "UNKNOWN_HOST", "inside", "problem", "rerun_pytest_inside", "run_inside"]

#: The environment variable that says "already inside": the inode of the namespace it was made for.
MARKER = "SOCKBROKER_TEST_NETNS"
#: The namespace's hosts file, address → names. ``localhost`` is IPv4 only, as the suite expects
#: (the machine's own file may differ: this one is the same everywhere).
HOSTS: dict[str, tuple[str, ...]] = {"127.0.0.1": ("localhost",), "::1": ("ip6-localhost", "ip6-loopback")}
#: A name in no hosts file and, under ``.invalid`` (RFC 6761), in no DNS: "host not found" for real.
UNKNOWN_HOST = "no-such-host.invalid"
#: A resolver address for programs that read resolv.conf themselves: loopback, where none listens.
RESOLV_CONF = (
    "# tests/netns.py: no resolver leaves this namespace\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
)
_HERE = Path(__file__).resolve()
_TOOLS = (("unshare", "util-linux"), ("mount", "mount"), ("ip", "iproute2"))


def _netns_id() -> str:
    return str(os.stat("/proc/self/ns/net").st_ino)


def inside() -> bool:
    """Whether this process runs in a namespace this module made."""
    return os.environ.get(MARKER) == _netns_id()


def _unshare(argv: Sequence[str]) -> list[str]:
    flags = ["--net", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        flags = ["--user", "--map-root-user", *flags]
    return ["unshare", *flags, "--", sys.executable, str(_HERE), "--inner", "--", *argv]


def problem() -> str | None:
    """Why the namespace cannot be made on this machine, in one line; None when it can.

    It is made once, for ``true``, with every step the real run takes."""
    for tool, package in _TOOLS:
        if shutil.which(tool) is None:
            return f"`{tool}` is missing: install {package} (bash scripts/setup.sh --test does)"
    probe = subprocess.run(_unshare(["true"]), capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"]
        return f"{lines[-1]} (run as root, or allow unprivileged user namespaces)"
    return None


def _fail(reason: str) -> NoReturn:
    raise SystemExit(f"tests/netns.py: cannot make the tests' private network namespace (DESIGN §10): {reason}")


def run_inside(argv: Sequence[str]) -> NoReturn:
    """Replace this process with ``argv`` run in a fresh namespace (as is, when already inside one)."""
    if inside():
        os.execvp(argv[0], list(argv))
    reason = problem()
    if reason is not None:
        _fail(reason)
    sys.stdout.flush()
    sys.stderr.flush()
    command = _unshare(argv)
    os.execvp(command[0], command)


def rerun_pytest_inside(config: pytest.Config) -> None:
    """Run this pytest again, with the same arguments, inside a namespace, unless it already is.

    Called from ``pytest_configure``: before any test, fixture or report, and once the output
    capture that conftest loading runs under can be stopped (the new process writes to the
    terminal)."""
    if inside():
        return
    reason = problem()
    if reason is not None:
        import pytest

        raise pytest.UsageError(f"cannot run the suite in its private network namespace (DESIGN §10): {reason}")
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    os.chdir(config.invocation_params.dir)
    run_inside([sys.executable, "-m", "pytest", *config.invocation_params.args])


def _nsswitch() -> str:
    """The machine's nsswitch.conf with hosts looked up in files only."""
    lines = [line for line in Path("/etc/nsswitch.conf").read_text().splitlines() if not line.startswith("hosts:")]
    return "\n".join([*lines, "hosts: files", ""])


def _enter(argv: Sequence[str]) -> NoReturn:
    """The inner half, in the new namespaces: bring ``lo`` up, mount the files, run ``argv``."""
    if not argv:
        _fail("no command given")
    files = {
        "hosts": "".join(f"{address} {' '.join(names)}\n" for address, names in HOSTS.items()),
        "nsswitch.conf": _nsswitch(),
        "resolv.conf": RESOLV_CONF,
    }
    try:
        subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True, check=True)
        # The mounts keep the files alive once their directory is removed.
        with tempfile.TemporaryDirectory(prefix="sockbroker-netns-") as tmp:
            for name, text in files.items():
                if name == "resolv.conf" and not Path("/etc/resolv.conf").exists():
                    continue  # none (or a dangling link): glibc's default is 127.0.0.1 already
                source = Path(tmp, name)
                source.write_text(text)
                source.chmod(0o644)
                subprocess.run(["mount", "--bind", source, f"/etc/{name}"], capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as exc:
        _fail(f"{' '.join(map(str, exc.cmd))}: {exc.stderr.strip() or exc.returncode}")
    except OSError as exc:
        _fail(str(exc))
    os.environ[MARKER] = _netns_id()
    os.execvp(argv[0], list(argv))


def main(args: list[str]) -> NoReturn:
    if args[:2] == ["--inner", "--"]:
        _enter(args[2:])
    if args[:1] == ["--"]:
        args = args[1:]
    if not args or args[0].startswith("-"):
        raise SystemExit("usage: python tests/netns.py [--] COMMAND [ARG...]")
    run_inside(args)


if __name__ == "__main__":
    main(sys.argv[1:])
