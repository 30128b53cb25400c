"""End to end: loopback Mastodon, Misskey and GoToSocial servers sign and send replies, edits, deletions,
likes and boosts to the bridge's shared inbox; the public API, feeds and webhook show exactly what they should."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from sqlalchemy import select

from fedibridge import articles, webhook
from fedibridge.app import SERVICES
from fedibridge.tables import comments, inbox_items

from .conftest import Bridge, BridgeFactory, wait_for
from .loopback import LoopbackServer
from .remote import PUBLIC, RemoteInstance
from .test_moderation import FakeAkismet

ARTICLE_URL = "http://blog.test/2024/05/cafe/"
FRENCH = "<p>Très bel article, merci ! « Ça marche » à l’œil 🎉</p>"


async def publish(bridge: Bridge, slug: str = "cafe", url: str = ARTICLE_URL) -> str:
    """Publish an article (no delivery: nobody follows) and return its object id."""
    inp = articles.validate({"title": "Le café", "url": url, "content": "<p>Du café.</p>", "slug": slug,
                             "language": "fr"})
    await articles.publish_one(bridge.store, bridge.app[SERVICES].site, inp, deliver=False)
    return bridge.app[SERVICES].site.article_id(slug)


async def settled(bridge: Bridge) -> None:
    """Wait until the inbox worker handled everything received so far."""
    async def done() -> bool:
        async with bridge.store.connect() as conn:
            rows = (await conn.execute(select(inbox_items.c.state))).all()
        return all(r.state != "pending" for r in rows)

    await wait_for(done, timeout=15)


async def deliver(bridge: Bridge, remote: RemoteInstance, account: Any, activity: dict[str, Any]) -> None:
    status, text = await remote.send(account, f"{bridge.url}/inbox", activity)
    assert status == 202, text
    await settled(bridge)


async def row(bridge: Bridge, ap_id: str) -> Any:
    async with bridge.store.connect() as conn:
        return (await conn.execute(select(comments).where(comments.c.ap_id == ap_id))).first()


async def public(bridge: Bridge, slug: str = "cafe") -> dict[str, Any]:
    async with bridge.http.get(f"{bridge.url}/api/articles/{slug}/comments") as resp:
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data


async def feed(bridge: Bridge, path: str) -> str:
    async with bridge.http.get(f"{bridge.url}{path}") as resp:
        assert resp.status == 200
        return await resp.text()


class WebhookSink(LoopbackServer):
    """The blog's side of the webhook: checks the HMAC exactly as the README tells blogs to."""

    path = "/hook"

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.events: list[dict[str, Any]] = []
        self.bad: int = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not webhook.verify(self.secret, body, request.headers.get("X-Fedibridge-Signature", "")):
            self.bad += 1
            return web.Response(status=401)
        self.events.append(json.loads(body))
        return web.Response(status=204)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


