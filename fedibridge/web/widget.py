"""Serve the embeddable comments widget (`{prefix}/widget.js`).

The file is static, so it is read and hashed once at start-up: every blog page load then costs a 304
(strong ETag) or a cached copy (five minutes, short enough that an upgrade reaches readers the same day).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aiohttp import web

WIDGET_FILE = Path(__file__).with_name("widget") / "widget.js"
CONTENT_TYPE = "application/javascript; charset=utf-8"
CACHE_CONTROL = "public, max-age=300"

_BODY = web.AppKey("widget_body", bytes)
_ETAG = web.AppKey("widget_etag", str)


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match may list several tags, weak ones included (RFC 9110 §13.1.2 uses weak comparison)."""
    if header.strip() == "*":
        return True
    bare = etag.strip('"')
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == bare:
            return True
    return False


async def widget_js(request: web.Request) -> web.Response:
    """The script any page may load (`<script src=… async>`), hence the wildcard CORS header."""
    etag = request.app[_ETAG]
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "Access-Control-Allow-Origin": "*",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if _etag_matches(request.headers.get("If-None-Match", ""), etag):
        return web.Response(status=304, headers=headers)
    resp = web.Response(body=request.app[_BODY], headers=headers)
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp


def setup(app: web.Application, prefix: str) -> None:
    """Load the widget once and route it; a missing file is a packaging bug, so fail loudly at start."""
    body = WIDGET_FILE.read_bytes()
    app[_BODY] = body
    app[_ETAG] = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    app.router.add_get(prefix + "/widget.js", widget_js)
