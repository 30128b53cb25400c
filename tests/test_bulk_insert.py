"""bulk_insert.insert_new: rows written with the driver directly must be stored exactly as SQLAlchemy's Core
insert stores them, on SQLite and PostgreSQL, report only the keys that were new, and be seen by doc_cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Connection

from fedibridge.bulk_insert import SQLITE_MAX_PARAMETERS, insert_new
from fedibridge.doc_cache import ALL, written_table
from fedibridge.store import Store, insert_ignore
from fedibridge.tables import articles, comments

WHEN = datetime(2026, 12, 4, 9, 30, 15, 123456, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))


@pytest.fixture
async def store(database_url: str) -> Any:
    s = await Store.open(database_url)
    async with s.begin() as conn:
        await conn.execute(insert(articles).values(
            id=1, slug="billet", title="Billet", url="https://blog.example/billet", content="<p>x</p>", tags=[],
            published=WHEN, content_hash="0" * 64, created_at=WHEN))
    yield s
    await s.close()


def comment(i: int, **changes: Any) -> dict[str, Any]:
    """A comment row as inbox_batch builds it: accents, « guillemets », emoji, None, JSON lists, aware dates."""
    row = dict(
        article_id=1, ap_id=f"https://mastodon.example/users/zoé/statuses/{i}", in_reply_to="https://blog.example/billet",
        parent_id=None, author_id="https://mastodon.example/users/zoé", author_name="Zoé 🌻",
        author_handle="@zoé@mastodon.example", author_url=None, author_avatar=None,
        author_emojis=[[":blob:", "https://mastodon.example/blob.png"]],
        content_html=f"<p>« Réponse » n°{i} ☕ — l'été</p>", summary=None, sensitive=i % 2 == 0, language="fr",
        url=None, attachments=[{"url": "https://mastodon.example/a.jpg", "media_type": "image/jpeg", "alt": "Été"}],
        mentions=[], hashtags=["été"], published=WHEN.astimezone(PARIS), updated=None, status="approved",
        visibility="public", deleted=False, edited=i % 3 == 0, created_at=WHEN)
    row.update(changes)
    return row


async def _rows(store: Store) -> list[dict[str, Any]]:
    async with store.connect() as conn:
        found = (await conn.execute(select(comments).order_by(comments.c.ap_id))).mappings().all()
    return [{k: v for k, v in r.items() if k != "id"} for r in found]


async def _raw(store: Store) -> list[tuple[Any, ...]]:
    """The stored text of the converted columns, as the database holds it (dates' spelling included)."""
    async with store.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(
            "SELECT ap_id, published, created_at, author_emojis, attachments, hashtags, sensitive, edited "
            "FROM comments ORDER BY ap_id"))]


async def test_rows_are_stored_as_the_core_insert_stores_them(store: Store) -> None:
    rows = [comment(i) for i in range(5)]

    def core(conn: Connection) -> None:
        conn.execute(insert_ignore(conn, comments), rows)

    await store.write(core)
    by_core, raw_core = await _rows(store), await _raw(store)
    assert len(by_core) == 5
    async with store.begin() as conn:
        await conn.execute(delete(comments))
    new = await store.write(insert_new, comments, "ap_id", rows)
    assert new == {r["ap_id"] for r in rows}
    assert await _rows(store) == by_core
    assert await _raw(store) == raw_core
    assert by_core[0]["published"] == WHEN  # an aware date in Paris time, stored and read back as UTC
    assert by_core[0]["author_name"] == "Zoé 🌻"


async def test_only_new_keys_are_returned_and_conflicts_change_nothing(store: Store) -> None:
    first = await store.write(insert_new, comments, "ap_id", [comment(1), comment(2)])
    assert first == {comment(1)["ap_id"], comment(2)["ap_id"]}
    again = await store.write(insert_new, comments, "ap_id", [comment(2, status="pending"), comment(3)])
    assert again == {comment(3)["ap_id"]}
    stored = {r["ap_id"]: r["status"] for r in await _rows(store)}
    assert stored[comment(2)["ap_id"]] == "approved"  # the first insert's row, untouched
    assert await store.write(insert_new, comments, "ap_id", []) == set()


async def test_more_rows_than_one_sqlite_statement_can_bind(store: Store) -> None:
    n = SQLITE_MAX_PARAMETERS // len(comment(0)) + 200  # two chunks on SQLite; one statement on PostgreSQL
    new = await store.write(insert_new, comments, "ap_id", [comment(i) for i in range(n)])
    assert len(new) == n
    async with store.connect() as conn:
        assert (await conn.execute(select(comments.c.id))).all().__len__() == n


async def test_rows_with_different_columns_are_refused(store: Store) -> None:
    odd = comment(2)
    del odd["summary"]
    with pytest.raises(ValueError, match="same columns"):
        await store.write(insert_new, comments, "ap_id", [comment(1), odd])
    assert await _rows(store) == []


def test_doc_cache_names_the_table_of_driver_sql() -> None:
    assert written_table('INSERT INTO "comments" ("a") VALUES (?)') == "comments"
    assert written_table("insert into comments (a) SELECT * FROM unnest($1::text[])") == "comments"
    assert written_table("UPDATE followers SET x = 1") == "followers"
    assert written_table("  DELETE FROM reactions WHERE id = 1") == "reactions"
    assert written_table("BEGIN IMMEDIATE") is None
    assert written_table("SELECT 1") is None
    assert written_table("WITH x AS (DELETE FROM comments RETURNING id) SELECT * FROM x") == ALL


async def test_an_over_long_value_is_refused_as_the_core_insert_refuses_it(store: Store) -> None:
    """PostgreSQL checks varchar(35) on insert; the arrays' casts must not cut the value short instead."""
    if store.is_postgres:
        with pytest.raises(Exception, match="too long"):
            await store.write(insert_new, comments, "ap_id", [comment(1, language="x" * 36)])
        assert await _rows(store) == []
    else:  # SQLite does not enforce lengths: stored whole, as the Core insert stores it
        await store.write(insert_new, comments, "ap_id", [comment(1, language="x" * 36)])
        assert (await _rows(store))[0]["language"] == "x" * 36
