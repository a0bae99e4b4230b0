"""What the call log (``logstore.CallLog``) adds to the store contract that
test_call_store.py checks for both stores: a torn tail is cut at open, a failed write keeps
nothing of its group, compaction keeps every call, and an older node's calls.db is taken
over once."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tierfaas.calls import logstore
from tierfaas.calls.logstore import CallLog, StoreFailed
from tierfaas.calls.model import Call, Request, Result
from tierfaas.calls.store import CallStore, StoreClosed


def _call(n: int, **changes: object) -> Call:
    call = Call(
        call_id=f"a~b~{n:016x}", function="echo", accepted_at=1000.0 + n, due_at=1000.0 + n,
        node="a", request=Request(b"body %d" % n, "/x", "q=1", (("x-h", "v"),)),
    )  # fmt: skip
    return replace(call, **changes)  # type: ignore[arg-type]


def _done(n: int) -> Call:
    return replace(_call(n), state="succeeded", attempts=1, finished_at=1100.0 + n,
                   result=Result(200, "text/plain", b"ok %d" % n))  # fmt: skip


async def test_a_torn_tail_is_cut_and_the_log_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "calls.log"
    log = CallLog(path)
    log.open()
    await log.insert([_call(1), _call(2)])
    await log.update(_done(1), unless_final=True)
    log.close()
    whole = path.stat().st_size
    with open(path, "ab") as file:  # a crash mid-write: half of the next frame
        file.write(logstore._frame(logstore._packb([0, "a~b~x", "echo"]))[:9])
    reopened = CallLog(path)
    reopened.open()
    assert path.stat().st_size == whole
    assert reopened.get(_call(1).call_id) == _done(1)
    assert reopened.get(_call(2).call_id) == _call(2)
    await reopened.insert([_call(3)])
    reopened.close()
    again = CallLog(path)
    again.open()
    assert [c.call_id for c in again.unfinished("own")] == [_call(2).call_id, _call(3).call_id]
    again.close()


async def test_a_failed_write_keeps_nothing_of_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = CallLog(tmp_path / "calls.log")
    log.open()
    await log.insert([_call(1)])
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StoreFailed):
        await log.insert([_call(2)])
    monkeypatch.setattr(os, "write", real_write)
    assert log.get(_call(2).call_id) is None  # undone, as a rolled back transaction
    assert log.get(_call(1).call_id) == _call(1)
    assert await log.insert([_call(2)]) == 1
    log.close()


async def test_compaction_keeps_every_call_and_shrinks_the_log(tmp_path: Path) -> None:
    path = tmp_path / "calls.log"
    log = CallLog(path, keep_s=1e9, keep_max=1000, compact_min_bytes=1)
    log.open()
    await log.insert([_call(n, idem_key=f"k{n}") for n in range(50)])
    for n in range(40):  # dead frames: updates superseded, and deleted calls
        await log.update(replace(_call(n), attempts=1), unless_final=True)
        await log.update(_done(n), unless_final=True)
    await log.delete([_call(n).call_id for n in range(30)])
    before = path.stat().st_size
    expected = {n: log.get(_call(n).call_id) for n in range(30, 50)}
    await log.trim(now=2000.0)
    assert log.compacting is not None
    await log.compacting
    assert log.compactions == 1 and path.stat().st_size < before / 2
    await log.insert([_call(60)])  # appends after the compaction land in the new file
    for n, call in expected.items():
        assert log.get(_call(n).call_id) == call
    log.close()
    reopened = CallLog(path)
    reopened.open()
    for n, call in expected.items():
        assert reopened.get(_call(n).call_id) == call
    assert reopened.get(_call(60).call_id) == _call(60)
    assert reopened.get(_call(5).call_id) is None
    found = reopened.find_keyed("echo", "k45", since=0.0)
    assert found is not None and found.call_id == _call(45).call_id
    reopened.close()


async def test_an_older_nodes_sqlite_store_is_taken_over_once(tmp_path: Path) -> None:
    old = CallStore(tmp_path / "calls.db")
    old.open()
    await old.insert([_call(1), _call(2, role="copy")])
    await old.update(_done(1))
    old.close()
    log = CallLog(tmp_path / "calls.log")
    log.open()
    assert log.get(_call(1).call_id) == _done(1)
    assert log.get(_call(2).call_id) == _call(2, role="copy")
    log.close()
    assert not (tmp_path / "calls.db").exists()
    assert (tmp_path / "calls.db.imported").exists()
    reopened = CallLog(tmp_path / "calls.log")
    reopened.open()
    assert len(reopened.counts()) == 2
    reopened.close()


async def test_writes_during_a_compaction_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compaction copies a few calls per turn of the loop; what is inserted, updated and
    deleted between its turns is in the compacted log too, and nothing else."""
    monkeypatch.setattr(logstore, "COMPACT_SLICE", 3)
    path = tmp_path / "calls.log"
    log = CallLog(path, keep_s=1e9, keep_max=1000, compact_min_bytes=1)
    log.open()
    await log.insert([_call(n) for n in range(30)])
    for n in range(30):  # dead frames: each update supersedes the one before
        for attempts in range(1, 8):
            await log.update(replace(_call(n), attempts=attempts), unless_final=True)
    await log.trim(now=2000.0)
    compacting = log.compacting
    assert compacting is not None
    n = 100
    while not compacting.done():  # one change per turn while it copies
        await log.update(_done(n % 30), unless_final=True)
        await log.insert([_call(n)])
        await log.delete([_call(n - 100 + 10).call_id] if n < 110 else [])
        n += 1
    await compacting
    assert log.compactions == 1 and n > 102  # the changes did interleave with its turns
    expected = {call_id: log.get(call_id) for call_id in list(log._entries)}
    assert _call(10).call_id not in expected and _call(100).call_id in expected
    log.close()
    reopened = CallLog(path)
    reopened.open()
    assert {call_id: reopened.get(call_id) for call_id in list(reopened._entries)} == expected
    reopened.close()


