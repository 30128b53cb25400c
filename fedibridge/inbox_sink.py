"""The inbox's write path to the database: one batch of accepted activities, one transaction, on a thread.

This is the hottest write of the bridge (every signed POST waits for it before its 202), so it skips the
async engine: on the request loop, each driver round trip of a transaction (a dozen with aiosqlite) waited
behind every request handler that became ready meanwhile, and SQLAlchemy's per-row statement machinery
cost more CPU than the insert itself. A sink owns one connection on one thread and writes with the driver
directly; the request loop awaits one future per batch. On SQLite that thread is the store's writer thread
(sqlite_writer), so this process's two writers take turns there instead of in SQLite's busy handler.

- SQLite: the stdlib driver, one multi-row INSERT per batch.
- PostgreSQL: asyncpg on a loop only this thread runs; one `INSERT … SELECT FROM unnest(…)` per batch.

Values go through the columns' own bind processors (tables.inbox_items), so rows are stored exactly as the
SQLAlchemy path stores them (tests/test_intake.py compares both). Both insert with ON CONFLICT DO NOTHING
(ap_id is the only unique column written) and report which ap_ids were new (the rest are duplicates); the
statements are bulk_insert's.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Protocol

import asyncpg
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect, make_url

from .bulk_insert import postgres_insert_sql, sqlite_insert_sql
from .config import sqlalchemy_url
from .sqlite_writer import CLOSE_SECONDS
from .store import sqlite_path, sqlite_pragmas
from .tables import inbox_items
from .wakeup import CHANNEL, asyncpg_dsn

# What the inbox writes; the other columns keep their defaults (locked_until NULL, error NULL).
COLUMNS = ("ap_id", "type", "actor", "key_owner", "payload", "received_at", "state", "attempts", "next_attempt_at")
Row = dict[str, Any]  # COLUMNS → values; "payload" is already JSON text
CONNECT_TIMEOUT = 5.0  # seconds to (re)connect to PostgreSQL before the batch fails as unavailable
COMMAND_TIMEOUT = 8.0  # seconds one batch may take on PostgreSQL (a server that stopped answering)


class _Sink(Protocol):
    def prepare(self, rows: list[Row]) -> Any: ...  # on the request loop (it holds the GIL anyway)
    def write(self, n: int, params: Any) -> set[str]: ...  # on the writer thread
    def checkpoint(self, full: bool) -> None: ...  # SQLite: fold the WAL back; nothing on PostgreSQL
    def close(self) -> None: ...
    def abort(self) -> None: ...  # drop a connection that failed, without waiting on it


def _processors(dialect: Dialect) -> list[Any]:
    """Each column's bind processor (None for the payload: it arrives as JSON text already)."""
    procs = []
    for name in COLUMNS:
        procs.append(None if name == "payload" else inbox_items.c[name].type.bind_processor(dialect))
    return procs


class _SqliteSink:
    """Stdlib sqlite3 on the writer thread: one multi-row INSERT … RETURNING per batch.

    The thread does nothing but the three driver calls (execute, fetchall, commit), which release the GIL
    while SQLite works: every Python step there would have to win the GIL back from the request loop,
    and each such handoff costs more than the step itself.
    """

    def __init__(self, database_url: str) -> None:
        path = sqlite_path(database_url)
        if path is None:
            raise ValueError("the inbox writer needs an SQLite file")
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        sqlite_pragmas(self._conn, None)
        self._convert = list(zip(COLUMNS, _processors(sqlite.dialect()), strict=True))

    def prepare(self, rows: list[Row]) -> list[Any]:
        return [row[n] if p is None else p(row[n]) for row in rows for n, p in self._convert]

    def write(self, n: int, params: list[Any]) -> set[str]:
        try:
            sql = sqlite_insert_sql(inbox_items.name, COLUMNS, "ap_id", n)
            new = {ap_id for (ap_id,) in self._conn.execute(sql, params).fetchall()}
            self._conn.commit()
            return new
        except sqlite3.Error:
            self._conn.rollback()
            raise

    def checkpoint(self, full: bool) -> None:
        """Copy the WAL into the database. PASSIVE after a burst (never waits on readers); TRUNCATE after
        SQLITE_FULL, which also shrinks the WAL file to nothing so the space it took is free again."""
        if not full:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            return
        # TRUNCATE holds the write lock while it waits for readers: wait briefly, never the usual 30 s.
        self._conn.execute("PRAGMA busy_timeout=1000")
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            self._conn.execute("PRAGMA busy_timeout=30000")

    def close(self) -> None:
        self._conn.close()

    def abort(self) -> None:
        try:
            self._conn.rollback()
        finally:
            self._conn.close()


