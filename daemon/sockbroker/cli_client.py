"""The CLI's client commands: ``status``, ``token``, ``connect``, ``listen``, ``udp``, ``admin`` and
``run``.

Each is a thin program over the Python client (``sockbroker_client``), which finds the daemon
the way every client does: ``--url`` (or ``$SOCKBROKER_URL``), else the running daemon's
runtime file beside the token file, else the default ports; the token from ``--token-file``
(or ``$SOCKBROKER_TOKEN_FILE``, or ``$SOCKBROKER_TOKEN``). ``connect`` and ``listen`` move bytes
between stdin/stdout and one TCP connection, half-close carried (stdin's end of file closes the
connection's output): out of band when they can (``--via auto``: the connection's own socket handed
off, else a relay channel, when the daemon is on this host: :func:`copy_through`), else over the
connection's byte stream (``Ports.Stream``: :func:`pump`). ``admin`` is the admin API
(docs/admin.md): every session of the daemon, kills, and its events, as tables or JSON. ``run``
starts an unmodified program with its proxy variables naming the daemon's proxy door and a
custodian (:func:`_run_program`).

Exit status: 0 done, 1 the operation failed (one line on stderr: the message, then the error's
kind and errno in brackets; never a traceback), 2 bad usage (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import pathlib
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sockbroker_client import (
    AsyncAdmin,
    AsyncBroker,
    BrokerError,
    BrokerUnavailableError,
    Connecting,
    InputPort,
    default_token_file,
    proxy_environment,
)
from sockbroker_client._files import read_runtime_file, read_token_file, runtime_file
from sockbroker_client._transport import PortStream

from .config import is_loopback

__all__ = ["add_commands", "copy_through", "pump", "run"]

#: Bytes read from stdin at a time.
CHUNK = 64 * 1024
#: Most bytes ``udp send`` reads from stdin: more than any datagram can carry, so that the daemon
#: reports an oversized one (exn:fail:network) rather than the CLI cutting it short.
MAX_STDIN_DATAGRAM = 65536
#: How long ``status`` waits for the daemon's answer.
STATUS_SECONDS = 5.0
#: The REST door's default address, when neither --url nor a runtime file names one.
DEFAULT_REST = "http://127.0.0.1:8080"
#: How ``connect`` and ``listen`` carry the bytes (docs/channels.md).
VIA = ("auto", "handoff", "relay", "stream")
VIA_HELP = (
    "how the bytes travel: handoff (the connection's own socket), relay (a channel spliced by the daemon), "
    "stream (Ports.Stream / WebSocket), or auto (default: handoff, else relay, when the daemon is on this host; "
    "else stream)"
)

_COMMON_EPILOG = """
The daemon is found through --url, else $SOCKBROKER_URL, else the runtime file the running daemon
wrote beside its token file, else the default ports. A URL http(s)://HOST:PORT is the REST door,
HOST:PORT the gRPC door.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples in an epilog keep their lines."""


# ═════════════════════════════ the byte pump ═════════════════════════════


def _read_stdin(fd: int, loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes]) -> None:
    """In a thread of its own: hand ``fd``'s chunks to the loop, ``b""`` at end of file (or a read
    error). Waiting for room in ``chunks`` is the backpressure; a thread left blocked on a terminal
    when the program ends is a daemon thread and does not hold the exit."""
    while True:
        try:
            chunk = os.read(fd, CHUNK)
        except OSError:
            chunk = b""
        try:
            asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):
            return  # the loop has ended: nobody reads any more
        if not chunk:
            return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def pump(stream: PortStream, source: int = 0, sink: int = 1) -> None:
    """Bytes from the file descriptor ``source`` to the connection, and from the connection to
    ``sink``, until both directions are done: ``source``'s end of file half-closes the connection
    (the peer reads EOF and may go on sending), and the peer's end of file ends the other way.
    Then it waits for the daemon to end the stream, which it does once it has written everything
    sent and closed the output port: returning earlier, and closing the session, could cut the
    last bytes off. A ``sink`` that stops reading (a closed pipe) ends that direction without
    that wait. The first error ends both."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=8)
    threading.Thread(target=_read_stdin, args=(source, loop, chunks), name="sockbroker-stdin", daemon=True).start()

    async def upstream() -> None:
        while chunk := await chunks.get():
            await stream.send(chunk)
        await stream.send_eof()

    async def downstream() -> bool:
        """Whether the peer's EOF came (rather than ``sink`` closing)."""
        while (chunk := await stream.receive()) is not None:
            try:
                await asyncio.to_thread(_write_all, sink, chunk)
            except BrokenPipeError:
                return False
        return True

    sending, receiving = asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())
    try:
        done, _ = await asyncio.wait([sending, receiving], return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # the first error, if any
    finally:
        for task in (sending, receiving):
            task.cancel()
        await asyncio.gather(sending, receiving, return_exceptions=True)
    if receiving.result():
        await stream.receive()  # None once the daemon has ended the stream


def _write_sink(sink: int, data: bytes) -> bool:
    """Write all of ``data``; False when ``sink`` no longer takes any (a closed pipe)."""
    try:
        _write_all(sink, data)
    except BrokenPipeError:
        return False
    return True


def copy_through(channel: socket.socket, source: int = 0, sink: int = 1) -> None:
    """:func:`pump` for a channel (a plain socket, blocking): ``source`` → channel (its end of file
    sends FIN) and channel → ``sink`` (to the peer's FIN), until both are done. The upstream runs
    in a daemon thread, so a terminal that never ends its input does not hold the exit."""
    failure: list[BaseException] = []

    def upstream() -> None:
        try:
            while chunk := os.read(source, CHUNK):
                channel.sendall(chunk)
            channel.shutdown(socket.SHUT_WR)
        except OSError as exc:
            failure.append(exc)

    sending = threading.Thread(target=upstream, name="sockbroker-stdin", daemon=True)
    sending.start()
    while (chunk := channel.recv(CHUNK)) and _write_sink(sink, chunk):
        pass
    sending.join()
    if failure:
        raise failure[0]


async def _in_thread(fn: Callable[..., None], *args: Any) -> None:
    """``fn(*args)`` in a daemon thread (an interrupt ends the program, not the thread's read)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(failure: BaseException | None) -> None:
        if done.done():
            return
        if failure is None:
            done.set_result(None)
        else:
            done.set_exception(failure)

    def run() -> None:
        failure: BaseException | None = None
        try:
            fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            failure = exc
        loop.call_soon_threadsafe(settle, failure)

    threading.Thread(target=run, name="sockbroker-channel", daemon=True).start()
    await done


def _local(args: argparse.Namespace) -> bool:
    """Is the daemon on this host (no URL, or a URL naming loopback or a Unix socket)?"""
    url = args.url or os.environ.get("SOCKBROKER_URL") or ""
    if not url or url.startswith("unix:"):
        return True
    host = urllib.parse.urlsplit(url if "//" in url else f"//{url}").hostname or ""
    return is_loopback(host)


async def _carry(args: argparse.Namespace, broker: AsyncBroker, port_in: InputPort) -> None:
    """stdin/stdout through the connection of ``port_in``, by the way ``--via`` names; ``auto``
    tries a hand-off, then a relay, when the daemon is on this host, and falls back to the stream."""
    via = args.via
    modes = {"auto": ("handoff", "relay") if _local(args) else (), "stream": ()}.get(via, (via,))
    for mode in modes:
        try:
            channel = await broker.open_channel(port_in, mode)
        except (BrokerError, OSError):
            if via != "auto":
                raise
            continue
        with channel:
            await _in_thread(copy_through, channel)
        return
    stream = await broker.tcp_stream(port_in)
    try:
        await pump(stream)
    finally:
        await stream.aclose()


# ═════════════════════════════ the commands ═════════════════════════════


def _connect(args: argparse.Namespace) -> Connecting[AsyncBroker]:
    """A session with the daemon the options name (see the module's docstring)."""
    return AsyncBroker.connect(args.url or os.environ.get("SOCKBROKER_URL") or None, token_file=args.token_file)


def _token_file(args: argparse.Namespace) -> pathlib.Path:
    return pathlib.Path(args.token_file) if args.token_file else default_token_file()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _status(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("SOCKBROKER_URL")
    if url and not url.startswith(("http://", "https://")):
        raise _Usage(f"status asks the REST door: give --url http://HOST:PORT, not {url}")
    token_file = _token_file(args)
    runtime_path = runtime_file(token_file)
    runtime = await asyncio.to_thread(read_runtime_file, runtime_path) or {}
    rest = (url or runtime.get("rest_url") or os.environ.get("SOCKBROKER_REST") or DEFAULT_REST).rstrip("/")
    try:
        async with httpx.AsyncClient(base_url=rest, timeout=STATUS_SECONDS) as http:
            health = await http.get("/healthz")
            metrics = await http.get("/metrics")
    except httpx.HTTPError as exc:
        raise BrokerUnavailableError(f"no daemon at {rest}: start it with `sockbroker serve` ({exc})") from None
    serving = health.status_code == 200
    gauges: dict[str, float] = {}
    if metrics.status_code == 200:
        for family in text_string_to_metric_families(metrics.text):
            for sample in family.samples:
                if sample.name in ("sockbroker_sessions", "sockbroker_handles") and not sample.labels:
                    gauges[sample.name] = sample.value
    report: dict[str, Any] = {
        "status": "serving" if serving else "stopping",
        "rest_url": rest,
        "grpc_address": runtime.get("grpc_address"),
        "pid": runtime.get("pid"),
        "version": runtime.get("version"),
        "token_file": runtime.get("token_file") or str(token_file),
        "runtime_file": str(runtime_path) if runtime else None,
        "sessions": int(gauges["sockbroker_sessions"]) if "sockbroker_sessions" in gauges else None,
        "handles": int(gauges["sockbroker_handles"]) if "sockbroker_handles" in gauges else None,
    }
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(name) for name in report)
        for name, value in report.items():
            shown = (
                "unknown (no runtime file)" if value is None and name in ("grpc_address", "pid", "version") else value
            )
            print(f"{name + ':':<{width + 2}}{'unknown' if shown is None else shown}")
    return 0 if serving else 1


async def _token(args: argparse.Namespace) -> int:
    path = _token_file(args)
    token = await asyncio.to_thread(read_token_file, path)  # a missing or unusable file fails here, typed
    print(token if args.show else path)
    return 0


async def _connect_command(args: argparse.Namespace) -> int:
    async with _connect(args) as broker:
        port_in, _ = await broker.tcp_connect(args.host, args.port, timeout=args.timeout)
        await _carry(args, broker, port_in)
    return 0


async def _listen(args: argparse.Namespace) -> int:
    async with _connect(args) as broker:
        async with await broker.tcp_listen(args.port, reuse=True, hostname=args.host) as listener:
            host, port, _, _ = await listener.addresses(port_numbers=True)
            _say(f"listening on {host}:{port}")
            ports = await listener.accept()
            assert ports is not None  # no timeout: accept waits
        _, _, remote_host, remote_port = await ports[0].addresses(port_numbers=True)
        _say(f"connection from {remote_host}:{remote_port}")
        await _carry(args, broker, ports[0])
    return 0


async def _udp_send(args: argparse.Namespace) -> int:
    if args.data is not None:
        data = os.fsencode(args.data)
    else:
        data = await asyncio.to_thread(sys.stdin.buffer.read, MAX_STDIN_DATAGRAM)
    async with _connect(args) as broker:
        sock = await broker.udp_open_socket(args.host)
        await sock.send_to(args.host, args.port, data)
    return 0


async def _udp_receive(args: argparse.Namespace) -> int:
    received = 0
    async with _connect(args) as broker:
        sock = await broker.udp_open_socket(args.host)
        await sock.bind(args.host, args.port)
        host, port, _, _ = await sock.addresses(port_numbers=True)
        _say(f"listening on udp {host}:{port}")
        loop = asyncio.get_running_loop()
        deadline = None if args.timeout is None else loop.time() + args.timeout
        while args.count is None or received < args.count:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            count, sender, sender_port, data = await sock.receive(args.max, timeout=left)
            if count is None or data is None:
                break  # the timeout passed
            received += 1
            if args.show_sender:
                _say(f"from {sender}:{sender_port}, {count} bytes")
            await asyncio.to_thread(_write_all, 1, data)
    if args.count is not None and received < args.count:
        _say(f"sockbroker udp receive: {received} of {args.count} datagrams within {args.timeout} s")
        return 1
    return 0


# ═════════════════════════════ admin ═════════════════════════════


def _admin(args: argparse.Namespace) -> Connecting[AsyncAdmin]:
    return AsyncAdmin.connect(args.url or os.environ.get("SOCKBROKER_URL") or None, token_file=args.token_file)


def _age(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def _address(info: dict[str, Any], side: str) -> str:
    host, port = info.get(f"{side}_host"), info.get(f"{side}_port")
    if host is None:
        return ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _handle_line(info: dict[str, Any]) -> str:
    """One handle of ``admin show``: kind, state, addresses, traffic, age."""
    parts = [info["handle"], info["kind"], info["state"] + (" (closed)" if info.get("closed") else "")]
    local, remote = _address(info, "local"), _address(info, "remote")
    if local or remote:
        parts.append(f"{local} -> {remote}" if remote else local)
    if "bytes_in" in info:
        parts.append(f"in {info['bytes_in']:,} B, out {info['bytes_out']:,} B")
    if "datagrams_in" in info:
        parts.append(f"{info['datagrams_in']:,} datagrams in, {info['datagrams_out']:,} out")
    if info.get("channel"):
        parts.append(f"{info['channel']} channel")
    parts.append(f"age {_age(info['age_seconds'])}")
    return "  ".join(parts)


async def _admin_sessions(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        sessions = await admin.list_sessions(args.principal)
    if args.json:
        print(json.dumps(sessions))
        return 0
    header = ["SESSION", "PRINCIPAL", "STATE", "AGE", "HANDLES", "BYTES IN", "BYTES OUT"]
    rows = [
        [
            s["session"],
            s["principal"],
            s["state"],
            _age(s["age_seconds"]),
            str(s["handles"]),
            f"{s['bytes_in']:,}",
            f"{s['bytes_out']:,}",
        ]
        for s in sessions
    ]
    print(_table(header, rows) if rows else "no sessions")
    return 0


async def _admin_show(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        described = await admin.describe_session(args.session)
    if args.json:
        print(json.dumps(described))
        return 0
    s = described["summary"]
    print(f"session {s['session']} of {s['principal']}: {s['state']}, age {_age(s['age_seconds'])}")
    print(f"  {s['handles']} handles, bytes in {s['bytes_in']:,}, out {s['bytes_out']:,}")
    for custodian in described["custodians"]:
        indent = "  " * (custodian["depth"] + 1)
        root = " (root)" if not custodian["parent"] else ""
        print(f"{indent}{custodian['custodian']}{root}  age {_age(custodian['age_seconds'])}")
        for handle in custodian["handles"]:
            print(f"{indent}  {_handle_line(handle)}")
    return 0


async def _admin_kill(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        if args.admin_command == "kill":
            killed = await admin.kill_session(args.session, args.reason)
        else:
            killed = await admin.kill_handle(args.handle, args.reason)
    if args.json:
        print(json.dumps(killed))
    else:
        what = args.session if args.admin_command == "kill" else f"{args.handle} (session {killed['session']})"
        print(f"killed {what}: {killed['closed']} handles closed")
    return 0


async def _admin_events(args: argparse.Namespace) -> int:
    """One JSON line per event, flushed as it comes, until Ctrl-C (or ``--count`` events, not
    counting the first ``events.watch``)."""
    seen = 0
    async with _admin(args) as admin, contextlib.aclosing(admin.watch_events()) as events:
        async for event in events:
            print(json.dumps(event), flush=True)
            if event["event"] != "events.watch":
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
    return 0


async def _run_program(args: argparse.Namespace) -> int:
    """Run PROGRAM with ``ALL_PROXY`` / ``HTTPS_PROXY`` naming the proxy door and a custodian:
    ``--custodian SESSION/CUSTODIAN`` (a session another client holds), else a new custodian of a
    session of this command's own, which closes when the program ends (so does every connection
    it made). The program's exit status is the command's (128 + N when killed by signal N)."""
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        raise _Usage("run needs a program: sockbroker run [--custodian SESSION/CUSTODIAN] -- PROGRAM [ARG...]")
    if args.custodian is not None:
        if not args.custodian.startswith("ses_"):
            raise _Usage(f"--custodian takes SESSION/CUSTODIAN (a session id, ses_…), not {args.custodian!r}")
        return await _spawn(args, program, args.custodian)
    async with _connect(args) as broker:
        custodian = await broker.make_custodian()
        username = f"{broker.session}/{custodian}"
        _say(f"sockbroker run: {program[0]}'s connections are in custodian {username}")
        return await _spawn(args, program, username)


async def _spawn(args: argparse.Namespace, program: list[str], username: str) -> int:
    env = await asyncio.to_thread(proxy_environment, username, token_file=args.token_file, address=args.proxy)
    try:
        process = await asyncio.create_subprocess_exec(*program, env={**os.environ, **env})
    except OSError as exc:
        _say(f"sockbroker run: {program[0]}: {exc.strerror or exc}")
        return 127
    try:
        status = await process.wait()
    except asyncio.CancelledError:  # interrupted: the program got the same SIGINT; it ends first
        await process.wait()
        raise
    return status if status >= 0 else 128 - status


# ═════════════════════════════ arguments ═════════════════════════════


class _Usage(Exception):
    """Arguments argparse could not check alone (exit 2)."""


def _port(low: int) -> Callable[[str], int]:
    def port(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
        if not low <= value <= 65535:
            raise argparse.ArgumentTypeError(f"a port number is {low}–65535, not {value}")
        return value

    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"seconds are 0 or more, not {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, not {value}")
    return value


def _client_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url",
        metavar="URL",
        help="the daemon: http(s)://HOST:PORT (REST) or HOST:PORT (gRPC) (env SOCKBROKER_URL; "
        "default: the running daemon's runtime file)",
    )
    options.add_argument(
        "--token-file",
        metavar="PATH",
        help="the token file (env SOCKBROKER_TOKEN_FILE; default: where `sockbroker serve` writes it)",
    )
    return options


def add_commands(commands: Any) -> None:
    """Add the client commands to the ``sockbroker`` parser's subparsers ``commands``."""
    common = [_client_options()]

    def command(
        name: str, help: str, description: str, examples: str, within: Any = commands
    ) -> argparse.ArgumentParser:
        return within.add_parser(  # type: ignore[no-any-return]
            name,
            help=help,
            description=description,
            epilog="examples:\n" + examples + _COMMON_EPILOG,
            parents=common,
            formatter_class=_Formatter,
        )

    status = command(
        "status",
        "is the daemon up, where, how many sessions and handles",
        "Ask the daemon whether it serves, and print its addresses, pid, version, token file, and the open "
        "sessions and handles. Exit status 1, with one line, when no daemon answers.",
        "  sockbroker status\n  sockbroker status --json | jq .sessions\n"
        "  sockbroker status --url http://127.0.0.1:8080\n",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(run=_status)

    token = command(
        "token",
        "print the token file's path (or the token)",
        "Print the path of the token file that clients read, or with --show the token in it. Exit status 1 "
        "when the file is missing or holds no token.",
        "  sockbroker token\n"
        '  curl -H "Authorization: Bearer $(sockbroker token --show)" http://127.0.0.1:8080/v1/sessions -d "{}"\n',
    )
    token.add_argument("--show", action="store_true", help="print the token itself")
    token.set_defaults(run=_token)

    connect = command(
        "connect",
        "connect to HOST PORT through the daemon: stdin → connection → stdout",
        "Connect to HOST PORT from the daemon's host (netcat-like). Bytes read on stdin go to the connection "
        "and bytes received go to stdout; end of file on stdin closes the connection's output (the peer "
        "reads EOF) and the command ends once the peer has closed its side too.",
        "  sockbroker connect 127.0.0.1 9000 < big.bin > reply.bin\n"
        "  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | sockbroker connect --url https://broker.example:8443 10.0.0.7 80\n",
    )
    connect.add_argument("host", metavar="HOST")
    connect.add_argument("port", metavar="PORT", type=_port(1))
    connect.add_argument("--timeout", type=_seconds, metavar="S", help="give up connecting after S seconds")
    connect.add_argument("--via", choices=VIA, default="auto", help=VIA_HELP)
    connect.set_defaults(run=_connect_command)

    listen = command(
        "listen",
        "accept one connection on PORT through the daemon: stdin → connection → stdout",
        "Listen on PORT on the daemon's host, accept one connection, then move bytes as `connect` does. "
        "The address really bound (port 0: the kernel's choice) is printed on stderr.",
        "  sockbroker listen 9000 > received.bin\n"
        "  sockbroker listen 0 --host ::1\n"
        "  sockbroker listen 9000 & echo hello | sockbroker connect 127.0.0.1 9000\n",
    )
    listen.add_argument("port", metavar="PORT", type=_port(0))
    listen.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="H",
        help="the local address to listen on (default 127.0.0.1; the default policy allows loopback only)",
    )
    listen.add_argument("--via", choices=VIA, default="auto", help=VIA_HELP)
    listen.set_defaults(run=_listen)

    udp = commands.add_parser(
        "udp",
        help="send or receive UDP datagrams through the daemon",
        description="Send or receive UDP datagrams from the daemon's host.",
        formatter_class=_Formatter,
    )
    udp_commands = udp.add_subparsers(dest="udp_command", required=True, metavar="{send,receive}")

    send = command(
        "send",
        "send one datagram",
        "Send one datagram to HOST PORT: DATA, or everything on stdin when DATA is not given "
        "(at most 65,507 bytes, a UDP datagram's limit).",
        "  sockbroker udp send 127.0.0.1 9999 hello\n  head -c 1200 /dev/urandom | sockbroker udp send ::1 9999\n",
        within=udp_commands,
    )
    send.add_argument("host", metavar="HOST")
    send.add_argument("port", metavar="PORT", type=_port(1))
    send.add_argument("data", metavar="DATA", nargs="?", help="the datagram (default: stdin)")
    send.set_defaults(run=_udp_send)

    receive = command(
        "receive",
        "receive datagrams on PORT and write them to stdout",
        "Bind PORT on the daemon's host and write each datagram received to stdout, as it came. Ends after "
        "--count datagrams or --timeout seconds; exit status 1 when the timeout passes before --count came.",
        "  sockbroker udp receive 9999 --count 1\n"
        "  sockbroker udp receive 0 --timeout 10 --show-sender > datagrams.bin\n",
        within=udp_commands,
    )
    receive.add_argument("port", metavar="PORT", type=_port(0))
    receive.add_argument("--host", default="127.0.0.1", metavar="H", help="the local address (default 127.0.0.1)")
    receive.add_argument("--count", type=_positive, metavar="N", help="stop after N datagrams (default: never)")
    receive.add_argument("--timeout", type=_seconds, metavar="S", help="stop after S seconds (default: never)")
    receive.add_argument("--max", type=_positive, default=65535, metavar="BYTES", help="longest datagram kept")
    receive.add_argument("--show-sender", action="store_true", help="name each datagram's sender on stderr")
    receive.set_defaults(run=_udp_receive)

    program = command(
        "run",
        "run a program whose connections go through the daemon's proxy door, in a custodian",
        "Run PROGRAM with ALL_PROXY (SOCKS5, names resolved by the daemon) and HTTPS_PROXY (HTTP CONNECT) naming "
        "the daemon's proxy door, the token as the password and SESSION/CUSTODIAN as the username: every "
        "connection the program makes is a handle pair in that custodian (docs/proxy.md). Without --custodian, "
        "the command opens a session, makes a custodian for the program (named on stderr) and closes the "
        "session when the program ends. The exit status is the program's (127: it could not be started).",
        "  sockbroker run -- curl -sS http://127.0.0.1:8000/\n"
        "  sockbroker run --custodian ses_…/cst_… -- git clone https://example.org/repo.git\n",
    )
    program.add_argument(
        "--custodian",
        metavar="SESSION/CUSTODIAN",
        help="put the program's connections in this custodian of a session another client holds "
        "(default: a new custodian of a session of this command's own)",
    )
    program.add_argument(
        "--proxy",
        metavar="HOST:PORT",
        help="the proxy door (env SOCKBROKER_PROXY; default: the running daemon's runtime file, else 127.0.0.1:1080)",
    )
    program.add_argument("program", metavar="PROGRAM", nargs=argparse.REMAINDER, help="the program and its arguments")
    program.set_defaults(run=_run_program)

    _add_admin_commands(commands, command)


def _add_admin_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """``sockbroker admin sessions|show|kill|kill-handle|events`` (``command`` makes each parser)."""
    admin = commands.add_parser(
        "admin",
        help="the admin API: every session, kills, events",
        description="The admin API (docs/admin.md): every client's sessions and handles, killing them, and the "
        "daemon's events. The token's principal must be an admin (the default one is).",
        formatter_class=_Formatter,
    )
    admin_commands = admin.add_subparsers(
        dest="admin_command", required=True, metavar="{sessions,show,kill,kill-handle,events}"
    )
    sessions = command(
        "sessions",
        "list every open session",
        "List every open session of the daemon: its id, principal, state, age, handles and the bytes its "
        "sockets moved (in: from peers, out: to peers).",
        "  sockbroker admin sessions\n  sockbroker admin sessions --principal alice --json | jq '.[].session'\n",
        within=admin_commands,
    )
    sessions.add_argument("--principal", metavar="NAME", help="only this principal's sessions")
    sessions.add_argument("--json", action="store_true", help="print one JSON array")
    sessions.set_defaults(run=_admin_sessions)

    show = command(
        "show",
        "describe one session: its custodian tree and handles",
        "Describe SESSION: its summary, then its custodian tree, each custodian with its handles (kind, state, "
        "addresses, bytes and datagrams in and out, age).",
        "  sockbroker admin show ses_Hq3…\n  sockbroker admin show ses_Hq3… --json\n",
        within=admin_commands,
    )
    show.add_argument("session", metavar="SESSION")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(run=_admin_show)

    kill = command(
        "kill",
        "drop a session: every socket it holds is closed",
        "Drop SESSION, whoever holds it, as a session drops when its client goes away: every socket it holds "
        "is closed, and its client's next call fails with not-found.",
        '  sockbroker admin kill ses_Hq3… --reason "runaway client"\n',
        within=admin_commands,
    )
    kill.add_argument("session", metavar="SESSION")
    kill.add_argument("--reason", default="", help="why (for the audit log and the event stream)")
    kill.add_argument("--json", action="store_true", help="print one JSON object")
    kill.set_defaults(run=_admin_kill)

    kill_handle = command(
        "kill-handle",
        "close one handle of any session",
        "Close HANDLE of any session as a shutdown of its custodian would: a TCP port closes its connection "
        "(both ports), a custodian its whole subtree, a session's root custodian the session.",
        '  sockbroker admin kill-handle tin_Zx8… --reason "stuck peer"\n',
        within=admin_commands,
    )
    kill_handle.add_argument("handle", metavar="HANDLE")
    kill_handle.add_argument("--reason", default="", help="why (for the audit log and the event stream)")
    kill_handle.add_argument("--json", action="store_true", help="print one JSON object")
    kill_handle.set_defaults(run=_admin_kill)

    events = command(
        "events",
        "print the daemon's events as they happen, one JSON line each",
        "Print the daemon's events (sessions opened and dropped, policy denials, admin actions…) as they "
        "happen, one JSON object a line, until Ctrl-C. The first line is the watch's own events.watch.",
        "  sockbroker admin events\n  sockbroker admin events | jq -c 'select(.event == \"session.drop\")'\n",
        within=admin_commands,
    )
    events.add_argument("--count", type=_positive, metavar="N", help="stop after N events (default: never)")
    events.set_defaults(run=_admin_events)


# ═════════════════════════════ running ═════════════════════════════


def _one_line(error: BrokerError) -> str:
    """The error as one line: its message (Racket's lines joined), then kind and errno."""
    message = "; ".join(line.strip() for line in error.message.splitlines() if line.strip())
    detail = error.kind
    if error.errno is not None:
        detail += f", errno {error.errno}" + (f" ({error.errno_family})" if error.errno_family else "")
    return f"{message} [{detail}]"


async def _exit_status(args: argparse.Namespace, name: str) -> int:
    """Run the command; a failure is one line on stderr and status 1. Interrupted (Ctrl-C cancels
    this task), it is 130 whatever closing the session then raised."""
    try:
        status: int = await args.run(args)
    except (BrokerError, asyncio.CancelledError) as exc:
        task = asyncio.current_task()
        if isinstance(exc, asyncio.CancelledError) or (task is not None and task.cancelling()):
            return 130
        _say(f"sockbroker {name}: {_one_line(exc)}")
        return 1
    return status


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the client command ``args`` names; its exit status."""
    name = " ".join(
        filter(None, (args.command, getattr(args, "udp_command", None), getattr(args, "admin_command", None)))
    )
    try:
        return asyncio.run(_exit_status(args, name))
    except _Usage as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 130
