"""vocab: the JSON shapes we hand to Mastodon & co. must be exactly right, accents included."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fedibridge import discovery, vocab
from fedibridge.models import Article
from fedibridge.vocab import AS_PUBLIC, CONTEXT, Site

BASE = "https://blog.example.org/fediverse"
ACTOR = f"{BASE}/users/blog"
FOLLOWERS = f"{ACTOR}/followers"
TITLE = "L’été à Paris « enfin » 🌞"
ARTICLE_URL = "https://blog.example.org/2024/07/l-ete-a-paris/"
IMAGE = "https://blog.example.org/wp-content/uploads/2024/07/tour-eiffel.jpg"
IMAGE_ALT = "La tour Eiffel au coucher du soleil, « magnifique »"
CONTENT = "<p>Il fait chaud, très chaud…</p><p>Deuxième paragraphe « cité » 🌞.</p>"
WHEN = datetime(2024, 7, 14, 10, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture
def site(public_pem: str) -> Site:
    return Site(
        base_url=BASE + "/",
        domain="blog.example.org",
        username="blog",
        name="Le blog d’Élodie",
        summary="Carnets de voyage & photos « en vrac ».",
        blog_url="https://blog.example.org",
        public_key_pem=public_pem,
        published=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        icon_url="https://blog.example.org/avatar.png",
        header_url="https://blog.example.org/header.webp",
        language="fr",
    )


@pytest.fixture
def article() -> Article:
    return Article(
        slug="l-ete-a-paris",
        title=TITLE,
        url=ARTICLE_URL,
        content=CONTENT,
        # an offset time: must come out as UTC 'Z'
        published=WHEN,
        updated=datetime(2024, 7, 15, 9, 0, 0, tzinfo=timezone(timedelta(hours=2))),
        summary="Un été caniculaire à Paris.",
        tags=("voyage", "été"),
        language="fr",
        image=IMAGE,
        image_alt=IMAGE_ALT,
    )


def test_site_urls(site: Site) -> None:
    assert site.actor_id == ACTOR
    assert site.key_id == f"{ACTOR}#main-key"
    assert site.inbox == f"{ACTOR}/inbox"
    assert site.outbox == f"{ACTOR}/outbox"
    assert site.followers == FOLLOWERS
    assert site.following == f"{ACTOR}/following"
    assert site.featured == f"{ACTOR}/collections/featured"
    assert site.shared_inbox == f"{BASE}/inbox"
    assert site.handle == "@blog@blog.example.org"
    assert site.article_id("l-ete-a-paris") == f"{BASE}/articles/l-ete-a-paris"
    assert site.replies_id("l-ete-a-paris") == f"{BASE}/articles/l-ete-a-paris/replies"
    assert site.activity_id("0b6f-uuid") == f"{BASE}/activities/0b6f-uuid"
    assert site.tag_url("été") == "https://blog.example.org/tag/%C3%A9t%C3%A9/"


def test_context_has_mastodon_terms() -> None:
    assert CONTEXT[:2] == ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"]
    terms = CONTEXT[2]
    for term in ("manuallyApprovesFollowers", "toot", "featured", "discoverable", "indexable", "sensitive",
                 "Hashtag", "PropertyValue", "value", "Emoji", "focalPoint", "blurhash"):
        assert term in terms, term
    assert terms["featured"] == {"@id": "toot:featured", "@type": "@id"}
    assert terms["schema"] == "http://schema.org#"


def test_actor_document(site: Site, public_pem: str) -> None:
    doc = vocab.actor_document(site)
    assert doc == {
        "@context": CONTEXT,
        "id": ACTOR,
        "type": "Person",
        "preferredUsername": "blog",
        "name": "Le blog d’Élodie",
        "summary": "<p>Carnets de voyage &amp; photos « en vrac ».</p>",
        "url": "https://blog.example.org",
        "inbox": f"{ACTOR}/inbox",
        "outbox": f"{ACTOR}/outbox",
        "followers": FOLLOWERS,
        "following": f"{ACTOR}/following",
        "featured": f"{ACTOR}/collections/featured",
        "endpoints": {"sharedInbox": f"{BASE}/inbox"},
        "publicKey": {"id": f"{ACTOR}#main-key", "owner": ACTOR, "publicKeyPem": public_pem},
        "manuallyApprovesFollowers": False,
        "discoverable": True,
        "indexable": True,
        "published": "2024-01-02T03:04:05Z",
        "attachment": [{
            "type": "PropertyValue",
            "name": "Blog",
            "value": '<a href="https://blog.example.org" rel="me nofollow noopener" target="_blank">'
                     "blog.example.org</a>",
        }],
        "tag": [],
        "icon": {"type": "Image", "url": "https://blog.example.org/avatar.png", "mediaType": "image/png"},
        "image": {"type": "Image", "url": "https://blog.example.org/header.webp", "mediaType": "image/webp"},
    }
    # the PEM is a real key a receiver can load
    key = serialization.load_pem_public_key(doc["publicKey"]["publicKeyPem"].encode())
    assert isinstance(key, rsa.RSAPublicKey)


def test_actor_without_images_keeps_html_summary(site: Site) -> None:
    bare = replace(site, icon_url=None, header_url=None, summary="<p>Déjà <em>HTML</em></p>")
    doc = vocab.actor_document(bare)
    assert "icon" not in doc and "image" not in doc
    assert doc["summary"] == "<p>Déjà <em>HTML</em></p>"
    assert doc["manuallyApprovesFollowers"] is False  # follows are accepted automatically


def test_note_shape(site: Site, article: Article) -> None:
    obj = vocab.article_object(site, article)
    content = (
        f"<p><strong>{TITLE}</strong></p>"
        "<p>Un été caniculaire à Paris.</p>"
        f'<p><a href="{ARTICLE_URL}">{ARTICLE_URL}</a></p>'
        '<p><a href="https://blog.example.org/tag/voyage/" class="mention hashtag" rel="tag">'
        "#<span>voyage</span></a>"
        ' <a href="https://blog.example.org/tag/%C3%A9t%C3%A9/" class="mention hashtag" rel="tag">'
        "#<span>été</span></a></p>"
    )
    assert obj == {
        "@context": CONTEXT,
        "id": f"{BASE}/articles/l-ete-a-paris",
        "type": "Note",
        "attributedTo": ACTOR,
        "url": ARTICLE_URL,
        "published": "2024-07-14T10:30:15Z",
        "updated": "2024-07-15T07:00:00Z",
        "to": [AS_PUBLIC],
        "cc": [FOLLOWERS],
        "mediaType": "text/html",
        "content": content,
        "contentMap": {"fr": content},
        "tag": [
            {"type": "Hashtag", "href": "https://blog.example.org/tag/voyage/", "name": "#voyage"},
            {"type": "Hashtag", "href": "https://blog.example.org/tag/%C3%A9t%C3%A9/", "name": "#été"},
        ],
        "attachment": [{"type": "Image", "url": IMAGE, "mediaType": "image/jpeg", "name": IMAGE_ALT}],
        "replies": {
            "id": f"{BASE}/articles/l-ete-a-paris/replies",
            "type": "Collection",
            "first": {
                "type": "CollectionPage",
                "next": f"{BASE}/articles/l-ete-a-paris/replies?page=1",
                "partOf": f"{BASE}/articles/l-ete-a-paris/replies",
                "items": [],
            },
        },
        "interactionPolicy": {"canQuote": {"automaticApproval": [AS_PUBLIC]}},  # quote_policy public (FEP-044f)
    }
    assert "sensitive" not in obj and "summary" not in obj  # no CW: Mastodon would hide the post


def test_note_full_mode_and_excerpt_fallback(site: Site, article: Article) -> None:
    full = vocab.article_object(replace(site, content_mode="full"), article)
    assert full["content"].startswith(f"<p><strong>{TITLE}</strong></p>{CONTENT}<p><a href=")

    long_html = "<p>" + " ".join(["mot"] * 400) + "</p><p>fin « cachée »</p>"
    bare = replace(article, summary=None, content=long_html, language=None)
    obj = vocab.article_object(site, bare)
    excerpt = re.search(r"</strong></p><p>(.*?)</p><p><a", obj["content"])
    assert excerpt is not None
    assert excerpt.group(1).endswith("…") and "<" not in excerpt.group(1)
    assert len(excerpt.group(1)) <= vocab.PREVIEW_CHARS + 1
    assert "cachée" not in obj["content"]
    assert obj["contentMap"] == {"fr": obj["content"]}  # falls back to the site language

    # French typography: the no-break spaces inside « » must survive the excerpt
    nbsp = vocab.article_object(site, replace(bare, content="<p>Enfin\u00a0: «\u00a0été\u00a0» &amp; co</p>"))
    assert "<p>Enfin\u00a0: «\u00a0été\u00a0» &amp; co</p>" in nbsp["content"]

    no_lang = vocab.article_object(replace(site, language=None), bare)
    assert "contentMap" not in no_lang


def test_plain_text_excerpt_is_escaped_and_title_is_escaped(site: Site, article: Article) -> None:
    tricky = replace(article, title="Tom & <Jerry>", summary="a < b & « c »\n\nsecond",
                     url='https://blog.example.org/?p=1&x="y"')
    content = vocab.article_object(site, tricky)["content"]
    assert "<p><strong>Tom &amp; &lt;Jerry&gt;</strong></p>" in content
    assert "<p>a &lt; b &amp; « c »</p><p>second</p>" in content
    assert '<a href="https://blog.example.org/?p=1&amp;x=&quot;y&quot;">' in content


def test_sensitive_note(site: Site, article: Article) -> None:
    obj = vocab.article_object(site, replace(article, sensitive=True, content_warning="Canicule & chaleur"))
    assert obj["sensitive"] is True
    assert obj["summary"] == "Canicule &amp; chaleur"
    flagged = vocab.article_object(site, replace(article, sensitive=True))
    assert flagged["sensitive"] is True and "summary" not in flagged


def test_article_shape_fep_b2b8(site: Site, article: Article) -> None:
    obj = vocab.article_object(replace(site, object_type="Article"), article)
    assert obj["type"] == "Article"
    assert obj["name"] == TITLE
    assert obj["nameMap"] == {"fr": TITLE}
    assert obj["content"] == CONTENT
    assert obj["contentMap"] == {"fr": CONTENT}
    assert obj["summary"] == "<p>Un été caniculaire à Paris.</p>"
    assert obj["mediaType"] == "text/html"
    assert obj["url"] == ARTICLE_URL
    assert obj["image"] == {"type": "Image", "url": IMAGE, "mediaType": "image/jpeg", "name": IMAGE_ALT}
    assert obj["attachment"] == [obj["image"]]
    assert [t["name"] for t in obj["tag"]] == ["#voyage", "#été"]
    preview = obj["preview"]
    assert preview["type"] == "Note"
    assert preview["attributedTo"] == ACTOR
    assert preview["content"].startswith(f"<p><strong>{TITLE}</strong></p><p>Un été caniculaire à Paris.</p>")
    assert f'<a href="{ARTICLE_URL}">' in preview["content"]
    assert preview["contentMap"] == {"fr": preview["content"]}
    assert preview["attachment"] == [obj["image"]]
    assert obj["replies"]["id"] == f"{BASE}/articles/l-ete-a-paris/replies"

    cw = vocab.article_object(replace(site, object_type="Article"),
                              replace(article, sensitive=True, content_warning="Spoilers"))
    assert cw["summary"] == "Spoilers" and cw["sensitive"] is True


@pytest.mark.parametrize(("tag", "name"), [
    ("voyage", "voyage"),
    ("été", "été"),
    ("e\u0301te\u0301", "été"),  # decomposed accents are recomposed, not split
    ("été ensoleillé", "étéEnsoleillé"),
    ("vie-privée", "viePrivée"),
    ("#Mastodon", "Mastodon"),
    ("snake_case", "snake_case"),
    ("2024", None),  # Mastodon needs a letter
    ("  ", None),
    ("日本 旅行", "日本旅行"),
])
def test_hashtag_name(tag: str, name: str | None) -> None:
    assert vocab.hashtag_name(tag) == name


def test_hashtags_dedup_and_skip_invalid(site: Site, article: Article) -> None:
    obj = vocab.article_object(site, replace(article, tags=("Été", "été", "2024", "été ensoleillé")))
    assert [t["name"] for t in obj["tag"]] == ["#Été", "#étéEnsoleillé"]
    assert obj["tag"][1]["href"] == "https://blog.example.org/tag/%C3%A9t%C3%A9%20ensoleill%C3%A9/"
    custom = replace(site, tag_url_template="https://hugo.example/tags/{tag}")
    assert vocab.article_object(custom, article)["tag"][0]["href"] == "https://hugo.example/tags/voyage"


def test_create_update_delete(site: Site, article: Article) -> None:
    obj = vocab.article_object(site, article)
    create = vocab.create_activity(site, obj, "c-1", WHEN)
    assert create["@context"] == CONTEXT
    assert create["id"] == f"{BASE}/activities/c-1"
    assert create["type"] == "Create"
    assert create["actor"] == ACTOR
    assert create["published"] == "2024-07-14T10:30:15Z"
    assert create["to"] == [AS_PUBLIC] and create["cc"] == [FOLLOWERS]
    assert "@context" not in create["object"]
    assert create["object"]["id"] == obj["id"] and create["object"]["content"] == obj["content"]
    assert "@context" in obj  # the caller's object is not mutated

    no_updated = {k: v for k, v in obj.items() if k != "updated"}
    later = datetime(2024, 8, 1, 12, 0, 0, tzinfo=UTC)
    update = vocab.update_activity(site, no_updated, "u-1", later)
    assert update["type"] == "Update" and update["id"] == f"{BASE}/activities/u-1"
    assert update["published"] == "2024-08-01T12:00:00Z"
    assert update["object"]["updated"] == "2024-08-01T12:00:00Z"  # Mastodon ignores edits without it
    assert "updated" not in no_updated
    assert vocab.update_activity(site, obj, "u-2", later)["object"]["updated"] == "2024-07-15T07:00:00Z"

    delete = vocab.delete_activity(site, obj["id"], "d-1", later)
    assert delete == {
        "@context": CONTEXT,
        "id": f"{BASE}/activities/d-1",
        "type": "Delete",
        "actor": ACTOR,
        "published": "2024-08-01T12:00:00Z",
        "to": [AS_PUBLIC],
        "cc": [FOLLOWERS],
        "object": {"id": obj["id"], "type": "Tombstone"},
    }


def test_tombstone() -> None:
    assert vocab.tombstone(f"{BASE}/articles/x", datetime(2024, 8, 1, 12, 0, 0), "Note") == {
        "@context": CONTEXT,
        "id": f"{BASE}/articles/x",
        "type": "Tombstone",
        "formerType": "Note",
        "deleted": "2024-08-01T12:00:00Z",  # naive datetimes are UTC
    }


def test_accept_follow_echoes_mastodon_follow(site: Site) -> None:
    # What Mastodon POSTs to our inbox (signature block and all).
    follow = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": "https://mastodon.social/9c5e6f2a-1b2c-4d5e-8f90-0123456789ab",
        "type": "Follow",
        "actor": "https://mastodon.social/users/alice",
        "object": ACTOR,
        "signature": {"type": "RsaSignature2017", "creator": "https://mastodon.social/users/alice#main-key"},
    }
    accept = vocab.accept_follow(site, follow, "a-1")
    assert accept == {
        "@context": CONTEXT,
        "id": f"{BASE}/activities/a-1",
        "type": "Accept",
        "actor": ACTOR,
        "object": {
            "id": "https://mastodon.social/9c5e6f2a-1b2c-4d5e-8f90-0123456789ab",
            "type": "Follow",
            "actor": "https://mastodon.social/users/alice",
            "object": ACTOR,
        },
        "to": ["https://mastodon.social/users/alice"],
    }
    # Misskey-ish: actor embedded as an object
    embedded = vocab.accept_follow(site, {**follow, "actor": {"id": "https://misskey.io/users/9abc"}}, "a-2")
    assert embedded["to"] == ["https://misskey.io/users/9abc"]


def test_collections(site: Site, article: Article) -> None:
    head = vocab.ordered_collection(site.outbox, 3, f"{site.outbox}?page=1", f"{site.outbox}?page=1&min_id=0")
    assert head == {
        "@context": CONTEXT,
        "id": site.outbox,
        "type": "OrderedCollection",
        "totalItems": 3,
        "first": f"{site.outbox}?page=1",
        "last": f"{site.outbox}?page=1&min_id=0",
    }
    hidden = vocab.ordered_collection(site.followers, 12, None)
    assert hidden == {"@context": CONTEXT, "id": site.followers, "type": "OrderedCollection",
                      "totalItems": 12}

    create = vocab.create_activity(site, vocab.article_object(site, article), "c-1", WHEN)
    page = vocab.ordered_collection_page(f"{site.outbox}?page=2", site.outbox, [create, "https://x.example/1"],
                                         f"{site.outbox}?page=3", f"{site.outbox}?page=1")
    assert page["@context"] == CONTEXT
    assert page["type"] == "OrderedCollectionPage"
    assert page["id"] == f"{site.outbox}?page=2" and page["partOf"] == site.outbox
    assert page["next"] == f"{site.outbox}?page=3" and page["prev"] == f"{site.outbox}?page=1"
    assert page["orderedItems"][0]["id"] == create["id"] and "@context" not in page["orderedItems"][0]
    assert page["orderedItems"][1] == "https://x.example/1"
    last = vocab.ordered_collection_page("p", "c", [], None, None)
    assert "next" not in last and "prev" not in last and last["orderedItems"] == []


def test_webfinger(site: Site) -> None:
    jrd = discovery.webfinger(site, "acct:blog@blog.example.org")
    assert jrd == {
        "subject": "acct:blog@blog.example.org",
        "aliases": [ACTOR, "https://blog.example.org"],
        "links": [
            {"rel": "http://webfinger.net/rel/profile-page", "type": "text/html",
             "href": "https://blog.example.org"},
            {"rel": "self", "type": "application/activity+json", "href": ACTOR},
            {"rel": "http://webfinger.net/rel/avatar", "href": "https://blog.example.org/avatar.png",
             "type": "image/png"},
        ],
    }
    for resource in ("acct:blog@blog.example.org", "acct:BLOG@Blog.Example.org", "blog@blog.example.org",
                     "@blog@blog.example.org", ACTOR, "https://blog.example.org/"):
        assert discovery.webfinger_matches(site, resource), resource
    for resource in ("acct:other@blog.example.org", "acct:blog@evil.example", f"{BASE}/users/other", ""):
        assert not discovery.webfinger_matches(site, resource), resource


def _check_nodeinfo_schema(doc: dict, version: str) -> None:
    """The required parts of the NodeInfo 2.0/2.1 JSON schemas (nodeinfo.diaspora.software)."""
    assert set(doc) == {"version", "software", "protocols", "services", "openRegistrations", "usage",
                        "metadata"}
    assert doc["version"] == version
    assert re.fullmatch(r"[a-z0-9-]+", doc["software"]["name"])
    assert isinstance(doc["software"]["version"], str)
    allowed_sw = {"name", "version"} | ({"repository", "homepage"} if version == "2.1" else set())
    assert set(doc["software"]) <= allowed_sw
    assert doc["protocols"] and set(doc["protocols"]) <= {
        "activitypub", "buddycloud", "dfrn", "diaspora", "libertree", "ostatus", "pumpio", "tent", "xmpp",
        "zot"}
    assert set(doc["services"]) == {"inbound", "outbound"}
    outbound = {"atom1.0", "rss2.0", "twitter", "wordpress", "tumblr", "blogger", "diaspora", "friendica"}
    assert set(doc["services"]["outbound"]) <= outbound
    assert isinstance(doc["openRegistrations"], bool)
    users = doc["usage"]["users"]
    for k in ("total", "activeMonth", "activeHalfyear"):
        assert isinstance(users[k], int) and users[k] >= 0
    assert isinstance(doc["usage"]["localPosts"], int)
    assert isinstance(doc["metadata"], dict)


def test_nodeinfo(site: Site) -> None:
    v20 = discovery.nodeinfo(site, "2.0", users=1, posts=42, software_version="0.1.0",
                         repository="https://example.org/fedibridge")
    _check_nodeinfo_schema(v20, "2.0")
    assert v20["software"] == {"name": "fedibridge", "version": "0.1.0"}  # 2.0 has no repository
    assert v20["protocols"] == ["activitypub"]
    assert v20["openRegistrations"] is False
    assert v20["usage"] == {"users": {"total": 1, "activeMonth": 1, "activeHalfyear": 1}, "localPosts": 42}
    assert v20["metadata"] == {"nodeName": "Le blog d’Élodie"}

    v21 = discovery.nodeinfo(site, "2.1", users=1, posts=42, software_version="0.1.0",
                         repository="https://example.org/fedibridge", homepage="https://example.org/")
    _check_nodeinfo_schema(v21, "2.1")
    assert v21["software"] == {"name": "fedibridge", "version": "0.1.0",
                               "repository": "https://example.org/fedibridge", "homepage": "https://example.org/"}


def test_host_meta(site: Site) -> None:
    xrd = discovery.host_meta_xrd(site)
    root = ET.fromstring(xrd.encode())
    ns = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
    assert root.tag == f"{ns}XRD"
    links = root.findall(f"{ns}Link")
    assert len(links) == 1
    assert links[0].get("rel") == "lrdd"
    assert links[0].get("template") == "https://blog.example.org/.well-known/webfinger?resource={uri}"
    assert discovery.host_meta_json(site) == {"links": [{
        "rel": "lrdd", "type": "application/jrd+json",
        "template": "https://blog.example.org/.well-known/webfinger?resource={uri}"}]}


def test_utf8_survives_json(site: Site, article: Article) -> None:
    long_form = vocab.article_object(replace(site, object_type="Article"), article)
    obj = vocab.create_activity(site, long_form, "c", WHEN)
    raw = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    for text in (TITLE, IMAGE_ALT, "Deuxième paragraphe « cité » 🌞", "#été"):
        assert text.encode("utf-8") in raw
    assert json.loads(raw)["object"]["name"] == TITLE
    actor_raw = json.dumps(vocab.actor_document(site), ensure_ascii=False).encode("utf-8")
    assert "Le blog d’Élodie".encode() in actor_raw and "« en vrac »".encode() in actor_raw


def test_media_type_guess() -> None:
    assert vocab.media_type("https://x.example/a/b.JPG?w=300") == "image/jpeg"
    assert vocab.media_type("https://x.example/clip.mp4") == "video/mp4"
    assert vocab.media_type("https://x.example/noext") is None
    assert vocab._image("https://x.example/clip.mp4", "vidéo")["type"] == "Document"
