"""The inbox's group-commit writer and its driver-level sinks, on SQLite and PostgreSQL.

The sinks bypass SQLAlchemy for speed, so these tests hold them to what the SQLAlchemy path would have
stored: same values read back through tables.inbox_items, same text in the datetime columns.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from fedibridge.errors import StorageUnavailable
from fedibridge.intake import MAX_BATCH, InboxWriter, encode_payload
from fedibridge.store import Store
from fedibridge.tables import inbox_items

ACTOR = "https://mastodon.example/users/zoe"


def activity(i: int) -> dict[str, Any]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams", "id": f"{ACTOR}/statuses/{i}/activity",
        "type": "Create", "actor": ACTOR, "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "object": {"id": f"{ACTOR}/statuses/{i}", "type": "Note", "content": f"<p>« Réponse » n°{i} ☕🌻</p>",
                   "contentMap": {"fr": f"<p>« Réponse » n°{i} ☕🌻</p>"}, "sensitive": False, "n": 1.5},
    }


def row(i: int, when: datetime) -> dict[str, Any]:
    return dict(ap_id=f"{ACTOR}/statuses/{i}/activity", type="Create", actor=ACTOR, key_owner=ACTOR,
                payload=encode_payload(activity(i)), received_at=when, state="pending", attempts=0,
                next_attempt_at=when)


@pytest.fixture
async def store(database_url: str) -> Any:
    s = await Store.open(database_url)
    yield s
    await s.close()


async def test_concurrent_adds_are_stored_once_each_and_read_back_intact(store: Store) -> None:
    writer = InboxWriter(store.database_url)
    await writer.start()
    when = datetime(2026, 11, 25, 9, 30, 15, 123456, tzinfo=UTC)
    try:
        # 450 distinct activities, each sent twice at once (a retrying server), more than two batches' worth
        n = 2 * MAX_BATCH + 50
        results = await asyncio.gather(*(writer.add(row(i % n, when)) for i in range(2 * n)))
        assert sum(results) == n  # each stored exactly once; the copies are reported as duplicates
        assert await writer.add(row(7, when)) is False  # and a later re-send too
    finally:
        await writer.close()
    async with store.connect() as conn:
        rows = (await conn.execute(select(inbox_items).order_by(inbox_items.c.id))).all()
    assert len(rows) == n
    first = next(r for r in rows if r.ap_id == f"{ACTOR}/statuses/3/activity")
    assert first.payload == activity(3)  # French text, emoji and floats intact
    assert (first.type, first.actor, first.key_owner, first.state, first.attempts) == (
        "Create", ACTOR, ACTOR, "pending", 0)
    assert first.received_at == when and first.next_attempt_at == when and first.received_at.tzinfo is not None
    assert first.locked_until is None and first.error is None


async def test_sink_stores_datetimes_exactly_as_sqlalchemy_does(store: Store) -> None:
    """Queries compare these columns as stored values (next_attempt_at <= now): the text must match."""
    when = datetime(2026, 11, 25, 10, 0, 0, 5, tzinfo=UTC)
    async with store.begin() as conn:
        await conn.execute(inbox_items.insert().values(row(1, when)))
    writer = InboxWriter(store.database_url)
    try:
        assert await writer.add(row(2, when)) is True
    finally:
        await writer.close()
    async with store.connect() as conn:
        stored = (await conn.execute(text(
            "SELECT ap_id, CAST(received_at AS TEXT), CAST(next_attempt_at AS TEXT), payload FROM inbox_items "
            "ORDER BY id"))).all()
        due = (await conn.execute(select(inbox_items.c.ap_id).where(
            inbox_items.c.next_attempt_at <= when + timedelta(microseconds=1)))).scalars().all()
    assert stored[0][1:3] == stored[1][1:3]
    assert len(due) == 2
    assert stored[1][3] == encode_payload(activity(2))


async def test_a_failing_batch_fails_every_request_in_it_and_stores_nothing(store: Store) -> None:
    writer = InboxWriter(store.database_url)
    await writer.start()
    when = datetime.now(UTC)
    bad = row(99, when) | {"actor": None}  # NOT NULL violated: the database refuses the whole batch
    try:
        results = await asyncio.gather(writer.add(row(1, when)), writer.add(bad), return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results)  # no 202 for anything in that transaction
        assert await writer.add(row(2, when)) is True  # the writer keeps working afterwards
    finally:
        await writer.close()
    async with store.connect() as conn:
        assert (await conn.execute(select(inbox_items.c.ap_id))).scalars().all() == [
            f"{ACTOR}/statuses/2/activity"]


async def test_close_flushes_what_is_waiting(store: Store) -> None:
    writer = InboxWriter(store.database_url)
    await writer.start()
    when = datetime.now(UTC)
    pending = [asyncio.ensure_future(writer.add(row(i, when))) for i in range(30)]
    await asyncio.sleep(0)  # queued, not yet written
    await writer.close()
    assert all(p.done() and p.result() is True for p in pending)
    with pytest.raises(StorageUnavailable, match="closed"):  # a request during shutdown: 503, not 500
        await writer.add(row(31, when))


async def test_unreachable_postgresql_fails_at_start() -> None:
    writer = InboxWriter("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(OSError):
        await writer.start()


async def test_a_batch_that_fails_does_not_end_the_writer(store: Store) -> None:
    """An unexpected error in one batch is that batch's answer; the next request is stored as usual (the
    writer task used to die with it, and every later request waited forever)."""
    writer = InboxWriter(store.database_url)
    await writer.start()
    when = datetime.now(UTC)
    bad = row(1, when)
    bad["received_at"] = object()  # no column can bind this
    with pytest.raises(Exception) as caught:
        await asyncio.wait_for(writer.add(bad), 10)
    assert not isinstance(caught.value, TimeoutError)
    assert await asyncio.wait_for(writer.add(row(2, when)), 10) is True
    await writer.close()


async def test_on_sqlite_the_group_commit_takes_turns_with_store_writes_on_one_thread(store: Store) -> None:
    """SQLite: the inbox's commits run on the store's writer thread, so this process's two writers never wait
    for each other in SQLite's busy handler; closing the inbox writer leaves that thread to the store."""
    writer = InboxWriter(store.database_url, thread=store.write_thread())
    await writer.start()
    threads: list[str] = []

    def noted(conn: Any) -> None:
        threads.append(threading.current_thread().name)
        conn.execute(text("SELECT 1"))

    when = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    try:
        stored = await asyncio.gather(*(writer.add(row(i, when)) for i in range(60)),
                                      store.write(noted), store.write(noted))
        assert stored[:60] == [True] * 60
        names = {t.name for t in threading.enumerate()}
    finally:
        await writer.close()
    if store.is_postgres:
        assert store.write_thread() is None  # row locks: the sink keeps its own thread, writes on the engine
        assert any(n.startswith("inbox-writer") for n in names)
    else:
        assert threads and all(n.startswith("sqlite-writer") for n in threads)
        assert not any(n.startswith("inbox-writer") for n in names), names
    await store.write(noted)  # the store's writer goes on after the inbox writer closed
    async with store.connect() as conn:
        assert (await conn.execute(select(inbox_items.c.id))).all().__len__() == 60
