"""A client process for the session-drop tests: opens connections, says "ready", then waits.

Run: python holder.py TARGET TRANSPORT TOKEN_FILE PEER_PORT COUNT ATTACH(0|1) LEASE
"""

from __future__ import annotations

import asyncio
import sys

from sockbroker_client import AsyncBroker


async def main(target: str, transport: str, token_file: str, port: int, count: int, attach: bool, lease: float) -> None:
    broker = await AsyncBroker.connect(
        target, transport=transport, token_file=token_file, attach=attach, lease_seconds=lease
    )
    for _ in range(count):
        await broker.tcp_connect("127.0.0.1", port)
    print("ready", broker.session, flush=True)
    await asyncio.sleep(60)


if __name__ == "__main__":
    t, tr, tf, p, n, a, lease = sys.argv[1:8]
    asyncio.run(main(t, tr, tf, int(p), int(n), a == "1", float(lease)))
