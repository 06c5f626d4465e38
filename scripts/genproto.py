"""Regenerate the Python code for sockbroker's protos into the wire package.

Run: python scripts/genproto.py [--check]
With --check, generate into a temporary folder and exit 1 if the committed code differs.

protoc sees ``-I proto`` and nothing else but its own ``google/protobuf`` files, so every proto
the repository needs is in the repository (``proto/google/api``, ``proto/google/rpc``): each of
them is compiled here too, which proves it, though only sockbroker's code is kept. protoc names
modules after the proto package (``sockbroker.v1``, ``sockbroker.admin.v1``); the generated code is
rewritten to import as ``sockbroker_wire.v1`` / ``sockbroker_wire.admin.v1`` so that it cannot
shadow the daemon's ``sockbroker`` package. The proto package, and with it every gRPC service name
(``/sockbroker.v1.Tcp/Accept``, ``/sockbroker.admin.v1.Admin/ListSessions``), stays as declared.
"""

from __future__ import annotations

import filecmp
import os
import pathlib
import re
import sys
import tempfile
from dataclasses import dataclass

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
WIRE = ROOT / "proto" / "python" / "sockbroker_wire"


@dataclass(frozen=True)
class Package:
    """One proto package of sockbroker's and where its generated code goes in the wire package."""

    proto: str  # sockbroker.v1
    python: str  # sockbroker_wire.v1
    module: str  # broker: protoc writes broker_pb2.py, broker_pb2.pyi, broker_pb2_grpc.py

    @property
    def out(self) -> pathlib.Path:
        return WIRE.joinpath(*self.python.split(".")[1:])

    @property
    def generated(self) -> tuple[str, ...]:
        return tuple(f"{self.module}{suffix}" for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))

    def rewrite(self, text: str) -> str:
        """``from sockbroker.v1 import broker_pb2``, ``import sockbroker.v1.broker_pb2`` and the
        module name given to the descriptor builder (``'sockbroker.v1.broker_pb2'``): module paths,
        never service names (``/sockbroker.v1.Tcp/Accept``)."""
        path = re.compile(rf"(?<![\w./]){re.escape(self.proto)}(?=(?: import |\.\w+_pb2\b))")
        return path.sub(self.python, text)


PACKAGES = (
    Package("sockbroker.v1", "sockbroker_wire.v1", "broker"),
    Package("sockbroker.admin.v1", "sockbroker_wire.admin.v1", "admin"),
)


def generate(root: pathlib.Path) -> None:
    """Compile every proto under proto/ into a scratch folder; put sockbroker's code under ``root``
    (the wire package's folder, or a scratch copy of it), each package in its own folder."""
    builtin = pathlib.Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("*/**/*.proto"))
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{builtin}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *protos,
        ]
        cwd = os.getcwd()
        os.chdir(PROTO_ROOT)
        try:
            if protoc.main(args) != 0:
                raise SystemExit("protoc failed")
        finally:
            os.chdir(cwd)
        for package in PACKAGES:
            out = root / package.out.relative_to(WIRE)
            out.mkdir(parents=True, exist_ok=True)
            for name in package.generated:
                text = pathlib.Path(scratch, *package.proto.split("."), name).read_text()
                pathlib.Path(out, name).write_text(package.rewrite(text))


def main() -> int:
    if "--check" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            generate(pathlib.Path(tmp))
            stale = [
                str(path.relative_to(WIRE))
                for package in PACKAGES
                for path in (package.out / name for name in package.generated)
                if not path.exists() or not filecmp.cmp(pathlib.Path(tmp, path.relative_to(WIRE)), path, shallow=False)
            ]
        if stale:
            print("stale generated code (run python scripts/genproto.py):", *stale)
            return 1
        return 0
    generate(WIRE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
