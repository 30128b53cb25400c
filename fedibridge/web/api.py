"""Admin API routes owned by the followers feature (others add their own modules)."""

from __future__ import annotations

from aiohttp import web

from ..app import STORE
from ..followers import list_followers
from .common import json_response, require_admin


def setup(app: web.Application, prefix: str) -> None:
    app.router.add_get(f"{prefix}/api/followers", followers)


async def followers(request: web.Request) -> web.Response:
    """Every follower with its delivery inbox, oldest first (admin only: the list is not public data)."""
    require_admin(request)
    rows = await list_followers(request.app[STORE])
    return json_response({
        "total": len(rows),
        "followers": [
            {"id": f.actor_id, "handle": f.handle, "inbox": f.inbox, "since": f.since.isoformat()} for f in rows
        ],
    })
