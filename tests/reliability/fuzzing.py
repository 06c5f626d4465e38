"""Fuzzing every REST operation (schemathesis) and every gRPC method (hypothesis) of a running daemon.

Shared by the bounded tests (``tests/reliability/test_fuzz_rest.py``, ``test_fuzz_grpc.py``, against
the suite's in-process daemon) and the full-size run (``python -m bench.fuzz``, against a daemon
process), so both fuzz the same way and count the same things (:class:`Tally`).

- **REST**: the daemon's own ``/openapi.json`` (generated from the proto by the REST door) is loaded
  by schemathesis; each operation is fuzzed with schema-valid data (*positive*), schema-violating
  data (*negative*), raw garbage bodies of any content type (*garbage*), and without or with a
  wrong token (*unauthenticated*). Every response is checked by schemathesis (no 5xx; status code,
  content type, headers and body conform to the document) and, unauthenticated, must be a 401.
- **gRPC**: hypothesis strategies built from the descriptors of ``proto/sockbroker/v1/broker.proto``
  and ``proto/sockbroker/admin/v1/admin.proto`` (:mod:`sockbroker_wire.routes`) make well-typed
  requests with arbitrary values, raw garbage
  bytes, and well-typed requests cut short or with bytes appended; with valid, missing, wrong or
  junk metadata; streaming methods get a few messages, then half-close or a cancel at a random
  moment. No status may be INTERNAL, UNKNOWN or UNIMPLEMENTED, and a reply must decode.

Both aim at live objects too: each run holds a :class:`Pool` (a session, custodians, a listener
with a pending connection, both ends of a TCP connection with bytes waiting, UDP sockets), and a
handle argument is either a random string or one of the pool's handles (``@listener`` …), resolved
when the request is sent; after a call that may close or drop them, the pool is rebuilt.

**Nothing leaves this machine.** Every address a request can carry (``hostname``,
``local_hostname``, ``family_hostname``, ``host``, ``group``, ``interface``) is an IP literal in
127.0.0.0/8 or ::1 (or the unspecified address), or a malformed string that the C library refuses
without asking a resolver (checked with strace: ``""``, ``" 127.0.0.1"``, ``"::1%lo"``, a 254-byte
name). ``.invalid`` names are *not* used: glibc sends them to the DNS server. Every port a
request can carry is outside 1–65535, or a port this process holds (:class:`Sink`: bound and
never listening, so nothing of another program's on this machine gets a packet), or one of the
pool's. :func:`sanitize_json` and :func:`sanitize_message` enforce this on everything sent,
including negative data and garbage that happens to decode, whatever a strategy produced.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import errno
import ipaddress
import json
import logging
import os
import socket
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import requests
import schemathesis
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import example as hypothesis_example
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sockbroker_wire.routes import Route, routes
from sockbroker_wire.v1 import broker_pb2
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect as ws_connect

__all__ = [
    "BLOCKING",
    "HOSTS",
    "Finding",
    "GrpcFuzzer",
    "LogWatch",
    "Pool",
    "RestFuzzer",
    "Sink",
    "Tally",
    "WebSocketFuzzer",
    "examples",
    "is_safe_host",
    "sanitize_json",
    "sanitize_message",
]

# ───────────────────────────── what may be sent ─────────────────────────────

#: Fields that carry an address to resolve, connect, send, bind or join.
HOST_FIELDS = frozenset({"hostname", "local_hostname", "family_hostname", "host", "group", "interface"})
#: Integer fields that carry a port number.
PORT_FIELDS = frozenset({"port", "local_port", "family_port"})
#: String fields that name a session, custodian, handle or call (``port`` too, where it is a string).
HANDLE_FIELDS = frozenset({"session", "custodian", "parent", "listener", "in", "out", "handle", "udp", "call", "port"})
#: Malformed hosts that getaddrinfo refuses without asking any resolver (strace shows no query).
UNRESOLVABLE = ("", " 127.0.0.1", "127.0.0.1 ", "::1%lo", "127.0.0.1\x00junk", "a" * 254)
#: Every host string the fuzzers generate: loopback and unspecified literals, and the above.
HOSTS: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.1.2.3", "127.255.255.254", "::1", "::ffff:127.0.0.1")
HOSTS += ("0.0.0.0", "::", *UNRESOLVABLE)
#: Port numbers that reach nothing: out of range (the daemon must refuse them), or 0.
OFF_PORTS = (0, -1, 65536, 2**31 - 1, -(2**31), 2**40)
#: Words some string fields expect (read modes, buffer modes), so fuzzing reaches past the first check.
WORDS = ("avail", "nowait", "exact", "block", "line", "none", "receive", "send", "both", "inet", "inet6")

#: Calls that may wait by design (until a peer, a datagram, buffer space or a timeout): the
#: client gives up on them after :data:`BLOCKING_WAIT`; any other call must answer within
#: :data:`ANSWER_WITHIN` or it is a hang.
BLOCKING = frozenset(
    {
        "Tcp.Accept",
        "Tcp.Connect",
        "Ports.Read",
        "Ports.Write",
        "Ports.Flush",
        "Udp.Send",
        "Udp.SendTo",
        "Udp.Receive",
        "Events.Sync",
    }
)
BLOCKING_WAIT = 0.3
ANSWER_WITHIN = 10.0
#: Calls after which the pool's objects may be closed or its session dropped (the admin API's
#: kills reach the pool's session and handles through the same references as every call).
DESTRUCTIVE = frozenset(
    {
        "Sessions.Close",
        "Sessions.Attach",
        "Custodians.Shutdown",
        "Admin.KillSession",
        "Admin.KillHandle",
        "Tcp.Close",
        "Tcp.AbandonPort",
        "Ports.Close",
        "Ports.Stream",
        "Udp.Close",
        "Udp.ReceiveStream",
        "Udp.SendStream",
    }
)
#: The pool's handles, as a request names them before :meth:`Pool.resolve`.
REFS = ("@session", "@root", "@custodian", "@listener", "@in", "@out", "@server-in", "@server-out", "@udp", "@udp-new")
PORT_REFS = ("@listener-port", "@udp-port", "@sink")  # "@sink": the Sink's port
#: The pool's handles of the kind a field names, drawn as often as any other handle, so that
#: fuzzing gets past "wrong kind of handle" to the operation itself.
KIND_REFS = {
    "session": ("@session",),
    "custodian": ("@custodian", "@root"),
    "parent": ("@custodian", "@root"),
    "listener": ("@listener",),
    "port": ("@in", "@out", "@server-in", "@server-out"),
    "in": ("@in", "@server-in"),
    "out": ("@out", "@server-out"),
    "udp": ("@udp", "@udp-new"),
}


def refs_for(field_name: str) -> st.SearchStrategy[str]:
    """A pool handle for a field: one of its kind half the time, any other the rest."""
    return st.sampled_from(KIND_REFS.get(field_name, REFS)) | st.sampled_from(REFS)


def examples(default: int) -> int:
    """Examples per operation and mode: ``SOCKBROKER_FUZZ_EXAMPLES``, or ``default``."""
    return int(os.environ.get("SOCKBROKER_FUZZ_EXAMPLES", default))


def is_safe_host(value: str) -> bool:
    """Is ``value`` an address that stays on this machine (or one no resolver is asked about)?"""
    if value in UNRESOLVABLE:
        return True
    if "%" in value:
        return False  # an unknown scope makes glibc try the name as a host name
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback or address.ipv4_mapped.is_unspecified
    return address.is_loopback or address.is_unspecified


def _port_number(value: Any) -> int | None:
    """The port a JSON value would decode to (proto JSON takes numbers and numeric strings)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if number.is_integer() else None