async def test_replies_edits_deletes_and_reactions(make_bridge: BridgeFactory) -> None:
    async with WebhookSink("s3cret") as sink, RemoteInstance() as masto, RemoteInstance() as misskey, \
            RemoteInstance() as gts:
        bridge = await make_bridge(moderation="open", webhook_url=sink.url, webhook_secret="s3cret")
        article_id = await publish(bridge)
        alice = masto.add_actor("alice", "mastodon", name="Alice :blobcat:")
        alice.doc["tag"] = [{"type": "Emoji", "name": ":blobcat:",
                             "icon": {"type": "Image", "url": f"{masto.base}/emoji/blobcat.png"}}]
        bob = misskey.add_actor("bob", "misskey", name="Bob")
        carol = gts.add_actor("carol", "gotosocial", name="Carole")

        # Mastodon replies to the article object, with a content warning and an image.
        n1 = masto.note(alice, FRENCH, article_id, cc=[f"{alice.id}/followers", bridge.actor],
                        summary="spoilers café", sensitive=True,
                        attachment=[{"type": "Document", "mediaType": "image/png", "url": f"{masto.base}/m/1.png",
                                     "name": "Une tasse de café"}])
        await deliver(bridge, masto, alice, masto.create(alice, n1))
        # Misskey replies by the article's blog URL.
        n2 = misskey.note(bob, "<p>Bien vu</p>", ARTICLE_URL)
        await deliver(bridge, misskey, bob, misskey.create(bob, n2))
        # GoToSocial answers Alice's comment: a threaded reply.
        n3 = gts.note(carol, "<p>D’accord avec Alice</p>", n1["id"])
        await deliver(bridge, gts, carol, gts.create(carol, n3))

        data = await public(bridge)
        assert data["total"] == 3
        top = {c["ap_id"]: c for c in data["comments"]}
        assert set(top) == {n1["id"], n2["id"]}
        c1 = top[n1["id"]]
        assert c1["content_html"] == FRENCH  # French text and emoji byte for byte
        assert c1["summary"] == "spoilers café" and c1["sensitive"] is True
        assert c1["language"] == "fr"
        assert c1["author"]["name"] == "Alice :blobcat:"
        assert c1["author"]["handle"] == f"@alice@{masto.host}"
        assert c1["author"]["avatar"] == f"{masto.base}/avatars/alice.png"
        assert c1["author"]["emojis"] == [{"shortcode": ":blobcat:", "url": f"{masto.base}/emoji/blobcat.png"}]
        assert c1["attachments"] == [{"url": f"{masto.base}/m/1.png", "media_type": "image/png",
                                      "alt": "Une tasse de café"}]
        assert [r["ap_id"] for r in c1["replies"]] == [n3["id"]]
        assert c1["replies"][0]["author"]["handle"] == f"@carol@{gts.host}"
        assert top[n2["id"]]["author"]["name"] == "Bob"

        rss = await feed(bridge, "/articles/cafe/comments.rss")
        assert "Très bel article" in rss and "D’accord avec Alice" in rss and "Bien vu" in rss
        assert "D’accord avec Alice" in await feed(bridge, "/comments.atom")

        # Edit: Mastodon sends Update with the whole note.
        edited = {**n1, "content": "<p>Très bel article (corrigé)</p>", "contentMap": {"fr": "<p>corrigé</p>"}}
        await deliver(bridge, masto, alice, masto.update(alice, edited))
        r1 = await row(bridge, n1["id"])
        assert r1.edited and r1.content_html == "<p>Très bel article (corrigé)</p>" and r1.updated is not None

        # Reactions: like and boost of the article, then an undo.
        like = misskey.like(bob, article_id)
        await deliver(bridge, misskey, bob, like)
        await deliver(bridge, masto, alice, masto.like(alice, article_id))
        boost = gts.announce(carol, article_id)
        await deliver(bridge, gts, carol, boost)
        reactions = (await public(bridge))["reactions"]
        assert (reactions["likes"], reactions["boosts"]) == (2, 1)
        assert {p["id"] for p in reactions["likers"]} == {alice.id, bob.id}
        assert reactions["boosters"][0]["name"] == "Carole"
        await deliver(bridge, misskey, bob, misskey.undo(bob, like))
        await deliver(bridge, gts, carol, gts.undo(carol, boost))
        reactions = (await public(bridge))["reactions"]
        assert (reactions["likes"], reactions["boosts"]) == (1, 0)
        assert data["total"] == 3  # reactions never become comments

        # Delete (Tombstone): content gone, the thread keeps its shape.
        await deliver(bridge, masto, alice, masto.delete(alice, n1))
        data = await public(bridge)
        placeholder = next(c for c in data["comments"] if c["ap_id"] == n1["id"])
        assert placeholder["deleted"] is True and placeholder["content_html"] == ""
        assert placeholder["author"]["name"] is None and placeholder["attachments"] == []
        assert [r["ap_id"] for r in placeholder["replies"]] == [n3["id"]]
        assert "Très bel article" not in await feed(bridge, "/articles/cafe/comments.atom")

        # The account is deleted: everything it said is erased, its like removed.
        await deliver(bridge, misskey, bob, misskey.actor_delete(bob))
        data = await public(bridge)
        assert all(c["ap_id"] != n2["id"] for c in data["comments"])  # deleted leaf: gone entirely
        assert (await row(bridge, n2["id"])).content_html == ""
        assert data["reactions"]["likes"] == 1 and data["total"] == 1

        # The webhook heard about each change, signed.
        async def hooks() -> bool:
            return len(sink.of("comment.created")) == 3 and len(sink.of("comment.deleted")) == 2 \
                and len(sink.of("comment.edited")) == 1
        await wait_for(hooks, timeout=20)
        assert sink.bad == 0
        created = {e["comment"]["ap_id"]: e for e in sink.of("comment.created")}
        assert created[n1["id"]]["comment"]["content_html"] == FRENCH
        assert created[n1["id"]]["article"] == {"slug": "cafe", "url": ARTICLE_URL}
        assert sink.of("comment.edited")[0]["comment"]["edited"] is True


