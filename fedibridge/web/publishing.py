"""HTTP side of publishing: the admin article API, article/activity objects, replies, and the article feeds."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from .. import articles as store_articles
from .. import remote_json, vocab
from ..enclosures import measure_images
from ..errors import BadRequest, Gone, NotFound, PayloadTooLarge
from ..feeds import FeedSite, article_feed, feed_etag, last_modified
from ..quotes import quote_summary
from ..store import count
from ..tables import activities, articles, comments
from .common import (
    PAGE_SIZE,
    SERVICES,
    activity_response,
    json_response,
    page_number,
    require_admin,
    wants_activity_json,
)
from .documents import activity_variant, cached, not_modified

FEED_TYPES = {"rss": "application/rss+xml", "atom": "application/atom+xml"}
# What POST /api/articles takes (DESIGN §3), and what GET /api/articles/{slug} adds that a script may send
# back unchanged (read-only, ignored). Anything else is a typo to report, not a field to drop silently.
API_FIELDS = ("title", "url", "content", "summary", "tags", "language", "published", "slug", "image",
              "image_alt", "sensitive", "content_warning")
API_READ_ONLY = frozenset({"id", "updated", "deleted", "replies", "likes", "boosts", "activity", "changed",
                           "queued", "quotes", "mentions", "pinned"})


def check_api_fields(data: Any) -> None:
    """BadRequest naming the first unknown field (with the likely intended one), so `titel` never publishes."""
    if not isinstance(data, Mapping):
        raise BadRequest("body must be a JSON object")
    for name in data:
        if name in API_FIELDS or name in API_READ_ONLY:
            continue
        guess = difflib.get_close_matches(str(name), API_FIELDS, n=1)
        hint = f" (did you mean {guess[0]!r}?)" if guess else f"; known fields: {', '.join(API_FIELDS)}"
        raise BadRequest(f"unknown field {str(name)!r}{hint}")


def setup(app: web.Application, prefix: str) -> None:
    r = app.router
    r.add_post(prefix + "/api/articles", post_article)
    r.add_get(prefix + "/api/articles/{slug}", get_article_admin)
    r.add_delete(prefix + "/api/articles/{slug}", delete_article)
    r.add_get(prefix + "/articles/{slug}", cached(article_object, ("articles",), activity_variant))
    r.add_get(prefix + "/articles/{slug}/replies", cached(replies, ("articles", "comments")))
    r.add_get(prefix + "/activities/{key}", cached(activity, ("activities", "articles")))
    r.add_get(prefix + "/feed.rss", cached(feed_rss, ("articles",)))
    r.add_get(prefix + "/feed.atom", cached(feed_atom, ("articles",)))


# --- admin API -------------------------------------------------------------------------------


async def _read_json(request: web.Request, limit: int) -> Any:
    """Read at most `limit` bytes ourselves, so the article limit holds whatever the app-wide cap is."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"article larger than {limit} bytes (max_article_bytes)")
    body = bytearray()
    while chunk := await request.content.read(65536):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"article larger than {limit} bytes (max_article_bytes)")
    try:
        return remote_json.loads(bytes(body))
    except ValueError:
        raise BadRequest("body must be a JSON object (UTF-8)") from None


