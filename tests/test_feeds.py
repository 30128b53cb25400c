"""Article and comment feeds, read back with feedparser (what feed readers use) and checked byte-wise."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import feedparser
import pytest
from lxml import etree

from fedibridge.feeds import FeedSite, article_feed, comment_feed, feed_etag, last_modified
from fedibridge.models import Article, Author, Comment

BASE = "https://blog.example.org/fediverse"
PARIS_SUMMER = timezone(timedelta(hours=2))
THR = "{http://purl.org/syndication/thread/1.0}"
ATOM = "{http://www.w3.org/2005/Atom}"

SITE = FeedSite(
    title="Carnets de Camille",
    description="Notes de voyage, à l’improviste",
    blog_url="https://blog.example.org/",
    base_url=BASE,
    language="fr",
    author_name="Camille Dupont",
)

ETE_TITLE = "L’été à Paris « enfin » 🌞"
ETE_HTML = (
    "<p>Il fait\u00a0chaud à Paris\u00a0! « Enfin », dit-on 🌞.</p>"
    '<p>Voir <a href="https://fr.wikipedia.org/wiki/Paris">Paris</a> &amp; la Seine.</p>'
)
ETE = Article(
    slug="ete-a-paris",
    title=ETE_TITLE,
    url="https://blog.example.org/2024/07/ete-a-paris/",
    content=ETE_HTML,
    published=datetime(2024, 7, 14, 8, 30),  # naive: stored as UTC
    updated=datetime(2024, 7, 15, 12, 0, tzinfo=PARIS_SUMMER),
    tags=("voyage", "été"),
    language="fr",
    image="https://blog.example.org/media/seine.webp?w=1200",
    image_alt="La Seine au coucher du soleil",
)
HIVER = Article(
    slug="hiver",
    title="Hiver à Lyon",
    url="https://blog.example.org/2024/01/hiver/",
    content="<p>Froid, mais beau.</p>",
    published=datetime(2024, 1, 10, 9, 0, tzinfo=UTC),
    summary="Un <em>résumé</em> écrit à la main",
    tags=("hiver",),
)
BROUILLON = Article(
    slug="brouillon",
    title="Article retiré",
    url="https://blog.example.org/2024/08/brouillon/",
    content="<p>Plus là.</p>",
    published=datetime(2024, 8, 1, 9, 0, tzinfo=UTC),
    deleted=datetime(2024, 8, 2, 9, 0, tzinfo=UTC),
)

ARTICLE_AP_ID = f"{BASE}/articles/ete-a-paris"

# A Mastodon reply with a content warning (spoiler_text → summary).
ALICE = Author(
    id="https://mastodon.example/users/alice",
    name="Alice 🌻",
    handle="@alice@mastodon.example",
    url="https://mastodon.example/@alice",
)
CW_COMMENT = Comment(
    id=1,
    article="ete-a-paris",
    ap_id="https://mastodon.example/users/alice/statuses/112233",
    in_reply_to=ARTICLE_AP_ID,
    parent_id=None,
    author=ALICE,
    content_html='<p><span class="h-card"><a href="https://blog.example.org/fediverse/users/blog">@blog</a>'
    "</span> Quelle chaleur\u00a0! « Vivement » l’automne 🥵</p>",
    published=datetime(2024, 7, 14, 10, 0, tzinfo=UTC),
    status="approved",
    summary="météo, chaleur",
    sensitive=True,
    url="https://mastodon.example/@alice/112233",
)
# A Misskey reply to Alice: no display name, only a handle; Misskey note ids are the URL.
BOB = Author(id="https://misskey.example/users/9abc", handle="@bob@misskey.example")
REPLY = Comment(
    id=2,
    article="ete-a-paris",
    ap_id="https://misskey.example/notes/9xyz",
    in_reply_to=CW_COMMENT.ap_id,
    parent_id=1,
    author=BOB,
    content_html="<p>Pareil ici, 35\u00a0°C…</p>",
    published=datetime(2024, 7, 14, 11, 0),  # naive
    status="approved",
)


def parse(body: bytes) -> Any:
    d = feedparser.parse(body)
    assert d.bozo == 0, d.get("bozo_exception")
    return d


def self_link(links: list[Any]) -> str:
    return str(next(link.href for link in links if link.rel == "self"))


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


# ---------------------------------------------------------------------------
# article feeds
# ---------------------------------------------------------------------------


def test_rss_article_feed_fields() -> None:
    body = article_feed(SITE, [HIVER, BROUILLON, ETE], "rss")
    d = parse(body)
    assert d.version == "rss20"
    assert d.feed.title == SITE.title
    assert d.feed.link == SITE.blog_url
    assert d.feed.subtitle == SITE.description
    assert d.feed.language == "fr"
    assert self_link(d.feed.links) == f"{BASE}/feed.rss"
    # lastBuildDate is the newest change (the deletion), never "now".
    assert parsedate_to_datetime(d.feed.updated) == BROUILLON.deleted

    assert [e.link for e in d.entries] == [ETE.url, HIVER.url]  # newest first, deleted left out
    e = d.entries[0]
    assert e.title == ETE_TITLE
    assert e.id == ETE.url
    assert e.content[0].value == ETE_HTML
    assert e.content[0].type == "text/html"
    assert e.summary == "Il fait\u00a0chaud à Paris\u00a0! « Enfin », dit-on 🌞. Voir Paris & la Seine."
    assert [t.term for t in e.tags] == ["voyage", "été"]
    assert len(e.enclosures) == 1
    assert e.enclosures[0].href == ETE.image
    assert e.enclosures[0].type == "image/webp"
    assert parsedate_to_datetime(e.published) == datetime(2024, 7, 14, 8, 30, tzinfo=UTC)
    assert e.wfw_commentrss == f"{BASE}/articles/ete-a-paris/comments.rss"
    assert e.author == "Camille Dupont"

    h = d.entries[1]
    assert h.summary == "Un <em>résumé</em> écrit à la main"  # given summary wins over an excerpt
    assert [t.term for t in h.tags] == ["hiver"]
    assert "enclosures" not in h or h.enclosures == []
    assert h.wfw_commentrss == f"{BASE}/articles/hiver/comments.rss"

    guids = etree.fromstring(body).findall("channel/item/guid")
    assert [(g.text, g.get("isPermaLink")) for g in guids] == [(ETE.url, "true"), (HIVER.url, "true")]


def test_atom_article_feed_fields() -> None:
    body = article_feed(SITE, [HIVER, BROUILLON, ETE], "atom")
    d = parse(body)
    assert d.version == "atom10"
    assert d.feed.title == SITE.title
    assert d.feed.subtitle == SITE.description
    assert d.feed.language == "fr"
    assert d.feed.id == f"{BASE}/feed.atom"
    assert d.feed.link == SITE.blog_url
    assert self_link(d.feed.links) == f"{BASE}/feed.atom"
    assert iso(d.feed.updated) == BROUILLON.deleted

    assert [e.id for e in d.entries] == [ETE.url, HIVER.url]
    e = d.entries[0]
    assert e.title == ETE_TITLE
    assert e.link == ETE.url
    alternates = [link for link in e.links if link.rel == "alternate"]
    assert [(link.href, link.type) for link in alternates] == [(ETE.url, "text/html")]
    assert e.content[0].value == ETE_HTML
    assert e.content[0].type == "text/html"
    assert e.summary.startswith("Il fait\u00a0chaud à Paris\u00a0! « Enfin »")
    assert [t.term for t in e.tags] == ["voyage", "été"]
    assert [(x.href, x.type) for x in e.enclosures] == [(ETE.image, "image/webp")]
    replies = [link for link in e.links if link.rel == "replies"]
    assert [(r.href, r.type) for r in replies] == [
        (f"{BASE}/articles/ete-a-paris/comments.atom", "application/atom+xml")
    ]
    assert iso(e.published) == datetime(2024, 7, 14, 8, 30, tzinfo=UTC)
    assert iso(e.updated) == datetime(2024, 7, 15, 10, 0, tzinfo=UTC)  # 12:00 +02:00
    assert e.author == "Camille Dupont"
    assert e.content[0].language == "fr"  # the entry's xml:lang

    h = d.entries[1]
    assert iso(h.updated) == iso(h.published) == HIVER.published  # never edited: updated = published
    assert h.summary_detail.type == "text/html"  # an HTML summary is declared as such

    root = etree.fromstring(body)
    enclosure = root.find(f"{ATOM}entry/{ATOM}link[@rel='enclosure']")
    assert enclosure is not None
    assert enclosure.get("title") == ETE.image_alt
    assert enclosure.get("length") is None  # unknown size: not claimed in Atom


def test_summary_only_feed_has_no_full_content() -> None:
    for kind in ("rss", "atom"):
        d = parse(article_feed(SITE, [ETE], kind, full_content=False))
        e = d.entries[0]
        assert "content" not in e, kind
        assert e.summary.startswith("Il fait\u00a0chaud"), kind
        assert e.link == ETE.url


def test_long_content_is_cut_into_an_excerpt() -> None:
    words = " ".join(["déjà-vu"] * 200)
    article = Article(
        slug="long",
        title="Long",
        url="https://blog.example.org/long/",
        content=f"<p>{words}</p><script>alert(1)</script>",
        published=datetime(2024, 2, 1),
    )
    e = parse(article_feed(SITE, [article], "rss")).entries[0]
    assert e.summary.endswith("déjà-vu…")
    assert len(e.summary) <= 301
    assert "alert" not in e.summary
    assert e.content[0].value.startswith(f"<p>{words}")


def test_utf8_bytes_survive_verbatim() -> None:
    for kind in ("rss", "atom"):
        body = article_feed(SITE, [ETE], kind)
        assert body.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
        assert "« enfin »".encode() in body
        assert "🌞".encode() in body
        assert "L’été".encode() in body
        assert "fait\u00a0chaud".encode() in body  # non-breaking space as the bytes C2 A0
        assert b"&#" not in body  # nothing was turned into character references


def test_no_deleted_articles_and_empty_feed() -> None:
    d = parse(article_feed(SITE, [BROUILLON], "atom"))
    assert d.entries == []
    empty = parse(article_feed(SITE, [], "rss"))
    assert empty.entries == []
    assert parsedate_to_datetime(empty.feed.updated) == datetime(1970, 1, 1, tzinfo=UTC)


def test_ordering_is_by_publication_not_input_order() -> None:
    a = [
        Article(
            slug=f"a{i}",
            title=f"A{i}",
            url=f"https://blog.example.org/a{i}/",
            content="<p>x</p>",
            published=datetime(2024, 3, i + 1, tzinfo=UTC),
        )
        for i in range(5)
    ]
    shuffled = [a[2], a[4], a[0], a[3], a[1]]
    d = parse(article_feed(SITE, shuffled, "atom"))
    assert [e.id for e in d.entries] == [x.url for x in reversed(a)]


def test_same_data_same_bytes_and_etag() -> None:
    one = article_feed(SITE, [ETE, HIVER], "rss")
    two = article_feed(SITE, [HIVER, ETE], "rss")
    assert one == two  # no clock, no input-order dependence
    assert feed_etag(one) == feed_etag(two)
    etag = feed_etag(one)
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    changed = article_feed(SITE, [ETE, replace(HIVER, title="Hiver à Lyon !")], "rss")
    assert feed_etag(changed) != etag
    assert feed_etag(article_feed(SITE, [ETE, HIVER], "atom")) != etag


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        article_feed(SITE, [ETE], "json")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# comment feeds
# ---------------------------------------------------------------------------


def test_rss_comment_feed_for_an_article() -> None:
    body = comment_feed(SITE, [CW_COMMENT, REPLY], "rss", article=ETE)
    d = parse(body)
    assert d.feed.title == f"Comments on {ETE_TITLE}"
    assert d.feed.link == ETE.url
    assert self_link(d.feed.links) == f"{BASE}/articles/ete-a-paris/comments.rss"
    assert parsedate_to_datetime(d.feed.updated) == datetime(2024, 7, 14, 11, 0, tzinfo=UTC)

    reply, cw = d.entries  # newest first
    assert cw.title == f"Comment by Alice 🌻 on {ETE_TITLE} [CW: météo, chaleur]"
    assert cw.id == CW_COMMENT.ap_id and cw.guidislink is False
    guids = etree.fromstring(body).findall("channel/item/guid")
    assert [(g.text, g.get("isPermaLink")) for g in guids] == [
        (REPLY.ap_id, "false"),
        (CW_COMMENT.ap_id, "false"),
    ]
    assert cw.link == CW_COMMENT.url
    assert cw.author == "Alice 🌻 (@alice@mastodon.example)"
    assert cw.summary == "CW: météo, chaleur"
    html = cw.content[0].value
    assert html.startswith("<p><strong>CW: météo, chaleur</strong></p>")
    assert html.endswith(CW_COMMENT.content_html)  # the text comes after the warning, untouched
    assert parsedate_to_datetime(cw.published) == CW_COMMENT.published

    assert reply.title == f"Comment by @bob@misskey.example on {ETE_TITLE}"  # no name: the handle
    assert reply.author == "@bob@misskey.example"
    assert reply.link == REPLY.ap_id  # no url: the ActivityPub id
    assert reply.id == REPLY.ap_id
    assert reply.content[0].value == REPLY.content_html
    assert reply.summary == "Pareil ici, 35\u00a0°C…"
    assert parsedate_to_datetime(reply.published) == datetime(2024, 7, 14, 11, 0, tzinfo=UTC)
    assert "🥵".encode() in body and "« Vivement »".encode() in body


def test_atom_comment_feed_threading() -> None:
    body = comment_feed(SITE, [CW_COMMENT, REPLY], "atom", article=ETE)
    d = parse(body)
    assert d.feed.id == f"{BASE}/articles/ete-a-paris/comments.atom"
    assert self_link(d.feed.links) == f"{BASE}/articles/ete-a-paris/comments.atom"
    assert d.feed.link == ETE.url
    reply, cw = d.entries
    assert cw.id == CW_COMMENT.ap_id
    assert cw.link == CW_COMMENT.url
    assert cw.author_detail.name == "Alice 🌻 (@alice@mastodon.example)"
    assert cw.author_detail.href == ALICE.url
    assert reply.author_detail.href == BOB.id  # no profile url: the actor id
    assert cw.summary == "CW: météo, chaleur"
    assert cw.content[0].type == "text/html"
    assert cw.content[0].value.endswith(CW_COMMENT.content_html)
    assert iso(cw.updated) == iso(cw.published) == CW_COMMENT.published

    # RFC 4685: the top-level comment answers the article, the reply answers Alice's note.
    root = etree.fromstring(body)
    in_reply_to = {
        entry.findtext(f"{ATOM}id"): entry.find(f"{THR}in-reply-to").attrib
        for entry in root.iter(f"{ATOM}entry")
    }
    assert in_reply_to[CW_COMMENT.ap_id]["ref"] == ETE.url
    assert in_reply_to[CW_COMMENT.ap_id]["href"] == ETE.url
    assert in_reply_to[REPLY.ap_id]["ref"] == CW_COMMENT.ap_id
    # No blog author at feed level: each comment has its own author.
    assert root.find(f"{ATOM}author") is None


def test_blog_wide_comment_feed_and_nested_replies() -> None:
    threaded = replace(CW_COMMENT, replies=[REPLY])
    other = Comment(
        id=3,
        article="hiver",
        ap_id="https://gts.example/users/c/statuses/01H",
        in_reply_to=f"{BASE}/articles/hiver",
        parent_id=None,
        author=Author(id="https://gts.example/users/c", name="Chloé", handle="@c@gts.example"),
        content_html="<p>Brrr</p>",
        published=datetime(2024, 1, 11, tzinfo=UTC),
    )
    for kind in ("rss", "atom"):
        d = parse(
            comment_feed(
                SITE,
                [other, threaded, REPLY],
                kind,
                articles={"ete-a-paris": ETE, "hiver": HIVER},
            )
        )
        assert self_link(d.feed.links) == f"{BASE}/comments.{kind}"
        assert d.feed.link == SITE.blog_url
        assert d.feed.title == f"Comments on {SITE.title}"
        # The nested reply is listed once although it was passed twice.
        assert [e.id for e in d.entries] == [REPLY.ap_id, CW_COMMENT.ap_id, other.ap_id]
        assert d.entries[2].title == "Comment by Chloé on Hiver à Lyon"


def test_comment_feed_without_known_article_names_the_slug() -> None:
    d = parse(comment_feed(SITE, [REPLY], "atom"))
    assert d.entries[0].title == "Comment by @bob@misskey.example on ete-a-paris"


def test_deleted_comments_are_left_out() -> None:
    gone = replace(REPLY, deleted=True)
    d = parse(comment_feed(SITE, [CW_COMMENT, gone], "rss", article=ETE))
    assert [e.id for e in d.entries] == [CW_COMMENT.ap_id]


# ---------------------------------------------------------------------------
# last_modified / etag
# ---------------------------------------------------------------------------


def test_last_modified() -> None:
    assert last_modified([]) == datetime(1970, 1, 1, tzinfo=UTC)
    assert last_modified([HIVER, ETE]) == datetime(2024, 7, 15, 10, 0, tzinfo=UTC)  # ETE.updated in UTC
    assert last_modified([HIVER, ETE, BROUILLON]) == BROUILLON.deleted
    assert last_modified([REPLY]) == datetime(2024, 7, 14, 11, 0, tzinfo=UTC)  # naive read as UTC
    assert last_modified([CW_COMMENT, REPLY]).tzinfo is not None
    nested = replace(CW_COMMENT, replies=[REPLY])
    assert last_modified([nested]) == datetime(2024, 7, 14, 11, 0, tzinfo=UTC)


def test_feed_etag_format() -> None:
    assert feed_etag(b"abc") == feed_etag(b"abc")
    assert feed_etag(b"abc") != feed_etag(b"abd")
    assert len(feed_etag(b"abc")) == 34
