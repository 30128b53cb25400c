"""Followers: Follow → stored and a signed Accept queued; Undo(Follow) and actor Delete → removed.

Handlers run from the inbox worker on stored activities and must be idempotent. Embedded objects are
never trusted: the follower's inboxes come from its own actor document, fetched through the resolver.
Follows are always accepted automatically (the actor says manuallyApprovesFollowers: false; a blog has
no one to click "approve", and follows stuck on "requested" are what users hate most).
`Move` is deliberately left alone: following the new
account would need a Follow of our own, which a publish-only actor never sends; the old row keeps
working until the old server answers 410 to a delivery, which then removes it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .enqueue import enqueue_to_inboxes
from .hosts import same_origin
from .logsafe import logger
from .models import Follower
from .objects import ACTOR_TYPES, RemoteActor, as_list, ref_id
from .services import Handler, Services
from .store import Store, count, insert_ignore, keyset_after, utcnow
from .tables import activities, followers
from .vocab import Site, accept_follow

log = logger(__name__)  # arguments escaped and redacted (logsafe)


async def on_follow(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Store (or refresh) the follower and queue an Accept to its inbox; a repeated Follow is re-accepted."""
    site = services.site
    if ref_id(activity.get("object")) != site.actor_id:
        return "not_for_us"
    actor = await services.resolver.actor(actor_id)
    inbox, shared = own_inboxes(actor)
    if inbox is None:
        log.warning("Follow from %s refused: its inbox %s is not on its server", actor_id, actor.inbox)
        return "follow_refused"
    follow_id = ref_id(activity.get("id"))
    now = utcnow()
    key, accept = accept_for(site, activity, actor_id)
    async with services.store.begin() as conn:
        existed = await _upsert(conn, actor_id, actor.handle, inbox, shared, follow_id, now)
        await conn.execute(insert_ignore(conn, activities).values(
            key=key, type="Accept", object_id=follow_id, payload=accept, in_outbox=False, published=now))
        row_id = (await conn.execute(select(activities.c.id).where(activities.c.key == key))).scalar_one()
        await enqueue_to_inboxes(conn, row_id, [inbox], now)
    log.info("%s follower %s", "re-accepted" if existed else "new", actor_id)
    return "reaccepted" if existed else "followed"


def accept_for(site: Site, activity: dict[str, Any], actor_id: str) -> tuple[str, dict[str, Any]]:
    """(key, Accept) of a Follow. One Accept per Follow: the key derives from the Follow, so a re-run after
    a crash (or the batched path after the per-row one) queues nothing new."""
    follow_id = ref_id(activity.get("id"))
    seed = follow_id or json.dumps(activity, sort_keys=True, ensure_ascii=False)
    key = "accept-" + hashlib.sha256(seed.encode()).hexdigest()[:40]
    return key, accept_follow(site, {**activity, "actor": actor_id}, key)


def own_inboxes(actor: RemoteActor) -> tuple[str | None, str | None]:
    """(inbox, shared inbox) of an actor, each only if on the actor's own origin (else None).

    An actor document could name any URL as its inbox; we would then sign and send our activities to a
    third party on that actor's word. A foreign sharedInbox is dropped (the personal inbox still works).
    """
    inbox = actor.inbox if same_origin(actor.inbox, actor.id) else None
    shared = actor.shared_inbox if actor.shared_inbox and same_origin(actor.shared_inbox, actor.id) else None
    return inbox, shared


async def _upsert(
    conn: AsyncConnection, actor_id: str, handle: str, inbox: str, shared: str | None, follow_id: str | None,
    now: Any,
) -> bool:
    """Insert or refresh the follower row; True when it already existed (its `since` is kept)."""
    values = {"handle": handle, "inbox": inbox, "shared_inbox": shared, "follow_id": follow_id}
    result = await conn.execute(insert_ignore(conn, followers).values(actor_id=actor_id, since=now, **values))
    if result.rowcount == 1:
        return False
    await conn.execute(update(followers).where(followers.c.actor_id == actor_id).values(**values))
    return True


async def on_undo(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Undo(Follow), given embedded (Mastodon, Misskey…) or as the Follow's id only (some servers)."""
    obj = activity.get("object")
    async with services.store.begin() as conn:
        if isinstance(obj, dict):
            if obj.get("type") != "Follow":
                return None
            if ref_id(obj.get("actor")) != actor_id or ref_id(obj.get("object")) != services.site.actor_id:
                return "not_for_us"
            where = followers.c.actor_id == actor_id
        elif isinstance(obj, str):
            where = and_(followers.c.actor_id == actor_id, followers.c.follow_id == obj)
        else:
            return None
        result = await conn.execute(delete(followers).where(where))
    return "unfollowed" if result.rowcount else None


async def on_delete(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Delete of the actor itself (account deletion): drop its follower row and cached documents."""
    if ref_id(activity.get("object")) != actor_id:
        return None
    services.resolver.forget(actor_id)
    async with services.store.begin() as conn:
        result = await conn.execute(delete(followers).where(followers.c.actor_id == actor_id))
    return "follower_deleted" if result.rowcount else "actor_forgotten"


async def on_update(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Update of the actor itself: forget the cache; for a follower, refetch and refresh its inboxes."""
    obj = activity.get("object")
    if not isinstance(obj, dict) or ref_id(obj) != actor_id or not set(as_list(obj.get("type"))) & set(ACTOR_TYPES):
        return None
    resolver = services.resolver
    resolver.forget(actor_id)
    async with services.store.connect() as conn:
        known = (await conn.execute(select(followers.c.id).where(followers.c.actor_id == actor_id))).first()
    if known is None:
        return "actor_forgotten"
    actor = await resolver.actor(actor_id, refresh=True)  # the embedded copy is not proof: fetch from origin
    inbox, shared = own_inboxes(actor)
    if inbox is None:
        log.warning("Update of follower %s ignored: its new inbox %s is not on its server", actor_id, actor.inbox)
        return "follower_refused"
    async with services.store.begin() as conn:
        await conn.execute(update(followers).where(followers.c.actor_id == actor_id).values(
            handle=actor.handle, inbox=inbox, shared_inbox=shared))
    return "follower_refreshed"


HANDLERS: dict[str, Handler] = {
    "Follow": on_follow,
    "Undo": on_undo,
    "Delete": on_delete,
    "Update": on_update,
}


async def list_followers(store: Store) -> list[Follower]:
    """All followers, oldest first."""
    async with store.connect() as conn:
        rows = await conn.execute(select(followers).order_by(followers.c.since, followers.c.id))
        return [Follower(actor_id=r.actor_id, inbox=r.inbox, shared_inbox=r.shared_inbox, handle=r.handle,
                         since=r.since) for r in rows]


async def followers_page(store: Store, *, limit: int, offset: int = 0,
                         after: tuple[datetime, int] | None = None) -> tuple[int, list[Any]]:
    """(total, up to `limit` follower rows oldest first), starting after (since, id) for keyset paging."""
    async with store.connect() as conn:
        total = await count(conn, select(func.count()).select_from(followers))
        stmt = select(followers).order_by(followers.c.since, followers.c.id)
        if after is not None:
            stmt = stmt.where(keyset_after(followers.c.since, followers.c.id, after, descending=False))
        return total, list(await conn.execute(stmt.limit(limit).offset(offset)))
