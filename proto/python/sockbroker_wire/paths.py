"""Where the daemon and its clients look for things by default (one rule for both)."""

from __future__ import annotations

import os
import pathlib

__all__ = ["RUNTIME_FILE_NAME", "default_runtime_file", "default_token_file"]

#: The runtime file's name, in the token file's directory unless ``--runtime-file`` says otherwise.
RUNTIME_FILE_NAME = "runtime.json"


def default_token_file() -> pathlib.Path:
    """``$XDG_RUNTIME_DIR/sockbroker/token``, else ``~/.local/share/sockbroker/token``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = pathlib.Path(runtime) if runtime else pathlib.Path.home() / ".local" / "share"
    return base / "sockbroker" / "token"


def default_runtime_file(token_file: pathlib.Path | None = None) -> pathlib.Path:
    """``runtime.json`` beside ``token_file`` (default: :func:`default_token_file`).

    The daemon writes there, mode 0600, what it really bound (port 0 resolved), its pid and its
    token file's path, so a client or the CLI finds a daemon started on any port.
    """
    return (token_file if token_file is not None else default_token_file()).parent / RUNTIME_FILE_NAME
