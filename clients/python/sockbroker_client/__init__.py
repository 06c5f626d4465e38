"""sockbroker_client: Racket's racket/tcp and racket/udp on a sockbroker daemon, from Python.

``AsyncBroker`` is the asyncio API and ``Broker`` the blocking one, with the same methods; the
blocking handles are the ``Blocking…`` classes. See ``_client`` for the rule that names every
function after Racket's. ``AsyncAdmin`` is the admin API (sessions of every client, kills, events),
``Admin`` its blocking twin.
"""

from ._admin import AsyncAdmin
from ._channel import ChannelSocket
from ._client import (
    EOF,
    AsyncBroker,
    Connecting,
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
    BrokerUnavailableError,
    ContractError,
    FailError,
    NetworkErrnoError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    TokenFileError,
    UnauthenticatedError,
)
from ._proxy import proxy_address, proxy_environment
from ._runner import Canceller
from ._sync import Broker
from ._sync_admin import Admin
from ._sync_handles import (
    BlockingCustodian,
    BlockingHandle,
    BlockingInputPort,
    BlockingListener,
    BlockingOutputPort,
    BlockingUdpSocket,
)
from ._sync_streams import BlockingDatagramStream, BlockingPortStream, BlockingStream

__all__ = [
    "EOF",
    "Admin",
    "AsyncAdmin",
    "AsyncBroker",
    "BlockingCustodian",
    "BlockingDatagramStream",
    "BlockingHandle",
    "BlockingInputPort",
    "BlockingListener",
    "BlockingOutputPort",
    "BlockingPortStream",
    "BlockingStream",
    "BlockingUdpSocket",
    "ChannelSocket",
    "BreakError",
    "Broker",
    "BrokerError",
    "BrokerUnavailableError",
    "Canceller",
    "Connecting",
    "ContractError",
    "Custodian",
    "Datagram",
    "FailError",
    "InputPort",
    "Listener",
    "NetworkErrnoError",
    "NetworkError",
    "NotFoundError",
    "OutputPort",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "TokenFileError",
    "UdpSocket",
    "UnauthenticatedError",
    "default_token_file",
    "port_read_ready_evt",
    "port_write_ready_evt",
    "proxy_address",
    "proxy_environment",
    "tcp_accept_evt",
    "tcp_listener_evt",
    "udp_receive_evt",
    "udp_receive_ready_evt",
    "udp_send_evt",
    "udp_send_ready_evt",
    "udp_send_to_evt",
]
