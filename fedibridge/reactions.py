"""Likes and boosts of articles: inbox handlers for Like/EmojiReact/Announce/Undo, and their summary.

A reaction is one row per activity id, never a comment. Only the sender's own reactions count or can be undone,
and the activity must live on the sender's server. comments.HANDLERS routes these types here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from . import moderation
from .comment_views import author_json, comment_from_row, find_article
from .config import Settings
from .hosts import same_origin
from .models import Author
from .objects import ref_id
from .quotes import quote_summary
from .services import Services
from .store import insert_ignore, utcnow
from .tables import comments, reactions

REACTION_TYPES = {"Like": "like", "EmojiReact": "like", "Announce": "boost"}


async def reaction_summary(conn: AsyncConnection, article_id: int, settings: Settings | None = None,
                           who: int = 50) -> dict[str, Any]:
    """Counts of likes and boosts, and who (names known from their comments, else the actor id).

    `settings` given (public answers): quote texts pass the moderation and blocks rules (quotes.quote_summary).
    """
    counts: dict[str, int] = dict((await conn.execute(select(reactions.c.type, func.count()).where(
        reactions.c.article_id == article_id).group_by(reactions.c.type))).all())
    rows = (await conn.execute(select(reactions.c.type, reactions.c.actor_id).where(
        reactions.c.article_id == article_id).order_by(reactions.c.created_at.desc(), reactions.c.id.desc())
        .limit(who * 2))).all()
    ids = {r.actor_id for r in rows}
    known: dict[str, Author] = {}
    if ids:
        named = select(comments).where(comments.c.author_id.in_(ids), comments.c.deleted.is_(False))
        for r in await conn.execute(named):
            known.setdefault(r.author_id, comment_from_row({**r._mapping, "article_slug": ""}).author)

    def people(kind: str) -> list[dict[str, Any]]:
        found = [known.get(r.actor_id, Author(id=r.actor_id, url=r.actor_id)) for r in rows if r.type == kind]
        return [author_json(a) for a in found[:who]]

    # Quotes (FEP-044f) count like boosts; their text shows as "mentions".
    return {"likes": int(counts.get("like", 0)), "boosts": int(counts.get("boost", 0)),
            "likers": people("like"), "boosters": people("boost"), **await quote_summary(conn, article_id, settings)}


def reaction_of(activity: dict[str, Any], actor_id: str) -> tuple[str, str, str] | str | None:
    """(kind, activity id, object id) of a Like/Announce worth looking up; else its outcome (None: not ours)."""
    kind = REACTION_TYPES.get(str(activity.get("type")))
    activity_id, object_id = ref_id(activity.get("id")), ref_id(activity.get("object"))
    if kind is None or not activity_id or not object_id:
        return None
    if not same_origin(activity_id, actor_id):
        return "reaction_refused"
    return kind, activity_id, object_id


async def on_react(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Like/Announce of an article → one reaction row per activity id (never a comment)."""
    checked = reaction_of(activity, actor_id)
    if not isinstance(checked, tuple):
        return checked
    kind, activity_id, object_id = checked
    settings = services.settings
    async with services.store.begin() as conn:
        article = await find_article(conn, services.site, object_id)
        if article is None:
            return None
        if await moderation.is_blocked(conn, settings, actor_id):
            return "reaction_refused"
        result = await conn.execute(insert_ignore(conn, reactions).values(
            article_id=article.id, actor_id=actor_id, type=kind, ap_id=activity_id, created_at=utcnow()))
    return f"{kind}_added" if result.rowcount else f"{kind}_duplicate"


async def on_undo(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Undo of a Like/Announce removes that reaction (only the sender's own); other Undos are not ours."""
    obj = activity.get("object")
    inner_type = obj.get("type") if isinstance(obj, dict) else None
    if inner_type is not None and inner_type not in REACTION_TYPES:
        return None
    inner_id = ref_id(obj)
    if not inner_id:
        return None
    async with services.store.begin() as conn:
        result = await conn.execute(reactions.delete().where(reactions.c.ap_id == inner_id,
                                                             reactions.c.actor_id == actor_id))
        if not result.rowcount and isinstance(obj, dict) and inner_type:
            # Some servers re-mint the inner id; fall back to (actor, article, kind).
            article = await find_article(conn, services.site, ref_id(obj.get("object")) or "")
            if article is not None:
                result = await conn.execute(reactions.delete().where(
                    reactions.c.actor_id == actor_id, reactions.c.article_id == article.id,
                    reactions.c.type == REACTION_TYPES[inner_type]))
    return "reaction_removed" if result.rowcount else None
