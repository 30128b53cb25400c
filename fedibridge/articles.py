"""The article store: validate input, save articles, and record Create/Update/Delete with their deliveries.

Every way in (admin API, CLI files, the blog's own feed) ends in `publish()` / `delete()`, so they all
behave alike: a re-send of identical content changes nothing, a real change federates an `Update`,
and the activity, the article row and the delivery rows are written in one transaction.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from . import actor_state, vocab
from .enqueue import enqueue_to_followers
from .errors import BadRequest, Gone, NotFound
from .jsontext import dumps
from .models import Article
from .sanitize import sanitize_article
from .store import Store, utcnow
from .tables import activities, articles, reactions

SLUG_MAX = 80
_SLUG_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,199}$")
_LANG_OK = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_LOOKS_HTML = re.compile(r"<[a-zA-Z/!]")
# Letters NFKD does not split into ASCII + accent (French and neighbours).
_TRANSLIT = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss", "ø": "o", "Ø": "O",
                           "đ": "d", "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "TH"})


@dataclass(frozen=True)
class ArticleInput:
    """A validated article as any source hands it in; `slug` None means "derive it"."""

    title: str
    url: str
    content: str  # sanitised HTML
    slug: str | None = None
    summary: str | None = None
    tags: tuple[str, ...] = ()
    language: str | None = None
    published: datetime | None = None
    image: str | None = None
    image_alt: str | None = None
    sensitive: bool = False
    content_warning: str | None = None
    source: str = "api"  # api | cli | feed | import
    source_guid: str | None = None


@dataclass(frozen=True)
class PublishResult:
    """What happened: `activity` is the new activity's id (None when nothing changed)."""

    article: Article
    created: bool
    changed: bool
    activity: str | None
    queued: int


# --- pure helpers ----------------------------------------------------------------------------


def slugify(text: str) -> str:
    """ASCII slug from a title, French-safe: "L’été à Paris" → "l-ete-a-paris".

    Apostrophes separate words (l’été → l-ete) and accents are dropped, as WordPress does.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    if len(slug) > SLUG_MAX:
        cut = slug[:SLUG_MAX]
        slug = cut[: cut.rfind("-")] if "-" in cut else cut
    return slug or "article-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def slug_from_url(url: str) -> str | None:
    """The blog's own slug, from the last path segment (".../2024/07/ete-a-paris/" → "ete-a-paris")."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    if not segments:
        return None
    last = re.sub(r"\.(html?|php)$", "", unquote(segments[-1]))
    if not last or last.isdigit() or last in ("index", "feed"):
        return None
    return slugify(last)


