"""The control plane's numbers and metadata keys, each with its unit and the reason for its
value. The modules of ``tierfaas.control`` take their defaults from here.

The metadata keys are part of the wire protocol: nodes of two releases run side by side in a
rollout, so a key is never renamed (add a new one instead), like the fields of the .proto.
"""

from __future__ import annotations

from tierfaas.config import MiB

# -- metadata keys (wire protocol: never rename) ------------------------------------------------

AUTH_HEADER = "x-tierfaas-auth"
"""gRPC metadata of every call: the credential derived from the cluster key (``auth.py``)."""

MASTER_HEADER = "x-tierfaas-master"
"""Trailing metadata of a non-master's ``FAILED_PRECONDITION``: the master's control address
("" if unknown), so the caller retries there at once instead of waiting for gossip."""

# -- message sizes ------------------------------------------------------------------------------

MAX_MESSAGE_BYTES = 4 * MiB
"""Bytes: the largest request the server decodes; a larger one gets ``INVALID_ARGUMENT``, and
above twice this gRPC refuses it unread (``RESOURCE_EXHAUSTED``), which bounds the memory one
call holds. Raising it lets a bigger announce through at the cost of that memory."""

CLIENT_MAX_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES
"""Bytes: what a client sends or receives at most: the server's own transport cap, so the
client never refuses an answer the server was allowed to send."""

MAX_ROUTES_PER_CALL = 65_536
"""Pairs per Register/Unregister call, functions per Announce: bounds the work one call makes
the master do while other calls wait on the same event loop."""

ERROR_DETAIL_CHARS = 300
"""Characters of an ``INVALID_ARGUMENT``'s details: they quote the peer's input, which must not
make the answer (or a log line) large."""

SNAPSHOT_PART_CHANGES = 16_384
"""Routes per snapshot message (Subscribe, Handover): about 1 MB, well under
``MAX_MESSAGE_BYTES``, so a table of any size streams as several messages."""

MAX_SNAPSHOT_ROUTES = 10_000_000
"""Routes a receiver assembles from one multi-part snapshot or handover: bounds the memory a
peer can make it hold, far above any real table (it would take ~10 s just to checksum)."""

# -- deadlines of the client's calls (seconds) --------------------------------------------------

WRITE_TIMEOUT_S = 2.0
"""Register/Unregister: a master answers a batch in milliseconds, so a call this late failed;
the WriteQueue retries it (with backoff) rather than hold the node's later writes behind it."""

ANNOUNCE_TIMEOUT_S = 5.0
"""Announce: the node's whole warm set in one call, longer than a write; it follows a master
change, when the new master is busiest."""

QUERY_TIMEOUT_S = 1.0
"""Query (gRPC, the query lane, QueryStream) by default: past this the caller does better to
start the function itself than to keep waiting for a hint. A node's own lookups use the
shorter ``LOOKUP_TIMEOUT_S``, since they have another node to ask."""

LOOKUP_TIMEOUT_S = 0.5
"""A worker's lookup, per node asked (Info on first contact, then Query on the lane or over
gRPC): a live peer answers in a millisecond, so past this the peer is frozen or cut off and
the lookup asks the next node instead (``ControlPlane.lookup``): a lookup asks at most a
replica and the master, so about two of these bound it; a peer that gossip already suspects
is skipped, not asked."""

LANE_CONNECT_TIMEOUT_S = 0.5
"""Opening a query-lane connection: the kernel answers a SYN in well under a millisecond even
on a busy node; a connect that hangs means the peer is cut off, and without this bound it
would wait out TCP's SYN retries (about two minutes) while every query waits behind it."""

INFO_TIMEOUT_S = 1.0
"""Info: a read of a few fields; a peer that cannot answer it in a second is not usable."""

HANDOVER_TIMEOUT_S = 30.0
"""Handover: the whole table in parts, its checksum (about 1 s per million routes) and the
target's load, during a rollout that waits for it. A total bound: the call fails past it
however far it got."""

