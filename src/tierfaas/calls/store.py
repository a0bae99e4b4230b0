"""``CallStore``: the node's calls in SQLite (WAL mode), one file in its data dir.

Theory of operation. Writes commit in groups on the event loop's thread: every write
submitted during one turn of the loop goes into one transaction at the end of that turn
(``_hand_over``), so a burst of accepts costs one WAL append per group rather than per call.
A write's future resolves once its group is committed, and only then may the caller act on
it (answer 202, tell a peer). Reads use a second connection, also on the loop: WAL readers
never wait for the writer, and see every committed group.

Why on the loop and not on a writer thread: with ``synchronous=NORMAL`` a commit is a
``write()`` into the OS's page cache (no fsync), tens of microseconds; a writer thread made
every group pay thread hand-offs instead, and worse, Python's sqlite3 releases the GIL around
each statement, so under load the writer waited for the busy loop's GIL (up to the 5 ms
switch interval) once per statement: that, not the disk, was most of an accept's latency
(profiled with py-spy; measured in docs/architecture.md). The one slow part of WAL, the
checkpoint (it copies the WAL into the database file and fsyncs it), runs on a thread of its
own (``_checkpoint_loop``, ``PASSIVE``: it never blocks a commit); the write connection's
automatic checkpoint is off.

Durability: in WAL mode ``synchronous=NORMAL`` syncs the WAL only at checkpoints, so a commit
survives ``kill -9`` of the process (its pages are in the OS) but not the loss of the machine;
the second copy on another node covers that. ``FULL`` syncs every group (measured in
docs/architecture.md: it costs about an order of magnitude of accepts/s on a busy disk; with
FULL the fsync runs on the loop).

Rows hold the node's own calls (``role = 'own'``) and the copies it holds for other nodes
(``'copy'``). Finished calls are kept ``keep_s`` and at most ``keep_max`` of them, oldest
finished first (``trim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tierfaas.calls.model import Call, Failure, Request, Result

log = logging.getLogger("tierfaas.calls")

Synchronous = Literal["NORMAL", "FULL"]
_FINAL_SQL = "('succeeded', 'failed', 'dead')"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    role TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    accepted_at REAL NOT NULL,
    due_at REAL NOT NULL,
    finished_at REAL,
    node TEXT NOT NULL,
    idem_key TEXT,
    callback_url TEXT,
    callback_state TEXT,
    callback_attempts INTEGER NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    result_status INTEGER,
    result_type TEXT,
    result_body BLOB,
    error TEXT,
    error_message TEXT,
    error_status INTEGER
);
CREATE INDEX IF NOT EXISTS calls_state ON calls (role, state);
CREATE INDEX IF NOT EXISTS calls_keyed ON calls (function, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS calls_finished ON calls (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS calls_accepted ON calls (accepted_at);
"""
_COLUMNS = (
    "call_id, function, role, state, attempts, accepted_at, due_at, finished_at, node, "
    "idem_key, callback_url, callback_state, callback_attempts, path, query, headers, body, "
    "result_status, result_type, result_body, error, error_message, error_status"
)
_INSERT = f"INSERT OR IGNORE INTO calls ({_COLUMNS}) VALUES ({', '.join('?' * 23)})"
# What changes after the accept (never the request: a body is written once).
_UPDATE = (
    "UPDATE calls SET role = ?, state = ?, attempts = ?, due_at = ?, finished_at = ?, "
    "node = ?, callback_state = ?, callback_attempts = ?, result_status = ?, result_type = ?, "
    "result_body = ?, error = ?, error_message = ?, error_status = ? WHERE call_id = ?"
)

_IN_CHUNK = 500  # ids in one ``IN (...)``: far under SQLite's limit on parameters

_OUTCOME = (
    "UPDATE calls SET state = ?, attempts = ?, due_at = ?, finished_at = ?, "
    "callback_state = ?, callback_attempts = ?, result_status = ?, result_type = ?, "
    "result_body = ?, error = ?, error_message = ?, error_status = ? "
    "WHERE call_id = ? AND role = 'copy'"
)


def _outcome(call: Call) -> tuple[Any, ...]:
    r, f = call.result, call.failure
    return (
        call.state, call.attempts, call.due_at, call.finished_at, call.callback_state,
        call.callback_attempts,
        r.status if r else None, r.content_type if r else None, r.body if r else None,
        f.error if f else None, f.message if f else None, f.status if f else None,
        call.call_id,
    )  # fmt: skip


_PLAIN = re.compile(r"[ !#-\[\]-~]*")  # printable ASCII but '"' and '\\': JSON as it is


