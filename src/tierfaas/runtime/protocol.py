"""The frames the node, the zygote and the instances exchange: msgpack arrays.

Node <-> instance: a Unix stream socket; msgpack frames are self-delimiting, so a stream of them
needs no length prefix, and many calls are pipelined over the one connection with request ids.
Node <-> zygote: a SOCK_SEQPACKET socket, so each spawn request arrives as one message together
with the file descriptor of the new instance's socket.

WARNING: ONLY APPEND to these lists. The numbers are the protocol.
"""

from __future__ import annotations

from typing import Final

# node -> instance: [CALL, request_number, body, context_dict_or_nil]
# (nil when READY said the handler takes no context: the node skips building it)
CALL: Final = 1
# instance -> node: [RESULT, request_number, outcome, payload, content_type_or_type, message]
RESULT: Final = 2
# instance -> node: [READY, pid, start_seconds, takes_context]: handler imported and init done
# (takes_context: whether the handler has a context parameter; absent means true)
READY: Final = 3
# instance -> node: [START_FAILED, error_type, message]: import or init raised
START_FAILED: Final = 4

# node -> zygote: [SPAWN, seq, spec_dict] with the fds: the instance's end of its socket, the
# write ends of its stdout and stderr pipes, then its cgroup's join files (spec["cgroup_fds"])
SPAWN: Final = 10
# zygote -> node: [SPAWNED, seq, pid]
SPAWNED: Final = 11
# zygote -> node: [SPAWN_FAILED, seq, message]
SPAWN_FAILED: Final = 12
# zygote -> node: [EXITED, pid, description]: an instance process ended (as waitpid saw it)
EXITED: Final = 13
# zygote -> node: [ZYGOTE_READY, pid]
ZYGOTE_READY: Final = 14
# node -> zygote, the first frame: [ZYGOTE_SETUP, {"sandbox": ReleaseSandbox wire or nil,
# "root": release directory, "preload": [module, ...]}]
ZYGOTE_SETUP: Final = 15
# zygote -> node: [ZYGOTE_FAILED, message]: the sandbox or a preload failed; the zygote exits
ZYGOTE_FAILED: Final = 16
# node -> zygote: [PREPARE, seq, box_dict] with the cgroup's join files: fork a prepared
# instance (sandboxed only) that joins its cgroup now and waits for a SPAWN whose spec says
# "prepared": true. Answered with SPAWNED (its pid) or SPAWN_FAILED.
PREPARE: Final = 17

# outcomes of a RESULT
OK: Final = 0  # payload is the body, then its content type
RAISED: Final = 1  # the handler raised: error type name and message (with traceback if debug)
OUT_OF_MEMORY: Final = 2  # the instance hit its memory limit and is exiting
TOO_LARGE: Final = 3  # the result is over max_response_bytes
BAD_RESULT: Final = 4  # the handler returned something that is not bytes, str or JSON-able

MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
