"""Following the blog's own feed: RSS 0.9x/1.0/2.0 and Atom (feedparser) and JSON Feed (parsed here).

`run(services)` polls `source_feed` every `feed_poll_interval` seconds with a conditional GET, publishes
new entries and updates changed ones; entries that vanish from the feed are left alone (feeds only
hold the latest N). One transaction per entry: a failure never leaves an article half-published.
The very first successful poll records the blog's existing entries like `fedibridge import` does,
without delivering them, so turning the option on does not flood followers with old posts.
"""

from __future__ import annotations

import asyncio
import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import feedparser
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from . import articles, remote_json
from .enclosures import measure_images
from .errors import BadRequest, FedibridgeError, FetchError, Gone
from .health import Backoff, is_storage_outage
from .logsafe import logger
from .sanitize import plain_text, text_to_html
from .services import Services
from .store import Store, insert_ignore, utcnow
from .tables import feed_state
from .vocab import Site, media_type

log = logger(__name__)  # arguments escaped and redacted (logsafe)
LEASE = "feed-poll"
TASK = "feedsource"  # its name in /healthz (the job's name)
TITLE_FALLBACK_CHARS = 80
FEED_ACCEPT = ("application/rss+xml, application/atom+xml, application/feed+json, application/rdf+xml;q=0.9, "
               "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5")
_LANG_OK = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_HTML_TYPES = ("text/html", "application/xhtml+xml")


class FeedError(FedibridgeError):
    """The feed could not be read or is not a feed; the message says which and why."""


@dataclass(frozen=True)
class Entry:
    guid: str
    data: dict[str, Any]  # admin API article fields


@dataclass
class PollResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    not_modified: bool = False
    error: str | None = None
    slugs: list[str] = field(default_factory=list)


# --- parsing (pure) --------------------------------------------------------------------------


def _lang(*candidates: Any) -> str | None:
    for value in candidates:
        if isinstance(value, str) and _LANG_OK.match(value.strip()):
            return value.strip()
    return None


def _struct_to_iso(value: Any) -> str | None:
    if not value:
        return None
    return datetime.fromtimestamp(calendar.timegm(value), UTC).isoformat()  # struct_time in UTC


def _is_image(url: str | None, mime: str | None) -> bool:
    if not url:
        return False
    if mime:
        return mime.startswith("image/")
    guessed = media_type(url)
    return bool(guessed and guessed.startswith("image/"))


def _image_of(entry: Any) -> tuple[str | None, str | None]:
    """Enclosure first (WordPress, Hugo), then media:content (Ghost), then media:thumbnail."""
    for enc in entry.get("enclosures", []):
        if _is_image(enc.get("href"), enc.get("type")):
            return enc["href"], enc.get("title") or None
    for media in entry.get("media_content", []):
        if media.get("medium") == "image" or _is_image(media.get("url"), media.get("type")):
            if media.get("url"):
                return media["url"], media.get("title") or None
    for thumb in entry.get("media_thumbnail", []):
        if thumb.get("url"):
            return thumb["url"], None
    return None, None


