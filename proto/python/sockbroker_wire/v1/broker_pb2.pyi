from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResumeSessionRequest(_message.Message):
    __slots__ = ("session", "resume_token")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session: str
    resume_token: str
    def __init__(self, session: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class CancelCallRequest(_message.Message):
    __slots__ = ("session", "call")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    session: str
    call: str
    def __init__(self, session: _Optional[str] = ..., call: _Optional[str] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ("lease_seconds", "grace_seconds")
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_seconds: float
    grace_seconds: float
    def __init__(self, lease_seconds: _Optional[float] = ..., grace_seconds: _Optional[float] = ...) -> None: ...

class OpenSessionReply(_message.Message):
    __slots__ = ("session", "custodian", "lease_seconds", "grace_seconds", "resume_token")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session: str
    custodian: str
    lease_seconds: float
    grace_seconds: float
    resume_token: str
    def __init__(self, session: _Optional[str] = ..., custodian: _Optional[str] = ..., lease_seconds: _Optional[float] = ..., grace_seconds: _Optional[float] = ..., resume_token: _Optional[str] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class KeepAliveReply(_message.Message):
    __slots__ = ("lease_seconds",)
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_seconds: float
    def __init__(self, lease_seconds: _Optional[float] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("detach",)
    DETACH_FIELD_NUMBER: _ClassVar[int]
    detach: bool
    def __init__(self, detach: _Optional[bool] = ...) -> None: ...

class AttachEvent(_message.Message):
    __slots__ = ("session", "custodian", "lease_seconds", "event")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    session: str
    custodian: str
    lease_seconds: float
    event: str
    def __init__(self, session: _Optional[str] = ..., custodian: _Optional[str] = ..., lease_seconds: _Optional[float] = ..., event: _Optional[str] = ...) -> None: ...

class DelegateRequest(_message.Message):
    __slots__ = ("custodian", "allow_connect", "allow_listen", "allow_ports", "allow_multicast", "allow_multicast_interface", "allow_handoff", "expires_seconds")
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CONNECT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LISTEN_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PORTS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MULTICAST_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MULTICAST_INTERFACE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_HANDOFF_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_SECONDS_FIELD_NUMBER: _ClassVar[int]
    custodian: str
    allow_connect: _containers.RepeatedScalarFieldContainer[str]
    allow_listen: _containers.RepeatedScalarFieldContainer[str]
    allow_ports: _containers.RepeatedScalarFieldContainer[str]
    allow_multicast: _containers.RepeatedScalarFieldContainer[str]
    allow_multicast_interface: _containers.RepeatedScalarFieldContainer[str]
    allow_handoff: bool
    expires_seconds: float
    def __init__(self, custodian: _Optional[str] = ..., allow_connect: _Optional[_Iterable[str]] = ..., allow_listen: _Optional[_Iterable[str]] = ..., allow_ports: _Optional[_Iterable[str]] = ..., allow_multicast: _Optional[_Iterable[str]] = ..., allow_multicast_interface: _Optional[_Iterable[str]] = ..., allow_handoff: _Optional[bool] = ..., expires_seconds: _Optional[float] = ...) -> None: ...

class DelegateReply(_message.Message):
    __slots__ = ("token", "expires_seconds")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_SECONDS_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_seconds: float
    def __init__(self, token: _Optional[str] = ..., expires_seconds: _Optional[float] = ...) -> None: ...

class CreateCustodianRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class CustodianReply(_message.Message):
    __slots__ = ("custodian",)
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    custodian: str
    def __init__(self, custodian: _Optional[str] = ...) -> None: ...

class CustodianRequest(_message.Message):
    __slots__ = ("custodian",)
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    custodian: str
    def __init__(self, custodian: _Optional[str] = ...) -> None: ...

class HandleSummary(_message.Message):
    __slots__ = ("handle", "kind", "closed")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    handle: str
    kind: str
    closed: bool
    def __init__(self, handle: _Optional[str] = ..., kind: _Optional[str] = ..., closed: _Optional[bool] = ...) -> None: ...

class CustodianDescription(_message.Message):
    __slots__ = ("custodian", "parent", "shut_down", "handles", "children")
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SHUT_DOWN_FIELD_NUMBER: _ClassVar[int]
    HANDLES_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    custodian: str
    parent: str
    shut_down: bool
    handles: _containers.RepeatedCompositeFieldContainer[HandleSummary]
    children: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, custodian: _Optional[str] = ..., parent: _Optional[str] = ..., shut_down: _Optional[bool] = ..., handles: _Optional[_Iterable[_Union[HandleSummary, _Mapping]]] = ..., children: _Optional[_Iterable[str]] = ...) -> None: ...

class ListenRequest(_message.Message):
    __slots__ = ("port", "backlog", "reuse", "hostname", "custodian")
    PORT_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    REUSE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    port: int
    backlog: int
    reuse: bool
    hostname: str
    custodian: str
    def __init__(self, port: _Optional[int] = ..., backlog: _Optional[int] = ..., reuse: _Optional[bool] = ..., hostname: _Optional[str] = ..., custodian: _Optional[str] = ...) -> None: ...

class ListenerReply(_message.Message):
    __slots__ = ("listener",)
    LISTENER_FIELD_NUMBER: _ClassVar[int]
    listener: str
    def __init__(self, listener: _Optional[str] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("hostname", "port", "local_hostname", "local_port", "custodian", "timeout")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    LOCAL_HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    port: int
    local_hostname: str
    local_port: int
    custodian: str
    timeout: float
    def __init__(self, hostname: _Optional[str] = ..., port: _Optional[int] = ..., local_hostname: _Optional[str] = ..., local_port: _Optional[int] = ..., custodian: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class AcceptRequest(_message.Message):
    __slots__ = ("listener", "custodian", "timeout")
    LISTENER_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    listener: str
    custodian: str
    timeout: float
    def __init__(self, listener: _Optional[str] = ..., custodian: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class ConnectionReply(_message.Message):
    __slots__ = ("out",)
    IN_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    out: str
    def __init__(self, out: _Optional[str] = ..., **kwargs) -> None: ...

class ListenerRequest(_message.Message):
    __slots__ = ("listener",)
    LISTENER_FIELD_NUMBER: _ClassVar[int]
    listener: str
    def __init__(self, listener: _Optional[str] = ...) -> None: ...

class ReadyReply(_message.Message):
    __slots__ = ("ready",)
    READY_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    def __init__(self, ready: _Optional[bool] = ...) -> None: ...

class PortRequest(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: str
    def __init__(self, port: _Optional[str] = ...) -> None: ...

class AddressesRequest(_message.Message):
    __slots__ = ("handle", "port_numbers")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    PORT_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    handle: str
    port_numbers: bool
    def __init__(self, handle: _Optional[str] = ..., port_numbers: _Optional[bool] = ...) -> None: ...

class AddressesReply(_message.Message):
    __slots__ = ("local_host", "local_port", "remote_host", "remote_port")
    LOCAL_HOST_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    REMOTE_HOST_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_FIELD_NUMBER: _ClassVar[int]
    local_host: str
    local_port: int
    remote_host: str
    remote_port: int
    def __init__(self, local_host: _Optional[str] = ..., local_port: _Optional[int] = ..., remote_host: _Optional[str] = ..., remote_port: _Optional[int] = ...) -> None: ...

class HandleRequest(_message.Message):
    __slots__ = ("handle",)
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    handle: str
    def __init__(self, handle: _Optional[str] = ...) -> None: ...

class HandleDescription(_message.Message):
    __slots__ = ("handle", "kind", "closed", "custodian", "bound", "connected", "buffer_mode", "state", "queue_dropped", "kernel_dropped", "family")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    BUFFER_MODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DROPPED_FIELD_NUMBER: _ClassVar[int]
    KERNEL_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    handle: str
    kind: str
    closed: bool
    custodian: str
    bound: bool
    connected: bool
    buffer_mode: str
    state: str
    queue_dropped: int
    kernel_dropped: int
    family: str
    def __init__(self, handle: _Optional[str] = ..., kind: _Optional[str] = ..., closed: _Optional[bool] = ..., custodian: _Optional[str] = ..., bound: _Optional[bool] = ..., connected: _Optional[bool] = ..., buffer_mode: _Optional[str] = ..., state: _Optional[str] = ..., queue_dropped: _Optional[int] = ..., kernel_dropped: _Optional[int] = ..., family: _Optional[str] = ...) -> None: ...

class OpenChannelRequest(_message.Message):
    __slots__ = ("port", "mode")
    PORT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    port: str
    mode: str
    def __init__(self, port: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class ChannelReply(_message.Message):
    __slots__ = ("ticket", "address", "expires_seconds")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    address: str
    expires_seconds: float
    def __init__(self, ticket: _Optional[str] = ..., address: _Optional[str] = ..., expires_seconds: _Optional[float] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("port", "max", "mode", "peek", "timeout")
    PORT_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PEEK_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    port: str
    max: int
    mode: str
    peek: bool
    timeout: float
    def __init__(self, port: _Optional[str] = ..., max: _Optional[int] = ..., mode: _Optional[str] = ..., peek: _Optional[bool] = ..., timeout: _Optional[float] = ...) -> None: ...

class ReadReply(_message.Message):
    __slots__ = ("data", "eof")
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    eof: bool
    def __init__(self, data: _Optional[bytes] = ..., eof: _Optional[bool] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("port", "data", "flush")
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    port: str
    data: bytes
    flush: bool
    def __init__(self, port: _Optional[str] = ..., data: _Optional[bytes] = ..., flush: _Optional[bool] = ...) -> None: ...

class WriteReply(_message.Message):
    __slots__ = ("written",)
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    written: int
    def __init__(self, written: _Optional[int] = ...) -> None: ...

class BufferModeRequest(_message.Message):
    __slots__ = ("port", "mode")
    PORT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    port: str
    mode: str
    def __init__(self, port: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class StreamFrame(_message.Message):
    __slots__ = ("port", "data", "eof")
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    port: str
    data: bytes
    eof: bool
    def __init__(self, port: _Optional[str] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ...) -> None: ...

class UdpOpenChannelRequest(_message.Message):
    __slots__ = ("udp", "mode")
    UDP_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    udp: str
    mode: str
    def __init__(self, udp: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class UdpOpenRequest(_message.Message):
    __slots__ = ("family_hostname", "family_port", "custodian")
    FAMILY_HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_PORT_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    family_hostname: str
    family_port: int
    custodian: str
    def __init__(self, family_hostname: _Optional[str] = ..., family_port: _Optional[int] = ..., custodian: _Optional[str] = ...) -> None: ...

class UdpReply(_message.Message):
    __slots__ = ("udp",)
    UDP_FIELD_NUMBER: _ClassVar[int]
    udp: str
    def __init__(self, udp: _Optional[str] = ...) -> None: ...

class UdpRequest(_message.Message):
    __slots__ = ("udp",)
    UDP_FIELD_NUMBER: _ClassVar[int]
    udp: str
    def __init__(self, udp: _Optional[str] = ...) -> None: ...

class UdpBindRequest(_message.Message):
    __slots__ = ("udp", "hostname", "port", "reuse")
    UDP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    REUSE_FIELD_NUMBER: _ClassVar[int]
    udp: str
    hostname: str
    port: int
    reuse: bool
    def __init__(self, udp: _Optional[str] = ..., hostname: _Optional[str] = ..., port: _Optional[int] = ..., reuse: _Optional[bool] = ...) -> None: ...

class UdpConnectRequest(_message.Message):
    __slots__ = ("udp", "hostname", "port")
    UDP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    udp: str
    hostname: str
    port: int
    def __init__(self, udp: _Optional[str] = ..., hostname: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class UdpSendToRequest(_message.Message):
    __slots__ = ("udp", "hostname", "port", "data", "start", "end", "wait", "timeout")
    UDP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    udp: str
    hostname: str
    port: int
    data: bytes
    start: int
    end: int
    wait: bool
    timeout: float
    def __init__(self, udp: _Optional[str] = ..., hostname: _Optional[str] = ..., port: _Optional[int] = ..., data: _Optional[bytes] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., wait: _Optional[bool] = ..., timeout: _Optional[float] = ...) -> None: ...

class UdpSendRequest(_message.Message):
    __slots__ = ("udp", "data", "start", "end", "wait", "timeout")
    UDP_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    udp: str
    data: bytes
    start: int
    end: int
    wait: bool
    timeout: float
    def __init__(self, udp: _Optional[str] = ..., data: _Optional[bytes] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., wait: _Optional[bool] = ..., timeout: _Optional[float] = ...) -> None: ...

class SendReply(_message.Message):
    __slots__ = ("sent",)
    SENT_FIELD_NUMBER: _ClassVar[int]
    sent: bool
    def __init__(self, sent: _Optional[bool] = ...) -> None: ...

class UdpReceiveRequest(_message.Message):
    __slots__ = ("udp", "max", "wait", "timeout")
    UDP_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    udp: str
    max: int
    wait: bool
    timeout: float
    def __init__(self, udp: _Optional[str] = ..., max: _Optional[int] = ..., wait: _Optional[bool] = ..., timeout: _Optional[float] = ...) -> None: ...

class UdpReceiveReply(_message.Message):
    __slots__ = ("data", "count", "host", "port")
    DATA_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    count: int
    host: str
    port: int
    def __init__(self, data: _Optional[bytes] = ..., count: _Optional[int] = ..., host: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class UdpBufferSizeRequest(_message.Message):
    __slots__ = ("udp", "size")
    UDP_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    udp: str
    size: int
    def __init__(self, udp: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class UdpTtlRequest(_message.Message):
    __slots__ = ("udp", "ttl")
    UDP_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    udp: str
    ttl: int
    def __init__(self, udp: _Optional[str] = ..., ttl: _Optional[int] = ...) -> None: ...

class TtlReply(_message.Message):
    __slots__ = ("ttl",)
    TTL_FIELD_NUMBER: _ClassVar[int]
    ttl: int
    def __init__(self, ttl: _Optional[int] = ...) -> None: ...

class UdpMulticastGroupRequest(_message.Message):
    __slots__ = ("udp", "group", "interface")
    UDP_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    udp: str
    group: str
    interface: str
    def __init__(self, udp: _Optional[str] = ..., group: _Optional[str] = ..., interface: _Optional[str] = ...) -> None: ...

class UdpInterfaceRequest(_message.Message):
    __slots__ = ("udp", "interface")
    UDP_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    udp: str
    interface: str
    def __init__(self, udp: _Optional[str] = ..., interface: _Optional[str] = ...) -> None: ...

class InterfaceReply(_message.Message):
    __slots__ = ("interface",)
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    interface: str
    def __init__(self, interface: _Optional[str] = ...) -> None: ...

class UdpLoopbackRequest(_message.Message):
    __slots__ = ("udp", "loopback")
    UDP_FIELD_NUMBER: _ClassVar[int]
    LOOPBACK_FIELD_NUMBER: _ClassVar[int]
    udp: str
    loopback: bool
    def __init__(self, udp: _Optional[str] = ..., loopback: _Optional[bool] = ...) -> None: ...

class LoopbackReply(_message.Message):
    __slots__ = ("loopback",)
    LOOPBACK_FIELD_NUMBER: _ClassVar[int]
    loopback: bool
    def __init__(self, loopback: _Optional[bool] = ...) -> None: ...

class UdpReceiveStreamRequest(_message.Message):
    __slots__ = ("udp", "max", "packed")
    UDP_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    udp: str
    max: int
    packed: bool
    def __init__(self, udp: _Optional[str] = ..., max: _Optional[int] = ..., packed: _Optional[bool] = ...) -> None: ...

class Datagram(_message.Message):
    __slots__ = ("data", "host", "port")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    host: str
    port: int
    def __init__(self, data: _Optional[bytes] = ..., host: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class DatagramBatch(_message.Message):
    __slots__ = ("udp", "datagrams", "queue_dropped", "packed")
    UDP_FIELD_NUMBER: _ClassVar[int]
    DATAGRAMS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DROPPED_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    udp: str
    datagrams: _containers.RepeatedCompositeFieldContainer[Datagram]
    queue_dropped: int
    packed: bytes
    def __init__(self, udp: _Optional[str] = ..., datagrams: _Optional[_Iterable[_Union[Datagram, _Mapping]]] = ..., queue_dropped: _Optional[int] = ..., packed: _Optional[bytes] = ...) -> None: ...

class SendStreamReply(_message.Message):
    __slots__ = ("sent",)
    SENT_FIELD_NUMBER: _ClassVar[int]
    sent: int
    def __init__(self, sent: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("tcp_accept", "listener_ready", "port_read_ready", "port_write_ready", "udp_receive_ready", "udp_send_ready", "udp_receive", "udp_send", "udp_send_to")
    TCP_ACCEPT_FIELD_NUMBER: _ClassVar[int]
    LISTENER_READY_FIELD_NUMBER: _ClassVar[int]
    PORT_READ_READY_FIELD_NUMBER: _ClassVar[int]
    PORT_WRITE_READY_FIELD_NUMBER: _ClassVar[int]
    UDP_RECEIVE_READY_FIELD_NUMBER: _ClassVar[int]
    UDP_SEND_READY_FIELD_NUMBER: _ClassVar[int]
    UDP_RECEIVE_FIELD_NUMBER: _ClassVar[int]
    UDP_SEND_FIELD_NUMBER: _ClassVar[int]
    UDP_SEND_TO_FIELD_NUMBER: _ClassVar[int]
    tcp_accept: AcceptEvent
    listener_ready: ListenerRequest
    port_read_ready: PortRequest
    port_write_ready: PortRequest
    udp_receive_ready: UdpRequest
    udp_send_ready: UdpRequest
    udp_receive: UdpReceiveEvent
    udp_send: UdpSendEvent
    udp_send_to: UdpSendToEvent
    def __init__(self, tcp_accept: _Optional[_Union[AcceptEvent, _Mapping]] = ..., listener_ready: _Optional[_Union[ListenerRequest, _Mapping]] = ..., port_read_ready: _Optional[_Union[PortRequest, _Mapping]] = ..., port_write_ready: _Optional[_Union[PortRequest, _Mapping]] = ..., udp_receive_ready: _Optional[_Union[UdpRequest, _Mapping]] = ..., udp_send_ready: _Optional[_Union[UdpRequest, _Mapping]] = ..., udp_receive: _Optional[_Union[UdpReceiveEvent, _Mapping]] = ..., udp_send: _Optional[_Union[UdpSendEvent, _Mapping]] = ..., udp_send_to: _Optional[_Union[UdpSendToEvent, _Mapping]] = ...) -> None: ...

class AcceptEvent(_message.Message):
    __slots__ = ("listener", "custodian")
    LISTENER_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    listener: str
    custodian: str
    def __init__(self, listener: _Optional[str] = ..., custodian: _Optional[str] = ...) -> None: ...

class UdpReceiveEvent(_message.Message):
    __slots__ = ("udp", "max")
    UDP_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    udp: str
    max: int
    def __init__(self, udp: _Optional[str] = ..., max: _Optional[int] = ...) -> None: ...

class UdpSendEvent(_message.Message):
    __slots__ = ("udp", "data", "start", "end")
    UDP_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    udp: str
    data: bytes
    start: int
    end: int
    def __init__(self, udp: _Optional[str] = ..., data: _Optional[bytes] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class UdpSendToEvent(_message.Message):
    __slots__ = ("udp", "hostname", "port", "data", "start", "end")
    UDP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    udp: str
    hostname: str
    port: int
    data: bytes
    start: int
    end: int
    def __init__(self, udp: _Optional[str] = ..., hostname: _Optional[str] = ..., port: _Optional[int] = ..., data: _Optional[bytes] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("events", "timeout")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    timeout: float
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., timeout: _Optional[float] = ...) -> None: ...

class SyncResult(_message.Message):
    __slots__ = ("connection", "ready", "datagram", "sent")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    DATAGRAM_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    connection: ConnectionReply
    ready: str
    datagram: UdpReceiveReply
    sent: bool
    def __init__(self, connection: _Optional[_Union[ConnectionReply, _Mapping]] = ..., ready: _Optional[str] = ..., datagram: _Optional[_Union[UdpReceiveReply, _Mapping]] = ..., sent: _Optional[bool] = ...) -> None: ...

class SyncReply(_message.Message):
    __slots__ = ("index", "result")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    index: int
    result: SyncResult
    def __init__(self, index: _Optional[int] = ..., result: _Optional[_Union[SyncResult, _Mapping]] = ...) -> None: ...
