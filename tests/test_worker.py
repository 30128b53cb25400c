"""The leased-row worker every queue runs on (worker.py), on real SQLite and PostgreSQL databases.

Claims lease due rows in batches and never hand one row to two workers; outcomes are written per row in one
transaction, only by the lease's owner; released rows are due again at once; a batch whose handler fails is
handed back on the next pass; the retry policy is a value.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from fedibridge.store import Store, utcnow
from fedibridge.tables import deliveries, inbox_items
from fedibridge.worker import Finish, Policy, Queue, Worker, claim, finish, pick, prefer_index_order, release
from tests.faults import TcpProxy

INBOX = Queue(inbox_items, count_on_claim=True)
DELIVERIES = Queue(deliveries, order=("next_attempt_at", "id"), owned=True, columns=("id", "inbox", "attempts"))
POLICY = Policy(lease=timedelta(minutes=5), batch=3, max_attempts=4, retry=lambda n: 10.0 * n)


async def _inbox_rows(store: Store, n: int) -> None:
    now = utcnow()
    async with store.begin() as conn:
        await conn.execute(inbox_items.insert(), [
            {"ap_id": f"https://mastodon.example/users/alice/statuses/{i}/activity", "type": "Create",
             "actor": "https://mastodon.example/users/alice", "payload": {"type": "Create", "n": i},
             "received_at": now, "state": "pending", "attempts": 0, "next_attempt_at": now - timedelta(seconds=n - i)}
            for i in range(n)])


async def _delivery_rows(store: Store, n: int) -> None:
    now = utcnow()
    async with store.begin() as conn:
        await conn.execute(deliveries.insert(), [
            {"kind": "webhook", "inbox": f"https://blog.example/hook/{i}", "host": "blog.example", "body": "{}",
             "state": "pending", "attempts": 0, "next_attempt_at": now - timedelta(seconds=n - i), "created_at": now}
            for i in range(n)])


async def _all(store: Store, table: Any) -> list[Any]:
    async with store.connect() as conn:
        return list((await conn.execute(select(table).order_by(table.c.id))).all())


async def test_claim_leases_a_batch_oldest_first_and_never_twice(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        await _delivery_rows(store, 5)
        first = await claim(store, DELIVERIES, POLICY, "host:1:a")
        assert [r.inbox for r in first] == [f"https://blog.example/hook/{i}" for i in range(3)]
        assert set(first[0]._fields) == {"id", "inbox", "attempts"}
        second = await claim(store, DELIVERIES, POLICY, "host:2:b")
        assert [r.inbox[-1] for r in second] == ["3", "4"]
        assert await claim(store, DELIVERIES, POLICY, "host:3:c") == []  # all leased
        rows = await _all(store, deliveries)
        assert [r.locked_by for r in rows] == ["host:1:a"] * 3 + ["host:2:b"] * 2
        assert all(r.attempts == 0 for r in rows)  # deliveries count attempts when a POST was tried
        # An expired lease makes the row due again.
        later = utcnow() + POLICY.lease + timedelta(seconds=1)
        again = await claim(store, DELIVERIES, POLICY, "host:3:c", now=later, limit=10)
        assert len(again) == 5
    finally:
        await store.close()


async def test_concurrent_claims_split_the_rows(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        await _delivery_rows(store, 30)
        many = Policy(lease=timedelta(minutes=5), batch=4, max_attempts=3, retry=float)
        batches = await asyncio.gather(*(claim(store, DELIVERIES, many, f"host:{i}:x") for i in range(10)))
        ids = [r.id for batch in batches for r in batch]
        assert ids and len(ids) == len(set(ids))  # no row handed to two workers
        rest = await claim(store, DELIVERIES, many, "host:99:y", limit=100)
        assert len(rest) == 30 - len(ids) and not {r.id for r in rest} & set(ids)
    finally:
        await store.close()


async def test_finish_writes_each_rows_values_only_for_the_owner(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        await _delivery_rows(store, 3)
        mine = await claim(store, DELIVERIES, POLICY, "host:1:a")
        later = utcnow() + timedelta(hours=1)
        outcomes = [Finish(mine[0].id, {"state": "done", "last_status": 202}),
                    Finish(mine[1].id, {"state": "pending", "next_attempt_at": later, "last_error": "HTTP 503"}),
                    Finish(mine[2].id, {"state": "failed", "last_status": 404})]
        async with store.begin() as conn:  # another worker's name: nothing changes
            await conn.run_sync(finish, DELIVERIES, "host:9:z", outcomes)
        assert [r.state for r in await _all(store, deliveries)] == ["pending"] * 3
        async with store.begin() as conn:
            await conn.run_sync(finish, DELIVERIES, "host:1:a", outcomes, last_attempt_at=utcnow())
        rows = await _all(store, deliveries)
        assert [r.state for r in rows] == ["done", "pending", "failed"]
        assert [r.last_status for r in rows] == [202, None, 404]
        assert rows[1].last_error == "HTTP 503" and rows[1].next_attempt_at > utcnow()
        assert all(r.locked_until is None and r.locked_by is None and r.last_attempt_at for r in rows)
    finally:
        await store.close()


async def test_finish_writes_a_batch_of_equal_outcomes_together_only_for_the_owner(database_url: str) -> None:
    """1,200 rows finished alike (a handled batch) go out as UPDATE … IN (…) chunks, and the owner rule holds
    for them as for single rows: a row whose lease passed to another worker is left to that worker."""
    store = await Store.open(database_url)
    try:
        await _delivery_rows(store, 1_200)
        many = Policy(lease=timedelta(minutes=5), batch=1_200, max_attempts=3, retry=float)
        mine = await claim(store, DELIVERIES, many, "host:1:a")
        async with store.begin() as conn:  # the lease of the last row passed to another worker
            await conn.execute(deliveries.update().where(deliveries.c.id == mine[-1].id).values(locked_by="host:2:b"))
        outcomes = [Finish(r.id, {"state": "done", "last_status": 202}) for r in mine]
        outcomes[5] = Finish(mine[5].id, {"state": "failed", "last_status": 404})
        async with store.begin() as conn:
            await conn.run_sync(finish, DELIVERIES, "host:1:a", outcomes, last_attempt_at=utcnow())
        rows = await _all(store, deliveries)
        assert [r.state for r in rows[:-1]].count("done") == 1_198
        assert (rows[5].state, rows[5].last_status) == ("failed", 404)
        assert all(r.locked_by is None and r.last_attempt_at for r in rows[:-1])
        assert (rows[-1].state, rows[-1].locked_by, rows[-1].last_status) == ("pending", "host:2:b", None)
    finally:
        await store.close()


async def test_release_makes_rows_due_now_and_uncounts_the_claim(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        await _inbox_rows(store, 2)
        rows = await claim(store, INBOX, POLICY, "me")
        assert [r.attempts for r in rows] == [1, 1]  # the inbox counts an attempt at claim
        assert await claim(store, INBOX, POLICY, "me") == []
        await release(store, INBOX, "me", [r.id for r in rows])
        after = await _all(store, inbox_items)
        assert [(r.attempts, r.locked_until) for r in after] == [(0, None), (0, None)]
        assert len(await claim(store, INBOX, POLICY, "me")) == 2
    finally:
        await store.close()


async def test_worker_hands_the_batch_to_its_handler_and_finishes_it(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        await _inbox_rows(store, 5)
        seen: list[list[int]] = []
        broken = True

        async def handler(rows: list[Any]) -> list[Finish]:
            seen.append([r.payload["n"] for r in rows])
            if broken:
                raise RuntimeError("a bug in the handler")
            return [Finish(r.id, {"state": "done"}) for r in rows]

        worker = Worker(store, INBOX, POLICY, handler, "me")
        try:
            await worker.run_once()
        except RuntimeError:
            pass
        assert seen == [[0, 1, 2]] and len(worker.held) == 3  # one batch, as a list; still held
        broken = False
        assert await worker.run_once() == 3  # the held rows were handed back, then claimed again
        assert seen[1] == [0, 1, 2]
        assert await worker.run_once() == 2 and seen[2] == [3, 4]
        assert await worker.run_once() == 0
        rows = await _all(store, inbox_items)
        assert all(r.state == "done" and r.locked_until is None for r in rows)
        assert [r.attempts for r in rows] == [1, 1, 1, 1, 1]  # the failed pass's attempt was uncounted
        assert worker.held == set()
    finally:
        await store.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_rows_of_a_claim_whose_answer_was_lost_are_handed_back(database_url: str) -> None:
    """PostgreSQL cut mid-commit: a claim may have committed on the server while its worker saw it fail. Those
    rows are leased to the worker, unknown to it; its next pass must hand them back, not leave them for the
    whole lease (5 minutes for inbox activities: seen in CI as replies not becoming comments after an outage)."""
    host_port = database_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    direct = await Store.open(database_url)
    store = await Store.open(database_url.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/"))
    owned = Queue(inbox_items, count_on_claim=True, owned=True)
    try:
        await _inbox_rows(direct, 5)
        seen: list[int] = []

        async def handler(rows: list[Any]) -> list[Finish]:
            seen.extend(r.payload["n"] for r in rows)
            return [Finish(r.id, {"state": "done"}) for r in rows]

        worker = Worker(store, owned, POLICY, handler, "host:1:me")
        await proxy.stop()  # the database is away: the claim fails…
        with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises for a cut connection
            await worker.run_once()
        await claim(direct, owned, POLICY, "host:1:me")  # …though its UPDATE had committed (3 rows leased to us)
        await proxy.start()
        while await worker.run_once():
            pass
        assert sorted(seen) == [0, 1, 2, 3, 4]  # now, not after the lease
        rows = await _all(direct, inbox_items)
        assert all(r.state == "done" and r.locked_by is None for r in rows)
        assert [r.attempts for r in rows] == [1, 1, 1, 1, 1]  # the lost claim's attempt was uncounted
    finally:
        await store.close()
        await direct.close()
        await proxy.stop()


def test_policy_is_a_value() -> None:
    policy = Policy(lease=timedelta(minutes=1), batch=10, max_attempts=3, retry=lambda n: 60.0 * n, min_delay=1.0)
    assert policy.delay(2) == 120.0
    assert policy.delay(2, retry_after=30.0) == 30.0  # the remote's Retry-After wins
    assert policy.delay(2, retry_after=0.0) == 1.0  # but never under the floor
    assert not policy.gives_up(2) and policy.gives_up(3)


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
async def test_a_claim_reads_its_batch_not_the_backlog(database_url: str, analyzed: bool) -> None:
    """Both real queues claim through their partial index of pending rows, in claim order: no sort of the
    whole backlog and no scan of finished rows, with or without planner statistics (a fresh database after a
    burst has none). Without it a claim of 1,000 rows behind 40,000 waiting cost 25-39 ms, each time."""
    from fedibridge import delivery, inbox_worker

    store = await Store.open(database_url)
    try:
        await _inbox_rows(store, 20_000)
        await _delivery_rows(store, 20_000)
        async with store.begin() as conn:
            for table in (inbox_items, deliveries):
                await conn.execute(table.update().where(table.c.id <= 1500).values(state="done"))
            if analyzed:
                await conn.execute(text("ANALYZE"))
        for queue, index in ((inbox_worker.QUEUE, "ix_inbox_items_pending"), (delivery.QUEUE, "ix_deliveries_pending")):
            stmt = pick(queue, utcnow(), 1000, postgres=store.is_postgres)
            async with store.begin() as conn:
                await conn.run_sync(prefer_index_order)
                sql = str(stmt.compile(conn.sync_connection, compile_kwargs={"literal_binds": True}))
                explain = "EXPLAIN " if store.is_postgres else "EXPLAIN QUERY PLAN "
                plan = " | ".join(str(r[-1]) for r in await conn.execute(text(explain + sql)))
            assert index in plan, plan
            assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
        rows = await claim(store, inbox_worker.QUEUE, inbox_worker.POLICY, "w", limit=1000)
        assert [r.id for r in rows] == list(range(1501, 2501))  # oldest pending first, as before
    finally:
        await store.close()
