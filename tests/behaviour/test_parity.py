"""One behaviour, every door: every gRPC method has its REST route, and every route its method."""

from __future__ import annotations

import grpc
import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from sockbroker.doors.rest import create_app
from sockbroker.server import Daemon
from sockbroker_wire.admin.v1 import admin_pb2
from sockbroker_wire.routes import routes
from sockbroker_wire.v1 import broker_pb2

#: REST-only routes: the daemon's own pages, and websockify's relay (DESIGN §9: over gRPC, Ports.Stream).
NOT_RPCS = {"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/v1/tcp/relay"}


def test_every_grpc_method_has_a_rest_route_and_back(daemon: Daemon) -> None:
    app = create_app(daemon.broker)
    served: dict[tuple[str, str], str] = {}
    for r in app.routes:
        if isinstance(r, APIRoute) and r.path not in NOT_RPCS:
            for verb in r.methods or ():
                served[(verb, r.path)] = r.name
        elif isinstance(r, APIWebSocketRoute) and r.path not in NOT_RPCS:
            served[("WS", r.path)] = r.name
    methods = {
        f"{service.name}.{method.name}"
        for proto in (broker_pb2, admin_pb2)  # the sockets' API and the admin API
        for service in proto.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    declared = {(("WS" if r.streaming else r.verb.upper()), r.path): r.name for r in routes()}
    assert {r.name for r in routes()} == methods  # every method of the proto has a route
    assert set(declared) == set(served)  # and the app serves exactly those routes
    for key, name in served.items():
        if key[0] != "WS":
            assert declared[key] == name


async def test_every_route_is_served_on_both_doors(daemon: Daemon) -> None:
    """Each unary RPC and REST route answers (unauthenticated, here), none is missing."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.grpc_port}") as channel:
        for r in routes():
            if r.streaming:
                continue
            call = channel.unary_unary(r.grpc_path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(b"")
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, r.name
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.rest_port}") as http:
        for r in routes():
            if r.streaming:
                continue
            path = r.path
            for name in r.path_fields:
                path = path.replace("{" + name + "}", "x")
            response = await http.request(r.verb.upper(), path)
            assert response.status_code == 401, (r.name, response.status_code)
            assert response.headers["content-type"] == "application/problem+json"
