"""Regenerate the Python code for proto/sockbroker/v1/*.proto into the wire package.

Run: python scripts/genproto.py [--check]
With --check, generate into a temporary folder and exit 1 if the committed code differs.

protoc sees ``-I proto`` and nothing else but its own ``google/protobuf`` files, so every proto
the repository needs is in the repository (``proto/google/api``, ``proto/google/rpc``): each of
them is compiled here too, which proves it, though only sockbroker's code is kept. protoc names
modules after the proto package (``sockbroker.v1``); the generated code is rewritten to import as
``sockbroker_wire.v1`` so that it cannot shadow the daemon's ``sockbroker`` package. The proto
package, and with it every gRPC service name (``/sockbroker.v1.Tcp/Accept``), stays as declared.
"""

from __future__ import annotations

import filecmp
import os
import pathlib
import re
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "proto" / "python" / "sockbroker_wire" / "v1"
GENERATED = ("broker_pb2.py", "broker_pb2.pyi", "broker_pb2_grpc.py")
PROTO_PACKAGE = "sockbroker.v1"
PYTHON_PACKAGE = "sockbroker_wire.v1"

# `from sockbroker.v1 import broker_pb2`, `import sockbroker.v1.broker_pb2` and the module name
# given to the descriptor builder ('sockbroker.v1.broker_pb2'): module paths, never service names.
_MODULE_PATH = re.compile(r"(?<![\w./])sockbroker\.v1(?=(?: import |\.\w+_pb2\b))")


def _rewrite(text: str) -> str:
    return _MODULE_PATH.sub(PYTHON_PACKAGE, text)


def generate(out: pathlib.Path) -> None:
    """Compile every proto under proto/ into a scratch folder; put sockbroker's code in ``out``."""
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
        out.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            text = pathlib.Path(scratch, *PROTO_PACKAGE.split("."), name).read_text()
            pathlib.Path(out, name).write_text(_rewrite(text))


def main() -> int:
    if "--check" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            generate(pathlib.Path(tmp))
            stale = [
                name
                for name in GENERATED
                if not (OUT / name).exists() or not filecmp.cmp(pathlib.Path(tmp, name), OUT / name, shallow=False)
            ]
        if stale:
            print("stale generated code (run python scripts/genproto.py):", *stale)
            return 1
        return 0
    generate(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
