"""Batched inbox handling (inbox_batch.py) gives exactly what per-row dispatch gives.

Two real bridges (role web: no worker of their own), each on its own database, receive the same signed
activities from loopback Mastodon, Misskey, GoToSocial and Pleroma servers: reply chains, edits, deletes,
follows and their undo, likes, boosts, a blocked actor, a known and unknown commenter, duplicate re-sends,
an actor's deletion. One bridge handles its stored rows one by one (inbox_worker's per-row path, in arrival
order), the other with the batch handler; comments, reactions, followers, Accepts, their deliveries,
webhook events and outcome labels must be the same.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from fedibridge import inbox_worker, moderation
from fedibridge.comments import METRIC as COMMENT_METRIC
from fedibridge.comments import set_status
from fedibridge.store import utcnow
from fedibridge.tables import activities, articles, comments, deliveries, followers, inbox_items, reactions
from fedibridge.worker import Worker, claim

from .conftest import Bridge, BridgeFactory, _pg_admin_url, _pg_create
from .remote import RemoteAccount, RemoteInstance
from .test_comment_flows import ARTICLE_URL, publish

Sent = tuple[RemoteAccount, dict[str, Any]]


@pytest.fixture
async def other_database(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A second, empty database on the same backend as `database_url`."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/second.db"
        return
    url, drop = await _pg_create(_pg_admin_url())
    yield url
    await drop()


def _for(bridge: Bridge, activity: dict[str, Any]) -> dict[str, Any]:
    """The activity addressed to this bridge: Follows (also inside an Undo) name its actor."""
    if activity["type"] == "Follow":
        return {**activity, "object": bridge.actor}
    if activity["type"] == "Undo" and activity["object"].get("type") == "Follow":
        return {**activity, "object": {**activity["object"], "object": bridge.actor}}
    return activity


async def _send(bridge: Bridge, sent: list[Sent]) -> None:
    for account, activity in sent:
        status, text = await account.instance.send(account, f"{bridge.url}/inbox", _for(bridge, activity))
        assert status == 202, text


async def _claim_all(bridge: Bridge) -> list[Any]:
    rows = await claim(bridge.store, inbox_worker.QUEUE, inbox_worker.POLICY, "test", limit=1000)
    assert rows
    return rows


async def _per_row(bridge: Bridge) -> None:
    for row in await _claim_all(bridge):
        finished = await inbox_worker._handle(bridge.services, row)
        assert finished.values["state"] == "done", finished.values


async def _batched(bridge: Bridge) -> None:
    rows = await _claim_all(bridge)
    finished = await inbox_worker.handler(bridge.services)(rows)
    assert sorted(f.id for f in finished) == [r.id for r in rows]
    assert all(f.values["state"] == "done" for f in finished), [f.values for f in finished]


async def snapshot(bridge: Bridge) -> dict[str, Any]:
    """What handling produced, with this bridge's own base URL written as BASE."""
    parent = aliased(comments)
    async with bridge.store.connect() as conn:
        coms = [tuple(r) for r in await conn.execute(
            select(comments.c.ap_id, comments.c.in_reply_to, parent.c.ap_id, articles.c.slug, comments.c.author_id,
                   comments.c.author_name, comments.c.author_handle, comments.c.status, comments.c.deleted,
                   comments.c.edited, comments.c.content_html, comments.c.visibility, comments.c.published)
            .join(articles, articles.c.id == comments.c.article_id)
            .outerjoin(parent, parent.c.id == comments.c.parent_id).order_by(comments.c.ap_id))]
        reacts = [tuple(r) for r in await conn.execute(
            select(reactions.c.ap_id, reactions.c.actor_id, reactions.c.type).order_by(reactions.c.ap_id))]
        follows = [tuple(r) for r in await conn.execute(
            select(followers.c.actor_id, followers.c.inbox, followers.c.shared_inbox, followers.c.follow_id,
                   followers.c.handle).order_by(followers.c.actor_id))]
        accepts = [(r.key, r.object_id, r.payload["object"], r.payload.get("to")) for r in await conn.execute(
            select(activities).where(activities.c.type == "Accept").order_by(activities.c.key))]
        sent = sorted((r.key or "", r.inbox) for r in await conn.execute(
            select(activities.c.key, deliveries.c.inbox).join(activities, activities.c.id == deliveries.c.activity_id)))
        bodies = [json.loads(body) for body in (await conn.execute(
            select(deliveries.c.body).where(deliveries.c.kind == "webhook"))).scalars()]
        hooks = sorted((b["event"], b["comment"]["ap_id"]) for b in bodies)
    text = json.dumps({"comments": coms, "reactions": reacts, "followers": follows, "accepts": accepts,
                       "deliveries": sent, "webhooks": hooks}, default=str, sort_keys=True)
    return dict(json.loads(text.replace(bridge.settings.base, "BASE")))


async def _created_at(bridge: Bridge, ap_ids: list[str]) -> set[Any]:
    async with bridge.store.connect() as conn:
        return set((await conn.execute(select(comments.c.created_at).where(comments.c.ap_id.in_(ap_ids)))).scalars())


