"""The wire package: routes, the dict and JSON codecs, and the WebSocket frames (docs/wire.md)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sockbroker_wire import frames
from sockbroker_wire.admin.v1 import admin_pb2, admin_pb2_grpc
from sockbroker_wire.codec import from_dict, parse_scalar, to_dict, to_json
from sockbroker_wire.packed import PackedError, pack_datagrams, unpack_datagrams
from sockbroker_wire.routes import ADMIN_PACKAGE, PACKAGE, route, routes
from sockbroker_wire.v1 import broker_pb2 as pb
from sockbroker_wire.v1 import broker_pb2_grpc


# ── codec and routes ───────────────────────────────────────────────────────
def test_optional_fields_round_trip_as_absent() -> None:
    message = pb.UdpReceiveRequest(udp="u", wait=False)
    assert to_dict(message) == {"udp": "u", "wait": False}
    assert from_dict(pb.UdpReceiveRequest, {"udp": "u", "max": None}) == pb.UdpReceiveRequest(udp="u")


def test_oneof_events_become_single_member_dicts() -> None:
    request = from_dict(
        pb.SyncRequest, {"events": [{"tcp_accept": {"listener": "l"}}, {"udp_receive": {"udp": "u", "max": 3}}]}
    )
    assert to_dict(request)["events"] == [{"tcp_accept": {"listener": "l"}}, {"udp_receive": {"udp": "u", "max": 3}}]


def test_json_replies_show_unset_optionals_as_null() -> None:
    assert to_json(pb.UdpReceiveReply()) == {"data": None, "count": None, "host": None, "port": None}
    assert to_json(pb.ReadReply(eof=True)) == {"data": "", "eof": True}


def test_query_strings_are_typed_by_their_field() -> None:
    assert parse_scalar(pb.AddressesRequest, "port_numbers", "TRUE") is True
    assert parse_scalar(pb.ReadRequest, "max", "12") == 12
    assert parse_scalar(pb.ReadRequest, "timeout", "0.5") == 0.5
    with pytest.raises(ValueError, match="expected true or false"):
        parse_scalar(pb.AddressesRequest, "port_numbers", "maybe")
    with pytest.raises(ValueError, match="query string"):
        parse_scalar(pb.SyncRequest, "events", "[]")


def test_routes_match_the_design() -> None:
    assert route("Tcp.Accept").path == "/v1/tcp/listeners/{listener}/accept"
    assert route("Ports.Stream").streaming
    assert len({(r.verb, r.path) for r in routes() if not r.streaming}) == len([r for r in routes() if not r.streaming])
    with pytest.raises(KeyError):
        route("Tcp.Nope")


def test_the_proto_package_and_service_names_stay_sockbroker_v1() -> None:
    """The Python package is sockbroker_wire.v1; what goes on the wire is still sockbroker.v1."""
    assert PACKAGE == pb.DESCRIPTOR.package == "sockbroker.v1"
    assert route("Tcp.Accept").grpc_path == "/sockbroker.v1.Tcp/Accept"
    assert pb.AcceptRequest.__module__ == "sockbroker_wire.v1.broker_pb2"
    assert broker_pb2_grpc.TcpStub.__module__ == "sockbroker_wire.v1.broker_pb2_grpc"
    assert not route("Tcp.Accept").admin


def test_the_admin_api_is_its_own_package() -> None:
    """sockbroker.admin.v1 on the wire, sockbroker_wire.admin.v1 in Python; its routes know it."""
    assert ADMIN_PACKAGE == admin_pb2.DESCRIPTOR.package == "sockbroker.admin.v1"
    assert admin_pb2_grpc.AdminStub.__module__ == "sockbroker_wire.admin.v1.admin_pb2_grpc"
    admin = [r for r in routes() if r.admin]
    assert [(r.name, r.verb, r.path) for r in admin] == [
        ("Admin.ListSessions", "get", "/v1/admin/sessions"),
        ("Admin.DescribeSession", "get", "/v1/admin/sessions/{session}"),
        ("Admin.KillSession", "delete", "/v1/admin/sessions/{session}"),
        ("Admin.KillHandle", "delete", "/v1/admin/handles/{handle}"),
        ("Admin.WatchEvents", "get", "/v1/admin/events"),
    ]
    assert {r.package for r in admin} == {ADMIN_PACKAGE}
    assert route("Admin.KillHandle").grpc_path == "/sockbroker.admin.v1.Admin/KillHandle"
    assert route("Admin.WatchEvents").server_streaming and not route("Admin.WatchEvents").client_streaming
    assert route("Admin.DescribeSession").output is admin_pb2.SessionDescription


def test_admin_event_frames_round_trip() -> None:
    frame = frames.encode_admin_event({"event": "session.drop", "session": "ses_x", "reason": "closed", "time": 1.5})
    assert admin_pb2.AdminEvent.FromString(frame).event == "session.drop"
    assert frames.decode_admin_event(frame) == {
        "event": "session.drop",
        "principal": "",
        "session": "ses_x",
        "operation": "",
        "target": "",
        "reason": "closed",
        "time": 1.5,
    }
    with pytest.raises(ValueError, match="AdminEvent"):
        frames.decode_admin_event(b"\xff\xff")


# ── binary frames: datagrams ───────────────────────────────────────────────
_datagram = st.tuples(
    st.binary(max_size=64), st.sampled_from(["", "127.0.0.1", "::1", "localhost"]), st.integers(0, 65535)
)


@given(datagrams=st.lists(_datagram, max_size=8), dropped=st.integers(0, 2**32 - 1))
def test_datagram_frames_round_trip(datagrams: list[tuple[bytes, str, int]], dropped: int) -> None:
    frame = frames.encode_datagrams(datagrams, queue_dropped=dropped)
    assert frames.decode_datagrams(frame) == frames.DatagramFrame(tuple(datagrams), dropped)


def test_a_datagram_frame_is_a_serialized_datagram_batch() -> None:
    """What another language reads with its own generated code."""
    frame = frames.encode_datagrams([(b"hi", "127.0.0.1", 9)], queue_dropped=2)
    assert pb.DatagramBatch.FromString(frame) == pb.DatagramBatch(
        datagrams=[pb.Datagram(data=b"hi", host="127.0.0.1", port=9)], queue_dropped=2
    )
    assert frames.encode_datagrams([]) == b""
    assert frames.decode_datagrams(b"") == frames.DatagramFrame(())


def test_a_datagram_frame_may_name_its_own_socket_only() -> None:
    named = pb.DatagramBatch(udp="u1", datagrams=[pb.Datagram(data=b"x", host="h", port=1)]).SerializeToString()
    assert frames.decode_datagrams(named, udp="u1").datagrams == ((b"x", "h", 1),)
    with pytest.raises(ValueError, match="names socket 'u1', the stream is 'u2'"):
        frames.decode_datagrams(named, udp="u2")


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff",  # not a protobuf at all
        b"\x12\x05ab",  # a datagram that runs past the frame
        b"\x0a\x02\xc3\x28",  # a udp name that is not UTF-8
        b"\x12\x04\x12\x02\xff\xfe",  # a host that is not UTF-8
    ],
)
def test_a_malformed_datagram_frame_says_why(garbage: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a serialized sockbroker\.v1\.DatagramBatch"):
        frames.decode_datagrams(garbage)


@given(st.binary(max_size=128))
def test_any_bytes_decode_or_raise_value_error(data: bytes) -> None:
    try:
        decoded = frames.decode_datagrams(data, udp="u")
    except ValueError:
        return
    assert all(isinstance(d, bytes) and isinstance(h, str) and isinstance(p, int) for d, h, p in decoded.datagrams)


# ── packed datagrams ───────────────────────────────────────────────────────
_host = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=255)
_packable = st.tuples(
    st.binary(max_size=2000), st.one_of(st.sampled_from(["", "127.0.0.1", "::1"]), _host), st.integers(0, 65535)
)


@given(datagrams=st.lists(_packable, max_size=20))
def test_packed_datagrams_round_trip(datagrams: list[tuple[bytes, str, int]]) -> None:
    packed = pack_datagrams(datagrams)
    assert unpack_datagrams(packed) == datagrams
    assert unpack_datagrams(bytearray(packed)) == unpack_datagrams(memoryview(packed)) == datagrams
    assert len(packed) == sum(4 + 1 + len(host) + 2 + len(data) for data, host, _ in datagrams)


def test_a_packed_record_is_as_documented() -> None:
    """docs/wire.md's example: `hi` from 127.0.0.1 port 9000, then an empty datagram for the peer."""
    packed = pack_datagrams([(b"hi", "127.0.0.1", 9000), (b"", "", 0)])
    assert packed.hex(" ") == "00 00 00 02 09 31 32 37 2e 30 2e 30 2e 31 23 28 68 69 00 00 00 00 00 00 00"
    assert pack_datagrams([]) == b""
    assert unpack_datagrams(b"") == []