def parse_when(value: Any, field: str = "published") -> datetime:
    """ISO 8601 (or a YAML date/datetime) to aware UTC; naive times are taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            raise BadRequest(f"{field} must be an ISO 8601 date, e.g. 2024-07-14T08:30:00+02:00") from None
    else:
        raise BadRequest(f"{field} must be an ISO 8601 date string")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _http_url(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field} must be an http(s) URL")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value.strip():
        raise BadRequest(f"{field} must be an absolute http(s) URL")
    return value.strip()


def _opt_str(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string")
    return value.strip() or None


def validate(data: Any, *, source: str = "api", source_guid: str | None = None) -> ArticleInput:
    """Check an article dict (API JSON, front matter, feed entry); BadRequest names the bad field.

    Unknown fields are ignored here (front matter and feeds carry more than we use); the admin API
    refuses them first (web/publishing.py).
    """
    if not isinstance(data, Mapping):
        raise BadRequest("body must be a JSON object")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise BadRequest("title is required (a non-empty string)")
    if data.get("url") in (None, ""):
        raise BadRequest("url is required (the article's address on the blog)")
    url = _http_url(data.get("url"), "url")
    content = data.get("content")
    if not isinstance(content, str) or not content.strip():
        raise BadRequest("content is required (an HTML string)")
    slug = _opt_str(data, "slug")
    if slug is not None and not _SLUG_OK.match(slug):
        raise BadRequest("slug must be 1-200 characters among letters, digits, '.', '_', '~' and '-'")
    tags_raw = data.get("tags", [])
    if tags_raw is None:
        tags_raw = []
    if not isinstance(tags_raw, list) or not all(isinstance(t, str) for t in tags_raw):
        raise BadRequest("tags must be a list of strings")
    tags = tuple(dict.fromkeys(t.strip() for t in tags_raw if t.strip()))
    language = _opt_str(data, "language")
    if language is not None and not _LANG_OK.match(language):
        raise BadRequest("language must be a BCP 47 language tag such as fr or fr-CA")
    published = None if data.get("published") in (None, "") else parse_when(data.get("published"))
    image = None if data.get("image") in (None, "") else _http_url(data.get("image"), "image")
    sensitive = data.get("sensitive", False)
    if sensitive is None:
        sensitive = False
    if not isinstance(sensitive, bool):
        raise BadRequest("sensitive must be true or false")
    summary = _opt_str(data, "summary")
    if summary is not None and _LOOKS_HTML.search(summary):
        summary = sanitize_article(summary, url) or None
    cleaned = sanitize_article(content, url)
    if not cleaned.strip():
        raise BadRequest("content is empty once sanitised")
    return ArticleInput(
        title=title.strip(), url=url, content=cleaned, slug=slug, summary=summary, tags=tags,
        language=language, published=published, image=image, image_alt=_opt_str(data, "image_alt"),
        sensitive=sensitive, content_warning=_opt_str(data, "content_warning"), source=source,
        source_guid=source_guid,
    )


def content_hash(values: Mapping[str, Any]) -> str:
    """Hash of everything a reader sees, so an identical re-send is recognised and ignored."""
    keys = ("title", "url", "content", "summary", "tags", "language", "image", "image_alt", "sensitive",
            "content_warning", "published")
    data = {k: values.get(k) for k in keys}
    data["tags"] = list(data["tags"] or [])
    if isinstance(data["published"], datetime):
        data["published"] = vocab.iso(data["published"])
    blob = dumps(data, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def article_from_row(row: Any, likes: int = 0, boosts: int = 0) -> Article:
    """An `articles` row (Row or mapping) as the plain record vocab and feeds consume."""
    m = row._mapping if isinstance(row, Row) else row
    return Article(
        slug=m["slug"], title=m["title"], url=m["url"], content=m["content"], published=m["published"],
        updated=m["updated"], summary=m["summary"], tags=tuple(m["tags"] or ()), language=m["language"],
        image=m["image"], image_alt=m["image_alt"], sensitive=bool(m["sensitive"]),
        content_warning=m["content_warning"], deleted=m["deleted"], likes=likes, boosts=boosts,
        image_length=m.get("image_length"),
    )


def article_json(site: vocab.Site, article: Article) -> dict[str, Any]:
    """The admin API's view of an article."""
    def when(d: datetime | None) -> str | None:
        return vocab.iso(d) if d else None

    return {
        "slug": article.slug, "id": site.article_id(article.slug), "url": article.url, "title": article.title,
        "content": article.content, "summary": article.summary, "tags": list(article.tags),
        "language": article.language, "published": when(article.published), "updated": when(article.updated),
        "deleted": when(article.deleted), "image": article.image, "image_alt": article.image_alt,
        "sensitive": article.sensitive, "content_warning": article.content_warning,
        "replies": site.replies_id(article.slug), "likes": article.likes, "boosts": article.boosts,
    }


# --- queries ---------------------------------------------------------------------------------


async def get_row(conn: AsyncConnection, slug: str) -> Any:
    return (await conn.execute(select(articles).where(articles.c.slug == slug))).first()


async def get_article(conn: AsyncConnection, slug: str, *, with_counts: bool = False) -> Article | None:
    row = await get_row(conn, slug)
    if row is None:
        return None
    if not with_counts:
        return article_from_row(row)
    counts: dict[str, int] = dict((await conn.execute(
        select(reactions.c.type, func.count()).where(reactions.c.article_id == row.id).group_by(reactions.c.type)
    )).all())
    return article_from_row(row, likes=int(counts.get("like", 0)), boosts=int(counts.get("boost", 0)))


async def latest(conn: AsyncConnection, limit: int) -> list[Article]:
    """The newest live articles (for feeds), newest first."""
    rows = await conn.execute(
        select(articles).where(articles.c.deleted.is_(None))
        .order_by(articles.c.published.desc(), articles.c.id.desc()).limit(limit)
    )
    return [article_from_row(r) for r in rows]


async def last_deleted(conn: AsyncConnection) -> Article | None:
    """The most recently deleted article: its removal changes the feeds' Last-Modified."""
    row = (await conn.execute(
        select(articles).where(articles.c.deleted.is_not(None)).order_by(articles.c.deleted.desc()).limit(1)
    )).first()
    return article_from_row(row) if row else None


async def _find_existing(conn: AsyncConnection, inp: ArticleInput) -> Any:
    """Explicit slug first; else the same feed guid; else the same URL (a re-send without slug)."""
    if inp.slug:
        return await get_row(conn, inp.slug)
    if inp.source_guid:
        row = (await conn.execute(select(articles).where(articles.c.source_guid == inp.source_guid))).first()
        if row is not None:
            return row
    return (await conn.execute(select(articles).where(articles.c.url == inp.url).order_by(articles.c.id))).first()


async def _free_slug(conn: AsyncConnection, base: str) -> str:
    slug, n = base, 1
    while await get_row(conn, slug) is not None:
        n += 1
        slug = f"{base}-{n}"
    return slug


def _new_id(result: Any) -> int:
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


