"""Handled inbox rows are deleted after `inbox_retention_days`: the table keeps recent history, not all of it.

Dedupe by activity id needs only recent rows (servers re-send within minutes or hours, Fedify after an
error status). After pruning, a re-sent old activity is handled again, which the handlers make harmless:
comments and reactions are keyed by their ids, a repeated Follow re-accepts without a second delivery.
Pending rows are never pruned, however old.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from .services import Services
from .store import Store, utcnow
from .tables import inbox_items

log = logging.getLogger(__name__)

LEASE = "inbox-retention"
INTERVAL = 3600.0  # seconds between passes; the first pass runs at start
CHUNK = 1000  # rows per delete: short transactions, so the inbox's writes never wait long


async def prune_inbox(store: Store, now: datetime, days: int) -> int:
    """Delete done and failed inbox rows received more than `days` ago; returns how many went."""
    cutoff = now - timedelta(days=days)
    pick = (select(inbox_items.c.id)
            .where(inbox_items.c.state.in_(("done", "failed")), inbox_items.c.received_at < cutoff)
            .order_by(inbox_items.c.id).limit(CHUNK))
    total = 0
    while True:
        async with store.begin() as conn:
            ids = [r.id for r in await conn.execute(pick)]
            if ids:
                await conn.execute(inbox_items.delete().where(inbox_items.c.id.in_(ids)))
        total += len(ids)
        if len(ids) < CHUNK:
            return total


async def run(services: Services) -> None:
    """Background job: prune once an hour, in one process of many (a lease)."""
    store, days, worker_id = services.store, services.settings.inbox_retention_days, services.worker_id
    while True:
        try:
            if await store.acquire_lease(LEASE, worker_id, timedelta(seconds=2 * INTERVAL)):
                if gone := await prune_inbox(store, utcnow(), days):
                    log.info("inbox retention: %d handled activities older than %d days deleted", gone, days)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("inbox retention pass failed (%s); next try in %d s", exc, INTERVAL)
        await asyncio.sleep(INTERVAL)
