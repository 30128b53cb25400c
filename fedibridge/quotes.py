"""Quote posts of our articles (FEP-044f, as Mastodon 4.5 does them).

A server whose user quotes an article sends a `QuoteRequest` (object: the article, instrument: the quoting
note). By the `quote_policy` setting we answer `Accept` with `result` = a QuoteAuthorization stamp, served
at its id for as long as the quote stands (the quoting server and its readers' servers fetch it to verify),
or `Reject`. Accepted quotes count on the article like boosts; their text is shown as a "mention". A Delete
of the quoting note removes it and its stamp. As everywhere, only the sender's own notes are believed:
the instrument must be attributed to the sender and live on the sender's origin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from . import moderation
from .comment_views import author_json, find_article
from .config import Settings
from .enqueue import enqueue_to_inboxes
from .errors import FetchError
from .hosts import same_origin
from .logsafe import logger
from .models import Author
from .objects import RemoteNote, parse_note, ref_id, visibility
from .store import insert_ignore, utcnow
from .tables import activities, articles, comments, followers, quotes
from .vocab import Site, iso
from .vocab_account import answer_quote_request, quote_authorization

if TYPE_CHECKING:
    from .services import Services

log = logger(__name__)  # arguments escaped and redacted (logsafe)
# Handlers here take Services (dispatch.py adapts them to its current app-based table).
ServicesHandler = Callable[["Services", dict[str, Any], str], Awaitable[str | None]]
SHOWN = ("public", "unlisted")  # quotes whose text may appear on the blog


def _key(prefix: str, seed: str) -> str:
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[:40]


async def _instrument(services: Services, value: Any, actor_id: str) -> RemoteNote | None:
    """The quoting note: embedded (Mastodon) or by id (fetched from its own origin); None when unusable."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str):
        if not same_origin(value, actor_id):
            return None
        try:
            value = await services.resolver.fetch_object(value)
        except FetchError as exc:
            if exc.http_status is not None and 400 <= exc.http_status < 500 and exc.http_status != 429:
                return None
            raise  # the remote is down: the inbox worker retries later
    if not isinstance(value, dict):
        return None
    try:
        note = parse_note(value)
    except ValueError:
        return None
    if note.attributed_to != actor_id or not same_origin(note.id, actor_id):
        return None
    return note


async def _decide(conn: AsyncConnection, services: Services, actor_id: str) -> str | None:
    """None to accept, else why not (the policy, or a block)."""
    if await moderation.is_blocked(conn, services.settings, actor_id):
        return "blocked"
    policy = services.site.quote_policy
    if policy == "nobody":
        return "policy nobody"
    if policy == "followers":
        known = (await conn.execute(select(followers.c.id).where(followers.c.actor_id == actor_id))).first()
        if known is None:
            return "policy followers: not a follower"
    return None


async def _author(services: Services, actor_id: str) -> tuple[Author, str | None]:
    """(author for display, their personal inbox if it is on their own origin)."""
    try:
        actor = await services.resolver.actor(actor_id)
    except FetchError as exc:
        log.info("quote by %s: cannot fetch the actor: %s", actor_id, exc)
        raise
    inbox = actor.inbox if same_origin(actor.inbox, actor.id) else None
    return actor.to_author(), inbox


