"""The audit log (DESIGN §5): one JSON line per event, appended to a private file that is never
reached through a link; a line that cannot be written costs a warning, not the daemon."""

from __future__ import annotations

import json
import logging
import pathlib

import pytest
from sockbroker.audit import AuditLog
from sockbroker.core.events import Event
from sockbroker.files import StartupError


def test_lines_are_appended_to_a_private_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "audit.jsonl"
    for _ in range(2):  # a second daemon appends
        audit = AuditLog(str(path))
        audit(Event("policy.deny", "ci", "ses_1", "tcp-connect", "10.0.0.5:80", "denied", time=0.5))
        audit.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert (
        lines
        == [
            {
                "time": "1970-01-01T00:00:00.500000+00:00",
                "event": "policy.deny",
                "principal": "ci",
                "session": "ses_1",
                "operation": "tcp-connect",
                "target": "10.0.0.5:80",
                "reason": "denied",
            }
        ]
        * 2
    )
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_link_or_a_directory_is_refused(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(StartupError, match="symbolic link"):
        AuditLog(str(link))
    with pytest.raises(StartupError, match="is a directory"):
        AuditLog(str(tmp_path))


def test_without_a_path_lines_go_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sockbroker.audit"):
        AuditLog("")(Event("session.open", "default", "ses_2", "Sessions.Open"))
    assert json.loads(caplog.records[-1].getMessage())["session"] == "ses_2"


def test_a_failed_write_is_one_warning_and_the_daemon_goes_on(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not pathlib.Path("/dev/full").exists():
        pytest.fail("/dev/full is missing: this test needs Linux's always-full device")
    audit = AuditLog(str(tmp_path / "audit.jsonl"))
    audit.close()
    audit._stream = open("/dev/full", "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - every write: ENOSPC
    try:
        with caplog.at_level(logging.WARNING, logger="sockbroker.audit"):
            for _ in range(3):
                audit(Event("session.drop", "default", "ses_3"))
    finally:
        audit.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lines not written" in warnings[0].getMessage()
