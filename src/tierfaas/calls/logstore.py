"""``CallLog``: the node's calls in an append-only log file, indexed in memory.

Theory of operation. The file (``calls.log`` in the data dir) is a sequence of frames, each
``[length u32][crc32 u32][msgpack payload]``. Three kinds of record: ``PUT`` (a whole call,
its request included: written once, at the accept or a copy's arrival), ``SET`` (what changes
after the accept: state, attempts, times, node, callback, result or failure; never the
request) and ``DEL`` (calls dropped). A call is its last ``PUT`` overlaid with its last
``SET`` after it. The memory index holds, per call, where those two frames are and the few
fields the queries filter on (function, role, state, times, key, callback state), never a
body: a read ``pread``s the frames (from the page cache, in practice).

Writes are decided at once against the index (an insert of a kept call is ignored, a final
record is never overwritten unless asked), so every decision sees the writes before it; their
frames are appended to a buffer, and the writes submitted during one turn of the event loop
reach the file in one ``write()`` at the end of that turn (group commit). A write's future
resolves only after that ``write()`` (with ``FULL``, after its ``fdatasync`` too), and only
then may the caller act on it (answer 202, tell a peer).

Why not SQLite (``store.py``): an accepted call cost each node ~50 µs of its event loop's
CPU in SQLite for the insert and the final update (B-tree pages of the table and four
indexes rewritten into the WAL, then checkpointed), where a frame costs a ``packb``, a CRC
and its share of one ``write()``.

Durability as with SQLite's ``synchronous=NORMAL``: a ``write()`` that returned is in the
OS's page cache and survives ``kill -9`` of the process, not the loss of the machine (the
second copy on another node covers that); ``FULL`` syncs each group. A crash mid-``write()``
leaves a torn last frame: at open, the log is read up to the first frame that is incomplete
or fails its CRC, and cut there, so a torn tail is dropped, never misread (only the group
being written was torn, and none of its futures had resolved).

Bounds: finished calls are kept ``keep_s`` and at most ``keep_max``, oldest finished first,
copies never finished ``keep_s`` (``trim``, every minute); when the dead frames outweigh the
live ones (and the file is past ``compact_min_bytes``), ``trim`` starts a compaction: the
frames the index points at are copied into a new file, ``COMPACT_SLICE`` calls per turn of
the loop (out of a map of the old file, not decoded), then the frames appended meanwhile;
the new file is synced and renamed over the log (a crash mid-way leaves the old log whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgpack

from tierfaas.calls.model import Call, Failure, Request, Result
from tierfaas.calls.store import CallStore, StoreClosed, Synchronous

log = logging.getLogger("tierfaas.calls")

PUT, SET, DEL = 0, 1, 2
_HEAD = struct.Struct("<II")  # payload length, crc32 of the payload
_HEAD_SIZE = _HEAD.size
MAX_FRAME = 256 * 1024 * 1024  # a longer length field is a torn or foreign frame
COMPACT_SLICE = 2000  # calls copied per turn of the loop by a compaction (~2-4 ms)
_FINAL = frozenset(("succeeded", "failed", "dead"))
_packb = msgpack.Packer(use_bin_type=True).pack


class StoreFailed(StoreClosed):
    """The log could not be written (a full disk, an I/O error): nothing of the group is
    kept (the file is cut back to before it)."""


class _Entry:
    """Where one call's frames are, and what queries filter on (no body)."""

    __slots__ = (
        "accepted_at",
        "callback_state",
        "finished_at",
        "function",
        "gen",
        "idem_key",
        "node",
        "put_at",
        "put_len",
        "role",
        "set_at",
        "set_len",
        "state",
    )  # fmt: skip

    def __init__(self, put_at: int, put_len: int, call: Call) -> None:
        self.gen = 0  # the compactions its offsets have seen (``CallLog._locate``)
        self.put_at = put_at
        self.put_len = put_len
        self.set_at = -1
        self.set_len = 0
        self.function = call.function
        self.accepted_at = call.accepted_at
        self.idem_key = call.idem_key
        self.role = call.role
        self.state = call.state
        self.finished_at = call.finished_at
        self.node = call.node
        self.callback_state = call.callback_state


