"""Rendered public documents (actor, article objects, collections, feeds) kept in memory, invalidated on change.

When a large account boosts an article, hundreds of servers fetch the same few documents within seconds;
rendering each from the database every time is the stampede. An entry here is valid while

- every table it was rendered from has the generation it had when rendering *started* (a write bumps its
  tables' generations once its connection goes back to the pool, i.e. after the commit: an entry rendered
  from data read before a commit is never kept past it), and
- it is younger than `ttl` seconds: what no generation tells us (a CLI in another process on SQLite).

On PostgreSQL the bumps also go to the other processes as NOTIFY (wakeup.listen_documents). Concurrent
misses of one key share one rendering (single-flight). The store is an LRU capped at `max_entries`.
No aiohttp here: web/documents.py turns entries into responses.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from .logsafe import logger
from .store import Store, sqlite_path

log = logger(__name__)  # arguments escaped and redacted (logsafe)
CHANNEL = "fedibridge_documents"
_DIRTY = "fedibridge_doc_dirty"  # key in a pooled connection's info dict: tables written on it
ALL = "*"  # payload meaning "everything changed"


def strong_etag(body: bytes) -> str:
    """A strong validator: the same bytes always give the same tag, in every process."""
    return '"' + base64.urlsafe_b64encode(hashlib.sha256(body).digest()[:18]).decode() + '"'


@dataclass(frozen=True)
class Document:
    """One rendered answer: what to send again without rendering, and its validators."""

    status: int
    body: bytes
    headers: Mapping[str, str]  # everything sent with it, validators included
    etag: str
    last_modified: datetime


@dataclass
class _Entry:
    doc: Document
    gens: tuple[int, ...]
    born: float


_WRITE = re.compile(r'\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', re.IGNORECASE)
_READ = re.compile(r"\s*(?:SELECT|SET|SHOW|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA)\b", re.IGNORECASE)


def written_table(sql: str) -> str | None:
    """The table an SQL text writes (None: it writes nothing), or ALL when it may write and names none we read."""
    found = _WRITE.match(sql)
    if found:
        return found.group(1)
    return None if _READ.match(sql) else ALL


def watch_writes(store: Store, written: Callable[[frozenset[str]], None]) -> None:
    """Call `written(tables)` on the event loop once a connection that wrote those tables goes back to the pool
    (after its commit or rollback). Connections of SQLite's writer thread (Store.write) are checked in there:
    their tables are handed to the loop, ahead of the writing task's own wake-up, so nothing races the cache."""
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()

    def after_execute(conn: Any, _cursor: Any, stmt: Any, _params: Any, context: Any, _many: bool) -> None:
        if context.compiled is None:  # SQL handed to the driver as text (bulk_insert): named from the text
            name = written_table(stmt)
            if name is not None:
                conn.info.setdefault(_DIRTY, set()).add(name)
            return
        if not (context.isinsert or context.isupdate or context.isdelete):
            return
        table = getattr(getattr(context.compiled, "statement", None), "table", None)
        # Set for Core insert/update/delete (all our writes); a table we cannot name invalidates everything.
        name = getattr(table, "name", None) or ALL
        conn.info.setdefault(_DIRTY, set()).add(name)

    def checkin(_dbapi_conn: Any, record: Any) -> None:
        dirty = record.info.pop(_DIRTY, None) if record is not None else None
        if not dirty:
            return
        if threading.get_ident() == loop_thread:
            written(frozenset(dirty))
            return
        try:
            loop.call_soon_threadsafe(written, frozenset(dirty))
        except RuntimeError:  # the loop has closed (shutdown): nothing is cached any more
            pass

    for sync in store.sync_engines():
        event.listen(sync, "after_cursor_execute", after_execute)
        event.listen(sync.pool, "checkin", checkin)


class Beacon:
    """A file next to the SQLite database that a CLI command replaces after writing (SQLite has no NOTIFY).

    The server stats it before answering from its cache (a microsecond or two) and forgets every cached
    document when it moved: `fedibridge publish`, `pin`, `move`, `comments approve`… show at once.
    """

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + "-documents")
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def moved(self) -> bool:
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True

    def signal(self) -> None:
        """Replace the file (a new inode: seen even within one mtime tick)."""
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        try:
            tmp.write_text(f"{os.getpid()} {time.time()}\n")
            os.replace(tmp, self.path)
        except OSError as exc:  # best effort: the TTL covers it
            log.warning("cannot signal changed documents at %s: %s", self.path, exc)


def tell_servers_on_close(store: Store) -> None:
    """For a CLI process: when `store` closes after writes, the running servers' caches forget what changed
    (PostgreSQL: NOTIFY with the tables; SQLite: the Beacon file)."""
    dirty: set[str] = set()
    watch_writes(store, dirty.update)

    async def announce_writes() -> None:
        if not dirty:
            return
        path = sqlite_path(store.database_url)
        if store.is_postgres:
            await announce(store.engine, frozenset(dirty))
        elif path is not None:
            Beacon(path).signal()

    store.before_close.append(announce_writes)


