"""Configuration: embedded defaults < TOML file (``--config``) < ``SOCKBROKER_*`` environment < flags.

Every setting is one field below; its description is its ``--help`` text and its name, in
kebab case, is its flag (``grpc_address`` → ``--grpc-address``, ``SOCKBROKER_GRPC_ADDRESS``).
"""

from __future__ import annotations

import ipaddress
import pathlib
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource
from sockbroker_wire.paths import default_token_file

from .core.limits import Limits
from .core.policy import LOOPBACK, Policy, parse_port_ranges

__all__ = ["Settings", "default_token_file", "split_address"]

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
    allow_handoff: bool = Field(
        True, description="clients may be handed a socket's descriptor (UDP: only with a policy that allows everything)"
    )
    lease_seconds: float = Field(_LIMITS.lease_seconds, gt=0, description="session lease when a client asks for none")
    max_sessions_per_principal: int = Field(
        _LIMITS.sessions_per_principal, ge=1, description="open sessions one token may hold"
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
        return self

    @field_validator("grpc_address", "rest_address")
    @classmethod
    def _address(cls, value: str) -> str:
        split_address(value)
        return value

    @field_validator("channel_address")
    @classmethod
    def _channel_address(cls, value: str) -> str:
        if value:
            split_address(value)
        return value

    @field_validator("allow_connect", "allow_listen", "allow_multicast")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for spec in value:
            ipaddress.ip_network(spec, strict=False)
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
            allow_handoff=self.allow_handoff,
        )

    def limits(self) -> Limits:
        return Limits(
            lease_seconds=self.lease_seconds,
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
        """Whether ``door`` (``grpc``, ``rest`` or ``channel``) listening on ``host`` is off
        loopback without TLS: the front doors without a TLS certificate, and the channel listener
        always (its relays are spliced in the kernel, so they are never TLS)."""
        return not is_loopback(host) and (door == "channel" or self.tls_cert is None)

    def insecure_remote_doors(self) -> list[str]:
        """The configured addresses of the doors that would listen off loopback without TLS."""
        doors = {"grpc": self.grpc_address, "rest": self.rest_address, "channel": self.channel_address}
        return [a for door, a in doors.items() if a and self.off_loopback_without_tls(door, split_address(a)[0])]
