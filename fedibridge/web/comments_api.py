"""HTTP side of comments: public JSON (widget), comment feeds, and the admin moderation API.

Public answers carry only approved comments addressed to Public (or unlisted) under live articles,
with CORS for the blog's origins and strong ETags so the widget's polling costs a 304.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web
from sqlalchemy import select

from .. import comment_views, moderation, remote_json
from .. import comments as store_comments
from ..articles import article_from_row
from ..errors import BadRequest, NotFound
from ..feeds import FeedSite, comment_feed, feed_etag
from ..jsontext import dumps
from ..reactions import reaction_summary
from ..store import utcnow
from ..tables import articles
from .common import SERVICES, json_response, require_admin
from .documents import cached
from .paging import cursor, next_url, page_params

FEED_TYPES = {"rss": "application/rss+xml", "atom": "application/atom+xml"}
STATUSES = ("pending", "approved", "rejected", "all")
FEED_ENTRIES = 50
ADMIN_DEFAULT = 100  # comments per page of the admin listing unless `limit` says otherwise
ADMIN_LIMIT = 500
_FEED_TABLES = ("articles", "comments")  # a comment feed changes when any of these is written
_THREAD_TABLES = ("articles", "comments", "reactions", "quotes", "blocks")  # what a public thread shows


def setup(app: web.Application, prefix: str) -> None:
    r = app.router
    # A hot article's thread is read by every widget load while replies keep arriving: concurrent readers
    # share one rendering, kept until a comment, reaction, quote, block or the article changes.
    r.add_get(prefix + "/api/articles/{slug}/comments", cached(article_comments, _THREAD_TABLES, _origin))
    r.add_route("OPTIONS", prefix + "/api/articles/{slug}/comments", preflight)
    r.add_get(prefix + "/api/comments", comments_index)
    r.add_route("OPTIONS", prefix + "/api/comments", preflight)
    r.add_post(prefix + r"/api/comments/{id:\d{1,9}}/approve", approve)
    r.add_post(prefix + r"/api/comments/{id:\d{1,9}}/reject", reject)
    r.add_get(prefix + r"/api/comments/{id:\d{1,9}}", get_one)
    r.add_delete(prefix + r"/api/comments/{id:\d{1,9}}", delete_one)
    r.add_get(prefix + "/api/blocks", list_blocks)
    r.add_post(prefix + "/api/blocks", add_block)
    r.add_delete(prefix + "/api/blocks", remove_block)
    r.add_get(prefix + "/articles/{slug}/comments.{kind:rss|atom}", cached(article_feed, _FEED_TABLES))
    r.add_get(prefix + "/comments.{kind:rss|atom}", cached(blog_feed, _FEED_TABLES))


# -- CORS and caching --------------------------------------------------------------------------------


def _cors(request: web.Request) -> dict[str, str]:
    """Echo the Origin only when it is one of the blog's; always Vary on it so caches keep them apart."""
    headers = {"Vary": "Origin"}
    origin = request.headers.get("Origin")
    allowed = [o.rstrip("/") for o in request.app[SERVICES].settings.allowed_origins]
    if origin and (origin.rstrip("/") in allowed or "*" in allowed):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "ETag"
    return headers


def _origin(request: web.Request) -> str:
    """The cache variant of a CORS answer: the Origin it echoes, or "" for every other (bounded) caller."""
    return _cors(request).get("Access-Control-Allow-Origin", "")


async def preflight(request: web.Request) -> web.Response:
    headers = _cors(request)
    if "Access-Control-Allow-Origin" in headers:
        headers.update({"Access-Control-Allow-Methods": "GET, OPTIONS",
                        "Access-Control-Allow-Headers": "If-None-Match, Content-Type",
                        "Access-Control-Max-Age": "86400"})
    return web.Response(status=204, headers=headers)


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(request: web.Request, etag: str) -> bool:
    inm = request.headers.get("If-None-Match")
    if inm is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
    return "*" in tags or etag in tags


