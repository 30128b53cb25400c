"""ActivityStreams documents about the account itself: Move (migration), Add/Remove (pins), quote consent.

Pure like vocab.py: plain values in, compacted JSON-ready dicts out, shaped as Mastodon sends them
(app/serializers/activitypub/move_serializer.rb, add_serializer.rb, and Mastodon 4.5's FEP-044f
quote_authorization_serializer.rb), so Mastodon, GoToSocial and friends act on them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .vocab import AS_PUBLIC, CONTEXT, Site, iso


def move_activity(site: Site, target: str, activity_key: str, when: datetime) -> dict[str, Any]:
    """Move of the blog actor to `target`. Mastodon checks that `object` is the sender and that the target's
    alsoKnownAs lists it, then makes each of its local followers follow the target."""
    return {
        "@context": CONTEXT,
        "id": site.activity_id(activity_key),
        "type": "Move",
        "actor": site.actor_id,
        "object": site.actor_id,
        "target": target,
        "published": iso(when),
        "to": [site.followers],
    }


def featured_change(site: Site, kind: str, object_id: str, activity_key: str, when: datetime) -> dict[str, Any]:
    """Add (pin) or Remove (unpin) of an article to the featured collection; `target` is what Mastodon
    compares with the actor's `featured` before touching its pins."""
    return {
        "@context": CONTEXT,
        "id": site.activity_id(activity_key),
        "type": kind,
        "actor": site.actor_id,
        "object": object_id,
        "target": site.featured,
        "published": iso(when),
        "to": [AS_PUBLIC],
        "cc": [site.followers],
    }


def featured_collection(site: Site, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The featured collection with its items embedded and no pages, as Mastodon serves (and reads) it."""
    return {
        "@context": CONTEXT,
        "id": site.featured,
        "type": "OrderedCollection",
        "totalItems": len(items),
        "orderedItems": [{k: v for k, v in i.items() if k != "@context"} for i in items],
    }


def quote_authorization(site: Site, key: str, quoting: str, quoted: str) -> dict[str, Any]:
    """The stamp a quoting server shows to prove consent (FEP-044f): served at its id while consent stands."""
    return {
        "@context": CONTEXT,
        "id": site.quote_authorization_id(key),
        "type": "QuoteAuthorization",
        "attributedTo": site.actor_id,
        "interactingObject": quoting,
        "interactionTarget": quoted,
    }


def answer_quote_request(site: Site, kind: str, request: dict[str, Any], sender: str, activity_key: str,
                         authorization: str | None = None) -> dict[str, Any]:
    """Accept (with `result` = the QuoteAuthorization's id) or Reject of a QuoteRequest.

    The request is echoed with its id, type, actor, object and instrument id, so the quoting server can
    match it whether it looks at the embedded copy or the id alone.
    """
    inner: dict[str, Any] = {"id": request.get("id"), "type": "QuoteRequest", "actor": sender,
                             "object": request.get("object")}
    instrument = request.get("instrument")
    if isinstance(instrument, dict):
        instrument = instrument.get("id")
    if isinstance(instrument, str):
        inner["instrument"] = instrument
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "id": site.activity_id(activity_key),
        "type": kind,
        "actor": site.actor_id,
        "to": [sender],
        "object": inner,
    }
    if authorization is not None:
        doc["result"] = authorization
    return doc
