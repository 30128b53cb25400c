"""Remote ActivityStreams JSON (compacted, as servers send it) into typed records.

Pure: nothing here fetches or expands JSON-LD. Every server shapes the same idea a little
differently (a value or a list, an id or an embedded object, a URL or a Link), so the small
helpers below absorb that and the parsers stay readable. Server quirks are named where handled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from .hosts import netloc_of
from .models import Attachment, Author
from .remote_json import cleaned
from .sanitize import plain_text, sanitize_remote, text_to_html

__all__ = [
    "PUBLIC_IDS",
    "RemoteActor",
    "RemoteNote",
    "as_list",
    "is_public",
    "parse_actor",
    "parse_datetime",
    "parse_note",
    "ref_id",
    "visibility",
]

PUBLIC_IDS = frozenset({"https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public"})
ACTOR_TYPES = frozenset({"Person", "Service", "Application", "Group", "Organization"})
NOTE_TYPES = frozenset({"Note", "Article", "Page", "Question", "Event", "Video", "Audio", "Image"})
MEDIA_PREFIXES = ("image/", "video/", "audio/")
MEDIA_TYPES = frozenset({"Image", "Video", "Audio"})

_SHORTCODE_RE = re.compile(r"^:?([A-Za-z0-9_]{1,64}):?$")
_LANG_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")

Emojis = tuple[tuple[str, str], ...]


# -- small helpers -------------------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    """A JSON-LD value as a list: AS2 lets a single value stand where a list is usual."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def ref_id(value: Any) -> str | None:
    """The id of a reference given as a string, an embedded object, or a list of either."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        return ref_id(value.get("id"))
    if isinstance(value, (list, tuple)):
        for item in value:
            found = ref_id(item)
            if found:
                return found
    return None


def _ids(value: Any) -> tuple[str, ...]:
    return tuple(i for i in (ref_id(v) for v in as_list(value)) if i)


def is_public(obj: dict[str, Any]) -> bool:
    """Whether the public collection is addressed (any of its three spellings) in to or cc."""
    return any(i in PUBLIC_IDS for i in _ids(obj.get("to")) + _ids(obj.get("cc")))


def visibility(obj: dict[str, Any], followers_url: str | None = None) -> str:
    """Return "public" (Public in to), "unlisted" (Public only in cc) or "private".

    Followers-only and direct messages are both "private" for a blog: neither may be shown.
    ``followers_url`` is accepted for callers that know it; it does not change the answer.
    """
    del followers_url
    if any(i in PUBLIC_IDS for i in _ids(obj.get("to"))):
        return "public"
    if any(i in PUBLIC_IDS for i in _ids(obj.get("cc"))):
        return "unlisted"
    return "private"


def parse_datetime(value: Any) -> datetime | None:
    """ISO 8601 (with 'Z', an offset, fractional seconds) to an aware UTC datetime; else None."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text[-1:] in ("z", "Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _http_url(value: Any) -> str | None:
    """Only absolute http(s) URLs; anything else (javascript:, data:, relative) is dropped."""
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme in ("http", "https") and parts.netloc:
            return value.strip()
    return None


def _link_href(value: Any, prefer: str | None = None) -> str | None:
    """First usable URL of a ``url`` value: a string, a Link object, or a list of them.

    With ``prefer`` (e.g. "text/html"), a Link with that mediaType wins over the others.
    """
    candidates: list[tuple[str, str | None]] = []
    for item in as_list(value):
        if isinstance(item, str):
            candidates.append((item, None))
        elif isinstance(item, dict):
            href = item.get("href") if item.get("href") is not None else item.get("url")
            if isinstance(href, (dict, list)):
                href = _link_href(href, prefer)
            if isinstance(href, str):
                candidates.append((href, item.get("mediaType")))
    urls = [(u, m) for u, m in ((_http_url(c), m) for c, m in candidates) if u]
    if prefer:
        for url, media_type in urls:
            if media_type == prefer:
                return url
    return urls[0][0] if urls else None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _emojis(tags: Any) -> Emojis:
    """Custom emojis (``tag`` of type Emoji) as (":shortcode:", image URL) pairs.

    They stay as ``:shortcode:`` text in names and content; a renderer may swap in images.
    """
    found: dict[str, str] = {}
    for tag in as_list(tags):
        if not isinstance(tag, dict) or tag.get("type") != "Emoji":
            continue
        match = _SHORTCODE_RE.match(str(tag.get("name") or ""))
        url = _link_href(tag.get("icon"))
        if match and url:
            found.setdefault(f":{match.group(1)}:", url)
    return tuple(found.items())


def _required_url(doc: dict[str, Any], key: str, what: str) -> str:
    url = _http_url(ref_id(doc.get(key)))
    if not url:
        raise ValueError(f"{what} has no usable {key!r} (need an http(s) URL)")
    return url