def sanitize_json(value: Any, ports: Sequence[int]) -> Any:
    """``value`` (a JSON body or query) with every unsafe host replaced by ``""`` and every port
    that might reach another program replaced by ``ports[0]``."""
    if isinstance(value, list):
        return [sanitize_json(item, ports) for item in value]
    if not isinstance(value, dict):
        return value
    clean = {}
    for key, item in value.items():
        safe = item
        if key in HOST_FIELDS and isinstance(item, str) and not is_safe_host(item):
            safe = ""
        elif key in PORT_FIELDS:
            number = _port_number(item)
            if number is not None and 1 <= number <= 65535 and number not in ports:
                safe = ports[0]
        clean[key] = sanitize_json(safe, ports)
    return clean


def sanitize_message(message: Message, ports: Sequence[int]) -> bool:
    """:func:`sanitize_json` for a protobuf message, in place; True if anything was replaced."""
    changed = False
    for descriptor, value in message.ListFields():
        if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            items = value if descriptor.is_repeated else [value]
            for item in items:
                changed |= sanitize_message(item, ports)
        elif descriptor.name in HOST_FIELDS and descriptor.type == FieldDescriptor.TYPE_STRING:
            if not is_safe_host(value):
                setattr(message, descriptor.name, "")
                changed = True
        elif (
            descriptor.name in PORT_FIELDS
            and descriptor.type != FieldDescriptor.TYPE_STRING
            and 1 <= value <= 65535
            and value not in ports
        ):
            setattr(message, descriptor.name, ports[0])
            changed = True
    return changed


def guard_bytes(cls: type[Message], data: bytes, ports: Sequence[int]) -> bytes:
    """Garbage bytes that happen to decode as ``cls`` with an unsafe host or port are re-encoded
    safe; anything else is sent as it is (the daemon decodes with the same library)."""
    try:
        message = cls.FromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return data
    return message.SerializeToString() if sanitize_message(message, ports) else data


class Sink:
    """A port of this process that nothing else on the machine can hold: TCP (bound, never
    listening, so a connect is refused) and UDP (bound, never read), on the IPv4 and IPv6
    wildcards. Generated requests that connect or send somewhere go here or to the pool."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        for _ in range(20):
            try:
                self._bind_all()
                return
            except OSError:
                self.close()
        raise RuntimeError("no port free on every family for the fuzzers' sink")

    def _bind_all(self) -> None:
        first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sockets.append(first)
        first.bind(("0.0.0.0", 0))
        self.port = int(first.getsockname()[1])
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sockets.append(udp)
        udp.bind(("0.0.0.0", self.port))
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            try:
                sock = socket.socket(socket.AF_INET6, kind)
            except OSError:
                return  # no IPv6 here: nothing can be reached over it either
            self.sockets.append(sock)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(("::", self.port))
            except OSError as exc:
                if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    return
                raise

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


# ───────────────────────────── findings and figures ─────────────────────────────


@dataclass
class Finding:
    """Something the daemon must not do, with the request that made it."""

    door: str
    operation: str
    what: str
    request: str
    response: str

    def __str__(self) -> str:
        return f"[{self.door} {self.operation}] {self.what}\n  request:  {self.request}\n  response: {self.response}"


@dataclass
class Tally:
    """What one door's fuzzing of one operation sent and saw."""

    door: str
    operation: str
    requests: int = 0
    #: HTTP 5xx, or gRPC INTERNAL / UNKNOWN.
    server_errors: int = 0
    #: Blocking calls the client gave up on (by design, not a finding).
    gave_up: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    #: Findings past the first few of each kind are counted, not kept.
    dropped: int = 0
    seconds: float = 0.0

    def find(self, what: str, request: str, response: str) -> None:
        kind = what.split(":", maxsplit=1)[0]
        if sum(1 for f in self.findings if f.what.split(":", maxsplit=1)[0] == kind) >= 3:
            self.dropped += 1
            return
        self.findings.append(Finding(self.door, self.operation, what, request[:1500], response[:1500]))

    def report(self) -> str:
        """The findings, for an assertion message."""
        lines = [str(f) for f in self.findings]
        if self.dropped:
            lines.append(f"... and {self.dropped} more of the same kinds")
        return "\n".join(lines)


def _the_fuzzers_own(record: logging.LogRecord) -> bool:
    """A record of this process's gRPC *client*, not of the daemon that shares its loop: grpc.aio
    leaves the task feeding a cancelled stream's requests pending, and asyncio reports it when the
    task is collected ("Task was destroyed but it is pending", in grpc/aio/_call.py)."""
    return record.name == "asyncio" and "grpc/aio/_call.py" in record.getMessage()


