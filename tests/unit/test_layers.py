"""What the daemon and its clients share: the wire package, and nothing else (DESIGN.md §1, §9)."""

from __future__ import annotations

import ast
import importlib
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "clients"
WIRE = ROOT / "proto" / "python" / "sockbroker_wire"


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every absolute module an import statement names (``from a.b import c`` → a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _daemon_imports(path: pathlib.Path) -> set[str]:
    return {name for name in _imported_modules(path) if name == "sockbroker" or name.startswith("sockbroker.")}


@pytest.mark.parametrize("path", sorted(CLIENTS.rglob("*.py")), ids=lambda p: str(p.relative_to(CLIENTS)))
def test_no_client_module_imports_the_daemon(path: pathlib.Path) -> None:
    assert not _daemon_imports(path), f"{path.relative_to(ROOT)} imports {_daemon_imports(path)}"


@pytest.mark.parametrize("path", sorted(WIRE.rglob("*.py")), ids=lambda p: str(p.relative_to(WIRE)))
def test_the_wire_package_imports_nothing_from_the_daemon(path: pathlib.Path) -> None:
    assert not _daemon_imports(path), f"{path.relative_to(ROOT)} imports {_daemon_imports(path)}"


def test_the_scan_would_see_a_daemon_import(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import sockbroker_wire\nfrom sockbroker import core\nfrom sockbroker.core.api import Broker\n")
    assert _daemon_imports(sample) == {
        "sockbroker",
        "sockbroker.core",
        "sockbroker.core.api",
        "sockbroker.core.api.Broker",
    }


_WITHOUT_THE_DAEMON = """
import asyncio, socket, sys
sys.modules["sockbroker"] = None  # any import of the daemon package now fails
import sockbroker_client
from sockbroker_client import BrokerUnavailableError
from sockbroker_client._transport import GrpcTransport, RestTransport

assert not [name for name in sys.modules if name == "sockbroker" or name.startswith("sockbroker.")
            if sys.modules[name] is not None], "the daemon package was imported"

def closed_port():
    with socket.socket() as probe:  # bound then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

async def main():
    port = closed_port()
    for transport in (GrpcTransport(f"127.0.0.1:{port}", "t"), RestTransport(f"http://127.0.0.1:{port}", "t")):
        try:
            await asyncio.wait_for(transport.call("Sessions.Open", {}, None), 20)
        except BrokerUnavailableError as exc:
            assert f"127.0.0.1:{port}" in exc.message and "\\n" not in exc.message, exc.message
            print(transport.name, exc.kind, exc.message)
        else:
            raise AssertionError("a call to nothing succeeded")
        finally:
            await transport.aclose()

asyncio.run(main())
"""


def test_the_client_works_without_the_daemon_package() -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / part) for part in ("proto/python", "clients/python"))
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_THE_DAEMON], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["grpc", "unavailable"], ["rest", "unavailable"]], lines


@pytest.mark.parametrize(
    "path", sorted(p for p in WIRE.rglob("*.py") if "v1" not in p.parts), ids=lambda p: str(p.relative_to(WIRE))
)
def test_every_wire_module_declares_its_exports(path: pathlib.Path) -> None:
    relative = path.relative_to(WIRE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    module = importlib.import_module(".".join(parts))
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module.__name__} has no __all__"
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
