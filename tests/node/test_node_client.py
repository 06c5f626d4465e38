"""The Node client (clients/node) against a real daemon: `node --test` and `tsc --noEmit`.

The daemon runs in this process on 127.0.0.1 port 0, with a policy that lets clients connect
and send to 127.0.0.1 and ::1 only, so the Node tests can show a denied target (127.0.0.2)
without a packet leaving loopback. Node finds it through ``SOCKBROKER_GRPC`` and
``SOCKBROKER_TOKEN_FILE``; the token file's principal is an admin, and a second principal that
is not one (``viewer``, its token in ``SOCKBROKER_TEST_VIEWER_TOKEN``) shows the admin API's
refusal. Node and the packages come from ``scripts/setup.sh --test`` (apt's
nodejs and npm, then ``npm ci`` in clients/node); when either is missing the test fails and says
so, it does not skip.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import shutil
from collections.abc import AsyncIterator

import pytest
from helpers import daemon_settings, run_bounded
from sockbroker.core.broker import Principal
from sockbroker.server import Daemon

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "clients" / "node"
#: The whole Node run is bounded; it takes about 10 s on an idle machine.
NODE_SECONDS = 120


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `bash scripts/setup.sh --test` (it installs nodejs and npm)")
    if not (PACKAGE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail(f"the Node client's packages are missing: run `npm ci` in {PACKAGE} (scripts/setup.sh --test does)")
    return node


@pytest.fixture(scope="module")
async def node_daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Daemon, pathlib.Path, str]]:
    token_file = tmp_path_factory.mktemp("node-daemon") / "token"
    settings = daemon_settings(token_file, allow_connect=["127.0.0.1/32", "::1/128"])
    daemon = Daemon(settings)
    await daemon.start()
    # A principal that is not an admin (its policy is the default principal's).
    viewer_token = secrets.token_urlsafe(32)
    daemon.broker.principals.append(Principal("viewer", viewer_token, daemon.broker.principals[0].policy))
    try:
        yield daemon, token_file, viewer_token
    finally:
        await daemon.stop()


@pytest.mark.timeout(NODE_SECONDS + 30)
async def test_node_client(node_daemon: tuple[Daemon, pathlib.Path, str]) -> None:
    node = _node()
    daemon, token_file, viewer_token = node_daemon
    env = {
        **os.environ,
        "SOCKBROKER_GRPC": f"127.0.0.1:{daemon.grpc_port}",
        "SOCKBROKER_TOKEN_FILE": str(token_file),
        "SOCKBROKER_TEST_VIEWER_TOKEN": viewer_token,
        "NO_COLOR": "1",
    }
    env.pop("SOCKBROKER_TOKEN", None)
    tests = sorted(str(path.relative_to(PACKAGE)) for path in (PACKAGE / "test").glob("*.test.js"))
    status, output = await run_bounded(
        node,
        "--test",
        "--test-concurrency=1",
        "--test-reporter=spec",
        *tests,
        seconds=NODE_SECONDS,
        cwd=PACKAGE,
        env=env,
    )
    assert status == 0, f"node --test failed (exit {status}):\n{output}"
    assert "ℹ fail 0" in output, output


@pytest.mark.timeout(NODE_SECONDS + 30)
async def test_node_types() -> None:
    """The shipped index.d.ts describes the JavaScript: a typed first session compiles."""
    node = _node()
    tsc = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    status, output = await run_bounded(
        node, str(tsc), "--noEmit", "-p", "test/tsconfig.json", seconds=NODE_SECONDS, cwd=PACKAGE
    )
    assert status == 0, f"tsc --noEmit failed (exit {status}):\n{output}"