class LogWatch(logging.Handler):
    """Collects the log records of an in-process daemon that are errors or carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if (record.levelno >= logging.ERROR or record.exc_info) and not _the_fuzzers_own(record):
            self.records.append(record)

    @contextlib.contextmanager
    def watching(self) -> Iterator[LogWatch]:
        root = logging.getLogger()
        root.addHandler(self)
        try:
            yield self
        finally:
            root.removeHandler(self)

    def lines(self) -> list[str]:
        return [
            f"{r.levelname} {r.name}: {r.getMessage()}"
            + ("\n" + "".join(logging.Formatter().formatException(r.exc_info)) if r.exc_info else "")
            for r in self.records
        ]


def fuzz_settings(count: int, seed: int | None) -> Callable[[Any], Any]:
    """Hypothesis settings for one run: ``count`` examples, reproducible (derandomized, or the
    given seed), no example database, no shrinking (a finding is recorded, not raised, so the
    run counts everything; the recorded request is the reproduction)."""
    chosen = settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=seed is None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )

    def apply(test: Any) -> Any:
        test = chosen(test)
        return hypothesis_seed(seed)(test) if seed is not None else test

    return apply


# ───────────────────────────── the pool of live objects ─────────────────────────────


class Pool:
    """One session and live objects in it, made over REST, for both fuzzers to aim at."""

    def __init__(self, base_url: str, token: str, sink: Sink) -> None:
        self.base_url = base_url
        self.token = token
        self.sink = sink
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.refs: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self.dirty = True
        self.kept_alive = 0.0
        self.session = ""

    @property
    def safe_ports(self) -> tuple[int, ...]:
        """Ports a request may carry: the sink's first (the replacement), then the pool's."""
        return (self.sink.port, *self.ports.values())

    def _call(self, verb: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.http.request(verb, self.base_url + path, json=body, params=params or None, timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"pool: {verb} {path} {body!r}: {response.status_code} {response.text}")
        return response.json()

    def open(self) -> None:
        opened = self._call("POST", "/v1/sessions", {"lease_seconds": 120})
        self.session = opened["session"]
        self.http.headers["Sockbroker-Session"] = self.session
        self.refs = {"@session": self.session, "@root": opened["custodian"]}
        self.kept_alive = time.monotonic()

    def ensure(self) -> None:
        """Before each example: rebuild what a destructive call may have closed, renew the lease."""
        if self.dirty:
            self.rebuild()
        elif time.monotonic() - self.kept_alive > 10:
            self.http.post(f"{self.base_url}/v1/sessions/{self.session}/keepalive", json={}, timeout=10)
            self.kept_alive = time.monotonic()

    def rebuild(self) -> None:
        """Make the pool's objects anew. A session that drops meanwhile (an attachment the fuzzer
        broke just before is noticed a moment later) is replaced, once."""
        try:
            self._rebuild()
        except RuntimeError:
            self.session = ""
            self._rebuild()

    def _rebuild(self) -> None:
        if not self.session:
            self.open()
        else:
            work = self.refs.get("@custodian")
            if work:
                self.http.delete(f"{self.base_url}/v1/custodians/{work}", timeout=10)
            alive = self.http.post(f"{self.base_url}/v1/sessions/{self.session}/keepalive", json={}, timeout=10)
            if alive.status_code != 200:
                self.open()
        work = self._call("POST", "/v1/custodians", {})["custodian"]
        self.refs["@custodian"] = work
        listener = self._call("POST", "/v1/tcp/listeners", {"port": 0, "hostname": "127.0.0.1", "custodian": work})
        self.refs["@listener"] = listener = listener["listener"]
        port = self._call("GET", f"/v1/handles/{listener}/addresses", port_numbers="true")["local_port"]
        client = self._call("POST", "/v1/tcp/connections", {"hostname": "127.0.0.1", "port": port, "custodian": work})
        server = self._call("POST", f"/v1/tcp/listeners/{listener}/accept", {"timeout": 5, "custodian": work})
        # A second connection stays pending, for Accept and the accept-ready events.
        self._call("POST", "/v1/tcp/connections", {"hostname": "127.0.0.1", "port": port, "custodian": work})
        data = base64.b64encode(b"fuzz\n" * 20).decode()
        self._call("POST", f"/v1/tcp/ports/{client['out']}/write", {"data": data, "flush": True})
        self._call("POST", f"/v1/tcp/ports/{server['out']}/write", {"data": data, "flush": True})
        udp = self._call("POST", "/v1/udp/sockets", {"custodian": work})["udp"]
        self._call("POST", f"/v1/udp/sockets/{udp}/bind", {"hostname": "127.0.0.1", "port": 0})
        udp_port = self._call("GET", f"/v1/handles/{udp}/addresses", port_numbers="true")["local_port"]
        self._call("POST", f"/v1/udp/sockets/{udp}/send-to", {"hostname": "127.0.0.1", "port": udp_port, "data": data})
        fresh = self._call("POST", "/v1/udp/sockets", {"custodian": work})["udp"]
        self.refs.update(
            {
                "@listener": listener,
                "@in": client["in"],
                "@out": client["out"],
                "@server-in": server["in"],
                "@server-out": server["out"],
                "@udp": udp,
                "@udp-new": fresh,
            }
        )
        self.ports = {"@listener-port": port, "@udp-port": udp_port}
        self.dirty = False
        self.kept_alive = time.monotonic()

    def resolve(self, value: Any) -> Any:
        """A generated value with the pool's names (``@listener``, ``@udp-port`` …) put in."""
        if isinstance(value, str):
            return self.refs.get(value, value)
        if isinstance(value, PortRef):
            return self.ports.get(value.name, self.sink.port)
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        return value

    def close_session(self, session: str) -> None:
        """Close a session a fuzzed ``Sessions.Open`` made, so none is left behind."""
        headers = {"Sockbroker-Session": session}
        self.http.delete(f"{self.base_url}/v1/sessions/{session}", headers=headers, timeout=10)

    def close(self) -> None:
        """Close the pool's session (every handle in it goes with it); idempotent."""
        if self.session:
            self.close_session(self.session)
            self.session = ""
            self.dirty = True
        self.http.close()


