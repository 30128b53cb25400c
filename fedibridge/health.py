"""Task health and storage outages: what /healthz reads, how long-lived tasks retry, which errors mean
"the database is unreachable or full" (answered 503 + Retry-After, never 500).

Every long-lived task (inbox writer, inbox and delivery workers, LISTEN connections, feed poller) reports
`ok(name)` when a round of work succeeds and `failing(name, error)` when it cannot work; it keeps retrying
with a `Backoff`. A task failing for longer than the grace makes /healthz answer 503 naming it, so Docker or
Kubernetes restart a process that is really stuck, and not one that rides out a short database restart.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from sqlalchemy import exc as sa_exc

# asyncpg errors that mean "no usable connection" (SQLSTATE class 08, 57P0x: shutdown, starting up).
_PG_DOWN = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError,
            asyncpg.InsufficientResourcesError)
# SQLite primary result codes that mean the file cannot be written or read now (not a bad statement).
_SQLITE_DOWN = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
                sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN}


def is_storage_outage(exc: BaseException, *, network: bool = True) -> bool:
    """True when `exc` says the database cannot be reached or cannot store (full disk), not that we erred.

    SQLite reports a full disk, a locked or unreadable file as OperationalError; SQLAlchemy wraps driver
    errors in OperationalError/InterfaceError, or flags a dropped connection with connection_invalidated.
    `network=False`: a bare OSError/TimeoutError does not count (code that also talks to remote servers,
    whose connection errors are theirs, not our database's).
    """
    if isinstance(exc, sa_exc.DBAPIError):
        if isinstance(exc.orig, sqlite3.Error):
            return is_storage_outage(exc.orig)
        if exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        return exc.orig is not None and is_storage_outage(exc.orig)
    if isinstance(exc, sqlite3.Error):
        return ((getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF) in _SQLITE_DOWN
    if isinstance(exc, sa_exc.TimeoutError):  # the pool had no connection to give within its timeout
        return True
    return isinstance(exc, _PG_DOWN) or (network and isinstance(exc, (OSError, TimeoutError)))


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL (disk full, or the database's max_page_count reached) or PostgreSQL's 53100."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if isinstance(orig, asyncpg.DiskFullError):
        return True
    code = getattr(orig, "sqlite_errorcode", 0) or 0
    return isinstance(orig, sqlite3.Error) and (code & 0xFF) == sqlite3.SQLITE_FULL


def describe(exc: BaseException) -> str:
    """One line naming the error, without SQLAlchemy's multi-line statement dump."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {text}"[:300] if text else type(orig).__name__


class Backoff:
    """Delays between reconnect attempts: 0.5 s, doubling, at most `cap` (the database returns within
    a few seconds of its outage ending; a storm of reconnects from every process helps nobody)."""

    def __init__(self, first: float = 0.5, cap: float = 4.0) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first


@dataclass
class TaskState:
    failing_since: float | None = None
    last_error: str = ""


class Health:
    """name → ok / failing since when, with the last error. Tasks report; /healthz reads `stuck()`."""

    def __init__(self, grace: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self._clock = clock
        self.tasks: dict[str, TaskState] = {}

    def ok(self, name: str) -> None:
        state = self.tasks.setdefault(name, TaskState())
        state.failing_since = None

    def failing(self, name: str, error: BaseException | str) -> None:
        state = self.tasks.setdefault(name, TaskState())
        if state.failing_since is None:
            state.failing_since = self._clock()
        state.last_error = error if isinstance(error, str) else describe(error)

    def is_failing(self, name: str) -> bool:
        state = self.tasks.get(name)
        return state is not None and state.failing_since is not None

    def stuck(self) -> dict[str, str]:
        """Tasks failing for longer than the grace: name → "failing for N s: last error"."""
        now = self._clock()
        return {name: f"failing for {now - s.failing_since:.0f} s: {s.last_error}"
                for name, s in sorted(self.tasks.items())
                if s.failing_since is not None and now - s.failing_since >= self.grace}
