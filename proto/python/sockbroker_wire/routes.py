"""Every RPC of the proto with its REST route, read once from the descriptors.

Both front doors and the clients take their routes from here, so the proto stays the single
source of truth (grpc-gateway style: each RPC declares its REST route in a ``google.api.http``
option).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.api import annotations_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from .v1 import broker_pb2

__all__ = ["PACKAGE", "SERVICES", "Route", "message_class", "route", "routes"]

#: The proto package: gRPC method paths are ``/sockbroker.v1.<Service>/<Method>``.
PACKAGE = "sockbroker.v1"
SERVICES = ("Sessions", "Custodians", "Tcp", "Handles", "Ports", "Udp", "Events")


@dataclass(frozen=True)
class Route:
    """One RPC and its REST route."""

    service: str
    method: str
    verb: str  # get | post | put | delete
    path: str  # /v1/tcp/listeners/{listener}/accept
    body: str  # "*" or ""
    input: type[Message]
    output: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def name(self) -> str:
        """``Service.Method``."""
        return f"{self.service}.{self.method}"

    @property
    def grpc_path(self) -> str:
        return f"/{PACKAGE}.{self.service}/{self.method}"

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{(\w+)}", self.path))


def message_class(descriptor: Any) -> type[Message]:
    """The generated class of a message the proto uses (its own, or ``google.protobuf.Empty``)."""
    if descriptor.file is broker_pb2.DESCRIPTOR:
        return getattr(broker_pb2, descriptor.name)  # type: ignore[no-any-return]
    if descriptor.full_name == "google.protobuf.Empty":
        return empty_pb2.Empty
    raise LookupError(descriptor.full_name)  # pragma: no cover - the proto uses no other


@cache
def routes() -> tuple[Route, ...]:
    found = []
    for service_name in SERVICES:
        service = broker_pb2.DESCRIPTOR.services_by_name[service_name]
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb is None:
                raise LookupError(f"{service_name}.{method.name} has no REST route")
            found.append(
                Route(
                    service=service_name,
                    method=method.name,
                    verb=verb,
                    path=getattr(rule, verb),
                    body=rule.body,
                    input=message_class(method.input_type),
                    output=message_class(method.output_type),
                    client_streaming=method.client_streaming,
                    server_streaming=method.server_streaming,
                )
            )
    return tuple(found)


def route(name: str) -> Route:
    """The route of ``Service.Method``; KeyError when the proto has no such RPC."""
    for candidate in routes():
        if candidate.name == name:
            return candidate
    raise KeyError(name)
