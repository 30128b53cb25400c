"""Storage contract: the same behaviour on SQLite and PostgreSQL (database_url is parametrized)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from fedibridge.enqueue import enqueue_to_followers, follower_inboxes
from fedibridge.store import WAL_SIZE_LIMIT, Store, head_revision, insert_ignore, utcnow
from fedibridge.tables import activities, deliveries, followers, inbox_items


async def test_fresh_database_is_migrated_to_head(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        assert await store.current_revision() == head_revision()
    finally:
        await store.close()


async def test_migrations_build_the_schema_tables_py_declares(database_url: str) -> None:
    """Every column and index of tables.py comes from a migration, and nothing else does (Alembic's own diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from fedibridge.tables import metadata

    store = await Store.open(database_url)
    try:
        async with store.connect() as conn:
            diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
        assert diff == []
    finally:
        await store.close()


async def test_sqlite_wal_is_cut_back_after_checkpoints(tmp_path: Path) -> None:
    """journal_size_limit on every connection: a burst (or a full disk) must not leave a WAL holding the space."""
    store = await Store.open(f"sqlite:///{tmp_path}/wal.db")
    try:
        async with store.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_size_limit"))).scalar_one() == WAL_SIZE_LIMIT
    finally:
        await store.close()


async def test_existing_database_keeps_its_rows_across_restarts(database_url: str) -> None:
    store = await Store.open(database_url)
    now = utcnow()
    async with store.begin() as conn:
        await conn.execute(followers.insert().values(actor_id="https://m.example/users/élise", inbox="https://m.example/i",
                                                     handle="@élise@m.example", since=now))
    await store.close()
    store = await Store.open(database_url)  # second start: migrations are a no-op, data intact
    try:
        async with store.connect() as conn:
            row = (await conn.execute(select(followers))).one()
        assert row.handle == "@élise@m.example"
        assert row.since.tzinfo is not None and abs(row.since - now) < timedelta(seconds=1)
    finally:
        await store.close()


async def test_concurrent_starts_do_not_race_on_migrations(database_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(database_url) for _ in range(3)))
    try:
        assert {await s.current_revision() for s in stores} == {head_revision()}
    finally:
        for s in stores:
            await s.close()