async def test_privacy_followers_only_and_direct(make_bridge: BridgeFactory) -> None:
    async with WebhookSink("k") as sink, RemoteInstance() as masto:
        bridge = await make_bridge(moderation="open", webhook_url=sink.url, webhook_secret="k")
        article_id = await publish(bridge)
        alice = masto.add_actor("alice")
        followers_only = masto.note(alice, "<p>secret followers</p>", article_id, to=[f"{alice.id}/followers"],
                                    cc=[bridge.actor])
        direct = masto.note(alice, "<p>secret direct</p>", article_id, to=[bridge.actor], cc=[])
        unlisted = masto.note(alice, "<p>unlisted ok</p>", article_id, to=[f"{alice.id}/followers"], cc=[PUBLIC])
        for n in (followers_only, direct, unlisted):
            await deliver(bridge, masto, alice, masto.create(alice, n))
        assert (await row(bridge, followers_only["id"])).visibility == "private"
        assert (await row(bridge, direct["id"])).visibility == "private"
        body = json.dumps(await public(bridge))
        assert "unlisted ok" in body and "secret" not in body
        async with bridge.http.get(f"{bridge.url}/api/comments", params={"url": ARTICLE_URL}) as resp:
            assert "secret" not in await resp.text()
        for path in ("/articles/cafe/comments.rss", "/articles/cafe/comments.atom", "/comments.rss", "/comments.atom"):
            assert "secret" not in await feed(bridge, path)
        async def one() -> bool:
            return len(sink.events) >= 1
        await wait_for(one, timeout=20)
        assert all("secret" not in json.dumps(e) for e in sink.events)


