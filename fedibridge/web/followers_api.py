"""Admin API routes owned by the followers feature (others add their own modules)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..followers import followers_page
from .common import SERVICES, json_response, require_admin
from .paging import cursor, next_url, page_params

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def setup(app: web.Application, prefix: str) -> None:
    app.router.add_get(f"{prefix}/api/followers", followers)


async def followers(request: web.Request) -> web.Response:
    """Followers with their delivery inbox, oldest first, a page at a time (admin only: not public data)."""
    services = request.app[SERVICES]
    require_admin(request)
    page = page_params(request, default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
    total, rows = await followers_page(services.store, limit=page.limit + 1, offset=page.offset,
                                       after=page.after)
    body: dict[str, Any] = {
        "total": total,
        "followers": [
            {"id": f.actor_id, "handle": f.handle, "inbox": f.inbox, "since": f.since.isoformat()}
            for f in rows[:page.limit]
        ],
    }
    if len(rows) > page.limit:  # one more row than asked: there is a following page
        last = rows[page.limit - 1]
        body["next"] = next_url(request, services.settings.base, cursor(last.since, last.id))
    return json_response(body)
