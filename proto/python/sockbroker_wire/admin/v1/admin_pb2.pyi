from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListSessionsRequest(_message.Message):
    __slots__ = ("principal",)
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    principal: str
    def __init__(self, principal: _Optional[str] = ...) -> None: ...

class SessionSummary(_message.Message):
    __slots__ = ("session", "principal", "custodian", "state", "attachments", "lease_seconds", "opened_at", "age_seconds", "handles", "bytes_in", "bytes_out")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HANDLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    session: str
    principal: str
    custodian: str
    state: str
    attachments: int
    lease_seconds: float
    opened_at: float
    age_seconds: float
    handles: int
    bytes_in: int
    bytes_out: int
    def __init__(self, session: _Optional[str] = ..., principal: _Optional[str] = ..., custodian: _Optional[str] = ..., state: _Optional[str] = ..., attachments: _Optional[int] = ..., lease_seconds: _Optional[float] = ..., opened_at: _Optional[float] = ..., age_seconds: _Optional[float] = ..., handles: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ...) -> None: ...

class ListSessionsReply(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionSummary]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionSummary, _Mapping]]] = ...) -> None: ...

class DescribeSessionRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class HandleInfo(_message.Message):
    __slots__ = ("handle", "kind", "state", "closed", "age_seconds", "local_host", "local_port", "remote_host", "remote_port", "bytes_in", "bytes_out", "datagrams_in", "datagrams_out", "channel")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_HOST_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    REMOTE_HOST_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    DATAGRAMS_IN_FIELD_NUMBER: _ClassVar[int]
    DATAGRAMS_OUT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    handle: str
    kind: str
    state: str
    closed: bool
    age_seconds: float
    local_host: str
    local_port: int
    remote_host: str
    remote_port: int
    bytes_in: int
    bytes_out: int
    datagrams_in: int
    datagrams_out: int
    channel: str
    def __init__(self, handle: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., closed: _Optional[bool] = ..., age_seconds: _Optional[float] = ..., local_host: _Optional[str] = ..., local_port: _Optional[int] = ..., remote_host: _Optional[str] = ..., remote_port: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., datagrams_in: _Optional[int] = ..., datagrams_out: _Optional[int] = ..., channel: _Optional[str] = ...) -> None: ...

class CustodianInfo(_message.Message):
    __slots__ = ("custodian", "parent", "depth", "age_seconds", "handles")
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HANDLES_FIELD_NUMBER: _ClassVar[int]
    custodian: str
    parent: str
    depth: int
    age_seconds: float
    handles: _containers.RepeatedCompositeFieldContainer[HandleInfo]
    def __init__(self, custodian: _Optional[str] = ..., parent: _Optional[str] = ..., depth: _Optional[int] = ..., age_seconds: _Optional[float] = ..., handles: _Optional[_Iterable[_Union[HandleInfo, _Mapping]]] = ...) -> None: ...

class SessionDescription(_message.Message):
    __slots__ = ("summary", "custodians")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    CUSTODIANS_FIELD_NUMBER: _ClassVar[int]
    summary: SessionSummary
    custodians: _containers.RepeatedCompositeFieldContainer[CustodianInfo]
    def __init__(self, summary: _Optional[_Union[SessionSummary, _Mapping]] = ..., custodians: _Optional[_Iterable[_Union[CustodianInfo, _Mapping]]] = ...) -> None: ...

class KillSessionRequest(_message.Message):
    __slots__ = ("session", "reason")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session: str
    reason: str
    def __init__(self, session: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class KillHandleRequest(_message.Message):
    __slots__ = ("handle", "reason")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    handle: str
    reason: str
    def __init__(self, handle: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class KillReply(_message.Message):
    __slots__ = ("session", "closed")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    session: str
    closed: int
    def __init__(self, session: _Optional[str] = ..., closed: _Optional[int] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AdminEvent(_message.Message):
    __slots__ = ("event", "principal", "session", "operation", "target", "reason", "time")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    event: str
    principal: str
    session: str
    operation: str
    target: str
    reason: str
    time: float
    def __init__(self, event: _Optional[str] = ..., principal: _Optional[str] = ..., session: _Optional[str] = ..., operation: _Optional[str] = ..., target: _Optional[str] = ..., reason: _Optional[str] = ..., time: _Optional[float] = ...) -> None: ...