SERVER_STOP_GRACE_S = 0.5
"""Seconds the calls in flight get to finish when the server stops (a unary call takes
milliseconds; a Subscribe stream is cut and its replica resubscribes)."""

# -- connections between nodes (milliseconds, as gRPC's channel options take them) -------------

RECONNECT_BACKOFF_MS = 100
"""First and shortest wait before reconnecting to a peer. Peers restart in about a second;
gRPC's default (1 s, growing to 120 s) would leave a replica stale long after its master is
back."""

MAX_RECONNECT_BACKOFF_MS = 2000
"""Longest wait between reconnection attempts to a peer that stays down."""

KEEPALIVE_TIME_MS = 2000
"""HTTP/2 ping interval on every connection, also idle ones. A peer cut off by a partition
sends no RST: without pings the connection looks open for as long as the cut lasts, and after
the heal its calls wait for TCP's retransmission backoff (seconds after a long cut) before
the new master hears a single Announce."""

KEEPALIVE_TIMEOUT_MS = 5000
"""A ping unanswered this long closes the connection (the channel then reconnects within
the backoff above). Long enough to ride out a few lost packets, so only a cut closes it."""

MIN_PING_INTERVAL_MS = 1000
"""The server accepts pings this often without data (at most ``KEEPALIVE_TIME_MS``): by
default a server answers pings as frequent as the peers' with GOAWAY."""

STREAM_SILENCE_BOUND_S = (KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS) / 1000
"""Subscribe and QueryStream have no deadline (they last as long as the master's role): what
bounds them is the HTTP/2 keepalive above, a ping every ``KEEPALIVE_TIME_MS`` that closes the
connection when unanswered for ``KEEPALIVE_TIMEOUT_MS``. A frozen or cut-off master (who
sends nothing, not even a reset) therefore ends its replicas' streams within about this many
seconds, and they resubscribe elsewhere."""

MAX_CHANNELS = 256
"""gRPC channels a node keeps open (``Channels``), one per peer's control address: a peer
that restarts on a new port, or leaves, would otherwise leave its channel (a socket and its
reconnect timer) behind for good. Channels to addresses no longer in the member view are
closed as they are found (``Channels.retain``); past this many the least recently used is
closed. Far above the peers one node talks to (its master and replica, a few more in a
failover)."""

# -- the write queue and the replicator (seconds) -----------------------------------------------

WRITE_BATCH_MAX = 4096
"""Pairs per Register/Unregister call the WriteQueue sends: under ``MAX_ROUTES_PER_CALL``
and small enough that one call is a short stall for the master."""

HISTORY_BYTES_PER_CALL = 1 * MiB
"""Bytes of idle histories (``runtime/idle_summary.py``) one Unregister call carries, or one
Register answer: a quarter of ``MAX_MESSAGE_BYTES``, about 44 full summaries or over a
thousand usual ones (under 1 KiB). Past it a node sends its pairs without their histories,
and the master keeps the histories it did not hand out for the next registration."""

MAX_HISTORIES = 10_000
MAX_HISTORIES_BYTES = 32 * MiB
"""The idle histories the master keeps (``histories.py``): at most this many functions and
bytes, the least recently stored dropped first. A usual summary is under 1 KiB (a full one
23 KiB), so a release of 10,000 functions fits; raising them holds more of the master's
memory, soft state that a failover loses anyway."""

WRITE_BACKOFF_S = 0.05
WRITE_MAX_BACKOFF_S = 2.0
"""The WriteQueue's retries: first wait and cap, doubling between. Short at first because a
failover takes about a second and the node's routes are missing until they arrive; capped so
a master back after an outage hears from every node within two seconds."""

STANDBY_SNAPSHOT_DELAY_S = 10.0
"""A standby (``Topology.standby``) that holds no copy subscribes this long after it became
the standby. Its snapshot is encoded on the master's event loop (seconds at 300,000 routes),
and right after a failover the new master's loop is busy with every node's re-announce;
nobody waits for a standby's copy, so it comes after (docs/scale.md)."""

