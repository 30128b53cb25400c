"""The comments screen: the pending queue first, search, and one-click moderation (form posts that work
without JavaScript; admin.js sends the same forms with fetch and updates the row in place)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ... import comment_views, moderation
from ... import comments as store_comments
from ...hosts import host_of
from ...store import utcnow
from ..common import SERVICES
from . import auth, queries, render

STATUSES = ("pending", "approved", "rejected", "all")
ACTIONS = ("approve", "reject", "delete", "block-author", "block-server")
BULK_MAX = 500  # comments one bulk action may touch
MESSAGES = ("done.approved", "done.rejected", "done.deleted", "done.blocked", "done.bulk", "done.unblocked",
            "no_selection")


def _status(request: web.Request) -> str:
    status = request.query.get("status", "pending")
    return status if status in STATUSES else "pending"


def _page(request: web.Request) -> int:
    raw = request.query.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 100_000 else 1


def flash(request: web.Request) -> str | None:
    """The message a no-JS action left in the redirect (only fixed keys; values are escaped by Jinja)."""
    key = request.query.get("msg")
    if key not in MESSAGES:
        return None
    return auth.words(request)(key, n=request.query.get("n", ""), value=request.query.get("v", "")[:300])


@auth.guarded
async def comments_page(request: web.Request) -> web.Response:
    s = auth.require_session(request)
    status, page, q = _status(request), _page(request), request.query.get("q", "")[:queries.SEARCH_MAX]
    slug = request.query.get("article", "")[:200]
    services = request.app[SERVICES]
    async with services.store.connect() as conn:
        total, found = await queries.comment_page(conn, status, q, page, slug)
        parents = await queries.parents(conn, found)
        titles = await queries.article_titles(conn, {c.article for c in found})
        pending = await queries.pending_count(conn)
    w = auth.words(request)
    base = auth.base_path(request)
    filters = (("status", status), ("q", q), ("article", slug))
    here = f"{base}/comments?" + urlencode({k: v for k, v in filters if v})
    more = page * queries.PAGE < total

    def page_url(n: int) -> str:
        return f"{base}/comments?" + urlencode({k: v for k, v in (*filters, ("page", str(n))) if v})

    return render.html(
        "comments.html", w, title=(f"({pending}) " if pending else "") + w("comments"), base=base, session=s,
        csrf=auth.sessions(request).csrf(s), section="comments", status=status, statuses=STATUSES, q=q, slug=slug,
        comments=found, parents=parents, titles=titles, total=total, pending=pending, here=here + (
            f"&page={page}" if page > 1 else ""), page=page, older=page_url(page + 1) if more else None,
        newer=page_url(page - 1) if page > 1 else None, flash=flash(request), site=services.site,
        blog_name=services.settings.name)


def _back(request: web.Request, form: Any) -> str:
    """Where a no-JS action returns: a page of ours, never an arbitrary URL (no open redirect)."""
    base = auth.base_path(request)
    back = form.get("back")
    if isinstance(back, str) and back.startswith(base + "/") and "//" not in back and "\\" not in back:
        return back
    return base + "/comments"


def _with_message(url: str, key: str, **values: object) -> str:
    sep = "&" if "?" in url else "?"
    extra = {"msg": key, **{("n" if k == "n" else "v"): str(v) for k, v in values.items()}}
    url = url.split("#", 1)[0]
    return url + sep + urlencode(extra)


def answer(request: web.Request, form: Any, key: str, data: dict[str, Any], **values: object) -> web.Response:
    if auth.wants_json(request):
        # `location`: where admin.js goes when the change reaches beyond one row (a block rejects more).
        data = {**data, "location": _with_message(_back(request, form), key, **values)} if data.get("reload") \
            else data
        resp = web.json_response({"ok": True, "message": auth.words(request)(key, **values), **data})
        render.secure(resp)
        return resp
    return render.redirect(_with_message(_back(request, form), key, **values))


async def block(request: web.Request, kind: str, value: str) -> tuple[str, int]:
    """Block through the core (as the API and CLI do): the blocked's comments are rejected at once."""
    services = request.app[SERVICES]
    async with services.store.begin() as conn:
        _, canonical, _ = await moderation.add_block(conn, kind, value, utcnow())
        rejected = await store_comments.reject_blocked(conn, services.settings)
    services.block_cache.clear()
    request.app[SERVICES].wake.delivery.set()  # webhook events may be queued
    return canonical, rejected


@auth.guarded
async def act(request: web.Request) -> web.Response:
    """POST …/comments/{id}/{action}: approve, reject, delete, block-author, block-server."""
    _, form = await auth.require_post(request)
    action, comment_id = request.match_info["action"], int(request.match_info["id"])
    services = request.app[SERVICES]
    async with services.store.begin() as conn:
        c = await comment_views.get_comment(conn, comment_id)
        if c is None:
            raise auth.refusal(request, 404, "not_found")
        if action in ("approve", "reject"):
            c = await store_comments.set_status(conn, services.settings, comment_id,
                                                "approved" if action == "approve" else "rejected")
        elif action == "delete":
            c = await store_comments.erase(conn, services.settings, c, utcnow())
    assert c is not None
    if action in ("block-author", "block-server"):
        kind, value = ("actor", c.author.id) if action == "block-author" else ("domain", host_of(c.author.id))
        canonical, rejected = await block(request, kind, value)
        return answer(request, form, "done.blocked", {"id": comment_id, "reload": True}, value=canonical,
                       n=rejected)
    request.app[SERVICES].wake.delivery.set()
    key = {"approve": "done.approved", "reject": "done.rejected", "delete": "done.deleted"}[action]
    return answer(request, form, key, {"id": comment_id, "status": c.status, "deleted": c.deleted})


@auth.guarded
async def bulk(request: web.Request) -> web.Response:
    """POST …/comments/bulk: approve or reject every selected comment in one transaction."""
    _, form = await auth.require_post(request)
    action = form.get("action")
    if action not in ("approve", "reject"):
        raise auth.refusal(request, 400, "error")
    ids = sorted({int(v) for v in form.getall("id", []) if isinstance(v, str) and v.isdigit() and len(v) < 10})
    if not ids:
        return answer(request, form, "no_selection", {"ids": []})
    if len(ids) > BULK_MAX:
        raise auth.refusal(request, 413, "error")
    services = request.app[SERVICES]
    status = "approved" if action == "approve" else "rejected"
    changed = []
    async with services.store.begin() as conn:
        for comment_id in ids:
            c = await store_comments.set_status(conn, services.settings, comment_id, status)
            if c is not None:
                changed.append(comment_id)
    request.app[SERVICES].wake.delivery.set()
    return answer(request, form, "done.bulk", {"ids": changed, "status": status}, n=len(changed))
