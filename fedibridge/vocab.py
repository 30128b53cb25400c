"""ActivityStreams documents for the blog's actor, its articles and the activities about them.

Pure functions: plain values in, compacted JSON-ready dicts out, shaped like what Mastodon itself
serves so that Mastodon, Misskey, Pleroma/Akkoma, GoToSocial and friends read them without JSON-LD
expansion. No I/O and no clock: every timestamp is passed in. HTML given here is already sanitised
(``Article.content``); this module only escapes the plain text it wraps in markup.
"""

from __future__ import annotations

import html
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

from fedibridge.mediatypes import media_type as media_type  # re-exported: vocab.media_type
from fedibridge.models import Article
from fedibridge.sanitize import plain_text
from fedibridge.site import Site as Site  # re-exported: vocab.Site is what most callers use

AS_PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
ACTIVITY_JSON = "application/activity+json"
SOFTWARE_NAME = "fedibridge"
PREVIEW_CHARS = 500  # FEP-b2b8 suggests summaries of about 500 characters

# Mastodon's own @context (app/lib/activitypub/adapter.rb and friends), so that compacted
# term names mean the same thing to every JSON-LD aware receiver.
CONTEXT: list[Any] = [
    "https://www.w3.org/ns/activitystreams",
    "https://w3id.org/security/v1",
    {
        "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
        "sensitive": "as:sensitive",
        "Hashtag": "as:Hashtag",
        "toot": "http://joinmastodon.org/ns#",
        "featured": {"@id": "toot:featured", "@type": "@id"},
        "featuredTags": {"@id": "toot:featuredTags", "@type": "@id"},
        "discoverable": "toot:discoverable",
        "indexable": "toot:indexable",
        "memorial": "toot:memorial",
        "Emoji": "toot:Emoji",
        "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
        "blurhash": "toot:blurhash",
        "movedTo": {"@id": "as:movedTo", "@type": "@id"},
        "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"},
        "attributionDomains": {"@id": "toot:attributionDomains", "@type": "@id"},
        # FEP-044f quote posts, with GoToSocial's interaction policy terms (as Mastodon 4.5 serves them).
        "gts": "https://gotosocial.org/ns#",
        "interactionPolicy": {"@id": "gts:interactionPolicy", "@type": "@id"},
        "canQuote": {"@id": "gts:canQuote", "@type": "@id"},
        "automaticApproval": {"@id": "gts:automaticApproval", "@type": "@id"},
        "manualApproval": {"@id": "gts:manualApproval", "@type": "@id"},
        "interactingObject": {"@id": "gts:interactingObject", "@type": "@id"},
        "interactionTarget": {"@id": "gts:interactionTarget", "@type": "@id"},
        "quote": {"@id": "https://w3id.org/fep/044f#quote", "@type": "@id"},
        "quoteAuthorization": {"@id": "https://w3id.org/fep/044f#quoteAuthorization", "@type": "@id"},
        "QuoteRequest": "https://w3id.org/fep/044f#QuoteRequest",
        "QuoteAuthorization": "https://w3id.org/fep/044f#QuoteAuthorization",
        "schema": "http://schema.org#",
        "PropertyValue": "schema:PropertyValue",
        "value": "schema:value",
    },
]

# Mastodon's HASHTAG_SEPARATORS: characters a hashtag may contain besides letters and digits.
_TAG_SEPARATORS = "_\u00b7\u30fb\u200c"
_TAG_SPLIT = re.compile(rf"[^\w{_TAG_SEPARATORS}]+")
_LOOKS_HTML = re.compile(r"<[a-zA-Z/!]")


# --- small helpers -------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC, second precision, 'Z' suffix: the form every server parses.

    Naive datetimes are taken as UTC (that is how the store keeps them).
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hashtag_name(tag: str) -> str | None:
    """Turn a blog tag into a name Mastodon accepts as a hashtag, or None if it cannot be one.

    Mastodon hashtags allow only letters, digits and a few separators (``_``, ``·``, ``・``, ZWNJ)
    and need at least one letter. Words are joined CamelCase, keeping accents and the case of
    the first word: "été ensoleillé" → "étéEnsoleillé", "vie-privée" → "viePrivée".
    """
    words = [w for w in _TAG_SPLIT.split(unicodedata.normalize("NFC", tag).strip().lstrip("#")) if w]
    if not words:
        return None
    name = words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])
    name = name.strip(_TAG_SEPARATORS[1:])  # Mastodon's pattern may not start/end with · or ・
    if not any(ch.isalpha() for ch in name):
        return None
    return name


