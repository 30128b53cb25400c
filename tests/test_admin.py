"""The admin page over plain HTTP (no JavaScript): sessions, CSRF, every action as a form post, the
listings, FR/EN, headers. Comments arrive through the real signed inbox from a loopback Mastodon."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from yarl import URL

from fedibridge.admin_passphrase import passphrase
from fedibridge.tables import articles, blocks, comments, deliveries, followers
from fedibridge.web.admin.i18n import choose
from fedibridge.web.admin.session import Sessions, SignInLimiter

from .admin_helpers import AdminClient, admin_comments, publish, signed_reply
from .conftest import Bridge, BridgeFactory, wait_for
from .remote import RemoteInstance

PAGES = ("/comments", "/articles", "/followers", "/blocks")


def _has_row(page: str, comment_id: int) -> bool:
    return f'id="c{comment_id}"' in page


# -- pure parts ----------------------------------------------------------------------------------------


def test_session_cookie_is_signed_expires_and_is_revocable() -> None:
    s = Sessions("token-one")
    value, session = s.issue(1000.0)
    assert s.verify(value, 1001.0) == session
    assert s.verify(value, session.expires + 1) is None  # expired
    sid, expires, sig = value.split(".")
    assert s.verify(f"{sid}.{int(expires) + 3600}.{sig}", 1001.0) is None  # lifetime extended by hand
    assert s.verify(value[:-2] + ("AA" if not value.endswith("AA") else "BB"), 1001.0) is None
    assert Sessions("token-two").verify(value, 1001.0) is None  # a new admin token signs everyone out
    assert s.verify(None, 1.0) is None and s.verify("x" * 500, 1.0) is None
    assert s.csrf_ok(session, s.csrf(session)) and not s.csrf_ok(session, "nope") and not s.csrf_ok(session, "")
    s.revoke(session, 1002.0)
    assert s.verify(value, 1003.0) is None
    assert s.check_token(" token-one\n") and not s.check_token("token-on") and not s.check_token("")
    phrase = passphrase("token-one")
    assert re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){4}", phrase) and phrase != passphrase("token-two")
    assert s.check_token(phrase) and s.check_token(phrase.upper().replace("-", " "))
    assert not s.check_token(phrase[:-1]) and not Sessions("token-two").check_token(phrase)


def test_sign_in_limiter_counts_failures_per_address() -> None:
    lim = SignInLimiter(max_failures=3, window=60)
    for i in range(3):
        assert lim.retry_after("1.2.3.4", 100 + i) == 0
        lim.failed("1.2.3.4", 100 + i)
    assert 0 < lim.retry_after("1.2.3.4", 103) <= 60
    assert lim.retry_after("5.6.7.8", 103) == 0  # another address is not punished
    assert lim.retry_after("1.2.3.4", 161) == 0  # the oldest failure aged out


def test_language_choice() -> None:
    assert choose("fr-FR,fr;q=0.9,en;q=0.5", "en") == "fr"
    assert choose("de-DE,en;q=0.8,fr;q=0.9", "") == "fr"
    assert choose("de", "fr") == "fr"  # nothing we speak: the blog's language
    assert choose(None, "en-GB") == "en"
    assert choose("en;q=0,fr;q=0", "es") == "en"
    assert choose("x" * 10_000, None) == "en"


# -- sessions and refusals -----------------------------------------------------------------------------


async def test_no_session_no_admin_data(bridge: Bridge) -> None:
    await publish(bridge, "Article secret « admin »", "http://blog.test/secret/")
    async with AdminClient(bridge) as anon:
        for path in ("", "/", *PAGES):
            status, body = await anon.page(path)
            assert status == 303, path
            assert "secret" not in body
        async with anon.http.get(anon.base + "/articles") as resp:  # following the redirect: the sign-in form
            text = await resp.text()
            assert str(resp.url).endswith("/admin/login") and "secret" not in text
            assert 'type="password"' in text
        for path in ("/comments/1/approve", "/comments/bulk", "/blocks", "/blocks/remove", "/logout"):
            status, text, _ = await anon.post(path, {"csrf": "x", "id": "1", "action": "approve",
                                                     "value": "spam.example"})
            assert status == 401, path
        async with bridge.store.connect() as conn:
            assert (await conn.execute(select(blocks))).first() is None


async def test_sign_in_sets_a_strict_cookie_and_sign_out_ends_it(bridge: Bridge) -> None:
    async with AdminClient(bridge) as admin:
        resp = await admin.login("wrong")
        assert resp.status == 401
        assert (await admin.login(passphrase(bridge.token))).status == 303  # the passphrase works too
        resp = await admin.login()
        assert resp.status == 303 and resp.headers["Location"] == "/admin/comments"
        cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
        assert "Secure" not in cookie  # http base URL (local test); see the https test below
        stolen = dict(admin.http.cookie_jar.filter_cookies(URL(admin.b.url + "/admin/")))
        status, page = await admin.page("/comments")
        assert status == 200 and admin.csrf
        status, _, _ = await admin.post("/logout", {"csrf": admin.csrf})
        assert status == 303
        assert (await admin.page("/comments"))[0] == 303
    async with AdminClient(bridge) as replay:  # the old cookie, replayed after sign-out, is refused
        replay.http.cookie_jar.update_cookies({k: v.value for k, v in stolen.items()})
        assert (await replay.page("/comments"))[0] == 303


async def test_secure_cookie_behind_https(make_bridge: BridgeFactory) -> None:
    b = await make_bridge(base_url="https://blog.example/fedi")
    host = b.runner.addresses[0]
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(
            f"http://{host[0]}:{host[1]}/fedi/admin/login", data={"token": b.token},
            headers={"Origin": "https://blog.example"}, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/fedi/admin/comments"
        cookie = resp.headers["Set-Cookie"]
        assert "Secure" in cookie and "Path=/fedi/admin" in cookie and "SameSite=Strict" in cookie


async def test_sign_in_attempts_are_rate_limited(bridge: Bridge) -> None:
    async with AdminClient(bridge) as admin:
        for _ in range(10):
            assert (await admin.login("guess")).status == 401
        resp = await admin.login()  # even the right token waits now
        assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
        assert "Set-Cookie" not in resp.headers
    async with AdminClient(bridge) as other:  # another client behind the same loopback proxy
        other.http.headers["X-Forwarded-For"] = "203.0.113.9"
        assert (await other.login()).status == 303


async def test_csrf_and_origin_are_checked(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        art = await publish(bridge, "CSRF", "http://blog.test/csrf/")
        alice = remote.add_actor("alice")
        c = await signed_reply(bridge, remote, alice, "<p>en attente</p>", art["id"])
        async with AdminClient(bridge) as admin:
            await admin.login()
            await admin.page("/comments")
            path = f"/comments/{c['id']}/approve"
            assert (await admin.post(path, {}))[0] == 403
            assert (await admin.post(path, {"csrf": admin.csrf[:-1] + "x"}))[0] == 403
            assert (await admin.post(path, {"csrf": admin.csrf}, headers={"Origin": "http://evil.example"}))[0] == 403
            assert (await admin.post(path, {"csrf": admin.csrf}, headers={"Sec-Fetch-Site": "cross-site"}))[0] == 403
            status, text, _ = await admin.post(path, {}, json=True)
            assert status == 403 and "error" in text
            assert [x["status"] for x in await admin_comments(bridge)] == ["pending"]
            status, _, headers = await admin.post(path, {"csrf": admin.csrf}, headers={"Origin": bridge.url})
            assert status == 303
            assert [x["status"] for x in await admin_comments(bridge)] == ["approved"]
        # Sign-in from another site is refused too (login CSRF).
        async with AdminClient(bridge) as other:
            resp = await other.http.post(other.base + "/login", data={"token": bridge.token},
                                         headers={"Origin": "http://evil.example"}, allow_redirects=False)
            assert resp.status == 403 and "Set-Cookie" not in resp.headers


# -- comments ------------------------------------------------------------------------------------------


async def test_pending_queue_search_and_every_action_without_js(bridge: Bridge) -> None:
    async with RemoteInstance() as remote, RemoteInstance(host_ip="127.0.0.3") as spam:
        art = await publish(bridge, "Un article", "http://blog.test/article/")
        alice = remote.add_actor("alice", name="Alice Martin")
        bob = remote.add_actor("bob", "gotosocial", name="Bob")
        troll = spam.add_actor("troll", "misskey", name="Troll")
        first = await signed_reply(bridge, remote, alice, "<p>Premier « commentaire » 🎉</p>", art["id"])
        second = await signed_reply(bridge, remote, bob, "<p>Réponse à Alice</p>", first["ap_id"],
                                    summary="Divulgâchage", sensitive=True)
        third = await signed_reply(bridge, spam, troll, "<p>achetez des pilules</p>", art["id"])
        async with AdminClient(bridge) as admin:
            await admin.login()
            status, page = await admin.page("/comments")
            assert status == 200
            assert re.search(r"<title>\(3\) Comments", page)
            order = [int(m) for m in re.findall(r'<li class="comment[^"]*" id="c(\d+)"', page)]
            assert order == [first["id"], second["id"], third["id"]]  # pending: oldest first
            assert "Premier « commentaire » 🎉" in page and "Alice Martin" in page
            assert alice.handle in page and f'href="{alice.doc["url"]}"' in page
            assert "Content warning: Divulgâchage" in page
            assert "In reply to Alice Martin:" in page and "Premier « commentaire »" in page
            assert 'href="http://blog.test/article/">Un article</a>' in page

            status, page = await admin.page("/comments", q="PILULES")
            assert [int(m) for m in re.findall(r'id="c(\d+)"', page)] == [third["id"]]
            status, page = await admin.page("/comments", q="alice martin", status="all")
            assert [int(m) for m in re.findall(r'id="c(\d+)"', page)] == [first["id"]]
            status, page = await admin.page("/comments", q="100%_")
            assert "No comments here." in page

            back = "/admin/comments?status=pending"
            status, _, headers = await admin.post(f"/comments/{first['id']}/approve",
                                                  {"csrf": admin.csrf, "back": back})
            assert status == 303 and headers["Location"].startswith(back + "&msg=done.approved")
            status, page = await admin.page("/comments?" + headers["Location"].split("?", 1)[1])
            assert "Approved." in page and not _has_row(page, first["id"])
            assert re.search(r"<title>\(2\) Comments", page)
            status, _, headers = await admin.post(f"/comments/{second['id']}/reject",
                                                  {"csrf": admin.csrf, "back": "https://evil.example/"})
            assert status == 303 and headers["Location"].startswith("/admin/comments?msg=")  # no open redirect
            status, _, _ = await admin.post(f"/comments/{second['id']}/delete", {"csrf": admin.csrf})
            assert status == 303
            assert (await admin.post("/comments/999999/approve", {"csrf": admin.csrf}))[0] == 404

            status, body, _ = await admin.post(f"/comments/{third['id']}/block-server", {"csrf": admin.csrf},
                                               json=True)
            assert status == 200, body
            status, page = await admin.page("/blocks")
            assert "127.0.0.3" in page
            by_id = {c["id"]: c for c in await admin_comments(bridge)}
            assert by_id[first["id"]]["status"] == "approved"
            assert by_id[second["id"]]["status"] == "rejected" and by_id[second["id"]]["deleted"] is True
            assert by_id[third["id"]]["status"] == "rejected"  # blocking rejected what the server said
            status, _, _ = await admin.post(f"/comments/{first['id']}/block-author", {"csrf": admin.csrf})
            assert status == 303
            async with bridge.store.connect() as conn:
                assert {(r.kind, r.value) for r in await conn.execute(select(blocks))} == {
                    ("domain", "127.0.0.3"), ("actor", alice.id)}


async def test_bulk_approve_and_reject(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        art = await publish(bridge, "Bulk", "http://blog.test/bulk/")
        people = [remote.add_actor(n) for n in ("ann", "ben", "cat")]
        made = [await signed_reply(bridge, remote, p, f"<p>bonjour de {p.username}</p>", art["id"]) for p in people]
        async with AdminClient(bridge) as admin:
            await admin.login()
            await admin.page("/comments")
            status, _, headers = await admin.post("/comments/bulk", [
                ("csrf", admin.csrf), ("action", "approve"), ("id", str(made[0]["id"])), ("id", str(made[2]["id"])),
                ("id", "not-a-number")])
            assert status == 303 and "msg=done.bulk" in headers["Location"] and "n=2" in headers["Location"]
            status, body, _ = await admin.post("/comments/bulk", [("csrf", admin.csrf), ("action", "reject"),
                                                                   ("id", str(made[1]["id"]))], json=True)
            assert status == 200 and '"ids":[' + str(made[1]["id"]) + "]" in body.replace(" ", "")
            assert (await admin.post("/comments/bulk", [("csrf", admin.csrf), ("action", "delete"),
                                                         ("id", "1")]))[0] == 400
            status, _, headers = await admin.post("/comments/bulk", [("csrf", admin.csrf), ("action", "approve")])
            assert "msg=no_selection" in headers["Location"]
    assert {c["id"]: c["status"] for c in await admin_comments(bridge)} == {
        made[0]["id"]: "approved", made[1]["id"]: "rejected", made[2]["id"]: "approved"}


async def test_comment_html_goes_through_the_sanitiser(bridge: Bridge) -> None:
    art = await publish(bridge, "Hostile", "http://blog.test/hostile/")
    async with bridge.store.begin() as conn:
        article_pk = (await conn.execute(select(articles.c.id).where(articles.c.slug == art["slug"]))).scalar_one()
        now = datetime.now(UTC)
        await conn.execute(insert(comments).values(
            article_id=article_pk, ap_id="http://127.0.0.1:9/users/m/statuses/1", in_reply_to=art["id"],
            author_id="http://127.0.0.1:9/users/m", author_name="<b>Mallory</b>",
            author_url="javascript:alert(1)", author_avatar="javascript:alert(2)",
            content_html='<p>visible</p><script>alert(3)</script><img src=x onerror="alert(4)">'
                         '<a href="javascript:alert(5)">lien</a>',
            summary=None, sensitive=False, published=now - timedelta(minutes=1), status="pending",
            visibility="public", deleted=False, edited=False, created_at=now))
    async with AdminClient(bridge) as admin:
        await admin.login()
        status, page = await admin.page("/comments")
    assert status == 200 and "<p>visible</p>" in page
    assert "<script>alert" not in page and "onerror" not in page and "javascript:" not in page
    assert "&lt;b&gt;Mallory&lt;/b&gt;" in page


# -- other screens -------------------------------------------------------------------------------------


async def test_articles_followers_and_delivery_health(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        alice = remote.add_actor("alice")
        status, text = await remote.send(alice, f"{bridge.url}/inbox", remote.follow(alice, bridge.actor))
        assert status in (200, 202), text

        async def following() -> bool:
            async with bridge.store.connect() as conn:
                return (await conn.execute(select(followers.c.id))).first() is not None

        await wait_for(following, timeout=15)  # followers before the article: its Create goes to alice
        art = await publish(bridge, "Statistiques", "http://blog.test/stats/")
        for activity in (remote.like(alice, art["id"]), remote.announce(alice, art["id"])):
            assert (await remote.send(alice, f"{bridge.url}/inbox", activity))[0] in (200, 202)
        await signed_reply(bridge, remote, alice, "<p>merci</p>", art["id"])

        async def delivered() -> bool:  # the Create of the article reached alice's server
            async with bridge.store.connect() as conn:
                states = (await conn.execute(select(deliveries.c.state).where(deliveries.c.kind == "ap"))).scalars()
                return set(states) == {"done"}

        await wait_for(delivered, timeout=15)
        async with bridge.store.begin() as conn:  # a second follower on a server that is failing
            now = datetime.now(UTC)
            await conn.execute(insert(followers).values(actor_id="https://down.example/users/zoe",
                                                        handle="@zoe@down.example", inbox="https://down.example/inbox",
                                                        since=now))
            await conn.execute(insert(deliveries).values(
                activity_id=None, kind="ap", inbox="https://down.example/inbox", host="down.example",
                state="pending", attempts=3, next_attempt_at=now + timedelta(minutes=30), last_status=503,
                last_error="HTTP 503 Service Unavailable", last_attempt_at=now, created_at=now))
        async with AdminClient(bridge, lang="fr-FR,fr;q=0.9") as admin:
            await admin.login()
            status, page = await admin.page("/articles")
            assert status == 200
            row = re.search(r'<tr class="article" data-slug="' + art["slug"] + r'">(.*?)</tr>', page, re.S)
            assert row is not None
            cells = row.group(1)
            assert '<td class="likes">1</td>' in cells and '<td class="boosts">1</td>' in cells
            link = re.search(r'<td class="ncomments"><a href="([^"]+)">1</a>', cells)
            assert link is not None
            status, listed = await admin.page(html.unescape(link.group(1)).removeprefix("/admin"))
            assert status == 200 and listed.count('<li class="comment') == 1 and "merci" in listed
            status, listed = await admin.page("/comments", status="all", article="autre-article")
            assert "Aucun commentaire ici." in listed
            assert "livré" in cells and art["id"] in cells and 'href="http://blog.test/stats/"' in cells
            status, page = await admin.page("/followers")
            assert "2 abonné(s)" in page and alice.handle in page and "@zoe@down.example" in page
            assert "down.example" in page and "HTTP 503 Service Unavailable" in page
            assert re.search(r'id="q-retrying">1<', page)
            assert "Serveurs en échec" in page


async def test_blocks_add_and_remove(make_bridge: BridgeFactory) -> None:
    b = await make_bridge(blocked_domains=["conf.example"])
    async with AdminClient(b) as admin:
        await admin.login()
        status, page = await admin.page("/blocks")
        assert "conf.example" in page and "from the configuration" in page
        status, _, headers = await admin.post("/blocks", {"csrf": admin.csrf, "value": "Spam.Example.",
                                                           "back": "/admin/blocks"})
        assert status == 303 and headers["Location"].startswith("/admin/blocks?msg=done.blocked")
        status, _, _ = await admin.post("/blocks", {"csrf": admin.csrf, "value": "https://x.example/users/t"})
        assert status == 303
        status, text, _ = await admin.post("/blocks", {"csrf": admin.csrf, "value": "https://", "kind": "domain"})
        assert status == 400 and "not a domain" in html.unescape(text)
        status, page = await admin.page("/blocks")
        assert "spam.example" in page and "https://x.example/users/t" in page
        async with b.http.get(f"{b.url}/api/blocks", headers=b.admin) as resp:  # the bearer API sees the same
            values = {x["value"] for x in (await resp.json())["blocks"]}
        assert {"spam.example", "https://x.example/users/t", "conf.example"} <= values
        status, _, _ = await admin.post("/blocks/remove", {"csrf": admin.csrf, "kind": "domain",
                                                           "value": "spam.example"})
        assert status == 303
        assert (await admin.post("/blocks/remove", {"csrf": admin.csrf, "kind": "domain",
                                                     "value": "spam.example"}))[0] == 404
        async with b.store.connect() as conn:
            assert [(r.kind, r.value) for r in await conn.execute(select(blocks))] == [
                ("actor", "https://x.example/users/t")]


async def test_french_and_english_and_headers(bridge: Bridge) -> None:
    expectations: list[tuple[str, dict[str, Any]]] = [
        ("fr-CA,fr;q=0.8", {"lang": "fr", "words": ("Commentaires", "En attente", "Se déconnecter")}),
        ("en-GB,en;q=0.9", {"lang": "en", "words": ("Comments", "Pending", "Sign out")}),
        ("de-DE", {"lang": "fr", "words": ("Commentaires",)}),  # the blog's language (fr in the fixture)
    ]
    for accept, want in expectations:
        async with AdminClient(bridge, lang=accept) as admin:
            status, login = await admin.page("/login")
            assert status == 200 and f'<html lang="{want["lang"]}">' in login
            await admin.login()
            for path in PAGES:
                async with admin.http.get(admin.base + path) as resp:
                    body = await resp.text()
                    assert resp.status == 200, path
                    assert f'<html lang="{want["lang"]}">' in body
                    csp = resp.headers["Content-Security-Policy"]
                    assert "script-src 'self'" in csp and "default-src 'none'" in csp
                    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
                    assert resp.headers["X-Frame-Options"] == "DENY"
                    assert resp.headers["Cache-Control"] == "no-store"
                    assert "<script>" not in body and "<style" not in body and " style=" not in body
                    assert not re.search(r"\son[a-z]+=", body)
            _, page = await admin.page("/comments")
            for word in want["words"]:
                assert word in page
    async with bridge.http.get(f"{bridge.url}/admin/static/admin.js") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/javascript")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    async with bridge.http.get(f"{bridge.url}/admin/static/admin.css") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/css")
    async with bridge.http.get(f"{bridge.url}/admin/static/..%2fsession.py") as resp:
        assert resp.status == 404


def test_cli_prints_the_passphrase(tmp_path: Path) -> None:
    from .test_cli import run

    assert run(["init", "--base-url", "https://blog.example.org/fediverse"], tmp_path).returncode == 0
    token = (tmp_path / "keys" / "admin-token").read_text().strip()
    result = run(["admin-passphrase"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "https://blog.example.org/fediverse/admin" in result.stdout
    assert passphrase(token) in result.stdout and token not in result.stdout


async def test_followers_are_paged(bridge: Bridge) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    async with bridge.store.begin() as conn:
        await conn.execute(insert(followers), [
            {"actor_id": f"https://s{i % 7}.example/users/u{i}", "handle": f"@u{i}@s{i % 7}.example",
             "inbox": f"https://s{i % 7}.example/inbox", "since": start + timedelta(minutes=i)} for i in range(501)])
    async with AdminClient(bridge) as admin:
        await admin.login()
        status, first = await admin.page("/followers")
        assert status == 200 and "501 follower(s)" in first
        assert first.count("<tr><th scope=\"row\">") == 500 and "@u0@s0.example" in first
        assert 'href="/admin/followers?page=2"' in first and "@u500@" not in first
        status, second = await admin.page("/followers", page="2")
        assert second.count("<tr><th scope=\"row\">") == 1 and "@u500@s3.example" in second
        assert 'href="/admin/followers?page=1"' in second
