"""Every RPC of the protos with its REST route, read once from the descriptors.

Both front doors and the clients take their routes from here, so the protos stay the single
source of truth (grpc-gateway style: each RPC declares its REST route in a ``google.api.http``
option). Two proto packages are served: ``sockbroker.v1`` (:data:`PACKAGE`, the sockets) and
``sockbroker.admin.v1`` (:data:`ADMIN_PACKAGE`, the admin API); a route knows its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.api import annotations_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from .admin.v1 import admin_pb2
from .v1 import broker_pb2

__all__ = ["ADMIN_PACKAGE", "ADMIN_SERVICES", "PACKAGE", "SERVICES", "Route", "message_class", "route", "routes"]

#: The proto package of the sockets: gRPC method paths are ``/sockbroker.v1.<Service>/<Method>``.
PACKAGE = "sockbroker.v1"
SERVICES = ("Sessions", "Custodians", "Tcp", "Handles", "Ports", "Udp", "Events")
#: The admin API's proto package: ``/sockbroker.admin.v1.Admin/<Method>``.
ADMIN_PACKAGE = "sockbroker.admin.v1"
ADMIN_SERVICES = ("Admin",)
#: Each package's generated module and the services it serves, in the order routes are listed.
_FILES = ((broker_pb2, SERVICES), (admin_pb2, ADMIN_SERVICES))


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
    package: str = PACKAGE

    @property
    def name(self) -> str:
        """``Service.Method`` (service names are unique across the packages)."""
        return f"{self.service}.{self.method}"

    @property
    def full_service(self) -> str:
        """``sockbroker.v1.Tcp``: the service's name on the gRPC door."""
        return f"{self.package}.{self.service}"

    @property
    def grpc_path(self) -> str:
        return f"/{self.full_service}/{self.method}"

    @property
    def admin(self) -> bool:
        """An admin API call (``sockbroker.admin.v1``): admin principals only, no session."""
        return self.package == ADMIN_PACKAGE

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{(\w+)}", self.path))


def message_class(descriptor: Any) -> type[Message]:
    """The generated class of a message the protos use (their own, or ``google.protobuf.Empty``)."""
    for module, _ in _FILES:
        if descriptor.file is module.DESCRIPTOR:
            return getattr(module, descriptor.name)  # type: ignore[no-any-return]
    if descriptor.full_name == "google.protobuf.Empty":
        return empty_pb2.Empty
    raise LookupError(descriptor.full_name)  # pragma: no cover - the protos use no other


@cache
def routes() -> tuple[Route, ...]:
    """Every RPC: the sockets' (``sockbroker.v1``), then the admin API's (``sockbroker.admin.v1``)."""
    found = []
    for module, services in _FILES:
        for service_name in services:
            service = module.DESCRIPTOR.services_by_name[service_name]
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
                        package=module.DESCRIPTOR.package,
                    )
                )
    return tuple(found)


def route(name: str) -> Route:
    """The route of ``Service.Method``; KeyError when the proto has no such RPC."""
    for candidate in routes():
        if candidate.name == name:
            return candidate
    raise KeyError(name)
