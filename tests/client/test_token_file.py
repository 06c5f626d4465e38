"""The client's local files: the token file read safely, and the daemon found through its runtime file.

A token path may name anything. The client reads a regular file of at most 4096 bytes and
answers anything else with ``TokenFileError`` at once: a named pipe must not hang ``connect``
(an ``open`` for reading waits for a writer), a link to ``/dev/zero`` must not grow memory
without end. Those two run guarded, a named pipe in a thread with a deadline and a release, and
``/dev/zero`` in a child process with a memory limit, so that a regression fails the test
instead of hanging it or eating the machine's memory.

Without a target, the client reads the running daemon's runtime file beside the token file; the
test daemon listens on kernel-chosen ports, so only that file can lead the client to it.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from helpers import target
from sockbroker.server import Daemon
from sockbroker_client import AsyncBroker, Broker, TokenFileError, UnauthenticatedError
from sockbroker_client._files import MAX_TOKEN_BYTES, read_token_file, runtime_file, runtime_target

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "x" * 43
#: A target no test daemon listens on: the token is read (and refused) before anything is dialled.
NOWHERE = "127.0.0.1:9"


def _file(tmp_path: pathlib.Path, content: bytes, name: str = "token") -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def _within(
    seconds: float, call: Callable[[], object], *, release: pathlib.Path
) -> tuple[object, BaseException | None]:
    """What ``call()`` returned and what it raised, run in a thread; fail if it takes longer than ``seconds``.

    A call stuck opening the named pipe ``release`` is set free by opening its other end, so a
    regression fails here rather than leaving a thread blocked for ever."""
    outcome: list[tuple[object, BaseException | None]] = []

    def run() -> None:
        try:
            outcome.append((call(), None))
        except BaseException as exc:  # handed to the test, which checks its type
            outcome.append((None, exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        fd = os.open(release, os.O_WRONLY | os.O_NONBLOCK)  # a reader waits: this opens, and frees it
        os.close(fd)
        worker.join(seconds)
        pytest.fail(f"the call was still blocked on {release} after {seconds} s")
    return outcome[0]


# -- the token file ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grpc", "rest"])
async def test_a_normal_token_file_opens_a_session(
    daemon: Daemon, token_file: pathlib.Path, tmp_path: pathlib.Path, kind: str
) -> None:
    token = token_file.read_bytes().strip()  # noqa: ASYNC240 - a tiny local file
    mine = _file(tmp_path, b"  " + token + b"\n\n")  # surrounding whitespace is stripped
    async with await AsyncBroker.connect(target(daemon, kind), transport=kind, token_file=mine) as broker:
        assert broker.session.startswith("ses_")


def test_a_link_to_a_token_file_is_followed(tmp_path: pathlib.Path) -> None:
    """Only the daemon refuses links; a client reads a Kubernetes Secret's ``token -> ..data/token``."""
    real = _file(tmp_path, TOKEN.encode() + b"\n", name="real")
    link = tmp_path / "token"
    link.symlink_to(real.name)
    assert read_token_file(link) == TOKEN