@dataclass
class DocCache:
    """Generation counters per table, an LRU of documents, and the renderings in flight."""

    ttl: float = 5.0
    max_entries: int = 2048
    clock: Callable[[], float] = time.monotonic
    renders: int = 0  # documents rendered (misses), for tests and the benchmark
    _gens: dict[str, int] = field(default_factory=dict)
    _entries: OrderedDict[Hashable, _Entry] = field(default_factory=OrderedDict)
    _flight: dict[Hashable, tuple[tuple[int, ...], asyncio.Future[Document]]] = field(default_factory=dict)
    _notify: Callable[[frozenset[str]], None] | None = None
    beacon: Beacon | None = None  # SQLite: the CLI's changes, from another process

    # --- invalidation -----------------------------------------------------------------------

    def changed(self, tables: Iterable[str]) -> None:
        """Forget every document rendered from any of `tables` (`*`: from anything)."""
        names = set(tables)
        if ALL in names:
            self.changed_all()
            return
        for name in names:
            self._gens[name] = self._gens.get(name, 0) + 1

    def changed_all(self) -> None:
        self._entries.clear()
        for name in list(self._gens):
            self._gens[name] += 1

    def _generations(self, tables: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(self._gens.get(t, 0) for t in tables)

    def attach(self, store: Store, notify: Callable[[frozenset[str]], None] | None = None) -> None:
        """Watch the store's writes: tables written on a connection are bumped when it is checked in
        (after its commit or rollback). `notify` is told as well (PostgreSQL: the other processes)."""
        self._notify = notify

        def written(dirty: frozenset[str]) -> None:
            self.changed(dirty)
            if self._notify is not None:
                self._notify(dirty)

        watch_writes(store, written)

    def _beacon_moved(self) -> None:
        """Another process on this machine (the CLI, SQLite) changed the database: forget everything."""
        if self.beacon is not None and self.beacon.moved():
            self.changed_all()

    # --- lookup -----------------------------------------------------------------------------

    def peek(self, key: Hashable, tables: tuple[str, ...]) -> Document | None:
        """The valid entry for `key`, or None (and the stale one is dropped)."""
        self._beacon_moved()
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.gens != self._generations(tables) or self.clock() - entry.born >= self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.doc

    async def get(self, key: Hashable, tables: tuple[str, ...],
                  render: Callable[[], Awaitable[Document]]) -> Document:
        """The document for `key`, rendered at most once however many ask for it at the same time."""
        doc = self.peek(key, tables)
        if doc is not None:
            return doc
        gens = self._generations(tables)
        gens_flight = self._flight.get(key)
        if gens_flight is not None and gens_flight[0] == gens:
            flight = gens_flight[1]  # joined: it started after the last change too
        else:  # none, or one begun before a change: its answer may be older than what this caller wrote
            flight = asyncio.ensure_future(self._render(key, tables, gens, render))
            self._flight[key] = (gens, flight)
            flight.add_done_callback(functools.partial(self._landed, key))
        # shield: a client that hangs up must not cancel the rendering the others wait for
        return await asyncio.shield(flight)

    def _landed(self, key: Hashable, flight: asyncio.Future[Document]) -> None:
        current = self._flight.get(key)
        if current is not None and current[1] is flight:
            del self._flight[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: a failure is re-raised to the waiters, not logged as lost

    async def _render(self, key: Hashable, tables: tuple[str, ...], gens: tuple[int, ...],
                      render: Callable[[], Awaitable[Document]]) -> Document:
        # `gens` were read before reading the data: a change during the rendering makes the entry stale
        born = self.clock()
        self.renders += 1
        doc = await render()
        old = self._entries.get(key)
        if old is not None and old.doc.etag == doc.etag:
            doc = old.doc  # the same bytes: keep its Last-Modified, so revalidations still answer 304
        if self.ttl > 0 and self._entries.get(key, _NEWER).gens <= gens:
            self._entries[key] = _Entry(doc, gens, born)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return doc

    def __len__(self) -> int:
        return len(self._entries)


_NEWER = _Entry(Document(0, b"", {}, "", datetime.min), (), 0.0)  # compares below every generation tuple

NOTIFY_SQL = text(f"SELECT pg_notify('{CHANNEL}', :tables)")


def encode_tables(tables: Iterable[str]) -> str:
    return ",".join(sorted(tables))[:7900]


def decode_tables(payload: str) -> set[str]:
    return {t for t in payload.split(",") if t} or {ALL}


async def announce(engine: AsyncEngine, tables: frozenset[str]) -> None:
    """Tell the other processes (PostgreSQL) which tables changed; a lost one is covered by the TTL."""
    try:
        async with engine.connect() as conn:
            await conn.execute(NOTIFY_SQL, {"tables": encode_tables(tables)})
            await conn.commit()
    except Exception as exc:  # best effort: the documents expire anyway
        log.warning("cannot announce changed documents: %s", exc)
