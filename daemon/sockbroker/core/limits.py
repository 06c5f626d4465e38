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
    #: Datagrams a UDP datagram stream queues for a slow reader before dropping (and counting).
    udp_stream_queue: int = 1024
    #: Largest request: a gRPC message, a REST body, a WebSocket frame (bytes).
    max_request_bytes: int = 32 * 1024 * 1024
