"""Pinned articles: the actor's `featured` collection, and the Add/Remove activities that announce changes.

Mastodon shows an account's featured collection at the top of its profile and updates its copy when an
Add or Remove whose `target` is that collection arrives (app/lib/activitypub/activity/add.rb), so a pin
changes the database and queues the activity to every follower in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from . import vocab
from .articles import article_from_row, get_row
from .enqueue import enqueue_to_followers
from .errors import FedibridgeError, Gone, NotFound
from .store import Store, count, utcnow
from .tables import activities, articles
from .vocab_account import featured_change, featured_collection

MAX_PINS = 5  # Mastodon lets an account pin five posts; more would not show on Mastodon profiles


class TooManyPins(FedibridgeError):
    status = 409


@dataclass(frozen=True)
class PinResult:
    slug: str
    pinned: bool  # the state now
    changed: bool  # False: it already was so, nothing sent
    activity: str | None
    queued: int


def _live_pins() -> Any:
    return (articles.c.pinned_at.is_not(None)) & articles.c.deleted.is_(None)


async def _record(conn: AsyncConnection, site: vocab.Site, kind: str, row: Any, now: datetime,
                  deliver: bool) -> tuple[str, int]:
    key = uuid.uuid4().hex
    payload = featured_change(site, kind, site.article_id(row.slug), key, now)
    result = await conn.execute(activities.insert().values(
        key=key, type=kind, object_id=site.article_id(row.slug), article_id=row.id, payload=payload,
        in_outbox=False, published=now))
    pk = result.inserted_primary_key
    assert pk is not None
    queued = await enqueue_to_followers(conn, int(pk[0]), now) if deliver else 0
    return str(payload["id"]), queued


async def set_pinned(store: Store, site: vocab.Site, slug: str, pinned: bool, *, deliver: bool = True) -> PinResult:
    """Pin or unpin one article; doing it twice changes and sends nothing the second time."""
    now = utcnow()
    async with store.begin() as conn:
        row = await get_row(conn, slug)
        if row is None:
            raise NotFound(f"no article with slug {slug}")
        if row.deleted is not None:
            raise Gone(f"article {slug} was deleted")
        if (row.pinned_at is not None) == pinned:
            return PinResult(slug, pinned, False, None, 0)
        if pinned:
            n = await count(conn, select(func.count()).select_from(articles).where(_live_pins()))
            if n >= MAX_PINS:
                raise TooManyPins(f"{n} articles are pinned already (Mastodon shows at most {MAX_PINS}): "
                                  "unpin one first")
        await conn.execute(articles.update().where(articles.c.id == row.id).values(pinned_at=now if pinned else None))
        activity, queued = await _record(conn, site, "Add" if pinned else "Remove", row, now, deliver)
    return PinResult(slug, pinned, True, activity, queued)


async def pinned_slugs(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(select(articles.c.slug).where(_live_pins())
                              .order_by(articles.c.pinned_at.desc(), articles.c.id.desc()))
    return [r.slug for r in rows]


async def featured(conn: AsyncConnection, site: vocab.Site) -> dict[str, Any]:
    """The featured collection: pinned live articles as full objects, the latest pin first (Mastodon's order)."""
    rows = await conn.execute(select(articles).where(_live_pins())
                              .order_by(articles.c.pinned_at.desc(), articles.c.id.desc()).limit(MAX_PINS))
    items = [vocab.article_object(site, article_from_row(r)) for r in rows]
    return featured_collection(site, items)