async def _record(conn: AsyncConnection, site: vocab.Site, kind: str, article_id: int, slug: str,
                  payload_for_key: Any, when: datetime, now: datetime, deliver: bool) -> tuple[str, int]:
    """Store one activity in the outbox and queue it for every follower's (shared) inbox."""
    key = uuid.uuid4().hex
    payload = payload_for_key(key)
    result = await conn.execute(activities.insert().values(
        key=key, type=kind, object_id=site.article_id(slug), article_id=article_id, payload=payload,
        in_outbox=True, published=when,
    ))
    queued = await enqueue_to_followers(conn, _new_id(result), now) if deliver else 0
    return payload["id"], queued


# --- commands --------------------------------------------------------------------------------


async def publish(conn: AsyncConnection, site: vocab.Site, inp: ArticleInput, *, deliver: bool = True,
                  now: datetime | None = None) -> PublishResult:
    """Create or update an article inside the caller's transaction.

    Identical content is a no-op; a deleted article's id stays dead (Mastodon keeps tombstones and
    would refuse a new Create for it), so re-publishing a deleted slug is refused with 410.
    """
    now = now or utcnow()
    row = await _find_existing(conn, inp)
    values: dict[str, Any] = {
        "title": inp.title, "url": inp.url, "content": inp.content, "summary": inp.summary,
        "tags": list(inp.tags), "language": inp.language, "image": inp.image, "image_alt": inp.image_alt,
        "sensitive": inp.sensitive, "content_warning": inp.content_warning,
    }
    if row is None:
        await actor_state.refuse_if_moved(conn)  # after a move nothing new goes out (identical re-sends pass)
        slug = inp.slug or await _free_slug(conn, slug_from_url(inp.url) or slugify(inp.title))
        values["published"] = inp.published or now
        values["content_hash"] = content_hash(values)
        result = await conn.execute(articles.insert().values(
            slug=slug, source=inp.source, source_guid=inp.source_guid, created_at=now, updated=None, **values
        ))
        article = article_from_row({**values, "slug": slug, "updated": None, "deleted": None})
        obj = vocab.article_object(site, article)
        activity, queued = await _record(
            conn, site, "Create", _new_id(result), slug,
            lambda key: vocab.create_activity(site, obj, key, article.published), article.published, now, deliver,
        )
        return PublishResult(article, True, True, activity, queued)
    if row.deleted is not None:
        raise Gone(f"article {row.slug} was deleted; its id cannot be reused (choose another slug)")
    values["published"] = inp.published or row.published
    values["content_hash"] = content_hash(values)
    if values["content_hash"] == row.content_hash:
        return PublishResult(article_from_row(row), False, False, None, 0)
    await actor_state.refuse_if_moved(conn)
    # A new image's size is unknown until measured again (enclosures.measure_images).
    stale = {"image_length": None} if inp.image != row.image else {}
    await conn.execute(articles.update().where(articles.c.id == row.id).values(updated=now, **values, **stale))
    article = article_from_row({**values, "slug": row.slug, "updated": now, "deleted": None})
    obj = vocab.article_object(site, article)
    activity, queued = await _record(
        conn, site, "Update", row.id, row.slug, lambda key: vocab.update_activity(site, obj, key, now),
        now, now, deliver,
    )
    return PublishResult(article, False, True, activity, queued)


async def delete(conn: AsyncConnection, site: vocab.Site, slug: str, *, deliver: bool = True,
                 now: datetime | None = None) -> PublishResult:
    """Mark the article deleted and federate a Delete of its id (object: a Tombstone).

    Its earlier Create/Update leave the outbox: they carry content the author took back.
    Deleting twice is harmless: the second time nothing is sent.
    """
    now = now or utcnow()
    row = await get_row(conn, slug)
    if row is None:
        raise NotFound(f"no article with slug {slug}")
    if row.deleted is not None:
        return PublishResult(article_from_row(row), False, False, None, 0)
    await conn.execute(articles.update().where(articles.c.id == row.id).values(deleted=now))
    await conn.execute(activities.update().where(activities.c.article_id == row.id).values(in_outbox=False))
    activity, queued = await _record(
        conn, site, "Delete", row.id, slug,
        lambda key: vocab.delete_activity(site, site.article_id(slug), key, now), now, now, deliver,
    )
    return PublishResult(replace(article_from_row(row), deleted=now), False, True, activity, queued)


async def publish_one(store: Store, site: vocab.Site, inp: ArticleInput, *, deliver: bool = True,
                      now: datetime | None = None) -> PublishResult:
    """publish() in its own transaction: either everything about this article is stored, or nothing.

    Two simultaneous first POSTs of one slug race on the unique slug: the loser retries once and
    then sees the winner's row (an update or a no-op), instead of failing with a 500.
    """
    try:
        async with store.begin() as conn:
            return await publish(conn, site, inp, deliver=deliver, now=now)
    except IntegrityError:
        async with store.begin() as conn:
            return await publish(conn, site, inp, deliver=deliver, now=now)


async def delete_one(store: Store, site: vocab.Site, slug: str, *, deliver: bool = True) -> PublishResult:
    async with store.begin() as conn:
        return await delete(conn, site, slug, deliver=deliver)
