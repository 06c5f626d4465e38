"""Configuration: embedded defaults < TOML file (``--config``) < ``SOCKBROKER_*`` environment < flags.

Every setting is one field below; its description is its ``--help`` text and its name, in
kebab case, is its flag (``grpc_address`` → ``--grpc-address``, ``SOCKBROKER_GRPC_ADDRESS``).
The principals (``[principals.NAME]`` tables, :class:`PrincipalSettings`) are the config file's
only (or ``SOCKBROKER_PRINCIPALS`` as JSON); :meth:`Settings.principals_of` builds them, at start
and again on SIGHUP.
"""

from __future__ import annotations

import ipaddress
import pathlib
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource
from sockbroker_wire.paths import default_token_file

from . import files
from .core.limits import Limits
from .core.policy import LOOPBACK, Policy, parse_port_ranges
from .core.principals import Principal

__all__ = ["PolicySettings", "PrincipalSettings", "Settings", "default_token_file", "split_address"]

#: Settings that are no flag: tables of the config file (or JSON in their environment variable).
FILE_ONLY = frozenset({"principals"})

#: Every quota's default lives in core/limits.py; the settings only expose them as flags.
_LIMITS = Limits()
_CONFIG_FILE: ContextVar[pathlib.Path | None] = ContextVar("sockbroker_config_file", default=None)


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_networks(value: list[str]) -> list[str]:
    for spec in value:
        ipaddress.ip_network(spec, strict=False)
    return value


class PolicySettings(BaseModel):
    """``[principals.NAME.policy]``: what one principal may do on the network (core/policy.py).
    The defaults are the safe ones: loopback only, no multicast group, no hand-off."""

    model_config = ConfigDict(extra="forbid")

    allow_connect: list[str] = Field(list(LOOPBACK), description="networks (CIDR) it may connect and send to")
    allow_listen: list[str] = Field(list(LOOPBACK), description="local networks (CIDR) it may listen and bind on")
    allow_ports: list[str] = Field(["0-65535"], description="ports (N or LOW-HIGH) it may use")
    allow_multicast: list[str] = Field([], description="multicast groups (CIDR) it may join")
    allow_multicast_interface: list[str] = Field(
        list(LOOPBACK), description="interface addresses (CIDR) it may send multicast on"
    )
    allow_handoff: bool = Field(False, description="it may be handed a socket's descriptor")

    _networks = field_validator("allow_connect", "allow_listen", "allow_multicast", "allow_multicast_interface")(
        _check_networks
    )

    @field_validator("allow_ports")
    @classmethod
    def _ports(cls, value: list[str]) -> list[str]:
        parse_port_ranges(value)
        return value


