"""Publishing through the admin API, checked where the fediverse and feed readers look:
outbox, the object's id, the delivery queue, /feed.rss and /feed.atom."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import feedparser
from aiohttp import web
from sqlalchemy import func, select

from fedibridge.tables import activities, articles, comments, deliveries, followers, reactions

from .conftest import Bridge, BridgeFactory
from .loopback import LoopbackServer

AP = {"Accept": 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'}
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
TITLE = "L’été à Paris « enfin » 🌞"
CONTENT = ("<p>Il fait\u00a0chaud à Paris\u00a0! « Enfin », dit-on 🌞.</p>"
           '<p>Voir <a href="https://fr.wikipedia.org/wiki/Paris">Paris</a>.<script>alert(1)</script></p>')


def article(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "title": TITLE,
        "url": "http://blog.test/2024/07/ete-a-paris/",
        "content": CONTENT,
        "slug": "ete-a-paris",
        "tags": ["voyage", "été ensoleillé"],
        "language": "fr",
        "published": "2024-07-14T10:30:00+02:00",
        "image": "http://blog.test/media/seine.jpg",
        "image_alt": "La Seine au coucher du soleil",
    }
    data.update(changes)
    return data


async def post(bridge: Bridge, data: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with bridge.http.post(f"{bridge.url}/api/articles", json=data,
                                headers=bridge.admin if headers is None else headers) as resp:
        return resp.status, await resp.json()


async def get_ap(bridge: Bridge, url: str) -> tuple[int, bytes]:
    async with bridge.http.get(url, headers=AP, allow_redirects=False) as resp:
        return resp.status, await resp.read()


async def outbox_items(bridge: Bridge) -> list[dict[str, Any]]:
    async with bridge.http.get(f"{bridge.actor}/outbox?page=1", headers=AP) as resp:
        assert resp.status == 200
        return list((await resp.json())["orderedItems"])


async def add_followers(bridge: Bridge) -> None:
    """Two Mastodon accounts on one server (shared inbox) and a GoToSocial one without a shared inbox."""
    now = datetime.now(UTC)
    rows = [
        {"actor_id": "https://mastodon.example/users/alice", "inbox": "https://mastodon.example/users/alice/inbox",
         "shared_inbox": "https://mastodon.example/inbox", "handle": "@alice@mastodon.example", "since": now},
        {"actor_id": "https://mastodon.example/users/bob", "inbox": "https://mastodon.example/users/bob/inbox",
         "shared_inbox": "https://mastodon.example/inbox", "handle": "@bob@mastodon.example", "since": now},
        {"actor_id": "https://gts.example/users/carol", "inbox": "https://gts.example/users/carol/inbox",
         "shared_inbox": None, "handle": "@carol@gts.example", "since": now},
    ]
    async with bridge.store.begin() as conn:
        await conn.execute(followers.insert(), rows)


async def queued_inboxes(bridge: Bridge, activity_ap_id: str) -> list[str]:
    key = activity_ap_id.rsplit("/", 1)[1]
    async with bridge.store.connect() as conn:
        rows = await conn.execute(
            select(deliveries.c.inbox).join(activities, deliveries.c.activity_id == activities.c.id)
            .where(activities.c.key == key).order_by(deliveries.c.inbox)
        )
        return [r.inbox for r in rows]


async def test_publish_reaches_outbox_object_queue_and_feeds(bridge: Bridge) -> None:
    await add_followers(bridge)
    status, body = await post(bridge, article(content_warning="Chaleur 🥵"))
    assert status == 201, body
    article_id = f"{bridge.url}/articles/ete-a-paris"
    assert body["slug"] == "ete-a-paris" and body["id"] == article_id
    assert body["url"] == "http://blog.test/2024/07/ete-a-paris/"
    assert "<script>" not in body["content"] and "alert" not in body["content"]

    # Queued once per server: Mastodon's shared inbox, GoToSocial's personal inbox.
    assert await queued_inboxes(bridge, body["activity"]) == [
        "https://gts.example/users/carol/inbox", "https://mastodon.example/inbox"]
    assert body["queued"] == 2

    items = await outbox_items(bridge)
    assert items[0]["type"] == "Create" and items[0]["id"] == body["activity"]
    assert items[0]["object"]["id"] == article_id

    status, raw = await get_ap(bridge, article_id)
    assert status == 200
    # Byte for byte: literal UTF-8, not \u escapes.
    assert "« Enfin »".encode() in raw and "🌞".encode() in raw and "\u00a0".encode() in raw
    note = json.loads(raw)
    assert note["type"] == "Note" and note["id"] == article_id
    assert note["attributedTo"] == bridge.actor
    assert note["url"] == "http://blog.test/2024/07/ete-a-paris/"
    assert note["published"] == "2024-07-14T08:30:00Z"
    assert note["to"] == [PUBLIC] and note["cc"] == [f"{bridge.actor}/followers"]
    assert "<strong>L’été à Paris « enfin » 🌞</strong>" in note["content"]
    assert 'href="http://blog.test/2024/07/ete-a-paris/"' in note["content"]
    assert "Il fait\u00a0chaud à Paris" in note["content"]  # the excerpt
    assert note["contentMap"] == {"fr": note["content"]}
    assert note["sensitive"] is True and note["summary"] == "Chaleur 🥵"
    assert {"type": "Hashtag", "href": "http://blog.test/tag/voyage/", "name": "#voyage"} in note["tag"]
    assert any(t["name"] == "#étéEnsoleillé" for t in note["tag"])
    assert note["attachment"] == [{"type": "Image", "url": "http://blog.test/media/seine.jpg",
                                   "mediaType": "image/jpeg", "name": "La Seine au coucher du soleil"}]
    assert note["replies"]["id"] == f"{article_id}/replies"

    # A browser is sent to the article itself.
    async with bridge.http.get(article_id, headers={"Accept": "text/html"}, allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "http://blog.test/2024/07/ete-a-paris/"

    # The activity dereferences at its id.
    status, raw = await get_ap(bridge, body["activity"])
    assert status == 200 and json.loads(raw)["object"]["id"] == article_id

    for kind in ("rss", "atom"):
        async with bridge.http.get(f"{bridge.url}/feed.{kind}") as resp:
            assert resp.status == 200
            raw = await resp.read()
        assert "« Enfin »".encode() in raw and "🌞".encode() in raw
        feed = feedparser.parse(raw)
        assert feed.bozo == 0, feed.get("bozo_exception")
        entry = feed.entries[0]
        assert entry.title == TITLE
        assert entry.link == "http://blog.test/2024/07/ete-a-paris/"
        assert "Il fait\u00a0chaud à Paris\u00a0! « Enfin »" in entry.content[0].value
        assert "<script>" not in entry.content[0].value
        assert [t.term for t in entry.tags] == ["voyage", "été ensoleillé"]
        assert entry.enclosures[0].href == "http://blog.test/media/seine.jpg"
        assert entry.published_parsed[:5] == (2024, 7, 14, 8, 30)


async def test_repost_is_noop_or_update(bridge: Bridge) -> None:
    await add_followers(bridge)
    status, first = await post(bridge, article())
    assert status == 201
    status, again = await post(bridge, article())
    assert status == 200 and again["changed"] is False and again["activity"] is None
    async with bridge.store.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(activities))).scalar_one() == 1

    changed = CONTENT.replace("Enfin", "Enfin, vraiment")
    status, upd = await post(bridge, article(content=changed, tags=["voyage"]))
    assert status == 200 and upd["changed"] is True
    assert upd["published"] == "2024-07-14T08:30:00Z" and upd["updated"] is not None
    assert len(await queued_inboxes(bridge, upd["activity"])) == 2

    items = await outbox_items(bridge)
    assert [i["type"] for i in items] == ["Update", "Create"]  # newest first
    assert items[0]["object"]["updated"] == upd["updated"]
    assert "Enfin, vraiment" in items[0]["object"]["content"]

    status, raw = await get_ap(bridge, first["id"])
    note = json.loads(raw)
    assert "Enfin, vraiment" in note["content"] and note["updated"] == upd["updated"]
    assert [t["name"] for t in note["tag"]] == ["#voyage"]

    async with bridge.http.get(f"{bridge.url}/feed.atom") as resp:
        feed = feedparser.parse(await resp.read())
    assert "Enfin, vraiment" in feed.entries[0].content[0].value


async def test_delete_federates_tombstone_and_leaves_feeds(bridge: Bridge) -> None:
    await add_followers(bridge)
    _, first = await post(bridge, article())
    await post(bridge, article(slug="autre", url="http://blog.test/autre/", title="Un autre billet"))
    async with bridge.http.delete(f"{bridge.url}/api/articles/ete-a-paris", headers=bridge.admin) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["deleted"] is not None
    assert len(await queued_inboxes(bridge, body["activity"])) == 2

    items = await outbox_items(bridge)
    assert items[0]["type"] == "Delete"
    assert items[0]["object"] == {"id": first["id"], "type": "Tombstone"}
    assert first["activity"] not in [i["id"] for i in items]  # the taken-back Create left the outbox

    status, raw = await get_ap(bridge, first["id"])
    assert status == 410
    tomb = json.loads(raw)
    assert tomb["type"] == "Tombstone" and tomb["id"] == first["id"] and tomb["formerType"] == "Note"
    status, _ = await get_ap(bridge, first["activity"])
    assert status == 410

    for kind in ("rss", "atom"):
        async with bridge.http.get(f"{bridge.url}/feed.{kind}") as resp:
            feed = feedparser.parse(await resp.read())
        assert [e.title for e in feed.entries] == ["Un autre billet"]

    # Deleting again sends nothing; unknown slugs are 404; the dead id is not reused.
    async with bridge.http.delete(f"{bridge.url}/api/articles/ete-a-paris", headers=bridge.admin) as resp:
        assert resp.status == 200 and (await resp.json())["activity"] is None
    async with bridge.http.delete(f"{bridge.url}/api/articles/nope", headers=bridge.admin) as resp:
        assert resp.status == 404
    status, err = await post(bridge, article())
    assert status == 410 and "ete-a-paris" in err["error"]


BAD = [
    ({"title": ""}, "title"),
    ({"title": None}, "title"),
    ({"url": None}, "url"),
    ({"url": "ftp://blog.test/x"}, "url"),
    ({"url": "/relative/path"}, "url"),
    ({"content": ""}, "content"),
    ({"content": 42}, "content"),
    ({"tags": "voyage"}, "tags"),
    ({"tags": ["ok", 3]}, "tags"),
    ({"published": "hier"}, "published"),
    ({"language": "français"}, "language"),
    ({"image": "javascript:alert(1)"}, "image"),
    ({"sensitive": "yes"}, "sensitive"),
    ({"slug": "a/b"}, "slug"),
]


async def test_bad_input_names_the_field(bridge: Bridge) -> None:
    for change, field in BAD:
        data = article(**change)
        if change.get(field, "x") is None:
            del data[field]
        status, body = await post(bridge, data)
        assert status == 400, (change, body)
        assert field in body["error"], (change, body)
    async with bridge.http.post(f"{bridge.url}/api/articles", data=b"{not json", headers=bridge.admin) as resp:
        assert resp.status == 400
    async with bridge.http.post(f"{bridge.url}/api/articles", json=[1, 2], headers=bridge.admin) as resp:
        assert resp.status == 400
    async with bridge.store.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(articles))).scalar_one() == 0


async def test_unknown_field_is_refused_by_name(bridge: Bridge) -> None:
    """A script's typo (`titel`) is a 400 naming it, and nothing is published or queued."""
    data = article()
    data["titel"] = data.pop("title")
    status, body = await post(bridge, data)
    assert status == 400
    assert body["error"] == "unknown field 'titel' (did you mean 'title'?)"
    status, body = await post(bridge, article(wordpress_id=42))
    assert status == 400 and "unknown field 'wordpress_id'" in body["error"] and "content_warning" in body["error"]
    async with bridge.store.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(articles))).scalar_one() == 0
        assert (await conn.execute(select(func.count()).select_from(activities))).scalar_one() == 0
    # What GET /api/articles/{slug} returns may be sent back as it is: the read-only fields are ignored.
    status, created = await post(bridge, article())
    assert status == 201
    async with bridge.http.get(f"{bridge.url}/api/articles/ete-a-paris", headers=bridge.admin) as resp:
        shown = await resp.json()
    status, again = await post(bridge, {**shown, "title": "Nouveau titre"})
    assert status == 200 and again["title"] == "Nouveau titre" and again["changed"] is True


