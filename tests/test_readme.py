"""The README's first session runs as written.

The daemon is started with the README's first command (``bash scripts/serve.sh``: the embedded
defaults, gRPC on 127.0.0.1:50051 and REST on 127.0.0.1:8080, free in the suite's private network
namespace) with ``XDG_RUNTIME_DIR`` and ``HOME`` in a temporary directory, so the token and the
runtime file land where the README says. Then every code block of "A first session" runs as it
is, each in a fresh process started in the repository (as the README's user, who just ran
``scripts/serve.sh``), and must exit 0. What the README says a block shows is checked too: a
``# → X`` (or ``; → X``) line whose X is literal JSON or one word must be a line of the block's output (handles
shortened with "…" and descriptions are not compared), and ``print(...)  # X`` (or
``console.log(...); // X``) must print ``X``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SECTION = "## A first session"

#: How each language of a block is run: the command, given the block's text on stdin.
RUNNERS = {
    "sh": ["bash", "-euo", "pipefail", "-s"],
    "python": [sys.executable, "-"],
    "js": ["node", "-"],
    # Saved as hello.rkt and run as the README says, with the drop-in collection on the path.
    "racket": [
        "bash",
        "-c",
        'd=$(mktemp -d) && trap \'rm -r "$d"\' EXIT && cat >"$d/hello.rkt" && '
        'PLTCOLLECTS=$PWD/clients/racket: racket "$d/hello.rkt"',
    ],
}


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # where it starts in README.md

    def expected(self) -> list[str]:
        """The lines the README says the block prints: ``# → X`` with X literal JSON or one word
        (not a description, nor handles shortened with "…"), unless the command it describes
        captures its output (``NAME=$(…``); and ``X`` of ``print(…)  # X`` or ``console.log(…); // X``."""
        wanted = []
        lines = self.text.splitlines()
        for at, line in enumerate(lines):
            if shown := re.match(r"\s*(?:#|;)\s*→\s*(.+)$", line):
                command = next((c for c in lines[at + 1 :] if not c.lstrip().startswith("#")), "")
                word = shown[1] if re.fullmatch(r"\w+", shown[1]) else None
                value = None if "…" in shown[1] else _json(shown[1]) or word
                if value is not None and not re.match(r"\w+=\$\(", command):
                    wanted.append(value)
            elif printed := re.match(r"\s*(?:print|console\.log)\(.*\)[\s;]*(?:#|//)\s*(.+)$", line):
                wanted.append(printed[1].strip())
        return wanted


def _json(text: str) -> str | None:
    """``text`` as compact JSON, or None when it is not JSON."""
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return None


def first_session_blocks() -> list[Block]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end >= 0 else len(text)]
    offset = text[:start].count("\n")
    blocks = []
    for found in re.finditer(r"^```(\w+)\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL):
        line = offset + section[: found.start()].count("\n") + 1
        blocks.append(Block(found[1], found[2], line))
    return blocks


BLOCKS = first_session_blocks()


def test_the_first_session_has_a_block_per_way_in() -> None:
    assert sorted({b.language for b in BLOCKS}) == sorted(RUNNERS), "a README block no runner knows, or a way in gone"
    assert all(b.expected() for b in BLOCKS), "every block shows what it prints"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The README's daemon, started as the README starts it; the environment of the README's user."""
    root = tmp_path_factory.mktemp("readme")
    runtime_dir = root / "run"
    runtime_dir.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime_dir), HOME=str(root))
    for name in [n for n in env if n.startswith("SOCKBROKER_")]:
        del env[name]
    runtime = runtime_dir / "sockbroker" / "runtime.json"
    log = root / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(["bash", "scripts/serve.sh"], cwd=REPO, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while not _started(runtime, daemon.pid):
            assert daemon.poll() is None and time.monotonic() < deadline, (
                f"the daemon did not start:\n{log.read_text()}"
            )
            time.sleep(0.05)
        yield env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            assert daemon.wait(timeout=15) == 0, log.read_text()
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


def _started(runtime: pathlib.Path, pid: int) -> bool:
    try:
        return bool(json.loads(runtime.read_text()).get("pid") == pid)  # serve.sh execs the daemon
    except (OSError, ValueError):
        return False


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.language}-line{b.line}" for b in BLOCKS])
def test_the_block_runs_as_written(block: Block, home: dict[str, str]) -> None:
    result = subprocess.run(
        RUNNERS[block.language], input=block.text, env=home, cwd=REPO,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    shown = f"README.md line {block.line} ({block.language}):\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, shown
    lines = [_json(line) or line.strip() for line in result.stdout.splitlines()]
    for wanted in block.expected():
        assert wanted in lines, f"the README says the block prints {wanted}; {shown}"
