from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChangeOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_OP_UNSPECIFIED: _ClassVar[ChangeOp]
    CHANGE_OP_ADD: _ClassVar[ChangeOp]
    CHANGE_OP_REMOVE: _ClassVar[ChangeOp]
CHANGE_OP_UNSPECIFIED: ChangeOp
CHANGE_OP_ADD: ChangeOp
CHANGE_OP_REMOVE: ChangeOp

class NodeRoute(_message.Message):
    __slots__ = ("node", "epoch", "http", "rpc")
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    node: str
    epoch: int
    http: str
    rpc: str
    def __init__(self, node: _Optional[str] = ..., epoch: _Optional[int] = ..., http: _Optional[str] = ..., rpc: _Optional[str] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("function", "node", "epoch", "history")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    function: str
    node: str
    epoch: int
    history: bytes
    def __init__(self, function: _Optional[str] = ..., node: _Optional[str] = ..., epoch: _Optional[int] = ..., history: _Optional[bytes] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class UnregisterRequest(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class WriteReply(_message.Message):
    __slots__ = ("accepted", "rejected", "histories", "keeps_histories")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    HISTORIES_FIELD_NUMBER: _ClassVar[int]
    KEEPS_HISTORIES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: _containers.RepeatedCompositeFieldContainer[Route]
    histories: _containers.RepeatedCompositeFieldContainer[Route]
    keeps_histories: bool
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., histories: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., keeps_histories: _Optional[bool] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("function", "request_id")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    function: str
    request_id: int
    def __init__(self, function: _Optional[str] = ..., request_id: _Optional[int] = ...) -> None: ...

class QueryReply(_message.Message):
    __slots__ = ("nodes", "version", "request_id", "error")
    NODES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRoute]
    version: int
    request_id: int
    error: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeRoute, _Mapping]]] = ..., version: _Optional[int] = ..., request_id: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("from_version", "lineage", "replica", "follows_forks")
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    FOLLOWS_FORKS_FIELD_NUMBER: _ClassVar[int]
    from_version: int
    lineage: str
    replica: str
    follows_forks: bool
    def __init__(self, from_version: _Optional[int] = ..., lineage: _Optional[str] = ..., replica: _Optional[str] = ..., follows_forks: _Optional[bool] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("op", "function", "route")
    OP_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    op: ChangeOp
    function: str
    route: NodeRoute
    def __init__(self, op: _Optional[_Union[ChangeOp, str]] = ..., function: _Optional[str] = ..., route: _Optional[_Union[NodeRoute, _Mapping]] = ...) -> None: ...

class TableUpdate(_message.Message):
    __slots__ = ("snapshot", "prev_version", "version", "lineage", "changes", "more", "fork_of")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PREV_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    FORK_OF_FIELD_NUMBER: _ClassVar[int]
    snapshot: bool
    prev_version: int
    version: int
    lineage: str
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    more: bool
    fork_of: str
    def __init__(self, snapshot: _Optional[bool] = ..., prev_version: _Optional[int] = ..., version: _Optional[int] = ..., lineage: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., more: _Optional[bool] = ..., fork_of: _Optional[str] = ...) -> None: ...

class AnnounceRequest(_message.Message):
    __slots__ = ("node", "epoch", "functions")
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    node: str
    epoch: int
    functions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., epoch: _Optional[int] = ..., functions: _Optional[_Iterable[str]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoReply(_message.Message):
    __slots__ = ("node", "master", "master_rpc", "version", "lineage", "query_lane")
    NODE_FIELD_NUMBER: _ClassVar[int]
    MASTER_FIELD_NUMBER: _ClassVar[int]
    MASTER_RPC_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    QUERY_LANE_FIELD_NUMBER: _ClassVar[int]
    node: str
    master: bool
    master_rpc: str
    version: int
    lineage: str
    query_lane: str
    def __init__(self, node: _Optional[str] = ..., master: _Optional[bool] = ..., master_rpc: _Optional[str] = ..., version: _Optional[int] = ..., lineage: _Optional[str] = ..., query_lane: _Optional[str] = ...) -> None: ...

class HandoverChunk(_message.Message):
    __slots__ = ("part", "checksum", "generation", "from_node", "term_generation", "term_number", "term_lineage")
    PART_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TERM_GENERATION_FIELD_NUMBER: _ClassVar[int]
    TERM_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TERM_LINEAGE_FIELD_NUMBER: _ClassVar[int]
    part: TableUpdate
    checksum: str
    generation: int
    from_node: str
    term_generation: int
    term_number: int
    term_lineage: str
    def __init__(self, part: _Optional[_Union[TableUpdate, _Mapping]] = ..., checksum: _Optional[str] = ..., generation: _Optional[int] = ..., from_node: _Optional[str] = ..., term_generation: _Optional[int] = ..., term_number: _Optional[int] = ..., term_lineage: _Optional[str] = ...) -> None: ...

class HandoverReply(_message.Message):
    __slots__ = ("ready", "routes", "error")
    READY_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    routes: int
    error: str
    def __init__(self, ready: _Optional[bool] = ..., routes: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class DigestRequest(_message.Message):
    __slots__ = ("node", "epoch")
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    node: str
    epoch: int
    def __init__(self, node: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class DigestReply(_message.Message):
    __slots__ = ("alive", "count", "hash", "version", "lineage", "copy")
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    COPY_FIELD_NUMBER: _ClassVar[int]
    alive: bool
    count: int
    hash: int
    version: int
    lineage: str
    copy: bool
    def __init__(self, alive: _Optional[bool] = ..., count: _Optional[int] = ..., hash: _Optional[int] = ..., version: _Optional[int] = ..., lineage: _Optional[str] = ..., copy: _Optional[bool] = ...) -> None: ...

class Pin(_message.Message):
    __slots__ = ("function", "count")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    function: str
    count: int
    def __init__(self, function: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class PrewarmRequest(_message.Message):
    __slots__ = ("pins", "lease_s", "master")
    PINS_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    MASTER_FIELD_NUMBER: _ClassVar[int]
    pins: _containers.RepeatedCompositeFieldContainer[Pin]
    lease_s: float
    master: str
    def __init__(self, pins: _Optional[_Iterable[_Union[Pin, _Mapping]]] = ..., lease_s: _Optional[float] = ..., master: _Optional[str] = ...) -> None: ...

class PrewarmReply(_message.Message):
    __slots__ = ("instances", "error")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[Pin]
    error: str
    def __init__(self, instances: _Optional[_Iterable[_Union[Pin, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class CallHeader(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class CallRecord(_message.Message):
    __slots__ = ("call_id", "function", "accepted_at", "due_at", "attempts", "idem_key", "callback_url", "path", "query", "headers", "body", "state", "finished_at", "result_status", "result_type", "result_body", "error", "error_message", "error_status", "callback_state", "callback_attempts", "node")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    IDEM_KEY_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESULT_BODY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_STATUS_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_STATE_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    function: str
    accepted_at: float
    due_at: float
    attempts: int
    idem_key: str
    callback_url: str
    path: str
    query: str
    headers: _containers.RepeatedCompositeFieldContainer[CallHeader]
    body: bytes
    state: str
    finished_at: float
    result_status: int
    result_type: str
    result_body: bytes
    error: str
    error_message: str
    error_status: int
    callback_state: str
    callback_attempts: int
    node: str
    def __init__(self, call_id: _Optional[str] = ..., function: _Optional[str] = ..., accepted_at: _Optional[float] = ..., due_at: _Optional[float] = ..., attempts: _Optional[int] = ..., idem_key: _Optional[str] = ..., callback_url: _Optional[str] = ..., path: _Optional[str] = ..., query: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[CallHeader, _Mapping]]] = ..., body: _Optional[bytes] = ..., state: _Optional[str] = ..., finished_at: _Optional[float] = ..., result_status: _Optional[int] = ..., result_type: _Optional[str] = ..., result_body: _Optional[bytes] = ..., error: _Optional[str] = ..., error_message: _Optional[str] = ..., error_status: _Optional[int] = ..., callback_state: _Optional[str] = ..., callback_attempts: _Optional[int] = ..., node: _Optional[str] = ...) -> None: ...

class ClaimCallsRequest(_message.Message):
    __slots__ = ("origin", "epoch", "call_ids")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CALL_IDS_FIELD_NUMBER: _ClassVar[int]
    origin: str
    epoch: int
    call_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, origin: _Optional[str] = ..., epoch: _Optional[int] = ..., call_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ClaimCallsReply(_message.Message):
    __slots__ = ("taken",)
    TAKEN_FIELD_NUMBER: _ClassVar[int]
    taken: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, taken: _Optional[_Iterable[str]] = ...) -> None: ...

class AcceptCallReply(_message.Message):
    __slots__ = ("call_id", "replay", "status", "error", "message")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    replay: bool
    status: int
    error: str
    message: str
    def __init__(self, call_id: _Optional[str] = ..., replay: _Optional[bool] = ..., status: _Optional[int] = ..., error: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetCallRequest(_message.Message):
    __slots__ = ("call_id", "retry")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    retry: bool
    def __init__(self, call_id: _Optional[str] = ..., retry: _Optional[bool] = ...) -> None: ...

class GetCallReply(_message.Message):
    __slots__ = ("view_json", "status", "error", "message")
    VIEW_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    view_json: bytes
    status: int
    error: str
    message: str
    def __init__(self, view_json: _Optional[bytes] = ..., status: _Optional[int] = ..., error: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ListCallsRequest(_message.Message):
    __slots__ = ("state", "function", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: str
    function: str
    limit: int
    def __init__(self, state: _Optional[str] = ..., function: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListCallsReply(_message.Message):
    __slots__ = ("calls_json",)
    CALLS_JSON_FIELD_NUMBER: _ClassVar[int]
    calls_json: bytes
    def __init__(self, calls_json: _Optional[bytes] = ...) -> None: ...
