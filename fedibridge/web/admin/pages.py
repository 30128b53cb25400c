"""The other admin screens: articles, followers and delivery health, blocks (list, add, remove)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ... import moderation
from ...errors import BadRequest
from ..common import SERVICES
from . import auth, queries, render
from .comments_page import answer, block, flash


def _common(request: web.Request, section: str, title_key: str) -> dict[str, Any]:
    s = auth.require_session(request)
    w = auth.words(request)
    services = request.app[SERVICES]
    return {"title": w(title_key), "base": auth.base_path(request), "session": s,
            "csrf": auth.sessions(request).csrf(s), "section": section, "flash": flash(request),
            "site": services.site, "blog_name": services.settings.name}


def _page_number(request: web.Request) -> int:
    raw = request.query.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 100_000 else 1


@auth.guarded
async def articles_page(request: web.Request) -> web.Response:
    ctx = _common(request, "articles", "articles")
    async with request.app[SERVICES].store.connect() as conn:
        stats = await queries.article_stats(conn)
        ctx["pending"] = await queries.pending_count(conn)
    return render.html("articles.html", auth.words(request), articles=stats, **ctx)


@auth.guarded
async def followers_page(request: web.Request) -> web.Response:
    ctx = _common(request, "followers", "followers")
    async with request.app[SERVICES].store.connect() as conn:
        page = _page_number(request)
        total, found = await queries.follower_page(conn, page)
        health = await queries.delivery_health(conn)
        ctx["pending"] = await queries.pending_count(conn)
    base = auth.base_path(request)
    return render.html("followers.html", auth.words(request), total=total, followers=found, health=health,
                       older=f"{base}/followers?page={page - 1}" if page > 1 else None,
                       newer=f"{base}/followers?page={page + 1}" if page * queries.FOLLOWERS_PAGE < total else None,
                       **ctx)


@auth.guarded
async def blocks_page(request: web.Request) -> web.Response:
    ctx = _common(request, "blocks", "blocks")
    settings = request.app[SERVICES].settings
    async with request.app[SERVICES].store.connect() as conn:
        stored = await moderation.list_blocks(conn)
        ctx["pending"] = await queries.pending_count(conn)
    configured = [{"kind": "domain", "value": d} for d in settings.blocked_domains] + \
        [{"kind": "actor", "value": a} for a in settings.blocked_actors]
    return render.html("blocks.html", auth.words(request), blocks=stored, configured=configured,
                       error=request.query.get("error") == "1", **ctx)


def _kind_value(form: Any) -> tuple[str, str]:
    value = form.get("value")
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("value is required")
    kind = form.get("kind") or moderation.guess_kind(value)
    if kind not in ("domain", "actor"):
        raise BadRequest("kind must be 'domain' or 'actor'")
    return kind, value


@auth.guarded
async def add_block(request: web.Request) -> web.Response:
    _, form = await auth.require_post(request)
    try:
        kind, value = _kind_value(form)
        moderation.normalise_block(kind, value)  # a clear 400 before anything is written
    except BadRequest as exc:
        w = auth.words(request)
        ctx = _common(request, "blocks", "blocks")
        resp = render.html("message.html", w, http_status=400, message=str(exc), **ctx)
        return resp
    canonical, rejected = await block(request, kind, value)
    return answer(request, form, "done.blocked", {"kind": kind, "value": canonical}, value=canonical, n=rejected)


@auth.guarded
async def remove_block(request: web.Request) -> web.Response:
    _, form = await auth.require_post(request)
    services = request.app[SERVICES]
    try:
        kind, value = _kind_value(form)
        async with services.store.begin() as conn:
            removed = await moderation.remove_block(conn, kind, value)
    except BadRequest as exc:
        ctx = _common(request, "blocks", "blocks")
        return render.html("message.html", auth.words(request), http_status=400, message=str(exc), **ctx)
    services.block_cache.clear()
    if not removed:
        raise auth.refusal(request, 404, "error")
    return answer(request, form, "done.unblocked", {"kind": kind, "value": value}, value=value)
