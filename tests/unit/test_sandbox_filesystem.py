"""``plan_root`` (pure: the mount operations of a release's root) and the gatherers that feed it
(``describe``, ``python_paths``, ``gather_sources``, ``gather_hidden``) on a tmp_path tree."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tierfaas
from tierfaas.sandbox.filesystem import (
    Bind,
    Kind,
    Mask,
    MountOp,
    Source,
    Symlink,
    describe,
    gather_hidden,
    gather_sources,
    plan_root,
    python_paths,
)


def inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def d(path: str) -> Source:
    return Source(path, "dir")


def f(path: str) -> Source:
    return Source(path, "file")


def link(path: str, target: str) -> Source:
    return Source(path, "symlink", target)


# -- binds and symlinks ------------------------------------------------------------------------


def test_directories_and_files_are_bound_and_symlinks_recreated() -> None:
    ops = plan_root([f("/etc/passwd"), link("/bin", "usr/bin"), d("/usr")], [])
    assert ops == [Symlink("/bin", "usr/bin"), Bind("/usr", True), Bind("/etc/passwd", False)]


def test_a_path_inside_a_bound_directory_is_not_bound_again() -> None:
    sources = [d("/opt/venv/lib/python3.11/site-packages"), f("/opt/venv/bin/python"), d("/opt")]
    assert plan_root(sources, []) == [Bind("/opt", True)]


def test_a_symlink_inside_a_bound_directory_comes_with_it() -> None:
    ops = plan_root([link("/etc/ssl/certs/ca.pem", "/usr/share/ca.pem"), d("/etc/ssl")], [])
    assert ops == [Bind("/etc/ssl", True)]


def test_a_name_that_merely_starts_like_a_bound_directory_is_bound_too() -> None:
    ops = plan_root([d("/usr"), d("/usrlocal"), d("/lib"), link("/lib64", "usr/lib64")], [])
    assert ops == [
        Bind("/lib", True),
        Symlink("/lib64", "usr/lib64"),
        Bind("/usr", True),
        Bind("/usrlocal", True),
    ]


def test_parents_come_before_children_whatever_order_the_sources_come_in() -> None:
    # A symlink does not cover what lies under its path, so both stay, the link first.
    ops = plan_root([f("/srv/app/rel/main.py"), link("/srv/app", "/data/app")], [])
    assert ops == [Symlink("/srv/app", "/data/app"), Bind("/srv/app/rel/main.py", False)]


def test_duplicate_sources_give_one_operation() -> None:
    assert plan_root([d("/usr"), d("/usr"), f("/etc/hosts"), f("/etc/hosts")], []) == [
        Bind("/usr", True),
        Bind("/etc/hosts", False),
    ]


def test_nothing_to_bind_gives_no_operation() -> None:
    assert plan_root([], [d("/srv/state")]) == []


# -- masks -------------------------------------------------------------------------------------


def test_hidden_paths_inside_a_bind_are_masked_as_what_they_are_after_every_bind() -> None:
    ops = plan_root(
        [d("/srv/rel"), f("/etc/hosts")],
        [f("/srv/rel/cluster.key"), d("/srv/rel/state")],
    )
    assert ops == [
        Bind("/etc/hosts", False),
        Bind("/srv/rel", True),
        Mask("/srv/rel/cluster.key", False),
        Mask("/srv/rel/state", True),
    ]


def test_a_hidden_path_outside_every_bind_needs_no_mask() -> None:
    # The root holds only what is bound: the node's state elsewhere is not there to hide.
    ops = plan_root([d("/srv/rel")], [d("/var/lib/tierfaas"), f("/srv/release.key")])
    assert ops == [Bind("/srv/rel", True)]


def test_a_hidden_path_under_a_symlink_source_needs_no_mask() -> None:
    assert plan_root([link("/bin", "usr/bin")], [f("/bin/secret")]) == [Symlink("/bin", "usr/bin")]


def test_a_hidden_symlink_is_not_masked_itself() -> None:
    # The link is harmless without its target; gather_hidden also hides where it leads.
    ops = plan_root([d("/srv/rel")], [link("/srv/rel/key", "/etc/tierfaas/key")])
    assert ops == [Bind("/srv/rel", True)]


def test_a_hidden_path_that_is_itself_bound_is_masked() -> None:
    ops = plan_root([f("/srv/token"), d("/srv/rel")], [f("/srv/token")])
    assert ops == [Bind("/srv/rel", True), Bind("/srv/token", False), Mask("/srv/token", False)]


def test_a_hidden_path_inside_a_masked_directory_is_not_masked_again() -> None:
    # Its mount point could not be made inside the empty, read-only mask (the zygote failed
    # to start with EROFS), and the directory's mask hides it already.
    ops = plan_root(
        [d("/srv/rel")],
        [f("/srv/rel/state/key"), d("/srv/rel/state"), f("/srv/rel/state-key")],
    )
    assert ops == [
        Bind("/srv/rel", True),
        Mask("/srv/rel/state", True),
        Mask("/srv/rel/state-key", False),
    ]


def test_duplicate_hidden_paths_give_one_mask() -> None:
    ops = plan_root([d("/srv")], [f("/srv/key"), f("/srv/key")])
    assert ops == [Bind("/srv", True), Mask("/srv/key", False)]


# -- invariants over random trees ---------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "ab", "a.b"])  # "ab" starts like "a": no prefix confusion
PATHS = st.lists(NAMES, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@st.composite
def trees(draw: st.DrawFn) -> tuple[list[Source], list[Source]]:
    """Sources and hidden paths of one consistent host tree: a path with anything under it is
    a directory; a leaf is a directory, a file or a symlink."""
    paths = draw(st.sets(PATHS, min_size=1, max_size=25))
    known = {p: d(p) for p in paths}
    for p in paths:
        if not any(inside(q, p) and q != p for q in paths):
            kind: Kind = draw(st.sampled_from(["dir", "file", "symlink"]))
            known[p] = Source(p, kind, "elsewhere" if kind == "symlink" else "")
    everything = sorted(known.values(), key=lambda s: s.path)
    sources = draw(st.lists(st.sampled_from(everything), max_size=12))
    hidden = draw(st.lists(st.sampled_from(everything), max_size=6))
    return sources, hidden


def check_plan(ops: list[MountOp], sources: list[Source], hidden: list[Source]) -> None:
    binds = [op for op in ops if isinstance(op, Bind)]
    masks = [op for op in ops if isinstance(op, Mask)]
    for op in ops:
        if isinstance(op, Bind | Symlink):
            # Never inside another bound path: each place is bound once.
            assert not any(inside(op.path, b.path) for b in binds if b is not op)
        else:
            assert any(inside(op.path, b.path) for b in binds)
            assert not any(inside(op.path, m.path) for m in masks if m is not op and m.is_dir)
    for i, op in enumerate(ops):
        before = ops[:i]
        # A mount point's parents exist first (binds before the masks inside them).
        assert not any(inside(op.path, o.path) for o in ops[i + 1 :] if isinstance(o, Bind))
        if isinstance(op, Mask):
            assert all(not isinstance(o, Mask) or o.path != op.path for o in before)
    assert len({op.path for op in ops if not isinstance(op, Mask)}) == len(ops) - len(masks)
    for source in sources:  # every source is in the root, as itself or inside a bind
        assert any(o.path == source.path for o in ops if not isinstance(o, Mask)) or any(
            inside(source.path, b.path) for b in binds
        )
    for secret in hidden:  # every hidden path a bind would show is under a mask
        if secret.kind != "symlink" and any(inside(secret.path, b.path) for b in binds):
            assert any(inside(secret.path, m.path) for m in masks if m.is_dir) or any(
                m.path == secret.path for m in masks
            )


@given(trees(), st.randoms(use_true_random=False))
def test_any_plan_binds_each_place_once_and_masks_every_shown_secret(
    tree: tuple[list[Source], list[Source]], shuffle: random.Random
) -> None:
    sources, hidden = tree
    ops = plan_root(sources, hidden)
    check_plan(ops, sources, hidden)
    shuffle.shuffle(sources)
    shuffle.shuffle(hidden)
    assert plan_root(sources, hidden) == ops  # the order of what was gathered changes nothing


# -- what exists on the host --------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """release/{main.py, state/key, key -> state/key}, elsewhere/secret, linked -> release,
    dangling -> nowhere, fifo."""
    tmp_path = tmp_path.resolve()  # so that only the links made here resolve elsewhere
    release = tmp_path / "release"
    (release / "state").mkdir(parents=True)
    (release / "main.py").write_text("def handler(body):\n    return body\n")
    (release / "state" / "key").write_text("secret")
    (release / "key").symlink_to("state/key")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_text("secret")
    (tmp_path / "linked").symlink_to(release)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


def test_describe_says_what_is_there(tree: Path) -> None:
    assert describe(tree / "release") == d(str(tree / "release"))
    assert describe(tree / "release" / "main.py") == f(str(tree / "release" / "main.py"))
    assert describe(tree / "release" / "key") == link(str(tree / "release" / "key"), "state/key")
    assert describe(tree / "dangling") == link(str(tree / "dangling"), str(tree / "nowhere"))
    assert describe(tree / "nowhere") is None
    assert describe(tree / "fifo") is None  # neither file, directory nor link: never bound


def test_describe_makes_a_relative_path_absolute(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree)
    assert describe("release/main.py") == f(str(tree / "release" / "main.py"))


def test_python_paths_hold_this_interpreter_and_tierfaas() -> None:
    paths = python_paths()
    assert sys.prefix in paths and sys.base_prefix in paths
    assert os.path.realpath(sys.executable) in paths
    package = Path(tierfaas.__file__).resolve()
    assert any(inside(str(package), p) for p in paths)


def test_python_paths_never_hold_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Named like a site directory, so that only the working-directory rule keeps it out.
    cwd = tmp_path / "site-packages"
    outside = tmp_path / "user" / "site-packages"
    cwd.mkdir()
    outside.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", ["", str(cwd), "site-packages", str(outside), *sys.path])
    paths = python_paths()
    assert str(cwd) not in paths
    assert "" not in paths and "site-packages" not in paths
    assert str(outside) in paths  # a site directory outside the prefixes is carried over


def test_gather_sources_finds_the_system_the_release_and_what_exists_of_extra(tree: Path) -> None:
    release = tree / "release"
    sources = gather_sources(release, extra=[str(tree / "linked"), str(tree / "nowhere")])
    by_path = {source.path: source for source in sources}
    assert by_path[str(release)] == d(str(release))
    assert by_path[str(tree / "linked")] == link(str(tree / "linked"), str(release))
    assert str(tree / "nowhere") not in by_path
    assert by_path["/usr"].kind == "dir"
    assert by_path["/etc/passwd"].kind in ("file", "symlink")
    assert sys.prefix in by_path


def test_gather_hidden_skips_none_and_missing_and_follows_symlinks(tree: Path) -> None:
    release = tree / "release"
    hidden = gather_hidden(
        [None, release / "key", tree / "elsewhere", tree / "nowhere", tree / "linked" / "main.py"]
    )
    assert hidden == [
        link(str(release / "key"), "state/key"),
        f(str(release / "state" / "key")),  # where the link leads: what a mask must cover
        d(str(tree / "elsewhere")),
        f(str(tree / "linked" / "main.py")),
        f(str(release / "main.py")),  # the same file through the linked directory
    ]


def test_a_symlinked_secret_inside_the_release_is_masked_where_it_leads(tree: Path) -> None:
    release = tree / "release"
    ops = plan_root(gather_sources(release), gather_hidden([release / "key"]))
    assert Bind(str(release), True) in ops
    assert [op for op in ops if isinstance(op, Mask)] == [Mask(str(release / "state/key"), False)]
