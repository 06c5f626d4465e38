"""The gRPC door's request decoding (``doors/grpc.py``): a long ``bytes`` field reaches the core
as a read-only view of the received message, not a copy (DESIGN §7 P8), and is always exactly
the value protobuf parsed, however the message is laid out on the wire. ``Ports.Stream`` frames
are decoded and encoded by hand the same way (DESIGN §7 P2)."""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st
from sockbroker.doors.grpc import _VIEW_AT, _fields_decoder, _Malformed, _stream_frame, _stream_frame_bytes
from sockbroker_wire.v1 import broker_pb2 as pb

decode = _fields_decoder(pb.WriteRequest)


def test_a_long_field_is_a_view_of_the_message() -> None:
    data = bytes(range(256)) * (_VIEW_AT // 128)
    raw = pb.WriteRequest(port="tout_x", data=data, flush=True).SerializeToString()
    fields = decode(raw)
    assert isinstance(fields, dict)
    view = fields["data"]
    assert isinstance(view, memoryview) and view.readonly and view.obj is raw
    assert view == data and fields["port"] == "tout_x" and fields["flush"] is True


def test_a_short_field_stays_bytes_and_bad_input_is_malformed() -> None:
    fields = decode(pb.WriteRequest(port="p", data=b"abc").SerializeToString())
    assert isinstance(fields, dict) and fields["data"] == b"abc" and isinstance(fields["data"], bytes)
    assert isinstance(decode(b"\x12\xff\xff\xff\xff\x0f"), _Malformed)  # a length past the end


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


unknown = st.one_of(
    st.tuples(st.integers(10, 2000), st.integers(0, 2**64 - 1)).map(lambda t: _field(t[0], 0, _varint(t[1]))),
    st.tuples(st.integers(10, 2000), st.binary(min_size=8, max_size=8)).map(lambda t: _field(t[0], 1, t[1])),
    st.tuples(st.integers(10, 2000), st.binary(max_size=300)).map(lambda t: _field(t[0], 2, _varint(len(t[1])) + t[1])),
    st.tuples(st.integers(10, 2000), st.binary(min_size=4, max_size=4)).map(lambda t: _field(t[0], 5, t[1])),
)


@settings(max_examples=60, deadline=None)
@given(
    before=st.lists(unknown, max_size=4),
    after=st.lists(unknown, max_size=4),
    values=st.lists(st.integers(0, 3 * _VIEW_AT), min_size=1, max_size=3),
)
def test_the_view_is_the_value_protobuf_parsed(before: list[bytes], after: list[bytes], values: list[int]) -> None:
    """Unknown fields around it, the field repeated (proto3: the last one counts), any sizes."""
    raw = b"".join(before)
    for n, size in enumerate(values):
        raw += pb.WriteRequest(data=bytes([n % 256]) * size).SerializeToString()
    raw += b"".join(after)
    expected = pb.WriteRequest.FromString(raw).data
    fields = decode(raw)
    assert isinstance(fields, dict)
    assert bytes(fields.get("data", b"")) == expected
    assert isinstance(fields.get("data", b""), memoryview) == (len(expected) >= _VIEW_AT)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(_VIEW_AT, 2 * _VIEW_AT), cut=st.integers(1, 40), tail=st.sampled_from([b"", b"\x80", b"\x0b"]))
def test_a_long_message_cut_short_or_broken_is_judged_by_protobuf(size: int, cut: int, tail: bytes) -> None:
    """Taking the fields out first never accepts what protobuf refuses, nor refuses what it takes."""
    raw = pb.WriteRequest(port="p", data=b"x" * size, flush=True).SerializeToString()
    raw = raw[: len(raw) - cut] + tail if cut % 2 else raw + tail
    try:
        expected: bytes | None = pb.WriteRequest.FromString(raw).data
    except Exception:
        expected = None
    fields = decode(raw)
    if expected is None:
        assert isinstance(fields, _Malformed)
    else:
        assert isinstance(fields, dict) and bytes(fields.get("data", b"")) == expected


def test_decoding_a_long_write_allocates_no_copy_of_its_data() -> None:
    raw = pb.WriteRequest(port="p", data=b"x" * (4 << 20)).SerializeToString()
    tracemalloc.start()
    try:
        fields = decode(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(fields, dict) and len(fields["data"]) == 4 << 20
    assert peak < 64 * 1024, peak


def test_a_stream_frame_s_data_is_a_view_of_the_message() -> None:
    raw = pb.StreamFrame(port="tin_x", data=b"abc" * 1000).SerializeToString()
    frame = _stream_frame(raw)
    assert not isinstance(frame, _Malformed)
    assert isinstance(frame.data, memoryview) and frame.data.obj is raw and frame.data == b"abc" * 1000
    assert frame.port == "tin_x" and frame.eof is False
    assert isinstance(_stream_frame(b"\x12\xff\xff\xff\xff\x0f"), _Malformed)
    assert isinstance(_stream_frame(b"\x0a\x02\xff\xfe"), _Malformed)  # a port that is not UTF-8


@settings(max_examples=60, deadline=None)
@given(
    before=st.lists(unknown, max_size=3),
    values=st.lists(st.binary(max_size=2000), max_size=3),
    port=st.text(max_size=20),
    eof=st.booleans(),
    cut=st.integers(0, 3),
)
def test_a_stream_frame_decodes_as_protobuf_would(
    before: list[bytes], values: list[bytes], port: str, eof: bool, cut: int
) -> None:
    raw = b"".join(before) + pb.StreamFrame(port=port, eof=eof).SerializeToString()
    for value in values:
        raw += pb.StreamFrame(data=value).SerializeToString()
    raw = raw[: len(raw) - cut]
    try:
        expected: pb.StreamFrame | None = pb.StreamFrame.FromString(raw)
    except Exception:
        expected = None
    frame = _stream_frame(raw)
    if expected is None:
        assert isinstance(frame, _Malformed)
    else:
        assert not isinstance(frame, _Malformed)
        assert (frame.port, bytes(frame.data), frame.eof) == (expected.port, expected.data, expected.eof)


@settings(max_examples=60, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.integers(0, 70_000).map(bytes)))
def test_a_reply_frame_is_what_protobuf_would_write(data: bytes) -> None:
    assert _stream_frame_bytes(data) == pb.StreamFrame(data=data).SerializeToString()
    assert _stream_frame_bytes(pb.StreamFrame(eof=True)) == pb.StreamFrame(eof=True).SerializeToString()
