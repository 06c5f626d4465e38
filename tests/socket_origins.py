"""Where each socket of the test process was made, named when one is left to the collector.

A socket dropped without ``close()`` is closed by the garbage collector, and its ResourceWarning
becomes an error (``filterwarnings = error``) in whatever test happens to run then, naming only
the socket's addresses. This plugin notes the frames that made each socket (a few tuples, cheap)
and adds them to that error, so that it names the code at fault.
"""

from __future__ import annotations

import socket
import sys
import types
from typing import Any

import pytest

__all__ = ["made_at"]

#: Frames noted per socket.
FRAMES = 10
#: id(socket) → where it was made, for sockets not closed yet.
_origins: dict[int, list[tuple[str, int, str]]] = {}
_init = socket.socket.__init__
_real_close = socket.socket._real_close  # type: ignore[attr-defined]
_detach = socket.socket.detach


def _noted_init(self: socket.socket, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    frames: list[tuple[str, int, str]] = []
    frame = sys._getframe(1)
    while frame is not None and len(frames) < FRAMES:
        frames.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back  # type: ignore[assignment]
    _origins[id(self)] = frames


def _noted_close(self: socket.socket, *args: Any) -> None:
    _origins.pop(id(self), None)
    _real_close(self, *args)


def _noted_detach(self: socket.socket) -> int:
    _origins.pop(id(self), None)
    return _detach(self)


def made_at(sock: socket.socket) -> str | None:
    """Where the open socket ``sock`` was made, innermost frame first; None once closed."""
    frames = _origins.get(id(sock))
    return None if frames is None else "\n".join(f"  {name} ({path}:{line})" for path, line, name in frames)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Note every socket from now on, and wrap pytest's unraisable-exception hook (installed by
    its own ``pytest_configure``) so that an unclosed socket's error says where it was made."""
    socket.socket.__init__ = _noted_init  # type: ignore[method-assign]
    socket.socket._real_close = _noted_close  # type: ignore[attr-defined]
    socket.socket.detach = _noted_detach  # type: ignore[method-assign,assignment]
    report = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        where = made_at(unraisable.object) if isinstance(unraisable.object, socket.socket) else None
        if where is not None:
            unraisable = types.SimpleNamespace(
                err_msg=f"{unraisable.err_msg or 'Exception ignored in'} (a socket made at\n{where}\n)",
                object=unraisable.object,
                exc_type=unraisable.exc_type,
                exc_value=unraisable.exc_value,
                exc_traceback=unraisable.exc_traceback,
            )
        report(unraisable)

    sys.unraisablehook = hook
