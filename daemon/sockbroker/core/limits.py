"""Every quota and timing of the core, with its default: the one home of both.

The daemon's settings (``config.py``) take their defaults from :class:`Limits`, so a default is
written once; each field is also a flag of ``sockbroker serve``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Quotas and timings every session obeys."""

    #: Session lease when a client asks for none (seconds); any call renews it.
    lease_seconds: float = 30.0
    #: A client's lease request is clamped to [min_lease_seconds, max_lease_seconds].
    min_lease_seconds: float = 1.0
    max_lease_seconds: float = 3600.0
    #: Longest grace period a session may ask for (``Sessions.Open``'s ``grace_seconds``; the
    #: default is none): how long it outlives a broken attachment, waiting for a resume.
    max_grace_seconds: float = 300.0
    #: Longest life of a delegated token (``Custodians.Delegate``'s ``expires_seconds``).
    max_delegation_seconds: float = 86400.0
    #: Live delegated tokens one session may hold.
    delegations_per_session: int = 64
    #: Open sessions one principal may hold.
    sessions_per_principal: int = 64
    #: Open handles one session may hold (custodians count).
    handles_per_session: int = 20_000
    #: Bytes a TCP input port buffers from its peer before the daemon stops reading the socket.
    port_receive_buffer: int = 256 * 1024
    #: Bytes a TCP connection queues for its peer before a writer must wait.
    port_send_buffer: int = 256 * 1024
    #: Racket's port buffer: block mode flushes when this many bytes wait.
    port_buffer_size: int = 4096
    #: Bytes a UDP datagram stream queues for a slow reader before dropping (and counting); each
    #: datagram counts its payload plus :data:`datagram_overhead`.
    udp_stream_buffer: int = 4 * 1024 * 1024
    #: What one queued datagram costs beyond its payload (its objects), in bytes.
    datagram_overhead: int = 256
    #: Bytes one session's ports and streams may hold in all (received, queued to send, queued
    #: for a stream) before its readers pause, its writers wait and its streams drop.
    session_buffer: int = 16 * 1024 * 1024
    #: The same for the whole daemon, every session together (DESIGN §7 P8: RSS growth ≤ 64 MiB).
    daemon_buffer: int = 24 * 1024 * 1024
    #: Bytes of finished calls' effects one session keeps for a ``Sessions.CancelCall`` that comes
    #: after the reply (oldest dropped first; none kept while the session's budget is full).
    cancel_hold_bytes: int = 1024 * 1024
    #: Largest request: a gRPC message, a REST body, a WebSocket frame (bytes). 4 MiB, gRPC's own
    #: default: decoding a body costs 3-5x its size (a JSON body is base64 and parsed twice), so a
    #: 32 MiB body alone would pass DESIGN §7 P8's 64 MiB (bench/rest_hygiene.py, docs/security.md).
    max_request_bytes: int = 4 * 1024 * 1024

    # Front doors: connection hygiene (DESIGN §5). Shared by the gRPC and the REST door.
    #: Open connections one front door holds; past it, the oldest connection that has not yet
    #: authenticated is closed first, so clients holding the token are never locked out. The
    #: doors' descriptors are kept for them: sockets lent to clients may not take the last
    #: ``2 × connections_per_door + 512`` descriptors of the daemon's limit (at most half of it),
    #: so no session can lock the front doors out by opening sockets (:func:`._net.lendable`).
    #: The cap bounds the doors' memory too (gRPC core holds 11-15 KiB per connection, the REST
    #: door a few): both doors full of attackers took +54 to +66 MiB at 2,048, past DESIGN §7
    #: P8's 64 MiB with everything else the daemon holds; +24 to +33 MiB at 1,024.
    connections_per_door: int = 1024
    #: Seconds a new connection may take to send its request headers (REST) or finish its
    #: handshake (gRPC) before it is closed.
    header_timeout: float = 10.0
    #: Seconds a connection may stay open without presenting a valid token.
    unauthenticated_timeout: float = 10.0
    #: Seconds an idle keep-alive connection (no request in progress) is kept open.
    idle_timeout: float = 60.0

    # gRPC door: liveness of its peers. A peer silent this long is pinged; one that has not
    # answered the ping after the timeout is dropped (its attachment breaks): at most
    # interval + timeout (40 s) after its last packet.
    #: Seconds without traffic from a gRPC peer before the daemon pings it.
    grpc_keepalive_interval: float = 20.0
    #: Seconds the daemon waits for a gRPC peer's ping ack before dropping the connection.
    grpc_keepalive_timeout: float = 20.0

    # REST door: what request bodies may make the daemon hold (DESIGN §5, §7 P8).
    #: Deepest JSON nesting a request body or WebSocket text frame may have (a top-level object is 1).
    json_max_depth: int = 64
    #: Bytes of request bodies and WebSocket messages being received and decoded at once, across
    #: the door; one that does not fit waits, unread. Never less than ``max_request_bytes``. The
    #: gRPC door has a budget of its own of this size for writes' messages.
    request_bytes_in_flight: int = 8 * 1024 * 1024
