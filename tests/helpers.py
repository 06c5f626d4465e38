"""Helpers for the tests: bounded waiting, fd counting, raw peer sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from sockbroker.config import Settings
from sockbroker.server import Daemon

__all__ = [
    "Peer",
    "PeerServer",
    "daemon_settings",
    "eventually",
    "fd_count",
    "read_until_eof",
    "serving",
    "silent_for",
    "target",
]

Peer = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def eventually(check: Callable[[], bool], *, within: float = 2.0, step: float = 0.01) -> None:
    """Wait (bounded) until ``check()`` holds; fail with the last state otherwise."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(step)


async def read_until_eof(reader: asyncio.StreamReader, *, within: float = 2.0) -> bytes:
    """Everything the peer sends until it closes (or resets), bounded in time."""
    chunks = []
    async with asyncio.timeout(within):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


async def silent_for(reader: asyncio.StreamReader, seconds: float = 0.2) -> bool:
    """True when the peer sends nothing (no bytes, no EOF) for ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await reader.read(1)
    except TimeoutError:
        return True
    return False


class PeerServer:
    """A plain asyncio TCP server on loopback: the other end of the broker's connections."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[Peer] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> None:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            await self.accepted.put((reader, writer))

        self.server = await asyncio.start_server(on_client, host, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def next(self) -> Peer:
        async with asyncio.timeout(5):
            return await self.accepted.get()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self.server.wait_closed()


async def run_bounded(
    *command: str, seconds: float, cwd: pathlib.Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``command`` (stdin empty) for at most ``seconds``: its exit status (-1 when it ran
    over and was killed) and its standard output and error, interleaved."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(seconds):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        return -1, f"ran over {seconds} s and was killed\n{output.decode(errors='replace')}"
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def target(daemon: Any, door: str) -> str:
    """The address a client of ``door`` dials for the test daemon."""
    return f"127.0.0.1:{daemon.grpc_port}" if door == "grpc" else f"http://127.0.0.1:{daemon.rest_port}"


def daemon_settings(token_file: pathlib.Path, **overrides: Any) -> Settings:
    """The test daemon's settings: both doors on 127.0.0.1 port 0, the test policy."""
    return Settings.load(
        None,
        **{
            "grpc_address": "127.0.0.1:0",
            "rest_address": "127.0.0.1:0",
            "proxy_address": "127.0.0.1:0",
            "token_file": token_file,
            # Tests listen on every address (IPv4 and IPv6 wildcards) and on loopback; they
            # connect and send to loopback only.
            "allow_listen": ["127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128"],
            "allow_connect": ["127.0.0.0/8", "::1/128", "239.255.0.0/16"],
            "allow_multicast": ["239.255.0.0/16"],
            "max_handles_per_session": 5000,
            **overrides,
        },
    )


@contextlib.asynccontextmanager
async def serving(token_file: pathlib.Path, **overrides: Any) -> AsyncIterator[Daemon]:
    """A daemon of a test module's own (:func:`daemon_settings` with ``overrides``), stopped after."""
    daemon = Daemon(daemon_settings(token_file, **overrides))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()