@dataclass(frozen=True)
class PortRef:
    """A port of the pool (``@listener-port``, ``@udp-port``), put in when the request is sent."""

    name: str


# ───────────────────────────── REST: schemathesis ─────────────────────────────


def _patch_schema(schema: Any, sink_port: int) -> None:
    """In place: hosts and ports limited to what may be sent; handle names may be the pool's."""
    if isinstance(schema, list):
        for item in schema:
            _patch_schema(item, sink_port)
        return
    if not isinstance(schema, dict):
        return
    for name, prop in (schema.get("properties") or {}).items():
        nullable = {"nullable": True} if prop.get("nullable") else {}
        if name in HOST_FIELDS and prop.get("type") == "string":
            schema["properties"][name] = {"type": "string", "enum": list(HOSTS), **nullable}
        elif name in PORT_FIELDS and prop.get("type") == "integer":
            schema["properties"][name] = {"type": "integer", "enum": [sink_port, *OFF_PORTS], **nullable}
        elif name in HANDLE_FIELDS and prop.get("type") == "string":
            kind = list(KIND_REFS.get(name, REFS))
            schema["properties"][name] = {
                "anyOf": [{"enum": kind}, {"enum": list(REFS)}, {"type": "string"}],
                **nullable,
            }
        else:
            _patch_schema(prop, sink_port)
    if "items" in schema:
        _patch_schema(schema["items"], sink_port)


