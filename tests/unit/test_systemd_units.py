"""The systemd units in deploy/systemd match the daemon they start (issue 11): every ExecStart=
flag is one `sockbroker serve` accepts, every SOCKBROKER_* variable names a setting, the service
is Type=notify, and every socket a unit passes has a name the daemon takes. Checked by parsing
the files (systemd-analyze is not needed; deploy/systemd/README.md says how to verify on a host)."""

from __future__ import annotations

import argparse
import pathlib
import shlex

import pytest
from sockbroker.cli import build_parser
from sockbroker.config import Settings, is_loopback, split_address
from sockbroker.systemd import DOOR_NAMES

SYSTEMD = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNITS = sorted([*SYSTEMD.glob("sockbroker.*"), *SYSTEMD.glob("examples/*")])
SOCKETS = [path for path in UNITS if path.suffix == ".socket"]

Unit = dict[str, list[tuple[str, str]]]


def parse(path: pathlib.Path) -> Unit:
    """A unit file's sections, each a list of (key, value) in order (a key may repeat)."""
    unit: Unit = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.setdefault(section, [])
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None, f"{path.name}: not a KEY=value line in a section: {raw!r}"
        unit[section].append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


def test_the_service_is_type_notify_and_its_command_is_one_serve_accepts() -> None:
    service = parse(SYSTEMD / "sockbroker.service")
    assert values(service, "Service", "Type") == ["notify"]
    assert values(service, "Service", "NotifyAccess") == ["main"]
    (command,) = values(service, "Service", "ExecStart")
    argv = shlex.split(command)
    assert argv[0].endswith("/sockbroker") and argv[1] == "serve"
    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    accepted = {option for action in commands.choices["serve"]._actions for option in action.option_strings}
    flags = [word.partition("=")[0] for word in argv[2:] if word.startswith("-")]
    assert flags and set(flags) <= accepted, f"ExecStart has flags `sockbroker serve` does not accept: {flags}"
    parsed = parser.parse_args(argv[1:])  # values of the right type too (a SystemExit otherwise)
    assert parsed.command == "serve"


@pytest.mark.parametrize("path", [p for p in UNITS if p.suffix in (".service", ".conf")], ids=lambda p: p.name)
def test_every_sockbroker_variable_names_a_setting(path: pathlib.Path) -> None:
    unit = parse(path)
    for assignment in values(unit, "Service", "Environment"):
        for word in shlex.split(assignment):
            name = word.partition("=")[0]
            if name.startswith("SOCKBROKER_"):
                assert name[len("SOCKBROKER_") :].lower() in Settings.model_fields, f"{path.name}: {name}"


@pytest.mark.parametrize("path", SOCKETS, ids=lambda p: p.name)
def test_every_socket_unit_passes_a_socket_the_daemon_takes(path: pathlib.Path) -> None:
    unit = parse(path)
    (name,) = values(unit, "Socket", "FileDescriptorName")
    assert name in DOOR_NAMES, f"{path.name}: FileDescriptorName={name}; the daemon takes {sorted(DOOR_NAMES)}"
    assert values(unit, "Socket", "Service") == ["sockbroker.service"]
    assert values(unit, "Socket", "Accept") in ([], ["no"])  # one listening socket, not one process a connection
    listens = values(unit, "Socket", "ListenStream")
    assert listens and not any(values(unit, "Socket", key) for key in ("ListenDatagram", "ListenSequentialPacket"))
    for listen in listens:
        if listen.startswith("/"):  # a Unix socket: the channel door's, the service user's alone
            assert name == "channel"
            assert values(unit, "Socket", "SocketMode") == ["0600"]
            assert values(unit, "Socket", "SocketUser") == ["sockbroker"]
        else:  # as shipped, loopback only: off loopback the daemon wants TLS
            assert is_loopback(split_address(listen)[0]), f"{path.name}: ListenStream={listen}"


def test_the_sockets_a_drop_in_lists_are_shipped() -> None:
    shipped = {path.name for path in SOCKETS}
    listed = [
        name
        for path in UNITS
        if path.suffix == ".conf"
        for line in values(parse(path), "Service", "Sockets")
        for name in line.split()
    ]
    assert listed and set(listed) <= shipped
