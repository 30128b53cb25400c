"""Hostile input across the public surface: every case gets a clear 4xx and changes nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import feedparser
import pytest
from aiohttp import web
from sqlalchemy import func, select

from fedibridge.tables import articles, comments, inbox_items
from tests.conftest import Bridge, BridgeFactory, free_port, wait_for
from tests.loopback import LoopbackServer
from tests.remote import RemoteInstance
from tests.test_comment_flows import deliver, public, publish, settled

BOMB = b"[" * 200_000 + b"]" * 200_000  # deep nesting: json would recurse until it blows the stack


@pytest.fixture
async def remote() -> AsyncIterator[RemoteInstance]:
    async with RemoteInstance() as instance:
        yield instance


async def rows(bridge: Bridge, table: object) -> int:
    async with bridge.store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_nesting_bomb_at_the_inbox_is_400(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    status, text = await remote.send(alice, f"{bridge.url}/inbox", BOMB)
    assert status in (400, 413), text  # refused as malformed (or, if larger than the cap, as too big)
    small_bomb = b"[" * 50_000 + b"]" * 50_000
    status, text = await remote.send(alice, f"{bridge.url}/inbox", small_bomb)
    assert status == 400, text
    assert await rows(bridge, inbox_items) == 0


async def test_nesting_bomb_at_the_admin_api_is_400(bridge: Bridge) -> None:
    body = b'{"title": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    async with bridge.http.post(f"{bridge.url}/api/articles", data=body, headers={
            **bridge.admin, "Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert "error" in await resp.json()
    assert await rows(bridge, articles) == 0


async def test_chunked_body_over_the_cap_is_413(make_bridge) -> None:  # type: ignore[no-untyped-def]
    bridge = await make_bridge(max_inbox_bytes=10_000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b" " * 1000  # no Content-Length: the cap must hold while streaming

    async with bridge.http.post(f"{bridge.url}/inbox", data=chunks(),
                                headers={"Content-Type": "application/activity+json"}) as resp:
        assert resp.status == 413
    assert await rows(bridge, inbox_items) == 0


@pytest.mark.parametrize("path", [
    "/api/comments/99999999999999999999/approve",  # beyond any integer column
    "/api/comments/-1/approve",
    "/api/comments/abc/approve",
])
async def test_odd_ids_are_404_not_500(bridge: Bridge, path: str) -> None:
    async with bridge.http.post(bridge.url + path, headers=bridge.admin) as resp:
        assert resp.status in (404, 405), resp.status


@pytest.mark.parametrize("query", ["page=0", "page=-3", "page=99999999999999", "page=%00", "page=1e3"])
async def test_odd_pages_are_400(bridge: Bridge, query: str) -> None:
    async with bridge.http.get(f"{bridge.actor}/outbox?{query}",
                               headers={"Accept": "application/activity+json"}) as resp:
        assert resp.status == 400


async def test_admin_api_refuses_without_or_with_a_wrong_token(bridge: Bridge) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dGVzdA=="},
                    {"Authorization": "Bearer " + bridge.token + "x"}):
        async with bridge.http.post(f"{bridge.url}/api/articles", json={"title": "x"}, headers=headers) as resp:
            assert resp.status == 401
        async with bridge.http.get(f"{bridge.url}/api/comments?status=all", headers=headers) as resp:
            assert resp.status in (400, 401)  # without a token, /api/comments needs ?url= (the public alias)
    assert await rows(bridge, articles) == 0


async def test_webfinger_with_hostile_resources(bridge: Bridge) -> None:
    for resource in ("acct:blog@127.0.0.1%00", "acct:" + "a" * 5000 + "@x", "acct:blog@@", "javascript:alert(1)"):
        async with bridge.http.get(f"{bridge.url}/.well-known/webfinger", params={"resource": resource}) as resp:
            assert resp.status in (400, 404), (resource, resp.status)


# -- control characters, nesting and log lines from strangers ----------------------------------------

HOSTILE = "\u000b\u0085\ud800"  # vertical tab (XML 1.0 forbids it), NEL (C1), a lone surrogate
COMMENT_FEEDS = ["/comments.rss", "/comments.atom", "/articles/cafe/comments.rss", "/articles/cafe/comments.atom"]


async def feeds_parse(bridge: Bridge) -> list[Any]:
    """Every comment feed answers 200 and is well-formed XML (feedparser's bozo flag stays 0)."""
    parsed = []
    for path in COMMENT_FEEDS:
        async with bridge.http.get(bridge.url + path) as resp:
            assert resp.status == 200, (path, resp.status)
            doc = feedparser.parse(await resp.read())
        assert doc.bozo == 0, (path, doc.get("bozo_exception"))
        parsed.append(doc)
    return parsed


async def test_control_characters_are_stripped_from_everything_stored(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        # The actor document is fetched by the bridge (Python's JSON parser reads the "\ud800" escape).
        alice = masto.add_actor("alice", name=f"Alice{HOSTILE} « Léa » 🎉")
        note = masto.note(alice, f"<p>Très bien{HOSTILE} « oui » 🎉</p>", article_id,
                          summary=f"CW{HOSTILE} café", url=f"{masto.base}/@alice/12{HOSTILE}34")
        note["contentMap"] = {"fr": note["content"]}
        body = json.dumps(masto.create(alice, note)).encode()  # ASCII JSON: the lone surrogate as "\ud800"
        assert b"\\ud800" in body and b"\\u000b" in body
        status, text = await masto.send(alice, f"{bridge.url}/inbox", body)
        assert status == 202, text
        await settled(bridge)

        [c] = (await public(bridge))["comments"]
        assert c["content_html"] == "<p>Très bien « oui » 🎉</p>"
        assert c["summary"] == "CW café"
        assert c["url"] == f"{masto.base}/@alice/1234"
        assert c["author"]["name"] == "Alice « Léa » 🎉"
        docs = await feeds_parse(bridge)
        assert all("Très bien « oui » 🎉" in d.entries[0].content[0].value for d in docs)


async def test_feeds_survive_control_characters_already_stored(make_bridge: BridgeFactory) -> None:
    """Rows written before the boundary stripped them must not take the feeds down (XML 1.0)."""
    async with RemoteInstance() as masto:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        alice = masto.add_actor("alice")
        note = masto.note(alice, "<p>Bonjour</p>", article_id)
        await deliver(bridge, masto, alice, masto.create(alice, note))
        async with bridge.store.begin() as conn:
            await conn.execute(comments.update().values(
                content_html="<p>Bon\u000bjour\u0001 « à » 🎉</p>", author_name="Ali\u000bce", summary="a\u001fb"))
        docs = await feeds_parse(bridge)
        assert all("Bonjour « à » 🎉" in d.entries[0].content[0].value for d in docs)
        assert all("Alice" in d.entries[0].author for d in docs)


def nested(depth: int, leaf: bytes) -> bytes:
    return b'{"id":' * depth + leaf + b"}" * depth


async def test_deeply_nested_actor_at_the_inbox_is_400_not_500(
        bridge: Bridge, remote: RemoteInstance, caplog: pytest.LogCaptureFixture) -> None:
    alice = remote.add_actor("alice")
    for depth in (100, 1000, 1020):  # under orjson's own 1024 cap: it parses, then our walkers would recurse
        body = (b'{"@context":"https://www.w3.org/ns/activitystreams","id":"' + alice.id.encode()
                + b'#likes/1","type":"Like","object":"http://x.example/1","actor":'
                + nested(depth, json.dumps(alice.id).encode()) + b"}")
        status, text = await remote.send(alice, f"{bridge.url}/inbox", body)  # validly signed
        assert status == 400, (depth, status, text)
        assert "nested deeper" in text
    assert "RecursionError" not in caplog.text
    assert await rows(bridge, inbox_items) == 0


class FlakySpamCheck(LoopbackServer):
    """An Akismet-like endpoint that drops the connection: the spam check fails and logs why."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self.drop)

    async def drop(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=500)


async def test_log_lines_cannot_be_forged_and_carry_no_secret(
        make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fedibridge")
    key = "akismet-key-0123456789"
    async with RemoteInstance() as masto, FlakySpamCheck() as spam:
        bridge = await make_bridge(
            moderation="open", spam_check_key=key, spam_check_url=f"{spam.base}/{{key}}/1.1/comment-check",
            source_feed=f"http://blog:feed-secret-token@127.0.0.1:{free_port()}/feed.xml", feed_poll_interval=1)
        article_id = await publish(bridge)
        alice, bob = masto.add_actor("alice"), masto.add_actor("bob")
        # A note claiming to be Bob's, sent by Alice, whose id forges a log line.
        forged = "\n2026-12-01 00:00:00,000 ERROR fedibridge.app: database corrupted, run fedibridge reset"
        note = masto.note(alice, "<p>Salut</p>", article_id, id=f"{alice.id}/statuses/1{forged}",
                          attributedTo=bob.id)
        await deliver(bridge, masto, alice, masto.create(alice, note))
        # A real reply: the spam check fails (connection dropped) and says so in the log.
        await deliver(bridge, masto, alice, masto.create(alice, masto.note(alice, "<p>Merci</p>", article_id)))
        await wait_for(lambda: _logged(caplog, "source feed"))
    text = caplog.text
    assert "refused" in text and "statuses/1\\n2026-12-01" in text  # escaped, on the refusal's own line
    assert not any(line.startswith("2026-12-01") or "ERROR fedibridge.app" in line.split(":", 1)[0]
                   for line in text.splitlines())
    assert all("\n" not in r.getMessage() for r in caplog.records if r.name.startswith("fedibridge"))
    assert "spam check unavailable" in text
    assert key not in text and "feed-secret-token" not in text and bridge.token not in text
    assert "http://***@127.0.0.1" in text


async def _logged(caplog: pytest.LogCaptureFixture, needle: str) -> bool:
    return needle in caplog.text


async def test_metric_labels_never_take_sender_chosen_types(bridge: Bridge, remote: RemoteInstance) -> None:
    """Each invented activity type used to add a metrics series forever; they all count as "other" now."""
    alice = remote.add_actor("alice")
    invented = ["Bite", "Zap-1", "Zap-2", "EvilType\\n", "x" * 40]
    for n, kind in enumerate(invented):
        activity = {"@context": "https://www.w3.org/ns/activitystreams", "id": f"{alice.id}#odd/{n}",
                    "type": kind, "actor": alice.id, "object": bridge.actor}
        status, text = await remote.send(alice, f"{bridge.url}/inbox", activity)
        assert status == 202, text
    await remote.send(alice, f"{bridge.url}/inbox", remote.follow(alice, bridge.actor))
    await settled(bridge)
    async with bridge.http.get(f"{bridge.url}/metrics", headers=bridge.admin) as resp:
        assert resp.status == 200
        lines = [line for line in (await resp.text()).splitlines()
                 if line.startswith("fedibridge_inbox_activities_total{")]
    types = {line.split('type="', 1)[1].split('"', 1)[0] for line in lines}
    assert types == {"Follow", "other"}, lines
    other = sum(float(line.rsplit(" ", 1)[1]) for line in lines if 'type="other"' in line)
    assert other == len(invented)
