"""Every node setting in one place: its meaning, unit, default and what changing it costs.

Each setting is a ``tierfaas node`` flag of its name (``--drain-timeout-s``; ``release_dir`` is
``--release``), made by cli.py with this default and doc (``tierfaas node --help``); addresses,
files, the provider and the isolation also come from ``TIERFAAS_*`` environment variables of
the flag's name (``TIERFAAS_ISOLATION``). ``NodeConfig`` validates itself as a whole when built,
so a bad value fails at start-up with the field's name and the reason (``ConfigError``), before
any socket opens or process starts. Whether the host can give what a setting asks for (can it
sandbox?) is not checked here, where building a config touches nothing: the node checks that
when it starts (``tierfaas.sandbox.probe``).

Presets: ``NodeConfig.lan(...)`` is the default for real deployments; ``NodeConfig.local(...)``
shortens timings for tests and demos on one machine (fast failure detection turns a 1.5 s
pause into a death, which is wrong on a real network).
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from tierfaas.calls.allow import DEFAULT_CALLBACK_ALLOW, AllowList
from tierfaas.errors import ConfigError
from tierfaas.names import is_valid_name

MiB = 1024 * 1024
MAX_ID = 2**32 - 2
"""The largest uid or gid: 2**32 - 1 is (uid_t) -1, which means "no change" to setresuid."""


def setting(default: Any, doc: str, unit: str = "") -> Any:
    """A config field with its documentation attached (shown by ``tierfaas node --help``)."""
    return field(default=default, metadata={"doc": doc, "unit": unit})


@dataclass(frozen=True, slots=True)
class Address:
    """A ``host:port`` pair. The host must be an IP address (names are resolved by callers)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, field_name: str = "address") -> Address:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(field_name, f"{text!r} is not HOST:PORT")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ConfigError(field_name, f"{host!r} is not an IP address") from None
            host = "127.0.0.1"
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(field_name, f"port {port_text!r} is not a number in 0..65535")
        return cls(host, int(port_text))

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One node's settings. Build with ``NodeConfig(...)`` or a preset; it validates itself."""

    # -- identity and addresses --------------------------------------------------------------
    release_dir: Path = setting(Path("examples/demo"), "the release directory to serve")
    http: Address = setting(
        Address("127.0.0.1", 8080), "where the invocation and admin API listens"
    )
    http_unix: Path | None = setting(
        None,
        "also serve the same HTTP API on this Unix socket (mode 600): a load balancer on the "
        "same machine reaches the node without a second loopback TCP connection per client "
        "('tierfaas up --lb nginx' uses it)",
    )
    name: str = setting(
        "", "this node's unique, stable name; empty derives it from the host and gossip port"
    )

    # -- cluster -------------------------------------------------------------------------------
    gossip: Address | None = setting(
        None,
        "where this node gossips (UDP and TCP); unset runs a standalone node with no cluster",
    )
    rpc: Address | None = setting(
        None,
        "where this node serves the control plane (gRPC), published in its metadata; "
        "unset: the gossip host at gossip port + 1",
    )
    join: tuple[str, ...] = setting(
        (),
        "seed gossip addresses HOST:PORT to join through; every node may get the same list, "
        "itself included",
    )
    gossip_preset: Literal["lan", "large", "local"] = setting(
        "lan",
        "failure-detection timings: 'lan' declares a silent node dead in ~6 s at 10 nodes and "
        "rides out pauses, but grows with log10 N (~19 s at 10,000); 'large', for ~1,000 nodes "
        "and more: ~6 s at 10,000, twice the probes, up to 50,000 members; 'local' in ~1.3 s, "
        "for tests and demos on one machine (a 1.5 s pause kills)",
    )
    gossip_max_members: int | None = setting(
        None,
        "the most members gossip holds (the others are refused); unset: 8,192, or 50,000 with "
        "the 'large' preset; each member costs ~150 B of every push-pull sync",
    )
    replicas: str = setting(
        "sqrt", "how many replicas: 'sqrt' (ceil of the square root of N) or a fixed number"
    )
    query_lane: Address | None = setting(
        None,
        "where this node answers route queries over the raw TCP query lane (~75 µs, against "
        "~570 µs for a gRPC call); unset: the RPC host, RPC port + 1",
    )
    batch_window_s: float = setting(
        0.1,
        "the master streams routing-table changes to the replicas at most once per window: "
        "a change after a quiet window goes out at once, later ones in the window together "
        "at its end; shorter spreads bursts sooner at the cost of more, smaller messages",
        "s",
    )
    hop_limit: int = setting(
        1,
        "how many times a request may be forwarded between nodes: 1 (a forwarded request runs "
        "where it lands or is refused back unstarted, so A->B->A cannot happen) or 0 (no "
        "routing: every node runs what it receives)",
        "hops",
    )
    cold_starts: Literal["home", "local"] = setting(
        "local",
        "where a function that is warm nowhere starts: 'local', on the node that got the call "
        "(SPEC 4.5; first calls on several nodes start several instances, which then serve "
        "without forwarding); 'home', on one node picked by hashing (a burst of first calls "
        "starts one instance, and the other nodes forward to it)",
    )
    hot_forwards_per_s: float = setting(
        100.0,
        "a node that forwards a function at least this often, or to targets whose slots for "
        "it are 3/4 busy on average, for 3 s in a row, starts an instance of its own in the "
        "background (only with memory free without evicting; once per 30 s): every forward "
        "costs CPU on two nodes, an instance one start, and a hot function then runs where "
        "its calls land. The call itself is still forwarded. 0: off",
        "calls/s",
    )
    cluster_cache: bool = setting(
        True,
        "use the cluster as one cache of warm instances: before a start that would evict "
        "another function's idle instance, a node asks the table again and forwards to a node "
        "where the function is warm; an idle instance whose function is also warm on another "
        "node is evicted first. Off: every node evicts as if it were alone",
    )
    route_cache_size: int = setting(
        4096, "functions whose warm nodes a node remembers (LRU)", "entries"
    )
    route_cache_ttl_s: float = setting(
        5.0,
        "how long a remembered route is trusted before the replica is asked again; longer "
        "saves lookups, shorter notices new warm nodes sooner (stale routes cost a retry)",
        "s",
    )
    key_file: Path | None = setting(
        None,
        "file holding the cluster key (base64, mode 600; see 'tierfaas keygen'); else "
        "$TIERFAAS_CLUSTER_KEY. Without a key, gossip may only bind loopback",
    )

    # -- request limits ------------------------------------------------------------------------
    max_body_bytes: int = setting(
        6 * MiB,
        "largest request body accepted; larger ones get 413. Raising it costs node memory, "
        "since a body is held in memory while its call runs",
        "bytes",
    )
    max_response_bytes: int = setting(
        6 * MiB, "largest result a handler may return; larger ones answer 502", "bytes"
    )
    queue_max: int = setting(
        256,
        "requests that may wait for a busy function on this node before new ones get 429; "
        "raising it absorbs bursts at the cost of latency and memory",
        "requests",
    )
    queue_timeout_s: float = setting(
        2.0,
        "longest a request waits for a free instance before it gets 429; raising it trades "
        "errors for latency under overload",
        "s",
    )
    retry_after_s: int = setting(1, "the Retry-After hint sent with 429 and 503", "s")
    max_header_bytes: int = setting(
        64 * 1024,
        "largest request line plus headers; larger ones get 431 and the connection is closed. "
        "The head is held in memory while it arrives",
        "bytes",
    )
    header_timeout_s: float = setting(
        10.0,
        "longest a client may take to send a request's line and headers (from the connection's "
        "opening or the request's first byte); past it 408 and the connection is closed. "
        "Shorter frees stalled connections sooner; slow links need longer",
        "s",
    )
    body_timeout_s: float = setting(
        60.0,
        "longest a client may take to send a request's body once its headers are in; past it "
        "408 and the connection is closed. At the default body limit this asks ~100 KiB/s of "
        "the slowest client",
        "s",
    )
    send_timeout_s: float = setting(
        60.0,
        "longest a client may leave a response unread (the socket's send buffer full); past "
        "it the connection is closed and the response dropped",
        "s",
    )
    admin_token_file: Path | None = setting(
        None,
        "file holding the admin token (mode 600), else $TIERFAAS_ADMIN_TOKEN; when set and "
        "the HTTP address is not loopback, the admin endpoints (cluster, routes, stats, "
        "dashboard, metrics) need it as 'Authorization: Bearer TOKEN' (or Basic, any user)",
    )
    scale_out_wait_s: float = setting(
        0.1,
        "when every instance of a warm function is busy, how long a call waits for a free one "
        "before a new instance starts, at most (never longer than the function's last start "
        "took: past that, starting wins); a start costs a process and the function's init, "
        "so a short wait saves most of them. Calls that arrive while an instance starts queue "
        "behind it and get this wait once it is up. 0: start one per waiting call at once",
        "s",
    )

    # -- instances -----------------------------------------------------------------------------
    memory_budget_mb: int | None = setting(
        None,
        "memory the instances on this node may book (see --memory-accounting); past it idle "
        "instances are evicted (see --eviction) to start others. Unset: the host's MemTotal, "
        "or the node's own cgroup limit when lower (a container's or pod's), less "
        "--memory-reserve-mb. Raising it keeps more functions warm",
        "MiB",
    )
    memory_reserve_mb: int | None = setting(
        None,
        "with --memory-budget-mb unset, what is kept back from the host's (or cgroup's) memory "
        "for the node itself, its zygote, the page cache and the kernel; unset: max(256 MiB, "
        "10%). Lowering it keeps more instances warm and leaves the node less room",
        "MiB",
    )
    memory_accounting: Literal["measured", "declared"] = setting(
        "measured",
        "what an instance counts against the budget: 'measured', what it uses (its cgroup's "
        "memory, or its PSS under --isolation process; a start books its function's recent "
        "average, else min(memory_mb, 64 MiB), until read), which overcommits (see "
        "docs/operations.md); 'declared', its function's memory_mb, which never overcommits "
        "and keeps few instances warm. memory_mb stays each instance's hard limit either way",
    )
    eviction: Literal["greedy-dual", "lru"] = setting(
        "greedy-dual",
        "which idle instance is evicted first when a start needs memory or the node is under "
        "memory pressure: 'greedy-dual', the lowest clock + calls served x start time / "
        "memory (FaasCache), keeping popular, slow-starting, small instances; 'lru', the least "
        "recently used",
    )
    memory_pressure_pct: float = setting(
        10.0,
        "the kernel's memory pressure (PSI 'some avg10': the share of the last 10 s in which "
        "a task stalled on memory) past which the node evicts idle instances, before the OOM "
        "killer acts; lower evicts sooner, higher risks the OOM killer. 0: off",
        "%",
    )
    memory_sample_s: float = setting(
        1.0,
        "how often each instance's memory use and the memory pressure are read; shorter "
        "corrects bookings and reacts to pressure sooner, at more reads of /proc and cgroups",
        "s",
    )
    reap_interval_s: float = setting(
        1.0, "how often idle instances are checked against their keep-alive", "s"
    )
    keep_alive_policy: Literal["learned", "fixed"] = setting(
        "learned",
        "how long idle instances are kept: 'learned', per function from a histogram of its "
        "idle times on this node, a keep-alive window covering 99% of them and, for a function "
        "whose calls come at predictable gaps of 30 s or more, a prewarm that starts one "
        "instance shortly before the next call instead of keeping one (the fixed default while "
        "the history is short or shows no pattern); 'fixed', each function's keep_alive_s "
        "after its instance's last call, no prewarm. Learned windows can be longer than "
        "keep_alive_s (a bursty function is kept through its usual gaps) or shorter",
    )
    cold_start_worth_mb_s: float = setting(
        307200.0,
        "with --keep-alive-policy learned, what avoiding one cold start is worth in memory held "
        "by an idle instance (MB x s): each function keeps an instance, or prewarms one, only "
        "for as long as the calls it is expected to catch pay for its memory at this price "
        "(runtime/pricing.py). The default, a 512 MB instance (the largest usual memory_mb) "
        "kept for 10 minutes (Lambda's and OpenWhisk's keep-alive), is where a simulated "
        "Azure-shaped day on 3 nodes with memory to spare holds about the memory-time of a "
        "fixed 10-minute keep-alive (+2 % to -9 % on three seeds; docs/benchmarks.md). Higher "
        "keeps instances longer (fewer cold starts, more memory held); lower, shorter",
        "MB·s",
    )
    start_timeout_s: float = setting(
        30.0, "longest an instance may take to start: the fork, its handler's import and init", "s"
    )

    # -- isolation of instances (docs/security.md) ---------------------------------------------
    isolation: Literal["sandbox", "process"] = setting(
        "sandbox",
        "how instances are isolated: 'sandbox', each in its own cgroup, user and namespaces "
        "(a host that cannot sandbox makes the node refuse to start, saying what is missing); "
        "'process', as plain processes of the node's user, which can read the node's memory, "
        "key and state: only for hosts that cannot sandbox, accepted explicitly",
    )
    sandbox_uid_base: int = setting(
        200000,
        "the first host uid and gid of the range mapped for function identities; pick a range "
        "no user or other service of the host owns",
        "uid",
    )
    sandbox_uid_count: int = setting(
        65536,
        "size of that range: each function of a release takes one uid, the release's zygote "
        "another (a rollout holds two releases at once)",
        "uids",
    )
    sandbox_tmp_mb: int = setting(
        64,
        "size of each instance's private /tmp, a tmpfs counted in its memory limit (memory_mb): "
        "raising it lets a handler write more scratch files and leaves it less memory if it does",
        "MiB",
    )
    cgroup_root: Path = setting(
        Path("/sys/fs/cgroup"),
        "where the cgroup file system is mounted; the node makes its instances' cgroups below it",
    )
    output_bytes_per_s: int = setting(
        65536,
        "per function, the rate at which its instances' stdout and stderr reach the node's log; "
        "over it lines are dropped and counted. Raising it lets chatty handlers flood the log",
        "bytes/s",
    )
    output_burst_bytes: int = setting(
        262144,
        "per function, how much output may reach the log at once above that rate before lines "
        "are dropped",
        "bytes",
    )
    logs_lines: int = setting(
        1000,
        "per function, how many of its last output lines this node keeps in memory for GET "
        "/v1/logs and tierfaas logs (each up to about 4 KiB); older ones are read from the files",
        "lines",
    )
    logs_file_bytes: int = setting(
        4 * MiB,
        "per function, the size of one log file under DATA_DIR/logs before it is rotated",
        "bytes",
    )
    logs_files: int = setting(
        3,
        "per function, how many log files are kept (the current one and the rotated ones); "
        "the disk a function's log may take is this times --logs-file-bytes. 0 keeps no file",
        "files",
    )

    # -- tracing (docs/operations.md, "Tracing") ------------------------------------------------
    otlp_endpoint: str | None = setting(
        None,
        "an OpenTelemetry collector's OTLP/HTTP URL (http://HOST:4318, or a full .../v1/traces "
        "URL): each call's spans on this node are posted there in batches, off the call path. "
        "Unset: no spans are made at all",
    )
    trace_sample: float = setting(
        1.0,
        "the share of new traces recorded (0..1) when --otlp-endpoint is set; a call with a "
        "traceparent follows its caller's sampled flag. Lower it to bound the export's cost "
        "(a few µs of CPU per recorded span) at high call rates",
        "ratio",
    )

    # -- asynchronous calls (POST /async-function/NAME; docs/architecture.md) -------------------
    data_dir: Path | None = setting(
        None,
        "where the node keeps its state: the async calls' store (calls.log, an append-only "
        "log) and the functions' logs (logs/FUNCTION.log). Unset: "
        "$XDG_STATE_HOME/tierfaas/NAME, else ~/.local/state/tierfaas/NAME. A "
        "node restarted on the same folder claims back its unfinished calls",
    )
    async_queue_max: int = setting(
        10000,
        "unfinished async calls (queued or running) this node may own before new ones get "
        "429 queue_full; raising it absorbs longer bursts at the cost of disk and of the time "
        "a holder needs to take over a dead node's calls",
        "calls",
    )
    async_share: float = setting(
        0.5,
        "the share of a function's slots on this node (max_instances x concurrency, at least "
        "1) that async calls may take at once; the rest stays free for synchronous calls. "
        "Higher drains queues faster and lets them delay synchronous calls",
    )
    calls_keep_s: float = setting(
        86400.0,
        "how long a finished async call's record (state, result) is kept for GET /v1/calls; "
        "longer costs disk. Also bounds idempotency: a key is found while its call is kept",
        "s",
    )
    calls_keep_max: int = setting(
        100000,
        "most finished async calls kept per node (the oldest finished go first); each keeps "
        "its request and result, so this bounds the store's size",
        "calls",
    )
    idempotency_window_s: float = setting(
        86400.0,
        "how long a repeated Idempotency-Key for the same function returns the first call "
        "instead of accepting a new one",
        "s",
    )
    retry_base_s: float = setting(
        1.0,
        "the first retry's backoff bound of an async call that failed with a 5xx or timeout; "
        "each later retry doubles it (full jitter: the delay is drawn below the bound)",
        "s",
    )
    retry_cap_s: float = setting(
        300.0, "the largest backoff bound between two attempts of an async call", "s"
    )

    # -- callbacks of async calls (docs/operations.md) -----------------------------------------
    callback_allow: str = setting(
        DEFAULT_CALLBACK_ALLOW,
        "where async calls' X-Callback-Url may point, comma-separated: CIDRs or addresses "
        "(10.0.0.0/8), host names (hooks.example.com), *.domain, or * (any host name that "
        "resolves to a public address); other URLs are refused with 400 bad_callback. The "
        "default reaches this machine only; empty refuses every callback. Each delivery "
        "checks the resolved address again (DNS rebinding)",
    )
    callback_retries: int = setting(
        5,
        "how many times a callback that failed (connection error, timeout, non-2xx answer) is "
        "tried again, with exponential backoff and jitter; more rides out longer receiver "
        "outages and holds the delivery longer",
        "retries",
    )
    callback_timeout_s: float = setting(
        5.0, "longest one callback attempt may take, the connect and the answer included", "s"
    )
    callback_key_file: Path | None = setting(
        None,
        "file holding the key that signs callbacks (mode 600, 16-4096 printable characters, "
        "the same on every node): each attempt then carries 'X-Tierfaas-Signature: t=TIME,"
        "v1=HMAC-SHA256(key, TIME.BODY)' for the receiver to check; unset, callbacks go "
        "unsigned",
    )

    # -- lifecycle -----------------------------------------------------------------------------
    drain_timeout_s: float = setting(
        30.0,
        "on SIGTERM, how long in-flight requests may finish before instances are killed",
        "s",
    )
    drain_quiet_s: float = setting(
        0.5,
        "while draining, how long no call may arrive before the node exits (calls still "
        "arriving on open connections are served, and each answer closes its connection)",
        "s",
    )

    # -- releases and rollouts (SPEC 6) ----------------------------------------------------------
    registry: Path | None = setting(
        None,
        "release registry folder this cluster follows ('tierfaas publish' adds versions); "
        "the master polls it and rolls the cluster to the desired version",
    )
    generation: int = setting(
        0,
        "the rollout generation this node starts in (set by the deploying master): nodes of "
        "a higher generation outrank all others, see docs/architecture.md",
    )
    provider: Literal["none", "local", "kubernetes"] = setting(
        "none",
        "how a master starts and stops nodes in a rollout: 'local' (processes on this "
        "machine), 'kubernetes' (pods), 'none' (no rollouts)",
    )
    provider_state: Path | None = setting(
        None,
        "local provider: the folder of its launch settings and node records "
        "('tierfaas up' makes one)",
    )
    registry_poll_s: float = setting(
        2.0, "how often the master reads the registry's desired version", "s"
    )
    secrets_poll_s: float = setting(
        1.0,
        "how often a node reads the registry's secrets for new versions of those its functions "
        "list (a listing of a few folders each time; a new version reaches running instances "
        "within this)",
        "s",
    )
    canaries: int = setting(
        2, "nodes of a new version started and checked before the table is handed over", "nodes"
    )
    canary_timeout_s: float = setting(
        60.0,
        "how long a new node may take to join and be ready; past it the rollout aborts",
        "s",
    )
    build_timeout_s: float = setting(
        300.0,
        "how long the release's build step ([release] build) may run when the node loads the "
        "release; past it the build's processes are killed and the release does not load "
        "(keep --canary-timeout-s above a registry version's build time)",
        "s",
    )
    debug: bool = setting(False, "include tracebacks in handler error responses")
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "log verbosity")

    def __post_init__(self) -> None:
        self._check_positive("max_body_bytes", "max_response_bytes", "queue_timeout_s")
        self._check_positive("reap_interval_s", "start_timeout_s", "memory_sample_s")
        self._check_memory()
        self._check_positive("retry_after_s")
        self._check_positive("header_timeout_s", "body_timeout_s", "send_timeout_s")
        if not isinstance(self.max_header_bytes, int) or self.max_header_bytes < 1024:
            raise ConfigError("max_header_bytes", "must be at least 1024")
        self._check_positive("batch_window_s", "route_cache_size", "route_cache_ttl_s")
        if self.keep_alive_policy not in ("learned", "fixed"):
            policy = self.keep_alive_policy
            raise ConfigError("keep_alive_policy", f"{policy!r} is not learned|fixed")
        self._check_positive("cold_start_worth_mb_s")
        if self.cold_starts not in ("home", "local"):
            raise ConfigError("cold_starts", f"{self.cold_starts!r} is not home|local")
        if self.hop_limit not in (0, 1):
            # A forwarded call runs where it lands or is refused back unstarted; forwarding it
            # onward again is not implemented, so larger limits would promise what isn't done.
            raise ConfigError("hop_limit", "must be 0 (no routing) or 1 (forward at most once)")
        if self.hot_forwards_per_s < 0:
            raise ConfigError("hot_forwards_per_s", "must be 0 (off) or more")
        if not 0 <= self.scale_out_wait_s <= 10:
            raise ConfigError("scale_out_wait_s", "must be between 0 and 10")
        if self.queue_max < 0:
            raise ConfigError("queue_max", "must be 0 or more")
        if self.drain_timeout_s < 0:
            raise ConfigError("drain_timeout_s", "must be 0 or more")
        if self.drain_quiet_s < 0:
            raise ConfigError("drain_quiet_s", "must be 0 or more")
        self._check_positive("registry_poll_s", "canary_timeout_s", "build_timeout_s")
        self._check_positive("secrets_poll_s")
        if not isinstance(self.generation, int) or self.generation < 0:
            raise ConfigError("generation", "must be 0 or more")
        if self.canaries < 1:
            raise ConfigError("canaries", "must be 1 or more")
        if self.provider not in ("none", "local", "kubernetes"):
            raise ConfigError("provider", f"{self.provider!r} is not none|local|kubernetes")
        if self.provider == "local" and self.provider_state is None:
            raise ConfigError("provider_state", "the local provider needs --provider-state")
        if self.provider != "none" and self.registry is None:
            raise ConfigError("registry", "a rollout provider needs a --registry to follow")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level", f"{self.log_level!r} is not debug|info|warning|error")
        if not self.release_dir.is_dir():
            raise ConfigError("release_dir", f"{self.release_dir} is not a directory")
        if self.http_unix is not None:
            # sun_path holds 108 bytes with the terminating NUL
            if len(bytes(self.http_unix)) > 107:
                raise ConfigError("http_unix", f"{self.http_unix}: longer than 107 bytes")
            if not self.http_unix.parent.is_dir():
                raise ConfigError("http_unix", f"{self.http_unix.parent} is not a directory")
        if self.gossip_preset not in ("lan", "large", "local"):
            raise ConfigError("gossip_preset", f"{self.gossip_preset!r} is not lan|large|local")
        if self.gossip_max_members is not None and self.gossip_max_members < 2:
            raise ConfigError("gossip_max_members", "must be at least 2")
        if self.replicas != "sqrt" and not (self.replicas.isdigit() and int(self.replicas) > 0):
            raise ConfigError("replicas", f"{self.replicas!r} is not 'sqrt' or a positive number")
        if self.join and self.gossip is None:
            raise ConfigError("join", "joining a cluster needs a gossip address (--gossip)")
        for seed in self.join:
            Address.parse(seed, "join")
        if self.name and not is_valid_name(self.name):
            raise ConfigError("name", f"{self.name!r}: use 1-64 of [A-Za-z0-9._-]")
        self._check_isolation()
        self._check_tracing()
        self._check_calls()
        AllowList.parse(self.callback_allow)  # raises ConfigError("callback_allow", ...)
        _check_whole("callback_retries", self.callback_retries, 0, 20)
        self._check_positive("callback_timeout_s")

    def _check_calls(self) -> None:
        _check_whole("async_queue_max", self.async_queue_max, 1, 10_000_000)
        _check_whole("calls_keep_max", self.calls_keep_max, 1, 100_000_000)
        share = self.async_share
        if not isinstance(share, int | float) or not 0 < share <= 1:
            raise ConfigError("async_share", f"must be in (0, 1], got {share!r}")
        self._check_positive("calls_keep_s", "idempotency_window_s", "retry_base_s")
        self._check_positive("retry_cap_s")
        if self.retry_cap_s < self.retry_base_s:
            raise ConfigError("retry_cap_s", "must be at least --retry-base-s")
        if self.data_dir is not None and self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError("data_dir", f"{self.data_dir} is not a directory")

    @property
    def state_dir(self) -> Path:
        """``data_dir``, else the node's folder under $XDG_STATE_HOME (or ~/.local/state)."""
        if self.data_dir is not None:
            return self.data_dir
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "tierfaas" / self.node_name

    def _check_memory(self) -> None:
        if self.memory_budget_mb is not None:
            _check_whole("memory_budget_mb", self.memory_budget_mb, 1, 1 << 40)
        if self.memory_reserve_mb is not None:
            _check_whole("memory_reserve_mb", self.memory_reserve_mb, 0, 1 << 40)
        if self.memory_accounting not in ("measured", "declared"):
            raise ConfigError(
                "memory_accounting", f"{self.memory_accounting!r} is not measured|declared"
            )
        if self.eviction not in ("greedy-dual", "lru"):
            raise ConfigError("eviction", f"{self.eviction!r} is not greedy-dual|lru")
        pressure = self.memory_pressure_pct
        if not isinstance(pressure, int | float) or not 0 <= pressure <= 100:
            raise ConfigError("memory_pressure_pct", "must be between 0 (off) and 100")

    def _check_isolation(self) -> None:
        if self.isolation not in ("sandbox", "process"):
            raise ConfigError("isolation", f"{self.isolation!r} is not sandbox|process")
        _check_whole("sandbox_uid_base", self.sandbox_uid_base, 1, MAX_ID)
        # A release's zygote takes one uid and each of its functions another: two at least.
        _check_whole("sandbox_uid_count", self.sandbox_uid_count, 2, MAX_ID)
        last = self.sandbox_uid_base + self.sandbox_uid_count - 1
        if last > MAX_ID:
            raise ConfigError(
                "sandbox_uid_count",
                f"the range {self.sandbox_uid_base}..{last} runs past the largest id, {MAX_ID}",
            )
        _check_whole("sandbox_tmp_mb", self.sandbox_tmp_mb, 1, 65536)
        if not self.cgroup_root.is_absolute():
            raise ConfigError("cgroup_root", f"{self.cgroup_root} is not an absolute path")
        _check_whole("output_bytes_per_s", self.output_bytes_per_s, 1, 1 << 40)
        _check_whole("output_burst_bytes", self.output_burst_bytes, 1, 1 << 40)
        _check_whole("logs_lines", self.logs_lines, 1, 10_000_000)
        # A line is at most about 30 KiB as JSON (4 KiB of text, each byte escaped at worst).
        _check_whole("logs_file_bytes", self.logs_file_bytes, 64 * 1024, 1 << 40)
        _check_whole("logs_files", self.logs_files, 0, 1000)

    def _check_tracing(self) -> None:
        endpoint = self.otlp_endpoint
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
                raise ConfigError(
                    "otlp_endpoint", f"{endpoint!r} is not an http:// or https:// URL"
                )
        sample = self.trace_sample
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 1:
            raise ConfigError("trace_sample", f"must be a number in 0..1, got {sample!r}")

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(name, f"must be a positive number, got {value!r}")

    @property
    def node_name(self) -> str:
        """The explicit name, else one derived from the gossip (or HTTP) address."""
        if self.name:
            return self.name
        address = self.gossip or self.http
        return f"{address.host.replace(':', '.')}-{address.port}"

    @property
    def rpc_address(self) -> Address | None:
        """The control-plane address: ``rpc``, else the gossip host at gossip port + 1."""
        if self.rpc is not None or self.gossip is None:
            return self.rpc
        return Address(self.gossip.host, self.gossip.port + 1)

    @property
    def lane_address(self) -> Address | None:
        rpc = self.rpc_address
        if self.query_lane is not None or rpc is None:
            return self.query_lane
        return Address(rpc.host, rpc.port + 1)

    @property
    def replica_policy(self) -> str | int:
        return "sqrt" if self.replicas == "sqrt" else int(self.replicas)

    def with_changes(self, **changes: Any) -> NodeConfig:
        return replace(self, **changes)

    @classmethod
    def default_of(cls, name: str) -> Any:
        """The default of setting ``name``: for flags and tools that start nodes."""
        return cls.__dataclass_fields__[name].default

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(name, default, unit, doc) of every setting, for docs and ``--help``."""
        rows = []
        for f in fields(cls):
            rows.append((f.name, repr(f.default), f.metadata["unit"], f.metadata["doc"]))
        return rows


def _check_whole(name: str, value: object, low: int, high: int) -> None:
    """``ConfigError`` naming setting ``name`` unless ``value`` is a whole number in low..high."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(name, f"must be a whole number in {low}..{high}, got {value!r}")
