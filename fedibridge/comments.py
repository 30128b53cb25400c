"""Fediverse replies become blog comments, and the blog owner's moderation changes them.

Inbox handlers (``HANDLERS``, called by dispatch.py with the verified sender) turn Create/Update/Delete of
notes into comment rows; Like/Announce/Undo are routed to reactions.py. Nothing embedded is trusted for anyone
but the sender: a note must be attributed to the sender and live on its origin; only a comment's author
may edit or delete it. Parents we don't know are fetched from their own origin so threads stay whole.
Every change emits its webhook event here; reading and JSON shapes live in comment_views.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from . import moderation, webhook
from .comment_views import comment_from_row, comment_json, find_article, get_comment, select_comments
from .config import Settings
from .errors import FetchError
from .hosts import authority_of, same_origin
from .logsafe import logger
from .models import Author, Comment
from .objects import ACTOR_TYPES, RemoteActor, RemoteNote, as_list, parse_note, ref_id, visibility
from .reactions import on_react, on_undo
from .services import Handler, Services
from .store import insert_ignore, utcnow
from .tables import articles, comments, reactions

log = logger(__name__)  # arguments escaped and redacted (logsafe)

MAX_PARENT_DEPTH = 8  # how far up an unknown thread we fetch before giving up
PARENT_BUDGET = 3.0  # seconds one activity may spend completing its thread, all parent fetches together
METRIC = "fedibridge_comments_total"


class Refused(Exception):
    """An activity we will not act on (forged, foreign, blocked); the message says why."""


async def _row_by_ap_id(conn: AsyncConnection, ap_id: str) -> Any:
    return (await conn.execute(select_comments().where(comments.c.ap_id == ap_id))).first()


# -- changes made by the blog owner ----------------------------------------------------------------


def emit_event(conn: Connection, settings: Settings, event: webhook.Event, c: Comment, now: datetime) -> None:
    """Queue the blog's webhook event for `c` (in the caller's transaction; async callers: `conn.run_sync`)."""
    url = conn.execute(select(articles.c.url).where(articles.c.slug == c.article)).scalar_one_or_none()
    webhook.emit(conn, settings, event, c, comment_json(c, admin=True, nested=False), url or "", now)


async def set_status(conn: AsyncConnection, settings: Settings, comment_id: int, status: str,
                     now: datetime | None = None) -> Comment | None:
    """Approve or reject; the webhook hears about it when the status actually changes."""
    c = await get_comment(conn, comment_id)
    if c is None or c.status == status:
        return c
    await conn.execute(comments.update().where(comments.c.id == comment_id).values(status=status))
    c = replace(c, status=status)
    event: webhook.Event = "comment.approved" if status == "approved" else "comment.rejected"
    await conn.run_sync(emit_event, settings, event, c, now or utcnow())
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
    await conn.run_sync(emit_event, settings, "comment.deleted", gone, now)
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
        stmt = select_comments().where(comments.c.author_id.in_(hit), comments.c.status != "rejected")
        rows = await conn.execute(stmt)
        for c in [comment_from_row(r) for r in rows]:
            await set_status(conn, settings, c.id, "rejected", now)
            changed += 1
    return changed


# -- inbox: notes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    article_id: int
    parent_id: int | None


async def _trusted_note(services: Services, obj: Any, actor_id: str) -> RemoteNote | None:
    """The note of a Create/Update, only if the sender is its author and it lives on the sender's origin.

    None when the object is not note-like (not our business); Refused when it is someone else's.
    """
    if isinstance(obj, list):
        obj = obj[0] if obj else None
    if isinstance(obj, str):
        if not same_origin(obj, actor_id):
            raise Refused(f"object {obj} is not on the sender's server")
        try:
            obj = await services.resolver.fetch_object(obj)  # by id only: its own origin is the authority
        except FetchError as exc:
            if exc.http_status in (404, 410):
                raise Refused(f"object {obj} is gone") from exc
            raise
    if not isinstance(obj, dict):
        raise Refused("no object")
    return check_note(obj, actor_id)


def check_note(obj: dict[str, Any], actor_id: str) -> RemoteNote | None:
    """An embedded note, only if the sender is its author and it lives on the sender's origin (no I/O).

    None when the object is not note-like (not our business); Refused when it is someone else's.
    """
    try:
        note = parse_note(obj)
    except ValueError as exc:
        log.debug("not a note from %s: %s", actor_id, exc)
        return None
    if note.attributed_to != actor_id:
        raise Refused(f"{note.id} is attributed to {note.attributed_to}, not to the sender {actor_id}")
    if not same_origin(note.id, actor_id):
        raise Refused(f"{note.id} is not on the sender's server")
    return note


async def _locate(services: Services, ref: str | None) -> _Target | None:
    """Which article (and parent comment) a reply belongs to, within the thread-completion budget.

    Unknown parents are fetched (at most MAX_PARENT_DEPTH, PARENT_BUDGET seconds in all), so a chain of
    slow parents, hostile or not, costs one activity a few seconds, never minutes. Over budget the
    activity fails like an unreachable remote: the worker retries it later (10 s, 1 min, 5 min, 25 min)
    with a fresh budget, then gives up.
    """
    try:
        async with asyncio.timeout(PARENT_BUDGET):
            return await _locate_parent(services, ref)
    except TimeoutError:
        raise FetchError(f"thread completion for {ref} took over {PARENT_BUDGET:g} s; retrying later") from None


async def _locate_parent(services: Services, ref: str | None, depth: int = 0) -> _Target | None:
    """One step up the thread; unknown parents are fetched and stored."""
    if not ref:
        return None
    async with services.store.connect() as conn:
        article = await find_article(conn, services.site, ref)
        if article is not None:
            return _Target(article.id, None)
        parent = await _row_by_ap_id(conn, ref)
        if parent is not None:
            return _Target(parent.article_id, parent.id)
    if depth >= MAX_PARENT_DEPTH or ref.startswith(services.site.base + "/"):
        return None
    try:
        doc = await services.resolver.fetch_object(ref)
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
    found = await _locate_parent(services, note.in_reply_to, depth + 1)
    if found is None:
        return None
    try:
        stored = await _store_note(services, note, found)
    except Refused:
        stored = None  # a blocked parent: the reply still belongs to the article, at the top level
    return _Target(found.article_id, stored.id if stored else None)


async def _author(services: Services, actor_id: str) -> Author:
    """Name, handle and avatar from the actor document; the id alone if it cannot be fetched."""
    try:
        fetched: RemoteActor | FetchError = await services.resolver.actor(actor_id)
    except FetchError as exc:
        fetched = exc
    return author_of(actor_id, fetched)


def author_of(actor_id: str, fetched: RemoteActor | FetchError) -> Author:
    """The author from a resolved actor; the id alone when its document could not be fetched."""
    if isinstance(fetched, FetchError):
        log.info("keeping comment of %s without profile: %s", actor_id, fetched)
        return Author(id=actor_id, url=actor_id)
    return fetched.to_author()


def _values(note: RemoteNote) -> dict[str, Any]:
    """Columns that an Update may change."""
    return {
        "content_html": note.content_html, "summary": note.summary, "sensitive": note.sensitive or bool(note.summary),
        "language": note.language, "url": note.url,
        "attachments": [{"url": a.url, "media_type": a.media_type, "alt": a.alt} for a in note.attachments],
        "mentions": list(note.mentions), "hashtags": list(note.hashtags),
        "visibility": visibility({"to": list(note.to), "cc": list(note.cc)}),
    }


def comment_row(note: RemoteNote, article_id: int, parent_id: int | None, author: Author, status: str,
                now: datetime) -> dict[str, Any]:
    """The columns of a new comment (shared by the per-row and the batched inbox paths)."""
    return dict(
        article_id=article_id, ap_id=note.id, in_reply_to=note.in_reply_to or "", parent_id=parent_id,
        author_id=author.id, author_name=author.name, author_handle=author.handle, author_url=author.url,
        author_avatar=author.avatar, author_emojis=[list(e) for e in author.emojis],
        published=note.published or now, updated=note.updated, status=status, deleted=False, edited=False,
        created_at=now, **_values(note))


async def _store_note(services: Services, note: RemoteNote, target: _Target) -> Comment | None:
    """Insert a comment once (idempotent by object id) with its moderation status; None if blocked."""
    settings, store = services.settings, services.store
    async with store.connect() as conn:
        existing = await _row_by_ap_id(conn, note.id)
        if existing is not None:
            return comment_from_row(existing)
        if await moderation.is_blocked(conn, settings, note.attributed_to):
            raise Refused(f"{note.attributed_to} is blocked")
        article_url = (await conn.execute(select(articles.c.url).where(articles.c.id == target.article_id))).scalar()
    author = await _author(services, note.attributed_to)
    values = _values(note)
    now = utcnow()
    published = note.published or now
    verdict: moderation.Verdict = "ham"
    if values["visibility"] != "private" and moderation.spam_check_enabled(settings):
        verdict = await moderation.spam_check(services.client, settings, moderation.SpamQuery(
            author.name or author.handle or author.id, author.url or author.id, note.content_html, published,
            str(article_url), note.language))
    async with store.begin() as conn:
        status = await moderation.initial_status(conn, settings, note.attributed_to, verdict)
        result = await conn.execute(insert_ignore(conn, comments).values(
            **comment_row(note, target.article_id, target.parent_id, author, status, now)))
        c = comment_from_row(await _row_by_ap_id(conn, note.id))
        if result.rowcount:
            await conn.run_sync(emit_event, settings, "comment.created", c, now)
            services.metrics.inc(METRIC, status=status, visibility=c.visibility)
    return c


async def on_create(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Create of a note replying to an article or to a known comment → a comment."""
    obj = activity.get("object")
    if isinstance(obj, dict) and set(as_list(obj.get("type"))) & ACTOR_TYPES:
        return None
    try:
        note = await _trusted_note(services, obj, actor_id)
        if note is None or not note.in_reply_to:
            return None
        target = await _locate(services, note.in_reply_to)
        if target is None:
            return None  # not a reply to the blog
        c = await _store_note(services, note, target)
    except Refused as exc:
        log.info("Create from %s refused: %s", actor_id, exc)
        return "comment_refused"
    return f"comment_{c.status}" if c else None


