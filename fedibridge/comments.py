"""Fediverse replies become blog comments; likes and boosts become reactions.

Inbox handlers (``HANDLERS``, called by dispatch.py with the verified sender) turn Create/Update/Delete of
notes into comment rows and Like/Announce/Undo into reaction rows. Nothing embedded is trusted for anyone
but the sender: a note must be attributed to the sender and live on its origin; only a comment's author
may edit or delete it. Parents we don't know are fetched from their own origin so threads stay whole.
Storage helpers and the JSON shapes used by the API, feeds and webhook live here too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from . import moderation, webhook
from .app import CLIENT, METRICS, RESOLVER, SETTINGS, SITE, STORE
from .config import Settings
from .errors import FetchError
from .models import Attachment, Author, Comment
from .objects import ACTOR_TYPES, RemoteNote, as_list, parse_note, ref_id, visibility
from .queue import insert_ignore
from .resolver import authority_of
from .store import utcnow
from .tables import articles, comments, reactions
from .vocab import Site, iso

log = logging.getLogger(__name__)

Handler = Callable[[web.Application, dict[str, Any], str], Awaitable[str | None]]
PUBLIC_VISIBILITY = ("public", "unlisted")
MAX_PARENT_DEPTH = 8  # how far up an unknown thread we fetch before giving up
REACTION_TYPES = {"Like": "like", "EmojiReact": "like", "Announce": "boost"}
METRIC = "fedibridge_comments_total"


class Refused(Exception):
    """An activity we will not act on (forged, foreign, blocked); the message says why."""


# -- rows and records ------------------------------------------------------------------------------


def _select() -> Any:
    """Comments joined with their article's slug and URL (every reader needs them)."""
    return select(comments, articles.c.slug.label("article_slug"), articles.c.url.label("article_url"),
                  articles.c.deleted.label("article_deleted")).join(articles, comments.c.article_id == articles.c.id)


def comment_from_row(row: Any) -> Comment:
    """A joined comments row (see _select) as the plain record."""
    m = row._mapping if isinstance(row, Row) else row
    author = Author(
        id=m["author_id"], name=m["author_name"], handle=m["author_handle"], url=m["author_url"],
        avatar=m["author_avatar"], emojis=tuple((str(a), str(b)) for a, b in (m["author_emojis"] or ())),
    )
    return Comment(
        id=m["id"], article=m.get("article_slug") or "", ap_id=m["ap_id"], in_reply_to=m["in_reply_to"],
        parent_id=m["parent_id"], author=author, content_html=m["content_html"], published=m["published"],
        updated=m["updated"], status=m["status"], visibility=m["visibility"], language=m["language"],
        summary=m["summary"], sensitive=bool(m["sensitive"]), deleted=bool(m["deleted"]), edited=bool(m["edited"]),
        url=m["url"], attachments=tuple(Attachment(a["url"], a.get("media_type"), a.get("alt"))
                                        for a in m["attachments"] or ()),
        mentions=tuple(m["mentions"] or ()), hashtags=tuple(m["hashtags"] or ()),
    )


def threaded(items: Iterable[Comment]) -> list[Comment]:
    """Nest replies under their parents, oldest first; a reply whose parent isn't listed goes top level."""
    ordered = sorted(items, key=lambda c: (c.published, c.id))
    nodes = {c.id: replace(c, replies=[]) for c in ordered}
    roots: list[Comment] = []
    for c in ordered:
        node = nodes[c.id]
        parent = nodes.get(c.parent_id) if c.parent_id is not None else None
        (parent.replies if parent is not None and parent is not node else roots).append(node)
    return roots


def prune_deleted(tree: list[Comment]) -> list[Comment]:
    """Deleted comments stay only as placeholders holding replies; deleted leaves vanish."""
    kept = []
    for c in tree:
        replies = prune_deleted(c.replies)
        c.replies[:] = replies
        if not c.deleted or replies:
            kept.append(c)
    return kept


def author_json(author: Author) -> dict[str, Any]:
    return {"id": author.id, "name": author.name, "handle": author.handle, "url": author.url,
            "avatar": author.avatar, "emojis": [{"shortcode": s, "url": u} for s, u in author.emojis]}


def _when(value: datetime | None) -> str | None:
    return iso(value) if value else None


