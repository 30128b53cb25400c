"""Comment records, threading, and the inbox handlers called as dispatch.py calls them (real app, real remotes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from fedibridge import comment_views
from fedibridge import comments as store_comments
from fedibridge.models import Author, Comment
from fedibridge.store import Store
from fedibridge.tables import comments, reactions

from .conftest import BridgeFactory
from .remote import RemoteInstance
from .test_comment_flows import publish

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make(cid: int, parent: int | None = None, minutes: int = 0, deleted: bool = False) -> Comment:
    return Comment(id=cid, article="a", ap_id=f"https://r.example/n/{cid}", in_reply_to="x", parent_id=parent,
                   author=Author(id="https://r.example/users/u", name="Ünï"),
                   content_html="" if deleted else "<p>x</p>",
                   published=T0 + timedelta(minutes=minutes), deleted=deleted)


def test_threaded_nests_in_date_order() -> None:
    tree = comment_views.threaded([make(3, 1, 5), make(1, None, 0), make(2, None, 1), make(4, 3, 6),
                                   make(5, 99, 2)])
    assert [c.id for c in tree] == [1, 2, 5]  # 5's parent is not listed: it goes top level
    assert [c.id for c in tree[0].replies] == [3]
    assert [c.id for c in tree[0].replies[0].replies] == [4]


def test_deleted_kept_only_as_placeholders() -> None:
    tree = comment_views.prune_deleted(comment_views.threaded(
        [make(1, deleted=True), make(2, 1, 1), make(3, None, 2, deleted=True), make(4, None, 3)]))
    assert [c.id for c in tree] == [1, 4]
    assert [c.id for c in tree[0].replies] == [2]


def test_comment_json_shapes() -> None:
    c = make(1)
    pub = comment_views.comment_json(c)
    assert pub["author"]["name"] == "Ünï" and "status" not in pub and pub["replies"] == []
    admin = comment_views.comment_json(c, admin=True, nested=False)
    assert admin["status"] == "pending" and admin["article"] == "a" and "replies" not in admin
    gone = comment_views.comment_json(make(2, deleted=True))
    assert gone["author"]["name"] is None and gone["author"]["id"] == ""


async def test_handlers_directly(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto:
        bridge = await make_bridge(moderation="open")
        svc = bridge.services
        article_id = await publish(bridge)
        alice = masto.add_actor("alice", name="Alice")
        note = masto.note(alice, "<p>Salut</p>", article_id)
        create = masto.create(alice, note)
        h = store_comments.HANDLERS
        assert await h["Create"](svc, create, alice.id) == "comment_approved"
        assert await h["Create"](svc, create, alice.id) == "comment_approved"  # idempotent
        # Not a reply to us, an actor Create, a note without content: none of our business.
        assert await h["Create"](svc, masto.create(alice, masto.note(alice, "<p>x</p>", None)), alice.id) is None
        elsewhere = f"{masto.base}/statuses/404"  # a parent its own server doesn't know
        assert await h["Create"](svc, masto.create(alice, masto.note(alice, "<p>x</p>", elsewhere)), alice.id) is None
        # Create by reference: fetched from the sender's origin.
        by_ref = masto.note(alice, "<p>par référence</p>", article_id)
        masto.objects[by_ref["id"]] = by_ref
        assert await h["Create"](svc, {**create, "id": by_ref["id"] + "/a", "object": by_ref["id"]},
                                 alice.id) == "comment_approved"
        # Undo of a Follow is the followers module's business.
        assert await h["Undo"](svc, masto.undo(alice, masto.follow(alice, bridge.actor)), alice.id) is None
        # Like of something that is not ours, Delete of an unknown object.
        assert await h["Like"](svc, masto.like(alice, elsewhere), alice.id) is None
        assert await h["Delete"](svc, masto.delete(alice, "https://r.example/unknown"), alice.id) is None
        # Pleroma emoji reactions count as likes; the same Like twice counts once.
        react = {**masto.like(alice, article_id), "type": "EmojiReact", "content": "🔥"}
        assert await h["EmojiReact"](svc, react, alice.id) == "like_added"
        assert await h["EmojiReact"](svc, react, alice.id) == "like_duplicate"
        # A Like whose id is on another server than its sender is refused.
        assert await h["Like"](svc, {**react, "id": "https://other.example/likes/1"}, alice.id) == "reaction_refused"

        # Profile Update: the comment's author name follows (fetched from origin, not the embedded copy).
        alice.doc["name"] = "Alice Dupont"
        update = masto.actor_update(alice)
        update["object"]["name"] = "Embedded lie"
        assert await h["Update"](svc, update, alice.id) == "comment_authors_refreshed"
        async with svc.store.connect() as conn:
            names = {r.author_name for r in await conn.execute(select(comments.c.author_name))}
        assert names == {"Alice Dupont"}


async def test_block_rejects_existing_comments_and_reactions(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance() as masto, RemoteInstance(host_ip="127.0.0.2") as spam:
        bridge = await make_bridge(moderation="open")
        svc = bridge.services
        article_id = await publish(bridge)
        alice = masto.add_actor("alice")
        troll = spam.add_actor("troll")
        h = store_comments.HANDLERS
        for who, inst in ((alice, masto), (troll, spam)):
            await h["Create"](svc, inst.create(who, inst.note(who, "<p>hello</p>", article_id)), who.id)
            await h["Like"](svc, inst.like(who, article_id), who.id)
        async with svc.store.begin() as conn:
            from fedibridge import moderation
            await moderation.add_block(conn, "domain", "127.0.0.2", datetime.now(UTC))
            assert await store_comments.reject_blocked(conn, bridge.settings) == 1
        async with svc.store.connect() as conn:
            statuses = dict((await conn.execute(select(comments.c.author_id, comments.c.status))).all())
            likers = [r.actor_id for r in await conn.execute(select(reactions.c.actor_id))]
        assert statuses == {alice.id: "approved", troll.id: "rejected"}
        assert likers == [alice.id]
        # And new activities from the blocked domain are refused by the handlers too.
        n = spam.note(troll, "<p>again</p>", article_id)
        assert await h["Create"](svc, spam.create(troll, n), troll.id) == "comment_refused"
        assert await h["Like"](svc, spam.like(troll, article_id), troll.id) == "reaction_refused"


def test_cli_blocks_and_comments(tmp_path: Path) -> None:
    """The moderation CLI against a real SQLite file, as a site owner runs it."""
    env = {**os.environ, "FEDIBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
           "FEDIBRIDGE_KEYS_DIR": str(tmp_path / "keys"), "FEDIBRIDGE_CONFIG": ""}

    async def as_serve_leaves_it() -> None:  # the CLI works on an existing database, it never creates one
        await (await Store.open(env["FEDIBRIDGE_DATABASE_URL"])).close()

    asyncio.run(as_serve_leaves_it())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fedibridge", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    assert "blocked domain spam.example" in run("block", "Spam.Example").stdout
    assert "blocked actor https://m.example/users/troll" in run("block", "https://m.example/users/troll").stdout
    listing = run("blocks").stdout
    assert "spam.example" in listing and "https://m.example/users/troll" in listing
    assert run("comments").stdout.strip() == "no comments"
    missing = run("comments", "approve", "42")
    assert missing.returncode == 2 and "no comment with id 42" in missing.stderr
    assert run("unblock", "spam.example").returncode == 0
    assert "spam.example" not in run("blocks").stdout
    assert run("unblock", "https://m.example/users/troll").returncode == 0
    assert run("blocks").stdout.strip() == "no blocks"
