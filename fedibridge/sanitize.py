"""HTML sanitising with nh3, shaped after Mastodon's ``MASTODON_STRICT`` config.

Remote servers send HTML we must show on the blog, and the blog sends HTML that remote
servers will show; both go through nh3 (ammonia) allow-lists here and nowhere else.

What mirrors Mastodon (``lib/sanitize_ext/sanitize_config.rb``):

* the element list of ``MASTODON_STRICT``; ``lang`` everywhere, ``translate="no"`` only;
* class values limited to microformats (``h-``, ``p-``, ``u-``, ``dt-``, ``e-``), ``mention``,
  ``hashtag``, ``ellipsis``, ``invisible`` and ``quote-inline``;
* ``h1``-``h6`` become ``<p><strong>…</strong></p>`` (Mastodon's UNSUPPORTED_ELEMENTS_TRANSFORMER);
* links with a scheme we refuse are turned into their text (UNSUPPORTED_HREF_TRANSFORMER).

Where we are stricter: only ``http``/``https`` links (Mastodon also allows ``ipfs:``, ``gemini:``…)
and no relative links in remote content (they would resolve against the blog). MathML is not
converted to its TeX annotation; only its text survives.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from html.parser import HTMLParser

import nh3

__all__ = [
    "escape_text", "plain_text", "sanitize_article", "sanitize_remote", "strip_controls", "text_to_html",
]

_URL_SCHEMES = {"http", "https"}

# C0 controls but tab, newline and CR; DEL and C1; lone surrogates; U+FFFE/U+FFFF. XML 1.0 forbids most of
# them (one in a comment made every comment feed answer 500) and none of them is text anyone meant to write.
_CONTROLS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def strip_controls(s: str) -> str:
    """Remove control characters and lone surrogates from a remote string; accents and emoji stay."""
    return _CONTROLS_RE.sub("", s) if _CONTROLS_RE.search(s) else s

# Elements whose *content* must vanish too, not only the tag: scripts and styles, plus the
# raw-text elements whose inner markup would otherwise come back escaped as visible text.
_DROP_WITH_CONTENT = {
    "script",
    "style",
    "template",
    "iframe",
    "noscript",
    "noembed",
    "noframes",
    "object",
    "embed",
    "textarea",
    "select",
    "title",
    "xmp",
    "svg",
}

_STRICT_TAGS = {
    "p",
    "br",
    "span",
    "a",
    "del",
    "s",
    "pre",
    "blockquote",
    "code",
    "b",
    "strong",
    "u",
    "i",
    "em",
    "ul",
    "ol",
    "li",
    "ruby",
    "rt",
    "rp",
}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

_CLASS_RE = re.compile(r"^(?:(?:h|p|u|dt|e)-[a-z0-9-]+|mention|hashtag|ellipsis|invisible|quote-inline)$")
_LANG_RE = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$")
_INT_RE = re.compile(r"^-?[0-9]{1,9}$")

_REMOTE_ATTRIBUTES = {tag: {"lang"} for tag in _STRICT_TAGS} | {
    "a": {"href", "class", "lang", "translate"},
    "span": {"class", "lang", "translate"},
    "p": {"class", "lang"},
    "ol": {"start", "reversed", "lang"},
    "li": {"value", "lang"},
}
_ARTICLE_TAGS = _STRICT_TAGS | _HEADINGS | {"figure", "figcaption"}
_ARTICLE_ATTRIBUTES = {tag: {"lang"} for tag in _STRICT_TAGS | _HEADINGS} | {
    "a": {"href", "lang", "translate"},
    "span": {"lang", "translate"},
    "ol": {"start", "reversed", "lang"},
    "li": {"value", "lang"},
}

# These run on nh3's own serialisation, which is canonical: lowercase tags, attributes quoted
# with '"', and (thanks to _filter_attribute) no '>' inside the attribute values we allow.
_HEADING_OPEN_RE = re.compile(r"<h[1-6]>")
_HEADING_CLOSE_RE = re.compile(r"</h[1-6]>")
_HREFLESS_LINK_RE = re.compile(r"<a(?: (?!href=)[a-z]+=\"[^\"]*\")*>(.*?)</a>", re.DOTALL)


def _filter_attribute(element: str, attribute: str, value: str) -> str | None:
    """Keep only attribute values Mastodon keeps; nh3 already decided which attributes exist."""
    if attribute == "class":
        kept = [c for c in value.split() if _CLASS_RE.match(c)]
        return " ".join(kept) or None
    if attribute == "lang":
        return value if _LANG_RE.match(value) else None
    if attribute == "translate":
        return "no" if value == "no" else None
    if attribute in ("start", "value"):
        return value.strip() if _INT_RE.match(value.strip()) else None
    if attribute == "reversed":
        return ""
    return value


_remote_cleaner = nh3.Cleaner(
    tags=_STRICT_TAGS | _HEADINGS,
    clean_content_tags=_DROP_WITH_CONTENT,
    attributes=_REMOTE_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    link_rel="nofollow ugc noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes=_URL_SCHEMES,
    url_relative="deny",
)


@lru_cache(maxsize=32)
def _article_cleaner(base_url: str | None) -> nh3.Cleaner:
    """One cleaner per base URL: relative links are resolved by nh3 itself."""
    return nh3.Cleaner(
        tags=_ARTICLE_TAGS,
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes=_ARTICLE_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        link_rel=None,
        url_schemes=_URL_SCHEMES,
        url_relative=("rewrite_with_base", base_url) if base_url else "deny",
    )


def _finish(cleaned: str) -> str:
    """Unwrap links that lost their href and put non-breaking spaces back as characters.

    html5ever writes U+00A0 as ``&nbsp;``; French typography relies on it, and callers compare
    text byte for byte, so it goes back to the literal character (same meaning in HTML).
    """
    cleaned = _HREFLESS_LINK_RE.sub(r"\1", cleaned)
    return cleaned.replace("&nbsp;", "\u00a0")


def sanitize_remote(html_in: str) -> str:
    """Sanitise HTML received from the fediverse (comments) to what Mastodon would display."""
    cleaned = _remote_cleaner.clean(strip_controls(html_in or ""))
    cleaned = _HEADING_OPEN_RE.sub("<p><strong>", cleaned)
    cleaned = _HEADING_CLOSE_RE.sub("</strong></p>", cleaned)
    return _finish(cleaned)


def sanitize_article(html_in: str, base_url: str | None = None) -> str:
    """Sanitise the blog's own article HTML before it is federated.

    Richer than remote content (headings stay), but images are left out because Mastodon drops
    them anyway (the article image travels as an attachment). ``<figure>`` is unwrapped and its
    ``<figcaption>`` becomes a paragraph. Relative links are resolved against ``base_url`` when
    given (the article URL), else dropped: a relative href means nothing on a remote server.
    """
    cleaned = _article_cleaner(base_url or None).clean(html_in or "")
    cleaned = cleaned.replace("<figure>", "").replace("</figure>", "")
    cleaned = cleaned.replace("<figcaption>", "<p>").replace("</figcaption>", "</p>")
    return _finish(cleaned)


_BLOCKS = {
    "p",
    "br",
    "div",
    "li",
    "ul",
    "ol",
    "blockquote",
    "pre",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "td",
    "th",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "figure",
    "figcaption",
    "hr",
    "dd",
    "dt",
    "dl",
    "aside",
    "nav",
    "main",
}
_SKIP = _DROP_WITH_CONTENT | {"head"}
_ASCII_SPACE_RE = re.compile(r"[ \t\n\r\f\v]+")


class _TextExtractor(HTMLParser):
    """Collects text, with a space wherever a block boundary would separate words visually."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip_depth += 1
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def plain_text(html_in: str, limit: int | None = None) -> str:
    """Text of an HTML fragment on one line (excerpts, feed summaries, webhook payloads).

    Only ASCII whitespace is collapsed, so U+00A0 / U+202F before « » ; : ! ? stay intact. When
    over ``limit`` characters the text is cut at a space and ends with "…" (total ≤ limit).
    The result is text, not HTML: escape it before putting it into markup.
    """
    parser = _TextExtractor()
    parser.feed(strip_controls(html_in or ""))
    parser.close()
    text = _ASCII_SPACE_RE.sub(" ", "".join(parser.parts)).strip()
    if limit is None or len(text) <= limit:
        return text
    if limit <= 1:
        return "…"[:limit]
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > 0 and text[limit - 1] != " ":
        cut = cut[:space]
    return cut.rstrip(" \u00a0\u202f,;:") + "…"


def escape_text(s: str) -> str:
    """Plain text (display names, titles) to HTML that shows exactly that text."""
    return html.escape(s or "", quote=True)


def text_to_html(text: str) -> str:
    """Plain text to paragraphs: blank lines split ``<p>``, single newlines become ``<br>``."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join("<p>" + escape_text(p).replace("\n", "<br>") + "</p>" for p in paragraphs)
