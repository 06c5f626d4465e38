from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


# ───────────────────────────── intersection (delegation) ─────────────────────────────

_V4_NETWORKS = st.builds(
    lambda address, prefix: str(ipaddress.ip_network((address, prefix), strict=False)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
_PORT_RANGES = st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(lambda r: f"{min(r)}-{max(r)}")


def _allows(check: object, *arguments: object) -> bool:
    try:
        check(*arguments)  # type: ignore[operator]
    except PermissionDeniedError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_V4_NETWORKS, max_size=4),
    st.lists(_V4_NETWORKS, max_size=4),
    st.lists(_PORT_RANGES, min_size=1, max_size=3),
    st.lists(_PORT_RANGES, max_size=3),
    st.integers(0, 2**32 - 1),
    st.integers(1, 65535),
)
def test_an_intersection_allows_exactly_what_both_allow(
    ours: list[str], theirs: list[str], our_ports: list[str], their_ports: list[str], address: int, port: int
) -> None:
    """A delegated token's policy is never wider than the delegating session's nor than the lists
    it was given, and loses nothing both allow: for any address and port, on every check."""
    a = Policy(allow_connect=ours, allow_listen=ours, allow_ports=our_ports, allow_multicast=ours)
    b = Policy(allow_connect=theirs, allow_listen=theirs, allow_ports=their_ports, allow_multicast=theirs)
    both = a.intersect(b, "the delegation dlg_test")
    host = str(ipaddress.IPv4Address(address))
    for check in ("check_connect", "check_listen"):
        expected = _allows(getattr(a, check), "t", host, port) and _allows(getattr(b, check), "t", host, port)
        assert _allows(getattr(both, check), "t", host, port) == expected
    expected = _allows(a.check_multicast, "t", host) and _allows(b.check_multicast, "t", host)
    assert _allows(both.check_multicast, "t", host) == expected


def test_an_intersection_keeps_hand_off_only_when_both_allow_it_and_names_its_origin() -> None:
    assert not Policy(allow_handoff=True).intersect(Policy(allow_handoff=False), "x").allow_handoff
    assert Policy(allow_handoff=True).intersect(Policy(allow_handoff=True), "x").allow_handoff
    narrowed = Policy().intersect(Policy(allow_connect=["127.0.0.1/32"]), "the delegation dlg_1")
    with pytest.raises(PermissionDeniedError) as info:
        narrowed.check_connect("tcp-connect", "127.0.0.2", 80)
    assert "not in allow_connect of the delegation dlg_1 (add 127.0.0.2/32 there)" in info.value.message


def test_multicast_is_sent_only_on_allowed_interfaces() -> None:
    policy = Policy(allow_multicast_interface=["127.0.0.0/8"])
    policy.check_multicast_interface("udp-send-to", "127.0.0.1")
    for interface in ("0.0.0.0", "10.0.0.1"):
        with pytest.raises(PermissionDeniedError):
            policy.check_multicast_interface("udp-send-to", interface)
    Policy(allow_multicast_interface=["0.0.0.0/32"]).check_multicast_interface("udp-send-to", "0.0.0.0")