@pytest.mark.parametrize(
    ("packed", "reason"),
    [
        (b"\x00\x00\x00", "record 0 at byte 0: truncated header"),
        (b"\x00\x00\x00\x01\x09127.0", "truncated host or port"),
        (b"\x00\x00\x00\x01\x09127.0.0.1\x00", "truncated host or port"),
        (b"\x00\x00\x00\x05\x09127.0.0.1\x00\x09abc", "record 0: 5 bytes of data, 3 left"),
        (b"\x00\x00\x00\x01\x02\xc3\xa9\x00\x09x", "not printable ASCII"),
        (b"\x00\x00\x00\x01\x03a b\x00\x09x", "not printable ASCII"),
        (b"\x00\x00\x00\x02\x01h\x00\x01ok\x00", "record 1 at byte 10: truncated header"),
    ],
)
def test_malformed_packed_bytes_say_which_record_and_why(packed: bytes, reason: str) -> None:
    with pytest.raises(PackedError, match=reason):
        unpack_datagrams(packed)


@given(st.binary(max_size=200))
def test_any_bytes_unpack_or_raise_packed_error(data: bytes) -> None:
    try:
        datagrams = unpack_datagrams(data)
    except PackedError:
        return
    assert pack_datagrams(datagrams) == data  # what decodes is exactly what it encodes back to


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        ((b"x", "é", 1), "not ASCII"),
        ((b"x", "a b", 1), "not printable"),
        ((b"x", "h" * 256, 1), "more than 255"),
        ((b"x", "h", 65536), "not in 0-65535"),
        ((b"x", "h", -1), "not in 0-65535"),
        ((b"x", "h", True), "not in 0-65535"),
    ],
)
def test_a_datagram_that_cannot_be_packed_is_refused(datagram: tuple[bytes, str, int], reason: str) -> None:
    with pytest.raises(PackedError, match=reason):
        pack_datagrams([datagram])