def _text(value: str) -> str:
    return html.escape(value, quote=False)


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def _as_html(text: str) -> str:
    """Wrap plain text in paragraphs; leave (already sanitised) HTML alone."""
    if _LOOKS_HTML.search(text):
        return text
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join(f"<p>{_text(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)


def _strip_context(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "@context"}


def _image(url: str, name: str | None = None) -> dict[str, Any]:
    mime = media_type(url)
    kind = "Image" if mime is None or mime.startswith("image/") else "Document"
    doc: dict[str, Any] = {"type": kind, "url": url}
    if mime:
        doc["mediaType"] = mime
    if name:
        doc["name"] = name
    return doc


# --- actor -----------------------------------------------------------------------------------


def actor_document(site: Site, moved_to: str | None = None) -> dict[str, Any]:
    """The blog's actor, as a Person so Mastodon shows the usual follow button (not a bot badge).

    `moved_to`: the account this one moved to (`fedibridge move`), read from the database by the caller.
    """
    blog_host = site.blog_url.split("://", 1)[-1].rstrip("/")
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "id": site.actor_id,
        "type": "Person",
        "preferredUsername": site.username,
        "name": site.name,
        "summary": _as_html(site.summary),
        "url": site.blog_url,
        "inbox": site.inbox,
        "outbox": site.outbox,
        "followers": site.followers,
        "following": site.following,
        "featured": site.featured,
        "endpoints": {"sharedInbox": site.shared_inbox},
        "publicKey": {"id": site.key_id, "owner": site.actor_id, "publicKeyPem": site.public_key_pem},
        "manuallyApprovesFollowers": False,  # follows are always accepted (followers.py)
        "discoverable": site.discoverable,
        "indexable": site.indexable,
        "published": iso(site.published),
        "attachment": [
            {
                "type": "PropertyValue",
                "name": "Blog",
                "value": f'<a href="{_attr(site.blog_url)}" rel="me nofollow noopener" target="_blank">'
                f"{_text(blog_host)}</a>",
            }
        ],
        "tag": [],
    }
    if site.also_known_as:
        doc["alsoKnownAs"] = list(site.also_known_as)
    if site.attribution_domains:
        doc["attributionDomains"] = list(site.attribution_domains)
    if moved_to:
        doc["movedTo"] = moved_to
    if site.icon_url:
        doc["icon"] = _image(site.icon_url)
    if site.header_url:
        doc["image"] = _image(site.header_url)
    return doc


# --- articles --------------------------------------------------------------------------------


def _hashtags(site: Site, article: Article) -> list[tuple[str, str]]:
    """(name, href) pairs, deduplicated case-insensitively as Mastodon does."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for tag in article.tags:
        name = hashtag_name(tag)
        if name is None or name.lower() in seen:
            continue
        seen.add(name.lower())
        out.append((name, site.tag_url(tag)))
    return out


def _excerpt_html(article: Article) -> str:
    if article.summary and article.summary.strip():
        return _as_html(article.summary)
    plain = plain_text(article.content, PREVIEW_CHARS)
    return f"<p>{_text(plain)}</p>" if plain else ""


def _note_content(site: Site, article: Article, tags: list[tuple[str, str]], full: bool) -> str:
    """Mastodon-friendly body: bold title, excerpt or full text, link back, hashtag links."""
    parts = [f"<p><strong>{_text(article.title)}</strong></p>"]
    parts.append(article.content if full else _excerpt_html(article))
    parts.append(f'<p><a href="{_attr(article.url)}">{_text(article.url)}</a></p>')
    if tags:
        links = " ".join(
            f'<a href="{_attr(href)}" class="mention hashtag" rel="tag">#<span>{_text(name)}</span></a>'
            for name, href in tags
        )
        parts.append(f"<p>{links}</p>")
    return "".join(parts)


def _replies(site: Site, slug: str) -> dict[str, Any]:
    """Mastodon's replies shape: a Collection whose first page is embedded and empty."""
    replies = site.replies_id(slug)
    return {
        "id": replies,
        "type": "Collection",
        "first": {"type": "CollectionPage", "next": f"{replies}?page=1", "partOf": replies, "items": []},
    }