def _frame(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def _put(call: Call) -> bytes:
    r, f, q = call.result, call.failure, call.request
    return _frame(_packb([
        PUT, call.call_id, call.function, call.accepted_at, call.role, call.state,
        call.attempts, call.due_at, call.finished_at, call.node, call.idem_key,
        call.callback_url, call.callback_state, call.callback_attempts,
        None if r is None else (r.status, r.content_type, r.body),
        None if f is None else (f.status, f.error, f.message),
        q.body, q.path, q.query, q.headers,
    ]))  # fmt: skip


def _set(call: Call, role: str, node: str) -> bytes:
    r, f = call.result, call.failure
    return _frame(_packb([
        SET, call.call_id, role, call.state, call.attempts, call.due_at, call.finished_at,
        node, call.callback_state, call.callback_attempts,
        None if r is None else (r.status, r.content_type, r.body),
        None if f is None else (f.status, f.error, f.message),
    ]))  # fmt: skip


def _decode(put: list[Any], changes: list[Any] | None) -> Call:
    (_, call_id, function, accepted_at, role, state, attempts, due_at, finished_at, node,
     idem_key, callback_url, callback_state, callback_attempts, result, failure,
     body, path, query, headers) = put  # fmt: skip
    if changes is not None:
        (_, _, role, state, attempts, due_at, finished_at, node, callback_state,
         callback_attempts, result, failure) = changes  # fmt: skip
    return Call(
        call_id, function, accepted_at,
        Request(body, path, query, tuple((str(k), str(v)) for k, v in headers)),
        role, state, attempts, due_at, finished_at, node, idem_key, callback_url,
        callback_state, callback_attempts,
        None if result is None else Result(*result),
        None if failure is None else Failure(*failure),
    )  # fmt: skip


def read_frames(data: bytes | memoryview) -> tuple[list[tuple[int, int, list[Any]]], int]:
    """The whole frames at the start of ``data``: (offset, length, record) each, and where
    the first incomplete, corrupt or unreadable one begins (the end if none)."""
    frames: list[tuple[int, int, list[Any]]] = []
    at, end = 0, len(data)
    while at + _HEAD_SIZE <= end:
        size, crc = _HEAD.unpack_from(data, at)
        stop = at + _HEAD_SIZE + size
        if size > MAX_FRAME or stop > end:
            break
        payload = data[at + _HEAD_SIZE : stop]
        if zlib.crc32(payload) != crc:
            break
        try:
            record = msgpack.unpackb(payload, raw=False)
        except Exception:
            break
        if not isinstance(record, list) or not record or record[0] not in (PUT, SET, DEL):
            break
        frames.append((at, stop - at, record))
        at = stop
    return frames, at


class CallLog:
    """``open()`` reads (or creates) ``path``; the write methods return futures resolved
    once written (call them on the event loop); reads answer from what is written or
    submitted. The same interface as ``store.CallStore``."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "NORMAL",
        keep_s: float = 86400.0,
        keep_max: int = 100_000,
        compact_min_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.keep_s = keep_s
        self.keep_max = keep_max
        self.compact_min_bytes = compact_min_bytes
        self.groups = 0  # ``write()``s of groups (for tests and metrics)
        self.compactions = 0
        self.compacting: asyncio.Task[None] | None = None
        self._entries: dict[str, _Entry] = {}  # in the order first kept
        self._keyed: dict[tuple[str, str], list[str]] = {}
        self._fd = -1
        self._size = 0  # bytes in the file
        self._live = 0  # bytes of the frames the index points at
        self._gen = 0  # compactions of the file open now
        self._moves: tuple[int, dict[int, int], int, int] | None = None
        """The last compaction's (generation before it, old -> new offsets of the frames
        it copied, where its copy ended, how far the frames after moved)."""
        self._loads = 0
        self._buffer = bytearray()  # this turn's frames, at ``_size`` onwards
        self._waiting: list[tuple[asyncio.Future[Any], Any]] = []
        self._flushing = False
        self._closing = True
        self._lock = threading.Lock()  # ``close`` may come from another thread

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Reads the log (cutting a torn tail), or creates it; a ``calls.db`` left by the
        SQLite store of an older version is taken over once (then renamed ``.imported``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        legacy = self.path.with_name("calls.db")
        fresh = not self.path.exists()
        with contextlib.suppress(FileNotFoundError):  # a compaction cut off by a crash
            self.path.with_name(self.path.name + ".compact").unlink()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._load()
        self._closing = False
        if fresh and legacy.exists():
            self._import(legacy)

    def _load(self) -> None:
        with open(self.path, "rb") as file:
            data = file.read()
        frames, good = read_frames(data)
        if good < len(data):
            log.warning(
                "the call log %s ends with %d bytes of a torn or unreadable frame: cut off",
                self.path, len(data) - good,
            )  # fmt: skip
            os.ftruncate(self._fd, good)
        self._entries.clear()
        self._keyed.clear()
        self._size = good
        self._live = 0
        self._gen, self._moves = 0, None
        self._loads += 1
        for at, size, record in frames:
            self._apply(at, size, record)

    def _apply(self, at: int, size: int, record: list[Any]) -> None:
        """A frame read back from the file, into the index."""
        kind = record[0]
        if kind == PUT:
            if record[1] not in self._entries:
                self._index(record[1], _Entry(at, size, _decode(record, None)))
        elif kind == SET:
            entry = self._entries.get(record[1])
            if entry is not None:
                self._changed(entry, at, size, record[2], record[3], record[6], record[7],
                              record[8])  # fmt: skip
        else:
            for call_id in record[1]:
                self._drop(call_id)

    def _import(self, legacy: Path) -> None:
        old = CallStore(legacy)
        old.open()
        try:
            calls = old.everything()
        finally:
            old.close()
        for call in calls:
            if call.call_id not in self._entries:
                frame = _put(call)
                self._index(call.call_id, _Entry(self._append(frame), len(frame), call))
        self._write_out()
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{legacy}{suffix}")
            if part.exists():
                part.rename(Path(f"{part}.imported"))
        log.info("took over %d calls from the SQLite store %s", len(calls), legacy)

    def close(self) -> None:
        """Writes what was submitted, syncs it and closes."""
        self._closing = True
        with self._lock:
            if self._fd < 0:
                return
            self._write_out()
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    # -- the index -----------------------------------------------------------------------------

    def _index(self, call_id: str, entry: _Entry) -> None:
        entry.gen = self._gen
        self._entries[call_id] = entry
        self._live += entry.put_len
        if entry.idem_key is not None:
            self._keyed.setdefault((entry.function, entry.idem_key), []).append(call_id)

    def _changed(
        self, entry: _Entry, at: int, size: int, role: Any, state: Any,
        finished_at: float | None, node: str, callback_state: str | None,
    ) -> None:  # fmt: skip
        if entry.gen != self._gen:
            self._locate(entry)
        self._live += size - entry.set_len
        entry.set_at, entry.set_len = at, size
        entry.role, entry.state, entry.finished_at = role, state, finished_at
        entry.node, entry.callback_state = node, callback_state

    def _drop(self, call_id: str) -> bool:
        entry = self._entries.pop(call_id, None)
        if entry is None:
            return False
        self._live -= entry.put_len + entry.set_len
        if entry.idem_key is not None:
            same = self._keyed.get((entry.function, entry.idem_key))
            if same is not None:
                with contextlib.suppress(ValueError):
                    same.remove(call_id)
                if not same:
                    del self._keyed[(entry.function, entry.idem_key)]
        return True

    def _locate(self, entry: _Entry) -> None:
        """Brings ``entry``'s offsets to the file open now: a compaction moves every frame,
        and rather than rewrite 100,000 entries at once (~0.1-0.2 s of the loop, measured),
        each entry is moved when next used, or by the compaction a slice per turn after the
        swap; so offsets are at most one compaction old."""
        moves = self._moves
        if entry.gen == self._gen:
            return
        if moves is None or entry.gen != moves[0]:  # a bug: never read a frame from elsewhere
            raise RuntimeError(f"the call log lost track of a call's frames ({entry.gen})")
        _, moved, end, shift = moves
        at = entry.put_at
        entry.put_at = at + shift if at >= end else moved[at]
        at = entry.set_at
        if at >= end:
            entry.set_at = at + shift
        elif at >= 0:
            entry.set_at = moved[at]
        entry.gen = self._gen

    # -- the writer ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise StoreClosed("the call store is closed")

    def _append(self, frame: bytes) -> int:
        """Queues ``frame`` for this turn's ``write()``; returns its offset in the file."""
        at = self._size + len(self._buffer)
        self._buffer += frame
        return at

    def _resolve_later(self, value: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, value))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush)  # the end of this turn of the loop
        return future

    def _flush(self) -> None:
        self._flushing = False
        waiting, self._waiting = self._waiting, []
        with self._lock:
            if self._buffer and self._fd < 0:  # closed (from another thread) meanwhile
                self._buffer = bytearray()
                for future, _ in waiting:
                    if not future.done():
                        future.set_exception(StoreClosed("the call store closed before writing"))
                return
            try:
                self._write_out()
            except OSError as exc:
                failure: BaseException = StoreFailed(f"the call log could not be written: {exc}")
                for future, _ in waiting:
                    if not future.done():
                        future.set_exception(failure)
                return
        for future, value in waiting:
            if not future.done():
                future.set_result(value)

    def _write_out(self) -> None:
        """Writes the buffer; on a failure, cuts the file back and reads the index again
        (the group's decisions are undone, as a rolled back transaction's)."""
        if not self._buffer or self._fd < 0:
            return
        data, self._buffer = self._buffer, bytearray()
        try:
            _write_all(self._fd, data)
            if self.synchronous == "FULL":
                os.fdatasync(self._fd)
        except OSError as exc:
            log.error("the call log could not write %d bytes: %s", len(data), exc)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            self._load()
            raise
        self._size += len(data)
        self.groups += 1

    # -- writes (each resolves once written) -------------------------------------------------

    def insert(self, calls: Sequence[Call]) -> asyncio.Future[int]:
        """Keeps ``calls`` (a call already kept is left as it is); resolves to how many were
        new."""
        self._check_open()
        new = 0
        entries = self._entries
        for call in calls:
            if call.call_id in entries:
                continue
            frame = _put(call)
            self._index(call.call_id, _Entry(self._append(frame), len(frame), call))
            new += 1
        return self._resolve_later(new)

    def _update(self, call: Call, unless_final: bool) -> bool:
        entry = self._entries.get(call.call_id)
        if entry is None or (unless_final and entry.state in _FINAL):
            return False
        frame = _set(call, call.role, call.node)
        self._changed(entry, self._append(frame), len(frame), call.role, call.state,
                      call.finished_at, call.node, call.callback_state)  # fmt: skip
        return True

    def update(self, call: Call, *, unless_final: bool = False) -> asyncio.Future[bool]:
        """Writes ``call``'s changes (not its request); with ``unless_final`` only if the kept
        call is not final yet (a record turns final once). Resolves to whether it changed."""
        self._check_open()
        return self._resolve_later(self._update(call, unless_final))

    def update_many(
        self, calls: Sequence[Call], *, unless_final: bool = False
    ) -> asyncio.Future[list[bool]]:
        """``update`` of each of ``calls`` in one write: resolves to whether each changed."""
        self._check_open()
        return self._resolve_later([self._update(call, unless_final) for call in calls])

    def record_outcomes(self, calls: Sequence[Call]) -> asyncio.Future[int]:
        """Marks this node's copies of ``calls`` as their origin recorded them: a final state
        only over an unfinished copy (a record turns final once), a ``queued`` one (an
        operator's retry) over any. Resolves to the copies changed."""
        self._check_open()
        changed = 0
        for call in calls:
            entry = self._entries.get(call.call_id)
            if entry is None or entry.role != "copy":
                continue
            if call.state != "queued" and entry.state in _FINAL:
                continue
            frame = _set(call, "copy", entry.node)
            self._changed(entry, self._append(frame), len(frame), "copy", call.state,
                          call.finished_at, entry.node, call.callback_state)  # fmt: skip
            changed += 1
        return self._resolve_later(changed)

    def delete(self, call_ids: Iterable[str]) -> asyncio.Future[int]:
        self._check_open()
        gone = [call_id for call_id in call_ids if self._drop(call_id)]
        if gone:
            self._append(_frame(_packb([DEL, gone])))
        return self._resolve_later(len(gone))

    def trim(self, now: float) -> asyncio.Future[int]:
        """Drops finished calls older than ``keep_s``, then the oldest finished ones past
        ``keep_max``, and copies unfinished for ``keep_s`` (their outcome was lost: the origin
        has long run them); then compacts the log if it is mostly dead frames. Resolves to
        how many calls went."""
        self._check_open()
        before = now - self.keep_s
        gone: list[str] = []
        finished = 0
        for call_id, e in self._entries.items():
            if e.state in _FINAL:
                if e.finished_at is not None and e.finished_at < before:
                    gone.append(call_id)
                else:
                    finished += 1
            elif e.role == "copy" and e.accepted_at < before:
                gone.append(call_id)
        if finished > self.keep_max:
            expired = set(gone)
            oldest = heapq.nsmallest(
                finished - self.keep_max,
                (
                    (e.finished_at or 0.0, call_id)
                    for call_id, e in self._entries.items()
                    if e.state in _FINAL and call_id not in expired
                ),
            )  # fmt: skip
            gone += [call_id for _, call_id in oldest]
        future = self.delete(gone)
        if self.compacting is None and self._size + len(self._buffer) > max(
            self.compact_min_bytes, 2 * self._live
        ):
            self.compacting = asyncio.ensure_future(self._compact())
            self.compacting.add_done_callback(self._compacted)
        return future

    def _compacted(self, task: asyncio.Task[None]) -> None:
        self.compacting = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("compacting the call log failed: %s", task.exception())

    async def _compact(self) -> None:
        """Rewrites the log with the frames the index points at, a slice of calls per turn of
        the loop (``COMPACT_SLICE``: the loop is never held long), then the frames appended
        meanwhile, and renames it over the log once synced (a crash or a stop mid-way leaves
        the old log whole)."""
        self._write_out()
        loads, generation = self._loads, self._gen
        end = self._size  # frames from here on are copied as they are, at the swap
        old = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ) if end else None
        fresh = self.path.with_name(self.path.name + ".compact")
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        moved: dict[int, int] = {}  # old offset -> new offset, of the frames copied
        written = 0
        swapped = False
        try:
            # Ids, not (id, entry) pairs: 100,000 tuples kept at once cost a full garbage
            # collection (~0.1 s, measured); an entry kept since has its frames before ``end``.
            calls = list(self._entries)
            entries = self._entries
            for start in range(0, len(calls), COMPACT_SLICE):
                out = bytearray()
                for call_id in calls[start : start + COMPACT_SLICE]:
                    entry = entries.get(call_id)
                    if old is None or entry is None:
                        continue  # dropped since: its DEL frame is past ``end``
                    if entry.gen != generation:
                        self._locate(entry)
                    for at, size in ((entry.put_at, entry.put_len), (entry.set_at, entry.set_len)):
                        if 0 <= at < end:  # else written since: copied with the tail
                            moved[at] = written + len(out)
                            out += old[at : at + size]
                written += _write_all(fd, out)
                await asyncio.sleep(0)
                if self._closing or self._loads != loads:
                    return  # stopping, or the index was read again (a failed write)
            await asyncio.to_thread(os.fsync, fd)  # the bulk, off the loop
            with self._lock:
                if self._closing or self._fd < 0 or self._loads != loads:
                    return
                self._write_out()
                tail = os.pread(self._fd, self._size - end, end) if self._size > end else b""
                shift = written - end
                written += _write_all(fd, tail)
                if self.synchronous == "FULL":  # every acknowledged group is on the disk
                    os.fsync(fd)
                os.replace(fresh, self.path)
                swapped = True
                self._moves = (generation, moved, end, shift)
                self._gen = generation + 1
                os.close(self._fd)
                self._fd = fd
                self._size = written
                self.compactions += 1
            # The tail and the rename synced off the loop too: until then a power loss may
            # lose the tail, as it may lose any write not yet synced (``NORMAL``).
            await asyncio.to_thread(_sync_file_and_dir, fd, self.path.parent)
            # Every entry moved to the new file, a slice per turn; then the table goes.
            calls = list(self._entries)
            for start in range(0, len(calls), COMPACT_SLICE):
                for call_id in calls[start : start + COMPACT_SLICE]:
                    entry = entries.get(call_id)
                    if entry is not None and entry.gen != self._gen:
                        self._locate(entry)
                await asyncio.sleep(0)
            if self._gen == generation + 1 and self._loads == loads:
                self._moves = None
        finally:
            if old is not None:
                old.close()
            if not swapped:
                os.close(fd)
                with contextlib.suppress(OSError):
                    fresh.unlink()

    # -- reads (what was submitted) ------------------------------------------------------------

    def _frame_at(self, at: int, size: int) -> list[Any]:
        if at >= self._size:
            start = at - self._size
            payload = bytes(self._buffer[start + _HEAD_SIZE : start + size])
        else:
            payload = os.pread(self._fd, size - _HEAD_SIZE, at + _HEAD_SIZE)
        record: list[Any] = msgpack.unpackb(payload, raw=False)
        return record

    def _read(self, entry: _Entry) -> Call:
        if self._fd < 0:
            raise StoreClosed("the call store is closed")
        if entry.gen != self._gen:
            self._locate(entry)
        put = self._frame_at(entry.put_at, entry.put_len)
        changes = None if entry.set_at < 0 else self._frame_at(entry.set_at, entry.set_len)
        return _decode(put, changes)

    def get(self, call_id: str) -> Call | None:
        entry = self._entries.get(call_id)
        return None if entry is None else self._read(entry)

    def find_keyed(self, function: str, key: str, since: float) -> Call | None:
        """The first call of ``function`` with idempotency key ``key`` accepted at or after
        ``since`` that this node keeps (own or copy), if any."""
        found = [
            (self._entries[call_id].accepted_at, call_id)
            for call_id in self._keyed.get((function, key), ())
            if self._entries[call_id].accepted_at >= since
        ]
        return self.get(min(found)[1]) if found else None

    def unfinished(self, role: str) -> list[Call]:
        """The calls of ``role`` not final yet, oldest first."""
        chosen = [e for e in self._entries.values() if e.role == role and e.state not in _FINAL]
        chosen.sort(key=lambda e: e.accepted_at)
        return [self._read(e) for e in chosen]

    def pending_callbacks(self) -> list[Call]:
        """This node's finished calls whose callback is not delivered (nor given up) yet."""
        chosen = [
            e for e in self._entries.values()
            if e.role == "own" and e.state in _FINAL and e.callback_state == "pending"
        ]  # fmt: skip
        chosen.sort(key=lambda e: e.finished_at or 0.0)
        return [self._read(e) for e in chosen]

    def listed(
        self, *, state: str | None = None, function: str | None = None, limit: int = 100
    ) -> list[Call]:
        """This node's own calls, newest first."""
        chosen = [
            e for e in self._entries.values()
            if e.role == "own" and state in (None, e.state) and function in (None, e.function)
        ]  # fmt: skip
        chosen.sort(key=lambda e: e.accepted_at, reverse=True)
        return [self._read(e) for e in chosen[:limit]]

    def counts(self) -> dict[tuple[str, str], int]:
        """(role, state) -> calls."""
        counts: dict[tuple[str, str], int] = {}
        for e in self._entries.values():
            counts[(e.role, e.state)] = counts.get((e.role, e.state), 0) + 1
        return counts


def _write_all(fd: int, data: bytes | bytearray) -> int:
    view = memoryview(data)
    written = 0
    while written < len(data):
        written += os.write(fd, view[written:])
    return written


def _sync_file_and_dir(fd: int, folder: Path) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile: the close synced it
        os.fsync(fd)
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


Store = CallStore | CallLog
"""What the call service keeps its calls in (the node uses ``CallLog``)."""
