"""The call store on real SQLite files: what it keeps, group commit, trim, and that a commit
survives kill -9 of the process that made it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from tierfaas.calls.logstore import CallLog, Store
from tierfaas.calls.model import Call, Failure, Request, Result
from tierfaas.calls.store import CallStore, StoreClosed

# The node's store is the log (``CallLog``); the SQLite store (``CallStore``) stays for the
# one-time import of an older node's calls.db. Both keep the same contract.
KINDS = {"log": (CallLog, "calls.log"), "sqlite": (CallStore, "calls.db")}


def _call(n: int, **changes: object) -> Call:
    call = Call(
        call_id=f"a~b~{n:016x}",
        function="echo",
        accepted_at=1000.0 + n,
        due_at=1000.0 + n,
        node="a",
        request=Request(b"body %d" % n, "/x", "q=1", (("x-h", "v"),)),
    )
    return replace(call, **changes)  # type: ignore[arg-type]


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _open(kind: str, folder: Path, **settings: object) -> Store:
    cls, name = KINDS[kind]
    store: Store = cls(folder / name, **settings)
    store.open()
    return store


@pytest.fixture
def store(tmp_path: Path, kind: str) -> object:
    store = _open(kind, tmp_path, keep_s=100.0, keep_max=3)
    yield store
    store.close()


async def test_a_call_reads_back_as_written(store: Store) -> None:
    call = _call(1, idem_key="k", callback_url="http://127.0.0.1:9/cb")
    assert await store.insert([call]) == 1
    assert store.get(call.call_id) == call
    assert await store.insert([call]) == 0  # a second copy of the same call is ignored
    assert store.get("a~b~ffffffffffffffff") is None


async def test_a_final_record_never_changes_without_asking(store: Store) -> None:
    call = _call(1)
    await store.insert([call])
    done = replace(
        call, state="succeeded", attempts=1, finished_at=1010.0,
        result=Result(200, "text/plain", b"ok"),
    )  # fmt: skip
    assert await store.update(done, unless_final=True)
    dead = replace(call, state="dead", failure=Failure(500, "boom", "it broke"))
    assert not await store.update(dead, unless_final=True)
    assert store.get(call.call_id) == done
    assert await store.update(replace(done, state="queued", finished_at=None, result=None))
    assert store.get(call.call_id).state == "queued"  # type: ignore[union-attr]


async def test_keyed_calls_are_found_within_the_window(store: Store) -> None:
    await store.insert([_call(1, idem_key="k1"), _call(2, idem_key="k2")])
    found = store.find_keyed("echo", "k1", since=1000.0)
    assert found is not None and found.call_id == _call(1).call_id
    assert store.find_keyed("echo", "k1", since=1002.0) is None  # accepted before the window
    assert store.find_keyed("other", "k1", since=0.0) is None


async def test_lists_and_unfinished(store: Store) -> None:
    await store.insert([_call(n) for n in range(5)] + [_call(9, role="copy")])
    await store.update(replace(_call(0), state="dead", finished_at=1005.0))
    assert [c.call_id for c in store.listed(limit=2)] == [_call(4).call_id, _call(3).call_id]
    assert [c.call_id for c in store.listed(state="dead")] == [_call(0).call_id]
    assert len(store.unfinished("own")) == 4
    assert [c.call_id for c in store.unfinished("copy")] == [_call(9).call_id]
    assert store.counts()[("own", "queued")] == 4


async def test_trim_keeps_recent_and_bounded(store: Store) -> None:
    calls = [_call(n) for n in range(6)]
    await store.insert(calls)
    for n, call in enumerate(calls[:5]):
        await store.update(replace(call, state="succeeded", finished_at=1000.0 + 10 * n))
    # finished at 1000..1040; now 1125: older than 1025 go (3), then 2 finished are left <= 3
    assert await store.trim(now=1125.0) == 3
    assert store.get(calls[5].call_id) is not None  # unfinished own calls stay
    await store.insert([_call(n + 10, state="failed", finished_at=1100.0 + n) for n in range(3)])
    assert await store.trim(now=1125.0) == 2  # 5 finished: the 2 oldest go
    assert len(store.listed(limit=100)) == 4


async def test_group_commit_puts_concurrent_writes_in_few_transactions(store: Store) -> None:
    before = store.groups
    counts = await asyncio.gather(*(store.insert([_call(n)]) for n in range(200)))
    assert sum(counts) == 200
    assert store.groups - before < 100  # all submitted at once: they share commits


async def test_a_closed_store_refuses_writes(tmp_path: Path, kind: str) -> None:
    store = _open(kind, tmp_path)
    await store.insert([_call(1)])
    store.close()
    with pytest.raises(StoreClosed):
        store.insert([_call(2)])
    reopened = _open(kind, tmp_path)
    assert reopened.get(_call(1).call_id) is not None
    reopened.close()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tierfaas.calls.model import Call, Request
    from tierfaas.calls.logstore import CallLog
    from tierfaas.calls.store import CallStore

    async def main():
        store = {"log": CallLog, "sqlite": CallStore}[sys.argv[2]](Path(sys.argv[1]))
        store.open()
        n = 0
        async def one(n):
            call = Call(call_id=f"a~b~{n:016x}", function="f", accepted_at=float(n),
                        request=Request(b"x" * 200))
            await store.insert([call])
            sys.stdout.write(f"{call.call_id}\\n")
            sys.stdout.flush()
        while True:
            await asyncio.gather(*(one(n + i) for i in range(20)))
            n += 20

    asyncio.run(main())
    """
)


