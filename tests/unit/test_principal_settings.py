"""``[principals.NAME]`` tables (DESIGN §5): each principal proves itself somehow, its names and
settings are checked before the daemon starts (or before a SIGHUP reload takes them), and the
token files it names are created private or refused when unsafe, as the default one is."""

from __future__ import annotations

import pathlib

import pytest
from pydantic import ValidationError
from sockbroker.config import Settings
from sockbroker.files import StartupError


def _load(tmp_path: pathlib.Path, text: str, **overrides: object) -> Settings:
    config = tmp_path / "sockbroker.toml"
    config.write_text(text)
    return Settings.load(config, token_file=tmp_path / "token", **overrides)


def test_a_two_principal_config_builds_default_and_each_principal(tmp_path: pathlib.Path) -> None:
    settings = _load(
        tmp_path,
        f"""
[principals.ci]
token_file = "{tmp_path / "ci.token"}"
max_sessions = 4

[principals.ci.policy]
allow_connect = ["10.0.0.0/8"]
allow_ports = ["443"]

[principals.ops]
unix_uid = [1000]
admin = true
""",
    )
    default, ci, ops = settings.principals_of()
    assert (default.name, default.admin) == ("default", True)
    assert default.token == (tmp_path / "token").read_text().strip()
    assert (ci.name, ci.admin, ci.max_sessions) == ("ci", False, 4)
    assert ci.token == (tmp_path / "ci.token").read_text().strip() and len(ci.token or "") >= 43
    assert (tmp_path / "ci.token").stat().st_mode & 0o777 == 0o600
    assert tuple(ci.policy.allow_connect) == ("10.0.0.0/8",) and not ci.policy.allow_handoff
    assert (ops.unix_uids, ops.admin, ops.token) == ((1000,), True, None)
    assert tuple(ops.policy.allow_connect) == ("127.0.0.0/8", "::1/128")  # the safe default


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ("[principals.ci]\nadmin = true\n", "a principal needs a way to prove itself"),
        ("[principals.default]\nunix_uid = [1]\n", "the default principal is set by the top-level settings"),
        ('[principals."a/b"]\nunix_uid = [1]\n', "a principal's name is letters, digits"),
        ('[principals.ci]\ntls_san = ["ci.example"]\n', "tls_subject and tls_san need tls_client_ca"),
        ('[principals.ci]\ntls_subject = "not a name"\n', "tls_subject"),
        ('[principals.ci]\nunix_uid = [1]\n[principals.ci.policy]\nallow_connect = ["10.0.0.0/33"]\n', "allow_connect"),
        ('[principals.ci]\nunix_uid = [1]\n[principals.ci.policy]\nallow_ports = ["70000"]\n', "allow_ports"),
        ("[principals.ci]\nunix_uid = [1]\nsurprise = 1\n", "surprise"),
    ],
)
def test_bad_principal_tables_are_refused_with_the_reason(tmp_path: pathlib.Path, table: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        _load(tmp_path, table)
    assert reason in str(info.value)


def test_an_unsafe_principal_token_file_is_refused(tmp_path: pathlib.Path) -> None:
    token = tmp_path / "ci.token"
    token.write_text("T" * 43 + "\n")
    token.chmod(0o622)  # others may write it
    settings = _load(tmp_path, f'[principals.ci]\ntoken_file = "{token}"\n')
    with pytest.raises(StartupError) as info:
        settings.principals_of()
    assert "[principals.ci] token_file" in str(info.value)


@pytest.mark.parametrize("mode", ["0660", "600", "0o600", "1777", "rw"])
def test_the_rest_unix_socket_mode_is_octal_permissions(tmp_path: pathlib.Path, mode: str) -> None:
    if mode in ("0660", "600", "0o600"):
        assert Settings.load(None, rest_unix_socket_mode=mode).rest_unix_socket_permissions == int(mode, 8)
    else:
        with pytest.raises(ValidationError):
            Settings.load(None, rest_unix_socket_mode=mode)
