#!/usr/bin/env python3
"""Health check for a sockbroker container: REST ``GET /healthz`` or gRPC ``grpc.health.v1``.

Usage: ``sockbroker-healthcheck [http|grpc]`` (default ``http``). Exit status 0 when healthy,
1 otherwise, with one line on stdout saying why.

``http`` needs only the standard library (urllib). ``grpc`` uses grpcio, which sockbroker
already depends on, and sends a raw ``/grpc.health.v1.Health/Check`` so that no generated
health stubs are needed. Neither sends the bearer token: both health routes are token-free.

By default each check tries TLS first and then plaintext, so the same script works for the
image's default (TLS) command and for the ``--allow-insecure-remote`` override.

Environment (all optional):

  SOCKBROKER_HEALTH_HOST          address to probe                      (127.0.0.1)
  SOCKBROKER_HEALTH_HTTP_PORT     REST port                             (8080)
  SOCKBROKER_HEALTH_GRPC_PORT     gRPC port                             (50051)
  SOCKBROKER_HEALTH_TIMEOUT       seconds per attempt                   (3)
  SOCKBROKER_HEALTH_TLS           auto | tls | plaintext                (auto)
  SOCKBROKER_HEALTH_CA            PEM trusted for the gRPC server certificate
                                  (/etc/sockbroker/tls/ca.crt if present, else tls.crt)
  SOCKBROKER_HEALTH_SERVER_CERT   the daemon's certificate, read for its name
                                  (/etc/sockbroker/tls/tls.crt)
  SOCKBROKER_HEALTH_SERVER_NAME   name the gRPC server certificate is checked against
                                  (the first DNS name, else IP, of SERVER_CERT)
  SOCKBROKER_HEALTH_CLIENT_CERT   client certificate + key, needed only when the daemon
  SOCKBROKER_HEALTH_CLIENT_KEY    runs with --tls-client-ca (mTLS)

The REST check does not verify the server certificate: it talks to its own container over
loopback and only asks "is the daemon answering?". grpcio cannot skip verification, so the
gRPC check verifies against SOCKBROKER_HEALTH_CA.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

TLS_DIR = "/etc/sockbroker/tls"
SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING
NO_PROXY = [("grpc.enable_http_proxy", 0)]  # never send a loopback probe through a proxy


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SOCKBROKER_HEALTH_{name}") or default


def _modes() -> list[str]:
    mode = _env("TLS", "auto").lower()
    if mode in ("tls", "plaintext"):
        return [mode]
    return ["tls", "plaintext"]


def _client_pair() -> tuple[str, str] | None:
    cert, key = _env("CLIENT_CERT", ""), _env("CLIENT_KEY", "")
    return (cert, key) if cert and key else None


def check_http(host: str, timeout: float) -> tuple[bool, str]:
    port = _env("HTTP_PORT", "8080")
    host_part = f"[{host}]" if ":" in host else host
    reasons = []
    for mode in _modes():
        scheme = "https" if mode == "tls" else "http"
        url = f"{scheme}://{host_part}:{port}/healthz"
        context = None
        if mode == "tls":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            pair = _client_pair()
            if pair:
                context.load_cert_chain(*pair)
        # No proxy: an HTTP(S)_PROXY in the container's environment must not reroute loopback.
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(url, timeout=timeout) as reply:
                if reply.status == 200:
                    return True, f"{url}: 200"
                reasons.append(f"{url}: {reply.status}")
        except urllib.error.HTTPError as exc:
            reasons.append(f"{url}: {exc.code}")
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            reasons.append(f"{url}: {exc}")
    return False, "; ".join(reasons)


def _server_name(cert_path: str) -> str:
    explicit = _env("SERVER_NAME", "")
    if explicit:
        return explicit
    try:
        decoded = ssl._ssl._test_decode_cert(cert_path)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return "localhost"
    names = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        names = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "IP Address"]
    if not names:
        return "localhost"
    # A wildcard name cannot be sent as an authority; any label it covers will do.
    return names[0].replace("*", "healthcheck", 1)


def _serving_status(message: bytes) -> int:
    """Decode field 1 (status, varint) of a HealthCheckResponse without generated code."""
    i = 0
    while i < len(message):
        key = message[i]
        i += 1
        if key & 0x07 != 0:  # only varint fields are expected in this message
            return -1
        value = shift = 0
        while i < len(message):
            byte = message[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if key >> 3 == 1:
            return value
    return 0  # field absent: UNKNOWN


def check_grpc(host: str, timeout: float) -> tuple[bool, str]:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import grpc  # imported late: the http check must not pay for it

    port = _env("GRPC_PORT", "50051")
    host_part = f"[{host}]" if ":" in host else host
    target = f"{host_part}:{port}"
    ca = _env("CA", f"{TLS_DIR}/ca.crt" if os.path.exists(f"{TLS_DIR}/ca.crt") else f"{TLS_DIR}/tls.crt")
    reasons = []
    for mode in _modes():
        if mode == "tls":
            if not os.path.exists(ca):
                reasons.append(f"{target} tls: no CA file {ca}")
                continue
            with open(ca, "rb") as f:
                roots = f.read()
            pair = _client_pair()
            key = chain = None
            if pair:
                with open(pair[0], "rb") as f:
                    chain = f.read()
                with open(pair[1], "rb") as f:
                    key = f.read()
            name = _server_name(_env("SERVER_CERT", f"{TLS_DIR}/tls.crt"))
            credentials = grpc.ssl_channel_credentials(roots, key, chain)
            options = [
                *NO_PROXY,
                ("grpc.ssl_target_name_override", name),
                ("grpc.default_authority", name),
            ]
            channel = grpc.secure_channel(target, credentials, options)
        else:
            channel = grpc.insecure_channel(target, NO_PROXY)
        try:
            with channel:
                check = channel.unary_unary("/grpc.health.v1.Health/Check")
                status = _serving_status(check(b"", timeout=timeout))  # empty request: whole server
            if status == SERVING:
                return True, f"{target} {mode}: SERVING"
            reasons.append(f"{target} {mode}: status {status}")
        except grpc.RpcError as exc:
            reasons.append(f"{target} {mode}: {exc.code().name} {exc.details()}")
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"{target} {mode}: {exc}")
    return False, "; ".join(reasons)


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else "http"
    if what not in ("http", "grpc"):
        print(f"usage: {argv[0]} [http|grpc]", file=sys.stderr)
        return 2
    host = _env("HOST", "127.0.0.1")
    timeout = float(_env("TIMEOUT", "3"))
    healthy, why = (check_http if what == "http" else check_grpc)(host, timeout)
    print(("healthy: " if healthy else "unhealthy: ") + why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
