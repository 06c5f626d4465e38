from __future__ import annotations

import pytest
from sockbroker.core.errors import PermissionDeniedError
from sockbroker.core.policy import Policy, parse_port_ranges


def test_default_policy_allows_loopback_only() -> None:
    policy = Policy()
    policy.check_connect("t", "127.0.0.1", 80)
    policy.check_connect("t", "::1", 80)
    policy.check_connect("t", "::ffff:127.0.0.1", 80)
    for host in ("10.0.0.1", "0.0.0.0", "::", "not-an-address"):
        with pytest.raises(PermissionDeniedError):
            policy.check_connect("t", host, 80)
    with pytest.raises(PermissionDeniedError):
        policy.check_listen("t", "0.0.0.0", 0)
    with pytest.raises(PermissionDeniedError):
        policy.check_multicast("t", "239.255.0.1")


def test_ports_are_restricted_by_ranges() -> None:
    policy = Policy(allow_ports=("1024-2048", "8080"))
    policy.check_connect("t", "127.0.0.1", 8080)
    policy.check_listen("t", "127.0.0.1", 0)  # ephemeral
    with pytest.raises(PermissionDeniedError) as info:
        policy.check_connect("t", "127.0.0.1", 22)
    assert "port" in info.value.message


def test_port_ranges_are_validated() -> None:
    assert parse_port_ranges(["1-3", "7"]) == ((1, 3), (7, 7))
    for bad in (["3-1"], ["x"], ["70000"]):
        with pytest.raises(ValueError):
            parse_port_ranges(bad)
