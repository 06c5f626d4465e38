"""Principals: who is calling, how they prove it, and what they may do (DESIGN §5).

A :class:`Principal` is named in the config (``[principals.NAME]``) and proves who it is in one
of three ways: a bearer token, a TLS client certificate (its subject, or one of its subject
alternative names), or — on a Unix socket — the uid or gid the kernel reports for the process
at the other end (``SO_PEERCRED``). Each has its own policy and limits, and may or may not use
the admin API. A door gathers what the caller presented as :class:`Credentials`;
:meth:`Principals.authenticate` says whose they are:

- a bearer token, when one is given, decides alone: a wrong token is ``unauthenticated`` even
  on a connection whose certificate or peer would name a principal;
- otherwise the certificate, then the peer's uid, then its gid, in the config's order.

A :class:`Delegation` (``Custodians.Delegate``) mints a token for one custodian of a session:
whoever presents it is a principal of its own, ``NAME/dlg_…``, whose policy is the intersection
of the delegating session's policy (as it is now: a reload narrows it too) and the lists the
delegation gave. It is never an admin, when it expires or its custodian is shut down it is
revoked, and every session opened with it drops.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import UnauthenticatedError
from .policy import Policy

if TYPE_CHECKING:
    from cryptography import x509

    from .resources import Custodian
    from .sessions import Session

__all__ = ["Credentials", "Delegation", "Principal", "Principals", "certificate_names"]

#: How many ``Authorization`` values :meth:`Principals.authenticate` remembers.
HEADERS_KEPT = 64


@dataclass(frozen=True)
class Principal:
    """Who a caller is, what the policy lets it do, and whether it may use the admin API.

    ``tls_subject`` is an RFC 4514 name (``CN=ci,O=Example``) matched against the client
    certificate's subject; ``tls_san`` matches any DNS, URI, e-mail or IP subject alternative
    name; ``unix_uids`` / ``unix_gids`` match a Unix-socket peer. The limits left at None are
    the daemon's."""

    name: str
    token: str | None = field(default=None, repr=False)
    policy: Policy = field(default_factory=Policy)
    admin: bool = False
    tls_subject: str | None = None
    tls_san: tuple[str, ...] = ()
    unix_uids: tuple[int, ...] = ()
    unix_gids: tuple[int, ...] = ()
    max_sessions: int | None = None
    max_handles_per_session: int | None = None
    session_buffer: int | None = None
    max_grace_seconds: float | None = None
    #: Set for a delegated token's principal (``NAME/dlg_…``): the delegation it speaks for.
    delegation: Delegation | None = field(default=None, compare=False, repr=False)

    @property
    def account(self) -> str:
        """The configured principal this one is or descends from (metrics, session quotas)."""
        return self.name.split("/", 1)[0]


@dataclass(frozen=True)
class Credentials:
    """What a caller presented: an ``Authorization`` value, the DER client certificate its TLS
    connection verified, and the ``(uid, gid)`` of a Unix-socket peer."""

    authorization: str | None = None
    certificate: bytes | None = None
    peer: tuple[int, int] | None = None


def certificate_names(der: bytes) -> tuple[x509.Name, frozenset[str]]:
    """A certificate's subject and its subject alternative names (DNS, URI, e-mail, IP) as text."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    names: set[str] = set()
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        extension = None
    if extension is not None:
        for kind in (x509.DNSName, x509.UniformResourceIdentifier, x509.RFC822Name, x509.IPAddress):
            names.update(str(value) for value in extension.get_values_for_type(kind))
    return cert.subject, frozenset(names)


class Delegation:
    """A token for one custodian of one session, with a policy no wider than the session's."""

    def __init__(
        self,
        session: Session,
        custodian: Custodian,
        narrowing: Policy,
        seconds: float,
        on_end: Callable[[Delegation, str], None],
    ) -> None:
        self.id = f"dlg_{secrets.token_urlsafe(12)}"
        self.token = f"sbd_{secrets.token_urlsafe(32)}"
        self.digest = hashlib.sha256(self.token.encode()).digest()
        self.session = session
        self.custodian = custodian
        self.narrowing = narrowing
        #: Its life, granted (seconds), and when it ends (monotonic).
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.ended: str | None = None
        self.principal = Principal(f"{session.principal}/{self.id}", None, delegation=self)
        #: Sessions opened with the token: they end with it.
        self.sessions: set[Session] = set()
        self._on_end = on_end
        self._timer = asyncio.get_running_loop().call_later(seconds, self.end, "expired")

    @property
    def live(self) -> bool:
        return self.ended is None and time.monotonic() < self.expires and not self.custodian.closed

    def policy(self) -> Policy:
        """The delegating session's policy as it is now, narrowed by the delegation's lists."""
        return self.session.policy.current.intersect(self.narrowing, f"the delegation {self.id}")

    def end(self, reason: str) -> None:
        """Revoke the token and drop every session opened with it (idempotent)."""
        if self.ended is not None:
            return
        self.ended = reason
        self._timer.cancel()
        self._on_end(self, reason)
        for session in list(self.sessions):
            session.drop(f"its delegation ended: {reason}")