class PrincipalSettings(BaseModel):
    """``[principals.NAME]``: one principal, how it proves who it is (at least one way), its
    policy, its limits (unset: the daemon's) and whether it may use the admin API."""

    model_config = ConfigDict(extra="forbid")

    token_file: pathlib.Path | None = Field(
        None, description="bearer token file (0600; read if it exists, otherwise a new token is written there)"
    )
    tls_subject: str | None = Field(
        None, description="client certificate subject, RFC 4514 (CN=ci,O=Example); needs tls_client_ca"
    )
    tls_san: list[str] = Field([], description="client certificate subject alternative names (DNS, URI, e-mail, IP)")
    unix_uid: list[int] = Field([], description="uids of peers on the REST door's Unix socket (SO_PEERCRED)")
    unix_gid: list[int] = Field([], description="gids of peers on the REST door's Unix socket (SO_PEERCRED)")
    admin: bool = Field(False, description="it may use the admin API")
    policy: PolicySettings = Field(default_factory=lambda: PolicySettings.model_validate({}))
    max_sessions: int | None = Field(None, ge=1, description="open sessions it may hold")
    max_handles_per_session: int | None = Field(None, ge=1, description="open handles one of its sessions may hold")
    session_buffer: int | None = Field(None, ge=1 << 20, description="bytes one of its sessions may buffer")
    max_grace_seconds: float | None = Field(None, ge=0, description="longest grace period its sessions may ask for")

    @field_validator("tls_subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        if value is not None:
            from cryptography import x509

            x509.Name.from_rfc4514_string(value)  # a ValueError names what is wrong
        return value

    @model_validator(mode="after")
    def _proof(self) -> PrincipalSettings:
        if not (self.token_file or self.tls_subject or self.tls_san or self.unix_uid or self.unix_gid):
            raise ValueError(
                "a principal needs a way to prove itself: token_file, tls_subject, tls_san, unix_uid or unix_gid"
            )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOCKBROKER_", extra="forbid")

    grpc_address: str = Field("127.0.0.1:50051", description="gRPC front door, HOST:PORT")
    rest_address: str = Field("127.0.0.1:8080", description="REST + WebSocket front door, HOST:PORT")
    grpc_unix_socket: pathlib.Path | None = Field(
        None, description="also serve gRPC on this Unix domain socket (mode 0600: file permissions are the gate)"
    )
    channel_address: str = Field(
        "127.0.0.1:0",
        description="channel listener for relays (DESIGN §8), HOST:PORT (port 0: any free port, announced in the "
        "runtime file); empty: none",
    )
    proxy_address: str = Field(
        "127.0.0.1:1080",
        description="proxy door for unmodified programs, SOCKS5 and HTTP CONNECT (DESIGN §11), HOST:PORT (port 0: "
        "any free port, announced in the runtime file); empty: none",
    )
    channel_socket: pathlib.Path | None = Field(
        None,
        description="Unix socket (mode 0600) for relays and hand-offs of socket descriptors; default: channel.sock "
        "beside the token file",
    )
    token_file: pathlib.Path = Field(
        default_factory=default_token_file,
        description="bearer token file (mode 0600); read if it exists, otherwise a new token is written there",
    )
    runtime_file: pathlib.Path | None = Field(
        None,
        description="JSON file (mode 0600) where the daemon writes its pid, the addresses it really bound and "
        "its token file; default: runtime.json beside the token file",
    )
    tls_cert: pathlib.Path | None = Field(None, description="TLS certificate (PEM) for both front doors")
    tls_key: pathlib.Path | None = Field(None, description="TLS private key (PEM)")
    tls_client_ca: pathlib.Path | None = Field(None, description="CA bundle: require client certificates (mTLS)")
    allow_insecure_remote: bool = Field(
        False, description="allow a non-loopback front door without TLS (refused otherwise)"
    )
    allow_connect: list[str] = Field(list(LOOPBACK), description="networks (CIDR) clients may connect and send to")
    allow_listen: list[str] = Field(list(LOOPBACK), description="local networks (CIDR) clients may listen and bind on")
    allow_ports: list[str] = Field(["0-65535"], description="ports (N or LOW-HIGH) clients may use")
    allow_multicast: list[str] = Field([], description="multicast groups (CIDR) clients may join")
    allow_multicast_interface: list[str] = Field(
        list(LOOPBACK), description="interface addresses (CIDR) clients may send multicast on (0.0.0.0/32: any)"
    )
    allow_handoff: bool = Field(
        True, description="clients may be handed a socket's descriptor (UDP: only with a policy that allows everything)"
    )
    rest_unix_socket: pathlib.Path | None = Field(
        None,
        description="also serve REST on this Unix socket (mode 0600); its peers may be principals by uid/gid "
        "(SO_PEERCRED)",
    )
    rest_unix_socket_mode: str = Field(
        "0600",
        description="permissions of --rest-unix-socket, octal (0660, 0666: let other users connect, and be "
        "principals by unix_uid/unix_gid or present a token)",
    )
    principals: dict[str, PrincipalSettings] = Field(
        {},
        description="[principals.NAME] tables: principals besides `default` (config file only); reloaded on SIGHUP",
    )
    audit_log: str = Field(
        "",
        description="audit log, one JSON line per event: a file path (appended, 0600), `stderr`, or empty for the "
        "log (logger sockbroker.audit)",
    )
    lease_seconds: float = Field(_LIMITS.lease_seconds, gt=0, description="session lease when a client asks for none")
    max_grace_seconds: float = Field(
        _LIMITS.max_grace_seconds, ge=0, description="longest grace period a session may ask for (Sessions.Open)"
    )
    max_delegation_seconds: float = Field(
        _LIMITS.max_delegation_seconds, gt=0, description="longest life of a delegated token (Custodians.Delegate)"
    )
    max_delegations_per_session: int = Field(
        _LIMITS.delegations_per_session, ge=1, description="live delegated tokens one session may hold"
    )
    max_sessions_per_principal: int = Field(
        _LIMITS.sessions_per_principal, ge=1, description="open sessions one principal may hold (unless its table says)"
    )
    max_handles_per_session: int = Field(
        _LIMITS.handles_per_session, ge=1, description="open handles one session may hold"
    )
    port_receive_buffer: int = Field(
        _LIMITS.port_receive_buffer,
        ge=4096,
        description="bytes buffered from a TCP peer before the daemon stops reading it",
    )
    port_send_buffer: int = Field(
        _LIMITS.port_send_buffer, ge=4096, description="bytes queued for a TCP peer before writers wait"
    )
    udp_stream_buffer: int = Field(
        _LIMITS.udp_stream_buffer, ge=4096, description="bytes queued for a slow datagram-stream reader"
    )
    session_buffer: int = Field(
        _LIMITS.session_buffer,
        ge=1 << 20,
        description="bytes one session's ports and streams may buffer in all before they wait or drop",
    )
    daemon_buffer: int = Field(
        _LIMITS.daemon_buffer,
        ge=1 << 20,
        description="bytes every session's ports and streams may buffer together before they wait or drop",
    )
    cancel_hold_bytes: int = Field(
        _LIMITS.cancel_hold_bytes,
        ge=0,
        description="bytes of finished calls one session keeps for a CancelCall that comes after the reply",
    )
    max_request_bytes: int = Field(
        _LIMITS.max_request_bytes, ge=65536, description="largest request (gRPC message, REST body)"
    )
    connections_per_door: int = Field(
        _LIMITS.connections_per_door,
        ge=16,
        description="open connections per front door; past it the oldest unauthenticated one is closed",
    )
    header_timeout: float = Field(
        _LIMITS.header_timeout, gt=0, description="seconds a new connection may take to send its request headers"
    )
    unauthenticated_timeout: float = Field(
        _LIMITS.unauthenticated_timeout, gt=0, description="seconds a connection may stay open without a valid token"
    )
    idle_timeout: float = Field(
        _LIMITS.idle_timeout, gt=0, description="seconds an idle keep-alive connection is kept open"
    )
    grpc_keepalive_interval: float = Field(
        _LIMITS.grpc_keepalive_interval,
        ge=1,
        description="seconds without traffic from a gRPC client before it is pinged",
    )
    grpc_keepalive_timeout: float = Field(
        _LIMITS.grpc_keepalive_timeout,
        ge=1,
        description="seconds to wait for a gRPC client's ping ack before dropping it (and its attachment)",
    )
    json_max_depth: int = Field(
        _LIMITS.json_max_depth, ge=2, le=512, description="deepest JSON nesting of a REST body or WebSocket text frame"
    )
    request_bytes_in_flight: int = Field(
        _LIMITS.request_bytes_in_flight,
        ge=65536,
        description=(
            "bytes of REST bodies, WebSocket messages and gRPC writes being received at once, per door"
            " (raised to max_request_bytes)"
        ),
    )
    allowed_hosts: list[str] = Field(
        [],
        description="REST Host header values accepted besides the daemon's own addresses, localhost, 127.0.0.1 "
        "and [::1] (DNS-rebinding defence); NAME matches NAME with the REST port, NAME:PORT exactly",
    )
    allowed_origins: list[str] = Field(
        [], description="WebSocket Origin values accepted (scheme://host[:port]); a WebSocket without Origin is fine"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="debug, info, warning or error")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="log lines as text, or as one JSON object a line (time, level, logger, message, extra fields, "
        "traceback)",
    )

    @model_validator(mode="before")
    @classmethod
    def _policy_table(cls, values: Any) -> Any:
        """A TOML ``[policy]`` table holds the ``allow_*`` settings; flatten it."""
        if isinstance(values, dict) and isinstance(values.get("policy"), dict):
            values = dict(values)
            for key, value in values.pop("policy").items():
                values.setdefault(key if key.startswith("allow_") else f"allow_{key}", value)
        return values

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        for name, principal in self.principals.items():
            if (principal.tls_subject or principal.tls_san) and self.tls_client_ca is None:
                raise ValueError(f"[principals.{name}]: tls_subject and tls_san need tls_client_ca (mTLS)")
        return self

    @field_validator("grpc_address", "rest_address")
    @classmethod
    def _address(cls, value: str) -> str:
        split_address(value)
        return value

    @field_validator("channel_address", "proxy_address")
    @classmethod
    def _optional_address(cls, value: str) -> str:
        if value:
            split_address(value)
        return value

    _networks = field_validator("allow_connect", "allow_listen", "allow_multicast", "allow_multicast_interface")(
        _check_networks
    )

    @field_validator("rest_unix_socket_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError(f"expected octal permissions such as 0600 or 0660, got {value!r}") from None
        if not 0 <= mode <= 0o777:
            raise ValueError(f"expected permissions between 0000 and 0777, got {value!r}")
        return value

    @property
    def rest_unix_socket_permissions(self) -> int:
        return int(self.rest_unix_socket_mode, 8)

    @field_validator("principals")
    @classmethod
    def _principal_names(cls, value: dict[str, PrincipalSettings]) -> dict[str, PrincipalSettings]:
        for name in value:
            if name == "default":
                raise ValueError(
                    "[principals.default]: the default principal is set by the top-level settings "
                    "(token_file, allow_*, the [policy] table); give other principals other names"
                )
            if not name or not all(c.isalnum() or c in "-_." for c in name):
                raise ValueError(f"[principals.{name}]: a principal's name is letters, digits, '-', '_' and '.'")
        return value

    @field_validator("allow_ports")
    @classmethod
    def _ports(cls, value: list[str]) -> list[str]:
        parse_port_ranges(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: pathlib.Path | None = None, **overrides: Any) -> Settings:
        if config_file is not None and not config_file.is_file():
            raise ValueError(f"config file not found: {config_file}")
        token = _CONFIG_FILE.set(config_file)
        try:
            return cls(**overrides)
        finally:
            _CONFIG_FILE.reset(token)

    def policy(self) -> Policy:
        return Policy(
            allow_connect=tuple(self.allow_connect),
            allow_listen=tuple(self.allow_listen),
            allow_ports=tuple(self.allow_ports),
            allow_multicast=tuple(self.allow_multicast),
            allow_multicast_interface=tuple(self.allow_multicast_interface),
            allow_handoff=self.allow_handoff,
        )

    def principals_of(self) -> list[Principal]:
        """The principals: ``default`` (the token file's, the top-level policy, admin) and every
        ``[principals.NAME]``, their token files read (or created). Raises
        :class:`~sockbroker.files.StartupError` for a token file that is unsafe or unreadable."""
        found = [Principal("default", files.load_or_create_token(self.token_file), self.policy(), admin=True)]
        for name, p in self.principals.items():
            token = None
            if p.token_file is not None:
                token = files.load_or_create_token(p.token_file, setting=f"[principals.{name}] token_file")
            found.append(
                Principal(
                    name,
                    token,
                    Policy(**p.policy.model_dump(), origin=f"[principals.{name}.policy]"),
                    admin=p.admin,
                    tls_subject=p.tls_subject,
                    tls_san=tuple(p.tls_san),
                    unix_uids=tuple(p.unix_uid),
                    unix_gids=tuple(p.unix_gid),
                    max_sessions=p.max_sessions,
                    max_handles_per_session=p.max_handles_per_session,
                    session_buffer=p.session_buffer,
                    max_grace_seconds=p.max_grace_seconds,
                )
            )
        return found

    def limits(self) -> Limits:
        return Limits(
            lease_seconds=self.lease_seconds,
            max_grace_seconds=self.max_grace_seconds,
            max_delegation_seconds=self.max_delegation_seconds,
            delegations_per_session=self.max_delegations_per_session,
            sessions_per_principal=self.max_sessions_per_principal,
            handles_per_session=self.max_handles_per_session,
            port_receive_buffer=self.port_receive_buffer,
            port_send_buffer=self.port_send_buffer,
            udp_stream_buffer=self.udp_stream_buffer,
            session_buffer=self.session_buffer,
            daemon_buffer=self.daemon_buffer,
            cancel_hold_bytes=self.cancel_hold_bytes,
            max_request_bytes=self.max_request_bytes,
            connections_per_door=self.connections_per_door,
            header_timeout=self.header_timeout,
            unauthenticated_timeout=self.unauthenticated_timeout,
            idle_timeout=self.idle_timeout,
            grpc_keepalive_interval=self.grpc_keepalive_interval,
            grpc_keepalive_timeout=self.grpc_keepalive_timeout,
            json_max_depth=self.json_max_depth,
            request_bytes_in_flight=max(self.request_bytes_in_flight, self.max_request_bytes),
        )

    def off_loopback_without_tls(self, door: str, host: str) -> bool:
        """Whether ``door`` (``grpc``, ``rest``, ``channel`` or ``proxy``) listening on ``host`` is
        off loopback without TLS: the front doors without a TLS certificate, and the channel and
        proxy listeners always (their relays are spliced in the kernel, so they are never TLS)."""
        return not is_loopback(host) and (door in ("channel", "proxy") or self.tls_cert is None)

    def insecure_remote_doors(self) -> list[str]:
        """The configured addresses of the doors that would listen off loopback without TLS."""
        doors = {
            "grpc": self.grpc_address,
            "rest": self.rest_address,
            "channel": self.channel_address,
            "proxy": self.proxy_address,
        }
        return [a for door, a in doors.items() if a and self.off_loopback_without_tls(door, split_address(a)[0])]
