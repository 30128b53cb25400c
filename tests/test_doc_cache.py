"""The document cache: validators and 304s, invalidation on change (in process and across processes on
PostgreSQL), single-flight misses, and anonymous-only caching. Real bridges, real databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict
from sqlalchemy import select

from fedibridge.app import SERVICES
from fedibridge.doc_cache import Beacon, DocCache, Document, strong_etag
from fedibridge.tables import comments
from fedibridge.web.documents import DOCS

from .conftest import Bridge, BridgeFactory, wait_for
from .remote import RemoteInstance

AP = {"Accept": "application/activity+json"}
MASTODON_ACCEPT = {"Accept": 'application/ld+json; profile="https://www.w3.org/ns/activitystreams", '
                             "application/activity+json, */*;q=0.1"}


def article(**over: Any) -> dict[str, Any]:
    doc = {"title": "Un café à Lyon", "url": "http://blog.test/2024/07/cafe/", "slug": "cafe",
           "content": "<p>Première version « bien » chaude ☕</p>", "published": "2024-07-14T08:30:00+00:00"}
    doc.update(over)
    return doc


async def post(bridge: Bridge, body: dict[str, Any]) -> None:
    async with bridge.http.post(f"{bridge.url}/api/articles", json=body, headers=bridge.admin) as resp:
        assert resp.status in (200, 201), await resp.text()


async def get(bridge: Bridge, path: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with bridge.http.get(f"{bridge.url}{path}", headers={**AP, **headers}, allow_redirects=False) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


async def test_article_object_validators_and_304(bridge: Bridge) -> None:
    await post(bridge, article())
    status, headers, body = await get(bridge, "/articles/cafe", **MASTODON_ACCEPT)
    assert status == 200 and "Première version" in body.decode()
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert etag == strong_etag(body) and not etag.startswith("W/")
    assert headers["Cache-Control"] == f"public, max-age={bridge.settings.document_max_age}"
    assert headers["Content-Type"].startswith("application/activity+json")
    assert headers["Vary"] == "Accept"
    status, again, body304 = await get(bridge, "/articles/cafe", **{"If-None-Match": etag})
    assert status == 304 and body304 == b"" and again["ETag"] == etag
    status, _, _ = await get(bridge, "/articles/cafe", **{"If-None-Match": f'"x", W/{etag}'})
    assert status == 304  # weak comparison, as RFC 9110 wants for If-None-Match
    status, _, _ = await get(bridge, "/articles/cafe", **{"If-Modified-Since": modified})
    assert status == 304
    earlier = format_datetime(parsedate_to_datetime(modified) - timedelta(seconds=1), usegmt=True)
    status, _, same = await get(bridge, "/articles/cafe", **{"If-Modified-Since": earlier})
    assert status == 200 and same == body
    status, _, _ = await get(bridge, "/articles/cafe", **{"If-None-Match": '"other"', "If-Modified-Since": modified})
    assert status == 200  # If-None-Match wins over If-Modified-Since
    # Browsers still get the redirect to the blog, never a cached JSON body.
    async with bridge.http.get(f"{bridge.url}/articles/cafe", headers={"Accept": "text/html"},
                               allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "http://blog.test/2024/07/cafe/"


async def test_changes_show_at_once(bridge: Bridge) -> None:
    await post(bridge, article())
    documents = ("/articles/cafe", "/feed.rss", "/users/blog/outbox?page=1", "/nodeinfo/2.1")
    before = {p: await get(bridge, p) for p in documents}
    assert all(status == 200 for status, _, _ in before.values())
    await post(bridge, article(content="<p>Deuxième version, corrigée 🎉</p>"))
    for path in ("/articles/cafe", "/feed.rss", "/users/blog/outbox?page=1"):
        status, headers, body = await get(bridge, path, **{"If-None-Match": before[path][1]["ETag"]})
        assert status == 200, path
        assert "Deuxième version" in body.decode() and headers["ETag"] != before[path][1]["ETag"], path
    await post(bridge, article(slug="the", url="http://blog.test/the/", title="Thé"))
    _, _, nodeinfo = await get(bridge, "/nodeinfo/2.1")
    assert b'"localPosts":2' in nodeinfo and b'"localPosts":1' in before["/nodeinfo/2.1"][2]
    async with bridge.http.delete(f"{bridge.url}/api/articles/cafe", headers=bridge.admin) as resp:
        assert resp.status == 200
    status, headers, body = await get(bridge, "/articles/cafe")
    assert status == 410 and b"Tombstone" in body and headers["ETag"] == strong_etag(body)


async def test_concurrent_misses_render_once(bridge: Bridge) -> None:
    await post(bridge, article())
    cache = bridge.app[DOCS]
    rendered = cache.renders
    answers = await asyncio.gather(*(get(bridge, "/articles/cafe") for _ in range(48)))
    assert {status for status, _, _ in answers} == {200}
    assert len({body for _, _, body in answers}) == 1
    assert cache.renders == rendered + 1
    await post(bridge, article(content="<p>Autre chose</p>"))
    answers = await asyncio.gather(*(get(bridge, "/articles/cafe") for _ in range(48)))
    assert cache.renders == rendered + 2 and all(b"Autre chose" in body for _, _, body in answers)


async def test_followers_pages_stay_private(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    status, headers, body = await get(bridge, "/users/blog/followers")
    assert status == 200 and b'"totalItems":0' in body and "Authorization" in headers["Vary"]
    status, headers, _ = await get(bridge, "/users/blog/followers?page=1")
    assert status == 403
    # The admin's view is never taken from, nor put in, the shared cache.
    status, headers, _ = await get(bridge, "/users/blog/followers?page=1", Authorization=f"Bearer {bridge.token}")
    assert status == 200 and headers["Cache-Control"] == "private, no-store"
    status, _, _ = await get(bridge, "/users/blog/followers?page=1")
    assert status == 403


async def test_other_process_change_shows(make_bridge: BridgeFactory, database_url: str) -> None:
    """Two apps on one PostgreSQL (as two `serve --role web` processes): a write through one is seen by the
    other's next GETs within moments, by NOTIFY — the TTL here is an hour, so it cannot be what helps."""
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes share one database only on PostgreSQL")
    first = await make_bridge(document_cache_seconds=3600)
    second = await make_bridge(document_cache_seconds=3600)
    await post(first, article())
    await wait_for(lambda: _shows(second, "Première version"), timeout=10)
    await post(first, article(content="<p>Deuxième version</p>"))
    await wait_for(lambda: _shows(second, "Deuxième version"), timeout=5)


