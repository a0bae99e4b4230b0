"""A small switched network of Linux network namespaces: the chaos suite's partition and
packet-loss scenarios (tests/chaos) and the real-cluster benchmark (benchmarks/netns_cluster.py).

Layout (one ``Fabric``; every name starts with its prefix ``tfc<kind><pid>``, and its subnet
``10.231.<slot>.0/24`` is its own: slot 0 unless another fabric holds it)::

    root namespace (the test and its clients)         PREFIXsw: the "switch"
      PREFIXh  10.231.S.1/24  <--veth-->  h  ---+
                                                 br0 (a Linux bridge)
    PREFIXn1: eth0 10.231.S.11/24  <--veth-->  p1 ---+
    PREFIXn2: eth0 10.231.S.12/24  <--veth-->  p2 ---+   ...

Every node gets a namespace of its own, so each has a real address, its own loopback and
the same ports as the others; the faults are nftables rules in the switch's ``bridge``
table, so they act on the wire between nodes, as a broken network would: a dropped packet
vanishes silently (a connect hangs, UDP probes go unanswered), nothing is refused. The
root namespace (the test's clients, on .1) is never cut off from any node, so the client
keeps talking to both sides of a partition.

Several fabrics may exist at once (two test runs on one machine): each takes a subnet slot by
an exclusive ``flock`` held for its lifetime, and its names carry the pid of the process that
made it. Teardown is idempotent and kills by namespace, not by name: ``down()`` SIGKILLs every
process inside the fabric's namespaces (``ip netns pids``: nodes, zygotes, instances), then
deletes them, which deletes their veth pairs. ``clean_stale()`` does the same for fabrics whose
process is gone (a killed earlier run), never for a live one; ``up()`` calls it first.

Needs root, ``ip netns`` and ``nft``; ``unavailable()`` says why not, for ``pytest.skip``.
``up()`` raises the kernel's ARP table limits (machine-wide) when a large fabric needs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, TextIO

from tierfaas.procs import spawn_in_session
from tierfaas.testing.nodes import NodeProcess

STEM = "tfc"  # every fabric's names start with it: tfc<kind><pid>
_OURS = re.compile(rf"^{STEM}[a-z](\d+)")
_TABLE = "chaos"
_SLOTS = 64  # subnets 10.231.0.0/24 .. 10.231.63.0/24
_LOCKS = "/run/lock/tierfaas-chaos-netns"


def _run(argv: Sequence[str], check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why this machine cannot build a fabric (for ``pytest.skip``), or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces and nftables need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    if shutil.which("nft") is None:
        return "`nft` is not installed (apt-get install nftables; .ci/run does)"
    probe = f"tfprobe{os.getpid() % 100000}"
    try:
        _run(["ip", "netns", "add", probe])
    except (RuntimeError, OSError) as exc:
        return f"`ip netns add` is not allowed here: {exc}"
    try:
        _run(["ip", "netns", "exec", probe, "nft", "add", "table", "bridge", _TABLE])
    except (RuntimeError, OSError) as exc:
        return f"nftables (bridge family) does not work in a namespace here: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def namespaces() -> list[str]:
    """Every named network namespace on the machine."""
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line]


def _kill_inside(ns: str) -> None:
    """SIGKILL every process whose network namespace is ``ns``, and wait until they are gone."""
    for _ in range(50):
        pids = [int(p) for p in _run(["ip", "netns", "pids", ns], check=False).split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale() -> list[str]:
    """Kills the processes in, and deletes, every fabric namespace whose creating process is
    gone; returns them. Live fabrics (another test run's) are left alone."""
    stale = [ns for ns in namespaces() if (m := _OURS.match(ns)) and not _alive(int(m[1]))]
    for ns in stale:
        _kill_inside(ns)
        _run(["ip", "netns", "del", ns], check=False)
    # A root-side veth whose switch namespace is gone goes with it; one left over from a run
    # killed between two steps of up() is removed here.
    for line in _run(["ip", "-o", "link", "show"], check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if (m := _OURS.match(name)) and name.endswith("h") and not _alive(int(m[1])):
            _run(["ip", "link", "del", name], check=False)
    return stale


def _take_slot() -> tuple[int, TextIO]:
    """A subnet slot no other live fabric holds, and the locked file that holds it."""
    os.makedirs(_LOCKS, exist_ok=True)
    in_use = _run(["ip", "-o", "-4", "addr", "show"], check=False)
    for slot in range(_SLOTS):
        if f" 10.231.{slot}." in in_use:
            continue  # routed here by something that takes no lock
        handle = open(os.path.join(_LOCKS, f"{slot}.lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return slot, handle
    raise RuntimeError(f"all {_SLOTS} fabric subnets are taken")


_NEIGH = "/proc/sys/net/ipv4/neigh/default/gc_thresh{}"


def _fit_neighbour_table(size: int) -> None:
    """Raises the kernel's ARP table limits so that ``size`` nodes that all talk to each other
    fit, with room for other fabrics. The table is one for every namespace of the machine
    (``gc_thresh3``, 1,024 entries by default): 40 nodes in a full mesh need 40 x 40 entries,
    and past the limit the kernel refuses new ones ("neighbour table overflow"), so packets
    between nodes are dropped at random (lost probes, false suspicions, connects that wait
    for a SYN's retransmission). Only raises: another fabric may rely on the current values."""
    needed = (size + 1) ** 2  # each node and the root's leg may know every other
    for which, floor in ((2, 2 * needed), (3, 4 * needed)):
        path = _NEIGH.format(which)
        try:
            with open(path) as current:
                value = int(current.read())
            if value < floor:
                with open(path, "w") as limit:
                    limit.write(str(floor))
        except (OSError, ValueError):
            return  # not Linux, or not allowed: the fabric still works below ~20 nodes


class Fabric:
    """``size`` node namespaces on one bridge; see the module docstring.

    ``kind`` is one lowercase letter naming the test (names are ``tfc<kind><pid>...``);
    ``addresses[i]`` is node i's address and ``client`` the root namespace's, once ``up()``.
    """

    def __init__(self, kind: str, size: int) -> None:
        if not (len(kind) == 1 and kind.islower()):
            raise ValueError(f"kind {kind!r}: one lowercase letter")
        if not 1 <= size <= 200:
            raise ValueError("size must be 1-200")
        # At most 3 + 1 + 7 characters, so that PREFIXh fits Linux's 15 for a device name.
        self.prefix = f"{STEM}{kind}{os.getpid()}"
        self.size = size
        self.switch = f"{self.prefix}sw"
        self.nodes = [f"{self.prefix}n{i + 1}" for i in range(size)]
        self.subnet = ""
        self.client = ""
        self.addresses: list[str] = []
        self._slot: TextIO | None = None
        self._built = False

    # -- building ----------------------------------------------------------------------------

    def up(self) -> Fabric:
        clean_stale()
        _fit_neighbour_table(self.size)
        slot, self._slot = _take_slot()
        self.subnet = f"10.231.{slot}"
        self.client = f"{self.subnet}.1"
        self.addresses = [f"{self.subnet}.{11 + i}" for i in range(self.size)]
        self._built = True  # from here on, down() has something to undo
        sw = self.switch
        _run(["ip", "netns", "add", sw])
        self.exec_in(sw, "ip", "link", "set", "dev", "lo", "up")
        self.exec_in(sw, "ip", "link", "add", "br0", "type", "bridge")
        self.exec_in(sw, "ip", "link", "set", "dev", "br0", "up")
        # The root namespace's leg: the test's clients reach every node through it.
        host = f"{self.prefix}h"
        _run(["ip", "link", "add", host, "type", "veth", "peer", "name", "h", "netns", sw])
        _run(["ip", "addr", "add", f"{self.client}/24", "dev", host])
        _run(["ip", "link", "set", "dev", host, "up"])
        self.exec_in(sw, "ip", "link", "set", "dev", "h", "master", "br0", "up")
        for i, (ns, address) in enumerate(zip(self.nodes, self.addresses, strict=True)):
            _run(["ip", "netns", "add", ns])
            self.exec_in(ns, "ip", "link", "set", "dev", "lo", "up")
            port = f"p{i + 1}"
            self.exec_in(
                sw, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns
            )
            self.exec_in(sw, "ip", "link", "set", "dev", port, "master", "br0", "up")
            self.exec_in(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            self.exec_in(ns, "ip", "link", "set", "dev", "eth0", "up")
        self._install_table()
        return self

    def down(self) -> None:
        """Kills every process in the fabric and deletes it. Safe to call twice, or after a
        failed ``up()``."""
        if self._built:
            for ns in [*self.nodes, self.switch]:
                if ns in namespaces():
                    _kill_inside(ns)
                    _run(["ip", "netns", "del", ns], check=False)
            _run(["ip", "link", "del", f"{self.prefix}h"], check=False)
            self._built = False
        if self._slot is not None:
            self._slot.close()  # releases the subnet
            self._slot = None

    def exec_in(self, ns: str, *argv: str, check: bool = True) -> str:
        return _run(["ip", "netns", "exec", ns, *argv], check=check)

    def command(self, index: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside node ``index``'s namespace (``ip netns exec`` execs it, so the
        pid is the command's own)."""
        return ["ip", "netns", "exec", self.nodes[index], *argv]

    # -- faults ------------------------------------------------------------------------------

    def _install_table(self) -> None:
        # One bridge table in the switch; ``faults`` holds the current rules and is flushed to
        # heal. ARP is left alone (neighbours stay resolved, as on a network whose links are up
        # but whose packets are lost), only IPv4 between two node addresses is touched.
        nodes = ", ".join(self.addresses)
        script = f"""
table bridge {_TABLE} {{
    set nodes {{ type ipv4_addr; elements = {{ {nodes} }} }}
    chain forward {{
        type filter hook forward priority 0; policy accept;
        ip saddr @nodes ip daddr @nodes jump counts
        ip saddr @nodes ip daddr @nodes jump faults
    }}
    chain counts {{
    }}
    chain faults {{
    }}
}}
"""
        _run(["ip", "netns", "exec", self.switch, "nft", "-f", "-"], stdin=script)

    def _set_faults(self, rules: Iterable[str]) -> None:
        lines = [f"flush chain bridge {_TABLE} faults"]
        lines += [f"add rule bridge {_TABLE} faults {rule}" for rule in rules]
        _run(["ip", "netns", "exec", self.switch, "nft", "-f", "-"], stdin="\n".join(lines) + "\n")

    def partition(self, *groups: Sequence[int]) -> None:
        """Drops every packet between nodes of different ``groups`` (lists of node indexes),
        both ways; packets within a group, and to and from the clients, pass."""
        rules = []
        for a, group in enumerate(groups):
            for b, other in enumerate(groups):
                if a == b:
                    continue
                src = ", ".join(self.addresses[i] for i in group)
                dst = ", ".join(self.addresses[i] for i in other)
                rules.append(f"ip saddr {{ {src} }} ip daddr {{ {dst} }} counter drop")
        self._set_faults(rules)

    def loss(self, percent: int) -> None:
        """Drops ``percent`` % of the packets between any two nodes, at random, each packet
        on its own (``numgen random``)."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be 0-100")
        if percent == 100:  # nftables refuses "mod 100 < 100": its values stop at 99
            self._set_faults(["counter drop"])
        else:
            self._set_faults([f"numgen random mod 100 < {percent} counter drop"] if percent else [])

    def heal(self) -> None:
        """Removes every fault."""
        self._set_faults([])

    def dropped(self) -> int:
        """Packets the fault rules dropped so far (since the last change of rules)."""
        text = self.exec_in(self.switch, "nft", "list", "chain", "bridge", _TABLE, "faults")
        total = 0
        for line in text.splitlines():
            words = line.split()
            if "counter" in words and "packets" in words:
                total += int(words[words.index("packets") + 1])
        return total

    def count(self, name: str, match: str) -> None:
        """Counts, in the named counter ``name``, the packets between nodes that ``match``
        (nftables syntax, e.g. ``udp dport 7946``), before any fault drops them."""
        lines = [
            f"add counter bridge {_TABLE} {name}",
            f"add rule bridge {_TABLE} counts {match} counter name {name}",
        ]
        _run(["ip", "netns", "exec", self.switch, "nft", "-f", "-"], stdin="\n".join(lines) + "\n")

    def counted(self, name: str) -> int:
        """Packets the counter ``name`` (see ``count``) has seen so far."""
        text = self.exec_in(self.switch, "nft", "list", "counter", "bridge", _TABLE, name)
        words = text.split()
        return int(words[words.index("packets") + 1])

    def __enter__(self) -> Fabric:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()


class NetnsNode(NodeProcess):
    """``tierfaas node`` inside a fabric's namespace, in a session of its own (so ``kill()``
    ends its zygote and instances too); ``Fabric.down()`` kills whatever is left."""

    def __init__(self, fabric: Fabric, index: int, **kw: Any) -> None:
        super().__init__(host=fabric.addresses[index], **kw)
        self.fabric = fabric
        self.index = index

    def start(self, wait: bool = True, timeout: float = 30.0) -> NetnsNode:
        argv = [
            sys.executable, "-m", "tierfaas.cli", "node",
            "--release", str(self.release),
            "--http", f"{self.host}:{self.port}",
            # Plain processes, as in cluster.py: the ledger is a host file the sandbox hides.
            "--isolation", "process",
            *(["--data-dir", str(self.data_dir)] if self.data_dir is not None else []),
            *self.extra_args,
        ]  # fmt: skip
        output: int = subprocess.DEVNULL
        if self.log_path is not None:
            self._log_file = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            output = self._log_file
        self.process = spawn_in_session(
            self.fabric.command(self.index, argv),
            stdout=output,
            stderr=output,
            env={**os.environ, **(self.env or {})},
        )
        if wait:
            self.wait_healthy(timeout)
        return self