# -- actors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteActor:
    """What we need to know about a remote account: where to deliver, how to verify, how to show."""

    id: str
    type: str
    preferred_username: str
    name: str | None
    url: str | None
    avatar: str | None
    inbox: str
    shared_inbox: str | None
    followers: str | None
    public_key_id: str | None
    public_key_pem: str | None
    domain: str
    emojis: Emojis = ()

    @property
    def handle(self) -> str:
        """The "@user@host" form; host from the actor id (WebFinger may say otherwise)."""
        return f"@{self.preferred_username}@{self.domain}"

    def to_author(self) -> Author:
        """The record shown next to a comment."""
        return Author(
            id=self.id,
            name=self.name,
            handle=self.handle,
            url=self.url or self.id,
            avatar=self.avatar,
            emojis=self.emojis,
        )


def _public_key(doc: dict[str, Any], actor_id: str) -> tuple[str | None, str | None]:
    """(key id, PEM) from ``publicKey``: an object, a list of them (Friendica, Misskey), or an id.

    Only a key whose ``owner`` is this actor (or unstated, inside the actor's own document) is its key: an
    actor document listing someone else's key must not make that key speak for this actor, nor the reverse.
    """
    keys = as_list(doc.get("publicKey"))
    objects = [k for k in keys if isinstance(k, dict) and isinstance(k.get("publicKeyPem"), str)]
    for key in objects:
        if ref_id(key.get("owner")) in (None, actor_id):
            return ref_id(key), key["publicKeyPem"]
    if objects:
        return None, None
    return ref_id(keys), None


def parse_actor(doc: dict[str, Any]) -> RemoteActor:
    """Parse an actor document; ``ValueError`` says what is missing when it cannot be used."""
    if not isinstance(doc, dict):
        raise ValueError("actor document is not a JSON object")
    doc = cleaned(doc)  # no control characters in names or URLs, nesting bounded (JSONTooDeep is a ValueError)
    actor_id = _required_url(doc, "id", "actor")
    kind = doc.get("type")
    kind = next((t for t in as_list(kind) if t in ACTOR_TYPES), None)
    if kind is None:
        raise ValueError(f"actor {actor_id} has type {doc.get('type')!r}, not an actor type")
    username = _text(doc.get("preferredUsername"))
    if not username:
        raise ValueError(f"actor {actor_id} has no preferredUsername")
    inbox = _required_url(doc, "inbox", f"actor {actor_id}")
    endpoints = doc.get("endpoints")
    if not isinstance(endpoints, dict):
        endpoints = {}
    # Misskey also puts sharedInbox at the top level.
    shared = _http_url(ref_id(endpoints.get("sharedInbox"))) or _http_url(ref_id(doc.get("sharedInbox")))
    key_id, pem = _public_key(doc, actor_id)
    return RemoteActor(
        id=actor_id,
        type=kind,
        preferred_username=username,
        name=_text(doc.get("name")),
        url=_link_href(doc.get("url"), prefer="text/html"),
        avatar=_link_href(doc.get("icon")),
        inbox=inbox,
        shared_inbox=shared,
        followers=_http_url(ref_id(doc.get("followers"))),
        public_key_id=key_id,
        public_key_pem=pem,
        domain=netloc_of(actor_id),
        emojis=_emojis(doc.get("tag")),
    )


# -- notes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteNote:
    """A remote post (usually a reply), its HTML already sanitised."""

    id: str
    type: str
    attributed_to: str
    in_reply_to: str | None
    content_html: str
    summary: str | None
    sensitive: bool
    language: str | None
    published: datetime | None
    updated: datetime | None
    url: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    attachments: tuple[Attachment, ...] = ()
    mentions: tuple[str, ...] = ()
    hashtags: tuple[str, ...] = ()
    emojis: Emojis = ()
    quote: str | None = None


def _attributed_to(value: Any) -> str | None:
    """First author: PeerTube and others list a Person next to a Group; prefer the Person."""
    items = as_list(value)
    for item in items:
        if isinstance(item, dict) and item.get("type") == "Person" and ref_id(item):
            return ref_id(item)
    return ref_id(items)


def _language(obj: dict[str, Any]) -> str | None:
    content_map = obj.get("contentMap")
    if isinstance(content_map, dict):
        for key in content_map:
            if isinstance(key, str) and _LANG_RE.match(key):
                return key
    lemmy = obj.get("language")  # Lemmy: {"identifier": "fr", "name": "Français"}
    identifier = lemmy.get("identifier") if isinstance(lemmy, dict) else None
    if isinstance(identifier, str) and _LANG_RE.match(identifier):
        return identifier
    return None


