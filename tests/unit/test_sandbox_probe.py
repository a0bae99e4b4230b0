"""``tierfaas.sandbox.probe``: whether a host can sandbox functions, and the refusal that says
what is missing. The facts are read from a fake ``/proc`` and a fake cgroup detector."""

from __future__ import annotations

import itertools
import types
from pathlib import Path

import pytest

from tierfaas.errors import SandboxUnavailable
from tierfaas.sandbox.probe import (
    APPARMOR_RESTRICT_USERNS,
    MAX_USER_NAMESPACES,
    UNPRIVILEGED_USERNS_CLONE,
    HostFacts,
    check_isolation,
    gather_facts,
    sandbox_refusal,
)

CGROUP_REASON = "no cgroup file system is mounted at /nowhere"
USERNS_REASON = "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)"
ACCEPT = "--isolation process (TIERFAAS_ISOLATION=process)"


# -- the decision, for every combination -------------------------------------------------------


@pytest.mark.parametrize(
    ("is_root", "user_namespaces", "cgroups"),
    list(itertools.product([True, False], [True, False], [None, CGROUP_REASON])),
)
def test_every_combination_of_facts(
    is_root: bool, user_namespaces: bool, cgroups: str | None
) -> None:
    facts = HostFacts(
        is_root=is_root,
        user_namespaces=user_namespaces,
        cgroups=cgroups,
        userns_reason=None if user_namespaces else USERNS_REASON,
    )
    refusal = sandbox_refusal(facts)
    # Root or not, the release's zygote lives in a user namespace.
    if cgroups is None and user_namespaces:
        assert refusal is None
        return
    assert refusal is not None
    assert refusal.startswith("this host cannot sandbox functions: ")
    assert ACCEPT in refusal  # always says how to accept plain processes, exactly
    assert (f"no writable cgroup ({CGROUP_REASON})" in refusal) == (cgroups is not None)
    assert ("--cgroup-root" in refusal) == (cgroups is not None)
    assert (USERNS_REASON in refusal) == (not user_namespaces)
    fix = "run the node as root or enable user namespaces"
    assert (fix in refusal) == (not user_namespaces and not is_root)


def test_both_pieces_missing_are_named_in_one_message() -> None:
    refusal = sandbox_refusal(HostFacts(False, False, CGROUP_REASON, USERNS_REASON))
    assert refusal == (
        "this host cannot sandbox functions: no writable cgroup "
        f"({CGROUP_REASON}); {USERNS_REASON}. To sandbox them, give "
        "the node a cgroup it may write (the cgroup file system mounted read-write, or a "
        "subtree delegated to its user) at --cgroup-root and run the node as root or enable "
        "user namespaces; or accept unsandboxed functions explicitly with --isolation process "
        "(TIERFAAS_ISOLATION=process): they then run as plain processes of the node's user and "
        "can read what it can, the cluster key included"
    )


def test_root_needs_user_namespaces_too() -> None:
    """The release's zygote lives in a user namespace whoever runs the node."""
    refusal = sandbox_refusal(HostFacts(True, False, None, USERNS_REASON))
    assert refusal is not None and "enable user namespaces;" in refusal


def test_facts_made_without_a_reason_still_refuse_readably() -> None:
    refusal = sandbox_refusal(HostFacts(is_root=False, user_namespaces=False, cgroups=None))
    assert refusal is not None
    assert "user namespaces are not available" in refusal


# -- reading the facts -------------------------------------------------------------------------


