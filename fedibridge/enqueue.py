"""Putting work on the durable delivery queue: one row per (activity, target inbox).

A row's ``host`` is hosts.netloc_of(inbox) (normalised host, port when not the default): per-host delivery
limits and domain health count one server once, however its inboxes spell it.

Rows are written in the same transaction as the activity they deliver, so an activity is never
stored without its deliveries, nor delivered without being stored. The worker lives in delivery.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from .hosts import netloc_of
from .store import insert_ignore
from .tables import deliveries, followers
from .wakeup import announce, announce_in


async def follower_inboxes(conn: AsyncConnection) -> list[str]:
    """Distinct targets: followers on one server share its shared inbox (one POST per server).

    Deduplicated by the database: 10,000 followers on 1,000 servers are 1,000 rows read, not 10,000.
    """
    target = func.coalesce(func.nullif(followers.c.shared_inbox, ""), followers.c.inbox)
    rows = await conn.execute(select(target).distinct())
    return sorted(inbox for inbox in rows.scalars() if inbox)


def delivery_rows(activity_id: int, inboxes: Iterable[str], now: datetime) -> list[dict[str, object]]:
    """The delivery rows of one activity, one per distinct inbox (batched callers insert many at once)."""
    return [
        {"activity_id": activity_id, "kind": "ap", "inbox": inbox, "host": netloc_of(inbox), "state": "pending",
         "attempts": 0, "next_attempt_at": now, "created_at": now}
        for inbox in dict.fromkeys(inboxes)
        if inbox
    ]


def enqueue_rows(conn: Connection, rows: list[dict[str, object]]) -> int:
    """Insert delivery rows (idempotent) in one statement and wake the delivery workers at commit."""
    if rows:
        conn.execute(insert_ignore(conn, deliveries), rows)
        announce_in(conn)
    return len(rows)


async def enqueue_to_inboxes(conn: AsyncConnection, activity_id: int, inboxes: Iterable[str], now: datetime) -> int:
    rows = delivery_rows(activity_id, inboxes, now)
    if rows:
        await conn.execute(insert_ignore(conn, deliveries), rows)
        await announce(conn)  # PostgreSQL: workers in other processes wake at commit, not at their next poll
    return len(rows)


async def enqueue_to_followers(conn: AsyncConnection, activity_id: int, now: datetime) -> int:
    return await enqueue_to_inboxes(conn, activity_id, await follower_inboxes(conn), now)


def enqueue_webhook(conn: Connection, url: str, body: str, now: datetime) -> None:
    """Webhook events ride the same queue (retries, backoff, crash safety) with kind="webhook"."""
    conn.execute(deliveries.insert().values(
        activity_id=None, kind="webhook", inbox=url, host=netloc_of(url), body=body, state="pending",
        attempts=0, next_attempt_at=now, created_at=now,
    ))
    announce_in(conn)