def comment_json(c: Comment, *, admin: bool = False, nested: bool = True) -> dict[str, Any]:
    """The public shape (widget, webhook); ``admin`` adds moderation fields (DESIGN §3)."""
    author = author_json(c.author if admin or not c.deleted else Author(id=""))
    out: dict[str, Any] = {
        "id": c.id, "ap_id": c.ap_id, "url": c.url or c.ap_id, "in_reply_to": c.in_reply_to,
        "parent_id": c.parent_id, "author": author, "content_html": c.content_html, "summary": c.summary,
        "sensitive": c.sensitive, "language": c.language, "published": _when(c.published),
        "updated": _when(c.updated), "edited": c.edited, "deleted": c.deleted,
        "attachments": [{"url": a.url, "media_type": a.media_type, "alt": a.alt} for a in c.attachments],
        "mentions": list(c.mentions), "hashtags": list(c.hashtags),
    }
    if admin:
        out.update(article=c.article, status=c.status, visibility=c.visibility, likes=c.likes, boosts=c.boosts)
    if nested:
        out["replies"] = [comment_json(r, admin=admin) for r in c.replies]
    return out


# -- queries ---------------------------------------------------------------------------------------


async def get_comment(conn: AsyncConnection, comment_id: int) -> Comment | None:
    row = (await conn.execute(_select().where(comments.c.id == comment_id))).first()
    return comment_from_row(row) if row else None


async def _row_by_ap_id(conn: AsyncConnection, ap_id: str) -> Any:
    return (await conn.execute(_select().where(comments.c.ap_id == ap_id))).first()


async def find_article(conn: AsyncConnection, site: Site, ref: str) -> Any:
    """Our article by its object id ({base}/articles/{slug}) or by its blog URL (with or without '/')."""
    prefix = site.article_id("")
    if ref.startswith(prefix) and "/" not in ref[len(prefix):] and ref[len(prefix):]:
        row = (await conn.execute(select(articles).where(articles.c.slug == unquote(ref[len(prefix):])))).first()
        if row is not None:
            return row
    candidates = {ref, ref.rstrip("/"), ref.rstrip("/") + "/"}
    return (await conn.execute(select(articles).where(articles.c.url.in_(candidates))
                               .order_by(articles.c.id).limit(1))).first()


async def list_comments(conn: AsyncConnection, *, status: str | None = None, slug: str | None = None,
                        public_only: bool = False, limit: int = 100, offset: int = 0,
                        newest_first: bool = True) -> list[Comment]:
    """Comments filtered for the admin API (status/article) or for public readers (approved, public, live)."""
    stmt = _select()
    if status and status != "all":
        stmt = stmt.where(comments.c.status == status)
    if slug:
        stmt = stmt.where(articles.c.slug == slug)
    if public_only:
        stmt = stmt.where(comments.c.status == "approved", comments.c.visibility.in_(PUBLIC_VISIBILITY),
                          articles.c.deleted.is_(None))
    order = (comments.c.published.desc(), comments.c.id.desc()) if newest_first else \
        (comments.c.published, comments.c.id)
    rows = await conn.execute(stmt.order_by(*order).limit(limit).offset(offset))
    return [comment_from_row(r) for r in rows]


async def public_thread(conn: AsyncConnection, article_id: int) -> list[Comment]:
    """What readers see under an article: approved public comments, threaded, deleted ones as placeholders."""
    rows = await conn.execute(_select().where(
        comments.c.article_id == article_id, comments.c.status == "approved",
        comments.c.visibility.in_(PUBLIC_VISIBILITY)))
    return prune_deleted(threaded(comment_from_row(r) for r in rows))


async def reaction_summary(conn: AsyncConnection, article_id: int, who: int = 50) -> dict[str, Any]:
    """Counts of likes and boosts, and who (names known from their comments, else the actor id)."""
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

    return {"likes": int(counts.get("like", 0)), "boosts": int(counts.get("boost", 0)),
            "likers": people("like"), "boosters": people("boost")}


# -- changes made by the blog owner ----------------------------------------------------------------


async def _event(conn: AsyncConnection, settings: Settings, event: webhook.Event, c: Comment, now: datetime) -> None:
    url = (await conn.execute(select(articles.c.url).where(articles.c.slug == c.article))).scalar_one_or_none()
    await webhook.emit(conn, settings, event, c, comment_json(c, admin=True, nested=False), url or "", now)


async def set_status(conn: AsyncConnection, settings: Settings, comment_id: int, status: str,
                     now: datetime | None = None) -> Comment | None:
    """Approve or reject; the webhook hears about it when the status actually changes."""
    c = await get_comment(conn, comment_id)
    if c is None or c.status == status:
        return c
    await conn.execute(comments.update().where(comments.c.id == comment_id).values(status=status))
    c = replace(c, status=status)
    await _event(conn, settings, "comment.approved" if status == "approved" else "comment.rejected", c,
                 now or utcnow())
    return c