async def test_auth_and_size_limit(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(max_article_bytes=4000)
    status, body = await post(bridge, article(), headers={})
    assert status == 401 and "token" in body["error"]
    status, _ = await post(bridge, article(), headers={"Authorization": "Bearer wrong"})
    assert status == 401
    async with bridge.http.get(f"{bridge.url}/api/articles/ete-a-paris") as resp:
        assert resp.status == 401
    async with bridge.http.delete(f"{bridge.url}/api/articles/ete-a-paris") as resp:
        assert resp.status == 401
    status, body = await post(bridge, article(content="<p>" + "é" * 4000 + "</p>"))
    assert status == 413 and "4000" in body["error"]
    # Chunked upload without Content-Length is capped too.

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 1000

    async with bridge.http.post(f"{bridge.url}/api/articles", data=chunks(), headers=bridge.admin) as resp:
        assert resp.status == 413
    status, _ = await post(bridge, article())
    assert status == 201


async def test_slug_from_title_and_collisions(bridge: Bridge) -> None:
    data = article(url="http://blog.test/?p=12", title="L’été à Paris")
    del data["slug"]
    status, body = await post(bridge, data)
    assert status == 201 and body["slug"] == "l-ete-a-paris"
    # Same URL again without slug: the same article (an update), not a duplicate.
    status, body = await post(bridge, {**data, "content": "<p>Modifié</p>"})
    assert status == 200 and body["slug"] == "l-ete-a-paris"
    # Another article with the same title gets its own slug.
    status, body = await post(bridge, {**data, "url": "http://blog.test/?p=13"})
    assert status == 201 and body["slug"] == "l-ete-a-paris-2"
    # The blog's own slug is taken from a pretty URL.
    data2 = article(url="http://blog.test/2024/08/une-soiree-a-lyon/")
    del data2["slug"]
    status, body = await post(bridge, data2)
    assert status == 201 and body["slug"] == "une-soiree-a-lyon"


async def test_feed_caching_headers(bridge: Bridge) -> None:
    await post(bridge, article())
    types = {"rss": "application/rss+xml; charset=utf-8", "atom": "application/atom+xml; charset=utf-8"}
    for kind, ctype in types.items():
        url = f"{bridge.url}/feed.{kind}"
        async with bridge.http.get(url) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == ctype
            etag, modified = resp.headers["ETag"], resp.headers["Last-Modified"]
        assert modified == "Sun, 14 Jul 2024 08:30:00 GMT"
        async with bridge.http.get(url, headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304 and await resp.read() == b""
        async with bridge.http.get(url, headers={"If-Modified-Since": modified}) as resp:
            assert resp.status == 304
        older = format_datetime(datetime(2024, 7, 14, 8, 29, tzinfo=UTC), usegmt=True)
        async with bridge.http.get(url, headers={"If-Modified-Since": older}) as resp:
            assert resp.status == 200
        async with bridge.http.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": modified}) as resp:
            assert resp.status == 200  # If-None-Match wins
    async with bridge.http.get(f"{bridge.url}/feed.rss") as resp:
        etag = resp.headers["ETag"]
    await post(bridge, article(content="<p>Nouveau texte</p>"))
    async with bridge.http.get(f"{bridge.url}/feed.rss", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 200 and resp.headers["ETag"] != etag


async def test_feed_entry_limit(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(feed_entries=3)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(5):
        status, _ = await post(bridge, article(slug=f"billet-{i}", url=f"http://blog.test/{i}/", title=f"Billet {i}",
                                               published=(start + timedelta(days=i)).isoformat()))
        assert status == 201
    async with bridge.http.get(f"{bridge.url}/feed.rss") as resp:
        feed = feedparser.parse(await resp.read())
    assert [e.title for e in feed.entries] == ["Billet 4", "Billet 3", "Billet 2"]


async def test_article_object_type(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(object_type="Article")
    _, body = await post(bridge, article(summary="Un résumé « court »."))
    status, raw = await get_ap(bridge, body["id"])
    obj = json.loads(raw)
    assert obj["type"] == "Article" and obj["name"] == TITLE and obj["nameMap"] == {"fr": TITLE}
    assert "Voir <a" in obj["content"]  # full text for long-form readers
    assert "Un résumé « court »." in obj["summary"]
    assert obj["preview"]["type"] == "Note" and "<strong>" in obj["preview"]["content"]  # FEP-b2b8
    assert obj["image"]["url"] == "http://blog.test/media/seine.jpg"
    items = await outbox_items(bridge)
    assert items[0]["object"]["type"] == "Article"
    await bridge.http.delete(f"{bridge.url}/api/articles/ete-a-paris", headers=bridge.admin)
    status, raw = await get_ap(bridge, body["id"])
    assert status == 410 and json.loads(raw)["formerType"] == "Article"


async def test_admin_get_counts_reactions(bridge: Bridge) -> None:
    _, body = await post(bridge, article())
    now = datetime.now(UTC)
    async with bridge.store.begin() as conn:
        art_id = (await conn.execute(select(articles.c.id).where(articles.c.slug == "ete-a-paris"))).scalar_one()
        await conn.execute(reactions.insert(), [
            {"article_id": art_id, "actor_id": f"https://m.example/users/u{i}", "type": kind,
             "ap_id": f"https://m.example/{kind}/{i}", "created_at": now}
            for i, kind in enumerate(["like", "like", "like", "boost"])
        ])
    async with bridge.http.get(f"{bridge.url}/api/articles/ete-a-paris", headers=bridge.admin) as resp:
        assert resp.status == 200
        got = await resp.json()
    assert got["likes"] == 3 and got["boosts"] == 1
    assert got["id"] == body["id"] and got["url"] == "http://blog.test/2024/07/ete-a-paris/"
    assert got["title"] == TITLE
    async with bridge.http.get(f"{bridge.url}/api/articles/nope", headers=bridge.admin) as resp:
        assert resp.status == 404
    status, _ = await get_ap(bridge, f"{bridge.url}/articles/nope")
    assert status == 404
    status, _ = await get_ap(bridge, f"{bridge.url}/activities/0123456789abcdef")
    assert status == 404


async def test_replies_collection_lists_public_approved_comments(bridge: Bridge) -> None:
    _, body = await post(bridge, article())
    now = datetime(2024, 7, 15, tzinfo=UTC)
    async with bridge.store.begin() as conn:
        art_id = (await conn.execute(select(articles.c.id).where(articles.c.slug == "ete-a-paris"))).scalar_one()

        def comment(i: int, **kw: Any) -> dict[str, Any]:
            return {"article_id": art_id, "ap_id": f"https://mastodon.example/users/a/statuses/{i}",
                    "in_reply_to": body["id"], "author_id": "https://mastodon.example/users/a",
                    "content_html": "<p>Merci !</p>", "published": now + timedelta(minutes=i), "created_at": now,
                    "status": "approved", "visibility": "public", "deleted": False, **kw}

        rows = [comment(i) for i in range(22)]
        rows += [comment(100, status="pending"), comment(101, visibility="private"), comment(102, deleted=True)]
        await conn.execute(comments.insert(), rows)
    replies = f"{body['id']}/replies"
    status, raw = await get_ap(bridge, replies)
    coll = json.loads(raw)
    assert status == 200 and coll["type"] == "Collection" and coll["totalItems"] == 22
    status, raw = await get_ap(bridge, f"{replies}?page=1")
    page = json.loads(raw)
    assert page["type"] == "CollectionPage" and page["partOf"] == replies
    assert len(page["items"]) == 20 and page["items"][0].endswith("/statuses/0")
    assert page["next"] == f"{replies}?page=2"
    status, raw = await get_ap(bridge, page["next"])
    page2 = json.loads(raw)
    assert page2["items"] == [f"https://mastodon.example/users/a/statuses/{i}" for i in (20, 21)]
    assert "next" not in page2


async def test_concurrent_first_posts_of_one_slug(bridge: Bridge) -> None:
    import asyncio

    results = await asyncio.gather(*(post(bridge, article()) for _ in range(5)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 200, 200, 201]
    async with bridge.store.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(activities))).scalar_one() == 1


class ImageHost(LoopbackServer):
    """The blog's media server: a real JPEG-sized body whose HEAD tells its size, and a CDN refusing HEAD."""

    IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 48 + b"\xff\xd9"  # 12,294 bytes

    def routes(self, app: web.Application) -> None:
        async def image(request: web.Request) -> web.Response:
            return web.Response(body=self.IMAGE, content_type="image/jpeg")

        async def no_head(request: web.Request) -> web.Response:
            return web.Response(status=405, headers={"Allow": "GET"})

        app.router.add_get("/media/seine.jpg", image)  # aiohttp answers HEAD too, with Content-Length
        app.router.add_route("HEAD", "/cdn/tour.jpg", no_head)
        app.router.add_get("/cdn/tour.jpg", image, allow_head=False)


async def _enclosures(bridge: Bridge) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(RSS enclosure length by image URL, Atom enclosure length by image URL) as readers get them."""
    found: list[dict[str, str | None]] = []
    for kind, path in (("rss", "channel/item/enclosure"), ("atom", "{http://www.w3.org/2005/Atom}entry/"
                                                                   "{http://www.w3.org/2005/Atom}link[@rel='enclosure']")):
        async with bridge.http.get(f"{bridge.url}/feed.{kind}") as resp:
            root = ET.fromstring(await resp.read())
        found.append({e.get("url") or e.get("href") or "": e.get("length") for e in root.findall(path)})
    return found[0], found[1]


async def test_image_enclosure_has_its_real_length(bridge: Bridge) -> None:
    """Measured with one HEAD when published or when the image changes; unknown stays RSS's "0", absent in Atom."""
    async with ImageHost() as media:
        measured, refused = f"{media.base}/media/seine.jpg", f"{media.base}/cdn/tour.jpg"
        status, _ = await post(bridge, article(image=measured))
        assert status == 201
        status, _ = await post(bridge, article(slug="tour", url="http://blog.test/tour/", image=refused))
        assert status == 201
        rss, atom = await _enclosures(bridge)
        assert rss == {measured: str(len(ImageHost.IMAGE)), refused: "0"}
        assert atom == {measured: str(len(ImageHost.IMAGE)), refused: None}
        # A new image: the old size is dropped and the new one measured.
        status, _ = await post(bridge, article(image=f"{media.base}/media/seine.jpg?v=2"))
        assert status == 200
        rss, _ = await _enclosures(bridge)
        assert rss[f"{media.base}/media/seine.jpg?v=2"] == str(len(ImageHost.IMAGE))
    # The image server gone: publishing still works, the size is just unknown.
    status, _ = await post(bridge, article(slug="nuit", url="http://blog.test/nuit/", image=measured + "?v=3"))
    assert status == 201
    rss, atom = await _enclosures(bridge)
    assert rss[measured + "?v=3"] == "0" and atom[measured + "?v=3"] is None
