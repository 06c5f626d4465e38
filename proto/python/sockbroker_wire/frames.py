"""The WebSocket frames of the REST door's streaming routes (specified in docs/wire.md).

Binary frames carry data: on a TCP stream (``Ports.Stream``) the bytes themselves; on a UDP
stream (``Udp.ReceiveStream`` / ``Udp.SendStream``) one serialized ``sockbroker.v1.DatagramBatch``
per frame, so any language with the generated code reads them; its datagrams travel in
``datagrams``, in ``packed`` (:mod:`.packed`), or both; on the admin API's event stream
(``Admin.WatchEvents``) one serialized ``sockbroker.admin.v1.AdminEvent`` per frame. Text frames
carry control, one JSON object each:

==================================================  =====================================================
``{"eof": true}``                                   TCP stream, both ways: this side is done (FIN)
``{"done": true}``                                  UDP stream, client → daemon: no more datagrams to send
``{"sent": N}``                                     UDP stream, daemon → client: how many were sent
``{"detach": true}``                                attachment, client → daemon: end it, keep the session
``{"session", "custodian", "lease_seconds", "event"}``  attachment, daemon → client: ``attached``/``detached``
``{"error": problem}``                              daemon → client, any route: the last frame of a failure
==================================================  =====================================================

A failure closes the WebSocket with code 4000 + the problem's HTTP status (:func:`error_close_code`)
and the kind as the reason; a normal end closes with 1000. Decoders raise ValueError, with the
reason, on anything malformed; a JSON object that names none of the members above decodes to
None (a receiver ignores it, so that new frames can be added without breaking old peers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from .admin.v1 import admin_pb2
from .packed import pack_datagrams, unpack_datagrams
from .v1 import broker_pb2

__all__ = [
    "ERROR_CLOSE_BASE",
    "NORMAL_CLOSE",
    "AttachEvent",
    "DatagramFrame",
    "Detach",
    "Done",
    "Eof",
    "ErrorFrame",
    "Sent",
    "TextFrame",
    "batch_datagrams",
    "decode_admin_event",
    "decode_datagrams",
    "decode_text",
    "encode_admin_event",
    "encode_datagrams",
    "encode_text",
    "error_close_code",
]

NORMAL_CLOSE = 1000
ERROR_CLOSE_BASE = 4000

Datagram = tuple[bytes, str, int]


def error_close_code(http_status: int) -> int:
    """The close code of a WebSocket that ends with an error of this HTTP status."""
    return ERROR_CLOSE_BASE + http_status


# ── binary: datagrams ──────────────────────────────────────────────────────
@dataclass(frozen=True)
class DatagramFrame:
    """One UDP stream frame: ``(data, host, port)`` datagrams (host "" = the connected peer, when
    sending) and, from the daemon, how many datagrams its queue dropped since the last frame."""

    datagrams: tuple[Datagram, ...]
    queue_dropped: int = 0


def encode_datagrams(datagrams: Iterable[Datagram], *, queue_dropped: int = 0, packed: bool = False) -> bytes:
    """``(data, host, port)`` datagrams as one binary frame (a serialized DatagramBatch): in its
    ``datagrams`` member, or with ``packed`` in its ``packed`` member (raises
    :class:`~.packed.PackedError`, a ValueError, for a datagram that cannot be packed)."""
    if packed:
        batch = broker_pb2.DatagramBatch(packed=pack_datagrams(datagrams), queue_dropped=queue_dropped)
    else:
        batch = broker_pb2.DatagramBatch(
            datagrams=[broker_pb2.Datagram(data=data, host=host, port=port) for data, host, port in datagrams],
            queue_dropped=queue_dropped,
        )
    return batch.SerializeToString()


def batch_datagrams(batch: broker_pb2.DatagramBatch) -> list[Datagram]:
    """Every datagram of a DatagramBatch: those of ``datagrams``, then those of ``packed``.
    Raises :class:`~.packed.PackedError` (a ValueError) on malformed packed bytes."""
    datagrams = [(bytes(d.data), d.host, d.port) for d in batch.datagrams] if batch.datagrams else []
    if batch.packed:
        datagrams += unpack_datagrams(batch.packed)
    return datagrams


def decode_datagrams(frame: bytes, *, udp: str = "") -> DatagramFrame:
    """The inverse of :func:`encode_datagrams`, packed or not (both members may be set:
    ``datagrams`` first, then ``packed``). The path names the socket, so the batch's ``udp``
    member must be empty or that socket (``udp``). Raises ValueError on a malformed frame."""
    try:
        batch = broker_pb2.DatagramBatch.FromString(bytes(frame))
    except (DecodeError, RuntimeError) as exc:
        raise ValueError(f"not a serialized sockbroker.v1.DatagramBatch: {exc}") from None
    if batch.udp and batch.udp != udp:
        raise ValueError(f"the frame names socket {batch.udp!r}, the stream is {udp!r}")
    return DatagramFrame(datagrams=tuple(batch_datagrams(batch)), queue_dropped=batch.queue_dropped)


# ── binary: admin events ───────────────────────────────────────────────────
def encode_admin_event(event: Mapping[str, Any]) -> bytes:
    """One event of ``Admin.WatchEvents`` (its ``AdminEvent`` fields) as a binary frame."""
    return admin_pb2.AdminEvent(**event).SerializeToString()


def decode_admin_event(frame: bytes) -> dict[str, Any]:
    """The fields of the ``AdminEvent`` in a binary frame, every member present (empty when
    unset). Raises ValueError on a malformed frame."""
    try:
        event = admin_pb2.AdminEvent.FromString(bytes(frame))
    except (DecodeError, RuntimeError) as exc:
        raise ValueError(f"not a serialized sockbroker.admin.v1.AdminEvent: {exc}") from None
    return {field.name: getattr(event, field.name) for field in event.DESCRIPTOR.fields}


# ── text: control ──────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Eof:
    """``{"eof": true}``: the sender's side of a TCP stream is done."""


