"""``sockbroker serve``: both front doors on one asyncio loop, sharing one core.

SIGTERM or SIGINT: stop taking calls, drop every session (closing every socket), exit 0.
SIGHUP: read the settings again and take their principals and policies (existing handles keep
working, the next operation sees the new policy); settings that are not principals or policy
wait for a restart.
Under a service manager (:mod:`.systemd`): ``READY=1`` once every door listens and the runtime
file is written, ``STOPPING=1`` when the stop begins; sockets it passed (socket activation) are
served instead of the configured addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import resource
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Generator

import grpc
import uvicorn
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from pythonjsonlogger.json import JsonFormatter
from sockbroker_wire.paths import default_runtime_file
from sockbroker_wire.routes import routes

from . import __version__, files, systemd
from .audit import AuditLog
from .config import Settings, split_address
from .core.broker import Broker
from .core.events import Event
from .doors.channel import ChannelDoor
from .doors.grpc import GrpcDoor
from .doors.proxy import ProxyDoor
from .doors.rest import Acceptor, Protocol, WebSocketProtocol, create_app
from .metrics import Metrics

__all__ = ["REFLECTION_V1", "Daemon", "configure_logging"]

log = logging.getLogger(__name__)

#: gRPC server reflection v1, served beside v1alpha (DESIGN §6; grpcio-reflection has v1alpha only).
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
#: The channel door's Unix socket, beside the token file unless ``--channel-socket`` says where.
CHANNEL_SOCKET_NAME = "channel.sock"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    """Log to standard error at ``log_level``, as text lines or (``log_format = "json"``) one JSON
    object a line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the record's extra
    fields, and ``traceback`` when there is one."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger", "exc_info": "traceback"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)


def _enable_reflection(server: grpc.aio.Server, services: list[str]) -> None:
    """Server reflection under both names, one implementation: v1 is v1alpha's proto under
    another package, message for message and field for field, so v1alpha's servicer answers it
    (grpc-go and C++ serve both the same way). v1's file joins the descriptor pool, so a client
    can describe the v1 service too."""
    _add_reflection_v1_file()
    servicer = reflection.aio.ReflectionServicer([*services, reflection.SERVICE_NAME, REFLECTION_V1])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )


def _add_reflection_v1_file() -> None:
    pool = descriptor_pool.Default()
    name = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(name)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = name, "grpc.reflection.v1"
    proto.ClearField("options")
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(proto)