async def test_datetimes_and_json_round_trip(database_url: str) -> None:
    store = await Store.open(database_url)
    payload = {"type": "Create", "content": "« Été » 🌞", "to": ["https://www.w3.org/ns/activitystreams#Public"]}
    when = datetime(2026, 7, 14, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    try:
        async with store.begin() as conn:
            await conn.execute(activities.insert().values(key="k1", type="Create", payload=payload, published=when))
        async with store.connect() as conn:
            row = (await conn.execute(select(activities))).one()
        assert row.payload == payload
        assert row.published == when and row.published.utcoffset() == timedelta(0)
    finally:
        await store.close()


async def test_insert_ignore_dedupes(database_url: str) -> None:
    store = await Store.open(database_url)
    now = utcnow()
    try:
        for _ in range(2):
            async with store.begin() as conn:
                await conn.execute(insert_ignore(conn, inbox_items).values(
                    ap_id="https://m.example/a/1", type="Like", actor="https://m.example/users/a",
                    payload={}, received_at=now, next_attempt_at=now))
        async with store.connect() as conn:
            assert len((await conn.execute(select(inbox_items))).all()) == 1
    finally:
        await store.close()


async def test_enqueue_groups_followers_by_shared_inbox(database_url: str) -> None:
    store = await Store.open(database_url)
    now = utcnow()
    try:
        async with store.begin() as conn:
            await conn.execute(followers.insert(), [
                {"actor_id": f"https://a.example/users/{i}", "inbox": f"https://a.example/users/{i}/inbox",
                 "shared_inbox": "https://a.example/inbox", "since": now} for i in range(5)
            ] + [{"actor_id": "https://b.example/u/solo", "inbox": "https://b.example/u/solo/inbox",
                  "shared_inbox": None, "since": now},
                 {"actor_id": "https://c.example/u/x", "inbox": "https://c.example/u/x/inbox",  # an empty one
                  "shared_inbox": "", "since": now}])
            res = await conn.execute(activities.insert().values(key="k", type="Create", payload={}, published=now))
            activity_id = res.inserted_primary_key[0]
            assert await follower_inboxes(conn) == ["https://a.example/inbox", "https://b.example/u/solo/inbox",
                                                    "https://c.example/u/x/inbox"]
            assert await enqueue_to_followers(conn, activity_id, now) == 3
            await enqueue_to_followers(conn, activity_id, now)  # idempotent
        async with store.connect() as conn:
            rows = (await conn.execute(select(deliveries).order_by(deliveries.c.inbox))).all()
        assert [(r.inbox, r.host, r.state) for r in rows] == [
            ("https://a.example/inbox", "a.example", "pending"),
            ("https://b.example/u/solo/inbox", "b.example", "pending"),
            ("https://c.example/u/x/inbox", "c.example", "pending"),
        ]
    finally:
        await store.close()


async def test_lease_is_exclusive_until_it_expires(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        assert await store.acquire_lease("feed-poll", "w1", timedelta(seconds=60))
        assert not await store.acquire_lease("feed-poll", "w2", timedelta(seconds=60))
        assert await store.acquire_lease("feed-poll", "w1", timedelta(seconds=60))  # renewal
        assert await store.acquire_lease("other", "w2", timedelta(seconds=60))
        assert await store.acquire_lease("gone", "w1", timedelta(seconds=-1))  # already expired
        assert await store.acquire_lease("gone", "w2", timedelta(seconds=60))
    finally:
        await store.close()


async def test_upgrade_from_0001_keeps_rows(database_url: str) -> None:
    """An install from before 0002 upgrades on start: its rows stay, the new columns are unknown (NULL)."""
    from alembic import command

    from fedibridge.store import _alembic_config
    from fedibridge.tables import articles

    store = await Store.open(database_url, migrate=False)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0001"))
        assert await store.current_revision() == "0001"
        now = utcnow()
        async with store.begin() as conn:
            await conn.execute(text(
                "INSERT INTO articles (slug, title, url, content, tags, image, sensitive, published, content_hash,"
                " source, created_at) VALUES ('ete', 'L’été', 'https://blog.example/ete/', '<p>é</p>', '[]',"
                " 'https://blog.example/seine.jpg', false, :now, 'h', 'api', :now)"), {"now": now.replace(tzinfo=None)})
        await store.migrate()
        assert await store.current_revision() == head_revision()
        async with store.connect() as conn:
            row = (await conn.execute(select(articles))).one()
            assert (row.title, row.image, row.image_length) == ("L’été", "https://blog.example/seine.jpg", None)
            assert row.pinned_at is None  # 0003: not pinned
            assert "last_attempt_at" in (await conn.execute(select(deliveries))).keys()
    finally:
        await store.close()


async def test_0003_downgrades_and_upgrades_again(database_url: str) -> None:
    """0003 (pins, quotes, actor_state) can be taken back and re-applied, keeping the articles."""
    from alembic import command

    from fedibridge.store import _alembic_config
    from fedibridge.tables import actor_state, articles, quotes

    store = await Store.open(database_url)
    try:
        now = utcnow()
        async with store.begin() as conn:
            await conn.execute(articles.insert().values(
                slug="ete", title="L’été", url="https://blog.example/ete/", content="<p>é</p>", tags=[],
                sensitive=False, published=now, content_hash="h", source="api", created_at=now, pinned_at=now))
            await conn.execute(actor_state.insert().values(name="moved_to", value={"target": "x"}, updated_at=now))
        async with store.engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), "0002"))
        assert await store.current_revision() == "0002"
        await store.migrate()
        async with store.connect() as conn:
            row = (await conn.execute(select(articles))).one()
            assert (row.slug, row.pinned_at) == ("ete", None)
            assert (await conn.execute(select(quotes))).all() == []
            assert (await conn.execute(select(actor_state))).all() == []
    finally:
        await store.close()


def _add_follower(conn: Connection, actor: str, since: datetime) -> int:
    result = conn.execute(followers.insert().values(actor_id=actor, inbox=f"{actor}/inbox", handle="@élise@m.example",
                                                    since=since))
    return int(result.inserted_primary_key[0])


async def test_a_write_transaction_runs_whole_off_the_event_loop(database_url: str) -> None:
    """Store.write: one transaction from a plain function, committed on both backends; on SQLite it runs whole on
    the writer thread, so it commits (and lets SQLite's write lock go) even while the event loop is busy. On the
    async engine each statement waited for a loop turn, and the lock was held across them (13 ms median, 75 ms
    p90 for a two-statement claim during a burst)."""
    store = await Store.open(database_url)
    try:
        actor = "https://m.example/users/élise"
        writing = asyncio.ensure_future(store.write(_add_follower, actor, utcnow()))
        await asyncio.sleep(0)  # the task has started its transaction
        if store.writer is not None:  # SQLite: the loop stays blocked here, and the row is committed meanwhile
            path = store.writer.engine.url.database
            deadline = time.monotonic() + 5
            seen = 0
            while not seen and time.monotonic() < deadline:
                with closing(sqlite3.connect(path)) as other:
                    seen = other.execute("SELECT count(*) FROM followers").fetchone()[0]
                time.sleep(0.01)  # noqa: ASYNC251 - the point: the event loop does not run
            assert seen == 1, "the write did not commit while the event loop was blocked"
        row_id = await writing
        async with store.connect() as conn:
            assert (await conn.execute(select(followers.c.id, followers.c.actor_id))).all() == [(row_id, actor)]
        with pytest.raises(IntegrityError):  # a failing transaction rolls back whole and raises to the caller
            await store.write(_add_follower, actor, utcnow())
        assert await store.write(_add_follower, actor + "2", utcnow()) > row_id  # the writer goes on
    finally:
        await store.close()
