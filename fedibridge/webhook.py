"""Signed webhook events telling the blog about its comments (created, edited, deleted, approved, rejected).

Events ride the delivery queue (kind="webhook") so they are retried and survive restarts; the delivery
worker POSTs the stored body with ``X-Fedibridge-Signature: sha256=<hex HMAC-SHA256(secret, body)>``.
Private (followers-only, direct) comments never produce events: the blog must never publish them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.engine import Connection

from .config import Settings
from .enqueue import enqueue_webhook
from .jsontext import dumps
from .models import Comment

Event = Literal["comment.created", "comment.edited", "comment.deleted", "comment.approved", "comment.rejected"]
EVENTS: tuple[str, ...] = ("comment.created", "comment.edited", "comment.deleted", "comment.approved",
                           "comment.rejected")
SIGNATURE_HEADER = "X-Fedibridge-Signature"


def sign(secret: str, body: bytes) -> str:
    """The header value: ``sha256=`` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (shown in the README): recompute and compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header.strip())


def event_body(event: Event, comment_json: dict[str, Any], article_slug: str, article_url: str,
               now: datetime) -> str:
    """The JSON event, UTF-8 text as stored and sent (accents and emoji unescaped)."""
    doc = {
        "event": event,
        "comment": comment_json,
        "article": {"slug": article_slug, "url": article_url},
        "sent_at": now.isoformat().replace("+00:00", "Z"),
    }
    return dumps(doc)


def emit(conn: Connection, settings: Settings, event: Event, comment: Comment,
               comment_json: dict[str, Any], article_url: str, now: datetime) -> bool:
    """Queue one event in the caller's transaction; False when no webhook is set or the comment is private."""
    if not settings.webhook_url or comment.visibility == "private":
        return False
    body = event_body(event, comment_json, comment.article, article_url, now)
    enqueue_webhook(conn, settings.webhook_url, body, now)
    return True


def headers(body: str, secret: str) -> dict[str, str]:
    """Headers for a webhook POST: the blog checks the HMAC before trusting the event."""
    raw = body.encode("utf-8")
    result = {"X-Fedibridge-Signature": sign(secret, raw)}
    try:
        event = json.loads(raw).get("event")
    except (ValueError, AttributeError):
        event = None
    if isinstance(event, str) and event.isprintable() and len(event) < 100:
        result["X-Fedibridge-Event"] = event
    return result
