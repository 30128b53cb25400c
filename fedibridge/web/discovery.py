"""How the fediverse finds the blog: WebFinger, host-meta, NodeInfo, the actor and its collections."""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web
from sqlalchemy import func, select

from .. import __version__, actor_state, discovery, vocab
from ..errors import BadRequest, Forbidden, NotFound, Unauthorized
from ..store import count
from ..tables import activities, articles, followers
from .common import (
    PAGE_SIZE,
    SERVICES,
    activity_response,
    json_response,
    page_number,
    require_admin,
    wants_activity_json,
)

CORS = {"Access-Control-Allow-Origin": "*"}
# The discovery document's `rel` is the schema URL without '#' (the NodeInfo protocol, and what Mastodon,
# Misskey and the statistics crawlers look for); the document's Content-Type profile keeps the '#'.
NODEINFO_REL = "http://nodeinfo.diaspora.software/ns/schema/{v}"
NODEINFO_PROFILE = NODEINFO_REL + "#"


def _check_resource(resource: str) -> None:
    """Refuse what is neither an acct: handle nor a URL, so clients get 400 rather than a misleading 404."""
    if resource.startswith(("http://", "https://")):
        return
    acct = unquote(resource[5:] if resource.lower().startswith("acct:") else resource).lstrip("@")
    name, sep, host = acct.rpartition("@")
    if not sep or not name or not host:
        raise BadRequest("resource must be acct:user@domain or the actor URL")


async def webfinger(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    resource = request.query.get("resource", "").strip()
    if not resource:
        raise BadRequest("missing resource parameter")
    _check_resource(resource)
    if not discovery.webfinger_matches(services.site, resource):
        return json_response({"error": f"no such account: {resource}"}, status=404, headers=CORS)
    return json_response(discovery.webfinger(services.site, resource), headers=CORS,
                         content_type="application/jrd+json")


async def host_meta(request: web.Request) -> web.Response:
    site = request.app[SERVICES].site
    accept = request.headers.get("Accept", "")
    if request.path.endswith(".json") or ("json" in accept and "xml" not in accept):
        return json_response(discovery.host_meta_json(site), headers=CORS)
    return web.Response(text=discovery.host_meta_xrd(site), content_type="application/xrd+xml", charset="utf-8",
                        headers=CORS)


async def nodeinfo_links(request: web.Request) -> web.Response:
    base = request.app[SERVICES].settings.base
    links = [{"rel": NODEINFO_REL.format(v=v), "href": f"{base}/nodeinfo/{v}"} for v in ("2.0", "2.1")]
    return json_response({"links": links}, headers=CORS)


async def nodeinfo(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    version = request.match_info["version"]
    if version not in ("2.0", "2.1"):
        raise NotFound(f"unknown NodeInfo version {version}")
    async with services.store.connect() as conn:
        posts = await count(conn, select(func.count()).select_from(articles).where(articles.c.deleted.is_(None)))
    doc = discovery.nodeinfo(services.site, version, users=1, posts=posts, software_version=__version__)  # type: ignore[arg-type]
    ctype = f'application/json; profile="{NODEINFO_PROFILE.format(v=version)}"'
    # body=, not text=: with text= aiohttp re-renders the header, dropping the quotes the profile URL needs.
    return web.Response(body=json_response(doc).body, headers={**CORS, "Content-Type": ctype})


async def actor(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    site = services.site
    if not wants_activity_json(request):
        raise web.HTTPFound(services.settings.blog)
    async with services.store.connect() as conn:
        moved_to = await actor_state.moved_to(conn)  # set by `fedibridge move` (another process)
    return activity_response(vocab.actor_document(site, moved_to))


async def _collection(request: web.Request, coll_id: str, total: int, items_for_page) -> web.Response:  # type: ignore[no-untyped-def]
    """Serve an OrderedCollection, or one of its pages when ?page=N is asked."""
    page = page_number(request)
    pages = max(1, -(-total // PAGE_SIZE))
    if page is None:
        first = f"{coll_id}?page=1"
        last = f"{coll_id}?page={pages}"
        return activity_response({**vocab.ordered_collection(coll_id, total, first, last)})
    items = await items_for_page((page - 1) * PAGE_SIZE, PAGE_SIZE) if total else []
    nxt = f"{coll_id}?page={page + 1}" if page < pages else None
    prev = f"{coll_id}?page={page - 1}" if page > 1 else None
    return activity_response(vocab.ordered_collection_page(f"{coll_id}?page={page}", coll_id, items, nxt, prev))


async def outbox(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    store = services.store
    public = activities.c.in_outbox.is_(True)
    async with store.connect() as conn:
        total = await count(conn, select(func.count()).select_from(activities).where(public))

    async def items(offset: int, limit: int) -> list[object]:
        async with store.connect() as conn:
            rows = await conn.execute(
                select(activities.c.payload).where(public)
                .order_by(activities.c.published.desc(), activities.c.id.desc()).offset(offset).limit(limit)
            )
            return [r.payload for r in rows]

    return await _collection(request, services.site.outbox, total, items)


def _may_list_followers(request: web.Request) -> bool:
    """Who follows the blog is private unless public_followers is set; the admin token always may."""
    if request.app[SERVICES].settings.public_followers:
        return True
    try:
        require_admin(request)
    except Unauthorized:
        return False
    return True


async def followers_collection(request: web.Request) -> web.Response:
    """The count for everyone; the pages only when allowed (Mastodon's "hide network": 403 on a page)."""
    services = request.app[SERVICES]
    store = services.store
    async with store.connect() as conn:
        total = await count(conn, select(func.count()).select_from(followers))
    if not _may_list_followers(request):
        if page_number(request) is not None:
            raise Forbidden("this blog does not list its followers")
        return activity_response(vocab.ordered_collection(services.site.followers, total, None),
                                 headers={"Vary": "Accept, Authorization"})

    async def items(offset: int, limit: int) -> list[object]:
        async with store.connect() as conn:
            rows = await conn.execute(
                select(followers.c.actor_id).order_by(followers.c.since.desc(), followers.c.id.desc())
                .offset(offset).limit(limit)
            )
            return [r.actor_id for r in rows]

    resp = await _collection(request, services.site.followers, total, items)
    if not services.settings.public_followers:
        resp.headers["Vary"] = "Accept, Authorization"
        resp.headers["Cache-Control"] = "private"
    return resp


async def empty_collection(request: web.Request) -> web.Response:
    """following and featured: the blog follows nobody and pins nothing, but clients expect the documents."""
    site = request.app[SERVICES].site
    coll_id = site.following if request.path.endswith("/following") else site.featured

    async def items(offset: int, limit: int) -> list[object]:
        return []

    return await _collection(request, coll_id, 0, items)
