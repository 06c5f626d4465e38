"""The house rules that keep the layers apart (STYLE.md §1, §3, §8)."""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DAEMON = ROOT / "daemon" / "sockbroker"
FORBIDDEN = (
    "grpc",
    "grpc_status",
    "grpc_health",
    "grpc_reflection",
    "google.protobuf",
    "google.rpc",
    "google.api",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic_settings",
    "uvicorn",
    "sockbroker_wire",  # the wire package pulls protobuf and grpc in
)


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((DAEMON / "core").glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_front_door_library(path: pathlib.Path) -> None:
    bad = {name for name in _imports(path) for f in FORBIDDEN if name == f or name.startswith(f + ".")}
    assert not bad, f"{path.name} imports {bad}"


PUBLIC = [p for p in sorted(DAEMON.rglob("*.py")) if "v1" not in p.parts and p.name not in ("__main__.py",)]


@pytest.mark.parametrize("path", PUBLIC, ids=lambda p: str(p.relative_to(DAEMON)))
def test_every_module_declares_its_exports(path: pathlib.Path) -> None:
    relative = path.relative_to(DAEMON.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    module = importlib.import_module(".".join(parts))
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module.__name__} has no __all__"
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"


def test_client_exports_exist() -> None:
    import sockbroker_client

    for name in sockbroker_client.__all__:
        assert hasattr(sockbroker_client, name)


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "genproto.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
