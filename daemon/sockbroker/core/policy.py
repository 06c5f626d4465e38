"""Per-principal network policy, in the spirit of Deno's ``--allow-net``.

A policy lists the networks a principal may connect or send to, the local addresses it may
listen or bind on, the ports it may use, and the multicast groups it may join. Checks run on
resolved addresses, right before the socket call that uses them, so a name that resolves
somewhere else later cannot slip past. The default allows loopback only.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import PermissionDeniedError

__all__ = ["LOOPBACK", "Policy", "parse_port_ranges"]

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


def _networks(specs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(spec, strict=False) for spec in specs)


def parse_port_ranges(specs: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """``["1-1023", "8080"]`` → ``((1, 1023), (8080, 8080))``; raises ValueError when malformed."""
    ranges = []
    for spec in specs:
        low, _, high = str(spec).partition("-")
        lo, hi = int(low), int(high or low)
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"bad port range {spec!r}")
        ranges.append((lo, hi))
    return tuple(ranges)


@dataclass(frozen=True)
class Policy:
    """What one principal may do on the network."""

    allow_connect: Sequence[str] = LOOPBACK
    allow_listen: Sequence[str] = LOOPBACK
    allow_ports: Sequence[str] = ("0-65535",)
    allow_multicast: Sequence[str] = ()
    _connect: tuple[Network, ...] = field(init=False, repr=False)
    _listen: tuple[Network, ...] = field(init=False, repr=False)
    _ports: tuple[tuple[int, int], ...] = field(init=False, repr=False)
    _multicast: tuple[Network, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_connect", _networks(self.allow_connect))
        object.__setattr__(self, "_listen", _networks(self.allow_listen))
        object.__setattr__(self, "_ports", parse_port_ranges(self.allow_ports))
        object.__setattr__(self, "_multicast", _networks(self.allow_multicast))

    def check_connect(self, who: str, host: str, port: int) -> None:
        """May this principal send to / connect to ``host``:``port``?"""
        self._check(who, "connecting to", self._connect, host, port)

    def check_listen(self, who: str, host: str, port: int) -> None:
        """May this principal listen on / bind to ``host``:``port`` (port 0: an ephemeral one)?"""
        self._check(who, "listening on", self._listen, host, port)

    def check_multicast(self, who: str, group: str) -> None:
        if not _contains(self._multicast, group):
            log.warning("policy denied %s: multicast group %s", who, group)
            raise PermissionDeniedError(who, "policy forbids this multicast group", {"group": group})

    def _check(self, who: str, verb: str, networks: tuple[Network, ...], host: str, port: int) -> None:
        if not _contains(networks, host):
            log.warning("policy denied %s: %s address %s", who, verb, host)
            raise PermissionDeniedError(who, f"policy forbids {verb} this address", {"address": host})
        if port != 0 and not any(lo <= port <= hi for lo, hi in self._ports):
            log.warning("policy denied %s: %s port %s", who, verb, port)
            raise PermissionDeniedError(who, f"policy forbids {verb} this port", {"port number": port})


def _contains(networks: tuple[Network, ...], host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)
