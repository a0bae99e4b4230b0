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
    __slots__ = ("function", "node", "epoch")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    function: str
    node: str
    epoch: int
    def __init__(self, function: _Optional[str] = ..., node: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("accepted", "rejected")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("from_version", "lineage", "replica")
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    from_version: int
    lineage: str
    replica: str
    def __init__(self, from_version: _Optional[int] = ..., lineage: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("snapshot", "prev_version", "version", "lineage", "changes", "more")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PREV_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    snapshot: bool
    prev_version: int
    version: int
    lineage: str
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    more: bool
    def __init__(self, snapshot: _Optional[bool] = ..., prev_version: _Optional[int] = ..., version: _Optional[int] = ..., lineage: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

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