async def on_quote_request(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Answer a QuoteRequest for one of our articles: Accept with a QuoteAuthorization, or Reject."""
    site = services.site
    object_id = ref_id(activity.get("object"))
    request_id = ref_id(activity.get("id"))
    if not object_id or not request_id:
        return None
    async with services.store.connect() as conn:
        article = await find_article(conn, site, object_id)
        if article is None:
            return None  # not about us
        refusal = "article deleted" if article.deleted is not None else await _decide(conn, services, actor_id)
    note = await _instrument(services, activity.get("instrument"), actor_id)
    if refusal is None and note is None:
        refusal = "no usable quoting note from the sender"
    if refusal is None and note is not None and note.quote not in (None, site.article_id(article.slug)):
        refusal = "the note quotes something else"
    author, inbox = await _author(services, actor_id)
    if inbox is None:
        log.warning("QuoteRequest from %s ignored: its inbox is not on its server", actor_id)
        return "quote_refused"
    request = {**activity, "object": site.article_id(article.slug)}
    now = utcnow()
    async with services.store.begin() as conn:
        if refusal is not None or note is None:
            key = _key("qrej-", request_id)
            payload = answer_quote_request(site, "Reject", request, actor_id, key)
            outcome = "quote_rejected"
            log.info("QuoteRequest %s from %s rejected: %s", request_id, actor_id, refusal)
        else:
            auth_key = await _store_quote(conn, article.id, note, author, request_id, now)
            key = _key("qacc-", request_id)
            payload = answer_quote_request(site, "Accept", request, actor_id, key,
                                           site.quote_authorization_id(auth_key))
            outcome = "quote_accepted"
        await conn.execute(insert_ignore(conn, activities).values(
            key=key, type=payload["type"], object_id=request_id, article_id=article.id, payload=payload,
            in_outbox=False, published=now))
        row_id = (await conn.execute(select(activities.c.id).where(activities.c.key == key))).scalar_one()
        await enqueue_to_inboxes(conn, row_id, [inbox], now)
    services.wake.delivery.set()
    return outcome


async def _store_quote(conn: AsyncConnection, article_id: int, note: RemoteNote, author: Author,
                       request_id: str, now: Any) -> str:
    """Insert the quote once (by note id) and return its stamp's key; a re-request gets the same stamp."""
    auth_key = _key("", note.id)
    await conn.execute(insert_ignore(conn, quotes).values(
        article_id=article_id, ap_id=note.id, auth_key=auth_key, request_id=request_id, actor_id=author.id,
        author_name=author.name, author_handle=author.handle, author_url=author.url, author_avatar=author.avatar,
        published=note.published or now, created_at=now, **_text(note)))
    return str((await conn.execute(select(quotes.c.auth_key).where(quotes.c.ap_id == note.id))).scalar_one())


def _text(note: RemoteNote) -> dict[str, Any]:
    return {"content_html": note.content_html, "url": note.url, "language": note.language,
            "visibility": visibility({"to": list(note.to), "cc": list(note.cc)})}


async def on_delete(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """Delete of a quoting note by its author removes the quote (and its stamp); an actor's own Delete, all."""
    object_id = ref_id(activity.get("object"))
    if not object_id:
        return None
    async with services.store.begin() as conn:
        if object_id == actor_id:
            gone = await conn.execute(quotes.delete().where(quotes.c.actor_id == actor_id))
        else:
            gone = await conn.execute(quotes.delete().where(quotes.c.ap_id == object_id,
                                                            quotes.c.actor_id == actor_id))
    return "quote_removed" if gone.rowcount else None


async def on_update(services: Services, activity: dict[str, Any], actor_id: str) -> str | None:
    """An edit of an accepted quote (or its Create after our Accept, carrying the stamp) refreshes its text."""
    obj = activity.get("object")
    object_id = ref_id(obj)
    if not object_id:
        return None
    async with services.store.connect() as conn:
        row = (await conn.execute(select(quotes.c.id).where(quotes.c.ap_id == object_id,
                                                            quotes.c.actor_id == actor_id))).first()
    if row is None:
        return None
    note = await _instrument(services, obj, actor_id)
    if note is None or note.id != object_id:
        return None
    async with services.store.begin() as conn:
        await conn.execute(quotes.update().where(quotes.c.id == row.id).values(**_text(note)))
    return "quote_edited"


HANDLERS: dict[str, ServicesHandler] = {
    "QuoteRequest": on_quote_request,
    "Delete": on_delete,
    "Update": on_update,
    "Create": on_update,
}


# -- reading -------------------------------------------------------------------------------------------


async def authorization(conn: AsyncConnection, site: Site, key: str) -> dict[str, Any] | None:
    """The QuoteAuthorization document for a stamp key, while its quote stands and its article lives."""
    row = (await conn.execute(
        select(quotes.c.ap_id, articles.c.slug).select_from(quotes.join(articles, quotes.c.article_id == articles.c.id))
        .where(quotes.c.auth_key == key, articles.c.deleted.is_(None)))).first()
    if row is None:
        return None
    return quote_authorization(site, key, row.ap_id, site.article_id(row.slug))


async def quote_summary(conn: AsyncConnection, article_id: int, settings: Settings | None = None,
                        limit: int = 50) -> dict[str, Any]:
    """`quotes` (how many) and `mentions` (the public ones' text, newest first) for the article's APIs.

    With `settings` (the public API and widget), a quote's text shows only as a comment from its author
    would: from anyone with moderation `open`, from commenters the owner approved before with `known`, never
    with `hold`; and never from a blocked actor or server. The count always includes every quote.
    """
    n = int((await conn.execute(select(func.count()).select_from(quotes)
                                .where(quotes.c.article_id == article_id))).scalar_one())
    shown = select(quotes).where(quotes.c.article_id == article_id, quotes.c.visibility.in_(SHOWN))
    if settings is not None and settings.moderation == "hold":
        return {"quotes": n, "mentions": []}
    if settings is not None and settings.moderation == "known":
        approved = select(comments.c.author_id).where(comments.c.status == "approved")
        shown = shown.where(quotes.c.actor_id.in_(approved))
    rows = list(await conn.execute(shown.order_by(quotes.c.published.desc(), quotes.c.id.desc()).limit(limit)))
    if settings is not None and rows:
        domains, actors = await moderation.block_lists(conn, settings)
        rows = [r for r in rows if not moderation.blocked_by(r.actor_id, domains, actors)]
    mentions = [{
        "type": "quote", "id": r.ap_id, "url": r.url or r.ap_id, "content_html": r.content_html,
        "language": r.language, "published": iso(r.published),
        "author": author_json(Author(id=r.actor_id, name=r.author_name, handle=r.author_handle,
                                     url=r.author_url or r.actor_id, avatar=r.author_avatar)),
    } for r in rows]
    return {"quotes": n, "mentions": mentions}
