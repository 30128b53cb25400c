"""Small helpers every handler module shares: content negotiation, JSON answers, paging, auth."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from ..errors import BadRequest, Unauthorized
from ..jsontext import dumps
from ..services import Services

AP_CONTENT_TYPE = "application/activity+json"
AP_TYPES = ("application/activity+json", "application/ld+json")
PAGE_SIZE = 20
# The app's one Services object (app.py sets it once storage and the client are open); handlers read
# `request.app[SERVICES]` once and pass it, or its parts, to the core.
SERVICES = web.AppKey("services", Services)


def wants_activity_json(request: web.Request) -> bool:
    """ActivityPub clients ask for activity+json or ld+json (any profile); browsers ask for HTML."""
    accept = request.headers.get("Accept", "").lower()
    return any(t in accept for t in AP_TYPES) or "application/json" in accept


def activity_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(status=status, text=dumps(data), content_type=AP_CONTENT_TYPE, charset="utf-8")
    resp.headers["Vary"] = "Accept"
    resp.headers["Access-Control-Allow-Origin"] = "*"
    if headers:
        resp.headers.update(headers)
    return resp


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> web.Response:
    return web.Response(status=status, text=dumps(data), content_type=content_type, charset="utf-8",
                        headers=headers)


def page_number(request: web.Request) -> int | None:
    """`?page=N` (1-based) or None for the collection itself; `page=true` means 1 (Mastodon style)."""
    raw = request.query.get("page")
    if raw is None:
        return None
    if raw == "true":
        return 1
    if not raw.isdigit() or not 0 < int(raw) < 1_000_000:
        raise BadRequest("page must be a positive integer")
    return int(raw)


def require_admin(request: web.Request) -> None:
    """Bearer token check in constant time."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing admin token (Authorization: Bearer …)")
    if not hmac.compare_digest(token.strip().encode(), request.app[SERVICES].admin_token.encode()):
        raise Unauthorized("wrong admin token")