def _cached_json(request: web.Request, data: Any) -> web.Response:
    body = dumps(data).encode("utf-8")
    etag = _etag(body)
    headers = {**_cors(request), "ETag": etag, "Cache-Control": "public, max-age=0, must-revalidate"}
    if _matches(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": "application/json; charset=utf-8"})


# -- public ------------------------------------------------------------------------------------------


async def _public(request: web.Request, row: Any) -> web.Response:
    services = request.app[SERVICES]
    if row is None or row.deleted is not None:
        raise NotFound("no such article")  # a deleted article's comments are kept but never shown
    settings = services.settings
    async with services.store.connect() as conn:
        tree = await comment_views.public_thread(conn, row.id)
        reactions = await reaction_summary(conn, row.id, settings)
    data = {
        "article": {"slug": row.slug, "url": row.url, "id": f"{settings.base}/articles/{row.slug}",
                    "title": row.title},
        "total": _count(tree),
        "comments": [comment_views.comment_json(c) for c in tree],
        "reactions": reactions,
    }
    return _cached_json(request, data)


def _count(tree: list[Any]) -> int:
    return sum(0 if c.deleted else 1 for c in tree) + sum(_count(c.replies) for c in tree)


async def article_comments(request: web.Request) -> web.Response:
    async with request.app[SERVICES].store.connect() as conn:
        row = await _article_row(conn, request.match_info["slug"])
    return await _public(request, row)


async def _article_row(conn: Any, slug: str) -> Any:
    return (await conn.execute(select(articles).where(articles.c.slug == slug))).first()


async def comments_index(request: web.Request) -> web.Response:
    """`?url=ARTICLE_URL` is the widget's public view; anything else is the admin listing."""
    services = request.app[SERVICES]
    if "url" in request.query:
        async with services.store.connect() as conn:
            row = await comment_views.find_article(conn, services.site, request.query["url"])
        return await _public(request, row)
    require_admin(request)
    status = request.query.get("status", "all")
    if status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    page = page_params(request, default=ADMIN_DEFAULT, maximum=ADMIN_LIMIT)
    slug = request.query.get("article") or None
    async with services.store.connect() as conn:
        total = await comment_views.count_comments(conn, status=status, slug=slug)
        found = await comment_views.list_comments(conn, status=status, slug=slug, limit=page.limit + 1,
                                                   offset=page.offset, after=page.after)
    body: dict[str, Any] = {
        "comments": [comment_views.comment_json(c, admin=True, nested=False) for c in found[:page.limit]],
        "total": total,
    }
    if len(found) > page.limit:  # one more row than asked: there is a following page
        last = found[page.limit - 1]
        body["next"] = next_url(request, services.settings.base, cursor(last.published, last.id))
    return json_response(body)


# -- admin -------------------------------------------------------------------------------------------


async def _moderate(request: web.Request, status: str) -> web.Response:
    services = request.app[SERVICES]
    require_admin(request)
    async with services.store.begin() as conn:
        c = await store_comments.set_status(conn, services.settings, int(request.match_info["id"]), status)
    if c is None:
        raise NotFound("no such comment")
    services.wake.delivery.set()  # a webhook event may be queued
    return json_response(comment_views.comment_json(c, admin=True, nested=False))


async def approve(request: web.Request) -> web.Response:
    return await _moderate(request, "approved")


async def reject(request: web.Request) -> web.Response:
    return await _moderate(request, "rejected")


async def get_one(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[SERVICES].store.connect() as conn:
        c = await comment_views.get_comment(conn, int(request.match_info["id"]))
    if c is None:
        raise NotFound("no such comment")
    return json_response(comment_views.comment_json(c, admin=True, nested=False))


async def delete_one(request: web.Request) -> web.Response:
    """Erase the content; the row stays as a placeholder so replies keep their thread."""
    services = request.app[SERVICES]
    require_admin(request)
    async with services.store.begin() as conn:
        c = await comment_views.get_comment(conn, int(request.match_info["id"]))
        if c is None:
            raise NotFound("no such comment")
        c = await store_comments.erase(conn, services.settings, c, utcnow())
    return json_response(comment_views.comment_json(c, admin=True, nested=False))


async def _block_body(request: web.Request) -> tuple[str, str]:
    try:
        data = remote_json.loads(await request.read() or b"{}")
    except ValueError:
        raise BadRequest("body must be JSON {\"kind\": \"domain\"|\"actor\", \"value\": ...}") from None
    kind, value = (data.get("kind"), data.get("value")) if isinstance(data, dict) else (None, None)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("value is required")
    if kind is None:
        kind = moderation.guess_kind(value)
    if not isinstance(kind, str):
        raise BadRequest("kind must be 'domain' or 'actor'")
    return kind, value


async def list_blocks(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    require_admin(request)
    settings = services.settings
    async with services.store.connect() as conn:
        stored = await moderation.list_blocks(conn)
    configured = [{"kind": "domain", "value": d, "configured": True} for d in settings.blocked_domains] + \
        [{"kind": "actor", "value": a, "configured": True} for a in settings.blocked_actors]
    return json_response({"blocks": stored + configured})


async def add_block(request: web.Request) -> web.Response:
    """Block and reject what the blocked already said (their reactions go too)."""
    services = request.app[SERVICES]
    require_admin(request)
    kind, value = await _block_body(request)
    async with services.store.begin() as conn:
        k, v, new = await moderation.add_block(conn, kind, value, utcnow())
        rejected = await store_comments.reject_blocked(conn, services.settings)
    services.block_cache.clear()
    return json_response({"kind": k, "value": v, "rejected": rejected}, status=201 if new else 200)


async def remove_block(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    require_admin(request)
    kind, value = await _block_body(request)
    async with services.store.begin() as conn:
        removed = await moderation.remove_block(conn, kind, value)
    services.block_cache.clear()
    if not removed:
        raise NotFound(f"no {kind} block for {value}")
    return json_response({"removed": True})


# -- feeds -------------------------------------------------------------------------------------------


def _feed_site(request: web.Request) -> FeedSite:
    s = request.app[SERVICES].settings
    return FeedSite(title=s.name, description=s.summary or s.name, blog_url=s.blog, base_url=s.base,
                    language=s.language or None, author_name=s.name)


def _feed_response(request: web.Request, body: bytes, kind: str) -> web.Response:
    etag = feed_etag(body)
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}
    if _matches(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": f"{FEED_TYPES[kind]}; charset=utf-8"})


async def article_feed(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    async with request.app[SERVICES].store.connect() as conn:
        row = await _article_row(conn, request.match_info["slug"])
        if row is None or row.deleted is not None:
            raise NotFound("no such article")
        shown = await comment_views.list_comments(conn, slug=row.slug, public_only=True, limit=FEED_ENTRIES)
    body = comment_feed(_feed_site(request), _only_public(shown), kind, article_from_row(row))  # type: ignore[arg-type]
    return _feed_response(request, body, kind)


def _only_public(items: list[Any]) -> list[Any]:
    """Feeds list public comments only: unlisted ones stay off feeds as they stay off timelines."""
    return [c for c in items if c.visibility == "public" and not c.deleted]


async def blog_feed(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    async with request.app[SERVICES].store.connect() as conn:
        shown = _only_public(await comment_views.list_comments(conn, public_only=True, limit=FEED_ENTRIES))
        slugs = {c.article for c in shown}
        rows = await conn.execute(select(articles).where(articles.c.slug.in_(slugs))) if slugs else []
        known = {r.slug: article_from_row(r) for r in rows}
        newest = (await conn.execute(select(articles.c.published, articles.c.updated)
                                     .where(articles.c.deleted.is_(None))
                                     .order_by(articles.c.published.desc()).limit(1))).first()
    since = (newest.updated or newest.published) if newest else None  # dates an empty feed
    body = comment_feed(_feed_site(request), shown, kind, articles=known, since=since)  # type: ignore[arg-type]
    return _feed_response(request, body, kind)
