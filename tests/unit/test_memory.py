"""``memory.py``: the auto budget from /proc and cgroup files, PSS, PSI and the relief decision,
on fake /proc and cgroup trees in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfaas.runtime.memory import (
    Capacity,
    MiB,
    Relief,
    auto_budget,
    default_reserve_mb,
    limit_bytes,
    meminfo_total_bytes,
    own_cgroups,
    pressure_file,
    pss_bytes,
    read_capacity,
    read_pss,
    relief,
    some_avg10,
)

GiB = 1024 * MiB
MEMINFO = "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:   9000000 kB\n"
V1_SELF = "12:pids:/x\n4:memory:/kubepods/pod1/ctr\n1:name=systemd:/y\n0::/\n"
V2_SELF = "0::/kubepods/pod1/ctr\n"
PSI = "some avg10=12.50 avg60=3.00 avg300=0.50 total=733527\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=219407\n"  # noqa: E501
ROLLUP = (
    "55d0-7ffe ---p 00000000 00:00 0  [rollup]\nRss:  20000 kB\nPss:  12345 kB\nPss_Anon: 9000 kB\n"
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_parsers() -> None:
    assert meminfo_total_bytes(MEMINFO) == 16384000 * 1024
    assert meminfo_total_bytes("MemFree: 1 kB\n") is None
    assert own_cgroups(V1_SELF).v1_memory == "/kubepods/pod1/ctr"
    assert own_cgroups(V1_SELF).v2 == "/"
    assert own_cgroups(V2_SELF).v2 == "/kubepods/pod1/ctr"
    assert own_cgroups(V2_SELF).v1_memory is None
    assert own_cgroups("garbage") == own_cgroups("")
    assert limit_bytes("max\n") is None
    assert limit_bytes("9223372036854771712\n") is None  # v1's "no limit"
    assert limit_bytes("536870912\n") == 512 * MiB
    assert pss_bytes(ROLLUP) == 12345 * 1024
    assert pss_bytes("Rss: 1 kB\n") is None
    assert some_avg10(PSI) == 12.5
    assert some_avg10("full avg10=3.00\n") is None


@pytest.mark.parametrize(
    ("capacity_mb", "reserve_mb"), [(1024, 256), (2560, 256), (8192, 819), (65536, 6553)]
)
def test_the_default_reserve_is_256_mib_or_a_tenth(capacity_mb: int, reserve_mb: int) -> None:
    assert default_reserve_mb(capacity_mb) == reserve_mb


def test_the_budget_is_the_lower_of_host_and_cgroup_less_the_reserve() -> None:
    host = Capacity(16 * GiB)
    assert auto_budget(host, None).budget_mb == 16384 - 1638
    assert auto_budget(host, None).source == "host"
    assert auto_budget(host, 1000).budget_mb == 15384
    pod = Capacity(16 * GiB, cgroup_limit_bytes=2 * GiB)
    found = auto_budget(pod, None)
    assert (found.budget_mb, found.capacity_mb, found.reserve_mb, found.source) == (
        1792, 2048, 256, "cgroup",
    )  # fmt: skip
    assert str(found) == "1792 MiB: 2048 MiB (cgroup) - 256 MiB reserve"
    assert auto_budget(Capacity(16 * GiB, 64 * GiB), None).source == "host"  # limit above RAM
    assert auto_budget(Capacity(200 * MiB), None).budget_mb == 1  # smaller than its reserve


def test_read_capacity_v1_takes_the_lowest_limit_up_the_tree(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "meminfo", MEMINFO)
    write(proc / "self" / "cgroup", V1_SELF)
    memory = root / "memory"
    write(memory / "memory.limit_in_bytes", "9223372036854771712\n")
    write(memory / "kubepods" / "memory.limit_in_bytes", str(8 * GiB))
    write(memory / "kubepods" / "pod1" / "memory.limit_in_bytes", str(3 * GiB))
    write(memory / "kubepods" / "pod1" / "ctr" / "memory.limit_in_bytes", "9223372036854771712")
    found = read_capacity(root, proc)
    assert found == Capacity(16384000 * 1024, 3 * GiB)
    assert auto_budget(found, None).budget_mb == 3072 - 307


def test_read_capacity_v2_reads_memory_max(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "meminfo", MEMINFO)
    write(proc / "self" / "cgroup", V2_SELF)
    write(root / "cgroup.controllers", "cpu memory pids\n")
    write(root / "kubepods" / "pod1" / "memory.max", "max\n")
    write(root / "kubepods" / "pod1" / "ctr" / "memory.max", str(GiB))
    assert read_capacity(root, proc).cgroup_limit_bytes == GiB


def test_read_capacity_in_a_container_that_sees_its_cgroup_as_the_root(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path, but the mount is the container's own cgroup.
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "meminfo", MEMINFO)
    write(proc / "self" / "cgroup", "0::/docker/abc\n")
    write(root / "cgroup.controllers", "cpu memory pids\n")
    write(root / "memory.max", str(512 * MiB))
    assert read_capacity(root, proc).cgroup_limit_bytes == 512 * MiB


def test_read_capacity_without_cgroups_is_the_host(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    write(proc / "meminfo", MEMINFO)
    assert read_capacity(tmp_path / "none", proc) == Capacity(16384000 * 1024, None)
    with pytest.raises(OSError):
        read_capacity(tmp_path / "none", tmp_path / "noproc")


def test_read_pss(tmp_path: Path) -> None:
    write(tmp_path / "42" / "smaps_rollup", ROLLUP)
    assert read_pss(42, tmp_path) == 12345 * 1024
    assert read_pss(43, tmp_path) is None  # gone


def test_pressure_file_prefers_the_nodes_own_v2_cgroup(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    assert pressure_file(root, proc) is None  # no PSI at all
    write(proc / "pressure" / "memory", PSI)
    write(proc / "self" / "cgroup", V1_SELF)
    assert pressure_file(root, proc) == proc / "pressure" / "memory"
    write(proc / "self" / "cgroup", V2_SELF)
    own = root / "kubepods" / "pod1" / "ctr" / "memory.pressure"
    write(own, PSI)
    assert pressure_file(root, proc) == own


def test_relief() -> None:
    assert relief(900, 1000, None, 10) is None
    assert relief(900, 1000, 10.0, 10) is None  # at the threshold: not past it
    assert relief(1100, 1000, None, 10) == Relief(100, "over_budget")
    assert relief(900, 1000, 12.0, 10) == Relief(90, "pressure")  # 10% of the use
    assert relief(5, 1000, 12.0, 10) == Relief(1.0, "pressure")  # one instance at least
    assert relief(1500, 1000, 12.0, 10) == Relief(500, "pressure")
    assert relief(900, 1000, 99.0, 0) is None  # off