async def test_batched_handling_equals_per_row(make_bridge: BridgeFactory, other_database: str) -> None:
    async with RemoteInstance() as masto, RemoteInstance(host_ip="127.0.0.2") as misskey, \
            RemoteInstance(host_ip="127.0.0.3") as gts, RemoteInstance(host_ip="127.0.0.4") as pleroma:
        hook = "http://127.0.0.1:9/hook"  # never reached: role web runs no delivery worker
        one = await make_bridge("web", webhook_url=hook, webhook_secret="s3cret")
        two = await make_bridge("web", webhook_url=hook, webhook_secret="s3cret", database_url=other_database)
        alice, henry, ivan, kim = (masto.add_actor(n) for n in ("alice", "henry", "ivan", "kim"))
        bob, mallory = misskey.add_actor("bob", "misskey"), misskey.add_actor("mallory", "misskey")
        carol, frank, judy = (gts.add_actor(n, "gotosocial") for n in ("carol", "frank", "judy"))
        dave, grace, leo = (pleroma.add_actor(n, "pleroma") for n in ("dave", "grace", "leo"))

        # Before the batch: henry's first comment, approved by the owner ("known" moderation).
        h0 = masto.note(henry, "<p>Premier commentaire d’Henri</p>", ARTICLE_URL)
        for bridge in (one, two):
            await publish(bridge, url=ARTICLE_URL)
            await _send(bridge, [(henry, masto.create(henry, h0))])
            await _per_row(bridge)
            async with bridge.store.begin() as conn:
                cid = (await conn.execute(select(comments.c.id).where(comments.c.ap_id == h0["id"]))).scalar_one()
                await set_status(conn, bridge.settings, cid, "approved")

        r1 = masto.note(alice, "<p>Très bel article, merci ! 🎉</p>", ARTICLE_URL)
        r2 = misskey.note(bob, "<p>わかる</p>", ARTICLE_URL)
        r3 = gts.note(carol, "<p>D’accord avec Alice</p>", r1["id"])  # its parent is in the same batch
        r4 = pleroma.note(dave, "<p>En privé</p>", ARTICLE_URL, to=[alice.id], cc=[])
        h1 = masto.note(henry, "<p>Encore moi</p>", ARTICLE_URL)
        h2 = masto.note(henry, "<p>Et je me réponds</p>", h0["id"])  # parent known from the database
        m1 = misskey.note(mallory, "<p>spam spam</p>", ARTICLE_URL)
        i1 = masto.note(ivan, "<p>Deux fois</p>", ARTICLE_URL)
        k1 = masto.note(kim, "<p>Bientôt parti</p>", ARTICLE_URL)
        remote_parent = gts.note(frank, "<p>Pas envoyé au blog</p>", ARTICLE_URL)
        gts.objects[remote_parent["id"]] = remote_parent
        j1 = gts.note(judy, "<p>Réponse à Frank</p>", remote_parent["id"])  # a parent to fetch
        create_i1 = masto.create(ivan, i1)
        grace_follow, dave_like = pleroma.follow(grace, one.actor), pleroma.like(dave, ARTICLE_URL)
        sent: list[Sent] = [
            (alice, masto.create(alice, r1)), (bob, misskey.create(bob, r2)), (carol, gts.create(carol, r3)),
            (dave, pleroma.create(dave, r4)), (henry, masto.create(henry, h1)), (henry, masto.create(henry, h2)),
            (alice, masto.update(alice, {**r1, "content": "<p>Très bel article, merci beaucoup ! 🎉</p>"})),
            (bob, misskey.delete(bob, r2)), (mallory, misskey.create(mallory, m1)),
            (mallory, misskey.like(mallory, ARTICLE_URL)),
            (frank, gts.follow(frank, one.actor)), (grace, grace_follow), (grace, pleroma.undo(grace, grace_follow)),
            (alice, masto.follow(alice, one.actor)), (leo, pleroma.follow(leo, one.actor)),
            (alice, masto.like(alice, ARTICLE_URL)), (bob, misskey.announce(bob, ARTICLE_URL)),
            (dave, dave_like), (dave, pleroma.undo(dave, dave_like)),
            (ivan, create_i1), (ivan, create_i1),  # the same activity twice: stored once
            (ivan, {**create_i1, "id": create_i1["id"] + "-resent"}),  # the same note in another activity
            (judy, gts.create(judy, j1)), (kim, masto.create(kim, k1)), (kim, masto.actor_delete(kim)),
            (leo, pleroma.actor_update(leo)),
        ]
        for bridge in (one, two):
            await _send(bridge, sent)
            async with bridge.store.begin() as conn:  # blocked after its activities were accepted
                await moderation.add_block(conn, "actor", mallory.id, utcnow())
            bridge.services.block_cache.clear()

        await _per_row(one)
        await _batched(two)

        per_row, batched = await snapshot(one), await snapshot(two)
        assert batched == per_row
        metric = inbox_worker.METRIC
        assert two.services.metrics._counters[metric] == one.services.metrics._counters[metric]
        assert max(one.services.metrics._counters[metric].values()) > 1  # counted per label set, not per row
        created = two.services.metrics._counters[COMMENT_METRIC]
        assert created == one.services.metrics._counters[COMMENT_METRIC] and sum(created.values()) >= 8

        # The batch really took the batched path: its new comments were written by one statement.
        singles = [r4["id"], h1["id"], h2["id"]]
        assert len(await _created_at(two, singles)) == 1
        assert len(await _created_at(one, singles)) == 3
        # And what the scenario is about did happen.
        by_id = {c[0]: c for c in per_row["comments"]}
        assert by_id[h1["id"]][7] == "approved" and by_id[r4["id"]][7] == "pending"
        assert by_id[r3["id"]][2] == r1["id"] and by_id[h2["id"]][2] == h0["id"]
        assert by_id[j1["id"]][2] == remote_parent["id"]
        assert by_id[r1["id"]][9] is True and by_id[r2["id"]][8] is True and by_id[k1["id"]][8] is True
        assert m1["id"] not in by_id
        assert {f[0] for f in per_row["followers"]} == {frank.id, alice.id, leo.id}
        assert len(per_row["accepts"]) == 4 and len(per_row["deliveries"]) == 4
        assert sorted(r[2] for r in per_row["reactions"]) == ["boost", "like"]
        assert sum(1 for c in per_row["comments"] if c[0] == i1["id"]) == 1


