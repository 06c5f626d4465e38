"""Messages ↔ plain dicts (what the core and the clients speak) and ↔ proto JSON (REST).

The dict form: field names → values; unset optional fields absent; a oneof is
``{member: value}`` of its one set member. The JSON form is proto JSON with the proto's field
names, parsed strictly, so the REST door accepts exactly what the gRPC door does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .routes import message_class

__all__ = ["JsonTooDeep", "from_dict", "from_json", "loads", "parse_scalar", "to_dict", "to_json"]


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
    """A message as plain values: field names → values; unset optional fields omitted;
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


class JsonTooDeep(ValueError):
    """A JSON text nested deeper than allowed."""


def loads(text: str | bytes | bytearray, *, max_depth: int) -> Any:
    """``json.loads``, refusing nesting deeper than ``max_depth`` (a top-level object or array
    is depth 1) with :class:`JsonTooDeep`; malformed text raises ValueError as ``json.loads``
    does. Deep nesting costs a recursion level per level in the parser (100,000 ``[`` are a
    RecursionError, not a ValueError), and deep values cost every later consumer the same."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels") from None
    if isinstance(value, (list, dict)):
        pending: list[tuple[Any, int]] = [(value, 1)]
        while pending:
            node, depth = pending.pop()
            if depth > max_depth:
                raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, (list, dict)):
                    pending.append((child, depth + 1))
    return value


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
