"""The inbox over real HTTP: remote instances on loopback POST signed activities to a running bridge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from fedibridge.tables import blocks, deliveries, followers, inbox_items
from fedibridge.web.inbox import BLOCKS_TTL
from tests.conftest import Bridge, BridgeFactory, wait_for
from tests.remote import RemoteAccount, RemoteInstance


@pytest.fixture
async def remote() -> AsyncIterator[RemoteInstance]:
    async with RemoteInstance() as instance:
        yield instance


async def rows(bridge: Bridge, table: Any, *where: Any) -> list[Any]:
    async with bridge.store.connect() as conn:
        return list(await conn.execute(select(table).where(*where)))


async def n_rows(bridge: Bridge, table: Any, *where: Any) -> int:
    async with bridge.store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one())


async def is_follower(bridge: Bridge, acct: RemoteAccount) -> bool:
    return await n_rows(bridge, followers, followers.c.actor_id == acct.id) == 1


async def done(bridge: Bridge, ap_id: str) -> bool:
    found = await rows(bridge, inbox_items, inbox_items.c.ap_id == ap_id)
    return bool(found) and found[0].state == "done"


def inbox_of(bridge: Bridge) -> str:
    return bridge.actor + "/inbox"


def listening(bridge: Bridge) -> str:
    """Where a restarted bridge really listens (it keeps the first one's base_url, but not its port)."""
    host, port = bridge.runner.addresses[0][:2]
    return f"http://{host}:{port}"


# --- refusals, in the order the inbox checks them ------------------------------------------------


async def test_wrong_content_type_is_415(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    status, text = await remote.send(alice, inbox_of(bridge), remote.follow(alice, bridge.actor),
                                     content_type="application/json")
    assert status == 415, text
    async with bridge.http.post(bridge.url + "/inbox", data=b"{}", headers={"Content-Type": "text/html"}) as resp:
        assert resp.status == 415
    assert await n_rows(bridge, inbox_items) == 0


async def test_ld_json_with_profile_is_accepted(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    ct = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
    status, text = await remote.send(alice, inbox_of(bridge), remote.follow(alice, bridge.actor), content_type=ct)
    assert status == 202, text


async def test_too_big_is_413_declared_or_streamed(make_bridge: BridgeFactory, remote: RemoteInstance) -> None:
    bridge = await make_bridge(max_inbox_bytes=4096)
    alice = remote.add_actor("alice")
    big = remote.create(alice, remote.note(alice, "<p>" + "é" * 5000 + "</p>"))
    status, text = await remote.send(alice, bridge.url + "/inbox", big)
    assert status == 413, text

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap must hold while streaming
        for _ in range(10):
            yield b" " * 1000

    headers = {"Content-Type": "application/activity+json"}
    async with bridge.http.post(bridge.url + "/inbox", data=chunks(), headers=headers) as resp:
        assert resp.status == 413
        assert "larger than 4096" in (await resp.json())["error"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"actor": "http://x.test/u"}',
                                  b'{"type": "Follow"}', b"\xff\xfe"])
async def test_malformed_is_400(bridge: Bridge, remote: RemoteInstance, body: bytes) -> None:
    alice = remote.add_actor("alice")
    status, text = await remote.send(alice, inbox_of(bridge), body)
    assert status == 400, text
    assert "error" in json.loads(text)


async def test_blocked_domain_and_actor_are_403(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance(host_ip="127.0.0.2") as bad, RemoteInstance() as other:
        bridge = await make_bridge(blocked_domains=["127.0.0.2"])
        troll = bad.add_actor("troll")
        status, _ = await bad.send(troll, inbox_of(bridge), bad.follow(troll, bridge.actor))
        assert status == 403
        # Blocks added at runtime through the admin API apply at once.
        mallory = other.add_actor("mallory")
        async with bridge.http.post(f"{bridge.url}/api/blocks", headers=bridge.admin,
                                    json={"kind": "actor", "value": mallory.id}) as resp:
            assert resp.status == 201
        status, _ = await other.send(mallory, inbox_of(bridge), other.follow(mallory, bridge.actor))
        assert status == 403
        # A block written by another process (the CLI) applies once the inbox's snapshot expires.
        eve = other.add_actor("eve")
        async with bridge.store.begin() as conn:
            from fedibridge.store import utcnow
            await conn.execute(blocks.insert().values(kind="actor", value=eve.id, created_at=utcnow()))
        await asyncio.sleep(BLOCKS_TTL + 0.1)
        status, _ = await other.send(eve, inbox_of(bridge), other.follow(eve, bridge.actor))
        assert status == 403
        assert await n_rows(bridge, inbox_items) == 0


@pytest.mark.parametrize("tamper,reason", [
    ("unsigned", "not signed"),
    ("signature", "signature"),
    ("body", "digest does not match"),
    ("digest", "digest does not match"),
    ("date", "date outside window"),
    ("keyid", "is not the actor's host"),
    ("host", "signature"),
])
async def test_bad_signatures_are_401(bridge: Bridge, remote: RemoteInstance, tamper: str, reason: str) -> None:
    alice = remote.add_actor("alice")
    status, text = await remote.send(alice, inbox_of(bridge), remote.follow(alice, bridge.actor),
                                     tamper=tamper)  # type: ignore[arg-type]
    assert status == 401, text
    assert reason in json.loads(text)["error"]
    assert await n_rows(bridge, inbox_items) == 0
    metrics = await (await bridge.http.get(bridge.url + "/metrics", headers=bridge.admin)).text()
    assert 'fedibridge_inbox_requests_total{outcome="unauthorized"} 1' in metrics


async def test_key_of_another_actor_on_another_host_is_401(bridge: Bridge, remote: RemoteInstance) -> None:
    async with RemoteInstance(host_ip="127.0.0.3") as elsewhere:
        alice = remote.add_actor("alice")
        eve = elsewhere.add_actor("eve")
        # Eve signs correctly with her own key but claims to be Alice.
        forged = remote.follow(alice, bridge.actor)
        status, text = await elsewhere.send(eve, inbox_of(bridge), forged)
        assert status == 401, text
        assert not await is_follower(bridge, alice)


async def test_unknown_key_host_cannot_be_fetched_is_401(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    status, text = await remote.send(alice, inbox_of(bridge), remote.follow(alice, bridge.actor),
                                     key_id=alice.id + "#no-such-key")
    assert status == 401, text
    assert "cannot fetch key" in text or "does not publish key" in text


async def test_get_on_inbox_is_405(bridge: Bridge) -> None:
    for url in (inbox_of(bridge), bridge.url + "/inbox"):
        async with bridge.http.get(url) as resp:
            assert resp.status == 405


# --- acceptance -----------------------------------------------------------------------------------


async def test_unknown_type_is_accepted_and_ignored(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    activity = {"@context": "https://www.w3.org/ns/activitystreams", "id": alice.id + "#arrive/1",
                "type": "Arrive", "actor": alice.id, "location": "Café « du coin » ☕"}
    status, text = await remote.send(alice, bridge.url + "/inbox", activity)
    assert status == 202, text
    await wait_for(lambda: done(bridge, alice.id + "#arrive/1"))
    row = (await rows(bridge, inbox_items))[0]
    assert row.error == "ignored"
    assert row.payload["location"] == "Café « du coin » ☕"


async def test_duplicate_activity_is_processed_once(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    follow = remote.follow(alice, bridge.actor)
    first = await remote.send(alice, inbox_of(bridge), follow)
    second = await remote.send(alice, inbox_of(bridge), follow)  # Fedify-style re-send of the same id
    assert first[0] == second[0] == 202
    assert "already received" in second[1]
    await wait_for(lambda: done(bridge, follow["id"]))
    assert await n_rows(bridge, inbox_items) == 1
    assert await n_rows(bridge, deliveries) == 1  # one Accept, not two
    metrics = await (await bridge.http.get(bridge.url + "/metrics", headers=bridge.admin)).text()
    assert 'fedibridge_inbox_requests_total{outcome="duplicate"} 1' in metrics
    assert 'fedibridge_inbox_requests_total{outcome="accepted"} 1' in metrics


@pytest.mark.parametrize("flavor", ["mastodon", "gotosocial", "misskey", "pleroma"])
async def test_each_flavor_signature_is_accepted(bridge: Bridge, remote: RemoteInstance, flavor: str) -> None:
    acct = remote.add_actor("zoé" if flavor == "misskey" else "alice", flavor)  # type: ignore[arg-type]
    target = bridge.url + "/inbox" if acct.shared_inbox else inbox_of(bridge)
    status, text = await remote.send(acct, target, remote.follow(acct, bridge.actor))
    assert status == 202, text
    await wait_for(lambda: is_follower(bridge, acct))


async def test_gotosocial_hs2019_and_rfc9421(bridge: Bridge, remote: RemoteInstance) -> None:
    gts = remote.add_actor("gts", "gotosocial")
    status, text = await remote.send(gts, inbox_of(bridge), remote.follow(gts, bridge.actor), algorithm="hs2019")
    assert status == 202, text
    modern = remote.add_actor("modern")
    status, text = await remote.send(modern, inbox_of(bridge), remote.follow(modern, bridge.actor), scheme="rfc9421")
    assert status == 202, text
    await wait_for(lambda: is_follower(bridge, gts))
    await wait_for(lambda: is_follower(bridge, modern))


async def test_key_rotation_refetches_once(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    follow = remote.follow(alice, bridge.actor)
    assert (await remote.send(alice, inbox_of(bridge), follow))[0] == 202  # the bridge now caches the old key
    remote.rotate_key(alice)
    status, text = await remote.send(alice, inbox_of(bridge), remote.undo(alice, follow))
    assert status == 202, text
    await wait_for(lambda: _gone(bridge, alice))  # Follow handled, then undone with the new key
    assert await n_rows(bridge, deliveries) == 1  # the Accept of the Follow


async def _gone(bridge: Bridge, acct: RemoteAccount) -> bool:
    return not await is_follower(bridge, acct) and await n_rows(bridge, inbox_items, inbox_items.c.state == "done") == 2


async def test_stored_before_202_survives_restart(make_bridge: BridgeFactory, remote: RemoteInstance) -> None:
    web_only = await make_bridge(role="web")
    alice = remote.add_actor("alice")
    follow = remote.follow(alice, web_only.actor)
    status, _ = await remote.send(alice, inbox_of(web_only), follow)
    assert status == 202
    assert (await rows(web_only, inbox_items))[0].state == "pending"  # nobody handles it in a web-only process
    await web_only.http.close()
    await web_only.runner.cleanup()
    # Same database, same public URL, now with the worker: the stored Follow is handled.
    later = await make_bridge(role="all", base_url=web_only.settings.base_url)
    await wait_for(lambda: is_follower(later, alice))

    async def finished() -> bool:  # rows are finished together once their batch is handled
        return bool((await rows(later, inbox_items))[0].state == "done")

    await wait_for(finished)


async def test_actor_delete_removes_follower(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    await remote.send(alice, inbox_of(bridge), remote.follow(alice, bridge.actor))
    await wait_for(lambda: is_follower(bridge, alice))
    status, _ = await remote.send(alice, bridge.url + "/inbox", remote.actor_delete(alice))
    assert status == 202
    await wait_for(lambda: _not(is_follower(bridge, alice)))


async def _not(coro: Any) -> bool:
    return not await coro


async def test_delete_of_gone_actor_is_accepted_when_known(make_bridge: BridgeFactory,
                                                           remote: RemoteInstance) -> None:
    bridge = await make_bridge()
    alice, bob = remote.add_actor("alice"), remote.add_actor("bob")
    await remote.send(alice, inbox_of(bridge), remote.follow(alice, bridge.actor))
    await wait_for(lambda: is_follower(bridge, alice))
    # A fresh bridge process on the same DB has no cached key: the key fetch now meets 410 Gone.
    await bridge.http.close()
    await bridge.runner.cleanup()
    bridge = await make_bridge(base_url=bridge.settings.base_url)
    remote.remove_actor(alice)
    remote.remove_actor(bob)
    shared = listening(bridge) + "/inbox"
    public = urlsplit(bridge.settings.base_url).netloc  # as a proxy in front of the new port would pass it on
    status, text = await remote.send(alice, shared, remote.actor_delete(alice), host=public)
    assert status == 202, text
    await wait_for(lambda: _not(is_follower(bridge, alice)))
    # Bob was never known here: 202 (so his server stops retrying) but nothing stored.
    before = await n_rows(bridge, inbox_items)
    status, text = await remote.send(bob, shared, remote.actor_delete(bob), host=public)
    assert status == 202, text
    assert await n_rows(bridge, inbox_items) == before
    # A gone actor cannot send anything else unverified.
    status, _ = await remote.send(bob, shared, remote.follow(bob, bridge.actor), host=public)
    assert status == 401


async def test_metrics_count_outcomes(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    await remote.send(alice, inbox_of(bridge), remote.follow(alice, bridge.actor))
    await remote.send(alice, inbox_of(bridge), b"{", )
    await remote.send(alice, inbox_of(bridge), remote.follow(alice, bridge.actor), tamper="unsigned")
    await wait_for(lambda: is_follower(bridge, alice))

    async def handled() -> bool:
        text = await (await bridge.http.get(bridge.url + "/metrics", headers=bridge.admin)).text()
        return 'fedibridge_inbox_activities_total{outcome="followed",type="Follow"} 1' in text

    await wait_for(handled)
    text = await (await bridge.http.get(bridge.url + "/metrics", headers=bridge.admin)).text()
    for outcome in ("accepted", "malformed", "unauthorized"):
        assert f'fedibridge_inbox_requests_total{{outcome="{outcome}"}} 1' in text