def _headers_json(headers: tuple[tuple[str, str], ...]) -> str:
    """``json.dumps(headers)``, formatted directly when no character needs escaping (the
    common case; json.dumps was a few percent of an accept's loop time on each node)."""
    if not headers:
        return "[]"
    for name, value in headers:
        if _PLAIN.fullmatch(name) is None or _PLAIN.fullmatch(value) is None:
            return json.dumps(headers)
    return "[" + ", ".join(f'["{name}", "{value}"]' for name, value in headers) + "]"


def _row(call: Call) -> tuple[Any, ...]:
    r, f = call.result, call.failure
    return (
        call.call_id, call.function, call.role, call.state, call.attempts, call.accepted_at,
        call.due_at, call.finished_at, call.node, call.idem_key, call.callback_url,
        call.callback_state, call.callback_attempts, call.request.path, call.request.query,
        _headers_json(call.request.headers), call.request.body,
        r.status if r else None, r.content_type if r else None, r.body if r else None,
        f.error if f else None, f.message if f else None, f.status if f else None,
    )  # fmt: skip


def _changes(call: Call) -> tuple[Any, ...]:
    r, f = call.result, call.failure
    return (
        call.role, call.state, call.attempts, call.due_at, call.finished_at, call.node,
        call.callback_state, call.callback_attempts,
        r.status if r else None, r.content_type if r else None, r.body if r else None,
        f.error if f else None, f.message if f else None, f.status if f else None,
        call.call_id,
    )  # fmt: skip


def _call(row: sqlite3.Row) -> Call:
    result = None
    if row["result_status"] is not None:
        result = Result(row["result_status"], row["result_type"] or "", row["result_body"] or b"")
    failure = None
    if row["error"] is not None:
        failure = Failure(row["error_status"] or 0, row["error"], row["error_message"] or "")
    headers = tuple((str(k), str(v)) for k, v in json.loads(row["headers"]))
    return Call(
        call_id=row["call_id"],
        function=row["function"],
        accepted_at=row["accepted_at"],
        request=Request(row["body"], row["path"], row["query"], headers),
        role=row["role"],
        state=row["state"],
        attempts=row["attempts"],
        due_at=row["due_at"],
        finished_at=row["finished_at"],
        node=row["node"],
        idem_key=row["idem_key"],
        callback_url=row["callback_url"],
        callback_state=row["callback_state"],
        callback_attempts=row["callback_attempts"],
        result=result,
        failure=failure,
    )


Op = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _Write:
    op: Op
    future: asyncio.Future[Any] | None
    loop: asyncio.AbstractEventLoop | None


class StoreClosed(RuntimeError):
    """A write reached a store that is closed (the node is stopping)."""


