"""Followers end to end: remote servers on loopback follow, re-follow, update and unfollow the blog."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from fedibridge.followers import list_followers
from fedibridge.tables import activities, deliveries, followers, inbox_items
from tests.conftest import Bridge, wait_for
from tests.remote import RemoteAccount, RemoteInstance
from tests.test_inbox import done, inbox_of, is_follower, n_rows, rows


@pytest.fixture
async def remote() -> AsyncIterator[RemoteInstance]:
    async with RemoteInstance() as instance:
        yield instance


async def follow(bridge: Bridge, remote: RemoteInstance, acct: RemoteAccount) -> dict[str, object]:
    activity = remote.follow(acct, bridge.actor)
    status, text = await remote.send(acct, inbox_of(bridge), activity)
    assert status == 202, text
    await wait_for(lambda: done(bridge, str(activity["id"])))
    return activity


async def test_mastodon_follow_stores_follower_and_queues_accept(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice", name="Alice « la lectrice » 📚")
    activity = await follow(bridge, remote, alice)
    (row,) = await rows(bridge, followers)
    assert (row.actor_id, row.handle, row.inbox, row.shared_inbox, row.follow_id) == (
        alice.id, alice.handle, alice.inbox, remote.shared_inbox, activity["id"])
    (accept,) = await rows(bridge, activities, activities.c.type == "Accept")
    assert accept.in_outbox is False
    assert accept.payload["actor"] == bridge.actor
    assert accept.payload["object"] == {"id": activity["id"], "type": "Follow", "actor": alice.id,
                                        "object": bridge.actor}
    (delivery,) = await rows(bridge, deliveries)
    assert delivery.activity_id == accept.id and delivery.inbox == alice.inbox  # its own inbox, not shared


@pytest.mark.skipif(importlib.util.find_spec("fedibridge.delivery") is None, reason="needs the delivery worker")
async def test_remote_receives_a_signed_accept(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    activity = await follow(bridge, remote, alice)

    async def accepted() -> bool:
        return bool(remote.received_of("Accept"))

    await wait_for(accepted, timeout=15)
    got = remote.received_of("Accept")[0]
    assert got.path == "/users/alice/inbox"
    assert got.verified, got.reason
    assert got.json["object"]["id"] == activity["id"]


async def test_misskey_follow_to_shared_inbox(bridge: Bridge, remote: RemoteInstance) -> None:
    chloe = remote.add_actor("chloé", "misskey")
    activity = remote.follow(chloe, bridge.actor)
    assert (await remote.send(chloe, bridge.url + "/inbox", activity))[0] == 202
    await wait_for(lambda: is_follower(bridge, chloe))
    (row,) = await rows(bridge, followers)
    assert row.handle == f"@chloé@{remote.host}"
    assert "/users/9" in row.actor_id  # Misskey ids are opaque, the handle comes from preferredUsername


async def test_follow_of_someone_else_is_not_stored(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    activity = remote.follow(alice, bridge.url + "/users/somebody-else")
    assert (await remote.send(alice, bridge.url + "/inbox", activity))[0] == 202
    await wait_for(lambda: done(bridge, str(activity["id"])))
    assert await n_rows(bridge, followers) == 0
    assert await n_rows(bridge, deliveries) == 0


async def test_repeated_follow_is_accepted_again(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    await follow(bridge, remote, alice)
    first_since = (await rows(bridge, followers))[0].since
    # Mastodon re-sends a Follow (new id) when the user clicks again on a "requested" follow.
    again = await follow(bridge, remote, alice)
    (row,) = await rows(bridge, followers)
    assert row.since == first_since and row.follow_id == again["id"]
    assert await n_rows(bridge, activities, activities.c.type == "Accept") == 2
    assert await n_rows(bridge, deliveries) == 2


async def test_undo_follow_embedded_and_by_id(bridge: Bridge, remote: RemoteInstance) -> None:
    alice, bob = remote.add_actor("alice"), remote.add_actor("bob", "gotosocial")
    fa = await follow(bridge, remote, alice)
    fb = await follow(bridge, remote, bob)
    undo = remote.undo(alice, fa)  # Mastodon embeds the Follow
    assert (await remote.send(alice, inbox_of(bridge), undo))[0] == 202
    await wait_for(lambda: done(bridge, str(undo["id"])))
    assert not await is_follower(bridge, alice)
    assert await is_follower(bridge, bob)
    by_id = {**remote.undo(bob, fb), "object": fb["id"]}  # some servers send only the Follow's id
    assert (await remote.send(bob, inbox_of(bridge), by_id))[0] == 202
    await wait_for(lambda: done(bridge, str(by_id["id"])))
    assert await n_rows(bridge, followers) == 0


async def test_undo_of_someone_elses_follow_changes_nothing(bridge: Bridge, remote: RemoteInstance) -> None:
    alice, eve = remote.add_actor("alice"), remote.add_actor("eve")
    fa = await follow(bridge, remote, alice)
    forged = remote.undo(eve, fa)  # Eve signs correctly, but the Follow she undoes is Alice's
    assert (await remote.send(eve, inbox_of(bridge), forged))[0] == 202
    await wait_for(lambda: done(bridge, str(forged["id"])))
    assert await is_follower(bridge, alice)


async def test_actor_update_refreshes_inboxes_from_origin(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    await follow(bridge, remote, alice)
    alice.doc["endpoints"] = {"sharedInbox": remote.base + "/new-shared/inbox"}
    alice.doc["name"] = "Alice (nouvelle) ✨"
    update = remote.actor_update(alice)
    update["object"]["inbox"] = "http://attacker.invalid/inbox"  # the embedded copy is not trusted…
    assert (await remote.send(alice, inbox_of(bridge), update))[0] == 202
    await wait_for(lambda: done(bridge, str(update["id"])))
    (row,) = await rows(bridge, followers)
    assert row.shared_inbox == remote.base + "/new-shared/inbox"  # …the document fetched from origin is
    assert row.inbox == alice.inbox


async def test_move_is_left_alone(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    await follow(bridge, remote, alice)
    move = {"@context": "https://www.w3.org/ns/activitystreams", "id": alice.id + "#moves/1", "type": "Move",
            "actor": alice.id, "object": alice.id, "target": remote.base + "/users/alice2"}
    assert (await remote.send(alice, inbox_of(bridge), move))[0] == 202
    await wait_for(lambda: done(bridge, str(move["id"])))
    assert await is_follower(bridge, alice)
    (item,) = await rows(bridge, inbox_items, inbox_items.c.type == "Move")
    assert item.error == "ignored"


async def test_admin_followers_api(bridge: Bridge, remote: RemoteInstance) -> None:
    alice, bob = remote.add_actor("alice"), remote.add_actor("bob", "pleroma")
    await follow(bridge, remote, alice)
    await follow(bridge, remote, bob)
    async with bridge.http.get(bridge.url + "/api/followers") as resp:
        assert resp.status == 401
    async with bridge.http.get(bridge.url + "/api/followers", headers=bridge.admin) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["total"] == 2
    assert [f["id"] for f in data["followers"]] == [alice.id, bob.id]
    assert data["followers"][1] == {"id": bob.id, "handle": bob.handle, "inbox": bob.inbox,
                                    "since": data["followers"][1]["since"]}
    listed = await list_followers(bridge.store)
    assert [f.actor_id for f in listed] == [alice.id, bob.id]
    async with bridge.store.connect() as conn:
        since = (await conn.execute(select(followers.c.since).where(followers.c.actor_id == bob.id))).scalar_one()
    assert data["followers"][1]["since"] == since.isoformat()


async def test_admin_followers_api_walks_next(bridge: Bridge) -> None:
    """Seven followers (four in the same second), three a page: `next` walks them all once, new ones included."""
    same = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)

    def row(i: int, since: datetime) -> dict[str, object]:
        host = "mastodon.example" if i % 2 else "gts.example"
        return {"actor_id": f"https://{host}/users/u{i}", "handle": f"@u{i}@{host}",
                "inbox": f"https://{host}/users/u{i}/inbox", "shared_inbox": None, "since": since}

    async with bridge.store.begin() as conn:
        await conn.execute(followers.insert(), [row(i, same if i < 4 else same + timedelta(days=i)) for i in range(7)])
    url: str | None = f"{bridge.url}/api/followers?limit=3"
    seen: list[str] = []
    pages = 0
    while url is not None:
        async with bridge.http.get(url, headers=bridge.admin) as resp:
            assert resp.status == 200
            data = await resp.json()
        pages += 1
        assert len(data["followers"]) <= 3
        seen += [f["id"] for f in data["followers"]]
        if pages == 1:
            assert data["total"] == 7
            async with bridge.store.begin() as conn:  # someone follows mid-walk: listed last, met once
                await conn.execute(followers.insert().values(**row(7, datetime.now(UTC))))
        url = data.get("next")
    assert data["total"] == 8 and "next" not in data
    assert seen == [f"https://{'mastodon' if i % 2 else 'gts'}.example/users/u{i}" for i in range(8)]
    async with bridge.http.get(f"{bridge.url}/api/followers?limit=2&offset=6", headers=bridge.admin) as resp:
        assert [f["id"] for f in (await resp.json())["followers"]] == seen[6:]
