"""Account migration both ways, end to end: `fedibridge move` (a real subprocess) against loopback servers
that answer WebFinger and serve actors like Mastodon, and a loopback "Mastodon" moving its followers in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fedibridge.tables import activities, deliveries, followers

from .conftest import Bridge, BridgeFactory, wait_for
from .remote import RemoteAccount, RemoteInstance
from .test_cli_articles import cli
from .test_followers import follow
from .test_inbox import is_follower, n_rows, rows

AP = {"Accept": "application/activity+json"}
ARTICLE = {"title": "Après le déménagement « enfin »", "url": "http://blog.test/apres/", "content": "<p>é</p>",
           "slug": "apres"}


@pytest.fixture
async def remotes() -> AsyncIterator[tuple[RemoteInstance, RemoteInstance]]:
    async with RemoteInstance() as one, RemoteInstance(host_ip="127.0.0.2") as two:
        yield one, two


def serve_webfinger(remote: RemoteInstance, acct: RemoteAccount) -> None:
    """Mastodon's WebFinger answer (the query string is ignored by the loopback server: one account each)."""
    remote.objects[f"{remote.base}/.well-known/webfinger"] = {
        "subject": f"acct:{acct.username}@{remote.host}",
        "aliases": [acct.id, f"{remote.base}/@{acct.username}"],
        "links": [
            {"rel": "http://webfinger.net/rel/profile-page", "type": "text/html",
             "href": f"{remote.base}/@{acct.username}"},
            {"rel": "self", "type": "application/activity+json", "href": acct.id},
        ],
    }


async def actor_doc(bridge: Bridge) -> dict[str, Any]:
    async with bridge.http.get(bridge.actor, headers=AP) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json(content_type=None)
        return doc


async def test_move_to_an_account_that_lists_us(bridge: Bridge, remotes: tuple[RemoteInstance, RemoteInstance],
                                                tmp_path: Path) -> None:
    one, two = remotes
    alice, bob = one.add_actor("alice"), two.add_actor("bob", "gotosocial")
    for remote, acct in ((one, alice), (two, bob)):
        await follow(bridge, remote, acct)
    new = one.add_actor("nouveau", name="Le nouveau blog")

    # The target does not list us yet: refused with a clear message, nothing recorded or sent.
    serve_webfinger(one, new)
    code, out, err = await cli(bridge, "move", "--to", f"@nouveau@{one.host}", cwd=tmp_path)
    assert code == 2, (out, err)
    assert "alsoKnownAs" in err and bridge.actor in err and "alias" in err
    assert "movedTo" not in await actor_doc(bridge)
    assert await n_rows(bridge, activities, activities.c.type == "Move") == 0

    # Mastodon: the new account adds the blog as an alias ("Moving from a different account").
    new.doc["alsoKnownAs"] = [bridge.actor]
    code, out, err = await cli(bridge, "move", "--to", f"@nouveau@{one.host}", cwd=tmp_path)
    assert code == 0, err
    assert new.id in out and "queued for 2 inbox(es)" in out

    async def moved() -> bool:  # at once on PostgreSQL (NOTIFY); on SQLite within the document cache's lifetime
        return (await actor_doc(bridge)).get("movedTo") == new.id

    await wait_for(moved, timeout=10)

    async def both_got_it() -> bool:
        return bool(one.received_of("Move")) and bool(two.received_of("Move"))

    await wait_for(both_got_it, timeout=15)
    for remote in (one, two):
        (got,) = remote.received_of("Move")
        assert got.verified, got.reason  # signed with the blog's key, checked against its actor document
        move = got.json
        # What Mastodon checks before moving anyone (app/lib/activitypub/activity/move.rb):
        assert move["actor"] == move["object"] == bridge.actor
        assert move["target"] == new.id
        assert bridge.actor in new.doc["alsoKnownAs"]
    assert one.received_of("Move")[0].path == "/inbox"  # the shared inbox: one per server

    # Publishing stops, with a clear error; deleting still works.
    async with bridge.http.post(f"{bridge.url}/api/articles", json=ARTICLE, headers=bridge.admin) as resp:
        assert resp.status == 409
        assert "moved to " + new.id in (await resp.json())["error"]
    code, out, err = await cli(bridge, "move", "--cancel", cwd=tmp_path)
    assert code == 0 and new.id in out

    async def back() -> bool:
        return "movedTo" not in await actor_doc(bridge)

    await wait_for(back, timeout=10)
    async with bridge.http.post(f"{bridge.url}/api/articles", json=ARTICLE, headers=bridge.admin) as resp:
        assert resp.status == 201