async def post_article(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    require_admin(request)
    data = await _read_json(request, services.settings.max_article_bytes)
    check_api_fields(data)
    inp = store_articles.validate(data, source="api")
    site = services.site
    result = await store_articles.publish_one(services.store, site, inp)
    services.wake.delivery.set()
    if result.changed and result.article.image:  # committed already: a slow image host delays only the answer
        await measure_images(services.client, services.store, [result.article.slug])
    body = store_articles.article_json(site, result.article)
    body.update(activity=result.activity, changed=result.changed, queued=result.queued)
    return json_response(body, status=201 if result.created else 200)


async def get_article_admin(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    require_admin(request)
    slug = request.match_info["slug"]
    async with services.store.connect() as conn:
        article = await store_articles.get_article(conn, slug, with_counts=True)
        row = await store_articles.get_row(conn, slug)
        quoted = await quote_summary(conn, row.id) if row is not None else {}
    if article is None:
        raise NotFound(f"no article with slug {slug}")
    body = store_articles.article_json(services.site, article)
    body.update(quoted, pinned=row.pinned_at is not None)  # quotes: count + "mentions" (FEP-044f, quotes.py)
    return json_response(body)


async def delete_article(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    require_admin(request)
    site = services.site
    result = await store_articles.delete_one(services.store, site, request.match_info["slug"])
    services.wake.delivery.set()
    body = store_articles.article_json(site, result.article)
    body.update(activity=result.activity, changed=result.changed, queued=result.queued)
    return json_response(body)


# --- public ActivityPub documents ------------------------------------------------------------


def _gone(site: vocab.Site, object_id: str, deleted: datetime) -> web.Response:
    return activity_response(vocab.tombstone(object_id, deleted, site.object_type), status=410)


async def article_object(request: web.Request) -> web.StreamResponse:
    """Content negotiation: AP JSON for fediverse software, a redirect to the blog for browsers."""
    services = request.app[SERVICES]
    site = services.site
    slug = request.match_info["slug"]
    async with services.store.connect() as conn:
        article = await store_articles.get_article(conn, slug)
    if article is None:
        raise NotFound(f"no article with slug {slug}")
    if article.deleted is not None:
        return _gone(site, site.article_id(slug), article.deleted)
    if not wants_activity_json(request):
        raise web.HTTPFound(article.url, headers={"Vary": "Accept"})
    return activity_response(vocab.article_object(site, article))


async def activity(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    site = services.site
    key = request.match_info["key"]
    async with services.store.connect() as conn:
        row = (await conn.execute(
            select(activities.c.type, activities.c.payload, articles.c.deleted)
            .select_from(activities.outerjoin(articles, activities.c.article_id == articles.c.id))
            .where(activities.c.key == key)
        )).first()
    if row is None:
        raise NotFound(f"no activity {key}")
    if row.deleted is not None and row.type != "Delete":
        # The activity carried content that was taken back.
        return activity_response(vocab.tombstone(site.activity_id(key), row.deleted, row.type), status=410)
    return activity_response(row.payload)


async def replies(request: web.Request) -> web.Response:
    """Public, approved replies by id, oldest first: what Mastodon walks to show a thread."""
    services = request.app[SERVICES]
    site = services.site
    slug = request.match_info["slug"]
    page = page_number(request)
    replies_id = site.replies_id(slug)
    async with services.store.connect() as conn:
        row = await store_articles.get_row(conn, slug)
        if row is None:
            raise NotFound(f"no article with slug {slug}")
        if row.deleted is not None:
            raise Gone(f"article {slug} was deleted")
        shown = ((comments.c.article_id == row.id) & (comments.c.status == "approved")
                 & (comments.c.visibility == "public") & comments.c.deleted.is_(False))
        total = await count(conn, select(func.count()).select_from(comments).where(shown))
        if page is None:
            return activity_response({"@context": vocab.CONTEXT, "id": replies_id, "type": "Collection",
                                      "totalItems": total, "first": f"{replies_id}?page=1"})
        items = [r.ap_id for r in await conn.execute(
            select(comments.c.ap_id).where(shown).order_by(comments.c.published, comments.c.id)
            .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
        )]
    doc: dict[str, Any] = {"@context": vocab.CONTEXT, "id": f"{replies_id}?page={page}", "type": "CollectionPage",
                           "partOf": replies_id, "items": items}
    if page * PAGE_SIZE < total:
        doc["next"] = f"{replies_id}?page={page + 1}"
    if page > 1:
        doc["prev"] = f"{replies_id}?page={page - 1}"
    return activity_response(doc)


# --- feeds -----------------------------------------------------------------------------------


def feed_site(request: web.Request) -> FeedSite:
    s = request.app[SERVICES].settings
    return FeedSite(title=s.name, description=s.summary or s.name, blog_url=s.blog, base_url=s.base,
                    language=s.language or None, author_name=s.name)


async def _feed(request: web.Request, kind: str) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    async with services.store.connect() as conn:
        live = await store_articles.latest(conn, settings.feed_entries)
        gone = await store_articles.last_deleted(conn)
    body = article_feed(feed_site(request), live, kind, full_content=True)  # type: ignore[arg-type]
    etag = feed_etag(body)
    modified = last_modified([*live, *([gone] if gone else [])])
    headers = {"ETag": etag, "Last-Modified": format_datetime(modified, usegmt=True),
               "Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}
    if not_modified(request, etag, modified):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": f"{FEED_TYPES[kind]}; charset=utf-8"})


async def feed_rss(request: web.Request) -> web.Response:
    return await _feed(request, "rss")


async def feed_atom(request: web.Request) -> web.Response:
    return await _feed(request, "atom")
