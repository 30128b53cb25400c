"""The comments HTTP API: public JSON (CORS, ETag), the url alias, admin moderation, blocks, comment feeds."""

from __future__ import annotations

from typing import Any

from fedibridge import articles, comment_views
from fedibridge import comments as store_comments
from fedibridge.app import SERVICES

from .conftest import Bridge, BridgeFactory
from .remote import RemoteInstance
from .test_comment_flows import ARTICLE_URL, publish

ORIGIN = "http://blog.test"


async def seeded(make_bridge: BridgeFactory, masto: RemoteInstance, **overrides: Any) -> tuple[Bridge, list[int]]:
    """A bridge with one article and three comments by Alice: approved, pending, private (approved)."""
    bridge = await make_bridge(**overrides)
    article_id = await publish(bridge)
    alice = masto.add_actor("alice", name="Alice")
    h = store_comments.HANDLERS
    notes = [masto.note(alice, "<p>Première « réponse » ✨</p>", article_id),
             masto.note(alice, "<p>En attente</p>", article_id),
             masto.note(alice, "<p>Privé</p>", article_id, to=[bridge.actor], cc=[])]
    for n in notes:
        await h["Create"](bridge.services, masto.create(alice, n), alice.id)
    ids = []
    async with bridge.store.begin() as conn:
        for n, status in zip(notes, ("approved", "pending", "approved"), strict=True):
            c = comment_views.comment_from_row(await store_comments._row_by_ap_id(conn, n["id"]))
            await store_comments.set_status(conn, bridge.settings, c.id, status)
            ids.append(c.id)
    return bridge, ids


