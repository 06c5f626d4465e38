"""Helper processes of the benchmark: ``python -m bench.peers KIND [options]``.

Every server binds 127.0.0.1 on an ephemeral port and prints ``PORT <n>`` once it accepts.

- ``tcp-sink``: the sink protocol (see common.py) over plain TCP, one thread per connection.
- ``tcp-hold``: accepts connections and holds them open, idle, until stopped.
- ``grpc-server``: bare grpc.aio with raw-bytes generic handlers: ``/bench.Bench/Sink``
  (bidi stream, the sink protocol), ``/bench.Bench/Echo`` (unary echo) and
  ``/bench.Bench/Datagrams`` (server stream of N messages of a given size).
- ``ws-server``: bare FastAPI on uvicorn; the WebSocket ``/sink`` speaks the sink protocol.
- ``udp-blast``: sends datagrams to 127.0.0.1:PORT as fast as it can, for a bounded count and
  time, then prints ``SENT <n>``.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
import uvicorn
import uvloop
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.common import ACK, LOOPBACK, MIB, SinkCounter

DATAGRAMS_REQUEST = struct.Struct(">II")  # message count, message size
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
    server = listening_socket(backlog=4096)
    announce(server.getsockname()[1])
    held: list[socket.socket] = []
    while True:
        conn, _addr = server.accept()
        held.append(conn)


# ───────────────────────────── UDP ─────────────────────────────


def udp_blast(args: argparse.Namespace) -> None:
    payload = bytes(args.size)
    sent = 0
    end = time.monotonic() + args.seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, args.port))
        while sent < args.count and time.monotonic() < end:
            for _ in range(256):
                try:
                    sock.send(payload)
                except OSError:  # ECONNREFUSED / ENOBUFS: that datagram was not sent
                    continue
                sent += 1
    print(f"SENT {sent}", flush=True)


# ───────────────────────────── bare grpc.aio ─────────────────────────────


async def grpc_sink(requests: AsyncIterator[bytes], _context: object) -> AsyncIterator[bytes]:
    counter = SinkCounter()
    async for message in requests:
        if counter.feed(message):
            yield ACK


async def grpc_echo(request: bytes, _context: object) -> bytes:
    return request


async def grpc_datagrams(request: bytes, _context: object) -> AsyncIterator[bytes]:
    count, size = DATAGRAMS_REQUEST.unpack(request)
    message = bytes(size)
    for _ in range(count):
        yield message


async def grpc_server(_: argparse.Namespace) -> None:
    server = grpc.aio.server(options=GRPC_OPTIONS)
    handlers = {
        "Sink": grpc.stream_stream_rpc_method_handler(grpc_sink),
        "Echo": grpc.unary_unary_rpc_method_handler(grpc_echo),
        "Datagrams": grpc.unary_stream_rpc_method_handler(grpc_datagrams),
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
    "udp-blast": udp_blast,
    "grpc-server": run_async(grpc_server),
    "ws-server": run_async(ws_server),
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--port", type=int, default=0, help="udp-blast: destination port")
    parser.add_argument("--size", type=int, default=1200, help="udp-blast: datagram size")
    parser.add_argument("--seconds", type=float, default=5.0, help="udp-blast: longest run")
    parser.add_argument("--count", type=int, default=10_000_000, help="udp-blast: most datagrams")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        KINDS[args.kind](args)


if __name__ == "__main__":
    main(sys.argv[1:])
