"""Serve public documents from the DocCache: strong ETag, Last-Modified, 304 on revalidation, Cache-Control.

`cached(handler, tables)` wraps an existing handler: the handler renders on a miss (with the request's
conditional headers removed), the answer is kept until one of `tables` changes (doc_cache.py), and every
request is answered from it. Only anonymous requests are cached: one carrying `Authorization` (the admin
token may see more, e.g. the followers' pages) goes straight to the handler and is marked `private`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from aiohttp import web
from multidict import CIMultiDict

from ..config import Settings
from ..doc_cache import Beacon, DocCache, Document, announce, strong_etag
from ..store import sqlite_path
from ..wakeup import listen_documents
from .common import SERVICES, wants_activity_json

DOCS = web.AppKey("doc_cache", DocCache)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Variant = Callable[[web.Request], Hashable]
CACHEABLE = (200, 410)
_CONDITIONAL = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range")
_DROP = frozenset({"content-length", "date", "server", "etag", "last-modified", "transfer-encoding"})


def setup(app: web.Application, settings: Settings) -> None:
    """One cache per app; it watches the app's database engine once storage is open."""
    database = sqlite_path(settings.database_url)
    app[DOCS] = DocCache(ttl=float(settings.document_cache_seconds), beacon=Beacon(database) if database else None)
    app.cleanup_ctx.append(_watch)


async def _watch(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    cache, store = app[DOCS], services.store
    tasks: set[asyncio.Task[None]] = set()

    def tell_others(tables: frozenset[str]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(announce(store.engine, tables))
        except RuntimeError:  # checked in outside the loop (shutdown): the TTL covers it
            return
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    cache.attach(store, tell_others if store.is_postgres else None)
    listener = asyncio.create_task(listen_documents(store, services.health, cache.changed, cache.changed_all),
                                   name="documents-listen")
    yield
    listener.cancel()
    await asyncio.gather(listener, *tasks, return_exceptions=True)


def activity_variant(request: web.Request) -> Hashable:
    """Handlers negotiating AP JSON against a redirect: only the AP answer is worth caching."""
    return True if wants_activity_json(request) else None


def any_variant(request: web.Request) -> Hashable:
    return True


def cached(handler: Handler, tables: tuple[str, ...], variant: Variant = any_variant) -> Handler:
    """Wrap `handler`; `variant(request)` names what the answer depends on besides the URL (None: do not cache)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        cache = request.app.get(DOCS)
        if cache is None or "Authorization" in request.headers:
            resp = await handler(request)
            resp.headers["Cache-Control"] = "private, no-store"
            return resp
        which = variant(request)
        if which is None:
            return await handler(request)
        key = (request.path, request.query_string, which)

        async def render() -> Document:
            return await _render(handler, request)

        try:
            doc = await cache.get(key, tables, render)
        except (web.HTTPException, _Uncacheable):
            return await handler(request)  # a response object cannot be shared between requests: make our own
        return respond(request, doc)

    serve.__name__ = getattr(handler, "__name__", "cached")
    serve.__doc__ = handler.__doc__
    return serve


async def _render(handler: Handler, request: web.Request) -> Document:
    """Run the handler as an unconditional request; keep the bytes and every header to send with them."""
    headers = CIMultiDict(request.headers)
    for name in _CONDITIONAL:
        headers.popall(name, None)
    resp = await handler(request.clone(headers=headers))
    if not isinstance(resp, web.Response) or resp.status not in CACHEABLE or resp.body is None:
        raise _Uncacheable(resp.status)
    body = resp.body if isinstance(resp.body, bytes) else bytes(resp.body)  # type: ignore[arg-type]
    kept = CIMultiDict((k, v) for k, v in resp.headers.items() if k.lower() not in _DROP)
    modified = datetime.now(UTC).replace(microsecond=0)
    if "Last-Modified" in resp.headers:  # the handler knows better (feeds: the newest entry's date)
        try:
            modified = parsedate_to_datetime(resp.headers["Last-Modified"])
        except (TypeError, ValueError, IndexError):
            pass
    etag = resp.headers.get("ETag") or strong_etag(body)
    kept["ETag"] = etag
    kept["Last-Modified"] = format_datetime(modified, usegmt=True)
    if "Cache-Control" not in kept:
        kept["Cache-Control"] = f"public, max-age={request.app[SERVICES].settings.document_max_age}"
    return Document(resp.status, body, kept, etag, modified)


class _Uncacheable(Exception):
    """The handler answered something we do not keep (a stream, a 404 Response…): each caller asks it again."""


def not_modified(request: web.Request, etag: str, modified: datetime) -> bool:
    """RFC 9110 §13.1: If-None-Match wins (weak comparison); If-Modified-Since only without it."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or etag in tags
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError, IndexError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return modified.replace(microsecond=0) <= since  # HTTP dates have whole seconds
    return False


def respond(request: web.Request, doc: Document) -> web.Response:
    if doc.status == 200 and not_modified(request, doc.etag, doc.last_modified):
        headers = CIMultiDict(doc.headers)
        headers.popall("Content-Type", None)
        return web.Response(status=304, headers=headers)
    return web.Response(status=doc.status, body=doc.body, headers=doc.headers)
