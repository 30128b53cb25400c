"""Nobody speaks for someone else: hostile remote servers against a running bridge, all on loopback.

An attacker instance and a victim instance are two real servers on 127.0.0.1 (two ports, so two origins).
Each test is one hole found by the Trust review; each fails on the code before the fix.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from fedibridge.tables import deliveries, followers, inbox_items

from .conftest import Bridge, BridgeFactory, wait_for
from .remote import RemoteAccount, RemoteInstance, new_key
from .test_comment_flows import publish, row, settled


@pytest.fixture
async def victim() -> AsyncIterator[RemoteInstance]:
    async with RemoteInstance() as instance:
        yield instance


@pytest.fixture
async def attacker() -> AsyncIterator[RemoteInstance]:
    async with RemoteInstance() as instance:
        yield instance


async def send(bridge: Bridge, remote: RemoteInstance, acct: RemoteAccount, activity: dict[str, Any],
               **kw: Any) -> tuple[int, str]:
    return await remote.send(acct, f"{bridge.url}/inbox", activity, **kw)


async def approve(bridge: Bridge, ap_id: str) -> None:
    cid = (await row(bridge, ap_id)).id
    async with bridge.http.post(f"{bridge.url}/api/comments/{cid}/approve", headers=bridge.admin) as resp:
        assert resp.status == 200


async def handled(bridge: Bridge, n: int) -> None:
    """Wait until n inbox items exist and none is pending (the worker looked at all of them)."""
    async def done() -> bool:
        async with bridge.store.connect() as conn:
            states = [r.state for r in await conn.execute(select(inbox_items.c.state))]
        return len(states) >= n and "pending" not in states

    await wait_for(done, timeout=15)


# --- redirects never change who someone is ---------------------------------------------------------


async def test_actor_redirected_to_a_victim_does_not_become_the_victim(
        make_bridge: BridgeFactory, attacker: RemoteInstance, victim: RemoteInstance) -> None:
    """The web process verifies Mallory's real document; then her server redirects her actor URL to Alice's.
    The worker (another process, nothing cached) must not store the comment as Alice's, nor show her name."""
    web_only = await make_bridge(role="web")
    article = await publish(web_only)
    mallory = attacker.add_actor("mallory", name="Mallory")
    alice = victim.add_actor("alice", name="Alice Martin")
    note = attacker.note(mallory, "<p>Je suis Alice, promis.</p>", article)
    status, text = await send(web_only, attacker, mallory, attacker.create(mallory, note))
    assert status == 202, text
    attacker.redirects[mallory.id] = alice.id
    worker = await make_bridge(role="worker", base_url=web_only.settings.base_url)
    await handled(worker, 1)
    stored = await row(worker, note["id"])
    assert stored is not None
    assert stored.author_id == mallory.id
    assert stored.author_name != "Alice Martin" and stored.author_handle != alice.handle
    assert stored.author_avatar is None or "alice" not in stored.author_avatar


async def test_update_person_cannot_switch_an_approved_commenter_to_a_victim(
        bridge: Bridge, attacker: RemoteInstance, victim: RemoteInstance) -> None:
    article = await publish(bridge)
    mallory = attacker.add_actor("mallory", name="Mallory")
    alice = victim.add_actor("alice", name="Alice Martin")
    note = attacker.note(mallory, "<p>Bonjour !</p>", article)
    assert (await send(bridge, attacker, mallory, attacker.create(mallory, note)))[0] == 202
    await settled(bridge)
    await approve(bridge, note["id"])
    attacker.redirects[mallory.id] = alice.id  # her "new profile" is Alice's
    status, text = await send(bridge, attacker, mallory, attacker.actor_update(mallory))
    assert status == 202, text
    await handled(bridge, 2)
    stored = await row(bridge, note["id"])
    assert (stored.author_id, stored.author_name, stored.author_handle) == (mallory.id, "Mallory", mallory.handle)


