"""Regenerate the Python code for proto/sockbroker/v1/*.proto into daemon/sockbroker/v1/.

Run: python scripts/genproto.py [--check]
With --check, generate into a temporary folder and exit 1 if the committed code differs.
"""

from __future__ import annotations

import filecmp
import os
import pathlib
import sys
import tempfile

import google.api
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "daemon"
GENERATED = ("broker_pb2.py", "broker_pb2.pyi", "broker_pb2_grpc.py")


def generate(out: pathlib.Path) -> None:
    googleapis = pathlib.Path(next(iter(google.api.__path__))).parent.parent
    builtin = pathlib.Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "sockbroker/v1").glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{googleapis}",
        f"-I{builtin}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
    finally:
        os.chdir(cwd)


def main() -> int:
    if "--check" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            generate(pathlib.Path(tmp))
            stale = [
                name
                for name in GENERATED
                if not filecmp.cmp(
                    pathlib.Path(tmp, "sockbroker/v1", name), OUT / "sockbroker/v1" / name, shallow=False
                )
            ]
        if stale:
            print("stale generated code (run python scripts/genproto.py):", *stale)
            return 1
        return 0
    generate(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