def patch_openapi(document: dict[str, Any], sink_port: int) -> dict[str, Any]:
    """The daemon's OpenAPI document, with what the fuzzer may generate narrowed (a copy)."""
    patched = copy.deepcopy(document)
    for operations in patched["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                _patch_schema(media.get("schema"), sink_port)
    return patched


#: The checks of every REST response: status, content type, headers and body as documented (the
#: 5xx check is :func:`documented_refusal`'s, which knows DESIGN §4's one 5xx).
REST_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Bad credentials, each of which must be answered 401.
BAD_AUTH: tuple[dict[str, str], ...] = (
    {},
    {"Authorization": "Bearer not-the-token"},
    {"Authorization": "Basic Zm9vOmJhcg=="},
    {"Authorization": "Bearer"},
    {"Authorization": "token"},
)
CONTENT_TYPES = (
    "application/json",
    "application/octet-stream",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-16",
    "",
)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


GARBAGE = st.one_of(
    st.binary(max_size=256),
    st.text(max_size=64).map(str.encode),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([1, 50, 900, 5_000, 100_000]).map(_nested),
    st.sampled_from([b"{", b"}", b'{"a":', b"\xef\xbb\xbf{}", b"\x00" * 16, b"null", b"1e999999", b'"\\ud800"']),
)


def _content_type(response: Any) -> str:
    """A response's media type, from requests (a string) or schemathesis (a list of strings)."""
    value = response.headers.get("content-type") or ""
    return str(value[0] if isinstance(value, list) and value else value)


def documented_refusal(response: Any) -> bool:
    """Is this 5xx the one DESIGN §4 documents: 502 for ``exn:fail:network:errno`` (the operating
    system refused the operation, with its errno), as a problem body? ``response``: requests' or
    schemathesis'."""
    if response.status_code != 502 or _content_type(response) != "application/problem+json":
        return False
    try:
        problem = response.json()
    except ValueError:
        return False
    return isinstance(problem, dict) and problem.get("kind") == "exn:fail:network:errno" and bool(problem.get("errno"))


class RestFuzzer:
    """schemathesis over the daemon's own OpenAPI document, one operation at a time."""

    def __init__(self, base_url: str, sink: Sink) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        self.document = self.http.get(base_url + "/openapi.json", timeout=10).json()
        self.schema = schemathesis.openapi.from_dict(patch_openapi(self.document, sink.port))
        self.routes = {(r.verb.upper(), r.path): r for r in routes() if not r.streaming}
        self.operations: dict[str, Any] = {}
        for result in self.schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]  # an Err raises, as it should here
            route = self.routes[(operation.method.upper(), operation.path)]
            self.operations[route.name] = operation

    def close(self) -> None:
        self.http.close()

    def fuzz(self, name: str, pool: Pool, count: int, *, seed: int | None = None, modes: Sequence[str] = ()) -> Tally:
        """Fuzz operation ``name`` (``Tcp.Connect``) aiming at ``pool``: ``count`` examples per mode
        (half as many garbage bodies, a quarter as many unauthenticated calls)."""
        self.pool = pool
        operation, route = self.operations[name], self.route(name)
        tally = Tally("rest", name)
        started = time.monotonic()
        strategies: dict[str, st.SearchStrategy[Any]] = {
            "positive": self._cases(operation, route, schemathesis.GenerationMode.POSITIVE),
            "negative": self._cases(operation, route, schemathesis.GenerationMode.NEGATIVE),
            "garbage": st.tuples(
                st.sampled_from(CONTENT_TYPES),
                GARBAGE,
                st.dictionaries(st.sampled_from([f.name for f in route.input.DESCRIPTOR.fields]), st.text(max_size=8)),
                st.sampled_from(REFS) | st.text(min_size=1, max_size=12),
            ),
            "unauthenticated": st.tuples(self._cases(operation, route), st.sampled_from(BAD_AUTH)),
        }
        # Path and query parameters are strings on the wire whatever their type, so only a body
        # can violate the document: an operation without one gets its negative share as positive.
        share = {"positive": 1.0 if route.body else 2.0, "negative": 1.0, "garbage": 0.5, "unauthenticated": 0.25}
        if not route.body:
            del strategies["negative"]
        for mode in modes or strategies:
            if mode not in strategies:
                continue
            self._run(route, mode, strategies[mode], max(2, int(count * share[mode])), seed, tally)
        tally.seconds = time.monotonic() - started
        return tally

    @staticmethod
    def _cases(
        operation: Any, route: Route, mode: schemathesis.GenerationMode = schemathesis.GenerationMode.POSITIVE
    ) -> st.SearchStrategy[tuple[str | None, Any]]:
        """schemathesis cases, each with the pool handle its path names instead (half of them), or None.
        (Given to schemathesis as fixed path parameters, they would be put back after :meth:`send`
        resolved them.)"""
        generated = operation.as_strategy(mode, headers={"Sockbroker-Session": "@session"})
        refs = refs_for(route.path_fields[-1]) | st.none() if route.path_fields else st.none()
        return st.tuples(refs, generated)

    def _run(self, route: Route, mode: str, strategy: Any, count: int, seed: int | None, tally: Tally) -> None:
        explicit: Callable[[Any], Any] = lambda test: test  # noqa: E731
        if mode == "garbage":  # every run, whatever is drawn: JSON nested far past any parser's recursion limit
            explicit = hypothesis_example(example=("application/json", _nested(100_000), {}, "@in"))

        @fuzz_settings(count, seed)
        @explicit
        @given(example=strategy)
        def run(example: Any) -> None:
            self.pool.ensure()
            if mode == "garbage":
                content_type, body, query, handle = example
                self.garbage(route, content_type, body, query, handle, tally)
            elif mode == "unauthenticated":
                (ref, case), auth = example
                self.send(route, ref, case, tally, auth=auth)
            else:
                ref, case = example
                self.send(route, ref, case, tally, auth=None)
            if route.name in DESTRUCTIVE:
                self.pool.dirty = True

        run()

    def route(self, name: str) -> Route:
        return next(r for r in self.routes.values() if r.name == name)

    def send(self, route: Route, ref: str | None, case: Any, tally: Tally, auth: dict[str, str] | None) -> None:
        pool = self.pool
        if ref is not None:
            for name in route.path_fields:
                case.path_parameters[name] = pool.resolve(ref)
        for key, value in list(case.query.items()):
            case.query[key] = sanitize_json({key: pool.resolve(value)}, pool.safe_ports)[key]
        if isinstance(case.body, (dict, list)):
            case.body = sanitize_json(pool.resolve(case.body), pool.safe_ports)
        headers = {"Sockbroker-Session": pool.session}
        headers.update({"Authorization": f"Bearer {pool.token}"} if auth is None else auth)
        wait = BLOCKING_WAIT if route.name in BLOCKING else ANSWER_WITHIN
        shown = f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r} auth={auth!r}"
        response = self._answered(
            route,
            tally,
            shown,
            wait,
            lambda: case.call(base_url=self.base_url, session=self.http, headers=headers, timeout=wait),
        )
        if response is None:
            return
        try:
            case.validate_response(response, checks=REST_CHECKS, headers=headers)
        except FailureGroup as group:
            titles = "; ".join(sorted({f.title for f in group.exceptions}))
            tally.find(f"HTTP {response.status_code}: {titles}", shown, response.text)
        if auth is not None and response.status_code != 401:
            tally.find(f"unauthenticated call answered {response.status_code}", shown, response.text)
        if route.name == "Sessions.Open" and response.status_code == 200 and auth is None:
            pool.close_session(response.json()["session"])

    def _answered(
        self, route: Route, tally: Tally, shown: str, wait: float, send: Callable[[], requests.Response]
    ) -> requests.Response | None:
        """``send()``'s response, counted; None (and a finding) when none came in time."""
        try:
            response = send()
        except requests.Timeout:
            self._gave_up(route, tally, shown, wait)
            return None
        except requests.RequestException as exc:
            tally.find(f"no response: {type(exc).__name__}", shown, str(exc))
            return None
        self._count(tally, response, shown)
        return response

    def garbage(
        self, route: Route, content_type: str, body: bytes, query: dict[str, str], handle: str, tally: Tally
    ) -> None:
        pool = self.pool
        path = route.path
        for name in route.path_fields:
            path = path.replace("{" + name + "}", urllib.parse.quote(pool.resolve(handle), safe=""))
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            pass
        else:
            safe = sanitize_json(decoded, pool.safe_ports)
            if safe != decoded:
                body = json.dumps(safe).encode()
        params = sanitize_json(pool.resolve(query), pool.safe_ports)
        headers = {"Authorization": f"Bearer {pool.token}", "Sockbroker-Session": pool.session}
        if content_type:
            headers["Content-Type"] = content_type
        wait = BLOCKING_WAIT if route.name in BLOCKING else ANSWER_WITHIN
        shown = f"{route.verb.upper()} {path} params={params!r} content-type={content_type!r} body={body[:300]!r}"
        if len(body) > 300:
            shown += f" ({len(body)} bytes)"
        response = self._answered(
            route,
            tally,
            shown,
            wait,
            lambda: self.http.request(
                route.verb.upper(), self.base_url + path, params=params, data=body, headers=headers, timeout=wait
            ),
        )
        if response is None:
            return
        if 400 <= response.status_code < 500:
            kind = response.headers.get("content-type", "")
            if kind != "application/problem+json":
                tally.find(f"error without a problem body: {kind}", shown, response.text)
        if route.name == "Sessions.Open" and response.status_code == 200:
            pool.close_session(response.json()["session"])

    def _count(self, tally: Tally, response: Any, shown: str) -> None:
        tally.requests += 1
        status = response.status_code
        if documented_refusal(response):
            tally.outcomes["502 errno"] += 1
            return
        tally.outcomes[str(status)] += 1
        if status >= 500:
            tally.server_errors += 1
            tally.find(f"HTTP {status}", shown, response.text)

    def _gave_up(self, route: Route, tally: Tally, shown: str, wait: float) -> None:
        tally.requests += 1
        tally.outcomes["gave up"] += 1
        tally.gave_up += 1
        if route.name not in BLOCKING:
            tally.find(f"no answer within {wait:.0f} s", shown, "(none)")


# ───────────────────────────── REST WebSockets: hypothesis ─────────────────────────────