async def test_public_json_cors_and_etag(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge, ids = await seeded(make_bridge, masto)
        url = f"{bridge.url}/api/articles/cafe/comments"
        async with bridge.http.get(url, headers={"Origin": ORIGIN}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "Origin" in resp.headers["Vary"]
            etag = resp.headers["ETag"]
            assert etag.startswith('"')  # strong
            data = await resp.json()
            raw = await resp.read()
        assert "Première « réponse » ✨".encode() in raw  # UTF-8, not \\u escapes
        assert [c["id"] for c in data["comments"]] == [ids[0]]  # pending and private never shown
        assert data["article"]["url"] == ARTICLE_URL and data["total"] == 1
        assert data["reactions"] == {"likes": 0, "boosts": 0, "likers": [], "boosters": [], "quotes": 0,
                                     "mentions": []}
        async with bridge.http.get(url, headers={"Origin": "https://evil.example"}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with bridge.http.get(url, headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        async with bridge.http.options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}) as r:
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "GET" in r.headers["Access-Control-Allow-Methods"]
        # Approving the pending one changes the body, hence the ETag.
        async with bridge.http.post(f"{bridge.url}/api/comments/{ids[1]}/approve", headers=bridge.admin) as resp:
            assert resp.status == 200
        async with bridge.http.get(url, headers={"If-None-Match": etag}) as resp:
            assert resp.status == 200 and len((await resp.json())["comments"]) == 2
        # The widget's alias, by the page URL (with or without the trailing slash).
        for page in (ARTICLE_URL, ARTICLE_URL.rstrip("/")):
            async with bridge.http.get(f"{bridge.url}/api/comments", params={"url": page}) as resp:
                assert resp.status == 200 and (await resp.json())["total"] == 2
        async with bridge.http.get(f"{bridge.url}/api/comments", params={"url": "http://blog.test/nope/"}) as resp:
            assert resp.status == 404
        async with bridge.http.get(f"{bridge.url}/api/articles/nope/comments") as resp:
            assert resp.status == 404


async def test_admin_listing_and_moderation(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge, ids = await seeded(make_bridge, masto)
        api = f"{bridge.url}/api/comments"
        async with bridge.http.get(api) as resp:
            assert resp.status == 401
        async with bridge.http.get(api, params={"status": "pending"}, headers=bridge.admin) as resp:
            data = await resp.json()
        [pending] = data["comments"]
        assert pending["id"] == ids[1] and pending["status"] == "pending" and pending["article"] == "cafe"
        assert set(pending) >= {"id", "article", "ap_id", "in_reply_to", "author", "content_html", "language",
                                "published", "updated", "status", "likes", "boosts"}
        assert set(pending["author"]) >= {"id", "name", "handle", "url", "avatar"}
        async with bridge.http.get(api, params={"status": "all", "article": "cafe"}, headers=bridge.admin) as resp:
            assert len((await resp.json())["comments"]) == 3  # the admin sees private ones, marked
        async with bridge.http.get(api, params={"status": "bogus"}, headers=bridge.admin) as resp:
            assert resp.status == 400
        async with bridge.http.post(f"{api}/{ids[0]}/reject", headers=bridge.admin) as resp:
            assert (await resp.json())["status"] == "rejected"
        async with bridge.http.post(f"{api}/999999/approve", headers=bridge.admin) as resp:
            assert resp.status == 404
        async with bridge.http.post(f"{api}/{ids[0]}/approve") as resp:
            assert resp.status == 401
        async with bridge.http.delete(f"{api}/{ids[1]}", headers=bridge.admin) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["deleted"] is True and body["content_html"] == ""


async def test_blocks_api(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge, ids = await seeded(make_bridge, masto)
        actor = f"{masto.base}/users/alice"
        blocks = f"{bridge.url}/api/blocks"
        async with bridge.http.post(blocks, json={"kind": "actor", "value": actor}) as resp:
            assert resp.status == 401
        async with bridge.http.post(blocks, json={"kind": "actor", "value": actor}, headers=bridge.admin) as resp:
            assert resp.status == 201 and (await resp.json())["rejected"] == 3
        async with bridge.http.get(f"{bridge.url}/api/articles/cafe/comments") as resp:
            assert (await resp.json())["total"] == 0
        async with bridge.http.post(blocks, json={"kind": "planet", "value": "x"}, headers=bridge.admin) as resp:
            assert resp.status == 400
        async with bridge.http.get(blocks, headers=bridge.admin) as resp:
            assert (await resp.json())["blocks"][0]["value"] == actor
        async with bridge.http.delete(blocks, json={"kind": "actor", "value": actor}, headers=bridge.admin) as resp:
            assert resp.status == 200
        async with bridge.http.delete(blocks, json={"kind": "actor", "value": actor}, headers=bridge.admin) as resp:
            assert resp.status == 404


async def test_comment_feeds(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge, ids = await seeded(make_bridge, masto)
        for path, ctype in (("/articles/cafe/comments.rss", "application/rss+xml"),
                            ("/articles/cafe/comments.atom", "application/atom+xml"),
                            ("/comments.rss", "application/rss+xml"), ("/comments.atom", "application/atom+xml")):
            async with bridge.http.get(bridge.url + path) as resp:
                assert resp.status == 200 and resp.content_type == ctype
                text = await resp.text()
                etag = resp.headers["ETag"]
            assert "Première « réponse » ✨" in text
            assert "En attente" not in text and "Privé" not in text
            async with bridge.http.get(bridge.url + path, headers={"If-None-Match": etag}) as resp:
                assert resp.status == 304
        async with bridge.http.get(f"{bridge.url}/articles/nope/comments.rss") as resp:
            assert resp.status == 404


async def test_empty_comment_feeds_are_not_dated_1970(make_bridge: BridgeFactory) -> None:
    """A new blog's comment feeds: dated by the article (or the newest article), without any, no date at all."""
    bridge = await make_bridge()
    async with bridge.http.get(f"{bridge.url}/comments.rss") as resp:
        text = await resp.text()
    assert resp.status == 200 and "<lastBuildDate>" not in text and "1970" not in text
    async with bridge.http.get(f"{bridge.url}/comments.atom") as resp:
        assert resp.status == 200  # Atom requires <updated>; nothing better than the epoch exists yet
    inp = articles.validate({"title": "Le café", "url": ARTICLE_URL, "content": "<p>Du café.</p>", "slug": "cafe",
                             "published": "2024-07-14T10:30:00+02:00"})
    await articles.publish_one(bridge.store, bridge.app[SERVICES].site, inp, deliver=False)
    for path in ("/articles/cafe/comments.rss", "/comments.rss"):
        async with bridge.http.get(bridge.url + path) as resp:
            text = await resp.text()
        assert "<lastBuildDate>Sun, 14 Jul 2024 08:30:00 +0000</lastBuildDate>" in text, path
    for path in ("/articles/cafe/comments.atom", "/comments.atom"):
        async with bridge.http.get(bridge.url + path) as resp:
            text = await resp.text()
        assert "<updated>2024-07-14T08:30:00+00:00</updated>" in text and "1970" not in text, path


async def _replies(make_bridge: BridgeFactory, masto: RemoteInstance, n: int) -> tuple[Bridge, Any]:
    """A bridge holding every comment for moderation, and `reply(text, **note_fields)` from Mastodon's Alice."""
    bridge = await make_bridge(moderation="hold")
    article_id = await publish(bridge)
    alice = masto.add_actor("alice", name="Alice")

    async def reply(text: str, **extra: Any) -> None:
        note = masto.note(alice, text, article_id, **extra)
        await store_comments.HANDLERS["Create"](bridge.services, masto.create(alice, note), alice.id)

    for i in range(n):
        await reply(f"<p>Réponse n° {i} ✨</p>")  # same second for most of them: ties broken by id
    return bridge, reply


async def _all_ids(bridge: Bridge) -> list[int]:
    async with bridge.store.connect() as conn:
        return [c.id for c in await comment_views.list_comments(conn, limit=1000)]


async def test_admin_listing_walks_next_while_comments_arrive(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge, reply = await _replies(make_bridge, masto, 7)
        before = await _all_ids(bridge)
        url: str | None = f"{bridge.url}/api/comments?status=all&limit=3"
        seen: list[int] = []
        totals = []
        while url is not None:
            assert url.startswith(f"{bridge.url}/api/comments?") and "limit=3" in url and "status=all" in url
            async with bridge.http.get(url, headers=bridge.admin) as resp:
                assert resp.status == 200
                data = await resp.json()
            seen += [c["id"] for c in data["comments"]]
            totals.append(data["total"])
            if len(totals) == 1:
                # Mid-walk: a new reply (newest, so on a first page, never shifting this walk) and one
                # whose server claims an old date (it sorts after the cursor, so this walk meets it once).
                await reply("<p>Arrivée pendant la lecture</p>")
                await reply("<p>Horloge en retard</p>", published="2020-01-01T00:00:00Z")
            url = data.get("next")
        after = await _all_ids(bridge)
        assert len(seen) == len(set(seen)), "a comment was listed twice"
        assert set(before) <= set(seen), "a comment was skipped"
        assert set(seen) == set(after) - {after[0]}  # all but the newest, which arrived above the cursor
        assert totals[0] == 7 and totals[-1] == 9
        assert len(data["comments"]) <= 3 and "next" not in data  # the last page says so by having no next
        # offset still works for old scripts; mixing it with a cursor is refused.
        async with bridge.http.get(f"{bridge.url}/api/comments", params={"limit": "2", "offset": "2"},
                                   headers=bridge.admin) as resp:
            assert [c["id"] for c in (await resp.json())["comments"]] == after[2:4]
        for bad in ({"after": "1-2", "offset": "1"}, {"after": "hier"}, {"limit": "dix"}):
            async with bridge.http.get(f"{bridge.url}/api/comments", params=bad, headers=bridge.admin) as resp:
                assert resp.status == 400, bad
                assert "error" in await resp.json()


async def test_moderating_a_backlog_page_by_page_misses_nothing(make_bridge: BridgeFactory) -> None:
    """Approve each page of pending comments before asking for the next: an offset would skip half."""
    async with RemoteInstance() as masto:
        bridge, _ = await _replies(make_bridge, masto, 5)
        url: str | None = f"{bridge.url}/api/comments?status=pending&limit=2"
        approved: list[int] = []
        while url is not None:
            async with bridge.http.get(url, headers=bridge.admin) as resp:
                data = await resp.json()
            for c in data["comments"]:
                async with bridge.http.post(f"{bridge.url}/api/comments/{c['id']}/approve",
                                            headers=bridge.admin) as resp:
                    assert resp.status == 200
                approved.append(c["id"])
            url = data.get("next")
        assert sorted(approved) == sorted(await _all_ids(bridge))
        async with bridge.http.get(f"{bridge.url}/api/comments?status=pending", headers=bridge.admin) as resp:
            assert await resp.json() == {"comments": [], "total": 0}