def test_related_orders_only_what_must_be() -> None:
    """Replies to one article and Follows of the blog are independent; chains, edits, undos are not."""

    class Row:
        def __init__(self, i: int, actor: str, payload: dict[str, Any]) -> None:
            self.id, self.actor, self.payload, self.type = i, actor, payload, payload["type"]

    a, b, c = "https://a.example/users/a", "https://b.example/users/b", "https://c.example/users/c"
    blog, art = "https://blog.example/users/blog", "https://blog.example/articles/x"

    def note(actor: str, n: int, parent: str) -> dict[str, Any]:
        return {"id": f"{actor}/statuses/{n}", "type": "Note", "attributedTo": actor, "inReplyTo": parent}

    rows = [
        Row(1, a, {"id": f"{a}/1/activity", "type": "Create", "object": note(a, 1, art)}),
        Row(2, b, {"id": f"{b}/2/activity", "type": "Create", "object": note(b, 2, art)}),
        Row(3, c, {"id": f"{c}/3/activity", "type": "Create", "object": note(c, 3, f"{a}/statuses/1")}),
        Row(4, a, {"id": f"{a}#follow", "type": "Follow", "object": blog}),
        Row(5, b, {"id": f"{b}#follow", "type": "Follow", "object": blog}),
        Row(6, b, {"id": f"{b}#undo", "type": "Undo", "object": {"id": f"{b}#follow", "type": "Follow"}}),
        Row(7, a, {"id": f"{a}/8/activity", "type": "Create", "object": note(a, 8, art)}),
        Row(8, c, {"id": f"{c}#delete", "type": "Delete", "object": c}),
        Row(9, a, {"id": f"{a}#like", "type": "Like", "object": art}),
    ]
    groups = sorted([r.id for r in g] for g in inbox_worker.related(rows))  # type: ignore[arg-type]
    assert groups == [[1, 3, 8], [2], [4], [5, 6], [7], [9]]


async def test_per_row_work_is_capped_per_batch_and_handed_back(make_bridge: BridgeFactory) -> None:
    """A batch of activities that each need per-row handling does PER_ROW of them and hands the others back
    without spending an attempt: the next batch takes them first, so a batch of slow remotes ends well
    inside its lease and nothing is lost or counted twice."""
    bridge = await make_bridge("web", inbox_actor_burst=0)  # no background worker: the test runs its steps
    async with RemoteInstance() as masto:
        alice = masto.add_actor("alice")
        count = inbox_worker.PER_ROW + 36
        # Deletes of notes we never stored: nothing batched handles them, each goes per row (and is ignored).
        gone = [masto.delete(alice, f"{masto.base}/notes/gone-{i}") for i in range(count)]
        await _send(bridge, [(alice, d) for d in gone])
        worker = Worker(bridge.store, inbox_worker.QUEUE, inbox_worker.POLICY, inbox_worker.handler(bridge.services),
                        "capped")
        assert await worker.run_once() == count  # one claim takes them all…
        rest = count - inbox_worker.PER_ROW
        assert await _states(bridge) == {("done", 1): inbox_worker.PER_ROW, ("pending", 1): rest}
        assert await worker.run_once() == rest  # …the rest come back, their attempt uncounted
        assert await _states(bridge) == {("done", 1): count}
        assert await worker.run_once() == 0


async def _states(bridge: Bridge) -> dict[tuple[str, int], int]:
    async with bridge.store.connect() as conn:
        rows = await conn.execute(select(inbox_items.c.state, inbox_items.c.attempts, func.count())
                                  .group_by(inbox_items.c.state, inbox_items.c.attempts))
        return {(state, attempts): n for state, attempts, n in rows}
