"""Named facts about the blog's own actor that change at run time (today: where it moved to).

Kept in the database, not in settings: `fedibridge move` runs in another process than the server, and
every server process (web and worker roles) must see the move at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import FedibridgeError
from .tables import actor_state

MOVED_TO = "moved_to"


class Moved(FedibridgeError):
    """The blog moved to another account (`fedibridge move`): it publishes no more."""

    status = 409


async def get(conn: AsyncConnection, name: str) -> Any:
    return (await conn.execute(select(actor_state.c.value).where(actor_state.c.name == name))).scalar_one_or_none()


async def put(conn: AsyncConnection, name: str, value: Any, now: datetime) -> None:
    """Insert or replace (delete + insert: the same statement on SQLite and PostgreSQL)."""
    await conn.execute(delete(actor_state).where(actor_state.c.name == name))
    await conn.execute(actor_state.insert().values(name=name, value=value, updated_at=now))


async def clear(conn: AsyncConnection, name: str) -> bool:
    return bool((await conn.execute(delete(actor_state).where(actor_state.c.name == name))).rowcount)


async def moved_to(conn: AsyncConnection) -> str | None:
    """The actor id the blog moved to, or None."""
    value = await get(conn, MOVED_TO)
    return str(value["target"]) if isinstance(value, dict) and value.get("target") else None


async def refuse_if_moved(conn: AsyncConnection) -> None:
    """Publishing stops after a move: followers went to the new account, a new post would reach nobody
    (and Mastodon shows the old profile as "moved"). Deleting and reading still work."""
    target = await moved_to(conn)
    if target is not None:
        raise Moved(f"this blog moved to {target} (fedibridge move): publishing is stopped; "
                    "run `fedibridge move --cancel` to publish from this actor again")