def _read(setting: str, path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise files.StartupError(f"{setting} {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _grpc_bind(setting: str, address: str) -> Generator[None, None, None]:
    """gRPC's bind failure (a RuntimeError, checked for beforehand) as our one line."""
    try:
        yield
    except RuntimeError as exc:
        raise files.StartupError(f"{setting} {address}: cannot bind it ({exc})") from None


def _raise_fd_limit() -> None:
    """Raise the soft limit on open descriptors to the hard limit: every socket the daemon lends
    and every front-door connection is one (DESIGN §7 P6: 100,000 idle connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # 1 << 20: the kernel's default nr_open
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon stops both doors together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Daemon:
    """The running daemon: the core, the gRPC server and the REST server.

    ``reload`` reads the settings again (the same file, environment and flags) on SIGHUP."""

    def __init__(self, settings: Settings, reload: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self._reload = reload
        self.broker = Broker(settings.limits(), settings.principals_of())
        self.audit = AuditLog(settings.audit_log)
        self.broker.events.add_sink(self.audit)
        self.metrics = Metrics(self.broker)
        self.stopping = asyncio.Event()
        self.grpc_port = 0
        self.rest_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._rest: _Uvicorn | None = None
        self._rest_task: asyncio.Task[None] | None = None
        self._acceptor: Acceptor | None = None
        self._channel: ChannelDoor | None = None
        self.proxy: ProxyDoor | None = None
        self._health = health.aio.HealthServicer()
        self.grpc_door = GrpcDoor(self.broker, self.metrics, mtls=settings.tls_client_ca is not None)
        self._runtime: tuple[pathlib.Path, dict[str, object]] | None = None
        self._manager = systemd.Notifier.from_environment()
        #: What the daemon serves, one line (the service manager's ``STATUS=``), once started.
        self.status = "starting"

    async def start(self) -> None:
        """Bind and start both doors, then write the runtime file; a failure stops what started.

        Sockets passed by socket activation (:func:`.systemd.inherited_sockets`) replace the
        addresses of their doors. Raises :class:`~sockbroker.files.StartupError` (one line naming
        the setting) when an address, a passed socket or a file is unusable.
        """
        _raise_fd_limit()
        settings = self.settings
        inherited = systemd.inherited_sockets(
            refused=lambda door, host: (
                not settings.allow_insecure_remote and settings.off_loopback_without_tls(door, host)
            )
        )
        rest_sockets: list[socket.socket] = []
        try:
            rest_host, rest_port = split_address(settings.rest_address)
            rest_sockets = inherited.rest or files.bind_tcp("--rest-address", rest_host, rest_port)
            if settings.rest_unix_socket is not None:
                rest_sockets.append(
                    files.bind_unix(
                        "--rest-unix-socket", settings.rest_unix_socket, settings.rest_unix_socket_permissions
                    )
                )
            await self._start(rest_sockets, inherited)
        except BaseException:
            with contextlib.suppress(Exception):  # the first failure is the one to report
                await self.stop()
            for sock in [*rest_sockets, *inherited.sockets()]:
                sock.close()
            raise

    async def _start(self, rest_sockets: list[socket.socket], inherited: systemd.Inherited) -> None:
        settings = self.settings
        limit = settings.max_request_bytes
        # Options from the limits (doors/grpc.py server_options), "grpc.so_reuseport" 0 among them.
        server = grpc.aio.server(options=self.grpc_door.options())
        server.add_generic_rpc_handlers(self.grpc_door.handlers())
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        services = list(dict.fromkeys(route.full_service for route in routes()))  # the admin API's too
        _enable_reflection(server, [*services, health.SERVICE_NAME])
        self._grpc = server
        grpc_host, grpc_port = split_address(settings.grpc_address)
        files.check_tcp_free("--grpc-address", grpc_host, grpc_port)
        credentials = self._grpc_credentials()
        grpc_address = files.format_address(grpc_host, grpc_port)
        with _grpc_bind("--grpc-address", grpc_address):
            if credentials is None:
                self.grpc_port = server.add_insecure_port(grpc_address)
            else:
                self.grpc_port = server.add_secure_port(grpc_address, credentials)
        previous = os.umask(0o177)  # the Unix socket is born 0600: no window where others may connect
        try:
            if settings.grpc_unix_socket is not None:
                files.prepare_unix_socket(settings.grpc_unix_socket)
                with _grpc_bind("--grpc-unix-socket", str(settings.grpc_unix_socket)):
                    server.add_insecure_port(f"unix:{settings.grpc_unix_socket}")
            await server.start()
        finally:
            os.umask(previous)
        self.grpc_door.watch(self.grpc_port)  # unauthenticated connections and the cap (DESIGN §5)
        for service in services:
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)

        host, port = split_address(settings.rest_address)
        app = create_app(
            self.broker,
            self.metrics,
            max_body=limit,
            allowed_hosts=settings.allowed_hosts,
            allowed_origins=settings.allowed_origins,
        )
        config = uvicorn.Config(
            app,
            http=Protocol,
            ws=WebSocketProtocol,  # both keep the door's connections to account (doors/_rest_connections.py)
            host=host,
            port=port,
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            ws_max_size=limit,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            ws_per_message_deflate=False,  # a compressed frame would cost its decompressed size, unaccounted
            timeout_keep_alive=settings.idle_timeout,  # type: ignore[arg-type]  # a float works (call_later)
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            ssl_ca_certs=str(settings.tls_client_ca) if settings.tls_client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if settings.tls_client_ca else ssl.CERT_NONE,
        )
        self._rest = rest = _Uvicorn(config)
        # uvicorn serves no socket itself: the door accepts (doors/_rest_connections.Acceptor).
        self._rest_task = asyncio.create_task(rest.serve(sockets=[]))
        while not self._rest.started:
            if self._rest_task.done():
                failure = None if self._rest_task.cancelled() else self._rest_task.exception()
                raise files.StartupError(
                    f"--rest-address {settings.rest_address}: stopped while starting ({failure!r})"
                )
            await asyncio.sleep(0.01)
        self._acceptor = Acceptor(
            app.state.connections,
            rest_sockets,
            lambda: config.http_protocol_class(  # type: ignore[call-arg]  # as uvicorn's own server makes them
                config=config, server_state=rest.server_state, app_state=rest.lifespan.state
            ),
            ssl_context=config.ssl,
            backlog=config.backlog,
        )
        self._acceptor.start()
        if inherited.rest:
            host = rest_sockets[0].getsockname()[0]
        self.rest_port = rest_sockets[0].getsockname()[1]
        self._start_channel_door(inherited)
        if settings.proxy_address:
            self.proxy = ProxyDoor(self.broker)
            self.proxy.listen(*split_address(settings.proxy_address))
        self._write_runtime_file(
            files.format_address(grpc_host, self.grpc_port), files.format_address(host, self.rest_port)
        )

    def _start_channel_door(self, inherited: systemd.Inherited) -> None:
        """The channel listeners (DESIGN §8), or the ones passed by socket activation. The Unix
        socket's default place may be unusable (a read-only directory, a path too long for a
        socket): the daemon then runs without hand-offs and says so; a socket the settings name
        must work."""
        settings = self.settings
        self._channel = door = ChannelDoor(self.broker)
        if inherited.channel_tcp is not None:
            door.adopt(inherited.channel_tcp)
        elif settings.channel_address:
            door.listen_tcp(*split_address(settings.channel_address))
        if inherited.channel_unix is not None:
            door.adopt(inherited.channel_unix)
            return
        if settings.channel_socket is not None:
            door.listen_unix(settings.channel_socket)
            return
        try:
            door.listen_unix(settings.token_file.parent / CHANNEL_SOCKET_NAME)
        except files.StartupError as exc:
            log.warning("%s (running without hand-offs: give --channel-socket)", exc)

    def _write_runtime_file(self, grpc_address: str, rest_address: str) -> None:
        """Log the addresses really bound (port 0 resolved) and write them to the runtime file (DESIGN §6)."""
        settings = self.settings
        unix = settings.grpc_unix_socket
        content: dict[str, object] = {
            "pid": os.getpid(),
            "version": __version__,
            "grpc_address": grpc_address,
            "grpc_unix_socket": str(unix.absolute()) if unix is not None else None,
            "rest_address": rest_address,
            "rest_url": f"{'https' if settings.tls_cert else 'http'}://{rest_address}",
            "rest_unix_socket": str(settings.rest_unix_socket.absolute()) if settings.rest_unix_socket else None,
            "tls": settings.tls_cert is not None,
            "token_file": str(settings.token_file.absolute()),
            "channel_address": self.broker.channels.relay_address,
            "channel_socket": self.broker.channels.handoff_path,
            "proxy_address": self.proxy.address if self.proxy is not None else None,
        }
        path = settings.runtime_file or default_runtime_file(settings.token_file)
        try:
            files.write_runtime_file(path, content)
        except files.StartupError as exc:
            if settings.runtime_file is not None:
                raise
            log.warning("%s (running without a runtime file: give --runtime-file)", exc)  # e.g. a read-only Secret
            path_note = "none"
        else:
            self._runtime = (path, content)
            path_note = str(path)
        unix_note = f" and unix:{unix}" if unix is not None else ""
        self.status = f"serving gRPC on {grpc_address}{unix_note} and REST on {rest_address}"
        log.info(
            "sockbroker %s serving gRPC on %s%s and REST on %s (pid %d, runtime file %s, token file %s, "
            "API docs %s/docs)",
            __version__,
            grpc_address,
            unix_note,
            rest_address,
            os.getpid(),
            path_note,
            content["token_file"],
            content["rest_url"],
            extra={key: value for key, value in content.items() if key != "version"},
        )

    def _grpc_credentials(self) -> grpc.ServerCredentials | None:
        settings = self.settings
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        client_ca = _read("--tls-client-ca", settings.tls_client_ca) if settings.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [(_read("--tls-key", settings.tls_key), _read("--tls-cert", settings.tls_cert))],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    async def stop(self) -> None:
        """Stop taking calls, drop every session, and close both doors."""
        self.broker.stopping = True
        await self._health.enter_graceful_shutdown()
        if self._acceptor is not None:
            await self._acceptor.close()
        if self._rest is not None:
            self._rest.should_exit = True
        await self.grpc_door.close()
        if self._channel is not None:
            await self._channel.close()
        if self.proxy is not None:
            await self.proxy.close()
        grpc_stopped = self._grpc.stop(grace=1.0) if self._grpc is not None else None
        self.broker.close()
        if grpc_stopped is not None:
            await grpc_stopped
        if self._rest_task is not None:
            await self._rest_task
        if self._runtime is not None:
            files.remove_runtime_file(*self._runtime)
            self._runtime = None
        if self.settings.rest_unix_socket is not None:
            with contextlib.suppress(OSError):
                self.settings.rest_unix_socket.unlink()
        self.audit.close()

    def reload(self) -> bool:
        """SIGHUP: the principals and policies of freshly read settings, or — when they are bad —
        the old ones kept and one error logged. True when the new ones took effect."""
        if self._reload is None:
            log.warning("SIGHUP: this daemon has no settings to read again")
            return False
        try:
            settings = self._reload()
            principals = settings.principals_of()
        except (ValueError, OSError, files.StartupError) as exc:  # pydantic's ValidationError is a ValueError
            reason = " ".join(str(exc).split())
            log.error("SIGHUP: settings not reloaded, the old ones stay: %s", reason)
            self.broker.events.publish(Event("policy.reload_failed", reason=reason[:1000]))
            return False
        self.broker.reload(principals)
        log.info("SIGHUP: %d principals reloaded (%s)", len(principals), ", ".join(p.name for p in principals))
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()
        self._manager.notify("READY=1", f"MAINPID={os.getpid()}", f"STATUS={self.status}")
        try:
            await self.stopping.wait()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            sessions = len(self.broker.sessions)
            self._manager.notify("STOPPING=1", f"STATUS=stopping: dropping {sessions} sessions")
            log.info("stopping: dropping %d sessions", sessions)
            await self.stop()