@dataclass(frozen=True)
class Done:
    """``{"done": true}``: the client sends no more datagrams."""


@dataclass(frozen=True)
class Sent:
    """``{"sent": N}``: how many datagrams the daemon sent for the client."""

    sent: int


@dataclass(frozen=True)
class Detach:
    """``{"detach": true}``: end the attachment, leave the session to its lease."""


@dataclass(frozen=True)
class AttachEvent:
    """What the attachment reports: ``event`` is ``attached`` or ``detached``."""

    session: str
    custodian: str
    lease_seconds: float
    event: str

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> AttachEvent:
        """The event from its members (``session``, ``custodian``, ``lease_seconds``, ``event``);
        raises ValueError when one is missing or of the wrong type."""
        lease = _member(values, "lease_seconds", (int, float), "a number")
        if not math.isfinite(lease):
            raise ValueError(f"lease_seconds: expected a finite number, got {lease!r}")
        return cls(
            session=_member(values, "session", str, "a string"),
            custodian=_member(values, "custodian", str, "a string"),
            lease_seconds=float(lease),
            event=_member(values, "event", str, "a string"),
        )


@dataclass(frozen=True)
class ErrorFrame:
    """``{"error": problem}``: the RFC 9457 problem of the failure that ends the WebSocket."""

    problem: Mapping[str, Any] = field(default_factory=dict)


TextFrame = Eof | Done | Sent | Detach | AttachEvent | ErrorFrame

_FLAGS: dict[str, type[Eof | Done | Detach]] = {"eof": Eof, "done": Done, "detach": Detach}


def encode_text(frame: TextFrame) -> str:
    """One control frame as the text of a WebSocket text frame."""
    if isinstance(frame, Eof | Done | Detach):
        name = next(key for key, cls in _FLAGS.items() if isinstance(frame, cls))
        return json.dumps({name: True})
    if isinstance(frame, Sent):
        return json.dumps({"sent": frame.sent})
    if isinstance(frame, AttachEvent):
        return json.dumps(
            {
                "session": frame.session,
                "custodian": frame.custodian,
                "lease_seconds": frame.lease_seconds,
                "event": frame.event,
            }
        )
    return json.dumps({"error": dict(frame.problem)})


def _member(value: Mapping[str, object], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    member = value.get(name)
    if not isinstance(member, kind) or (isinstance(member, bool) and kind is not bool):
        raise ValueError(f"{name}: expected {what}, got {member!r}"[:200])
    return member


def decode_text(text: str | bytes) -> TextFrame | None:
    """A text frame's control frame; None for a JSON object that names none (ignore it).
    Raises ValueError when the text is not a JSON object or a member has the wrong type."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"a text frame must be a JSON object: {exc}"[:200]) from None
    if not isinstance(value, dict):
        raise ValueError("a text frame must be a JSON object")
    if "error" in value:
        return ErrorFrame(_member(value, "error", dict, "a problem object"))
    if "event" in value:
        return AttachEvent.from_values(value)
    if "sent" in value:
        sent = _member(value, "sent", int, "a non-negative integer")
        if sent < 0:
            raise ValueError(f"sent: expected a non-negative integer, got {sent}")
        return Sent(sent)
    for name, cls in _FLAGS.items():
        if name in value:
            return cls() if _member(value, name, bool, "true or false") else None
    return None