# --- the signer is the actor -----------------------------------------------------------------------


async def test_a_key_of_another_actor_on_the_same_host_cannot_speak_for_alice(
        bridge: Bridge, victim: RemoteInstance) -> None:
    """Mallory has an account on Alice's server, with her own key: she cannot comment, edit or delete as Alice."""
    article = await publish(bridge)
    alice = victim.add_actor("alice", name="Alice Martin")
    mallory = victim.add_actor("mallory", name="Mallory")
    victim.rotate_key(mallory, new_key())  # her own key pair
    first = victim.note(alice, "<p>Premier commentaire d’Alice.</p>", article)
    assert (await send(bridge, victim, alice, victim.create(alice, first)))[0] == 202
    await settled(bridge)
    await approve(bridge, first["id"])  # Alice is now a known commenter: her next comments go straight through

    forged = victim.note(alice, "<p>Achetez des montres !</p>", article)
    for activity in (victim.create(alice, forged),
                     victim.update(alice, {**first, "content": "<p>Alice a changé d’avis.</p>"}),
                     victim.delete(alice, first)):
        # Signed by Mallory with her own key (keyId .../users/mallory#main-key); the activity says Alice.
        status, text = await send(bridge, victim, mallory, activity)
        assert status == 401, text
        assert "not to the actor" in json.loads(text)["error"]
    await settled(bridge)
    assert await row(bridge, forged["id"]) is None
    kept = await row(bridge, first["id"])
    assert kept.content_html == "<p>Premier commentaire d’Alice.</p>" and not kept.deleted and not kept.edited


async def test_a_delete_of_someone_elses_note_is_refused_even_when_embedded(
        bridge: Bridge, victim: RemoteInstance) -> None:
    """Alice deleting a note she embeds as Bob's: the note's attributedTo must be the actor."""
    article = await publish(bridge)
    alice, bob = victim.add_actor("alice"), victim.add_actor("bob")
    note = victim.note(alice, "<p>À moi.</p>", article)
    assert (await send(bridge, victim, alice, victim.create(alice, note)))[0] == 202
    await settled(bridge)
    delete = victim.delete(alice, note)
    delete["object"] = {**note, "attributedTo": bob.id}
    assert (await send(bridge, victim, alice, delete))[0] == 202
    await handled(bridge, 2)
    assert not (await row(bridge, note["id"])).deleted


# --- the signed Host must be ours ------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "host"), [("cavage", "other.example"), ("rfc9421", "other.example"),
                                              ("cavage", "other.example@{ours}")])
async def test_request_signed_for_another_server_is_refused(
        bridge: Bridge, victim: RemoteInstance, scheme: str, host: str) -> None:
    """A request Alice signed for other.example's /inbox, replayed here with its Host, is not ours."""
    alice = victim.add_actor("alice")
    status, text = await send(bridge, victim, alice, victim.follow(alice, bridge.actor), scheme=scheme,
                              host=host.format(ours=urlsplit(bridge.url).netloc))
    assert status == 401, text
    assert "signed for host" in json.loads(text)["error"]
    async with bridge.store.connect() as conn:
        assert (await conn.execute(select(inbox_items))).first() is None


async def test_request_signed_for_the_configured_domain_is_accepted(
        make_bridge: BridgeFactory, victim: RemoteInstance) -> None:
    """Behind a proxy the public name may be the handle domain: it is ours too (and default ports match)."""
    bridge = await make_bridge(domain="blog.example")
    alice, bob = victim.add_actor("alice"), victim.add_actor("bob")
    status, text = await send(bridge, victim, alice, victim.follow(alice, bridge.actor), host="blog.example")
    assert status == 202, text
    status, text = await send(bridge, victim, bob, victim.follow(bob, bridge.actor), host="BLOG.example:80")
    assert status == 202, text


# --- follower inboxes belong to the follower -------------------------------------------------------


