"""The audit log (DESIGN §5): one JSON line per event of the core's hub (:mod:`.core.events`).

Every session open, resume, grace period and drop, every policy denial, every delegation made or
revoked, every admin action and every policy reload is one line::

    {"time": "2026-12-02T20:41:07.123456+00:00", "event": "policy.deny", "principal": "ci",
     "session": "ses_…", "operation": "tcp-connect", "target": "10.0.0.5:80",
     "reason": "tcp-connect: connect to 10.0.0.5:80 denied: not in allow_connect of …"}

``audit_log`` says where: a file path (appended, created 0600, never through a symbolic link),
``stderr``, or empty for the daemon's log (logger ``sockbroker.audit``, at INFO). A line that
cannot be written (a full disk) is a warning in the log, at most one a minute; the daemon goes on.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import pathlib
import stat
import sys
import time
from typing import TextIO

from . import files
from .core.events import Event

__all__ = ["AuditLog"]

log = logging.getLogger("sockbroker.audit")

#: Seconds between two warnings about lines the audit log could not write.
WARNING_PERIOD = 60.0


def line_of(event: Event) -> str:
    """The event as one JSON line (without its newline): ``time`` in ISO 8601, UTC, first."""
    members = event.as_dict()
    stamp = datetime.datetime.fromtimestamp(event.time, datetime.UTC).isoformat()
    return json.dumps({"time": stamp, **{k: v for k, v in members.items() if k != "time"}}, ensure_ascii=False)


class AuditLog:
    """A sink for :meth:`.core.events.Events.add_sink` writing one line per event."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._stream: TextIO | None = None
        if target == "stderr":
            self._stream = sys.stderr
        elif target:
            self._stream = _open_append(pathlib.Path(target))
        self._lost = 0
        self._next_warning = 0.0

    def __call__(self, event: Event) -> None:
        line = line_of(event)
        if self._stream is None:
            log.info("%s", line)
            return
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._lost += 1
            now = time.monotonic()
            if now >= self._next_warning:
                self._next_warning = now + WARNING_PERIOD
                log.warning("audit log %s: %d lines not written: %s", self.target, self._lost, exc)

    def close(self) -> None:
        if self._stream is not None and self._stream is not sys.stderr:
            with contextlib.suppress(OSError):  # what a full disk kept is lost: it was warned about
                self._stream.close()
        self._stream = None


def _open_append(path: pathlib.Path) -> TextIO:
    """``path`` opened to append, created 0600; a symbolic link or a non-regular file is refused."""
    where = f"--audit-log {path}"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise files.StartupError(f"{where}: is a symbolic link; the daemon does not follow links here") from None
        raise files.StartupError(f"{where}: {files.os_reason(exc)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise files.StartupError(f"{where}: not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)
