"""RSS 2.0 and Atom feeds of articles and of their fediverse comments, built with feedgen.

Pure: takes records, returns bytes. Output depends only on the inputs (no "now"), so the same
data always gives the same bytes and therefore the same ETag.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, Literal, TypeVar

from feedgen.feed import FeedEntry, FeedGenerator

from .feed_extensions import CommentsEntryExtension, CommentsExtension
from .mediatypes import media_type
from .models import Article, Author, Comment
from .sanitize import strip_controls

__all__ = ["FeedSite", "article_feed", "comment_feed", "feed_etag", "last_modified"]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EXCERPT_CHARS = 300

@dataclass(frozen=True)
class FeedSite:
    """What a feed says about the blog itself."""

    title: str  # blog name
    description: str
    blog_url: str  # the blog's home page
    base_url: str  # where fedibridge is served, no trailing slash
    language: str | None  # e.g. "fr"
    author_name: str | None = None


# ---------------------------------------------------------------------------
# small pure helpers
# ---------------------------------------------------------------------------


def _utc(dt: datetime) -> datetime:
    """Feeds need aware datetimes; naive ones from storage are UTC by convention."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


class _TextExtractor(HTMLParser):
    """Collects the visible text of sanitised HTML, with a space where blocks break."""

    _BREAKS = frozenset(
        {"p", "br", "div", "li", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr"}
    )
    _SKIP = frozenset({"script", "style"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def plain_text(html_text: str) -> str:
    """Visible text of an HTML fragment, whitespace collapsed (non-breaking spaces are kept)."""
    parser = _TextExtractor()
    parser.feed(html_text)
    parser.close()
    # str.split() would also eat U+00A0 (French typography relies on it), so split on ASCII only.
    text = "".join(parser.parts)
    return " ".join(w for w in text.replace("\t", " ").replace("\n", " ").replace("\r", " ").split(" ") if w)


def excerpt(html_text: str, limit: int = EXCERPT_CHARS) -> str:
    """Plain-text teaser cut on a word boundary, for RSS <description> / Atom <summary>."""
    text = plain_text(html_text)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.") + "…"


def _looks_like_html(text: str) -> bool:
    return "<" in text and ">" in text


def _image_type(url: str) -> str:
    """An enclosure must say its type: the extension's, else the generic one."""
    return media_type(url) or "application/octet-stream"


def _new_feed(
    site: FeedSite,
    title: str,
    description: str,
    alternate: str,
    self_url: str,
    kind: str,
    updated: datetime,
    with_author: bool,
) -> FeedGenerator:
    fg = FeedGenerator()
    fg.register_extension("fedibridge", CommentsExtension, CommentsEntryExtension)
    fg.id(self_url)
    fg.title(title)
    fg.description(description)  # also Atom <subtitle>
    fg.link(
        href=self_url, rel="self", type="application/rss+xml" if kind == "rss" else "application/atom+xml"
    )
    fg.link(href=alternate, rel="alternate", type="text/html")  # last link added = RSS <link>
    if site.language:
        fg.language(site.language)
    if with_author and site.author_name:
        fg.author(name=site.author_name)
    fg.generator("fedibridge")
    fg.updated(updated)  # also RSS <lastBuildDate>; never "now", so bytes stay stable
    return fg


def _render(fg: FeedGenerator, kind: str) -> bytes:
    if kind == "rss":
        out = fg.rss_str(pretty=True, encoding="UTF-8")
    else:
        out = fg.atom_str(pretty=True, encoding="UTF-8")
    assert isinstance(out, bytes)
    return out


_Record = TypeVar("_Record", Article, Author, Comment)


def _xml_safe(record: _Record) -> _Record:
    """The record with control characters removed from its text fields (and its author's).

    XML 1.0 cannot carry most C0 characters: one stored before they were stripped on the way in made
    lxml fail the whole feed, for everyone. Cheap when there is nothing to remove (no copy is made).
    """
    changes: dict[str, Any] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, str):
            cleaned: Any = strip_controls(value)
        elif isinstance(value, Author):
            cleaned = _xml_safe(value)
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            cleaned = tuple(strip_controls(v) for v in value)
        else:
            continue
        if cleaned != value:
            changes[f.name] = cleaned
    return replace(record, **changes) if changes else record


def _check_kind(kind: str) -> None:
    if kind not in ("rss", "atom"):
        raise ValueError(f"unknown feed kind {kind!r}")


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def last_modified(items: Iterable[Article | Comment]) -> datetime:
    """Newest published/updated/deleted time among the items (epoch when empty), for Last-Modified.

    A deletion counts: the feed changed when an article left it.
    """
    newest = EPOCH
    for item in _flatten(items):
        stamps = [item.published, item.updated]
        if isinstance(item, Article):
            stamps.append(item.deleted)
        for stamp in stamps:
            if stamp is not None:
                newest = max(newest, _utc(stamp))
    return newest


def feed_etag(body: bytes) -> str:
    """Strong ETag: the body is byte-identical whenever the data is, so a hash of it is exact."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def article_feed(
    site: FeedSite, articles: Sequence[Article], kind: Literal["rss", "atom"], full_content: bool = True
) -> bytes:
    """The blog's /feed.rss or /feed.atom: live articles newest first, each linked to its comment feed."""
    _check_kind(kind)
    live = sorted(
        (_xml_safe(a) for a in articles if a.deleted is None), key=lambda a: (_utc(a.published), a.slug), reverse=True
    )
    fg = _new_feed(
        site,
        site.title,
        site.description,
        site.blog_url,
        f"{site.base_url}/feed.{kind}",
        kind,
        last_modified(articles),
        True,
    )
    for article in live:
        _fill_article_entry(fg.add_entry(order="append"), site, article, full_content)
    return _render(fg, kind)


def _fill_article_entry(entry: FeedEntry, site: FeedSite, article: Article, full_content: bool) -> None:
    entry.title(article.title)
    entry.guid(article.url, permalink=True)  # also the Atom <id>
    ext: CommentsEntryExtension = entry.fedibridge
    _link(entry, href=article.url, rel="alternate", type="text/html")
    published = _utc(article.published)
    entry.published(published)  # also RSS <pubDate>
    entry.updated(_utc(article.updated) if article.updated else published)
    summary = article.summary or excerpt(article.content)
    if full_content:
        entry.content(article.content, type="html")  # RSS content:encoded, Atom content type="html"
    if summary:
        entry.summary(summary, type="html" if _looks_like_html(summary) else "text")
    elif not full_content:
        entry.summary(article.title, type="text")  # RSS needs a description or content
    for tag in article.tags:
        entry.category(term=tag)
    if article.image:
        link: dict[str, str] = {"href": article.image, "rel": "enclosure", "type": _image_type(article.image)}
        if article.image_length:
            link["length"] = str(article.image_length)  # measured by a HEAD when the article was published
        if article.image_alt:
            link["title"] = article.image_alt
        _link(entry, **link)
    if site.author_name:
        entry.author(name=site.author_name)
    ext.comment_rss = f"{site.base_url}/articles/{article.slug}/comments.rss"
    ext.replies_atom = f"{site.base_url}/articles/{article.slug}/comments.atom"
    ext.creator = site.author_name
    ext.lang = article.language


def comment_feed(
    site: FeedSite,
    comments: Sequence[Comment],
    kind: Literal["rss", "atom"],
    article: Article | None = None,
    *,
    articles: Mapping[str, Article] | None = None,
    since: datetime | None = None,
) -> bytes:
    """Comments of one article (``article`` given) or of the whole blog, newest first.

    The caller decides what is shown (approved, public); replies nested in ``Comment.replies`` are
    included too. For the blog-wide feed, ``articles`` (slug → Article) lets titles name the article.
    Without comments it is dated by the article, or ``since`` (the newest article), never 1970.
    """
    _check_kind(kind)
    known: dict[str, Article] = dict(articles or {})
    known = {slug: _xml_safe(a) for slug, a in known.items()}
    if article is not None:
        article = known[article.slug] = _xml_safe(article)
        title = f"Comments on {article.title}"
        alternate = article.url
        self_url = f"{site.base_url}/articles/{article.slug}/comments.{kind}"
    else:
        title = f"Comments on {site.title}"
        alternate = site.blog_url
        self_url = f"{site.base_url}/comments.{kind}"
    shown = [_xml_safe(c) for c in _unique(_flatten(comments)) if not c.deleted]
    shown.sort(key=lambda c: (_utc(c.published), c.ap_id), reverse=True)
    # No feed-level author: every comment entry names its own.
    if shown:
        updated: datetime | None = last_modified(shown)
    elif article is not None:
        updated = _utc(article.updated or article.published)
    else:
        updated = _utc(since) if since else None
    fg = _new_feed(site, title, title, alternate, self_url, kind, updated or EPOCH, False)  # Atom needs one
    fg.fedibridge.undated = updated is None
    for comment in shown:
        _fill_comment_entry(fg.add_entry(order="append"), comment, known.get(comment.article))
    return _render(fg, kind)


def _author_label(comment: Comment) -> tuple[str, str]:
    """(short name for titles, "Name (@user@host)" for the author field)."""
    a = comment.author
    short = a.name or a.handle or a.id
    full = f"{a.name} ({a.handle})" if a.name and a.handle else short
    return short, full


def _fill_comment_entry(entry: FeedEntry, comment: Comment, article: Article | None) -> None:
    short, full = _author_label(comment)
    on = article.title if article else comment.article
    title = f"Comment by {short} on {on}"
    cw = (comment.summary or "").strip()
    content = comment.content_html
    if cw:
        # A content warning is shown first, as fediverse clients do; the text follows it.
        title = f"{title} [CW: {cw}]"
        content = f"<p><strong>CW: {html.escape(cw, quote=False)}</strong></p>{content}"
    entry.title(title)
    entry.guid(comment.ap_id, permalink=False)  # also the Atom <id>
    _link(entry, href=comment.url or comment.ap_id, rel="alternate", type="text/html")
    published = _utc(comment.published)
    entry.published(published)
    entry.updated(_utc(comment.updated) if comment.updated else published)
    entry.content(content, type="html")
    entry.summary(f"CW: {cw}" if cw else excerpt(comment.content_html) or title, type="text")
    entry.author(name=full, uri=comment.author.url or comment.author.id)
    ext: CommentsEntryExtension = entry.fedibridge
    ext.creator = full
    ext.lang = comment.language
    if comment.parent_id is None and article is not None:
        ext.in_reply_to = (article.url, article.url)
    else:
        ext.in_reply_to = (comment.in_reply_to, comment.in_reply_to)


def _link(entry: FeedEntry, **attrs: str) -> None:
    """Give a link to feedgen (RSS <link>/<enclosure>) and to our Atom writer (see the extension)."""
    entry.link(**attrs)
    # Unknown enclosure size: feedgen writes RSS's required length as "0", the RSS Board profile's "unknown";
    # Atom's length is optional, so there it is left out.
    entry.fedibridge.atom_links.append(dict(attrs))


def _flatten(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        yield item
        replies = getattr(item, "replies", None)
        if replies:
            yield from _flatten(replies)


def _unique(comments: Iterable[Comment]) -> Iterator[Comment]:
    seen: set[str] = set()
    for c in comments:
        if c.ap_id not in seen:
            seen.add(c.ap_id)
            yield c
