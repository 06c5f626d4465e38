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


def test_v4_mapped_ipv6_addresses_are_judged_as_ipv4() -> None:
    # An IPv6 socket reaches IPv4 through ::ffff:a.b.c.d (udp-send-to, udp-connect!), so the
    # policy must see the IPv4 address: IPv6 rules never let a forbidden IPv4 address through,
    # and IPv4 rules hold for the mapped form too.
    policy = Policy(allow_connect=("::/0", "127.0.0.0/8"), allow_listen=("::/0",))
    policy.check_connect("t", "2001:db8::1", 80)
    policy.check_connect("t", "::ffff:127.0.0.1", 80)
    for host in ("::ffff:10.0.0.1", "::ffff:0a00:0001", "::FFFF:10.0.0.1"):
        with pytest.raises(PermissionDeniedError):
            policy.check_connect("t", host, 80)
    with pytest.raises(PermissionDeniedError):
        policy.check_listen("t", "::ffff:127.0.0.1", 0)
    with pytest.raises(PermissionDeniedError):
        Policy(allow_multicast=("ff00::/8",)).check_multicast("t", "::ffff:239.255.0.1")