_ERASED: dict[str, Any] = {"content_html": "", "summary": None, "sensitive": False, "attachments": [],
                           "mentions": [], "hashtags": [], "deleted": True}


async def erase(conn: AsyncConnection, settings: Settings, c: Comment, now: datetime) -> Comment:
    """Remove a comment's content but keep the row, so replies to it keep their place in the thread."""
    if c.deleted:
        return c
    await conn.execute(comments.update().where(comments.c.id == c.id).values(updated=now, **_ERASED))
    gone = replace(c, content_html="", summary=None, sensitive=False, attachments=(), mentions=(), hashtags=(),
                   deleted=True, updated=now)
    await _event(conn, settings, "comment.deleted", gone, now)
    return gone


async def reject_blocked(conn: AsyncConnection, settings: Settings, now: datetime | None = None) -> int:
    """After a new block: reject what the blocked already said and drop their reactions."""
    now = now or utcnow()
    domains, actors = await moderation.block_lists(conn, settings)
    authors = [r.author_id for r in await conn.execute(select(comments.c.author_id).distinct())]
    reactors = [r.actor_id for r in await conn.execute(select(reactions.c.actor_id).distinct())]
    hit = [a for a in authors if moderation.blocked_by(a, domains, actors)]
    gone = [a for a in reactors if moderation.blocked_by(a, domains, actors)]
    if gone:
        await conn.execute(reactions.delete().where(reactions.c.actor_id.in_(gone)))
    changed = 0
    if hit:
        rows = await conn.execute(_select().where(comments.c.author_id.in_(hit), comments.c.status != "rejected"))
        for c in [comment_from_row(r) for r in rows]:
            await set_status(conn, settings, c.id, "rejected", now)
            changed += 1
    return changed


# -- inbox: notes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    article_id: int
    parent_id: int | None


async def _trusted_note(app: web.Application, obj: Any, actor_id: str) -> RemoteNote | None:
    """The note of a Create/Update, only if the sender is its author and it lives on the sender's origin.

    None when the object is not note-like (not our business); Refused when it is someone else's.
    """
    if isinstance(obj, list):
        obj = obj[0] if obj else None
    if isinstance(obj, str):
        if authority_of(obj) != authority_of(actor_id):
            raise Refused(f"object {obj} is not on the sender's server")
        try:
            obj = await app[RESOLVER].fetch_object(obj)  # by id only: its own origin is the authority
        except FetchError as exc:
            if exc.http_status in (404, 410):
                raise Refused(f"object {obj} is gone") from exc
            raise
    if not isinstance(obj, dict):
        raise Refused("no object")
    try:
        note = parse_note(obj)
    except ValueError as exc:
        log.debug("not a note from %s: %s", actor_id, exc)
        return None
    if note.attributed_to != actor_id:
        raise Refused(f"{note.id} is attributed to {note.attributed_to}, not to the sender {actor_id}")
    if authority_of(note.id) != authority_of(actor_id):
        raise Refused(f"{note.id} is not on the sender's server")
    return note


async def _locate(app: web.Application, ref: str | None, depth: int = 0) -> _Target | None:
    """Which article (and parent comment) a reply belongs to; unknown parents are fetched and stored."""
    if not ref:
        return None
    async with app[STORE].connect() as conn:
        article = await find_article(conn, app[SITE], ref)
        if article is not None:
            return _Target(article.id, None)
        parent = await _row_by_ap_id(conn, ref)
        if parent is not None:
            return _Target(parent.article_id, parent.id)
    if depth >= MAX_PARENT_DEPTH or ref.startswith(app[SITE].base + "/"):
        return None
    try:
        doc = await app[RESOLVER].fetch_object(ref)
        note = parse_note(doc)
    except FetchError as exc:
        if exc.http_status is not None and 400 <= exc.http_status < 500 and exc.http_status != 429 \
                or exc.http_status is None and str(exc).startswith(("refusing", "document id")):
            return None  # gone, forbidden, or not fetchable by rule: the thread cannot be completed
        raise  # the remote is down: the inbox worker retries later
    except ValueError:
        return None
    if authority_of(note.attributed_to) != authority_of(note.id):
        return None  # an object may only speak for authors of its own server
    found = await _locate(app, note.in_reply_to, depth + 1)
    if found is None:
        return None
    try:
        stored = await _store_note(app, note, found)
    except Refused:
        stored = None  # a blocked parent: the reply still belongs to the article, at the top level
    return _Target(found.article_id, stored.id if stored else None)


