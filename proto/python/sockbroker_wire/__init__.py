"""sockbroker_wire: what the daemon's front doors and every client share, and nothing else.

- :mod:`.v1` — code generated from ``proto/sockbroker/v1/broker.proto`` (the source of truth);
- :mod:`.routes` — every RPC with its REST route, read from the proto's ``google.api.http``;
- :mod:`.codec` — messages ↔ plain dicts and proto JSON;
- :mod:`.errors` — the error table, both ways: kind → gRPC status / RFC 9457 problem, and back;
- :mod:`.frames` — the WebSocket frames of the streaming routes;
- :mod:`.packed` — many datagrams in one bytes field (``DatagramBatch.packed``);
- :mod:`.paths` — where the daemon and its clients look for the token by default.

It imports nothing from the daemon, so a client installs it without the daemon; another language
generates its own code from ``proto/`` and implements the frames from ``docs/wire.md``.
"""

__all__: list[str] = []