async def test_forged_and_hostile_activities_change_nothing(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto, RemoteInstance() as other:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        alice = masto.add_actor("alice")
        mallory = other.add_actor("mallory")
        eve = masto.add_actor("eve")  # same server as Alice, still not Alice
        n1 = masto.note(alice, "<p>original</p>", article_id)
        await deliver(bridge, masto, alice, masto.create(alice, n1))
        like = masto.like(alice, article_id)
        await deliver(bridge, masto, alice, like)

        # Someone else's Update/Delete of Alice's comment, with Alice's note embedded.
        for sender, inst in ((mallory, other), (eve, masto)):
            forged = inst.update(sender, {**n1, "content": "<p>pwned</p>"})
            await deliver(bridge, inst, sender, forged)
            await deliver(bridge, inst, sender, {**inst.delete(sender, n1), "id": f"{sender.id}#del-{inst.port}"})
            await deliver(bridge, inst, sender, inst.undo(sender, {**like, "actor": sender.id}))
        r = await row(bridge, n1["id"])
        assert r.content_html == "<p>original</p>" and not r.deleted and not r.edited
        assert (await public(bridge))["reactions"]["likes"] == 1

        # A Create by Mallory of a note claiming to be Alice's (embedded, and attributed to Alice).
        fake = {**masto.note(alice, "<p>I am Alice</p>", article_id), "id": f"{other.base}/notes/fake"}
        await deliver(bridge, other, mallory, other.create(mallory, fake))
        fake2 = masto.note(alice, "<p>I am Alice too</p>", article_id)
        await deliver(bridge, other, mallory, {**other.create(mallory, fake2), "id": f"{mallory.id}/c/2"})
        assert await row(bridge, fake["id"]) is None and await row(bridge, fake2["id"]) is None
        # Each was received, handled and refused by the comment handlers (not dropped at the door).
        metrics = bridge.app[SERVICES].metrics
        for kind in ("Create", "Update", "Delete"):
            assert metrics.value("fedibridge_inbox_activities_total", type=kind, outcome="comment_refused") == 2, kind

        # Hostile HTML is neutralised.
        hostile = masto.note(alice, '<p>hi<script>alert(1)</script><img src=x onerror="alert(2)">'
                                    '<a href="javascript:alert(3)">clic</a><a href="https://ok.example/">ok</a></p>',
                             article_id)
        await deliver(bridge, masto, alice, masto.create(alice, hostile))
        html = (await row(bridge, hostile["id"])).content_html
        for bad in ("script", "onerror", "javascript:", "<img"):
            assert bad not in html
        assert 'rel="nofollow ugc noopener noreferrer"' in html and "clic" in html


async def test_unknown_parent_is_fetched_and_same_create_twice_is_one_comment(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto, RemoteInstance() as gts:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        dave = masto.add_actor("dave", name="Dave")
        carol = gts.add_actor("carol", "gotosocial")
        parent = masto.note(dave, "<p>Je n’ai jamais été livré</p>", article_id)
        masto.objects[parent["id"]] = parent  # only served by its origin, never sent to us
        child = gts.note(carol, "<p>Réponse à Dave</p>", parent["id"])
        create = gts.create(carol, child)
        await deliver(bridge, gts, carol, create)
        await deliver(bridge, gts, carol, {**create, "id": create["id"] + "-resent"})  # Fedify-style re-send
        data = await public(bridge)
        assert data["total"] == 2
        [top] = data["comments"]
        assert top["ap_id"] == parent["id"] and top["author"]["name"] == "Dave"
        assert top["content_html"] == "<p>Je n’ai jamais été livré</p>"
        assert [r["ap_id"] for r in top["replies"]] == [child["id"]]
        async with bridge.store.connect() as conn:
            assert len((await conn.execute(select(comments.c.id))).all()) == 2


async def test_reply_to_deleted_article_is_kept_hidden(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        await articles.delete_one(bridge.store, bridge.app[SERVICES].site, "cafe", deliver=False)
        alice = masto.add_actor("alice")
        n = masto.note(alice, "<p>Trop tard ?</p>", article_id)
        await deliver(bridge, masto, alice, masto.create(alice, n))
        assert (await row(bridge, n["id"])) is not None
        async with bridge.http.get(f"{bridge.url}/api/articles/cafe/comments") as resp:
            assert resp.status == 404
        assert "Trop tard" not in await feed(bridge, "/comments.rss")


async def test_known_mode_and_admin_approval(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge = await make_bridge()  # moderation="known" is the default
        article_id = await publish(bridge)
        alice = masto.add_actor("alice")
        first = masto.note(alice, "<p>premier</p>", article_id)
        await deliver(bridge, masto, alice, masto.create(alice, first))
        assert (await row(bridge, first["id"])).status == "pending"
        assert (await public(bridge))["total"] == 0
        cid = (await row(bridge, first["id"])).id
        async with bridge.http.post(f"{bridge.url}/api/comments/{cid}/approve", headers=bridge.admin) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "approved"
        second = masto.note(alice, "<p>deuxième</p>", article_id)
        await deliver(bridge, masto, alice, masto.create(alice, second))
        assert (await row(bridge, second["id"])).status == "approved"
        assert (await public(bridge))["total"] == 2


async def test_spam_check_flow(make_bridge: BridgeFactory) -> None:
    async with FakeAkismet() as akismet, RemoteInstance() as masto:
        bridge = await make_bridge(moderation="open", spam_check_url=akismet.url, spam_check_key="kk")
        article_id = await publish(bridge)
        alice = masto.add_actor("alice", name="Alice")
        akismet.answer = (200, "true", {})
        spam = masto.note(alice, "<p>Achetez des montres</p>", article_id)
        await deliver(bridge, masto, alice, masto.create(alice, spam))
        akismet.answer = (503, "", {})
        unsure = masto.note(alice, "<p>Service en panne</p>", article_id)
        await deliver(bridge, masto, alice, masto.create(alice, unsure))
        akismet.answer = (200, "false", {})
        ham = masto.note(alice, "<p>Merci</p>", article_id)
        await deliver(bridge, masto, alice, masto.create(alice, ham))
        assert (await row(bridge, spam["id"])).status == "rejected"
        assert (await row(bridge, unsure["id"])).status == "pending"  # never lost, never auto-approved
        assert (await row(bridge, ham["id"])).status == "approved"
        form = akismet.forms[0]
        assert form["comment_author"] == "Alice" and form["permalink"] == ARTICLE_URL
        assert form["comment_type"] == "reply" and form["api_key"] == "kk"
        assert [c["content_html"] for c in (await public(bridge))["comments"]] == ["<p>Merci</p>"]
