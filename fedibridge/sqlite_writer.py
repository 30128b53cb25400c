"""SQLite: the hot write transactions, run from BEGIN to COMMIT on one thread, never across event-loop turns.

SQLite has one write lock per database. A transaction on the async engine (aiosqlite) holds it from its first
write to its commit, and every statement in between is a round trip through the event loop, which during a
burst is busy answering requests. Measured on a 10,000-follow burst: the delivery worker's claims and
finishes (two statements) held the lock 13 ms each (median; 75 ms p90), 14 s of the run's 38 s, and the
inbox's group commit slept in SQLite's busy handler behind them, delaying every 202.

Here such a transaction is a plain function of a sync SQLAlchemy Connection (the same Core statements),
run start to finish on this process's SQLite writer thread: the lock is held for the statements' own time.
The inbox's group commit (inbox_sink.WriterThread) keeps its own connection but runs on this same thread
(Store.write_thread): two writer threads of one process only waited for each other in SQLite's busy
handler, which sleeps in steps of up to 100 ms and overshot every wait. PostgreSQL has row
locks, not one write lock: there the function runs on the async engine (`AsyncConnection.run_sync`), in the
caller's task.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

_T = TypeVar("_T")
THREAD_NAME = "sqlite-writer"
CLOSE_SECONDS = 0.5  # a close waits this long for what is queued on the thread (the stop's budget: cli)


class SqliteWriter:
    """One thread and one sync connection to an SQLite file; `run(fn, *args)` is one transaction there."""

    def __init__(self, path: Path, on_connect: Callable[[Any, Any], None], compiler: Callable[[Any], Any]) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=THREAD_NAME)
        self.engine: Engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30,
                                                                               "check_same_thread": False})
        event.listen(self.engine, "connect", on_connect)
        event.listen(self.engine, "connect", _driver_autocommit)
        event.listen(self.engine, "begin", _begin_immediate)
        self.engine.dialect.statement_compiler = compiler(self.engine.dialect.statement_compiler)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(conn, *args)` in one transaction on the writer thread. A cancelled caller does not cut it: it
        commits or rolls back whole, as if the caller had been cancelled just after (callers shield claims)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._transaction, fn, args)

    def _transaction(self, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        with self.engine.begin() as conn:
            return fn(conn, *args)

    async def close(self) -> None:
        """Close the connection on its thread (after what is queued there), then let the thread go.

        Bounded: a transaction stuck in SQLite's busy wait (another process holds the lock) must not hold up
        a stop; the thread is then left to the exit (cli._exit_past_stuck_threads) and its write rolls back.
        """
        closing = asyncio.get_running_loop().run_in_executor(self.executor, self.engine.dispose)
        try:
            await asyncio.wait([closing], timeout=CLOSE_SECONDS)
            if closing.done():
                closing.exception()  # closing a file connection does not fail; if it did, it is closed anyway
        finally:
            self.executor.shutdown(wait=False)


def _driver_autocommit(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # The driver's own implicit BEGIN (deferred, before the first write) is off: `_begin_immediate` says when.
    dbapi_conn.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    # The write lock at BEGIN: waited for in SQLite's busy handler, never a deferred read upgraded to a write
    # that fails at once (SQLITE_BUSY) because another writer committed since its snapshot.
    conn.exec_driver_sql("BEGIN IMMEDIATE")