#: The streaming routes' WebSocket paths (``Udp.ReceiveStream`` and ``Udp.SendStream`` share one).
WEBSOCKETS = {r.path: r for r in routes() if r.streaming}
#: Control frames as the daemon reads them (docs/wire.md), right and wrong.
TEXT_FRAMES = (
    '{"eof": true}',
    '{"done": true}',
    '{"detach": true}',
    '{"eof": 1}',
    '{"sent": -1}',
    '{"event": "attached"}',
    '{"error": {}}',
    "[]",
    "{",
    '"eof"',
    "",
    "[" * 100_000 + "]" * 100_000,
)
_JSON_FRAME = st.dictionaries(
    st.sampled_from(["eof", "done", "detach", "sent", "event", "error", "port", "data"]) | st.text(max_size=6),
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.lists(st.integers(), max_size=3),
    max_size=3,
).map(json.dumps)


@dataclass(frozen=True)
class Socket:
    """One WebSocket example: the handle in its path, its query, credentials, frames, and its end."""

    ref: str
    query: dict[str, str]
    authenticated: bool
    frames: list[str | bytes | Request]
    end: str  # close (a close frame), abort (the TCP connection dropped), wait (for the daemon to end it)


def sockets(route: Route) -> st.SearchStrategy[Socket]:
    binary: st.SearchStrategy[Any] = st.binary(max_size=512)
    if route.service == "Udp":  # binary frames are serialized DatagramBatch messages
        batch = message_spec(broker_pb2.DatagramBatch.DESCRIPTOR).map(lambda s: Request(spec=s))
        binary = binary | batch | batch
    query = st.fixed_dictionaries(
        {},
        optional={
            "direction": st.sampled_from(["receive", "send", "both", "", "x"]),
            "max": st.sampled_from(["", "-1", "0", "65535", "abc", "1e9", "99999999999999999999"]),
        },
    )
    return st.builds(
        Socket,
        ref=st.sampled_from(REFS) | st.text(min_size=1, max_size=12),
        query=query if route.service == "Udp" else st.just({}),
        authenticated=st.booleans() | st.just(True),
        frames=st.lists(st.sampled_from(TEXT_FRAMES) | _JSON_FRAME | st.text(max_size=40) | binary, max_size=5),
        end=st.sampled_from(["close", "abort", "wait"]),
    )


class WebSocketFuzzer:
    """Random frames on the REST door's streaming routes (WebSockets; not in the OpenAPI document)."""

    def __init__(self, base_url: str) -> None:
        self.url = "ws" + base_url.removeprefix("http")

    def fuzz(self, path: str, pool: Pool, count: int, *, seed: int | None = None) -> Tally:
        """Fuzz the WebSocket at ``path`` (``/v1/udp/sockets/{udp}/stream``) aiming at ``pool``."""
        route = WEBSOCKETS[path]
        tally = Tally("ws", path)
        started = time.monotonic()

        @fuzz_settings(count, seed)
        @given(example=sockets(route))
        def run(example: Socket) -> None:
            pool.ensure()
            self.one(route, pool, example, tally)
            pool.dirty = True  # a stream takes its handle over; an attachment's end drops the session

        run()
        tally.seconds = time.monotonic() - started
        return tally

    def one(self, route: Route, pool: Pool, example: Socket, tally: Tally) -> None:
        path = route.path
        for name in route.path_fields:
            path = path.replace("{" + name + "}", urllib.parse.quote(pool.resolve(example.ref), safe=""))
        url = self.url + path + ("?" + urllib.parse.urlencode(example.query) if example.query else "")
        token = pool.token if example.authenticated else "not-the-token"
        headers = {"Authorization": f"Bearer {token}", "Sockbroker-Session": pool.session}
        batch = broker_pb2.DatagramBatch  # what the UDP stream reads a binary frame as, and sends
        frames = [f.encode(batch, pool) if isinstance(f, Request) else f for f in example.frames]
        frames = [guard_bytes(batch, f, pool.safe_ports) if isinstance(f, bytes) else f for f in frames]
        shown = f"WS {url} auth={example.authenticated} frames={[f[:200] for f in frames]!r} end={example.end}"
        tally.requests += 1
        try:
            with ws_connect(url, additional_headers=headers, open_timeout=10, close_timeout=5, max_size=None) as ws:
                outcome = self._converse(ws, frames, example.end)
        except InvalidStatus as exc:
            status = exc.response.status_code
            tally.outcomes[f"HTTP {status}"] += 1
            if status >= 500:
                tally.server_errors += 1
                tally.find(f"WebSocket handshake answered {status}", shown, repr(exc.response.body))
            return
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            tally.find(f"no WebSocket: {type(exc).__name__}", shown, str(exc))
            return
        code, reason, problems = outcome
        tally.outcomes[f"close {code}"] += 1
        if code is None and example.end != "abort":
            tally.find("closed without a close frame", shown, f"frames received: {problems!r}")
        elif code is not None and (code == 1011 or 4500 <= code < 4600):
            tally.server_errors += 1
            tally.find(f"closed with {code}", shown, f"{reason}; {problems!r}")
        for problem in problems:
            if not isinstance(problem, dict) or not problem.get("kind"):
                tally.find("error frame without a problem", shown, repr(problem))

    @staticmethod
    def _converse(ws: Any, frames: list[str | bytes], end: str) -> tuple[int | None, str, list[Any]]:
        """Send, read what comes, end as told: (the daemon's close code or None, its reason, problems)."""
        problems: list[Any] = []

        def read(within: float) -> None:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                try:
                    message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    return
                if isinstance(message, str) and message.startswith('{"error"'):
                    problems.append(json.loads(message)["error"])

        try:
            for frame in frames:
                ws.send(frame)
            read(0.05)
            if end == "abort":
                ws.socket.shutdown(socket.SHUT_RDWR)
            elif end == "close":
                ws.close()
            else:
                read(BLOCKING_WAIT)
                ws.close()
        except (ConnectionClosed, OSError):
            pass
        rcvd = ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason, problems) if rcvd is not None else (None, "", problems)


# ───────────────────────────── gRPC: hypothesis ─────────────────────────────


