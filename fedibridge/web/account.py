"""HTTP side of the account features: pins (admin API and the featured collection) and quote stamps."""

from __future__ import annotations

from aiohttp import web

from .. import pins, quotes
from ..errors import NotFound
from .common import SERVICES, activity_response, json_response, require_admin


def setup(app: web.Application, prefix: str) -> None:
    r = app.router
    r.add_post(prefix + "/api/articles/{slug}/pin", pin)
    r.add_delete(prefix + "/api/articles/{slug}/pin", unpin)
    r.add_get(prefix + "/quote_authorizations/{key}", quote_authorization)


async def _set(request: web.Request, pinned: bool) -> web.Response:
    require_admin(request)
    services = request.app[SERVICES]
    result = await pins.set_pinned(services.store, services.site, request.match_info["slug"], pinned)
    services.wake.delivery.set()
    return json_response({"slug": result.slug, "pinned": result.pinned, "changed": result.changed,
                          "activity": result.activity, "queued": result.queued})


async def pin(request: web.Request) -> web.Response:
    """POST /api/articles/{slug}/pin: into the featured collection, and an Add to followers."""
    return await _set(request, True)


async def unpin(request: web.Request) -> web.Response:
    """DELETE /api/articles/{slug}/pin: out of the featured collection, and a Remove to followers."""
    return await _set(request, False)


async def featured(request: web.Request) -> web.Response:
    """The pinned articles, embedded (Mastodon reads them from here for the top of the profile)."""
    services = request.app[SERVICES]
    async with services.store.connect() as conn:
        doc = await pins.featured(conn, services.site)
    return activity_response(doc)


async def quote_authorization(request: web.Request) -> web.Response:
    """A QuoteAuthorization stamp: servers showing a quote fetch it to verify our consent (FEP-044f).
    404 once the quote was deleted (or its article): consent no longer shown is consent withdrawn."""
    services = request.app[SERVICES]
    key = request.match_info["key"]
    async with services.store.connect() as conn:
        doc = await quotes.authorization(conn, services.site, key)
    if doc is None:
        raise NotFound(f"no quote authorization {key}")
    return activity_response(doc)