async def _shows(bridge: Bridge, text: str) -> bool:
    status, _, body = await get(bridge, "/articles/cafe")
    return status == 200 and text in body.decode()


# --- DocCache alone ------------------------------------------------------------------------------


def _doc(text: str) -> Document:
    body = text.encode()
    return Document(200, body, {}, strong_etag(body), datetime(2024, 1, 1, tzinfo=UTC))


async def test_single_flight_shares_one_rendering_and_its_failure() -> None:
    cache = DocCache(ttl=60)
    gate = asyncio.Event()

    async def slow() -> Document:
        await gate.wait()
        return _doc("un")

    waiters = [asyncio.create_task(cache.get("k", ("articles",), slow)) for _ in range(20)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one client hanging up does not cancel the others' rendering
    gate.set()
    done = await asyncio.gather(*waiters[1:])
    assert cache.renders == 1 and {d.body for d in done} == {b"un"}

    async def broken() -> Document:
        await asyncio.sleep(0)
        raise RuntimeError("database away")

    results = await asyncio.gather(*(cache.get("bad", (), broken) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and cache.renders == 2
    assert cache.peek("bad", ()) is None  # failures are not kept


async def test_generation_ttl_and_bound() -> None:
    now = [0.0]
    cache = DocCache(ttl=5, max_entries=3, clock=lambda: now[0])

    async def render(text: str) -> Document:
        return _doc(text)

    await cache.get("a", ("articles",), lambda: render("a1"))
    assert cache.peek("a", ("articles",)) is not None
    cache.changed({"followers"})
    assert cache.peek("a", ("articles",)) is not None  # another table: still valid
    cache.changed({"articles"})
    assert cache.peek("a", ("articles",)) is None
    await cache.get("a", ("articles",), lambda: render("a2"))
    now[0] = 5.0
    assert cache.peek("a", ("articles",)) is None  # too old: what another process may have changed
    for key in "bcde":
        await cache.get(key, (), lambda key=key: render(key))  # type: ignore[misc]
    assert len(cache) == 3 and cache.peek("b", ()) is None


async def test_change_during_rendering_is_not_kept() -> None:
    cache = DocCache(ttl=60)
    gate = asyncio.Event()

    async def render() -> Document:
        await gate.wait()
        return _doc("avant")

    first = asyncio.create_task(cache.get("a", ("articles",), render))
    await asyncio.sleep(0)
    cache.changed({"articles"})  # the write committed while the old data was being read
    later = asyncio.create_task(cache.get("a", ("articles",), lambda: _ready(_doc("après"))))
    gate.set()
    assert (await first).body == b"avant"
    assert (await later).body == "après".encode()  # did not join the rendering that began before the change
    hit = cache.peek("a", ("articles",))
    assert hit is not None and hit.body == "après".encode()


async def _ready(doc: Document) -> Document:
    return doc


async def test_follower_and_comment_changes_show(make_bridge: BridgeFactory) -> None:
    """Writes by the inbox worker and the moderation API invalidate the followers count and comment feeds."""
    bridge = await make_bridge(moderation="hold", document_cache_seconds=3600)  # only invalidation can help
    await post(bridge, article())
    article_id = bridge.app[SERVICES].site.article_id("cafe")
    _, _, count0 = await get(bridge, "/users/blog/followers")
    _, _, feed0 = await get(bridge, "/articles/cafe/comments.atom")
    assert b'"totalItems":0' in count0
    async with RemoteInstance() as masto:
        lea = masto.add_actor("lea")
        status, _ = await masto.send(lea, f"{bridge.url}/inbox", masto.follow(lea, bridge.actor))
        assert status == 202
        await wait_for(lambda: _has(bridge, "/users/blog/followers", b'"totalItems":1'), timeout=10)
        reply = masto.note(lea, "<p>Un commentaire « à valider » ✍️</p>", article_id)
        status, _ = await masto.send(lea, f"{bridge.url}/inbox", masto.create(lea, reply))
        assert status == 202

        await wait_for(lambda: _stored(bridge, reply["id"]), timeout=10)
    _, _, feed1 = await get(bridge, "/articles/cafe/comments.atom")
    assert "à valider".encode() not in feed1  # held for moderation: not public yet
    cid = await _comment_id(bridge, reply["id"])
    assert cid is not None
    async with bridge.http.post(f"{bridge.url}/api/comments/{cid}/approve", headers=bridge.admin) as resp:
        assert resp.status == 200
    status, _, feed2 = await get(bridge, "/articles/cafe/comments.atom")
    assert status == 200 and "à valider".encode() in feed2 and feed2 != feed0


async def _comment_id(bridge: Bridge, ap_id: str) -> int | None:
    async with bridge.store.connect() as conn:
        return (await conn.execute(select(comments.c.id).where(comments.c.ap_id == ap_id))).scalar()


async def _stored(bridge: Bridge, ap_id: str) -> bool:
    return await _comment_id(bridge, ap_id) is not None


async def _has(bridge: Bridge, path: str, needle: bytes) -> bool:
    status, _, body = await get(bridge, path)
    return status == 200 and needle in body


async def test_beacon_tells_another_process_change_once(tmp_path: Path) -> None:
    """SQLite has no NOTIFY: a CLI command replaces the beacon file; the server sees it move exactly once."""
    database = tmp_path / "fedibridge.db"
    server, cli = Beacon(database), Beacon(database)
    cache = DocCache(ttl=3600, beacon=server)

    async def render() -> Document:
        body = f"v{cache.renders}".encode()
        return Document(200, body, {}, strong_etag(body), datetime.now(UTC))

    assert (await cache.get("doc", (), render)).body == b"v1"
    assert (await cache.get("doc", (), render)).body == b"v1"  # cached
    cli.signal()
    assert (await cache.get("doc", (), render)).body == b"v2"  # forgotten: rendered anew
    assert (await cache.get("doc", (), render)).body == b"v2"  # the move is seen once
    cli.signal()
    cli.signal()  # two quick changes within one clock tick: each is a new file
    assert server.moved() and not server.moved()


async def test_public_thread_is_shared_and_current(make_bridge: BridgeFactory) -> None:
    """The widget's thread (GET /api/articles/{slug}/comments): concurrent readers share one rendering, and an
    approval, a like, a block show on the next read. A CORS answer is kept per allowed Origin only."""
    bridge = await make_bridge(moderation="hold", document_cache_seconds=3600,
                               cors_origins=["https://blog.example"])
    await post(bridge, article())
    article_id = bridge.app[SERVICES].site.article_id("cafe")
    path = "/api/articles/cafe/comments"
    async with RemoteInstance() as masto:
        lea = masto.add_actor("lea")
        reply = masto.note(lea, "<p>Une réponse « partagée » 🥐</p>", article_id)
        status, _ = await masto.send(lea, f"{bridge.url}/inbox", masto.create(lea, reply))
        assert status == 202

        await wait_for(lambda: _stored(bridge, reply["id"]), timeout=10)
        _, _, held = await get(bridge, path)
        assert b'"total":0' in held  # held for moderation
        cache = bridge.app[DOCS]
        rendered = cache.renders
        answers = await asyncio.gather(*(get(bridge, path) for _ in range(32)))
        assert {a[2] for a in answers} == {held} and cache.renders == rendered  # all from the one kept answer
        cid = await _comment_id(bridge, reply["id"])
        assert cid is not None
        async with bridge.http.post(f"{bridge.url}/api/comments/{cid}/approve", headers=bridge.admin) as resp:
            assert resp.status == 200
        answers = await asyncio.gather(*(get(bridge, path) for _ in range(32)))
        assert cache.renders == rendered + 1  # the approval invalidated it; 32 concurrent readers, one rendering
        body = answers[0][2]
        assert b'"total":1' in body and "« partagée » 🥐".encode() in body
        status, headers, _ = await get(bridge, path, **{"If-None-Match": answers[0][1]["ETag"]})
        assert status == 304
        status, _ = await masto.send(lea, f"{bridge.url}/inbox", masto.like(lea, article_id))
        assert status == 202
        await wait_for(lambda: _has(bridge, path, b'"likes":1'), timeout=10)

    _, mine, _ = await get(bridge, path, Origin="https://blog.example")
    _, other, _ = await get(bridge, path, Origin="https://evil.example")
    assert mine["Access-Control-Allow-Origin"] == "https://blog.example"
    assert "Access-Control-Allow-Origin" not in other and "Origin" in other["Vary"]
    async with bridge.http.post(f"{bridge.url}/api/blocks", headers=bridge.admin,
                                json={"kind": "actor", "value": lea.id}) as resp:
        assert resp.status in (200, 201), await resp.text()
    _, _, after_block = await get(bridge, path)
    assert "partagée".encode() not in after_block


async def test_batched_replies_show_on_a_cached_thread(make_bridge: BridgeFactory) -> None:
    """Replies handled in a batch are inserted with the driver directly (bulk_insert): the cache still learns
    that comments changed, so a thread cached for an hour shows them on the next read."""
    bridge = await make_bridge(moderation="open", document_cache_seconds=3600)
    await post(bridge, article())
    article_id = bridge.app[SERVICES].site.article_id("cafe")
    path = "/api/articles/cafe/comments"
    _, _, before = await get(bridge, path)
    assert b'"total":0' in before  # cached now
    async with RemoteInstance() as masto:
        replies = []
        for name in ("lea", "noe", "ines"):
            actor = masto.add_actor(name)
            reply = masto.note(actor, f"<p>« Bravo » de {name} 🎉</p>", article_id)
            status, _ = await masto.send(actor, f"{bridge.url}/inbox", masto.create(actor, reply))
            assert status == 202
            replies.append(reply["id"])
        for ap_id in replies:
            await wait_for(lambda ap_id=ap_id: _stored(bridge, ap_id), timeout=10)
    status, _, after = await get(bridge, path)
    assert status == 200 and b'"total":3' in after
    assert "« Bravo » de ines 🎉".encode() in after