class CallStore:
    """``open()`` creates or reopens ``path``; the write methods return futures resolved once
    committed (call them on the event loop); reads answer from what is committed."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "NORMAL",
        keep_s: float = 86400.0,
        keep_max: int = 100_000,
        max_group: int = 1000,
        checkpoint_every_s: float = 0.5,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.keep_s = keep_s
        self.keep_max = keep_max
        self.max_group = max_group
        self.checkpoint_every_s = checkpoint_every_s
        self.groups = 0  # committed transactions (for tests and metrics)
        self._outbox: list[_Write] = []  # this turn's writes
        self._handing_over = False
        self._closing = True
        self._lock = threading.Lock()  # a commit at ``close`` may come from another thread
        self._last_error: sqlite3.Error = sqlite3.Error("no error")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Creates the file (and its folder) if need be and starts the checkpoint thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        writer = self._connect()
        writer.executescript(_SCHEMA)
        writer.execute("PRAGMA wal_autocheckpoint=0")  # ``_checkpoint_loop`` does it
        self._writer = writer
        self._reader = self._connect()
        self._closing = False
        self._stop.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(self._connect(),),
            name="tierfaas-calls-checkpoint", daemon=True,
        )  # fmt: skip
        self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
        connection.execute("PRAGMA busy_timeout=5000")
        return connection

    def close(self) -> None:
        """Commits what was submitted, then closes (blocks until the last checkpoint)."""
        self._closing = True
        self._flush()  # submitted before the close: committed too
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None
        with self._lock:
            for connection in (self._writer, self._reader):
                if connection is not None:
                    connection.close()
            self._writer = self._reader = None

    def _checkpoint_loop(self, connection: sqlite3.Connection) -> None:
        """Copies the WAL into the database file every ``checkpoint_every_s`` (PASSIVE: it
        takes what no reader still needs and never blocks a commit), once more at close."""
        try:
            while True:
                stopping = self._stop.wait(self.checkpoint_every_s)
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("checkpointing the call store failed: %s", exc)
                if stopping:
                    return
        finally:
            connection.close()

    # -- the writer ----------------------------------------------------------------------------

    def _submit(self, op: Op) -> asyncio.Future[Any]:
        if self._closing:
            raise StoreClosed("the call store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        # The writes of one turn of the event loop commit together at its end.
        self._outbox.append(_Write(op, future, loop))
        if not self._handing_over:
            self._handing_over = True
            loop.call_soon(self._hand_over)
        return future

    def _hand_over(self) -> None:
        self._handing_over = False
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            while self._outbox and self._writer is not None:
                group = self._outbox[: self.max_group]
                del self._outbox[: self.max_group]
                self._commit(self._writer, group)

    def _commit(self, connection: sqlite3.Connection, group: list[_Write]) -> None:
        outcomes = self._transaction(connection, group)
        if outcomes is None and len(group) > 1:
            # One write failed the group (none of this store's statements should): each
            # write again in a transaction of its own, so only that one fails.
            outcomes = []
            for write in group:
                alone = self._transaction(connection, [write])
                outcomes += alone if alone is not None else [(False, self._last_error)]
        elif outcomes is None:
            outcomes = [(False, self._last_error)]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for write, (ok, value) in zip(group, outcomes, strict=True):
            if write.future is not None and write.loop is not None:
                by_loop.setdefault(write.loop, []).append((write.future, ok, value))
        for loop, settled in by_loop.items():
            if _running_loop() is loop:
                _settle(settled)
                continue
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has nobody waiting
                loop.call_soon_threadsafe(_settle, settled)

    def _transaction(
        self, connection: sqlite3.Connection, group: list[_Write]
    ) -> list[tuple[bool, Any]] | None:
        """Runs ``group`` in one transaction: each write's result, or None (rolled back,
        the error in ``_last_error``). No savepoint per write: each statement more costs
        every accept of the group."""
        try:
            connection.execute("BEGIN IMMEDIATE")
            outcomes = [(True, write.op(connection)) for write in group]
            connection.execute("COMMIT")
        except sqlite3.Error as exc:  # a bad write, or the disk (full, I/O error)
            log.error("the call store could not commit %d writes: %s", len(group), exc)
            self._last_error = exc
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            return None
        self.groups += 1
        return outcomes

    # -- writes (each resolves once committed) -------------------------------------------------

    def insert(self, calls: Sequence[Call]) -> asyncio.Future[int]:
        """Keeps ``calls`` (a call already kept is left as it is); resolves to how many were
        new."""
        rows = [_row(call) for call in calls]

        def op(c: sqlite3.Connection) -> int:
            before = c.total_changes
            c.executemany(_INSERT, rows)
            return c.total_changes - before

        return self._submit(op)

    def update(self, call: Call, *, unless_final: bool = False) -> asyncio.Future[bool]:
        """Writes ``call``'s changes (not its request); with ``unless_final`` only if the kept
        call is not final yet (a record turns final once). Resolves to whether it changed."""
        changes = _changes(call)
        sql = _UPDATE + (f" AND state NOT IN {_FINAL_SQL}" if unless_final else "")

        def op(c: sqlite3.Connection) -> bool:
            return c.execute(sql, changes).rowcount > 0

        return self._submit(op)

    def update_many(
        self, calls: Sequence[Call], *, unless_final: bool = False
    ) -> asyncio.Future[list[bool]]:
        """``update`` of each of ``calls`` in one write: resolves to whether each changed.
        Two statements for the group, not one per call: which of them may change (one
        SELECT), then one ``executemany`` of those (its guard kept)."""
        rows = [_changes(call) for call in calls]
        sql = _UPDATE + (f" AND state NOT IN {_FINAL_SQL}" if unless_final else "")
        where = f" AND state NOT IN {_FINAL_SQL}" if unless_final else ""

        def op(c: sqlite3.Connection) -> list[bool]:
            wanted = [row[-1] for row in rows]
            if len(set(wanted)) < len(wanted):  # a call twice: in order, one by one
                return [c.execute(sql, row).rowcount > 0 for row in rows]
            open_: set[str] = set()
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                found = c.execute(
                    f"SELECT call_id FROM calls WHERE call_id IN ({marks}){where}", chunk
                )
                open_.update(call_id for (call_id,) in found)
            changed = [call_id in open_ for call_id in wanted]
            c.executemany(sql, [row for row, ok in zip(rows, changed, strict=True) if ok])
            return changed

        return self._submit(op)

    def record_outcomes(self, calls: Sequence[Call]) -> asyncio.Future[int]:
        """Marks this node's copies of ``calls`` as their origin recorded them, without
        reading them first: a final state only over an unfinished copy (a record turns final
        once), a ``queued`` one (an operator's retry) over any. Resolves to the copies
        changed."""
        final = [_outcome(c) for c in calls if c.state != "queued"]
        again = [_outcome(c) for c in calls if c.state == "queued"]

        def op(c: sqlite3.Connection) -> int:
            before = c.total_changes
            if final:
                c.executemany(_OUTCOME + f" AND state NOT IN {_FINAL_SQL}", final)
            if again:
                c.executemany(_OUTCOME, again)
            return c.total_changes - before

        return self._submit(op)

    def delete(self, call_ids: Iterable[str]) -> asyncio.Future[int]:
        ids = [(call_id,) for call_id in call_ids]

        def op(c: sqlite3.Connection) -> int:
            before = c.total_changes
            c.executemany("DELETE FROM calls WHERE call_id = ?", ids)
            return c.total_changes - before

        return self._submit(op)

    def trim(self, now: float) -> asyncio.Future[int]:
        """Drops finished calls older than ``keep_s``, then the oldest finished ones past
        ``keep_max``, and copies unfinished for ``keep_s`` (their outcome was lost: the origin
        has long run them). Resolves to how many rows went."""
        keep_s, keep_max = self.keep_s, self.keep_max

        def op(c: sqlite3.Connection) -> int:
            before = c.total_changes
            c.execute(
                f"DELETE FROM calls WHERE state IN {_FINAL_SQL} AND finished_at < ?",
                (now - keep_s,),
            )
            c.execute("DELETE FROM calls WHERE role = 'copy' AND accepted_at < ?", (now - keep_s,))
            (finished,) = c.execute(
                f"SELECT count(*) FROM calls WHERE state IN {_FINAL_SQL}"
            ).fetchone()
            if finished > keep_max:
                c.execute(
                    "DELETE FROM calls WHERE call_id IN (SELECT call_id FROM calls WHERE "
                    f"state IN {_FINAL_SQL} ORDER BY finished_at LIMIT ?)",
                    (finished - keep_max,),
                )
            return c.total_changes - before

        return self._submit(op)

    # -- reads (committed state) -------------------------------------------------------------------

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        if self._reader is None:
            raise StoreClosed("the call store is closed")
        return self._reader.execute(sql, args).fetchall()

    def get(self, call_id: str) -> Call | None:
        rows = self._read("SELECT * FROM calls WHERE call_id = ?", (call_id,))
        return _call(rows[0]) if rows else None

    def find_keyed(self, function: str, key: str, since: float) -> Call | None:
        """The first call of ``function`` with idempotency key ``key`` accepted at or after
        ``since`` that this node keeps (own or copy), if any."""
        rows = self._read(
            "SELECT * FROM calls WHERE function = ? AND idem_key = ? AND accepted_at >= ? "
            "ORDER BY accepted_at LIMIT 1",
            (function, key, since),
        )
        return _call(rows[0]) if rows else None

    def everything(self) -> list[Call]:
        """Every call kept (to move them to another store), oldest first."""
        return [_call(row) for row in self._read("SELECT * FROM calls ORDER BY accepted_at")]

    def unfinished(self, role: str) -> list[Call]:
        """The calls of ``role`` not final yet, oldest first."""
        return [
            _call(row)
            for row in self._read(
                f"SELECT * FROM calls WHERE role = ? AND state NOT IN {_FINAL_SQL} "
                "ORDER BY accepted_at",
                (role,),
            )
        ]

    def pending_callbacks(self) -> list[Call]:
        """This node's finished calls whose callback is not delivered (nor given up) yet."""
        return [
            _call(row)
            for row in self._read(
                f"SELECT * FROM calls WHERE role = 'own' AND state IN {_FINAL_SQL} "
                "AND callback_state = 'pending' ORDER BY finished_at"
            )
        ]

    def listed(
        self, *, state: str | None = None, function: str | None = None, limit: int = 100
    ) -> list[Call]:
        """This node's own calls, newest first."""
        sql = "SELECT * FROM calls WHERE role = 'own'"
        args: list[Any] = []
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        if function is not None:
            sql += " AND function = ?"
            args.append(function)
        sql += " ORDER BY accepted_at DESC LIMIT ?"
        args.append(limit)
        return [_call(row) for row in self._read(sql, tuple(args))]

    def counts(self) -> dict[tuple[str, str], int]:
        """(role, state) -> rows."""
        rows = self._read("SELECT role, state, count(*) AS n FROM calls GROUP BY role, state")
        return {(row["role"], row["state"]): row["n"] for row in rows}


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