def _scalar(descriptor: FieldDescriptor) -> st.SearchStrategy[Any]:
    name, kind = descriptor.name, descriptor.type
    if kind == FieldDescriptor.TYPE_STRING:
        if name in HOST_FIELDS:
            octets = st.integers(0, 255)
            literal = st.tuples(octets, octets, octets).map(lambda t: "127.{}.{}.{}".format(*t))
            return st.sampled_from(HOSTS) | literal
        if name in HANDLE_FIELDS:
            return refs_for(name) | refs_for(name) | st.text(max_size=40)
        return st.sampled_from(WORDS) | st.text(max_size=40)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=512) | st.sampled_from([b"", b"\x00" * 65536])
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.sampled_from([0.0, 0.01, 0.05, -1.0, 1e308, float("nan"), float("inf"), -float("inf")]) | st.floats()
    if name in PORT_FIELDS:
        return st.sampled_from(PORT_REFS).map(PortRef) | st.sampled_from(OFF_PORTS[:5])
    bits = 64 if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64) else 32
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32):
        low, high = 0, 2**bits - 1
    else:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    edges = st.sampled_from(sorted(v for v in {low, high, 0, 1, -1, 255, 65535, 65536} if low <= v <= high))
    return st.integers(low, high) | st.integers(0, 70_000) | edges


