"""Per-principal network policy, in the spirit of Deno's ``--allow-net``.

A policy lists the networks a principal may connect or send to, the local addresses it may
listen or bind on, the ports it may use, the multicast groups it may join and the interfaces it
may send multicast on. Checks run on resolved addresses, right before the socket call that uses
them, so a name that resolves somewhere else later cannot slip past. The default allows loopback
only.

A delegated token's policy is an intersection (:meth:`Policy.intersect`): what both policies
allow, network by network and port range by port range, so it is never wider than either.

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
    #: Local interface addresses multicast may be sent on (``udp-multicast-set-interface!``; a
    #: multicast send checks the socket's interface, and "any interface" is 0.0.0.0).
    allow_multicast_interface: Sequence[str] = LOOPBACK
    #: May this principal take a socket's descriptor itself (DESIGN §8 hand-off)?
    allow_handoff: bool = True
    #: Where these settings are written, for a denial's hint: None for the daemon's own flags and
    #: ``[policy]`` table; a principal's table (``[principals.ci.policy]``) or a delegation otherwise.
    origin: str | None = field(default=None, compare=False)
    _connect: tuple[Network, ...] = field(init=False, repr=False)
    _listen: tuple[Network, ...] = field(init=False, repr=False)
    _ports: tuple[tuple[int, int], ...] = field(init=False, repr=False)
    _multicast: tuple[Network, ...] = field(init=False, repr=False)
    _interfaces: tuple[Network, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_connect", _networks(self.allow_connect))
        object.__setattr__(self, "_listen", _networks(self.allow_listen))
        object.__setattr__(self, "_ports", parse_port_ranges(self.allow_ports))
        object.__setattr__(self, "_multicast", _networks(self.allow_multicast))
        object.__setattr__(self, "_interfaces", _networks(self.allow_multicast_interface))

    def intersect(self, other: Policy, origin: str) -> Policy:
        """What both policies allow: never wider than either (a delegated token's policy); a
        denial names ``origin`` as where it was narrowed."""
        return Policy(
            allow_connect=_common(self._connect, other._connect),
            allow_listen=_common(self._listen, other._listen),
            allow_ports=tuple(
                f"{max(a, c)}-{min(b, d)}" for a, b in self._ports for c, d in other._ports if max(a, c) <= min(b, d)
            ),
            allow_multicast=_common(self._multicast, other._multicast),
            allow_multicast_interface=_common(self._interfaces, other._interfaces),
            allow_handoff=self.allow_handoff and other.allow_handoff,
            origin=origin,
        )

    def check_connect(self, who: str, host: str, port: int) -> None:
        """May this principal send to / connect to ``host``:``port``?"""
        verb = "send to" if who.startswith("udp") else "connect to"
        self._check(who, verb, "allow_connect", self._connect, host, port)

    def check_listen(self, who: str, host: str, port: int) -> None:
        """May this principal listen on / bind to ``host``:``port`` (port 0: an ephemeral one)?"""
        self._check(who, "bind to" if who.startswith("udp") else "listen on", "allow_listen", self._listen, host, port)

    def check_multicast(self, who: str, group: str) -> None:
        if not _contains(self._multicast, group):
            self._deny(who, f"join {group}", "allow_multicast", _network_of(group), {"group": group})

    def check_multicast_interface(self, who: str, interface: str) -> None:
        """May multicast be sent on the interface with this address (0.0.0.0: any interface)?"""
        if not _contains(self._interfaces, interface):
            what = "any interface" if interface == "0.0.0.0" else interface
            self._deny(
                who,
                f"send multicast on {what}",
                "allow_multicast_interface",
                _network_of(interface),
                {"interface": interface},
            )

    def check_handoff(self, who: str, *, udp: bool) -> None:
        """May this principal be handed a socket's descriptor? A connected TCP socket can only
        talk to its peer, which the policy allowed when it connected. A UDP socket can send to any
        address, bind and join groups by itself: it is handed off only to a principal the policy
        would let do all of that anyway."""
        if not self.allow_handoff:
            log.warning("policy denied %s: hand-off (allow_handoff is false)", who)
            where = "--allow-handoff is off (allow_handoff in the config's [policy] table)"
            if self.origin is not None:
                where = f"allow_handoff is off in {self.origin}"
            raise PermissionDeniedError(who, f"hand-off denied: {where}", {"setting": "allow_handoff"})
        if udp:
            wide = {"allow_connect": self._connect, "allow_listen": self._listen, "allow_multicast": self._multicast}
            for setting, networks in wide.items():
                for everything in _EVERYWHERE:
                    if everything not in networks:
                        self._deny(
                            who, "hand off a UDP socket (it could reach any address)", setting, str(everything), {}
                        )
            if (0, 65535) not in self._ports:
                self._deny(who, "hand off a UDP socket (it could use any port)", "allow_ports", "0-65535", {})

    def _check(self, who: str, verb: str, setting: str, networks: tuple[Network, ...], host: str, port: int) -> None:
        target = f"{verb} {f'[{host}]' if ':' in host else host}:{port}"
        if not _contains(networks, host):
            self._deny(who, target, setting, _network_of(host), {"address": host, "port number": port})
        if port != 0 and not any(lo <= port <= hi for lo, hi in self._ports):
            self._deny(who, target, "allow_ports", str(port), {"address": host, "port number": port})

    def _deny(self, who: str, target: str, setting: str, grant: str, details: dict[str, object]) -> NoReturn:
        """Raise the denial: what was denied, the setting that would allow it, and what to add there."""
        log.warning("policy denied %s: %s (not in %s)", who, target, setting)
        if self.origin is None:
            flag = "--" + setting.replace("_", "-")
            hint = f"not in {flag} (add {grant}, or {setting} in the config's [policy] table)"
        else:
            hint = f"not in {setting} of {self.origin} (add {grant} there)"
        raise PermissionDeniedError(who, f"{target} denied: {hint}", {**details, "setting": setting})


def _common(ours: tuple[Network, ...], theirs: tuple[Network, ...]) -> tuple[str, ...]:
    """The networks in both lists: of two that overlap, the narrower one (CIDR blocks either
    nest or are disjoint)."""
    found = [
        a if a.prefixlen >= b.prefixlen else b for a in ours for b in theirs if a.version == b.version and a.overlaps(b)
    ]
    v4 = [n for n in found if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in found if isinstance(n, ipaddress.IPv6Network)]
    return (*map(str, ipaddress.collapse_addresses(v4)), *map(str, ipaddress.collapse_addresses(v6)))


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
