"""``sockbroker serve``: both front doors on one asyncio loop, sharing one core.

SIGTERM or SIGINT: stop taking calls, drop every session (closing every socket), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import secrets
import signal
import ssl
from collections.abc import Generator

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sockbroker_wire.routes import PACKAGE
from sockbroker_wire.v1 import broker_pb2

from .config import Settings, split_address
from .core.broker import Broker, Principal
from .doors.grpc import generic_handlers
from .doors.rest import Protocol, create_app
from .metrics import Metrics

__all__ = ["Daemon", "load_or_create_token"]

log = logging.getLogger(__name__)


def load_or_create_token(path: pathlib.Path) -> str:
    """The token in ``path``; a new one, written with mode 0600, when there is none."""
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("token file %s is readable by others (mode %o)", path, mode)
        return existing
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(token + "\n")
    return token


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon stops both doors together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Daemon:
    """The running daemon: the core, the gRPC server and the REST server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        token = load_or_create_token(settings.token_file)
        self.broker = Broker(settings.limits(), [Principal("default", token, settings.policy())])
        self.metrics = Metrics(self.broker)
        self.stopping = asyncio.Event()
        self.grpc_port = 0
        self.rest_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._rest: _Uvicorn | None = None
        self._rest_task: asyncio.Task[None] | None = None
        self._health = health.aio.HealthServicer()

    async def start(self) -> None:
        settings = self.settings
        limit = settings.max_request_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        server.add_generic_rpc_handlers(generic_handlers(self.broker, self.metrics))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        services = [f"{PACKAGE}.{name}" for name in broker_pb2.DESCRIPTOR.services_by_name]
        reflection.enable_server_reflection([*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        credentials = self._grpc_credentials()
        if credentials is None:
            self.grpc_port = server.add_insecure_port(settings.grpc_address)
        else:
            self.grpc_port = server.add_secure_port(settings.grpc_address, credentials)
        previous = os.umask(0o177)  # the Unix socket is born 0600: no window where others may connect
        try:
            if settings.grpc_unix_socket is not None:
                with contextlib.suppress(FileNotFoundError):
                    settings.grpc_unix_socket.unlink()
                server.add_insecure_port(f"unix:{settings.grpc_unix_socket}")
            await server.start()
        finally:
            os.umask(previous)
        self._grpc = server
        for service in services:
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)

        host, port = split_address(settings.rest_address)
        app = create_app(self.broker, self.metrics, max_body=limit)
        config = uvicorn.Config(
            app,
            http=Protocol,
            host=host,
            port=port,
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            ws_max_size=limit,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            ssl_ca_certs=str(settings.tls_client_ca) if settings.tls_client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if settings.tls_client_ca else ssl.CERT_NONE,
        )
        self._rest = _Uvicorn(config)
        self._rest_task = asyncio.create_task(self._rest.serve())
        while not self._rest.started:
            if self._rest_task.done():
                self._rest_task.result()
                raise RuntimeError("the REST front door stopped while starting")
            await asyncio.sleep(0.01)
        self.rest_port = self._rest.servers[0].sockets[0].getsockname()[1]
        log.info("sockbroker serving gRPC on %s and REST on %s:%s", settings.grpc_address, host, self.rest_port)

    def _grpc_credentials(self) -> grpc.ServerCredentials | None:
        settings = self.settings
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    async def stop(self) -> None:
        """Stop taking calls, drop every session, and close both doors."""
        self.broker.stopping = True
        await self._health.enter_graceful_shutdown()
        if self._rest is not None:
            self._rest.should_exit = True
        grpc_stopped = self._grpc.stop(grace=1.0) if self._grpc is not None else None
        self.broker.close()
        if grpc_stopped is not None:
            await grpc_stopped
        if self._rest_task is not None:
            await self._rest_task

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        await self.start()
        try:
            await self.stopping.wait()
        finally:
            log.info("stopping: dropping %d sessions", len(self.broker.sessions))
            await self.stop()