class _Images(HTMLParser):
    """Collects (src, alt) of <img> tags: WordPress only puts the featured image inside the content."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            a = dict(attrs)
            src = a.get("src") or ""
            if src.startswith(("http://", "https://")):
                self.found.append((src, (a.get("alt") or "").strip() or None))


def _content_images(content: str | None) -> list[tuple[str, str | None]]:
    parser = _Images()
    parser.feed(content or "")
    parser.close()
    return parser.found


def _pick_image(image: str | None, alt: str | None, content: str | None) -> tuple[str | None, str | None]:
    """The feed's image, else the first image of the content; alt text from the content's <img> if needed."""
    found = _content_images(content)
    if image is None:
        return found[0] if found else (None, None)
    if alt is None:
        alt = next((a for src, a in found if src == image), None)
    return image, alt


def _text_of(value: Any, detail: Any) -> Any:
    """Titles and teasers as plain text, even when the feed marks them as HTML (Jekyll, WordPress)."""
    if isinstance(value, str) and (detail or {}).get("type") in _HTML_TYPES:
        return plain_text(value)
    return value


def _with_title(data: dict[str, Any]) -> dict[str, Any]:
    """Title-less posts (microblog-style JSON Feed or RSS items) get their opening words as title."""
    if not (data.get("title") or "").strip() and isinstance(data.get("content"), str):
        data["title"] = plain_text(data["content"], TITLE_FALLBACK_CHARS)
    return data


def _xml_entries(parsed: Any) -> list[Entry]:
    feed_lang = _lang(parsed.feed.get("language"), (parsed.feed.get("title_detail") or {}).get("language"))
    out: list[Entry] = []
    for e in parsed.entries:
        content_items = e.get("content") or []
        html_items = [c for c in content_items if c.get("type") in _HTML_TYPES] or content_items
        summary = _text_of(e.get("summary"), e.get("summary_detail"))
        if html_items:
            content = html_items[0].get("value")
            lang_hint = html_items[0].get("language")
            if summary and plain_text(summary) == plain_text(content or ""):
                summary = None
        else:
            content, summary = e.get("summary"), None
            lang_hint = (e.get("summary_detail") or {}).get("language")
        image, alt = _pick_image(*_image_of(e), content)
        data = {
            "title": _text_of(e.get("title"), e.get("title_detail")),
            "url": e.get("link"),
            "content": content,
            "summary": summary,
            "tags": [t["term"] for t in e.get("tags", []) if t.get("term")],
            "published": _struct_to_iso(e.get("published_parsed") or e.get("updated_parsed")),
            "language": _lang(lang_hint, feed_lang),
            "image": image,
            "image_alt": alt,
        }
        out.append(Entry(str(e.get("id") or e.get("link") or ""), _with_title(data)))
    return out


def _json_entries(doc: Any) -> list[Entry]:
    """JSON Feed 1.0/1.1 (https://jsonfeed.org/version/1.1); feedparser does not read it."""
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith("https://jsonfeed.org/version/"):
        raise FeedError("JSON document is not a JSON Feed (no jsonfeed.org version)")
    items = doc.get("items")
    if not isinstance(items, list):
        raise FeedError("JSON Feed has no items list")
    feed_lang = _lang(doc.get("language"))
    out: list[Entry] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        content = item.get("content_html")
        if not content and isinstance(item.get("content_text"), str):
            content = text_to_html(item["content_text"])
        image, _ = _pick_image(item.get("image") or item.get("banner_image"), None, content)
        raw_tags = item.get("tags")
        tags: list[Any] = raw_tags if isinstance(raw_tags, list) else []
        data = {
            "title": item.get("title"),
            "url": item.get("url") or item.get("external_url"),
            "content": content,
            "summary": item.get("summary"),
            "tags": [str(t) for t in tags],
            "published": item.get("date_published") or item.get("date_modified"),
            "language": _lang(item.get("language"), feed_lang),
            "image": image,
        }
        out.append(Entry(str(item.get("id") or item.get("url") or ""), _with_title(data)))
    return out


def parse_feed(body: bytes, content_type: str = "") -> list[Entry]:
    """Entries of any supported feed, in feed order; FeedError when it is not a feed at all."""
    if "json" in content_type.lower() or body.lstrip()[:1] == b"{":
        try:
            doc = remote_json.loads(body.decode("utf-8-sig"))
        except ValueError as exc:
            raise FeedError(f"invalid JSON Feed: {exc}") from None
        return _json_entries(doc)
    headers = {"content-type": content_type} if content_type else {}
    parsed = feedparser.parse(body, response_headers=headers)
    if not parsed.get("version") and not parsed.entries:
        reason = parsed.get("bozo_exception") or "no RSS, Atom or JSON Feed found"
        raise FeedError(f"not a feed: {reason}")
    return _xml_entries(parsed)


# --- fetching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    status: int  # 200 or 304
    body: bytes = b""
    content_type: str = ""
    etag: str | None = None
    last_modified: str | None = None


async def fetch(client: Any, source: str, etag: str | None = None, modified: str | None = None) -> Fetched:
    """Conditional GET through the guarded client, or a read of a local file."""
    if not source.startswith(("http://", "https://")):
        try:
            return Fetched(200, await asyncio.to_thread(Path(source).read_bytes))
        except OSError as exc:
            raise FeedError(f"cannot read {source}: {exc.strerror}") from None
    headers = {"Accept": FEED_ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    resp = await client.get(source, headers=headers)
    if resp.status == 304:
        return Fetched(304, etag=etag, last_modified=modified)
    if resp.status != 200:
        raise FeedError(f"HTTP {resp.status}")
    return Fetched(200, resp.body, resp.headers.get("content-type", ""), resp.headers.get("etag"),
                   resp.headers.get("last-modified"))


# --- publishing ------------------------------------------------------------------------------


async def publish_entries(store: Store, site: Site, entries: list[Entry], *, deliver: bool, source: str,
                          progress: Callable[[int, int], None] | None = None) -> PollResult:
    """Oldest first, so the outbox order follows the blog's; one transaction per entry."""
    result = PollResult()
    ordered = list(reversed(entries))
    for done, entry in enumerate(ordered, 1):
        try:
            inp = articles.validate(entry.data, source=source, source_guid=entry.guid or None)
            outcome = await articles.publish_one(store, site, inp, deliver=deliver)
        except Gone:
            result.skipped += 1  # deleted on purpose: a feed still listing it must not revive it
        except BadRequest as exc:
            result.skipped += 1
            log.warning("feed entry %s skipped: %s", entry.guid or entry.data.get("url"), exc)
        else:
            if outcome.created:
                result.created += 1
                result.slugs.append(outcome.article.slug)
            elif outcome.changed:
                result.updated += 1
                result.slugs.append(outcome.article.slug)
            else:
                result.unchanged += 1
        if progress is not None:
            progress(done, len(ordered))
    return result


async def _state(store: Store, source: str) -> Any:
    async with store.connect() as conn:
        return (await conn.execute(select(feed_state).where(feed_state.c.url == source))).first()


async def _save_state(store: Store, source: str, **values: Any) -> None:
    async with store.begin() as conn:
        await conn.execute(insert_ignore(conn, feed_state).values(url=source))
        await conn.execute(feed_state.update().where(feed_state.c.url == source).values(**values))


async def poll_once(services: Services, source: str | None = None) -> PollResult:
    """One poll of the source feed; never raises for feed problems (logs one line, retries next time)."""

    settings = services.settings
    store = services.store
    source = source or settings.source_feed
    state = await _state(store, source)
    first = state is None or state.last_polled is None
    try:
        fetched = await fetch(services.client, source, state.etag if state else None,
                              state.last_modified if state else None)
        if fetched.status == 304:
            await _save_state(store, source, last_polled=utcnow(), last_error=None)
            services.metrics.inc("fedibridge_feed_polls_total", result="not_modified")
            return PollResult(not_modified=True)
        entries = parse_feed(fetched.body, fetched.content_type)
    except (FeedError, FetchError) as exc:
        log.warning("source feed %s: cannot fetch or parse (%s); will retry in %d s",
                    source, exc, settings.feed_poll_interval)
        await _save_state(store, source, last_error=str(exc)[:1000])
        services.metrics.inc("fedibridge_feed_polls_total", result="error")
        return PollResult(error=str(exc))
    result = await publish_entries(store, services.site, entries, deliver=not first, source="feed")
    await measure_images(services.client, store, result.slugs)  # the RSS enclosures' sizes
    # Validators are saved only now: had anything failed above, the next poll fetches the feed again.
    await _save_state(store, source, etag=fetched.etag, last_modified=fetched.last_modified,
                      last_polled=utcnow(), last_error=None)
    services.metrics.inc("fedibridge_feed_polls_total", result="ok")
    if result.created or result.updated:
        log.info("source feed %s: %d new, %d updated%s", source, result.created, result.updated,
                 " (first poll: recorded without delivery)" if first else "")
    return result


async def run(services: Services) -> None:
    """Background job: poll while holding the lease, so one worker of many does it."""

    settings = services.settings
    if not settings.source_feed:
        return
    interval = settings.feed_poll_interval
    ttl = timedelta(seconds=max(2 * interval, 60))
    health, retry = services.health, Backoff(first=1.0, cap=30.0)
    while True:
        try:
            if await services.store.acquire_lease(LEASE, services.worker_id, ttl):
                await poll_once(services)
        except (FedibridgeError, SQLAlchemyError, OSError) as exc:
            if is_storage_outage(exc):  # our database, not the feed: try again soon, not in `interval`
                health.failing(TASK, exc)
                await asyncio.sleep(retry.next())
                continue
            log.warning("source feed %s: poll failed (%s); will retry in %d s", settings.source_feed, exc, interval)
        health.ok(TASK)
        retry.reset()
        await asyncio.sleep(interval)
