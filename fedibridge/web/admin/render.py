"""Templates and the headers every admin answer carries (strict CSP, no framing, no caching).

Jinja2 with autoescaping; comment HTML reaches a template only through `comment_html`, which runs
it through the same sanitiser as the inbox (sanitize_remote), so a row written by an older version
or by hand cannot inject script into the owner's browser.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from ...sanitize import plain_text, sanitize_remote
from .i18n import Words

HERE = Path(__file__).parent
STATIC = {"admin.css": "text/css", "admin.js": "text/javascript"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def safe_url(value: str | None) -> str | None:
    """Only http(s) links leave the page; anything else (javascript:, data:) is dropped."""
    if not value or urlsplit(value).scheme not in ("http", "https"):
        return None
    return value


def comment_html(value: str | None) -> Markup:
    return Markup(sanitize_remote(value or ""))  # noqa: S704 (sanitised just here)


def excerpt(value: str | None, limit: int = 160) -> str:
    return plain_text(value or "", limit)


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


ENV = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                  trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(safe_url=safe_url, comment_html=comment_html, excerpt=excerpt, when=when, iso=iso)

_STATIC_BODIES = {name: (HERE / "static" / name).read_bytes() for name in STATIC}
STATIC_VERSION = hashlib.sha256(b"".join(_STATIC_BODIES.values())).hexdigest()[:12]


def secure(resp: web.StreamResponse) -> web.StreamResponse:
    for k, v in SECURITY_HEADERS.items():
        resp.headers[k] = v
    return resp


def html(template: str, words: Words, http_status: int = 200, **context: Any) -> web.Response:
    body = ENV.get_template(template).render(t=words, lang=words.lang, static_version=STATIC_VERSION, **context)
    resp = web.Response(text=body, status=http_status, content_type="text/html", charset="utf-8")
    secure(resp)
    return resp


def redirect(location: str) -> web.Response:
    """303 See Other: after a form POST the browser GETs the page again (no re-post on reload)."""
    resp = web.Response(status=303, headers={"Location": location})
    secure(resp)
    return resp


async def static(request: web.Request) -> web.Response:
    """The page's own CSS and JS (CSP allows no inline code); versioned URLs, so cached for a day."""
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    resp = web.Response(body=_STATIC_BODIES[name], headers={"Content-Type": f"{STATIC[name]}; charset=utf-8",
                                                            "Cache-Control": "private, max-age=86400"})
    secure(resp)
    resp.headers["Cache-Control"] = "private, max-age=86400"
    return resp
