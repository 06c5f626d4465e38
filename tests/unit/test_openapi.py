"""The REST door's OpenAPI document says what the door does: every operation needs the bearer
token (DESIGN §6), so generated clients and fuzzers send it."""

from __future__ import annotations

from sockbroker.core.broker import Broker, Principal
from sockbroker.core.limits import Limits
from sockbroker.core.policy import Policy
from sockbroker.doors.rest import create_app


def test_the_openapi_document_declares_the_bearer_scheme_for_every_operation() -> None:
    broker = Broker(Limits(), [Principal("default", "t" * 43, Policy())])
    schema = create_app(broker).openapi()
    bearer = schema["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert schema["security"] == [{"bearer": []}]
    operations = [op for path in schema["paths"].values() for op in path.values()]
    assert operations and all("security" not in op or op["security"] == [{"bearer": []}] for op in operations)


def test_admin_operations_name_no_session_and_show_64_bit_counters_as_strings() -> None:
    """The admin API needs no session header, and proto JSON writes its 64-bit counters as strings."""
    broker = Broker(Limits(), [Principal("default", "t" * 43, Policy(), admin=True)])
    paths = create_app(broker).openapi()["paths"]
    listing = paths["/v1/admin/sessions"]["get"]
    assert listing["tags"] == ["Admin"]
    assert [p["name"] for p in listing["parameters"]] == ["principal"]
    assert [p["name"] for p in paths["/v1/admin/handles/{handle}"]["delete"]["parameters"]] == ["reason", "handle"]
    reply = listing["responses"]["200"]["content"]["application/json"]["schema"]
    summary = reply["properties"]["sessions"]["items"]["properties"]
    assert summary["bytes_in"]["type"] == "string" and summary["handles"]["type"] == "integer"
    connect = paths["/v1/tcp/connections"]["post"]
    assert "Sockbroker-Session" in [p["name"] for p in connect["parameters"]]
