"""The Racket drop-in (clients/racket): the differential test, and a killed program's sockets.

A real daemon runs as a subprocess (on port 0, with a policy that also allows the wildcard
bind and the multicast group the differential test uses); the Racket programs find it through
SOCKBROKER_URL and SOCKBROKER_TOKEN_FILE, and the collection through PLTCOLLECTS. The
collection and the Racket test files run from a copy in a temporary directory, so that their
compiled/ directories never land in the work tree.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COLLECTION = ROOT / "clients" / "racket"
POLICY = [
    "--allow-listen", "127.0.0.0/8", "::1/128", "0.0.0.0/32",
    "--allow-connect", "127.0.0.0/8", "::1/128", "239.255.0.0/16",
    "--allow-multicast", "239.255.0.0/16",
]  # fmt: skip


def _racket_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (scripts/setup.sh --test installs racket)"
    return path


@pytest.fixture(scope="module")
def racket_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a Racket program that uses the drop-in against a fresh daemon."""
    directory = tmp_path_factory.mktemp("racket-dropin")
    token, runtime, log = directory / "token", directory / "runtime.json", directory / "daemon.log"
    command = [sys.executable, "-m", "sockbroker", "serve", "--grpc-address", "127.0.0.1:0"]
    command += ["--rest-address", "127.0.0.1:0", f"--token-file={token}", f"--runtime-file={runtime}", *POLICY]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with log.open("wb") as out:
        daemon = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while not (runtime.exists() and runtime.read_text().strip().endswith("}")):
            assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        rest_url = json.loads(runtime.read_text())["rest_url"]
        racket_env = dict(
            os.environ,
            SOCKBROKER_URL=rest_url,
            SOCKBROKER_TOKEN_FILE=str(token),
            PLTCOLLECTS=f"{directory / 'collects'}{os.pathsep}",  # then Racket's own
            SOCKBROKER_TEST_COPY=str(directory / "tests"),  # where the copied Racket tests are
        )
        skip = shutil.ignore_patterns("compiled", "*.py", "__pycache__")
        shutil.copytree(COLLECTION, directory / "collects", ignore=skip)
        shutil.copytree(HERE, directory / "tests", ignore=skip)
        programs = [str(directory / "tests" / name) for name in ("differential.rkt", "holder.rkt")]
        made = subprocess.run(
            [_racket_tool("raco"), "make", *programs],
            check=False,
            env=racket_env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        yield racket_env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


@pytest.mark.timeout(300)
def test_differential(racket_env: dict[str, str]) -> None:
    """Every behaviour of behaviours.rkt gives the same outcome through racket/tcp + racket/udp
    and through sockbroker/tcp + sockbroker/udp (or exactly the departure differential.rkt names),
    and the drop-in exports every binding with Racket's arity."""
    suite = str(pathlib.Path(racket_env["SOCKBROKER_TEST_COPY"]) / "differential.rkt")
    run = subprocess.run(
        [_racket_tool("raco"), "test", suite], check=False, env=racket_env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tests passed" in run.stdout, run.stdout + run.stderr


@pytest.mark.timeout(120)
def test_killed_program_loses_its_sockets(racket_env: dict[str, str]) -> None:
    """A Racket program killed with SIGKILL holds no broker socket a moment later: its session's
    attachment closes with the process, and the daemon drops the session at once (well before
    the 10 s lease would run out)."""
    racket = _racket_tool("racket")
    command = [racket, str(pathlib.Path(racket_env["SOCKBROKER_TEST_COPY"]) / "holder.rkt")]
    with subprocess.Popen(
        command, env=racket_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            line = holder.stdout.readline()
            assert line.strip().isdigit(), line + holder.stdout.read()
            port = int(line)
            socket.create_connection(("127.0.0.1", port), timeout=5).close()  # the listener is there
        finally:
            holder.kill()
            holder.wait()
    deadline = time.monotonic() + 3
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            break
        except ConnectionResetError:  # queued on the listener as it closed: it is going, try again
            pass
        assert time.monotonic() < deadline, "the killed program's listener is still open after 3 s"
        time.sleep(0.05)