REPLICATE_BACKOFF_S = 0.05
REPLICATE_MAX_BACKOFF_S = 1.0
"""The Replicator's resubscriptions: first wait and cap. The cap is lower than the writes':
a replica that waits answers queries from a stale copy meanwhile."""

DIGEST_PERIOD_S = 1.0
"""Seconds between a node's anti-entropy checks (``digest.py``): the node asks its replica
(a difference: the master) for the digest of what the table holds for its run and
re-announces on a mismatch with the master. The bound it serves: a node's warm set and the
master's table agree within 2 s of the node being alive and reachable. A loss is repaired at
the next check (<= this period, plus the copy's lag of a batch window if the check came just
before the copy heard of the loss), then a confirmation and an announce (round trips) and the
batch window (0.1 s): about 1.25 s at worst. A node that was itself frozen checks at once on
resume (its timer is overdue). Gossip sets the scale: with ``local`` a death is declared in
~1.3 s and a resumed node is back in ~0.1 s (shared/reference/kinship-behaviour.md), so a
period much above 1 s would make the repair, not gossip, the slow part. Each check is one small
unary call: ~0.3 KB/s per node, and ~0.1 % of a core per node at whoever answers it
(benchmarks/control_plane.py), which is why workers ask their replica, not the master."""

DIGEST_RETRY_S = 0.2
"""Seconds until the next check after an answer that the run is not alive (or a write the
master rejected for that reason), or after a check that failed. A resumed node is alive again
in gossip within a few hundred ms with the ``local`` preset (``update_meta`` reaches every
node in <= 0.22 s), so polling at this rate adds at most 0.2 s to the repair. While the
node stays unknown or the master unreachable, the wait doubles up to ``DIGEST_PERIOD_S``: a
node the master never sees back costs no more than a check a period."""

DIGEST_TIMEOUT_S = 0.5
"""Seconds a check may take: a replica or the master answers from memory in milliseconds; a
later answer is a failure (a cut or a stalled peer), and the node asks again after
``DIGEST_RETRY_S``, so a partition that heals is repaired within about this plus a retry."""

FLUSH_TIMEOUT_S = 5.0
FLUSH_POLL_S = 0.005
"""``WriteQueue.flushed()`` (graceful shutdown, tests): how long it waits for the queue to
drain, and how often it looks."""

# -- the master's table -------------------------------------------------------------------------

BATCH_WINDOW_S = 0.1
"""Seconds: the default batch window of ``TableHub`` / ``TableBackend`` (nodes pass
``NodeConfig.batch_window_s``)."""

MAX_PENDING_WRITES = 10_000
"""Pairs waiting in the batch window before it flushes early: bounds master memory and the
size of one delta."""

SUBSCRIBER_QUEUE_DELTAS = 256
"""Deltas a slow replica may fall behind before its queue is dropped and it gets a fresh
snapshot instead: the master holds no unbounded backlog for a replica."""

DELTA_LOG_DELTAS = 1024
"""Deltas the table keeps to resume a subscriber; a replica further behind gets a snapshot.
Raising it costs master memory."""

# -- the query lane ------------------------------------------------------------------------------

LANE_AUTH_TIMEOUT_S = 5.0
"""Seconds a lane connection may stay open without a valid AUTH frame."""

LANE_PRE_AUTH_MAX_FRAME = 1024
"""Bytes: the largest frame read before AUTH (which carries 64 hex digits). A client that has
not authenticated must not make the node buffer a whole max-size frame: many such
connections would each hold it for ``LANE_AUTH_TIMEOUT_S``."""

LANE_MAX_FRAME = 64 * 1024
"""Bytes: a lane server's frame limit after AUTH unless told otherwise (``ControlServer``
passes ``MAX_MESSAGE_BYTES``); a QueryRequest is a name and an id."""

LANE_CLIENT_MAX_FRAME = MAX_MESSAGE_BYTES
"""Bytes: the largest reply a lane client reads, the server's message limit."""