async def test_calls_read_right_across_compactions(tmp_path: Path) -> None:
    """Entries follow their frames from one compaction to the next (their offsets are moved
    lazily): every call reads as written after each of three, and after a reopen."""
    path = tmp_path / "calls.log"
    log = CallLog(path, keep_s=1e9, keep_max=1000, compact_min_bytes=1)
    log.open()
    await log.insert([_call(n) for n in range(20)])
    for round_ in range(3):
        for n in range(20):
            for attempts in range(1, 6):
                await log.update(replace(_call(n), attempts=attempts + round_), unless_final=True)
        await log.insert([_call(100 + round_)])
        await log.trim(now=2000.0)
        assert log.compacting is not None
        await log.compacting
        for n in range(20):
            assert log.get(_call(n).call_id) == replace(_call(n), attempts=5 + round_)
    assert log.compactions == 3
    log.close()
    reopened = CallLog(path)
    reopened.open()
    assert reopened.get(_call(7).call_id) == replace(_call(7), attempts=7)
    assert reopened.get(_call(102).call_id) == _call(102)
    reopened.close()


async def test_a_write_the_close_did_not_take_fails(tmp_path: Path) -> None:
    """Submitted before the close: written by it, and confirmed. Submitted while a close in
    another thread was under way (the file closed before the turn's write): never confirmed."""
    log = CallLog(tmp_path / "calls.log")
    log.open()
    first = log.insert([_call(1)])
    log.close()
    assert await first == 1
    reopened = CallLog(tmp_path / "calls.log")
    reopened.open()
    assert reopened.get(_call(1).call_id) == _call(1)
    late = reopened.insert([_call(2)])
    os.close(reopened._fd)  # what a close in another thread does between the two
    reopened._fd = -1
    with pytest.raises(StoreClosed):
        await late
