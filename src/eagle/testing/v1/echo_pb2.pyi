from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("message", "sleep_ms", "count", "interval_ms", "fail_code")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SLEEP_MS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    FAIL_CODE_FIELD_NUMBER: _ClassVar[int]
    message: str
    sleep_ms: int
    count: int
    interval_ms: int
    fail_code: int
    def __init__(self, message: _Optional[str] = ..., sleep_ms: _Optional[int] = ..., count: _Optional[int] = ..., interval_ms: _Optional[int] = ..., fail_code: _Optional[int] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("message", "server", "seq")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    message: str
    server: str
    seq: int
    def __init__(self, message: _Optional[str] = ..., server: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("key", "request_id")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    key: str
    request_id: str
    def __init__(self, key: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("server", "applied")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    server: str
    applied: int
    def __init__(self, server: _Optional[str] = ..., applied: _Optional[int] = ...) -> None: ...

class ControlRequest(_message.Message):
    __slots__ = ("action", "delay_ms")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    action: str
    delay_ms: int
    def __init__(self, action: _Optional[str] = ..., delay_ms: _Optional[int] = ...) -> None: ...

class ControlResponse(_message.Message):
    __slots__ = ("server", "calls", "writes", "applied_ids")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    APPLIED_IDS_FIELD_NUMBER: _ClassVar[int]
    server: str
    calls: int
    writes: int
    applied_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, server: _Optional[str] = ..., calls: _Optional[int] = ..., writes: _Optional[int] = ..., applied_ids: _Optional[_Iterable[str]] = ...) -> None: ...
