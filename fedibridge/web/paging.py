"""Paging of the admin listings: `limit`, the legacy `offset`, and the keyset cursor behind `next`.

A cursor is "<microseconds since the epoch>-<row id>" of the last row shown: the next page starts strictly
after it, so rows arriving (or changing status) while a script walks the list never shift a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from ..errors import BadRequest

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CURSOR = 2**62


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int
    after: tuple[datetime, int] | None


def cursor(when: datetime, ident: int) -> str:
    delta = when.astimezone(UTC) - EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}-{ident}"


def parse_cursor(raw: str) -> tuple[datetime, int]:
    micros, sep, ident = raw.rpartition("-")
    if not sep or not ident.isdigit() or not micros.lstrip("-").isdigit() or abs(int(micros)) > MAX_CURSOR:
        raise BadRequest("after must be a cursor taken from a 'next' URL")
    try:
        return EPOCH + timedelta(microseconds=int(micros)), int(ident)
    except OverflowError:
        raise BadRequest("after must be a cursor taken from a 'next' URL") from None


def page_params(request: web.Request, *, default: int, maximum: int) -> Page:
    """`limit` (clamped to 1..maximum), `offset` (kept for old scripts), `after` (the cursor of `next`)."""
    q = request.query
    try:
        limit = min(maximum, max(1, int(q.get("limit", str(default)))))
        offset = max(0, int(q.get("offset", "0")))
    except ValueError:
        raise BadRequest("limit and offset must be integers") from None
    after = parse_cursor(q["after"]) if q.get("after") else None
    if after is not None and offset:
        raise BadRequest("use either after (from 'next') or offset, not both")
    return Page(limit, offset, after)


def next_url(request: web.Request, base: str, after: str) -> str:
    """This listing's URL at the public origin, same filters and limit, starting after the last row shown."""
    origin = urlsplit(base)
    params: dict[str, Any] = {k: v for k, v in request.query.items() if k not in ("after", "offset")}
    params["after"] = after
    return f"{origin.scheme}://{origin.netloc}{request.path}?{urlencode(params)}"