async def _author(app: web.Application, actor_id: str) -> Author:
    """Name, handle and avatar from the actor document; the id alone if it cannot be fetched."""
    try:
        return (await app[RESOLVER].actor(actor_id)).to_author()
    except FetchError as exc:
        log.info("keeping comment of %s without profile: %s", actor_id, exc)
        return Author(id=actor_id, url=actor_id)


def _values(note: RemoteNote) -> dict[str, Any]:
    """Columns that an Update may change."""
    return {
        "content_html": note.content_html, "summary": note.summary, "sensitive": note.sensitive or bool(note.summary),
        "language": note.language, "url": note.url,
        "attachments": [{"url": a.url, "media_type": a.media_type, "alt": a.alt} for a in note.attachments],
        "mentions": list(note.mentions), "hashtags": list(note.hashtags),
        "visibility": visibility({"to": list(note.to), "cc": list(note.cc)}),
    }


async def _store_note(app: web.Application, note: RemoteNote, target: _Target) -> Comment | None:
    """Insert a comment once (idempotent by object id) with its moderation status; None if blocked."""
    settings, store = app[SETTINGS], app[STORE]
    async with store.connect() as conn:
        existing = await _row_by_ap_id(conn, note.id)
        if existing is not None:
            return comment_from_row(existing)
        if await moderation.is_blocked(conn, settings, note.attributed_to):
            raise Refused(f"{note.attributed_to} is blocked")
        article_url = (await conn.execute(select(articles.c.url).where(articles.c.id == target.article_id))).scalar()
    author = await _author(app, note.attributed_to)
    values = _values(note)
    now = utcnow()
    published = note.published or now
    verdict: moderation.Verdict = "ham"
    if values["visibility"] != "private" and moderation.spam_check_enabled(settings):
        verdict = await moderation.spam_check(app[CLIENT], settings, moderation.SpamQuery(
            author.name or author.handle or author.id, author.url or author.id, note.content_html, published,
            str(article_url), note.language))
    async with store.begin() as conn:
        status = await moderation.initial_status(conn, settings, note.attributed_to, verdict)
        result = await conn.execute(insert_ignore(conn, comments).values(
            article_id=target.article_id, ap_id=note.id, in_reply_to=note.in_reply_to or "",
            parent_id=target.parent_id, author_id=author.id, author_name=author.name,
            author_handle=author.handle, author_url=author.url, author_avatar=author.avatar,
            author_emojis=[list(e) for e in author.emojis], published=published,
            updated=note.updated, status=status, deleted=False, edited=False, created_at=now, **values))
        c = comment_from_row(await _row_by_ap_id(conn, note.id))
        if result.rowcount:
            await _event(conn, settings, "comment.created", c, now)
            app[METRICS].inc(METRIC, status=status, visibility=c.visibility)
    return c


async def on_create(app: web.Application, activity: dict[str, Any], actor_id: str) -> str | None:
    """Create of a note replying to an article or to a known comment → a comment."""
    obj = activity.get("object")
    if isinstance(obj, dict) and set(as_list(obj.get("type"))) & ACTOR_TYPES:
        return None
    try:
        note = await _trusted_note(app, obj, actor_id)
        if note is None or not note.in_reply_to:
            return None
        target = await _locate(app, note.in_reply_to)
        if target is None:
            return None  # not a reply to the blog
        c = await _store_note(app, note, target)
    except Refused as exc:
        log.info("Create from %s refused: %s", actor_id, exc)
        return "comment_refused"
    return f"comment_{c.status}" if c else None


async def on_update(app: web.Application, activity: dict[str, Any], actor_id: str) -> str | None:
    """Update by the author edits the comment (marked edited); an actor's own Update refreshes its name."""
    obj = activity.get("object")
    if isinstance(obj, dict) and set(as_list(obj.get("type"))) & ACTOR_TYPES:
        return await _refresh_author(app, actor_id) if ref_id(obj) == actor_id else None
    object_id = ref_id(obj)
    if not object_id:
        return None
    async with app[STORE].connect() as conn:
        row = await _row_by_ap_id(conn, object_id)
    if row is None:
        return await on_create(app, activity, actor_id)  # an edit may add the reply to us
    if row.author_id != actor_id:
        log.warning("Update of %s by %s refused: not its author", object_id, actor_id)
        return "comment_refused"
    try:
        note = await _trusted_note(app, obj, actor_id)
    except Refused as exc:
        log.info("Update from %s refused: %s", actor_id, exc)
        return "comment_refused"
    if note is None or note.id != row.ap_id:
        return None
    if row.deleted:
        return "comment_deleted_already"
    now = utcnow()
    async with app[STORE].begin() as conn:
        await conn.execute(comments.update().where(comments.c.id == row.id).values(
            edited=True, updated=note.updated or now, **_values(note)))
        c = await get_comment(conn, row.id)
        assert c is not None
        await _event(conn, app[SETTINGS], "comment.edited", c, now)
    return "comment_edited"