async def on_update(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Update by the author edits the comment (marked edited); an actor's own Update refreshes its name."""
    obj = activity.get("object")
    if isinstance(obj, dict) and set(as_list(obj.get("type"))) & ACTOR_TYPES:
        return await _refresh_author(services, actor_id) if ref_id(obj) == actor_id else None
    object_id = ref_id(obj)
    if not object_id:
        return None
    async with services.store.connect() as conn:
        row = await _row_by_ap_id(conn, object_id)
    if row is None:
        return await on_create(services, activity, actor_id)  # an edit may add the reply to us
    if row.author_id != actor_id:
        log.warning("Update of %s by %s refused: not its author", object_id, actor_id)
        return "comment_refused"
    try:
        note = await _trusted_note(services, obj, actor_id)
    except Refused as exc:
        log.info("Update from %s refused: %s", actor_id, exc)
        return "comment_refused"
    if note is None or note.id != row.ap_id:
        return None
    if row.deleted:
        return "comment_deleted_already"
    now, values = utcnow(), _values(note)
    status = row.status
    if services.settings.moderation == "hold" and status == "approved" and _shows_new_text(row, values):
        status = "pending"  # the owner approved the old text, not this one ("known" mode trusts the author)
    async with services.store.begin() as conn:
        await conn.execute(comments.update().where(comments.c.id == row.id).values(
            edited=True, updated=note.updated or now, status=status, **values))
        c = await get_comment(conn, row.id)
        assert c is not None
        await conn.run_sync(emit_event, services.settings, "comment.edited", c, now)
    return "comment_edited"


def _shows_new_text(row: Any, values: dict[str, Any]) -> bool:
    """Whether an edit changes what readers see (text, content warning, media), not only metadata."""
    return any(row._mapping[k] != values[k] for k in ("content_html", "summary", "attachments"))


async def _refresh_author(services: Services, actor_id: str) -> str | None:
    async with services.store.connect() as conn:
        if (await conn.execute(select(comments.c.id).where(comments.c.author_id == actor_id).limit(1))).first() is None:
            return None
    try:
        author = (await services.resolver.actor(actor_id, refresh=True)).to_author()  # from origin, not embedded
    except FetchError:
        return None
    async with services.store.begin() as conn:
        if services.settings.moderation == "hold":
            # A new display name is new text next to approved comments: in hold mode the owner sees it first.
            renamed = comments.c.author_name.is_distinct_from(author.name) | \
                comments.c.author_handle.is_distinct_from(author.handle)
            await conn.execute(comments.update().where(
                comments.c.author_id == actor_id, comments.c.status == "approved", comments.c.deleted.is_(False),
                renamed).values(status="pending"))
        await conn.execute(comments.update().where(comments.c.author_id == actor_id, comments.c.deleted.is_(False))
                           .values(author_name=author.name, author_handle=author.handle, author_url=author.url,
                                   author_avatar=author.avatar, author_emojis=[list(e) for e in author.emojis]))
    return "comment_authors_refreshed"


async def on_delete(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Delete of a comment by its author erases it; Delete of the actor itself erases all it said."""
    obj = activity.get("object")
    object_id = ref_id(obj)
    if not object_id:
        return None
    claimed = ref_id(obj.get("attributedTo")) if isinstance(obj, dict) else None
    if claimed is not None and claimed != actor_id:
        log.warning("Delete of %s by %s refused: attributed to %s", object_id, actor_id, claimed)
        return "comment_refused"
    settings, now = services.settings, utcnow()
    async with services.store.begin() as conn:
        if object_id == actor_id:
            rows = await conn.execute(select_comments().where(comments.c.author_id == actor_id))
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


HANDLERS: dict[str, Handler] = {
    "Create": on_create,
    "Update": on_update,
    "Delete": on_delete,
    "Like": on_react,
    "EmojiReact": on_react,  # Pleroma/Akkoma emoji reactions count as likes
    "Announce": on_react,
    "Undo": on_undo,
}