def fake_proc(tmp_path: Path, **sysctls: str) -> Path:
    """A /proc with the user-namespace sysctls given (by their constant's name)."""
    names = {
        "max": MAX_USER_NAMESPACES,
        "clone": UNPRIVILEGED_USERNS_CLONE,
        "apparmor": APPARMOR_RESTRICT_USERNS,
    }
    for key, value in sysctls.items():
        path = tmp_path / names[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return tmp_path


def usable(root: Path) -> object:
    return types.SimpleNamespace(root=root)  # what a Layout is to the probe: not a str


def unusable(root: Path) -> str:
    return f"nothing writable at {root}"


def facts(proc: Path, euid: int = 1000, detect: object = usable) -> HostFacts:
    return gather_facts(Path("/cg"), proc=proc, euid=euid, detect=detect)  # type: ignore[arg-type]


def test_a_root_node_with_user_namespaces_and_a_cgroup(tmp_path: Path) -> None:
    got = facts(fake_proc(tmp_path, max="63000"), euid=0)
    assert got == HostFacts(is_root=True, user_namespaces=True, cgroups=None)
    assert sandbox_refusal(got) is None


def test_the_cgroup_detectors_reason_is_kept(tmp_path: Path) -> None:
    got = facts(fake_proc(tmp_path, max="63000"), euid=0, detect=unusable)
    assert got.cgroups == "nothing writable at /cg"


@pytest.mark.parametrize(
    ("sysctls", "euid", "reason"),
    [
        ({"max": "0"}, 0, "user namespaces are disabled ({max} is 0)"),
        ({"max": "0"}, 1000, "user namespaces are disabled ({max} is 0)"),
        ({}, 1000, "this kernel has no user namespaces ({max} is missing)"),
        ({"max": "lots"}, 1000, "user namespaces are not usable ({max} reads 'lots')"),
        ({"max": "10", "clone": "0"}, 1000,
         "user namespaces are disabled for users other than root "
         "({proc}/sys/kernel/unprivileged_userns_clone is 0)"),
        ({"max": "10", "apparmor": "1"}, 1000,
         "AppArmor gives user namespaces of users other than root no rights "
         "({proc}/sys/kernel/apparmor_restrict_unprivileged_userns is 1)"),
        ({"max": "10", "clone": "1", "apparmor": "0"}, 1000, None),
        ({"max": "10"}, 1000, None),
        ({"max": "10", "clone": "0", "apparmor": "1"}, 0, None),  # they bind users, not root
    ],
)  # fmt: skip
def test_user_namespaces(
    tmp_path: Path, sysctls: dict[str, str], euid: int, reason: str | None
) -> None:
    got = facts(fake_proc(tmp_path, **sysctls), euid=euid)
    max_path = tmp_path / MAX_USER_NAMESPACES
    expected = None if reason is None else reason.format(proc=tmp_path, max=max_path)
    assert got.userns_reason == expected
    assert got.user_namespaces == (expected is None)
    assert got.is_root == (euid == 0)


def test_a_user_without_user_namespaces_is_refused_naming_the_sysctl(tmp_path: Path) -> None:
    refusal = sandbox_refusal(facts(fake_proc(tmp_path, max="10", clone="0")))
    assert refusal is not None
    assert f"{tmp_path}/sys/kernel/unprivileged_userns_clone is 0" in refusal


def test_the_detector_is_tierfaas_sandbox_cgroups_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Path] = []

    def detect(root: Path) -> str:
        asked.append(root)
        return "cgroup v2 without the memory controller"

    monkeypatch.setattr("tierfaas.sandbox.cgroups.detect", detect)
    got = gather_facts(Path("/my/cgroup"), proc=fake_proc(tmp_path, max="10"), euid=0)
    assert asked == [Path("/my/cgroup")]
    assert got.cgroups == "cgroup v2 without the memory controller"


def test_the_real_host_can_be_read() -> None:
    """Whatever this host is, reading it works and the decision is made."""
    got = gather_facts(Path("/sys/fs/cgroup"), detect=usable)
    assert isinstance(got.is_root, bool) and isinstance(got.user_namespaces, bool)
    assert got.user_namespaces == (got.userns_reason is None)


# -- the check a node makes at start -----------------------------------------------------------


def test_process_isolation_reads_nothing() -> None:
    def gather(root: Path) -> HostFacts:
        raise AssertionError("process isolation must not probe the host")

    check_isolation("process", Path("/cg"), gather)


def test_the_sandbox_on_a_host_that_can_starts() -> None:
    asked: list[Path] = []

    def gather(root: Path) -> HostFacts:
        asked.append(root)
        return HostFacts(is_root=True, user_namespaces=True, cgroups=None)

    check_isolation("sandbox", Path("/cg"), gather)
    assert asked == [Path("/cg")]


def test_the_sandbox_on_a_host_that_cannot_is_refused() -> None:
    def gather(root: Path) -> HostFacts:
        return HostFacts(is_root=False, user_namespaces=False, cgroups=f"nothing at {root}")

    with pytest.raises(SandboxUnavailable) as refused:
        check_isolation("sandbox", Path("/cg"), gather)
    assert "no writable cgroup (nothing at /cg)" in refused.value.message
    assert ACCEPT in str(refused.value)
