"""Reading real-looking blog feeds, and following the blog's feed from a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select

from fedibridge import articles as articles_mod
from fedibridge import feedsource
from fedibridge.app import SERVICES
from fedibridge.tables import activities, articles, deliveries, feed_state, followers, leases

from .conftest import Bridge, BridgeFactory, free_port, wait_for
from .test_publish_api import ImageHost

FEEDS = Path(__file__).parent / "fixtures" / "feeds"


def entries(name: str) -> list[feedsource.Entry]:
    return feedsource.parse_feed((FEEDS / name).read_bytes())


# --- parsing ---------------------------------------------------------------------------------


def test_wordpress_rss2_content_encoded() -> None:
    first, second = entries("wordpress.rss")
    d = first.data
    assert first.guid == "https://carnets.example.fr/?p=1042"
    assert d["title"] == "L’été à Paris « enfin » 🌞"
    assert d["url"] == "https://carnets.example.fr/2024/07/14/lete-a-paris/"
    assert "Balade le long de la" in d["content"]  # content:encoded wins over the description
    stored = articles_mod.validate(d, source="feed")  # what is stored: sanitised, &nbsp; as U+00A0
    assert "<p>Il fait chaud à Paris\u00a0! « Enfin », dit-on 🌞.</p>" in stored.content
    assert "<script" not in stored.content and "<img" not in stored.content
    assert d["summary"].startswith("Il fait chaud à Paris\u00a0!")  # the excerpt, as text
    assert d["tags"] == ["Voyages", "été", "Paris"]
    assert d["published"] == "2024-07-14T08:30:00+00:00"
    assert d["language"] == "fr-FR"
    # WordPress has no enclosure: the first content image (with its alt) stands in.
    assert d["image"] == "https://carnets.example.fr/wp-content/uploads/2024/07/seine-1024x683.jpg"
    assert d["image_alt"] == "La Seine au coucher du soleil"
    assert second.data["title"] == "Hiver à Lyon" and second.data["image"] is None


def test_hugo_rss_description_only() -> None:
    first, _ = entries("hugo.xml")
    assert first.guid == "https://jean.example.org/posts/rust-raspberry-pi/"
    assert "<code>cross</code>, c’est plus rapide" in first.data["content"]
    assert first.data["summary"] is None
    assert first.data["published"] == "2024-04-02T16:20:00+00:00"  # +0200 converted
    assert first.data["language"] == "fr"


def test_ghost_media_content_image() -> None:
    (entry,) = entries("ghost.rss")
    assert entry.guid == "6665c2f1a7b3e40001d0c9a1"
    assert entry.data["title"] == "Numéro 42 : « Le jardin »"
    assert entry.data["image"] == "https://lettre.example.com/content/images/2024/06/tomates.jpg"
    assert entry.data["image_alt"] == "Numéro 42 : « Le jardin »"
    assert entry.data["tags"] == ["Jardin", "Lettres"]
    assert "🍅" in entry.data["content"]


def test_jekyll_atom() -> None:
    first, second = entries("jekyll.atom")
    assert first.guid == "https://notes.example.net/2024/05/20/ansible"
    assert first.data["title"] == "Déployer avec Ansible\u00a0: les bases"  # type="html" title as text
    assert first.data["url"] == "https://notes.example.net/2024/05/20/ansible.html"
    assert 'href="https://notes.example.net/2024/01/02/ssh.html"' in first.data["content"]  # xml:base applied
    assert first.data["tags"] == ["devops", "ansible"]
    assert first.data["language"] == "fr"
    assert first.data["image"] == "https://notes.example.net/assets/ansible.png"
    assert first.data["published"] == "2024-05-20T19:00:00+00:00"
    assert second.data["summary"] is None  # same text as the content


def test_json_feed() -> None:
    first, second = entries("feed.json")
    assert first.guid == "https://micro.example.org/2024/03/cabane-a-sucre"
    assert first.data["content"] == "<p>Tire d’érable sur la neige, « comme avant » 🍁.</p>"
    assert first.data["tags"] == ["érable", "printemps"]
    assert first.data["image"] == "https://micro.example.org/images/tire.webp"
    assert first.data["language"] == "fr-CA"
    assert first.data["published"] == "2024-03-23T14:00:00-04:00"
    # content_text and no title: paragraphs, and a title from the opening words.
    assert second.data["content"] == "<p>Premier vrai jour de printemps à Montréal.</p><p>Enfin !</p>"
    assert second.data["title"] == "Premier vrai jour de printemps à Montréal. Enfin !"


def test_rss10_rdf_and_rss092() -> None:
    (cafe,) = entries("rdf.rss")
    assert cafe.data["title"] == "Café crème"
    assert "« Et un croissant ! »" in cafe.data["content"]
    assert cafe.data["tags"] == ["café"] and cafe.data["published"] == "2004-02-12T08:30:00+00:00"
    (fete,) = entries("rss092.xml")  # ISO-8859-1 encoded
    assert fete.data["title"] == "Fête de la musique"
    assert fete.data["content"] == "<p>Concert place de l'église à 20\u00a0h.</p>"
    assert fete.data["image"] == "http://village.example.org/affiche.jpg"
    assert fete.data["published"] is None  # no date: publishing time is used


def test_not_a_feed() -> None:
    with pytest.raises(feedsource.FeedError):
        feedsource.parse_feed(b"<!doctype html><html><body><p>Bonjour</p></body></html>")
    with pytest.raises(feedsource.FeedError):
        feedsource.parse_feed(b'{"hello": "world"}', "application/json")


# --- polling ---------------------------------------------------------------------------------


@dataclass
class FeedServer:
    """A blog serving its feed with ETag/Last-Modified, answering 304 to conditional GETs."""

    url: str
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=UTF-8"
    hits: int = 0
    not_modified: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.status != 200:
            return web.Response(status=self.status, text="Internal Server Error")
        etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Last-Modified": "Mon, 15 Jul 2024 10:12:44 GMT"}
        if request.headers.get("If-None-Match") == etag:
            self.not_modified += 1
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.body, headers={**headers, "Content-Type": self.content_type})


@pytest.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    port = free_port()
    server = FeedServer(f"http://127.0.0.1:{port}/feed/", body=(FEEDS / "wordpress.rss").read_bytes())
    app = web.Application()
    app.router.add_get("/feed/", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield server
    await runner.cleanup()


async def scalar(bridge: Bridge, stmt: Any) -> Any:
    async with bridge.store.connect() as conn:
        return (await conn.execute(stmt)).scalar_one_or_none()


async def types_in_outbox(bridge: Bridge) -> list[str]:
    async with bridge.store.connect() as conn:
        rows = await conn.execute(select(activities.c.type).order_by(activities.c.id))
        return [r.type for r in rows]


NEW_ITEM = """<item>
		<title>Automne à Bordeaux</title>
		<link>https://carnets.example.fr/2024/10/01/automne-a-bordeaux/</link>
		<pubDate>Tue, 01 Oct 2024 08:00:00 +0000</pubDate>
		<category><![CDATA[Voyages]]></category>
		<guid isPermaLink="false">https://carnets.example.fr/?p=1100</guid>
		<content:encoded><![CDATA[<p>Les vendanges « à l’ancienne » 🍇.</p>]]></content:encoded>
	</item>
	<item>"""


async def test_poll_creates_then_304_then_update_and_new(
    make_bridge: BridgeFactory, feed_server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = await make_bridge()
    async with bridge.store.begin() as conn:
        await conn.execute(followers.insert().values(
            actor_id="https://mastodon.example/users/alice", inbox="https://mastodon.example/users/alice/inbox",
            shared_inbox="https://mastodon.example/inbox", since=datetime.now(UTC)))

    # First poll: the blog's existing posts become history, not a flood of deliveries.
    result = await feedsource.poll_once(bridge.app[SERVICES], feed_server.url)
    assert (result.created, result.updated, result.error) == (2, 0, None)
    assert await types_in_outbox(bridge) == ["Create", "Create"]
    assert await scalar(bridge, select(func.count()).select_from(deliveries)) == 0
    row = await scalar(bridge, select(articles.c.title).where(articles.c.slug == "lete-a-paris"))
    assert row == "L’été à Paris « enfin » 🌞"
    assert await scalar(bridge, select(feed_state.c.etag).where(feed_state.c.url == feed_server.url))

    # Unchanged feed: conditional GET, 304, nothing to do.
    result = await feedsource.poll_once(bridge.app[SERVICES], feed_server.url)
    assert result.not_modified and feed_server.not_modified == 1

    # New entry → Create, changed entry → Update; both delivered now.
    feed_server.body = feed_server.body.decode().replace("<item>", NEW_ITEM, 1).replace(
        "Un café à la Croix-Rousse", "Un chocolat à la Croix-Rousse").encode()
    result = await feedsource.poll_once(bridge.app[SERVICES], feed_server.url)
    assert (result.created, result.updated, result.unchanged) == (1, 1, 1)
    assert await types_in_outbox(bridge) == ["Create", "Create", "Update", "Create"]  # oldest entry first
    assert await scalar(bridge, select(func.count()).select_from(deliveries)) == 2
    content = await scalar(bridge, select(articles.c.content).where(articles.c.slug == "hiver-a-lyon"))
    assert "Un chocolat" in content

    # The server fails: one clear log line, nothing published, the error remembered.
    feed_server.status = 500
    good = feed_server.body.replace(b"vendanges", b"vendanges tardives")
    feed_server.body = good
    with caplog.at_level(logging.WARNING, logger="fedibridge.feedsource"):
        result = await feedsource.poll_once(bridge.app[SERVICES], feed_server.url)
    assert result.error == "HTTP 500"
    lines = [r.getMessage() for r in caplog.records if r.name == "fedibridge.feedsource"]
    assert len(lines) == 1 and feed_server.url in lines[0] and "HTTP 500" in lines[0] and "retry" in lines[0]
    assert len(await types_in_outbox(bridge)) == 4
    assert await scalar(bridge, select(feed_state.c.last_error)) == "HTTP 500"

    # Not a feed at all (a maintenance page): same, nothing published.
    feed_server.status = 200
    feed_server.body = b"<!doctype html><title>Maintenance</title><p>Revenez plus tard</p>"
    result = await feedsource.poll_once(bridge.app[SERVICES], feed_server.url)
    assert result.error and "not a feed" in result.error
    assert len(await types_in_outbox(bridge)) == 4

    # Back to normal: the change made while the server was down arrives; a removed entry is left alone.
    start = good.index(b"<item>\n\t\t<title>Hiver")
    feed_server.body = good[:start] + good[good.index(b"</item>", start) + len(b"</item>"):]
    result = await feedsource.poll_once(bridge.app[SERVICES], feed_server.url)
    assert (result.error, result.created, result.updated, result.unchanged) == (None, 0, 1, 1)
    assert await scalar(bridge, select(feed_state.c.last_error)) is None
    assert await scalar(bridge, select(articles.c.deleted).where(articles.c.slug == "hiver-a-lyon")) is None
    assert await scalar(bridge, select(func.count()).select_from(articles)) == 3
    content = await scalar(bridge, select(articles.c.content).where(articles.c.slug == "automne-a-bordeaux"))
    assert content == "<p>Les vendanges tardives « à l’ancienne » 🍇.</p>"


async def test_deleted_article_is_not_revived_by_the_feed(make_bridge: BridgeFactory,
                                                          feed_server: FeedServer) -> None:
    bridge = await make_bridge()
    await feedsource.poll_once(bridge.app[SERVICES], feed_server.url)
    async with bridge.http.delete(f"{bridge.url}/api/articles/hiver-a-lyon", headers=bridge.admin) as resp:
        assert resp.status == 200
    feed_server.body = feed_server.body.replace(b"Un caf\xc3\xa9", b"Un th\xc3\xa9")
    result = await feedsource.poll_once(bridge.app[SERVICES], feed_server.url)
    assert result.skipped == 1 and result.updated == 0
    assert await types_in_outbox(bridge) == ["Create", "Create", "Delete"]


async def test_background_job_polls_under_lease(make_bridge: BridgeFactory, feed_server: FeedServer) -> None:
    bridge = await make_bridge(source_feed=feed_server.url, feed_poll_interval=1)

    async def published() -> bool:
        return await scalar(bridge, select(func.count()).select_from(articles)) == 2

    await wait_for(published)
    await wait_for(lambda: _true(feed_server.not_modified >= 1), timeout=10)
    owner = await scalar(bridge, select(leases.c.owner).where(leases.c.name == "feed-poll"))
    assert owner == bridge.app[SERVICES].worker_id
    async with bridge.http.get(f"{bridge.url}/feed.rss") as resp:
        assert "L’été à Paris « enfin » 🌞".encode() in await resp.read()


async def _true(value: bool) -> bool:
    return value


async def test_local_file_source(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    path = tmp_path / "feed.atom"
    path.write_bytes((FEEDS / "jekyll.atom").read_bytes())
    bridge = await make_bridge(source_feed=str(path), feed_poll_interval=3600)
    result = await feedsource.poll_once(bridge.app[SERVICES])
    assert result.created + result.unchanged == 2  # the app's own job may have polled first
    async with bridge.http.get(f"{bridge.url}/articles/ansible",
                               headers={"Accept": "application/activity+json"}) as resp:
        note = await resp.json()
    assert "Déployer avec Ansible\u00a0: les bases" in note["content"]
    assert note["published"] == "2024-05-20T19:00:00Z"
    assert note["attachment"][0]["url"] == "https://notes.example.net/assets/ansible.png"


async def test_poll_measures_the_image_for_the_rss_enclosure(make_bridge: BridgeFactory,
                                                              feed_server: FeedServer) -> None:
    """The blog's feed names an image: one HEAD on the blog's media server gives /feed.rss its real length."""
    bridge = await make_bridge()
    async with ImageHost() as media:
        image = f"{media.base}/media/seine.jpg"
        feed_server.body = feed_server.body.replace(
            b"https://carnets.example.fr/wp-content/uploads/2024/07/seine-1024x683.jpg", image.encode())
        result = await feedsource.poll_once(bridge.app[SERVICES], feed_server.url)
        assert result.created == 2
    assert await scalar(bridge, select(articles.c.image_length).where(articles.c.image == image)) == len(
        ImageHost.IMAGE)
    async with bridge.http.get(f"{bridge.url}/feed.rss") as resp:
        assert f'<enclosure url="{image}" length="{len(ImageHost.IMAGE)}" type="image/jpeg"/>' in await resp.text()
