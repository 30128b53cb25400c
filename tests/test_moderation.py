"""Moderation rules, blocklists and the Akismet-compatible spam check (played by a loopback server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from fedibridge import moderation
from fedibridge.config import Settings
from fedibridge.errors import BadRequest
from fedibridge.http_client import GuardedClient
from fedibridge.store import utcnow
from fedibridge.tables import articles, blocks, comments

from .conftest import Bridge, free_port
from .loopback import LoopbackServer

WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FakeAkismet(LoopbackServer):
    """A loopback comment-check endpoint: records every form, answers what the test says."""

    path = "/1.1/comment-check"

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self.answer: tuple[int, str, dict[str, str]] = (200, "false", {})

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.text()
        self.forms.append({k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()})
        status, body, headers = self.answer
        return web.Response(status=status, text=body, headers=headers)


def test_domain_block_covers_subdomains_only() -> None:
    assert moderation.blocked_by("https://m.spam.example/users/x", {"spam.example"}, set())
    assert moderation.blocked_by("https://ok.example/users/bad", set(), {"https://ok.example/users/bad"})
    assert not moderation.blocked_by("https://ok.example/users/good", {"spam.example"},
                                      {"https://ok.example/users/bad"})


def test_normalise_block() -> None:
    assert moderation.normalise_block("domain", "https://Spam.Example:8443/x") == ("domain", "spam.example")
    assert moderation.normalise_block("domain", "Spam.Example") == ("domain", "spam.example")
    assert moderation.normalise_block("domain", "EVIL.example.") == ("domain", "evil.example")
    assert moderation.normalise_block("domain", "bücher.example") == ("domain", "xn--bcher-kva.example")
    assert moderation.blocked_by("https://Social.EVIL.example./users/x", {"evil.example"}, set())
    assert not moderation.blocked_by("http://10.0.0.1/users/x", {"1"}, set())  # an IP has no parent domains
    assert moderation.normalise_block("actor", "https://a.example/users/x") == ("actor", "https://a.example/users/x")
    assert moderation.guess_kind("https://a.example/users/x") == "actor"
    assert moderation.guess_kind("a.example") == "domain"
    for kind, value in (("actor", "not a url"), ("domain", "a b"), ("nope", "x.example")):
        with pytest.raises(BadRequest):
            moderation.normalise_block(kind, value)


def test_parse_verdict() -> None:
    assert moderation.parse_verdict(200, b"true") == "spam"
    assert moderation.parse_verdict(200, b"false") == "ham"
    assert moderation.parse_verdict(200, b"false", {"x-akismet-pro-tip": "discard"}) == "spam"
    assert moderation.parse_verdict(200, b"invalid") == "unknown"  # Akismet's answer to a bad key
    assert moderation.parse_verdict(503, b"false") == "unknown"


def test_spam_form_fields() -> None:
    settings = Settings(blog_url="https://blog.example", spam_check_url="https://{key}.rest.akismet.com/1.1/comment-check",
                        spam_check_key="k123", language="fr")
    q = moderation.SpamQuery("Zoé", "https://m.example/@zoe", "<p>Très « bien » 🎉</p>", WHEN,
                             "https://blog.example/post/")
    form = moderation.spam_form(settings, q)
    assert form["api_key"] == form["key"] == "k123"
    assert form["comment_type"] == "reply"
    assert form["comment_content"] == "Très « bien » 🎉"
    assert form["blog"] == "https://blog.example" and form["blog_lang"] == "fr" and form["blog_charset"] == "UTF-8"
    assert form["permalink"] == "https://blog.example/post/"
    assert form["comment_date_gmt"].startswith("2024-05-01T12:00")
    assert moderation.spam_endpoint(settings) == "https://k123.rest.akismet.com/1.1/comment-check"


async def test_spam_check_against_loopback_server() -> None:
    async with FakeAkismet() as akismet:
        settings = Settings(spam_check_url=akismet.url, spam_check_key="sekret", allow_private_addresses=True)
        q = moderation.SpamQuery("Bob", "https://b.example/@bob", "<p>Achetez des montres</p>", WHEN,
                                 "http://blog.test/a/")
        async with GuardedClient(user_agent="t", signer=None, allow_private=True, timeout=2) as client:
            akismet.answer = (200, "true", {})
            assert await moderation.spam_check(client, settings, q) == "spam"
            akismet.answer = (200, "false", {})
            assert await moderation.spam_check(client, settings, q) == "ham"
            akismet.answer = (500, "oops", {})
            assert await moderation.spam_check(client, settings, q) == "unknown"
            assert akismet.forms[0]["comment_content"] == "Achetez des montres"
            assert akismet.forms[0]["api_key"] == "sekret"
            down = Settings(spam_check_url=f"http://127.0.0.1:{free_port()}/x", allow_private_addresses=True)
            assert await moderation.spam_check(client, down, q) == "unknown"
            assert await moderation.spam_check(client, Settings(), q) == "ham"  # no check configured


async def _comment(bridge: Bridge, author: str, status: str, n: int) -> None:
    async with bridge.store.begin() as conn:
        art = (await conn.execute(articles.select().limit(1))).first()
        if art is None:
            now = utcnow()
            res = await conn.execute(articles.insert().values(
                slug="a", title="A", url="http://blog.test/a/", content="<p>x</p>", tags=[], published=now,
                content_hash="x", source="api", created_at=now, sensitive=False))
            art_id = res.inserted_primary_key[0]
        else:
            art_id = art.id
        await conn.execute(comments.insert().values(
            article_id=art_id, ap_id=f"https://r.example/notes/{n}", in_reply_to="x", author_id=author,
            content_html="<p>hi</p>", published=utcnow(), status=status, visibility="public",
            sensitive=False, deleted=False, edited=False, created_at=utcnow()))


async def test_modes(bridge: Bridge) -> None:
    alice = "https://r.example/users/alice"
    known = bridge.settings
    open_ = known.replace(moderation="open")
    hold = known.replace(moderation="hold")
    async with bridge.store.connect() as conn:
        assert await moderation.initial_status(conn, known, alice, "ham") == "pending"  # first comment waits
        assert await moderation.initial_status(conn, open_, alice, "ham") == "approved"
        assert await moderation.initial_status(conn, hold, alice, "ham") == "pending"
        assert await moderation.initial_status(conn, open_, alice, "spam") == "rejected"
        assert await moderation.initial_status(conn, open_, alice, "unknown") == "pending"  # never auto-approve
    await _comment(bridge, alice, "pending", 1)
    async with bridge.store.connect() as conn:
        assert await moderation.initial_status(conn, known, alice, "ham") == "pending"  # pending is not approved
    await _comment(bridge, alice, "approved", 2)
    async with bridge.store.connect() as conn:
        assert await moderation.initial_status(conn, known, alice, "ham") == "approved"
        assert await moderation.initial_status(conn, hold, alice, "ham") == "pending"
        assert await moderation.initial_status(conn, known, "https://r.example/users/bob", "ham") == "pending"


async def test_known_authors_of_a_batch(bridge: Bridge) -> None:
    """Exactly the authors with an approved comment, whatever else they wrote, with accented and quoted ids,
    repeated ids and more authors than one statement takes (moderation.KNOWN_CHUNK)."""
    base = "https://r.example/users/"
    known = [f"{base}léa", f"{base}o'brien", f"{base}many"]
    for n, (author, status) in enumerate([
        (known[0], "approved"), (known[1], "pending"), (known[1], "approved"),
        (f"{base}pending-only", "pending"), (f"{base}rejected-only", "rejected"),
        *((known[2], "pending") for _ in range(30)), (known[2], "approved"),
    ]):
        await _comment(bridge, author, status, n)
    strangers = [f"{base}stranger{i}" for i in range(moderation.KNOWN_CHUNK + 20)]
    asked = strangers[:300] + known + [known[0], f"{base}pending-only", f"{base}rejected-only"] + strangers[300:]
    async with bridge.store.connect() as conn:
        assert await moderation.known_authors(conn, asked) == set(known)
        assert await moderation.known_authors(conn, []) == set()
        assert await moderation.known_authors(conn, [f"{base}pending-only"]) == set()


async def test_blocks_table_and_settings(bridge: Bridge) -> None:
    settings: Any = bridge.settings.replace(blocked_domains=["conf.example"])
    async with bridge.store.begin() as conn:
        assert (await moderation.add_block(conn, "domain", "Spam.Example", utcnow()))[2] is True
        assert (await moderation.add_block(conn, "domain", "spam.example", utcnow()))[2] is False
        await moderation.add_block(conn, "actor", "https://ok.example/users/troll", utcnow())
    async with bridge.store.connect() as conn:
        assert await moderation.is_blocked(conn, settings, "https://x.spam.example/users/a")
        assert await moderation.is_blocked(conn, settings, "https://conf.example/users/a")
        assert await moderation.is_blocked(conn, settings, "https://ok.example/users/troll")
        assert not await moderation.is_blocked(conn, settings, "https://ok.example/users/nice")
        assert [b["value"] for b in await moderation.list_blocks(conn)] == [
            "https://ok.example/users/troll", "spam.example"]
    async with bridge.store.begin() as conn:
        assert await moderation.remove_block(conn, "domain", "spam.example")
        assert not await moderation.remove_block(conn, "domain", "spam.example")
    async with bridge.store.connect() as conn:
        assert not await moderation.is_blocked(conn, settings, "https://x.spam.example/users/a")


async def test_domain_blocks_hold_however_the_host_is_spelled(make_bridge: Any) -> None:
    """Blocks from the API, the configuration and old un-normalised rows all stop the spellings of their host
    at the real inbox: 403 (blocked) comes before the signature check, whose failure would be a 401."""
    bridge = await make_bridge(blocked_domains=["BÜCHER.example."])
    assert bridge.settings.blocked_domains == ["xn--bcher-kva.example"]
    async with bridge.http.post(f"{bridge.url}/api/blocks", json={"kind": "domain", "value": "EVIL.Example."},
                                headers=bridge.admin) as resp:
        assert resp.status in (200, 201), await resp.text()
    async with bridge.store.begin() as conn:  # a row stored before blocks were normalised on insert
        await conn.execute(blocks.insert().values(kind="domain", value="Old.Example.", created_at=utcnow()))
    async with bridge.http.get(f"{bridge.url}/api/blocks", headers=bridge.admin) as resp:
        values = {b["value"] for b in (await resp.json())["blocks"]}
    assert {"evil.example", "xn--bcher-kva.example"} <= values

    async def inbox_status(actor: str) -> int:
        like = {"@context": "https://www.w3.org/ns/activitystreams", "id": f"{actor}#likes/1", "type": "Like",
                "actor": actor, "object": f"{bridge.url}/articles/x"}
        async with bridge.http.post(f"{bridge.url}/inbox", data=json.dumps(like, ensure_ascii=False).encode(),
                                    headers={"Content-Type": "application/activity+json"}) as resp:
            return resp.status

    for actor in ("https://evil.example/users/m", "https://EVIL.EXAMPLE./users/m", "https://social.Evil.example/u/m",
                  "https://xn--bcher-kva.example/users/b", "https://www.bücher.example/users/b",
                  "https://WWW.XN--BCHER-KVA.EXAMPLE./users/b", "https://old.example/users/o",
                  "https://a.old.example./users/o"):
        assert await inbox_status(actor) == 403, actor
    for actor in ("https://notevil.example/users/m", "https://evil.example.org/users/m", "https://bucher.example/u"):
        assert await inbox_status(actor) == 401, actor  # not blocked: refused later, for being unsigned
    async with bridge.http.delete(f"{bridge.url}/api/blocks", json={"kind": "domain", "value": "OLD.example"},
                                  headers=bridge.admin) as resp:
        assert resp.status == 200, await resp.text()  # removes the row however it was spelled
    async with bridge.store.connect() as conn:
        assert not await moderation.is_blocked(conn, bridge.settings, "https://old.example/users/o")


async def _statuses(bridge: Bridge) -> dict[str, tuple[str, str, str]]:
    """ap_id → (status, content, author name) as the admin API shows them."""
    async with bridge.http.get(f"{bridge.url}/api/comments?status=all", headers=bridge.admin) as resp:
        assert resp.status == 200
        return {c["ap_id"]: (c["status"], c["content_html"], c["author"]["name"])
                for c in (await resp.json())["comments"]}


async def _approve(bridge: Bridge, ap_id: str) -> None:
    async with bridge.http.get(f"{bridge.url}/api/comments?status=all", headers=bridge.admin) as resp:
        [cid] = [c["id"] for c in (await resp.json())["comments"] if c["ap_id"] == ap_id]
    async with bridge.http.post(f"{bridge.url}/api/comments/{cid}/approve", headers=bridge.admin) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("mode", ["hold", "known"])
async def test_edits_and_renames_in_hold_mode_wait_for_the_owner_again(make_bridge: Any, mode: str) -> None:
    from .remote import RemoteInstance
    from .test_comment_flows import deliver, public, publish

    async with RemoteInstance() as masto:
        bridge = await make_bridge(moderation=mode)
        article_id = await publish(bridge)
        alice = masto.add_actor("alice", name="Alice")
        note = masto.note(alice, "<p>Joli billet</p>", article_id)
        await deliver(bridge, masto, alice, masto.create(alice, note))
        assert (await _statuses(bridge))[note["id"]][0] == "pending"
        await _approve(bridge, note["id"])

        # An Update that changes nothing readers see (Mastodon re-sends on poll counts, for one) changes nothing.
        await deliver(bridge, masto, alice, masto.update(alice, note))
        assert (await _statuses(bridge))[note["id"]][0] == "approved"

        # The text changes after approval: in hold mode the owner has not seen it, so it waits again.
        edited = {**note, "content": "<p>Achetez sur spam.example !</p>",
                  "contentMap": {"fr": "<p>Achetez sur spam.example !</p>"}}
        await deliver(bridge, masto, alice, masto.update(alice, edited))
        status, content, _ = (await _statuses(bridge))[note["id"]]
        assert content == "<p>Achetez sur spam.example !</p>"
        shown = [c["ap_id"] for c in (await public(bridge))["comments"]]
        if mode == "hold":
            assert status == "pending" and shown == []
            await _approve(bridge, note["id"])
        else:
            assert status == "approved" and shown == [note["id"]]  # known mode trusts a known author's edits

        # The display name changes (Update(Person), fetched again from its origin): new text next to the comment.
        alice.doc["name"] = "Achetez sur spam.example"
        await deliver(bridge, masto, alice, masto.actor_update(alice))
        status, _, name = (await _statuses(bridge))[note["id"]]
        assert name == "Achetez sur spam.example"
        assert status == ("pending" if mode == "hold" else "approved")