async def test_move_errors_are_clear(bridge: Bridge, remotes: tuple[RemoteInstance, RemoteInstance],
                                     tmp_path: Path) -> None:
    one, _ = remotes
    code, _, err = await cli(bridge, "move", "--to", "not-a-handle", cwd=tmp_path)
    assert code == 2 and "@user@host" in err
    code, _, err = await cli(bridge, "move", "--to", f"@personne@{one.host}", cwd=tmp_path)  # no WebFinger answer
    assert code == 2 and "WebFinger" in err
    code, _, err = await cli(bridge, "move", "--to", bridge.actor, cwd=tmp_path)
    assert code == 2 and "itself" in err
    code, _, err = await cli(bridge, "move", "--to", f"{one.base}/users/ghost", cwd=tmp_path)  # 404
    assert code == 2 and "cannot fetch" in err
    assert await n_rows(bridge, deliveries) == 0


async def mastodon_moves_followers(remote: RemoteInstance, old: RemoteAccount, target: str,
                                   local_followers: list[RemoteAccount]) -> bool:
    """What Mastodon does when `old` moves to `target`: fetch the target, require `old` in its alsoKnownAs,
    then each local follower of `old` follows the target. False when the target does not list `old`."""
    async with aiohttp.ClientSession() as http, http.get(target, headers=AP) as resp:
        doc = await resp.json(content_type=None)
    if old.id not in doc.get("alsoKnownAs", []):
        return False
    old.doc["movedTo"] = target
    for acct in local_followers:
        status, text = await remote.send(acct, doc["inbox"], remote.follow(acct, target))
        assert status == 202, text
    return True


async def test_moving_in_needs_also_known_as(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        old, carol = remote.add_actor("ancien"), remote.add_actor("carol")
        assert "alsoKnownAs" not in await actor_doc(bridge)
        assert not await mastodon_moves_followers(remote, old, bridge.actor, [carol])  # Mastodon refuses
        assert not remote.received_of("Follow") and await n_rows(bridge, followers) == 0


async def test_moving_in_from_mastodon(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as remote:
        old = remote.add_actor("ancien", name="Ancien compte")
        carol, dave = remote.add_actor("carol"), remote.add_actor("dave")
        bridge = await make_bridge(also_known_as=[old.id])
        assert (await actor_doc(bridge))["alsoKnownAs"] == [old.id]
        assert await mastodon_moves_followers(remote, old, bridge.actor, [carol, dave])

        async def moved_in() -> bool:
            return await is_follower(bridge, carol) and await is_follower(bridge, dave)

        await wait_for(moved_in, timeout=15)

        async def accepted() -> bool:
            return len(remote.received_of("Accept")) == 2

        await wait_for(accepted, timeout=15)
        assert all(r.verified for r in remote.received_of("Accept"))
        assert {r.json["object"]["actor"] for r in remote.received_of("Accept")} == {carol.id, dave.id}
        assert {r.actor_id for r in await rows(bridge, followers)} == {carol.id, dave.id}


def test_new_settings_are_checked() -> None:
    from fedibridge.config import Settings, validate
    from fedibridge.errors import ConfigError

    with pytest.raises(ConfigError, match="also_known_as"):
        validate(Settings(also_known_as=["mastodon.example/users/old"]))
    with pytest.raises(ConfigError, match="quote_policy"):
        validate(Settings(quote_policy="friends"))
    with pytest.raises(ConfigError, match="attribution_domains"):
        validate(Settings(attribution_domains=["https://blog.example/"]))
