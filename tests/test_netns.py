"""The suite runs in its private network namespace (DESIGN §10): ``lo`` only, no route off the
machine, and a hosts file of its own, with no DNS behind it (tests/netns.py makes it)."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import netns
import pytest


def _interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def test_the_suite_runs_inside_with_lo_only() -> None:
    assert netns.inside()
    assert _interfaces() == ["lo"]


@pytest.mark.parametrize(
    ("family", "address"), [(socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")], ids=["ipv4", "ipv6"]
)
def test_no_route_leads_off_the_machine(family: socket.AddressFamily, address: str) -> None:
    # Connecting a UDP socket sends nothing: it only looks the route up, and there is none.
    with socket.socket(family, socket.SOCK_DGRAM) as sock, pytest.raises(OSError) as info:
        sock.connect((address, 9))
    assert info.value.errno == errno.ENETUNREACH


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def test_loopback_is_up(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as receiver, socket.socket(family, socket.SOCK_DGRAM) as sender:
        receiver.bind((host, 0))
        receiver.settimeout(5)
        sender.sendto(b"here", receiver.getsockname())
        assert receiver.recvfrom(16)[0] == b"here"


@pytest.fixture
def dns_servers() -> Iterator[list[socket.socket]]:
    """UDP sockets on port 53 of 127.0.0.1 (the namespace's resolv.conf) and ::1: any DNS query lands here."""
    assert netns.inside() and _interfaces() == ["lo"]  # never look an unknown name up anywhere else
    servers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)]
    try:
        servers[0].bind(("127.0.0.1", 53))
        servers[1].bind(("::1", 53))
        for server in servers:
            server.setblocking(False)
        yield servers
    finally:
        for server in servers:
            server.close()


def test_an_unknown_name_fails_at_once_and_asks_no_resolver(dns_servers: list[socket.socket]) -> None:
    start = time.monotonic()
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo(netns.UNKNOWN_HOST, 80, type=socket.SOCK_STREAM)
    assert info.value.errno == socket.EAI_NONAME
    assert time.monotonic() - start < 1.0
    for server in dns_servers:
        with pytest.raises(BlockingIOError):
            server.recv(512)


def test_names_come_from_the_namespace_hosts_file() -> None:
    with open("/etc/hosts") as hosts:
        assert [line.split() for line in hosts] == [[address, *names] for address, names in netns.HOSTS.items()]
    assert {a[4][0] for a in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)} == {"127.0.0.1"}
    assert {a[4][0] for a in socket.getaddrinfo("ip6-localhost", 80, type=socket.SOCK_STREAM)} == {"::1"}


def test_the_wrapper_runs_a_command_there_and_passes_its_status_on() -> None:
    # Inside already, the wrapper runs the command as is: in this namespace, not in a nested one.
    code = "import socket, sys; sys.exit(len(socket.if_nameindex()) + 2)"
    done = subprocess.run([sys.executable, netns.__file__, "--", sys.executable, "-c", code], timeout=60, check=False)
    assert done.returncode == 3
