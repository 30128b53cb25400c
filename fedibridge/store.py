"""The database: async engine (aiosqlite or asyncpg), migrations applied on open, small shared helpers.

Domain queries live next to their domain (articles.py, enqueue.py, comments.py…) and use the tables in
tables.py; this module only knows how to open, migrate and close the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import and_, event, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .config import sqlalchemy_url
from .errors import ConfigError
from .sqlite_writer import SqliteWriter
from .tables import leases

log = logging.getLogger(__name__)
_T = TypeVar("_T")
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes of WAL file kept after a checkpoint (journal_size_limit)
LOW_DISK_BYTES = 256 * 1024 * 1024  # `doctor` fails below this much free space next to the SQLite file
# Test-only: caps every SQLite connection at this many pages (PRAGMA max_page_count), which SQLite answers
# exactly as it answers a full disk (SQLITE_FULL). Not a setting: tests use it to fill "the disk".
TEST_MAX_PAGES_ENV = "FEDIBRIDGE_TEST_SQLITE_MAX_PAGES"
MIGRATIONS = str(Path(__file__).with_name("migrations"))
# Any constant works: it only has to be the same in every fedibridge process sharing a database.
MIGRATION_LOCK_ID = 0x6665646962726964
# Alembic keeps its context in module globals: two migrations at once in one process would trample them,
# so they take turns (one lock per event loop: tests run several loops in one process).
_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def utcnow() -> datetime:
    return datetime.now(UTC)


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until `event` is set or `timeout` passes.

    Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives as the event is set,
    and a worker that swallows its shutdown never stops. asyncio.timeout() keeps the cancellation.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass


def _alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def sqlite_path(database_url: str) -> Path | None:
    rest = database_url.split(":", 1)[1]
    if rest.startswith("///") and rest[3:] not in ("", ":memory:"):
        return Path(rest[3:].split("?", 1)[0])
    return None


def disk_free_bytes(database_url: str) -> int | None:
    """Free bytes on the filesystem holding the SQLite file (None on PostgreSQL: not ours to see)."""
    path = sqlite_path(database_url)
    if path is None:
        return None
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent  # not created yet (before the first start): where it will be
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


class Store:
    """Holds the engine; `begin()`/`connect()` hand out connections to domain modules."""

    def __init__(self, engine: AsyncEngine, database_url: str) -> None:
        self.engine = engine
        self.database_url = database_url
        self.is_postgres = engine.dialect.name == "postgresql"
        self.before_close: list[Callable[[], Awaitable[None]]] = []
        path = sqlite_path(database_url) if not self.is_postgres else None
        # SQLite file: the hot write transactions run whole on one thread (sqlite_writer), not across loop turns.
        self.writer = SqliteWriter(path, sqlite_pragmas, _sqlite_compiler) if path is not None else None

    @classmethod
    async def open(cls, database_url: str, *, migrate: bool = True) -> Store:
        """Create the engine, check the database answers, and bring the schema to head."""
        path = sqlite_path(database_url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                msg = f"invalid setting database_url: cannot create {path.parent}: {exc.strerror}"
                raise ConfigError(msg) from None
        kwargs: dict[str, Any] = {}
        if path is not None or database_url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        engine = create_async_engine(sqlalchemy_url(database_url), **kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", sqlite_pragmas)
            engine.dialect.statement_compiler = _sqlite_compiler(engine.dialect.statement_compiler)
        store = cls(engine, database_url)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (TimeoutError, SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise ConfigError(f"invalid setting database_url: cannot connect ({reason})") from None
        if migrate:
            await store.migrate()
        return store

    async def migrate(self) -> None:
        """Apply pending migrations; on PostgreSQL an advisory lock keeps concurrent starts from racing."""
        loop = asyncio.get_running_loop()
        lock = _MIGRATION_LOCKS.setdefault(loop, asyncio.Lock())
        async with lock, self.engine.begin() as conn:
            if self.is_postgres:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
            await conn.run_sync(_upgrade)

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current)

    def begin(self) -> Any:
        return self.engine.begin()

    async def has_rows(self, stmt: Any) -> bool:
        """Whether a SELECT finds anything: workers on SQLite ask this before claiming, because a claim
        takes the single write lock and an idle poll should not keep the inbox's commit waiting."""
        async with self.engine.connect() as conn:
            return (await conn.execute(stmt.limit(1))).first() is not None

    def connect(self) -> Any:
        return self.engine.connect()

    async def write(self, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(conn, *args)`, a sync function of a Connection, as one transaction: on SQLite whole on the writer
        thread (the write lock held for the statements' time only), on PostgreSQL on the async engine."""
        if self.writer is not None:
            return await self.writer.run(fn, *args)
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn, *args)

    def write_thread(self) -> Executor | None:
        """SQLite: the writer's one thread, for the inbox's group commit to share (None on PostgreSQL).

        Two writer threads of one process only queue behind each other in SQLite's busy handler, which sleeps
        in steps up to 100 ms and so overshoots every wait; on one thread they simply run in turn.
        """
        return self.writer.executor if self.writer is not None else None

    def sync_engines(self) -> list[Any]:
        """Every sync Engine that writes (for listeners that must see all writes: doc_cache)."""
        return [self.engine.sync_engine] + ([self.writer.engine] if self.writer is not None else [])

    async def close(self) -> None:
        for hook in self.before_close:  # e.g. telling running servers what this CLI command changed
            await hook()
        try:
            if self.writer is not None:
                await self.writer.close()
        finally:
            await self.engine.dispose()

    async def acquire_lease(self, name: str, owner: str, ttl: timedelta) -> bool:
        """Take or renew a named lease so a periodic job runs in one process at a time."""
        now = utcnow()
        async with self.begin() as conn:
            row = (await conn.execute(select(leases).where(leases.c.name == name).with_for_update())).first()
            if row is None:
                try:
                    async with conn.begin_nested():
                        await conn.execute(leases.insert().values(name=name, owner=owner, expires_at=now + ttl))
                    return True
                except SQLAlchemyError:
                    return False
            if row.owner != owner and row.expires_at > now:
                return False
            await conn.execute(
                leases.update().where(leases.c.name == name).values(owner=owner, expires_at=now + ttl)
            )
            return True


def _sqlite_compiler(base: Any) -> Any:
    """SQLite's statement compiler, rendering `with_hint(table, "INDEXED BY …", "sqlite")` (SQLAlchemy drops
    table hints on SQLite). A claim names its partial index so: without statistics SQLite's planner prefers
    another index and sorts the whole backlog, or scans the whole table (worker.claim)."""

    class SQLiteCompiler(base):  # type: ignore[misc]
        def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
            return text if text and text.startswith("INDEXED BY ") else None

    return SQLiteCompiler


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers run during writes; busy_timeout waits out short write locks instead of failing.

    journal_size_limit: after a checkpoint has emptied the WAL, its file is cut back to this size, so a
    burst (or a full disk, during which checkpoints cannot finish) does not leave a WAL holding the space.
    """
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")  # first: switching a new file to WAL takes a lock others may hold
    for attempt in range(50):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            # Switching a new file to WAL needs an exclusive lock and SQLite does not run the busy handler for
            # it: processes starting together on a new database would fail "database is locked". Wait (≤ 5 s).
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.1)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    max_pages = os.environ.get(TEST_MAX_PAGES_ENV)
    if max_pages:  # tests only: a "full disk" without root or a small filesystem
        cur.execute(f"PRAGMA max_page_count={int(max_pages)}")
    cur.close()


def insert_ignore(conn: AsyncConnection | Connection, table: Any) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on both backends (idempotent enqueues and inbox dedupe)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


async def count(conn: AsyncConnection, stmt: Any) -> int:
    return int((await conn.execute(stmt)).scalar_one())


def keyset_after(when: Any, ident: Any, after: tuple[datetime, int], *, descending: bool) -> Any:
    """Rows strictly past `after` = (time, id) in (time, id) order: pages that new rows never shift."""
    moment, last_id = after
    if descending:
        return or_(when < moment, and_(when == moment, ident < last_id))
    return or_(when > moment, and_(when == moment, ident > last_id))
