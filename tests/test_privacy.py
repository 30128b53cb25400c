"""What is public: the followers list (count only, unless public_followers), /metrics (admin token, or a
separate bind address), and a public reply never naming its followers-only or direct parent."""

from __future__ import annotations

import json

from .conftest import Bridge, BridgeFactory, free_port, wait_for
from .remote import PUBLIC, RemoteInstance
from .test_comment_flows import WebhookSink, deliver, feed, public, publish, row
from .test_inbox import is_follower

AP = "application/activity+json"


async def _get(bridge: Bridge, url: str, **headers: str) -> tuple[int, str]:
    async with bridge.http.get(url, headers={"Accept": AP, **headers}) as resp:
        return resp.status, await resp.text()


async def test_followers_are_counted_but_not_listed_by_default(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge = await make_bridge()
        alice = masto.add_actor("alice")
        status, _ = await masto.send(alice, f"{bridge.url}/inbox", masto.follow(alice, bridge.actor))
        assert status == 202
        await wait_for(lambda: is_follower(bridge, alice))
        followers = bridge.actor + "/followers"

        status, text = await _get(bridge, followers)
        doc = json.loads(text)
        assert status == 200 and doc["type"] == "OrderedCollection" and doc["totalItems"] == 1
        assert "first" not in doc and alice.id not in text
        for page in ("?page=1", "?page=true"):
            status, text = await _get(bridge, followers + page)
            assert status == 403 and alice.id not in text
        status, _ = await _get(bridge, followers + "?page=1", Authorization="Bearer wrong")
        assert status == 403

        # The blog's owner still sees who follows (the admin token, as for /api/followers).
        status, text = await _get(bridge, followers, **bridge.admin)
        assert status == 200 and json.loads(text)["first"] == followers + "?page=1"
        status, text = await _get(bridge, followers + "?page=1", **bridge.admin)
        assert status == 200 and json.loads(text)["orderedItems"] == [alice.id]


async def test_public_followers_setting_lists_them_to_everyone(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge = await make_bridge(public_followers=True)
        alice = masto.add_actor("alice")
        await masto.send(alice, f"{bridge.url}/inbox", masto.follow(alice, bridge.actor))
        await wait_for(lambda: is_follower(bridge, alice))
        status, text = await _get(bridge, bridge.actor + "/followers")
        first = json.loads(text)["first"]
        status, text = await _get(bridge, first)
        assert status == 200 and json.loads(text)["orderedItems"] == [alice.id]


async def test_metrics_need_the_admin_token(bridge: Bridge) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with bridge.http.get(bridge.url + "/metrics", headers=headers) as resp:
            assert resp.status == 401
            assert "fedibridge_" not in await resp.text()
    async with bridge.http.get(bridge.url + "/metrics", headers=bridge.admin) as resp:
        assert resp.status == 200
        assert "fedibridge_inbox_queue" in await resp.text()


async def test_metrics_bind_serves_them_only_on_the_separate_address(make_bridge: BridgeFactory) -> None:
    port = free_port()
    bridge = await make_bridge(metrics_bind=f"127.0.0.1:{port}")
    async with bridge.http.get(bridge.url + "/metrics", headers=bridge.admin) as resp:
        assert resp.status == 404
    async with bridge.http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        assert "fedibridge_inbox_queue" in await resp.text()
    async with bridge.http.get(f"http://127.0.0.1:{port}/healthz") as resp:
        assert resp.status == 200


async def test_public_reply_never_names_a_private_parent(make_bridge: BridgeFactory) -> None:
    async with WebhookSink("k") as sink, RemoteInstance() as masto, RemoteInstance() as gts:
        bridge = await make_bridge(moderation="open", webhook_url=sink.url, webhook_secret="k")
        article_id = await publish(bridge)
        alice = masto.add_actor("alice")
        bob = gts.add_actor("bob", "gotosocial")
        # Alice answers the article followers-only (Mastodon: to her followers, the blog mentioned in cc)…
        secret = masto.note(alice, "<p>entre nous</p>", article_id, to=[f"{alice.id}/followers"],
                            cc=[bridge.actor])
        await deliver(bridge, masto, alice, masto.create(alice, secret))
        # …and Bob, who follows her, replies to that in public.
        reply = gts.note(bob, "<p>Réponse publique « à tous »</p>", secret["id"], to=[PUBLIC])
        await deliver(bridge, gts, bob, gts.create(bob, reply))
        assert (await row(bridge, reply["id"])).parent_id == (await row(bridge, secret["id"])).id  # kept

        data = await public(bridge)
        [shown] = data["comments"]
        assert shown["ap_id"] == reply["id"] and shown["parent_id"] is None
        assert shown["in_reply_to"] == "http://blog.test/2024/05/cafe/"
        outputs = [json.dumps(data)]
        for path in ("/articles/cafe/comments.rss", "/articles/cafe/comments.atom", "/comments.rss", "/comments.atom"):
            outputs.append(await feed(bridge, path))
        async with bridge.http.get(f"{bridge.url}/api/comments", params={"url": "http://blog.test/2024/05/cafe/"}) as r:
            outputs.append(await r.text())

        async def hooked() -> bool:
            return any(e["comment"]["ap_id"] == reply["id"] for e in sink.events)

        await wait_for(hooked, timeout=20)
        outputs.append(json.dumps(sink.events))
        for text in outputs:
            assert secret["id"] not in text and "entre nous" not in text