def article_object(site: Site, article: Article) -> dict[str, Any]:
    """The article as a Note (default: reads well in Mastodon timelines) or a FEP-b2b8 Article.

    The Article form carries the full HTML in ``content``, the title in ``name``, a short
    ``summary`` and a ``preview`` Note that microblogging servers can show instead.
    """
    tags = _hashtags(site, article)
    language = article.language or site.language
    obj: dict[str, Any] = {
        "@context": CONTEXT,
        "id": site.article_id(article.slug),
        "type": site.object_type,
        "attributedTo": site.actor_id,
        "url": article.url,
        "published": iso(article.published),
        "to": [AS_PUBLIC],
        "cc": [site.followers],
        "mediaType": "text/html",
    }
    if article.updated is not None:
        obj["updated"] = iso(article.updated)
    if site.object_type == "Article":
        obj["name"] = article.title
        obj["content"] = article.content
        summary = _excerpt_html(article)
        if summary:
            obj["summary"] = summary
        preview: dict[str, Any] = {
            "type": "Note",
            "attributedTo": site.actor_id,
            "content": _note_content(site, article, tags, full=False),
        }
        if language:
            preview["contentMap"] = {language: preview["content"]}
        if article.image:
            preview["attachment"] = [_image(article.image, article.image_alt)]
            obj["image"] = _image(article.image, article.image_alt)
        obj["preview"] = preview
    else:
        obj["content"] = _note_content(site, article, tags, full=site.content_mode == "full")
    if language:
        obj["contentMap"] = {language: obj["content"]}
        if "name" in obj:
            obj["nameMap"] = {language: obj["name"]}
    if article.sensitive or article.content_warning:
        obj["sensitive"] = True
        if article.content_warning:
            # Mastodon shows `summary` as the content warning; it wins over the excerpt.
            obj["summary"] = _text(article.content_warning)
    obj["tag"] = [{"type": "Hashtag", "href": href, "name": f"#{name}"} for name, href in tags]
    obj["attachment"] = [_image(article.image, article.image_alt)] if article.image else []
    obj["replies"] = _replies(site, article.slug)
    obj["interactionPolicy"] = {"canQuote": {"automaticApproval": site.quote_approval}}
    return obj



# --- activities ------------------------------------------------------------------------------


def _activity(site: Site, kind: str, activity_key: str, obj: Any, when: datetime,
              to: list[str], cc: list[str]) -> dict[str, Any]:
    return {
        "@context": CONTEXT,
        "id": site.activity_id(activity_key),
        "type": kind,
        "actor": site.actor_id,
        "published": iso(when),
        "to": to,
        "cc": cc,
        "object": obj,
    }


def create_activity(site: Site, obj: dict[str, Any], activity_key: str,
                    published: datetime) -> dict[str, Any]:
    """Create wrapping the object; addressing copied from it, as Mastodon requires them to agree."""
    inner = _strip_context(obj)
    return _activity(site, "Create", activity_key, inner, published,
                     list(inner.get("to", [AS_PUBLIC])), list(inner.get("cc", [site.followers])))


def update_activity(site: Site, obj: dict[str, Any], activity_key: str, updated: datetime) -> dict[str, Any]:
    """Update wrapping the new object.

    Mastodon ignores an Update of a status whose object has no newer ``updated``, so it is set
    here when the caller's object lacks it.
    """
    inner = _strip_context(obj)
    inner.setdefault("updated", iso(updated))
    return _activity(site, "Update", activity_key, inner, updated,
                     list(inner.get("to", [AS_PUBLIC])), list(inner.get("cc", [site.followers])))


def delete_activity(site: Site, object_id: str, activity_key: str, deleted: datetime) -> dict[str, Any]:
    """Delete of one of our objects; the object is a bare Tombstone, as Mastodon sends it."""
    return _activity(site, "Delete", activity_key, {"id": object_id, "type": "Tombstone"}, deleted,
                     [AS_PUBLIC], [site.followers])


def tombstone(object_id: str, deleted: datetime, former_type: str) -> dict[str, Any]:
    """What a deleted article's URL serves (with HTTP 410) so fetchers learn it is gone."""
    return {
        "@context": CONTEXT,
        "id": object_id,
        "type": "Tombstone",
        "formerType": former_type,
        "deleted": iso(deleted),
    }


def accept_follow(site: Site, follow: dict[str, Any], activity_key: str) -> dict[str, Any]:
    """Accept of a Follow; the Follow is echoed with its own id so the follower's server matches it."""
    inner = {k: follow[k] for k in ("id", "type", "actor", "object") if k in follow}
    inner.setdefault("type", "Follow")
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "id": site.activity_id(activity_key),
        "type": "Accept",
        "actor": site.actor_id,
        "object": inner,
    }
    follower = follow.get("actor")
    if isinstance(follower, dict):
        follower = follower.get("id")
    if isinstance(follower, str):
        doc["to"] = [follower]
    return doc


# --- collections -----------------------------------------------------------------------------


def ordered_collection(id: str, total: int, first: str | None, last: str | None = None) -> dict[str, Any]:
    """Collection head (outbox, followers, featured): counts plus links to pages."""
    doc: dict[str, Any] = {"@context": CONTEXT, "id": id, "type": "OrderedCollection", "totalItems": total}
    if first is not None:
        doc["first"] = first
    if last is not None:
        doc["last"] = last
    return doc


def ordered_collection_page(id: str, part_of: str, items: list[Any], next: str | None,
                            prev: str | None) -> dict[str, Any]:
    """One page of a collection; embedded items lose their own @context (the page has one)."""
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "id": id,
        "type": "OrderedCollectionPage",
        "partOf": part_of,
        "orderedItems": [_strip_context(i) if isinstance(i, dict) else i for i in items],
    }
    if next is not None:
        doc["next"] = next
    if prev is not None:
        doc["prev"] = prev
    return doc
