"""Wake-ups across processes: PostgreSQL LISTEN/NOTIFY, the 1 s poll as the fallback.

A web process that enqueues deliveries (or stores inbox activities) calls `announce(conn)` inside the
transaction that wrote the rows; PostgreSQL sends the notification at commit, so a worker never wakes
before the rows are visible. Workers run `listen(store, health, event)`, which sets their wake-up event on every
notification. Nothing depends on it: a lost notification (listener reconnecting, SQLite) only means
the work is found by the next poll.

A second channel keeps the identity caches (remote actors and keys, one per process) giving one answer:
when an actor's own Update or Delete arrives, `announce_identity` tells every process to forget it.
There a lost notification matters, so every (re)connection of that listener clears the whole cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from .doc_cache import CHANNEL as DOCUMENTS_CHANNEL
from .doc_cache import decode_tables
from .health import Backoff, Health, describe
from .store import Store

log = logging.getLogger(__name__)
CHANNEL = "fedibridge_work"
IDENTITY_CHANNEL = "fedibridge_identity"
RECONNECT_SECONDS = 5.0
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")
_NOTIFY_IDENTITY = text(f"SELECT pg_notify('{IDENTITY_CHANNEL}', :actor)")
_MAX_PAYLOAD = 7900  # PostgreSQL refuses payloads of 8000 bytes or more


async def announce(conn: AsyncConnection) -> None:
    """`announce_in` for an async transaction."""
    await conn.run_sync(announce_in)


def announce_in(conn: Connection) -> None:
    """Queue a notification for commit time; PostgreSQL folds repeats within one transaction into one."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY)


def asyncpg_dsn(engine_url: Any) -> str:
    """The engine's URL without SQLAlchemy's driver suffix, as asyncpg.connect wants it."""
    return str(engine_url.set(drivername="postgresql").render_as_string(hide_password=False))


async def announce_identity(conn: AsyncConnection, actor_id: str) -> bool:
    """Queue "forget this actor" for every process, at commit; False when it cannot be sent (SQLite: one process)."""
    if conn.dialect.name != "postgresql" or len(actor_id.encode()) > _MAX_PAYLOAD:
        return False
    await conn.execute(_NOTIFY_IDENTITY, {"actor": actor_id})
    return True


async def listen(store: Store, health: Health, event: asyncio.Event, name: str = "listen") -> None:
    """Forever: set `event` on each notification. Returns at once on SQLite (one process, polling is enough)."""
    await _listen(store, health, CHANNEL, lambda _payload: event.set(), event.set, name)


async def listen_identity(
    store: Store, health: Health, forget: Callable[[str], None], forget_all: Callable[[], None],
) -> None:
    """Forever: `forget(actor_id)` on each identity notification; `forget_all()` on every (re)connection, since
    what was announced while we were not listening is lost. Returns at once on SQLite."""
    await _listen(store, health, IDENTITY_CHANNEL, forget, forget_all, "listen_identity")


async def listen_documents(store: Store, health: Health, changed: Callable[[set[str]], None],
                           changed_all: Callable[[], None]) -> None:
    """Forever: `changed(tables)` when another process wrote tables our cached documents come from
    (doc_cache.announce); `changed_all()` on every (re)connection. Returns at once on SQLite."""
    await _listen(store, health, DOCUMENTS_CHANNEL, lambda payload: changed(decode_tables(payload)), changed_all,
                  "listen_documents")


async def _listen(
    store: Store, health: Health, channel: str, on_payload: Callable[[str], None], on_connect: Callable[[], None],
    name: str,
) -> None:
    """Reconnects with backoff when the connection drops; reports to Health as `name`."""
    if not store.is_postgres:
        return
    dsn = asyncpg_dsn(store.engine.url)
    retry = Backoff(cap=RECONNECT_SECONDS)

    def received(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        on_payload(payload)

    while True:
        conn = None
        try:
            # A dedicated connection, not one of the pool's: LISTEN lives as long as the connection.
            conn = await asyncpg.connect(dsn, timeout=RECONNECT_SECONDS)
            await conn.add_listener(channel, received)
            on_connect()  # notifications sent while we were not listening are lost: catch up once
            health.ok(name)
            retry.reset()
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            await lost.wait()
            log.warning("LISTEN connection lost; polling until it is back")
            health.failing(name, "LISTEN connection lost")
        except asyncio.CancelledError:
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            health.failing(name, exc)
            log.warning("cannot LISTEN %s (%s); polling, retrying", channel, describe(exc))
        finally:
            if conn is not None and not conn.is_closed():
                await asyncio.shield(conn.close(timeout=2))
        await asyncio.sleep(retry.next())
