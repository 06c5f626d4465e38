"""Per-principal network policy, in the spirit of Deno's ``--allow-net``.

A policy lists the networks a principal may connect or send to, the local addresses it may
listen or bind on, the ports it may use, and the multicast groups it may join. Checks run on
resolved addresses, right before the socket call that uses them, so a name that resolves
somewhere else later cannot slip past. The default allows loopback only.

A denial says, as Deno's do, what was denied and which setting would allow it, the same words
on every door: ``tcp-connect: connect to 10.0.0.5:80 denied: not in --allow-connect (add
10.0.0.5/32, or allow_connect in the config's [policy] table)``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from .errors import PermissionDeniedError

__all__ = ["LOOPBACK", "Policy", "parse_port_ranges"]

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
_EVERYWHERE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


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
    #: May this principal take a socket's descriptor itself (DESIGN §8 hand-off)?
    allow_handoff: bool = True
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
        verb = "send to" if who.startswith("udp") else "connect to"
        self._check(who, verb, "allow_connect", self._connect, host, port)

    def check_listen(self, who: str, host: str, port: int) -> None:
        """May this principal listen on / bind to ``host``:``port`` (port 0: an ephemeral one)?"""
        self._check(who, "bind to" if who.startswith("udp") else "listen on", "allow_listen", self._listen, host, port)

    def check_multicast(self, who: str, group: str) -> None:
        if not _contains(self._multicast, group):
            _deny(who, f"join {group}", "allow_multicast", _network_of(group), {"group": group})

    def check_handoff(self, who: str, *, udp: bool) -> None:
        """May this principal be handed a socket's descriptor? A connected TCP socket can only
        talk to its peer, which the policy allowed when it connected. A UDP socket can send to any
        address, bind and join groups by itself: it is handed off only to a principal the policy
        would let do all of that anyway."""
        if not self.allow_handoff:
            log.warning("policy denied %s: hand-off (allow_handoff is false)", who)
            raise PermissionDeniedError(
                who,
                "hand-off denied: --allow-handoff is off (allow_handoff in the config's [policy] table)",
                {"setting": "allow_handoff"},
            )
        if udp:
            wide = {"allow_connect": self._connect, "allow_listen": self._listen, "allow_multicast": self._multicast}
            for setting, networks in wide.items():
                for everything in _EVERYWHERE:
                    if everything not in networks:
                        _deny(who, "hand off a UDP socket (it could reach any address)", setting, str(everything), {})
            if (0, 65535) not in self._ports:
                _deny(who, "hand off a UDP socket (it could use any port)", "allow_ports", "0-65535", {})

    def _check(self, who: str, verb: str, setting: str, networks: tuple[Network, ...], host: str, port: int) -> None:
        target = f"{verb} {f'[{host}]' if ':' in host else host}:{port}"
        if not _contains(networks, host):
            _deny(who, target, setting, _network_of(host), {"address": host, "port number": port})
        if port != 0 and not any(lo <= port <= hi for lo, hi in self._ports):
            _deny(who, target, "allow_ports", str(port), {"address": host, "port number": port})


def _deny(who: str, target: str, setting: str, grant: str, details: dict[str, object]) -> NoReturn:
    """Raise the denial: what was denied, the setting that would allow it, and what to add there."""
    flag = "--" + setting.replace("_", "-")
    log.warning("policy denied %s: %s (not in %s)", who, target, setting)
    raise PermissionDeniedError(
        who,
        f"{target} denied: not in {flag} (add {grant}, or {setting} in the config's [policy] table)",
        {**details, "setting": setting},
    )


def _network_of(host: str) -> str:
    """The narrowest network naming ``host`` (``10.0.0.5/32``), as a setting would hold it."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return "its address"  # not an address: nothing to add would match it
    return f"{address}/{address.max_prefixlen}"


def _contains(networks: tuple[Network, ...], host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)