class Principals:
    """The configured principals and the live delegations: who a caller's credentials name."""

    def __init__(self, principals: Sequence[Principal]) -> None:
        if not principals:
            raise ValueError("at least one principal is needed")
        #: The configured principals, in the config's order (a list: a reload replaces its items).
        self.principals = list(principals)
        self.delegations: dict[bytes, Delegation] = {}
        #: Principals found by a header value: only values that carried a valid token.
        self._by_header: dict[str, Principal] = {}
        self._subjects: dict[str, x509.Name] = {}

    def named(self, name: str) -> Principal | None:
        return next((p for p in self.principals if p.name == name), None)

    def replace(self, principals: Sequence[Principal]) -> None:
        """A reload: the new principals, by name; what callers presented is looked up again."""
        self.principals[:] = principals
        self._by_header.clear()

    def authenticate(self, credentials: Credentials) -> Principal:
        """The principal the credentials name (module docstring); ``unauthenticated`` otherwise."""
        if credentials.authorization is not None:
            return self._by_authorization(credentials.authorization)
        if credentials.certificate is not None:
            found = self._by_certificate(credentials.certificate)
            if found is not None:
                return found
        if credentials.peer is not None:
            uid, gid = credentials.peer
            for principal in self.principals:
                if uid in principal.unix_uids:
                    return principal
            for principal in self.principals:
                if gid in principal.unix_gids:
                    return principal
        raise UnauthenticatedError("sockbroker", "missing or wrong bearer token")

    def _by_authorization(self, authorization: str) -> Principal:
        """The principal of ``Authorization: Bearer <token>``. A value that named a configured
        principal before names it again without the compare while that principal is still
        configured; a wrong one always takes the constant-time path."""
        known = self._by_header.get(authorization)
        if known is not None and any(known is principal for principal in self.principals):
            return known
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        candidate = token.encode()
        found = None
        for principal in self.principals:
            if principal.token is not None and hmac.compare_digest(candidate, principal.token.encode()):
                found = principal
        if found is not None and token:
            if len(self._by_header) >= HEADERS_KEPT:
                self._by_header.clear()
            self._by_header[authorization] = found
            return found
        delegation = self.delegations.get(hashlib.sha256(candidate).digest()) if token else None
        if delegation is not None and delegation.live:
            return delegation.principal
        raise UnauthenticatedError("sockbroker", "missing or wrong bearer token")

    def _by_certificate(self, der: bytes) -> Principal | None:
        from cryptography import x509

        try:
            subject, names = certificate_names(der)
        except ValueError:
            return None
        for principal in self.principals:
            if principal.tls_subject is not None:
                wanted = self._subjects.get(principal.tls_subject)
                if wanted is None:
                    wanted = self._subjects[principal.tls_subject] = x509.Name.from_rfc4514_string(
                        principal.tls_subject
                    )
                if wanted == subject:
                    return principal
            if names.intersection(principal.tls_san):
                return principal
        return None

    # ── delegations ────────────────────────────────────────────────────────
    def add(self, delegation: Delegation) -> None:
        self.delegations[delegation.digest] = delegation

    def forget(self, delegation: Delegation) -> None:
        self.delegations.pop(delegation.digest, None)
