"""Helper processes of the benchmark: ``python -m bench.peers KIND [options]``.

Every server binds 127.0.0.1 on an ephemeral port and prints ``PORT <n>`` once it accepts.

- ``tcp-sink``: the sink protocol (see common.py) over plain TCP, one thread per connection.
- ``tcp-hold``: accepts connections and holds them open, idle, until their other end closes them.
- ``grpc-server``: bare grpc.aio with raw-bytes generic handlers: ``/bench.Bench/Sink``
  (bidi stream, the sink protocol) and ``/bench.Bench/Echo`` (unary echo).
- ``ws-server``: bare FastAPI on uvicorn; the WebSocket ``/sink`` speaks the sink protocol.

The UDP blaster is ``bench.blast``, a module of its own that starts in a fraction of the time.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
import uvicorn
import uvloop
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.common import ACK, LOOPBACK, MIB, SinkCounter

GRPC_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


def listening_socket(backlog: int = 128) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    sock.listen(backlog)
    return sock


# ───────────────────────────── plain TCP ─────────────────────────────


def sink_connection(conn: socket.socket) -> None:
    counter = SinkCounter()
    buffer = bytearray(MIB)
    view = memoryview(buffer)
    with conn:
        while n := conn.recv_into(buffer):
            if counter.feed(view[:n]):
                conn.sendall(ACK)


def tcp_sink(_: argparse.Namespace) -> None:
    server = listening_socket()
    announce(server.getsockname()[1])
    while True:
        conn, _addr = server.accept()
        threading.Thread(target=sink_connection, args=(conn,), daemon=True).start()


def tcp_hold(_: argparse.Namespace) -> None:
    """Hold every accepted connection, idle, until its other end closes it (then close it too)."""
    server = listening_socket(backlog=4096)
    server.setblocking(False)
    announce(server.getsockname()[1])
    with selectors.DefaultSelector() as selector:
        selector.register(server, selectors.EVENT_READ)
        while True:
            for key, _mask in selector.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is server:
                    with contextlib.suppress(BlockingIOError):
                        for _accepted in range(256):
                            conn, _addr = server.accept()
                            selector.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    sock.close()


# ───────────────────────────── bare grpc.aio ─────────────────────────────


async def grpc_sink(requests: AsyncIterator[bytes], _context: object) -> AsyncIterator[bytes]:
    counter = SinkCounter()
    async for message in requests:
        if counter.feed(message):
            yield ACK


async def grpc_echo(request: bytes, _context: object) -> bytes:
    return request


async def grpc_server(_: argparse.Namespace) -> None:
    server = grpc.aio.server(options=GRPC_OPTIONS)
    handlers = {
        "Sink": grpc.stream_stream_rpc_method_handler(grpc_sink),
        "Echo": grpc.unary_unary_rpc_method_handler(grpc_echo),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Bench", handlers)])
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    await server.start()
    announce(port)
    await server.wait_for_termination()


# ───────────────────────────── bare FastAPI WebSocket ─────────────────────────────


def ws_app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/sink")
    async def sink(websocket: WebSocket) -> None:
        await websocket.accept()
        counter = SinkCounter()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                if counter.feed(await websocket.receive_bytes()):
                    await websocket.send_bytes(ACK)

    return app


async def ws_server(_: argparse.Namespace) -> None:
    sock = listening_socket()
    config = uvicorn.Config(ws_app(), loop="uvloop", log_level="warning", ws_max_size=16 * MIB)
    server = uvicorn.Server(config)
    announce(sock.getsockname()[1])
    await server.serve(sockets=[sock])


# ───────────────────────────── entry point ─────────────────────────────


def run_async(main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]]) -> Callable[[argparse.Namespace], None]:
    def runner(args: argparse.Namespace) -> None:
        uvloop.run(main(args))

    return runner


KINDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "tcp-sink": tcp_sink,
    "tcp-hold": tcp_hold,
    "grpc-server": run_async(grpc_server),
    "ws-server": run_async(ws_server),
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("kind", choices=sorted(KINDS))
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        KINDS[args.kind](args)


if __name__ == "__main__":
    main(sys.argv[1:])
