from __future__ import annotations

from sockbroker.v1 import broker_pb2 as pb
from sockbroker.wire import from_dict, route, routes, to_dict, to_json


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


def test_routes_match_the_design() -> None:
    assert route("Tcp.Accept").path == "/v1/tcp/listeners/{listener}/accept"
    assert route("Ports.Stream").streaming
    assert len({(r.verb, r.path) for r in routes() if not r.streaming}) == len([r for r in routes() if not r.streaming])