def test_a_named_pipe_is_refused_at_once_not_waited_on(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    started = time.monotonic()
    _, error = _within(5.0, lambda: Broker.connect(NOWHERE, token_file=fifo), release=fifo)
    assert isinstance(error, TokenFileError), repr(error)
    assert str(error) == f"token file {fifo}: is a named pipe, not a regular file"
    assert time.monotonic() - started < 2.0


def test_a_link_to_dev_zero_is_refused_without_reading_it(tmp_path: pathlib.Path) -> None:
    """In a child process capped at 256 MiB more memory than its imports took, and 30 s."""
    link = tmp_path / "token"
    link.symlink_to("/dev/zero")
    program = """
import resource, sys
from sockbroker_client import Broker, TokenFileError
size = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmSize:"))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20), resource.RLIM_INFINITY))
try:
    Broker.connect(sys.argv[1], token_file=sys.argv[2])
except TokenFileError as exc:
    print(f"{type(exc).__name__}: {exc}")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / part) for part in ("proto/python", "clients/python"))}
    result = subprocess.run(
        [sys.executable, "-c", program, NOWHERE, str(link)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"TokenFileError: token file {link}: is a character device, not a regular file"


def test_a_file_larger_than_a_token_is_refused(tmp_path: pathlib.Path) -> None:
    path = _file(tmp_path, b"x" * (MAX_TOKEN_BYTES + 1))
    with pytest.raises(TokenFileError, match=f"is larger than {MAX_TOKEN_BYTES} bytes"):
        Broker.connect(NOWHERE, token_file=path)
    assert read_token_file(_file(tmp_path, b"y" * MAX_TOKEN_BYTES, name="exact")) == "y" * MAX_TOKEN_BYTES


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
        (b"caf\xc3\xa9-token", "holds non-ASCII bytes"),
        (b"two words", "holds spaces or control characters"),
        (b"bell\x07token", "holds spaces or control characters"),
    ],
    ids=["empty", "blank", "non-ascii", "space", "control"],
)
def test_a_file_that_holds_no_token_is_refused(tmp_path: pathlib.Path, content: bytes, reason: str) -> None:
    path = _file(tmp_path, content)
    with pytest.raises(TokenFileError) as caught:
        read_token_file(path)
    assert str(caught.value).startswith(f"token file {path}: {reason}")


def test_a_missing_or_unopenable_token_file_is_a_typed_error(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(TokenFileError) as caught:
        Broker.connect(NOWHERE, token_file=missing)
    error = caught.value
    assert isinstance(error, UnauthenticatedError) and error.kind == "unauthenticated" and error.status is None
    assert (error.errno, error.errno_family) == (errno.ENOENT, "posix")
    assert str(error) == (
        f"token file {missing}: no such file or directory (start the daemon with `sockbroker serve`, which "
        "writes it, or name another file with SOCKBROKER_TOKEN_FILE or give the token in SOCKBROKER_TOKEN)"
    )
    with pytest.raises(TokenFileError, match="is a directory, not a regular file"):
        read_token_file(tmp_path)


# -- the runtime file ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grpc", "rest"])
async def test_without_a_target_the_client_finds_the_daemon_in_its_runtime_file(
    daemon: Daemon, token_file: pathlib.Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    for variable in ("SOCKBROKER_GRPC", "SOCKBROKER_REST", "SOCKBROKER_RUNTIME_FILE", "SOCKBROKER_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    runtime = json.loads((token_file.parent / "runtime.json").read_text())
    assert runtime["pid"] == os.getpid()  # the test daemon's, on ports the kernel chose
    async with await AsyncBroker.connect(transport=kind, token_file=token_file) as broker:
        assert broker.session.startswith("ses_")


def _runtime(tmp_path: pathlib.Path, **content: object) -> pathlib.Path:
    return _file(tmp_path, json.dumps(content).encode(), name="runtime.json")


def test_the_runtime_file_names_the_daemon_s_addresses(tmp_path: pathlib.Path) -> None:
    path = _runtime(tmp_path, pid=os.getpid(), grpc_address="127.0.0.1:41000", rest_url="https://[::1]:41001")
    assert runtime_target("grpc", path) == "127.0.0.1:41000"
    assert runtime_target("rest", path) == "https://[::1]:41001"
    wildcard = _runtime(tmp_path, pid=os.getpid(), grpc_address="0.0.0.0:41000", rest_url="http://[::]:41001")
    assert runtime_target("grpc", wildcard) == "127.0.0.1:41000"  # a daemon on every address, reached on loopback
    assert runtime_target("rest", wildcard) == "http://[::1]:41001"


def test_a_stale_or_unusable_runtime_file_is_ignored(tmp_path: pathlib.Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead_pid = int(gone.stdout)
    assert runtime_target("grpc", _runtime(tmp_path, pid=dead_pid, grpc_address="127.0.0.1:41000")) is None
    assert runtime_target("grpc", _runtime(tmp_path, pid=0, grpc_address="127.0.0.1:41000")) is None
    assert runtime_target("grpc", _runtime(tmp_path, pid=os.getpid(), grpc_address=7)) is None
    assert runtime_target("rest", _runtime(tmp_path, pid=os.getpid(), rest_url="no scheme")) is None
    assert runtime_target("grpc", _file(tmp_path, b"{not json", name="runtime.json")) is None
    assert runtime_target("grpc", tmp_path / "absent.json") is None
    dev_zero = tmp_path / "zero.json"
    dev_zero.symlink_to("/dev/zero")
    assert runtime_target("grpc", dev_zero) is None
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo, 0o600)
    assert _within(5.0, lambda: runtime_target("grpc", fifo), release=fifo) == (None, None)


def test_sockbroker_runtime_file_names_the_runtime_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOCKBROKER_RUNTIME_FILE", raising=False)
    assert runtime_file(tmp_path / "token") == tmp_path / "runtime.json"
    monkeypatch.setenv("SOCKBROKER_RUNTIME_FILE", str(tmp_path / "elsewhere.json"))
    assert runtime_file(tmp_path / "token") == tmp_path / "elsewhere.json"