def test_a_packed_frame_carries_only_packed_and_a_frame_may_carry_both() -> None:
    datagrams = [(b"one", "127.0.0.1", 1), (b"two", "::1", 2)]
    frame = frames.encode_datagrams(datagrams, queue_dropped=3, packed=True)
    batch = pb.DatagramBatch.FromString(frame)
    assert (list(batch.datagrams), batch.packed, batch.queue_dropped) == ([], pack_datagrams(datagrams), 3)
    assert frames.decode_datagrams(frame) == frames.DatagramFrame(tuple(datagrams), 3)
    first = pb.Datagram(data=b"first", host="h", port=9)
    both = pb.DatagramBatch(datagrams=[first], packed=pack_datagrams(datagrams))
    assert frames.batch_datagrams(both) == [(b"first", "h", 9), *datagrams]
    assert frames.decode_datagrams(both.SerializeToString()).datagrams == ((b"first", "h", 9), *datagrams)
    with pytest.raises(ValueError, match="truncated header"):
        frames.decode_datagrams(pb.DatagramBatch(packed=b"\x00").SerializeToString())


# ── text frames: control ───────────────────────────────────────────────────
TEXT_FRAMES = [
    (frames.Eof(), {"eof": True}),
    (frames.Done(), {"done": True}),
    (frames.Sent(3), {"sent": 3}),
    (frames.Detach(), {"detach": True}),
    (
        frames.AttachEvent("s1", "c1", 30.0, "attached"),
        {"session": "s1", "custodian": "c1", "lease_seconds": 30.0, "event": "attached"},
    ),
    (frames.ErrorFrame({"kind": "not-found", "status": 404}), {"error": {"kind": "not-found", "status": 404}}),
]


@pytest.mark.parametrize(("frame", "json_form"), TEXT_FRAMES, ids=lambda v: type(v).__name__)
def test_text_frames_round_trip_in_their_documented_json_form(frame: frames.TextFrame, json_form: object) -> None:
    text = frames.encode_text(frame)
    assert json.loads(text) == json_form
    assert frames.decode_text(text) == frame
    assert frames.decode_text(text.encode()) == frame


def test_an_attach_event_takes_the_cores_values() -> None:
    values = {"session": "s", "custodian": "c", "lease_seconds": 5, "event": "detached"}
    assert frames.AttachEvent.from_values(values) == frames.AttachEvent("s", "c", 5.0, "detached")


@pytest.mark.parametrize(
    "text",
    ['{"unknown": 1}', "{}", '{"eof": false}', '{"done": false}', '{"detach": false}'],
)
def test_objects_that_name_no_frame_are_ignored(text: str) -> None:
    assert frames.decode_text(text) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must be a JSON object"),
        ("not json", "must be a JSON object"),
        ("[1, 2]", "must be a JSON object"),
        ('"eof"', "must be a JSON object"),
        ("[" * 100_000, "must be a JSON object"),
        ('{"eof": 1}', "eof: expected true or false"),
        ('{"done": "yes"}', "done: expected true or false"),
        ('{"sent": -1}', "sent: expected a non-negative integer"),
        ('{"sent": true}', "sent: expected a non-negative integer"),
        ('{"sent": 1.5}', "sent: expected a non-negative integer"),
        ('{"error": "boom"}', "error: expected a problem object"),
        ('{"event": "attached"}', "lease_seconds: expected a number"),
        ('{"event": "attached", "lease_seconds": 1, "session": 2, "custodian": "c"}', "session: expected a string"),
        ('{"event": "attached", "lease_seconds": NaN, "session": "s", "custodian": "c"}', "finite"),
    ],
)
def test_a_malformed_text_frame_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        frames.decode_text(text)


def test_error_close_codes() -> None:
    assert frames.error_close_code(404) == 4404
    assert frames.error_close_code(502) == 4502
    assert frames.NORMAL_CLOSE == 1000
