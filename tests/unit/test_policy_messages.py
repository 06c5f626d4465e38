"""A policy denial names what was denied and the setting that would allow it (DESIGN §5, in the
spirit of Deno's ``--allow-net``): the core builds the words, so both doors say the same."""

from __future__ import annotations

import pytest
from sockbroker.core.errors import PermissionDeniedError
from sockbroker.core.policy import Policy


def _denial(check: object, *arguments: object) -> PermissionDeniedError:
    with pytest.raises(PermissionDeniedError) as info:
        check(*arguments)  # type: ignore[operator]
    return info.value


@pytest.mark.parametrize(
    ("who", "host", "port", "first_line"),
    [
        (
            "tcp-connect",
            "10.0.0.5",
            80,
            "tcp-connect: connect to 10.0.0.5:80 denied: not in --allow-connect "
            "(add 10.0.0.5/32, or allow_connect in the config's [policy] table)",
        ),
        (
            "udp-send-to",
            "2001:db8::1",
            53,
            "udp-send-to: send to [2001:db8::1]:53 denied: not in --allow-connect "
            "(add 2001:db8::1/128, or allow_connect in the config's [policy] table)",
        ),
        (
            "tcp-connect",
            "127.0.0.1",
            22,
            "tcp-connect: connect to 127.0.0.1:22 denied: not in --allow-ports "
            "(add 22, or allow_ports in the config's [policy] table)",
        ),
    ],
)
def test_a_connect_denial_names_the_setting_that_would_allow_it(
    who: str, host: str, port: int, first_line: str
) -> None:
    denial = _denial(Policy(allow_ports=("1000-2000",)).check_connect, who, host, port)
    assert denial.message.splitlines()[0] == first_line
    assert denial.details["address"] == host and denial.details["port number"] == port


def test_listen_and_bind_denials_name_allow_listen() -> None:
    policy = Policy()
    tcp = _denial(policy.check_listen, "tcp-listen", "0.0.0.0", 0)
    assert tcp.message.splitlines()[0] == (
        "tcp-listen: listen on 0.0.0.0:0 denied: not in --allow-listen "
        "(add 0.0.0.0/32, or allow_listen in the config's [policy] table)"
    )
    udp = _denial(policy.check_listen, "udp-bind!", "::", 5000)
    assert udp.message.startswith("udp-bind!: bind to [::]:5000 denied: not in --allow-listen (add ::/128,")
    assert tcp.details["setting"] == udp.details["setting"] == "allow_listen"


def test_a_multicast_denial_names_allow_multicast() -> None:
    denial = _denial(Policy().check_multicast, "udp-multicast-join-group!", "239.255.0.1")
    assert denial.message.splitlines()[0] == (
        "udp-multicast-join-group!: join 239.255.0.1 denied: not in --allow-multicast "
        "(add 239.255.0.1/32, or allow_multicast in the config's [policy] table)"
    )
    assert denial.details == {"group": "239.255.0.1", "setting": "allow_multicast"}