async def _refresh_author(app: web.Application, actor_id: str) -> str | None:
    async with app[STORE].connect() as conn:
        if (await conn.execute(select(comments.c.id).where(comments.c.author_id == actor_id).limit(1))).first() is None:
            return None
    try:
        author = (await app[RESOLVER].actor(actor_id, refresh=True)).to_author()  # from origin, not embedded
    except FetchError:
        return None
    async with app[STORE].begin() as conn:
        await conn.execute(comments.update().where(comments.c.author_id == actor_id, comments.c.deleted.is_(False))
                           .values(author_name=author.name, author_handle=author.handle, author_url=author.url,
                                   author_avatar=author.avatar, author_emojis=[list(e) for e in author.emojis]))
    return "comment_authors_refreshed"


async def on_delete(app: web.Application, activity: dict[str, Any], actor_id: str) -> str | None:
    """Delete of a comment by its author erases it; Delete of the actor itself erases all it said."""
    object_id = ref_id(activity.get("object"))
    if not object_id:
        return None
    settings, now = app[SETTINGS], utcnow()
    async with app[STORE].begin() as conn:
        if object_id == actor_id:
            rows = await conn.execute(_select().where(comments.c.author_id == actor_id))
            erased = [await erase(conn, settings, comment_from_row(r), now) for r in list(rows)]
            await conn.execute(comments.update().where(comments.c.author_id == actor_id).values(
                author_name=None, author_handle=None, author_avatar=None, author_emojis=[]))
            dropped = await conn.execute(reactions.delete().where(reactions.c.actor_id == actor_id))
            return "actor_comments_erased" if erased or dropped.rowcount else None
        row = await _row_by_ap_id(conn, object_id)
        if row is None:
            return None
        if row.author_id != actor_id:
            log.warning("Delete of %s by %s refused: not its author", object_id, actor_id)
            return "comment_refused"
        await erase(conn, settings, comment_from_row(row), now)
    return "comment_deleted"


# -- inbox: reactions ----------------------------------------------------------------------------


async def on_react(app: web.Application, activity: dict[str, Any], actor_id: str) -> str | None:
    """Like/Announce of an article → one reaction row per activity id (never a comment)."""
    kind = REACTION_TYPES.get(str(activity.get("type")))
    activity_id, object_id = ref_id(activity.get("id")), ref_id(activity.get("object"))
    if kind is None or not activity_id or not object_id:
        return None
    if authority_of(activity_id) != authority_of(actor_id):
        return "reaction_refused"
    settings = app[SETTINGS]
    async with app[STORE].begin() as conn:
        article = await find_article(conn, app[SITE], object_id)
        if article is None:
            return None
        if await moderation.is_blocked(conn, settings, actor_id):
            return "reaction_refused"
        result = await conn.execute(insert_ignore(conn, reactions).values(
            article_id=article.id, actor_id=actor_id, type=kind, ap_id=activity_id, created_at=utcnow()))
    return f"{kind}_added" if result.rowcount else f"{kind}_duplicate"


async def on_undo(app: web.Application, activity: dict[str, Any], actor_id: str) -> str | None:
    """Undo of a Like/Announce removes that reaction (only the sender's own); other Undos are not ours."""
    obj = activity.get("object")
    inner_type = obj.get("type") if isinstance(obj, dict) else None
    if inner_type is not None and inner_type not in REACTION_TYPES:
        return None
    inner_id = ref_id(obj)
    if not inner_id:
        return None
    async with app[STORE].begin() as conn:
        result = await conn.execute(reactions.delete().where(reactions.c.ap_id == inner_id,
                                                             reactions.c.actor_id == actor_id))
        if not result.rowcount and isinstance(obj, dict) and inner_type:
            # Some servers re-mint the inner id; fall back to (actor, article, kind).
            article = await find_article(conn, app[SITE], ref_id(obj.get("object")) or "")
            if article is not None:
                result = await conn.execute(reactions.delete().where(
                    reactions.c.actor_id == actor_id, reactions.c.article_id == article.id,
                    reactions.c.type == REACTION_TYPES[inner_type]))
    return "reaction_removed" if result.rowcount else None


HANDLERS: dict[str, Handler] = {
    "Create": on_create,
    "Update": on_update,
    "Delete": on_delete,
    "Like": on_react,
    "EmojiReact": on_react,  # Pleroma/Akkoma emoji reactions count as likes
    "Announce": on_react,
    "Undo": on_undo,
}