def test_what_was_committed_survives_kill_9(tmp_path: Path, kind: str) -> None:
    """A child writes calls as fast as it can and prints each id once its commit resolved;
    it is killed mid-write. Every printed id is in the reopened file."""
    path = tmp_path / KINDS[kind][1]
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), kind], stdout=subprocess.PIPE, text=True
    )
    confirmed: list[str] = []
    try:
        assert child.stdout is not None
        while len(confirmed) < 2000:
            line = child.stdout.readline()
            assert line, "the writer exited early"
            confirmed.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()  # what it printed before the kill is confirmed too
        confirmed += [line for line in rest.split("\n") if line]
    finally:
        child.kill()
        child.wait(timeout=10)
    store = _open(kind, tmp_path)
    try:
        missing = [call_id for call_id in confirmed if store.get(call_id) is None]
        assert not missing, f"{len(missing)} of {len(confirmed)} confirmed calls were lost"
    finally:
        store.close()


async def test_outcomes_mark_copies_once_without_reading_them(store: Store) -> None:
    copy = _call(1, role="copy")
    await store.insert([copy, _call(2)])
    done = replace(copy, state="succeeded", attempts=1, finished_at=1010.0,
                   result=Result(200, "t", b"ok"))  # fmt: skip
    assert await store.record_outcomes([done, replace(_call(2), state="dead")]) == 1
    assert store.get(copy.call_id) == done
    assert store.get(_call(2).call_id).state == "queued"  # type: ignore[union-attr]  # own
    assert await store.record_outcomes([replace(done, state="dead")]) == 0  # final once
    again = replace(done, state="queued", finished_at=None, result=None, attempts=0)
    assert await store.record_outcomes([again]) == 1  # an operator's retry
    assert store.get(copy.call_id) == again


async def test_the_wal_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    """The write connection's automatic checkpoint is off (it would fsync on the event loop):
    the checkpoint thread copies the WAL into the database file instead."""
    store = CallStore(tmp_path / "calls.db", checkpoint_every_s=0.02)
    store.open()
    try:
        body = b"x" * 2048
        await store.insert([_call(n, request=Request(body)) for n in range(1000)])
        deadline = asyncio.get_running_loop().time() + 10
        while (tmp_path / "calls.db").stat().st_size < 1_000_000:  # all of it still in the WAL
            assert asyncio.get_running_loop().time() < deadline, "no checkpoint in 10 s"
            await asyncio.sleep(0.02)
    finally:
        store.close()


async def test_a_group_of_final_records_changes_only_the_unfinished_calls(
    store: Store,
) -> None:
    await store.insert([_call(n) for n in range(3)])
    done = [replace(_call(n), state="succeeded", attempts=1, finished_at=1010.0) for n in range(3)]
    assert await store.update_many(done[:1], unless_final=True) == [True]
    unknown = replace(_call(7), state="dead")
    dead = replace(done[0], state="dead")
    changed = await store.update_many([dead, done[1], unknown, done[2]], unless_final=True)
    assert changed == [False, True, False, True]  # final once; an unknown call is no change
    assert store.get(done[0].call_id) == done[0] and store.get(done[2].call_id) == done[2]
    twice = [replace(_call(4), attempts=1), replace(_call(4), attempts=2)]
    await store.insert([_call(4)])
    assert await store.update_many(twice, unless_final=True) == [True, True]
    assert store.get(_call(4).call_id).attempts == 2  # type: ignore[union-attr]