class _PostgresSink:
    _SQL = postgres_insert_sql(inbox_items, COLUMNS, "ap_id")

    def __init__(self, database_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        dsn = asyncpg_dsn(make_url(sqlalchemy_url(database_url)))
        try:  # bounded: an unreachable server must turn into a 503 soon, not a hung request
            self._conn: asyncpg.Connection = self._loop.run_until_complete(
                asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT))
        except BaseException:
            self._loop.close()
            raise
        self._convert = list(zip(COLUMNS, _processors(_pg_dialect()), strict=True))

    def prepare(self, rows: list[Row]) -> list[list[Any]]:
        return [[row[n] if p is None else p(row[n]) for row in rows] for n, p in self._convert]

    def write(self, n: int, columns: list[list[Any]]) -> set[str]:
        return self._loop.run_until_complete(self._write(columns))

    async def _write(self, columns: list[list[Any]]) -> set[str]:
        async with self._conn.transaction():
            new = {r["ap_id"] for r in await self._conn.fetch(self._SQL, *columns)}
            if new:
                await self._conn.execute("SELECT pg_notify($1, '')", CHANNEL)  # workers wake at commit
        return new

    def checkpoint(self, full: bool) -> None:
        pass

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._conn.close(timeout=CONNECT_TIMEOUT))
        finally:
            self._loop.close()

    def abort(self) -> None:
        try:
            self._conn.terminate()
        finally:
            self._loop.close()


def _pg_dialect() -> Dialect:
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    return dialect()  # type: ignore[no-untyped-call]


class WriterThread:
    """A sink on one thread, its own or the store's SQLite writer thread; `await write(rows)` hands it a batch."""

    def __init__(self, database_url: str, thread: Executor | None = None) -> None:
        self._database_url = database_url
        self._own = thread is None  # a shared thread is its owner's to stop
        self._executor = thread or ThreadPoolExecutor(1, thread_name_prefix="inbox-writer")
        self._sink: _Sink | None = None

    async def start(self) -> None:
        """Connect now, so a database that cannot be reached fails at startup, not on the first POST."""
        try:
            self._sink = await self._run(self._open)
        except BaseException:
            if self._own:
                self._executor.shutdown(wait=False)
            raise

    async def write(self, rows: list[Row]) -> set[str]:
        sink = self._sink
        assert sink is not None, "WriterThread.start() or reopen() first"
        return await self._run(sink.write, len(rows), sink.prepare(rows))  # type: ignore[no-any-return]

    @property
    def connected(self) -> bool:
        return self._sink is not None

    async def reopen(self) -> None:
        """Drop the current connection (it failed) and open a new one; raises while the database is away."""
        old, self._sink = self._sink, None
        if old is not None:
            try:
                await self._run(old.abort)
            except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is gone either way
                pass
        self._sink = await self._run(self._open)

    async def checkpoint(self, full: bool = False) -> None:
        if self._sink is not None:
            await self._run(self._sink.checkpoint, full)

    async def stop(self) -> None:
        """Close the connection on its thread, waiting at most CLOSE_SECONDS: a shared thread may be stuck in
        a transaction waiting out another process's lock, which must not hold up a stop (cli exits past it)."""
        try:
            if self._sink is not None:
                closing = asyncio.ensure_future(self._run(self._sink.close))
                await asyncio.wait([closing], timeout=CLOSE_SECONDS)
                if closing.done():
                    closing.result()
        finally:
            if self._own:
                self._executor.shutdown(wait=False)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> _Sink:
        if self._database_url.startswith("sqlite"):
            return _SqliteSink(self._database_url)
        return _PostgresSink(self._database_url)
