"""Where the daemon and its clients look for things by default (one rule for both)."""

from __future__ import annotations

import os
import pathlib

__all__ = ["default_token_file"]


def default_token_file() -> pathlib.Path:
    """``$XDG_RUNTIME_DIR/sockbroker/token``, else ``~/.local/share/sockbroker/token``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = pathlib.Path(runtime) if runtime else pathlib.Path.home() / ".local" / "share"
    return base / "sockbroker" / "token"