async def test_follow_with_an_inbox_on_a_third_party_is_refused(
        bridge: Bridge, attacker: RemoteInstance, victim: RemoteInstance) -> None:
    victim.add_actor("alice")
    mallory = attacker.add_actor("mallory")
    mallory.doc["inbox"] = f"{victim.base}/users/alice/inbox"  # make the bridge post to Alice's server
    assert (await send(bridge, attacker, mallory, attacker.follow(mallory, bridge.actor)))[0] == 202
    await handled(bridge, 1)
    async with bridge.store.connect() as conn:
        assert (await conn.execute(select(followers))).first() is None
        assert (await conn.execute(select(deliveries))).first() is None
    assert victim.received == []


async def test_follow_with_a_foreign_shared_inbox_keeps_only_its_own_inbox(
        bridge: Bridge, attacker: RemoteInstance, victim: RemoteInstance) -> None:
    mallory = attacker.add_actor("mallory")
    mallory.doc["endpoints"] = {"sharedInbox": victim.shared_inbox}
    assert (await send(bridge, attacker, mallory, attacker.follow(mallory, bridge.actor)))[0] == 202
    await handled(bridge, 1)
    async with bridge.store.connect() as conn:
        follower = (await conn.execute(select(followers))).one()
        targets = [r.inbox for r in await conn.execute(select(deliveries.c.inbox))]
    assert (follower.inbox, follower.shared_inbox) == (mallory.inbox, None)
    assert targets == [mallory.inbox]
    await wait_for(lambda: _accepted(attacker))
    assert victim.received == []


async def _accepted(remote: RemoteInstance) -> bool:
    return bool(remote.received_of("Accept"))


async def test_follower_update_moving_its_inbox_to_a_third_party_is_ignored(
        bridge: Bridge, attacker: RemoteInstance, victim: RemoteInstance) -> None:
    mallory = attacker.add_actor("mallory")
    assert (await send(bridge, attacker, mallory, attacker.follow(mallory, bridge.actor)))[0] == 202
    await handled(bridge, 1)
    mallory.doc["inbox"] = f"{victim.base}/users/alice/inbox"
    mallory.doc["endpoints"] = {"sharedInbox": victim.shared_inbox}
    assert (await send(bridge, attacker, mallory, attacker.actor_update(mallory)))[0] == 202
    await handled(bridge, 2)
    async with bridge.store.connect() as conn:
        follower = (await conn.execute(select(followers))).one()
    assert (follower.inbox, follower.shared_inbox) == (mallory.inbox, attacker.shared_inbox)


# --- identity caches give one answer in every process -----------------------------------------------


async def test_a_key_replaced_by_the_actor_is_refused_by_every_web_process(
        make_bridge: BridgeFactory, database_url: str, victim: RemoteInstance) -> None:
    """Two `--role web` processes on one PostgreSQL: Alice replaces her (stolen) key and announces it to one;
    the other, which cached the old key, must stop accepting it too instead of trusting its cache for a day."""
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes share one database only on PostgreSQL")
    first = await make_bridge(role="web")
    second = await make_bridge(role="web", base_url=first.settings.base_url)
    alice = victim.add_actor("alice")
    assert (await send(first, victim, alice, victim.follow(alice, first.actor)))[0] == 202  # caches her key
    stolen = replace(alice, private_key=alice.private_key)
    victim.rotate_key(alice, new_key())
    status, text = await victim.send(alice, f"{listening(second)}/inbox", victim.actor_update(alice),
                                     host=urlsplit(first.url).netloc)
    assert status == 202, text

    async def refused() -> bool:
        status, _ = await send(first, victim, stolen, victim.follow(alice, first.actor))
        return status == 401

    await wait_for(refused, timeout=5, interval=0.2)


def listening(bridge: Bridge) -> str:
    host, port = bridge.runner.addresses[0][:2]
    return f"http://{host}:{port}"
