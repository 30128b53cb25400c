"""Inbox retention on SQLite and PostgreSQL: handled rows older than inbox_retention_days go, pending rows
stay, and an activity re-sent after its row was pruned is handled again without duplicating anything.
In-memory state keyed by remote hosts is bounded too."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from fedibridge.retention import prune_inbox
from fedibridge.store import Store, utcnow
from fedibridge.tables import activities, comments, deliveries, followers, inbox_items, reactions

from .conftest import Bridge, BridgeFactory, wait_for
from .remote import RemoteInstance
from .test_comment_flows import deliver, publish


def _item(ap_id: str, state: str, age_days: float) -> dict[str, Any]:
    when = utcnow() - timedelta(days=age_days)
    return {"ap_id": ap_id, "type": "Like", "actor": "https://masto.example/users/alice",
            "payload": {"id": ap_id, "type": "Like"}, "received_at": when, "state": state, "attempts": 1,
            "next_attempt_at": when}


async def _ap_ids(store: Store) -> set[str]:
    async with store.connect() as conn:
        return {r.ap_id for r in await conn.execute(select(inbox_items.c.ap_id))}


async def test_prune_keeps_recent_and_pending_rows(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        async with store.begin() as conn:
            await conn.execute(inbox_items.insert(), [
                _item("old-done", "done", 8), _item("old-failed", "failed", 30), _item("old-pending", "pending", 9),
                _item("recent-done", "done", 6.9), _item("new-done", "done", 0)])
        assert await prune_inbox(store, utcnow(), 7) == 2
        assert await _ap_ids(store) == {"old-pending", "recent-done", "new-done"}
        assert await prune_inbox(store, utcnow(), 7) == 0
    finally:
        await store.close()


async def test_the_bridge_prunes_old_rows_on_its_own(database_url: str, make_bridge: BridgeFactory) -> None:
    store = await Store.open(database_url)
    try:
        async with store.begin() as conn:
            await conn.execute(inbox_items.insert(), [_item("old-done", "done", 8), _item("fresh", "done", 1)])
    finally:
        await store.close()
    bridge = await make_bridge()

    async def pruned() -> bool:
        return await _ap_ids(bridge.store) == {"fresh"}

    await wait_for(pruned, timeout=10)


async def _count(bridge: Bridge, table: Any, *where: Any) -> int:
    async with bridge.store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one())


async def test_resent_activity_after_pruning_changes_nothing(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        alice = masto.add_actor("alice")
        note = masto.note(alice, "<p>Déjà dit, une fois « seulement »</p>", article_id)
        sent = [masto.create(alice, note), masto.like(alice, article_id), masto.follow(alice, bridge.actor)]
        for activity in sent:
            await deliver(bridge, masto, alice, activity)
        accepts = select(activities.c.id).where(activities.c.type == "Accept").scalar_subquery()
        before = await _count(bridge, deliveries, deliveries.c.activity_id.in_(accepts))
        assert before == 1

        assert await prune_inbox(bridge.store, utcnow() + timedelta(days=8), 7) == 3
        for activity in sent:  # the same ids, signed again: servers re-send like this
            await deliver(bridge, masto, alice, activity)
        async with bridge.store.connect() as conn:
            states = {r.state for r in await conn.execute(select(inbox_items.c.state))}
        assert states == {"done"} and await _count(bridge, inbox_items) == 3  # handled again, not skipped
        assert await _count(bridge, comments) == 1
        assert await _count(bridge, reactions) == 1
        assert await _count(bridge, followers) == 1
        assert await _count(bridge, deliveries, deliveries.c.activity_id.in_(accepts)) == before


async def test_probe_memory_of_unavailable_hosts_is_bounded(database_url: str) -> None:
    """The delivery worker's per-host probe memory drops day-old entries instead of growing forever."""
    import time

    from fedibridge.domain_health import MAX_PROBED, may_probe

    store = await Store.open(database_url)
    try:
        stale = time.monotonic() - 2 * 86_400
        probed = {f"gone-{n}.example": stale for n in range(MAX_PROBED + 50)}
        probed["recent.example"] = time.monotonic()
        assert await may_probe(store, "down.example", "worker-1", probed)
        assert set(probed) == {"recent.example", "down.example"}
        assert not await may_probe(store, "down.example", "worker-1", probed)  # once a day
        assert not await may_probe(store, "recent.example", "worker-1", probed)
    finally:
        await store.close()
