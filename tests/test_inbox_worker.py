"""The inbox worker's bounds, end to end: a running bridge, loopback remotes (one hostile and slow, one
genuine), real signatures. One activity pointing at a chain of slow parents must not stall the others."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import select

from fedibridge.comments import PARENT_BUDGET
from fedibridge.tables import inbox_items

from .conftest import Bridge, BridgeFactory, wait_for
from .remote import RemoteInstance
from .test_comment_flows import publish

SLOW = 2.0  # each parent GET on the hostile server takes this long


@dataclass
class SlowInstance(RemoteInstance):
    """A server whose statuses answer slowly: each GET of a note sleeps SLOW seconds (a tarpit)."""

    fetched: int = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and "/statuses/" in request.path:
            self.fetched += 1
            await asyncio.sleep(SLOW)
        return await super()._handle(request)


async def _item(bridge: Bridge, ap_id: str) -> Any:
    async with bridge.store.connect() as conn:
        return (await conn.execute(select(inbox_items).where(inbox_items.c.ap_id == ap_id))).first()


async def test_slow_parent_chain_does_not_stall_a_genuine_reply(make_bridge: BridgeFactory) -> None:
    async with SlowInstance() as evil, RemoteInstance() as masto:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        mallory = evil.add_actor("mallory")
        alice = masto.add_actor("alice")
        # Ten notes, each replying to the previous, the first to the article: only the last is sent to us,
        # so thread completion would walk up the chain, one slow GET after another.
        parent = article_id
        for i in range(10):
            note = evil.note(mallory, f"<p>maillon {i}</p>", parent)
            evil.objects[note["id"]] = note
            parent = note["id"]
        hostile = evil.create(mallory, evil.objects[parent])
        status, text = await evil.send(mallory, f"{bridge.url}/inbox", hostile)
        assert status == 202, text

        await asyncio.sleep(2.0)
        genuine = masto.note(alice, "<p>Merci pour l’article « café » ☕</p>", article_id)
        status, text = await masto.send(alice, f"{bridge.url}/inbox", masto.create(alice, genuine))
        assert status == 202, text
        sent = asyncio.get_running_loop().time()

        async def visible() -> bool:
            async with bridge.http.get(f"{bridge.url}/api/articles/cafe/comments") as resp:
                data = await resp.json()
            return any(c["ap_id"] == genuine["id"] for c in data["comments"])

        await wait_for(visible, timeout=5.0)
        assert asyncio.get_running_loop().time() - sent < 5.0

        # The hostile activity spent its budget (a couple of slow GETs, not eight) and waits for a retry.
        async def deferred() -> bool:
            item = await _item(bridge, hostile["id"])
            return bool(item.error) and item.state == "pending" and item.locked_until is None

        await wait_for(deferred, timeout=5.0)
        item = await _item(bridge, hostile["id"])
        assert "thread completion" in item.error and item.attempts == 1
        assert evil.fetched <= PARENT_BUDGET // SLOW + 1


async def test_reply_and_its_parent_from_another_server_in_one_batch(make_bridge: BridgeFactory) -> None:
    """Unrelated senders run side by side, but a reply still waits for its parent's Create (same batch)."""
    async with RemoteInstance() as masto, RemoteInstance() as gts:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        alice = masto.add_actor("alice")
        bob = gts.add_actor("bob", "gotosocial")
        for n in range(3):
            parent = masto.note(alice, f"<p>Premier avis {n}</p>", article_id)  # never served: only pushed
            reply = gts.note(bob, f"<p>D’accord avec Alice {n} !</p>", parent["id"])
            sent = await asyncio.gather(masto.send(alice, f"{bridge.url}/inbox", masto.create(alice, parent)),
                                        gts.send(bob, f"{bridge.url}/inbox", gts.create(bob, reply)))
            assert [s for s, _ in sent] == [202, 202]

        async def threaded() -> bool:
            async with bridge.http.get(f"{bridge.url}/api/articles/cafe/comments") as resp:
                data = await resp.json()
            return data["total"] == 6 and all(len(c["replies"]) == 1 for c in data["comments"])

        await wait_for(threaded, timeout=10)
