"""Packed datagrams: many ``(data, host, port)`` datagrams in one ``DatagramBatch.packed`` field.

A batch of ``repeated Datagram`` costs a message object per datagram to build and to read; the
packed form is one ``bytes`` field, records back to back (specified in docs/wire.md)::

    data length   uint32, big-endian
    host length   uint8
    host          ASCII, printable (0x21–0x7e); empty: the socket's connected peer
    port          uint16, big-endian
    data          the payload

A receive stream that asked for ``packed`` carries only these; any batch a client sends may carry
both (``datagrams`` first, then ``packed``). Neither function imports protobuf, so both are as
cheap as Python makes them: the encoder joins a header and the payload per datagram, a
datagram's ``host``+``port`` encoded once per batch; the decoder slices the buffer, a source's
``host``+``port`` decoded once per batch.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_HOST", "PackedError", "pack_datagrams", "unpack_datagrams"]

#: The longest host a record holds (its length is one byte).
MAX_HOST = 255

Datagram = tuple[bytes, str, int]


class PackedError(ValueError):
    """Packed bytes that are not a sequence of whole, well-formed records (or a datagram that
    cannot be packed); the message says which record and why."""


def _tail(host: str, port: int) -> bytes:
    """A record's host length, host and port: what follows its data length."""
    try:
        raw = host.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise PackedError(f"host {host!r}: not ASCII text") from None
    if len(raw) > MAX_HOST or not _printable(raw):
        raise PackedError(f"host {host!r}: more than {MAX_HOST} bytes or not printable")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise PackedError(f"port {port!r}: not in 0-65535")
    return bytes((len(raw),)) + raw + port.to_bytes(2, "big")


def _printable(raw: bytes) -> bool:
    return all(0x21 <= byte <= 0x7E for byte in raw)


def pack_datagrams(datagrams: Iterable[Datagram]) -> bytes:
    """``(data, host, port)`` datagrams as packed records (``b""`` for none). Raises
    :class:`PackedError` for a host that is not printable ASCII of at most 255 bytes, a port
    outside 0–65535, or data of 4 GiB or more."""
    parts: list[bytes] = []
    append = parts.append
    tails: dict[tuple[str, int], bytes] = {}
    for data, host, port in datagrams:
        key = host, port
        tail = tails.get(key)
        if tail is None:
            tail = tails[key] = _tail(host, port)
        size = len(data)
        if size > 0xFFFFFFFF:
            raise PackedError(f"a datagram of {size} bytes: more than a record holds")
        append(size.to_bytes(4, "big") + tail)
        append(data)
    return b"".join(parts)


def unpack_datagrams(packed: bytes | bytearray | memoryview) -> list[Datagram]:
    """The ``(data, host, port)`` datagrams of packed records, in order. Raises
    :class:`PackedError` on a truncated record or a host that is not printable ASCII."""
    buf = packed if isinstance(packed, bytes) else bytes(packed)
    out: list[Datagram] = []
    append = out.append
    sources: dict[bytes, tuple[str, int]] = {}
    offset, end, index = 0, len(buf), 0
    while offset < end:
        if offset + 5 > end:
            raise PackedError(f"record {index} at byte {offset}: truncated header")
        size = int.from_bytes(buf[offset : offset + 4], "big")
        host_end = offset + 5 + buf[offset + 4]
        if host_end + 2 > end:
            raise PackedError(f"record {index} at byte {offset}: truncated host or port")
        key = buf[offset + 4 : host_end + 2]
        source = sources.get(key)
        if source is None:
            raw = buf[offset + 5 : host_end]
            if not _printable(raw):
                raise PackedError(f"record {index} at byte {offset}: the host is not printable ASCII")
            source = sources[key] = (raw.decode("ascii"), int.from_bytes(buf[host_end : host_end + 2], "big"))
        offset = host_end + 2 + size
        if offset > end:
            raise PackedError(f"record {index}: {size} bytes of data, {end - host_end - 2} left")
        append((buf[host_end + 2 : offset], source[0], source[1]))
        index += 1
    return out
