"""The ``sockbroker`` console script: ``serve`` runs the daemon (every setting of
:class:`~sockbroker.config.Settings` is a flag); the client commands (``status``, ``token``,
``connect``, ``listen``, ``udp``) are in :mod:`.cli_client`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import pathlib
import sys
import typing
from collections.abc import Sequence

from pydantic import ValidationError

from . import __version__
from .cli_client import add_commands
from .cli_client import run as run_client
from .config import FILE_ONLY, Settings
from .files import StartupError

__all__ = ["main"]


def _flag_type(annotation: object) -> tuple[dict[str, object], bool]:
    """argparse keywords for a field's annotation, and whether it is a list."""
    args = typing.get_args(annotation)
    inner = next((a for a in args if a is not type(None)), annotation) if args else annotation
    if typing.get_origin(inner) is list or typing.get_origin(annotation) is list:
        return {"nargs": "*", "metavar": "VALUE"}, True
    if inner is bool:
        return {"action": argparse.BooleanOptionalAction}, False
    if inner in (int, float):
        return {"type": inner}, False
    if inner is pathlib.Path:
        return {"type": pathlib.Path, "metavar": "PATH"}, False
    return {"type": str}, False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sockbroker",
        description="Lend real TCP and UDP sockets over gRPC and REST.",
        epilog="examples:\n  sockbroker serve\n  sockbroker status\n  sockbroker listen 9000 > received.bin\n"
        "  sockbroker connect 127.0.0.1 9000 < file.bin\n  sockbroker udp send 127.0.0.1 9999 hello\n"
        "\n`sockbroker COMMAND --help` describes each command, with examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sockbroker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the daemon",
        description="Run the daemon. Settings come from flags, then SOCKBROKER_* variables, then --config, "
        "then the embedded defaults (loopback only, a fresh token file). Principals besides `default` are "
        "[principals.NAME] tables of the --config file (docs/security.md); SIGHUP reads them again.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument(
        "--config", type=pathlib.Path, metavar="PATH", help="TOML file of settings (keys as below, with _)"
    )
    for name, field in Settings.model_fields.items():
        if name in FILE_ONLY:
            continue
        keywords, _ = _flag_type(field.annotation)
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg,unused-ignore]
        serve.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=argparse.SUPPRESS,
            help=f"{field.description} (default: {default}; env SOCKBROKER_{name.upper()})",
            **keywords,  # type: ignore[arg-type]
        )
    add_commands(commands)
    return parser


#: glibc's ``mallopt`` parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def _few_malloc_arenas() -> None:
    """Two malloc arenas for the whole process, set before any thread starts. glibc gives every
    thread that allocates (gRPC core's, the executor's) an arena of its own, up to 8 per core, and
    each keeps what was freed in it: the daemon's memory would stay grown long after the bytes it
    buffered were freed (DESIGN §7 P8). A libc without ``mallopt`` is left as it is."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)


def main(argv: Sequence[str] | None = None) -> int:
    _few_malloc_arenas()
    parser = build_parser()
    parsed = parser.parse_args(argv)
    if parsed.command != "serve":
        return run_client(parser, parsed)
    arguments = vars(parsed)
    arguments.pop("command")
    config = arguments.pop("config", None)
    try:
        settings = Settings.load(config, **arguments)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"sockbroker: bad settings:\n{exc}", file=sys.stderr)
        return 2
    from .server import Daemon, configure_logging

    configure_logging(settings)  # before anything logs: text, or JSON lines (--log-format)
    insecure = settings.insecure_remote_doors()
    if insecure and not settings.allow_insecure_remote:
        print(
            "sockbroker: refusing to listen off loopback without TLS on "
            + ", ".join(insecure)
            + " (give --tls-cert/--tls-key, or --allow-insecure-remote)",
            file=sys.stderr,
        )
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; the daemon runs without it
        runner = asyncio.run
    else:
        runner = uvloop.run

    async def run() -> None:
        await Daemon(settings, reload=lambda: Settings.load(config, **arguments)).run()

    try:
        runner(run())
    except StartupError as exc:  # a busy address, an unsafe token file...: one line, no traceback
        print(f"sockbroker: {exc}", file=sys.stderr)
        return 2
    return 0
