"""An operator's bad day, with signed replies arriving steadily: the database goes away and comes back, the
SQLite database fills up and space is freed. Every 202 must be stored, failures must be 503 + Retry-After
(never 500, never a hang), and the inbox must accept again by itself."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select

from fedibridge.delivery import QUEUE, TASK
from fedibridge.delivery_rows import backoff
from fedibridge.store import TEST_MAX_PAGES_ENV, Store, sqlite_path
from fedibridge.tables import comments, inbox_items
from fedibridge.worker import Policy, claim
from tests.conftest import Bridge, BridgeFactory, wait_for
from tests.faults import ReplyStream, TcpProxy
from tests.remote import RemoteInstance
from tests.test_comment_flows import publish
from tests.test_delivery import Inbox, create_payload, enqueue, insert_activity, until_state

BOUND = 15.0  # seconds: no inbox request may take longer (10 s of storage waits, plus a loaded machine)
# The steady stream comes from one account at 30/s, far beyond its inbox rate limit (tests/test_ratelimit.py):
# here it is the load, not the subject, so only 202 and 503 are expected.
NO_RATE_LIMIT = {"inbox_host_burst": 0, "inbox_actor_burst": 0}


async def _stored(bridge: Bridge, note_ids: set[str]) -> set[str]:
    async with bridge.store.connect() as conn:
        rows = (await conn.execute(select(inbox_items.c.ap_id))).all()
    return {r.ap_id.removesuffix("/activity") for r in rows} & note_ids


async def _comments(bridge: Bridge, note_ids: set[str]) -> set[str]:
    async with bridge.store.connect() as conn:
        rows = (await conn.execute(select(comments.c.ap_id))).all()
    return {r.ap_id for r in rows} & note_ids


async def _healthz(bridge: Bridge) -> tuple[int, dict[str, Any]]:
    async with bridge.http.get(f"{bridge.url}/healthz") as resp:
        return resp.status, await resp.json()


def _assert_answers(stream: ReplyStream) -> None:
    """Only 202 and 503-with-Retry-After, each within the bound."""
    statuses = {a.status for a in stream.answers}
    assert statuses <= {202, 503}, sorted(statuses)
    assert all(a.retry_after and int(a.retry_after) > 0 for a in stream.answers if a.status == 503)
    slow = sorted((round(a.elapsed, 1), a.status) for a in stream.answers)[-5:]
    assert slow[-1][0] < BOUND, f"inbox requests took too long (s, status): {slow}"


async def _all_become_comments(bridge: Bridge, stream: ReplyStream) -> None:
    accepted = {a.note_id for a in stream.accepted()}
    assert await _stored(bridge, accepted) == accepted, "a reply answered 202 was not stored"

    async def handled() -> bool:
        return await _comments(bridge, accepted) == accepted

    await wait_for(handled, 60, 0.2)


async def _recovers(stream: ReplyStream, since: float, timeout: float = 20) -> None:
    async def accepting() -> bool:
        return any(a.status == 202 for a in stream.since(since))

    await wait_for(accepting, timeout, 0.1)


@pytest.mark.parametrize("role", ["all", "web"])
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_outage_answers_503_then_the_inbox_accepts_again_by_itself(
        make_bridge: BridgeFactory, database_url: str, role: str) -> None:
    host_port = database_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1) if ":" in host_port else (host_port, "5432")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    bridge = await make_bridge(role, database_url=database_url.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/"),
                               moderation="open", health_grace_seconds=2, **NO_RATE_LIMIT)
    article = await publish(bridge)
    async with RemoteInstance() as remote:
        stream = ReplyStream(remote, remote.add_actor("alice"), f"{bridge.url}/inbox", article)
        stream.start()
        try:
            await wait_for(lambda: _count(stream, 202, 20), 30, 0.05)
            await proxy.stop()  # PostgreSQL "stops": every connection cut, nothing listening
            cut = time.monotonic()
            await wait_for(lambda: _count(stream, 503, 10), 30, 0.05)

            async def health_says_so() -> bool:
                status, body = await _healthz(bridge)
                return status == 503 and {"database", "inbox-writer"} <= set(body["failing"])

            await wait_for(health_says_so, 20, 0.2)  # grace 2 s: the inbox writer is named too
            for path, headers in (("/api/comments", bridge.admin), ("/api/articles/cafe/comments", {})):
                async with bridge.http.get(f"{bridge.url}{path}", headers=headers) as resp:
                    assert resp.status == 503, (path, resp.status)
                    assert resp.headers["Retry-After"] and "error" in await resp.json()
            await proxy.start()  # PostgreSQL is back on the same port
            back = time.monotonic()
            await _recovers(stream, back)
            await wait_for(lambda: _count_since(stream, back, 202, 30), 30, 0.05)
        finally:
            await stream.stop()
        assert any(a.status == 503 for a in stream.since(cut)), "the outage was never seen"
        _assert_answers(stream)
        if role == "all":
            await _all_become_comments(bridge, stream)
        else:  # no worker in this process: the 202s must be stored, for the workers elsewhere
            accepted = {a.note_id for a in stream.accepted()}
            assert await _stored(bridge, accepted) == accepted, "a reply answered 202 was not stored"

        async def healthy() -> bool:
            return (await _healthz(bridge))[0] == 200

        await wait_for(healthy, 20, 0.2)
    await proxy.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_full_sqlite_answers_503_then_accepts_again_once_space_is_freed(
        make_bridge: BridgeFactory, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = sqlite_path(database_url)
    assert path is not None
    monkeypatch.setenv(TEST_MAX_PAGES_ENV, "600")  # every connection of the bridge: at most 600 pages
    bridge = await make_bridge(moderation="open", **NO_RATE_LIMIT)
    article = await publish(bridge)
    # The "other files" on the disk: they leave the bridge ~30 pages. Used from a thread only:
    # a blocking wait for SQLite's lock on the event loop would stop the bridge, which shares the loop, from
    # ever releasing it (a deadlock that ends in "database is locked").
    filler = sqlite3.connect(path, timeout=30, check_same_thread=False)
    await asyncio.to_thread(_fill, filler, 570)
    async with RemoteInstance() as remote:
        stream = ReplyStream(remote, remote.add_actor("alice"), f"{bridge.url}/inbox", article)
        stream.start()
        try:
            await wait_for(lambda: _count(stream, 503, 10), 60, 0.05)  # the disk is full
            await asyncio.to_thread(_drop_filler, filler)  # space is freed
            freed = time.monotonic()
            await _recovers(stream, freed)
            await wait_for(lambda: _count_since(stream, freed, 202, 30), 30, 0.05)
        finally:
            await stream.stop()
            filler.close()
        _assert_answers(stream)
        await _all_become_comments(bridge, stream)
        async with bridge.store.connect() as conn:
            pending = (await conn.execute(select(func.count()).select_from(inbox_items)
                                          .where(inbox_items.c.state != "done"))).scalar_one()
        assert pending == 0
        metrics = await (await bridge.http.get(f"{bridge.url}/metrics", headers=bridge.admin)).text()
        assert "fedibridge_disk_free_bytes " in metrics
        assert 'fedibridge_inbox_requests_total{outcome="unavailable"}' in metrics


def _fill(filler: sqlite3.Connection, pages: int) -> None:
    filler.execute("CREATE TABLE filler (b BLOB)")
    while filler.execute("PRAGMA page_count").fetchone()[0] < pages:
        filler.execute("INSERT INTO filler VALUES (randomblob(3500))")
        filler.commit()


def _drop_filler(filler: sqlite3.Connection) -> None:
    filler.execute("DROP TABLE filler")
    filler.commit()


async def _count(stream: ReplyStream, status: int, n: int) -> bool:
    return sum(a.status == status for a in stream.answers) >= n


async def _count_since(stream: ReplyStream, t: float, status: int, n: int) -> bool:
    return sum(a.status == status for a in stream.since(t)) >= n


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_deliveries_are_recorded_after_a_postgresql_outage_and_sent_once(
        make_bridge: BridgeFactory, database_url: str) -> None:
    """PostgreSQL goes away while deliveries are in flight, and again while the worker claims. Their outcomes
    must be written once it is back, not dropped (the rows would wait out their 5-minute lease, then be sent
    again); and rows a lost claim may have leased to the worker must be handed back, not wait out theirs, while
    the rows it has in flight are not (they would be sent twice)."""
    host_port = database_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1) if ":" in host_port else (host_port, "5432")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    bridge = await make_bridge(database_url=database_url.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/"),
                               delivery_per_host=32, health_grace_seconds=2)
    assert bridge.settings.delivery_lease_seconds >= 300  # the wait each fix spares
    direct = await Store.open(database_url)
    gate, slow_gate = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request, n: int) -> web.Response:
        await (slow_gate if "/users/w" in request.path else gate).wait()
        return web.Response(status=202)

    health = bridge.services.health

    async def failing() -> bool:
        return health.is_failing(TASK)

    async with Inbox(held) as inbox:

        async def all_in_flight() -> bool:
            return inbox.active == 8

        try:
            # 1. Outcomes that cannot be written: eight POSTs in flight (the HTTP client opens 8 connections to a
            # host) when the database goes.
            aid = await enqueue(bridge, [f"{inbox.url}/users/u{i}/inbox" for i in range(8)])
            await wait_for(all_in_flight, 20)
            await proxy.stop()
            gate.set()  # the remotes answer 202; writing that fails
            await wait_for(failing, 20, 0.05)
            await proxy.start()
            await until_state(bridge, aid, "done", within=20)
            assert len(inbox.requests) == 8  # each sent once

            # 2. A claim whose answer is lost: its rows are leased to the worker, unknown to it; four others are
            # in flight meanwhile, and stay so until the end.
            slow = await enqueue(bridge, [f"{inbox.url}/users/w{i}/inbox" for i in range(4)])

            async def slow_in_flight() -> bool:
                return inbox.active == 4

            await wait_for(slow_in_flight, 20)
            await proxy.stop()
            bridge.services.wake.delivery.set()
            await wait_for(failing, 20, 0.05)  # the claim failed…
            async with direct.begin() as conn:
                lost = await insert_activity(conn, create_payload(bridge),
                                             [f"{inbox.url}/users/v{i}/inbox" for i in range(5)])
            policy = Policy(lease=timedelta(seconds=bridge.settings.delivery_lease_seconds), batch=200,
                            max_attempts=3, retry=backoff)
            claimed = await claim(direct, QUEUE, policy, bridge.services.worker_id)  # …though it had committed
            assert len(claimed) == 5
            await proxy.start()
            await until_state(bridge, lost, "done", within=20)
            assert len(inbox.requests) == 17 and inbox.active == 4  # the four in flight were not sent again
            slow_gate.set()
            await until_state(bridge, slow, "done", within=20)
            assert len(inbox.requests) == 17
        finally:
            await direct.close()
            await proxy.stop()