def _raw_content(obj: dict[str, Any]) -> str | None:
    """The HTML to sanitise, following what each server fills in."""
    content = obj.get("content")
    if isinstance(content, str) and content.strip():
        return content
    content_map = obj.get("contentMap")
    if isinstance(content_map, dict):
        for value in content_map.values():
            if isinstance(value, str) and value.strip():
                return value
    # Misskey without HTML: MFM source; we show it as plain text rather than render MFM.
    # (Pleroma sends ``source`` as a bare string, which is not this.)
    source = obj.get("source")
    if isinstance(source, dict) and source.get("mediaType") in ("text/x.misskeymarkdown", "text/plain"):
        if isinstance(source.get("content"), str) and source["content"].strip():
            return text_to_html(source["content"])
    # A Note with only a name: Misskey poll votes.
    name = obj.get("name")
    if isinstance(name, str) and name.strip():
        return text_to_html(name)
    return None


def _attachments(value: Any) -> tuple[Attachment, ...]:
    """Media only; Lemmy's link attachments, PropertyValues and friends are skipped."""
    found: list[Attachment] = []
    for item in as_list(value):
        if not isinstance(item, dict):
            continue
        url = _link_href(item.get("url")) or _link_href(item.get("href"))
        media_type = item.get("mediaType")
        if not isinstance(media_type, str):
            # Pleroma/Akkoma put mediaType on the Link objects inside ``url``.
            links = [u for u in as_list(item.get("url")) if isinstance(u, dict)]
            media_type = next((u["mediaType"] for u in links if isinstance(u.get("mediaType"), str)), None)
        is_media = (media_type or "").lower().startswith(MEDIA_PREFIXES)
        if url and (is_media or (media_type is None and item.get("type") in MEDIA_TYPES)):
            found.append(Attachment(url=url, media_type=media_type, alt=_text(item.get("name"))))
    return tuple(found)


def _tags(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    mentions: dict[str, None] = {}
    hashtags: dict[str, None] = {}
    for tag in as_list(value):
        if not isinstance(tag, dict):
            continue
        if tag.get("type") == "Mention":
            href = _http_url(tag.get("href"))
            if href:
                mentions[href] = None
        elif tag.get("type") == "Hashtag":
            name = _text(tag.get("name"))
            if name and name.lstrip("#"):
                hashtags[name.lstrip("#")] = None
    return tuple(mentions), tuple(hashtags)


def _quote(obj: dict[str, Any]) -> str | None:
    """Quoted post: FEP-044f/Mastodon ``quote``, Misskey ``_misskey_quote``, ``quoteUrl``, ``quoteUri``."""
    for key in ("quote", "_misskey_quote", "quoteUrl", "quoteUri"):
        url = _http_url(ref_id(obj.get(key)))
        if url:
            return url
    return None


def parse_note(obj: dict[str, Any]) -> RemoteNote:
    """Parse a Note-like object; ``ValueError`` says why when it cannot become a comment."""
    if not isinstance(obj, dict):
        raise ValueError("object is not a JSON object")
    obj = cleaned(obj)  # already clean when it came through remote_json.loads; stored payloads may predate that
    note_id = _http_url(ref_id(obj.get("id")))
    if not note_id:
        raise ValueError("object has no usable id (need an http(s) URL)")
    kind = next((t for t in as_list(obj.get("type")) if t in NOTE_TYPES), None)
    if kind is None:
        raise ValueError(f"object {note_id} has type {obj.get('type')!r}, not a note-like type")
    author = _http_url(_attributed_to(obj.get("attributedTo")))
    if not author:
        raise ValueError(f"object {note_id} has no attributedTo")
    attachments = _attachments(obj.get("attachment"))
    raw = _raw_content(obj)
    if raw is None and not attachments:
        raise ValueError(f"object {note_id} has no content, name or media")
    mentions, hashtags = _tags(obj.get("tag"))
    summary = plain_text(obj["summary"]) if isinstance(obj.get("summary"), str) else ""
    return RemoteNote(
        id=note_id,
        type=kind,
        attributed_to=author,
        in_reply_to=ref_id(obj.get("inReplyTo")),
        content_html=sanitize_remote(raw or ""),
        summary=summary or None,
        sensitive=obj.get("sensitive") is True,
        language=_language(obj),
        published=parse_datetime(obj.get("published")),
        updated=parse_datetime(obj.get("updated")),
        url=_link_href(obj.get("url"), prefer="text/html"),
        to=_ids(obj.get("to")),
        cc=_ids(obj.get("cc")),
        attachments=attachments,
        mentions=mentions,
        hashtags=hashtags,
        emojis=_emojis(obj.get("tag")),
        quote=_quote(obj),
    )
