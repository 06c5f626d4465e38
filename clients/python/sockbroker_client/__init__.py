"""sockbroker_client: Racket's racket/tcp and racket/udp on a sockbroker daemon, from Python.

``AsyncBroker`` is the asyncio API, ``Broker`` the blocking one; see ``_client`` for the rule
that names every function after Racket's.
"""

from ._client import (
    EOF,
    AsyncBroker,
    Custodian,
    Datagram,
    InputPort,
    Listener,
    OutputPort,
    UdpSocket,
    default_token_file,
    port_read_ready_evt,
    port_write_ready_evt,
    tcp_accept_evt,
    tcp_listener_evt,
    udp_receive_evt,
    udp_receive_ready_evt,
    udp_send_evt,
    udp_send_ready_evt,
    udp_send_to_evt,
)
from ._errors import (
    BreakError,
    BrokerError,
    ContractError,
    NetworkErrnoError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from ._sync import Broker

__all__ = [
    "EOF",
    "AsyncBroker",
    "BreakError",
    "Broker",
    "BrokerError",
    "ContractError",
    "Custodian",
    "Datagram",
    "InputPort",
    "Listener",
    "NetworkErrnoError",
    "NetworkError",
    "NotFoundError",
    "OutputPort",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UdpSocket",
    "UnauthenticatedError",
    "default_token_file",
    "port_read_ready_evt",
    "port_write_ready_evt",
    "tcp_accept_evt",
    "tcp_listener_evt",
    "udp_receive_evt",
    "udp_receive_ready_evt",
    "udp_send_evt",
    "udp_send_ready_evt",
    "udp_send_to_evt",
]
