"""The proto, read once: every RPC with its REST route, and messages ↔ the core's plain dicts.

Both front doors and the Python client take their routes and conversions from here, so the
proto stays the single source of truth (grpc-gateway style: each RPC declares its REST route in
a ``google.api.http`` option).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.api import annotations_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from sockbroker.v1 import broker_pb2

__all__ = [
    "PACKAGE",
    "Route",
    "from_dict",
    "from_json",
    "message_class",
    "pack_datagrams",
    "parse_scalar",
    "route",
    "routes",
    "to_dict",
    "to_json",
    "unpack_datagrams",
]

PACKAGE = "sockbroker.v1"
_SERVICES = ("Sessions", "Custodians", "Tcp", "Handles", "Ports", "Udp", "Events")


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
        """``Service.Method``, the key of the core's operation table."""
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
    return getattr(broker_pb2, descriptor.name) if descriptor.file is broker_pb2.DESCRIPTOR else _well_known(descriptor)


def _well_known(descriptor: Descriptor) -> type[Message]:
    from google.protobuf import empty_pb2

    if descriptor.full_name == "google.protobuf.Empty":
        return empty_pb2.Empty
    raise LookupError(descriptor.full_name)  # pragma: no cover - the proto uses no other


@cache
def routes() -> tuple[Route, ...]:
    found = []
    for service_name in _SERVICES:
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
    for candidate in routes():
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def _in_real_oneof(field: Any) -> bool:
    """In a declared ``oneof`` (not the synthetic one proto3 makes for an ``optional`` field)."""
    oneof = field.containing_oneof
    return oneof is not None and oneof.name != f"_{field.name}"


@cache
def _defaults(descriptor: Any) -> dict[str, Any] | None:
    """For a message of scalars only: the values of its fields that have no presence when unset.
    None when the message has message or repeated fields (the general path handles those)."""
    defaults = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
            return None
        if not field.has_presence:
            defaults[field.name] = field.default_value
    return defaults


def to_dict(message: Message) -> dict[str, Any]:
    """A message as the core's arguments: field names → values; unset optional fields omitted;
    a oneof becomes ``{member: value}`` of its one set member."""
    defaults = _defaults(message.DESCRIPTOR)
    if defaults is not None:
        out = dict(defaults)
        for set_field, value in message.ListFields():
            out[set_field.name] = value
        return out
    out = {}
    for field in message.DESCRIPTOR.fields:
        name = field.name
        tracked = field.containing_oneof is not None or (field.has_presence and not field.is_repeated)
        if tracked and not message.HasField(name):
            continue
        value = getattr(message, name)
        if field.is_repeated:
            value = [to_dict(v) if field.type == FieldDescriptor.TYPE_MESSAGE else v for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            value = to_dict(value)
        out[name] = value
    return out


def from_dict(cls: type[Message], values: Mapping[str, Any]) -> Message:
    """The inverse of :func:`to_dict`: ``None`` values are left unset."""
    if _defaults(cls.DESCRIPTOR) is not None:
        return cls(**{name: value for name, value in values.items() if value is not None})
    message = cls()
    fields = message.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        if value is None:
            continue
        field = fields[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            sub_cls = message_class(field.message_type)
            if field.is_repeated:
                getattr(message, name).extend(from_dict(sub_cls, v) for v in value)
            else:
                getattr(message, name).CopyFrom(from_dict(sub_cls, value))
        elif field.is_repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def to_json(message: Message) -> dict[str, Any]:
    """Proto JSON with the proto's field names, defaults printed, and ``null`` for every unset
    optional field, so a client sees each member the reply can carry."""
    out = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated or _in_real_oneof(field):
            continue
        if field.has_presence and not message.HasField(field.name):
            out[field.name] = None
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            out[field.name] = to_json(getattr(message, field.name))
    return out


def from_json(cls: type[Message], values: Mapping[str, Any]) -> Message:
    """Parse proto JSON strictly (unknown members and wrong types raise ``json_format.ParseError``)."""
    return json_format.ParseDict(dict(values), cls())


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def parse_scalar(cls: type[Message], name: str, text: str) -> Any:
    """A query-string value typed by its field (raises ValueError or KeyError when it cannot be)."""
    field = cls.DESCRIPTOR.fields_by_name[name]
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{name}: expected true or false, got {text!r}")
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return float(text)
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return text
    if field.type == FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
        raise ValueError(f"{name}: cannot be given in the query string")
    return int(text)


def pack_datagrams(datagrams: Iterable[tuple[bytes, str, int]]) -> bytes:
    """Datagrams in one binary WebSocket frame: for each, u8 host length, the host (ASCII),
    u16 port and u16 payload length (big-endian), then the payload."""
    parts = []
    for data, host, port in datagrams:
        encoded = host.encode("ascii")
        parts.append(struct.pack("!B", len(encoded)) + encoded + struct.pack("!HH", port, len(data)))
        parts.append(data)
    return b"".join(parts)


def unpack_datagrams(frame: bytes) -> list[tuple[bytes, str, int]]:
    """The inverse of :func:`pack_datagrams`; raises ValueError on a malformed frame."""
    datagrams = []
    view = memoryview(frame)
    offset = 0
    while offset < len(view):
        size = view[offset]
        header_end = offset + 1 + size + 4
        if header_end > len(view):
            raise ValueError(f"datagram header runs past the frame at byte {offset}")
        host = bytes(view[offset + 1 : offset + 1 + size]).decode("ascii", errors="replace")
        port, length = struct.unpack_from("!HH", view, offset + 1 + size)
        if header_end + length > len(view):
            raise ValueError(f"datagram payload runs past the frame at byte {offset}")
        datagrams.append((bytes(view[header_end : header_end + length]), host, port))
        offset = header_end + length
    return datagrams