def message_spec(descriptor: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Any value for each field of ``descriptor`` (each field present or not), as a dict."""
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for item in descriptor.fields:
        if item.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            one = message_spec(item.message_type, depth + 1)
        else:
            one = _scalar(item)
        optional[item.name] = st.lists(one, max_size=3) if item.is_repeated else one
    return st.fixed_dictionaries({}, optional=optional)


def build(cls: type[Message], spec: dict[str, Any], pool: Pool) -> Message:
    """The message ``spec`` describes, with the pool's names put in."""
    message = cls()
    for name, value in spec.items():
        descriptor = cls.DESCRIPTOR.fields_by_name[name]
        if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            inner = GetMessageClass(descriptor.message_type)  # type: ignore[arg-type]
            if descriptor.is_repeated:
                for item in value:
                    getattr(message, name).add().CopyFrom(build(inner, item, pool))
            else:
                getattr(message, name).CopyFrom(build(inner, value, pool))
        elif descriptor.is_repeated:
            getattr(message, name).extend(pool.resolve(value))
        else:
            setattr(message, name, pool.resolve(value))
    return message


@dataclass(frozen=True)
class Request:
    """One request message of an example: a spec to build, raw bytes, or a built one then cut."""

    spec: dict[str, Any] | None = None
    raw: bytes | None = None
    cut: int | None = None
    tail: bytes = b""

    def encode(self, cls: type[Message], pool: Pool) -> bytes:
        if self.raw is not None:
            return guard_bytes(cls, self.raw, pool.safe_ports)
        message = build(cls, self.spec or {}, pool)
        sanitize_message(message, pool.safe_ports)
        data = message.SerializeToString()
        if self.cut is not None:
            data = data[: self.cut % (len(data) + 1)]
        return guard_bytes(cls, data + self.tail, pool.safe_ports)


def _requests(route: Route) -> st.SearchStrategy[Request]:
    spec = message_spec(route.input.DESCRIPTOR)
    return st.one_of(
        spec.map(lambda s: Request(spec=s)),
        spec.map(lambda s: Request(spec=s)),
        st.binary(max_size=256).map(lambda b: Request(raw=b)),
        st.builds(Request, spec=spec, cut=st.integers(0, 64) | st.none(), tail=st.binary(min_size=1, max_size=16)),
    )


_KEY = st.from_regex(r"[a-z][a-z0-9_.-]{0,15}", fullmatch=True).filter(
    lambda k: not k.startswith("grpc-") and k not in ("te", "content-type", "user-agent", "host")
)
_ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
#: Metadata: ``@token`` and ``@session`` are put in when the call is made.
METADATA = st.one_of(
    st.just((("authorization", "Bearer @token"), ("sockbroker-session", "@session"))),
    st.just((("authorization", "Bearer @token"), ("sockbroker-session", "@session"))),
    st.just((("authorization", "Bearer @token"),)),
    st.tuples(st.just(("authorization", "Bearer @token")), st.tuples(st.just("sockbroker-session"), _ASCII)),
    st.sampled_from(
        [
            (),
            (("authorization", "Bearer not-the-token"), ("sockbroker-session", "@session")),
            (("authorization", "Basic Zm9vOmJhcg=="),),
            (("authorization", "Bearer"),),
            (("authorization", "Bearer @token"), ("authorization", "Bearer other")),
            (("authorization", "Bearer @token"), ("sockbroker-session", "@session"), ("sockbroker-session", "x")),
            (("authorization", "Bearer @token"), ("sockbroker-session", "@session"), ("sockbroker-call", "")),
        ]
    ),
    st.tuples(
        st.just(("authorization", "Bearer @token")),
        st.just(("sockbroker-session", "@session")),
        st.tuples(_KEY, _ASCII) | st.tuples(_KEY.map(lambda k: k + "-bin"), st.binary(max_size=40)),
        st.tuples(st.just("sockbroker-call"), _ASCII),
    ),
)


@dataclass(frozen=True)
class Attempt:
    """One gRPC example: its messages, its metadata, and when (if ever) the client cancels."""

    messages: list[Request]
    metadata: tuple[tuple[str, Any], ...]
    cancel_after: float | None
    half_close: bool


def attempts(route: Route) -> st.SearchStrategy[Attempt]:
    many = route.client_streaming
    return st.builds(
        Attempt,
        messages=st.lists(_requests(route), min_size=1 if not many else 0, max_size=4 if many else 1),
        metadata=METADATA,
        cancel_after=st.none() | st.sampled_from([0.0, 0.001, 0.01, 0.05]),
        half_close=st.booleans(),
    )


@dataclass
class Outcome:
    """How a gRPC call ended, as the client saw it."""

    code: grpc.StatusCode
    details: str
    replies: list[bytes]
    #: An UNAVAILABLE with the daemon's ErrorInfo: ``exn:fail:network:errno``, the OS refused
    #: (DESIGN §4), not a channel failure.
    refused: bool = False


def _identity(data: bytes) -> bytes:
    return data


class GrpcFuzzer:
    """Hypothesis-made requests for every RPC, sent with grpc.aio on ``loop`` (another thread's)."""

    def __init__(self, target: str, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.channel = self._run(self._open(target))

    async def _open(self, target: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])

    def _run(self, coroutine: Any, within: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(within)

    def close(self) -> None:
        self._run(self.channel.close())

    def fuzz(self, name: str, pool: Pool, count: int, *, seed: int | None = None) -> Tally:
        """Fuzz RPC ``name`` (``Tcp.Connect``) aiming at ``pool``: ``count`` examples. Call it from
        a thread other than the loop's."""
        self.pool = pool
        route = next(r for r in routes() if r.name == name)
        tally = Tally("grpc", name)
        started = time.monotonic()

        # Every run, whatever is drawn: protobuf groups nested past any decoder's recursion limit.
        nested = Attempt([Request(raw=b"\x0b" * 20_000)], (("authorization", "Bearer @token"),), None, True)

        @fuzz_settings(count, seed)
        @hypothesis_example(attempt=nested)
        @given(attempt=attempts(route))
        def run(attempt: Attempt) -> None:
            self.pool.ensure()
            payloads = [m.encode(route.input, self.pool) for m in attempt.messages]
            metadata = tuple(
                (k, v.replace("@token", self.pool.token).replace("@session", self.pool.session))
                if isinstance(v, str)
                else (k, v)
                for k, v in attempt.metadata
            )
            shown = f"{route.grpc_path} metadata={metadata!r} messages={payloads!r} cancel_after={attempt.cancel_after}"
            shown = shown.replace(self.pool.token, "<token>")
            try:
                outcome = self._run(self.call(route, payloads, metadata, attempt))
            except Exception as exc:
                tally.find(f"client failed: {type(exc).__name__}", shown, repr(exc))
                return
            self.judge(route, tally, shown, outcome)
            if route.name in DESTRUCTIVE:
                self.pool.dirty = True

        run()
        tally.seconds = time.monotonic() - started
        return tally

    async def call(
        self, route: Route, payloads: list[bytes], metadata: tuple[tuple[str, Any], ...], attempt: Attempt
    ) -> Outcome:
        """Make the call; cancel it at ``attempt.cancel_after`` if given; say how it ended."""
        wait = BLOCKING_WAIT if route.name in BLOCKING or route.streaming else ANSWER_WITHIN
        kwargs: dict[str, Any] = {"request_serializer": _identity, "response_deserializer": _identity}
        call: Any
        if route.client_streaming:
            factory = self.channel.stream_stream if route.server_streaming else self.channel.stream_unary
            call = factory(route.grpc_path, **kwargs)(metadata=metadata, timeout=wait)
        elif route.server_streaming:
            call = self.channel.unary_stream(route.grpc_path, **kwargs)(payloads[0], metadata=metadata, timeout=wait)
        else:
            call = self.channel.unary_unary(route.grpc_path, **kwargs)(payloads[0], metadata=metadata, timeout=wait)
        replies: list[bytes] = []
        work = asyncio.ensure_future(self._converse(route, call, payloads, attempt.half_close, replies))
        try:
            if attempt.cancel_after is not None:
                await asyncio.wait((work,), timeout=attempt.cancel_after)
                call.cancel()
                # grpc.aio leaves a write pending on a call cancelled under it: a moment, then it goes.
                await asyncio.wait((work,), timeout=0.5)
            else:
                await asyncio.wait((work,), timeout=ANSWER_WITHIN + 5)
        finally:
            if not work.done():
                call.cancel()
                work.cancel()  # a write or read pending on a cancelled call may never return
            with contextlib.suppress(BaseException):
                await work
        cut_short = work.done() and not work.cancelled() and work.exception() is None and work.result()
        outcome = Outcome(await call.code(), await call.details() or "", replies)
        if outcome.code == grpc.StatusCode.UNAVAILABLE:
            trailers = await call.trailing_metadata() or ()
            outcome.refused = any(key == "grpc-status-details-bin" for key, _ in trailers)
        if cut_short and outcome.code == grpc.StatusCode.INTERNAL and outcome.details == "Internal error from Core":
            outcome.code, outcome.details = grpc.StatusCode.CANCELLED, "ended by the daemon while the client wrote"
        return outcome

    @staticmethod
    async def _converse(route: Route, call: Any, payloads: list[bytes], half_close: bool, replies: list[bytes]) -> bool:
        """Write the messages of a client stream, read the replies; True if the daemon ended the
        call while the client still wrote (grpc.aio then reports its own failed write as INTERNAL,
        "Internal error from Core", in place of the status the daemon sent)."""
        if route.client_streaming:
            try:
                for payload in payloads:
                    if call.done():
                        break
                    await call.write(payload)
                    await asyncio.sleep(0.001)
                if half_close and not call.done():
                    await call.done_writing()
            except grpc.aio.AioRpcError:
                return True
        if route.server_streaming:
            while len(replies) < 64:
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    break
                replies.append(reply)
        else:
            replies.append(await call)
        return False

    def judge(self, route: Route, tally: Tally, shown: str, outcome: Outcome) -> None:
        tally.requests += 1
        code, details = outcome.code, outcome.details
        if outcome.refused:
            tally.outcomes["UNAVAILABLE errno"] += 1
            return
        tally.outcomes[code.name] += 1
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            tally.server_errors += 1
            tally.find(f"{code.name}: {details[:80]}", shown, details)
        elif code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS):
            tally.find(f"{code.name}: {details[:80]}", shown, details)
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            tally.gave_up += 1
            if route.name not in BLOCKING and not route.streaming:
                tally.find(f"no answer within {ANSWER_WITHIN:.0f} s", shown, details)
        for reply in outcome.replies:
            try:
                decoded = route.output.FromString(reply)
            except (DecodeError, ValueError, RuntimeError) as exc:
                tally.find("reply does not decode", shown, f"{reply!r}: {exc}")
                continue
            if route.name == "Sessions.Open" and code == grpc.StatusCode.OK:
                self.pool.close_session(decoded.session)  # type: ignore[attr-defined]
