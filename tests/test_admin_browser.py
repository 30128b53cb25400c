"""The admin page in Debian's headless Chromium (Playwright, as the widget tests): sign in, moderate a
reply that arrived through the real signed inbox, see it in the public API and the widget; block a server
and see its next reply refused; a cross-site form post and a missing session are refused.

Set FEDIBRIDGE_ADMIN_SCREENSHOT=docs/admin.png to write the README's screenshot from this run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from .admin_helpers import admin_comments, publish, signed_reply
from .conftest import Bridge, BridgeFactory, free_port
from .remote import RemoteInstance
from .widget_page import BlogServer, NetworkGuard, blog_page, chromium


async def _sign_in(page: Page, b: Bridge) -> None:
    await page.goto(f"{b.url}/admin")
    assert page.url.endswith("/admin/login")
    await page.get_by_label("Admin token").fill(b.token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/admin/comments")


# Runs in the page: form controls without an accessible name, and whether the page scrolls sideways.
AUDIT = """() => {
  const unnamed = [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
    .map(e => e.outerHTML);
  return {unnamed, overflow: document.documentElement.scrollWidth > window.innerWidth + 1};
}"""


async def _public(b: Bridge, slug: str) -> list[dict[str, Any]]:
    async with b.http.get(f"{b.url}/api/articles/{slug}/comments") as resp:
        assert resp.status == 200, await resp.text()
        found: list[dict[str, Any]] = (await resp.json())["comments"]
        return found


def _watch(page: Page) -> list[str]:
    """Page errors, console errors (a CSP violation shows up there) and failed requests, except the remote
    avatars: the loopback Mastodon serves no image there, so Chromium blocks the answer (ORB)."""
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning")
            and not m.text.startswith("Failed to load resource") else None)
    page.on("requestfailed", lambda r: problems.append(f"failed {r.url} {r.failure}")
            if "/avatars/" not in r.url else None)
    return problems


async def test_approve_in_the_browser_then_public_api_and_widget(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    blog = BlogServer(free_port())
    b = await make_bridge(blog_url=blog.origin)  # moderation "known": a first comment waits
    await blog.start()
    try:
        article_url = f"{blog.origin}/2026/12/moderation/"
        art = await publish(b, "Modérer depuis le navigateur", article_url)
        blog.pages["/2026/12/moderation/"] = blog_page("Modérer", "fr", f"{b.url}/widget.js", article_url)
        async with RemoteInstance() as remote:
            alice = remote.add_actor("alice", name="Alice Martin")
            bob = remote.add_actor("bob", "gotosocial", name="Bob")
            first = await signed_reply(b, remote, alice, "<p>Merci pour cet article « limpide » 🎉</p>", art["id"])
            second = await signed_reply(b, remote, bob, "<p>Je ne suis pas d’accord avec Alice.</p>", first["ap_id"],
                                        summary="Débat", sensitive=True)
            assert first["status"] == second["status"] == "pending"
            assert await _public(b, art["slug"]) == []

            async with chromium() as browser:
                context = await browser.new_context(locale="en-US", viewport={"width": 1000, "height": 760})
                guard = NetworkGuard()
                await guard.attach(context)
                page = await context.new_page()
                problems = _watch(page)
                await _sign_in(page, b)
                assert await page.title() == "(2) Comments · Moderation · Carnet de Léa"
                row = page.locator(f"#c{first['id']}")
                assert "Merci pour cet article « limpide » 🎉" in (await row.locator(".content").text_content() or "")
                assert await row.locator(".name a").get_attribute("href") == alice.doc["url"]
                reply = page.locator(f"#c{second['id']}")
                assert "In reply to Alice Martin" in (await reply.locator(".parent").text_content() or "")
                assert await reply.locator("details.cw .content").is_hidden()  # content warning closed
                shot = tmp_path / "admin.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                if os.environ.get("FEDIBRIDGE_ADMIN_SCREENSHOT"):
                    shutil.copyfile(shot, os.environ["FEDIBRIDGE_ADMIN_SCREENSHOT"])

                # Every control is named (labels, aria-label or text); nothing scrolls sideways on a phone.
                phone = await browser.new_context(locale="en-US", viewport={"width": 360, "height": 740},
                                                  is_mobile=True, has_touch=True)
                await NetworkGuard().attach(phone)
                small = await phone.new_page()
                await _sign_in(small, b)
                for path in ("/comments", "/articles", "/followers", "/blocks"):
                    await small.goto(f"{b.url}/admin{path}")
                    audit = await small.evaluate(AUDIT)
                    assert audit == {"unnamed": [], "overflow": False}, (path, audit)
                await phone.close()

                # One click, no reload (admin.js posts the form with fetch and updates the row).
                await page.evaluate("window.__stay = true")
                await row.get_by_role("button", name="Approve").click()
                await page.locator(f"#c{first['id']}[data-now='approved']").wait_for()
                assert await page.evaluate("window.__stay") is True
                assert await page.locator("#flash").text_content() == "Approved."
                assert await page.title() == "(1) Comments · Moderation · Carnet de Léa"
                public = await _public(b, art["slug"])
                assert [c["id"] for c in public] == [first["id"]]
                assert public[0]["author"]["handle"] == alice.handle

                # The widget on the blog shows it.
                widget = await context.new_page()
                await widget.goto(article_url)
                await widget.locator(".fedibridge-comments article.comment").first.wait_for()
                text = await widget.locator(".fedibridge-comments article.comment .content").all_text_contents()
                assert text == ["Merci pour cet article « limpide » 🎉"]

                # Keyboard only: focus the bulk checkbox of Bob's reply, tick it, approve the selection.
                await reply.locator("input.pick").focus()
                await page.keyboard.press("Space")
                await page.locator("#bulk").get_by_role("button", name="Approve").click()
                await page.locator(f"#c{second['id']}[data-now='approved']").wait_for()
                assert await page.evaluate("window.__stay") is True
                assert await page.locator("#flash").text_content() == "1 comment(s) updated."
                assert problems == [], problems
                assert guard.external == []  # no CDN, no external font: nothing leaves loopback
                await context.close()

                # Without JavaScript the same buttons are plain form posts (303 back to the list).
                nojs = await browser.new_context(locale="fr-FR", java_script_enabled=False)
                await NetworkGuard().attach(nojs)
                page = await nojs.new_page()
                await page.goto(f"{b.url}/admin/login")
                await page.get_by_label("Jeton d’administration").fill(b.token)
                await page.get_by_role("button", name="Se connecter").click()
                await page.wait_for_url("**/admin/comments")
                await page.goto(f"{b.url}/admin/comments?status=approved")
                await page.locator(f"#c{second['id']}").get_by_role("button", name="Refuser").click()
                await page.wait_for_url("**msg=done.rejected**")
                assert await page.locator("#flash").text_content() == "Refusé."
                await nojs.close()
            assert [c["id"] for c in await _public(b, art["slug"])] == [first["id"]]
            by_id = {c["id"]: c["status"] for c in await admin_comments(b)}
            assert by_id == {first["id"]: "approved", second["id"]: "rejected"}
    finally:
        await blog.close()


async def test_block_a_server_in_the_browser_then_its_next_reply_is_refused(make_bridge: BridgeFactory) -> None:
    b = await make_bridge()
    art = await publish(b, "Spam", "http://blog.test/spam/")
    async with RemoteInstance(host_ip="127.0.0.4") as spam:
        troll = spam.add_actor("troll", "misskey", name="Troll")
        c = await signed_reply(b, spam, troll, "<p>pilules pas chères</p>", art["id"])
        async with chromium() as browser:
            context = await browser.new_context(locale="en-US")
            await NetworkGuard().attach(context)
            page = await context.new_page()
            problems = _watch(page)
            await _sign_in(page, b)
            await page.locator(f"#c{c['id']}").get_by_role("button", name="Block server").click()
            await page.locator("p.empty").wait_for()  # reloaded: the pending queue is empty now
            assert (await page.locator("#flash").text_content() or "").startswith("Blocked 127.0.0.4; 1 comment")
            await page.get_by_role("link", name="Blocks").click()
            await page.locator("table.blocks th", has_text="127.0.0.4").wait_for()
            assert problems == [], problems
            await context.close()
        assert [x["status"] for x in await admin_comments(b)] == ["rejected"]
        note = spam.note(troll, "<p>encore moi</p>", art["id"])
        status, text = await spam.send(troll, f"{b.url}/inbox", spam.create(troll, note))
        assert status == 403, text
        assert len(await admin_comments(b)) == 1


async def test_cross_site_form_post_and_missing_session_are_refused(make_bridge: BridgeFactory) -> None:
    evil = BlogServer(free_port())
    b = await make_bridge()
    await evil.start()
    try:
        art = await publish(b, "CSRF", "http://blog.test/csrf/")
        async with RemoteInstance() as remote:
            alice = remote.add_actor("alice")
            c = await signed_reply(b, remote, alice, "<p>en attente</p>", art["id"])
        target = f"{b.url}/admin/comments/{c['id']}/approve"
        # Another origin (same host, other port: "same-site", so even SameSite=Strict sends the cookie; the
        # Origin check and the CSRF token refuse it).
        evil.pages["/attack"] = (
            "<!doctype html><html><body>"
            f"<form id=f method=post action=\"{target}\"><input name=csrf value=guessed></form>"
            "<script>document.getElementById('f').submit()</script></body></html>")
        evil.pages["/no-token"] = (
            "<!doctype html><html><body>"
            f"<form id=f method=post action=\"{target}\"></form>"
            "<script>document.getElementById('f').submit()</script></body></html>")
        async with chromium() as browser:
            context = await browser.new_context(locale="en-US")
            await NetworkGuard().attach(context)
            page = await context.new_page()
            # No session at all: the form post is refused.
            async with page.expect_response(target) as answer:
                await page.goto(f"{evil.origin}/attack")
            assert (await answer.value).status == 401
            await _sign_in(page, b)
            for path in ("/attack", "/no-token"):
                async with page.expect_response(target) as answer:
                    await page.goto(f"{evil.origin}{path}")
                resp = await answer.value
                assert resp.status == 403, path
                assert "another site" in (await resp.text())
            await context.close()
        assert [x["status"] for x in await admin_comments(b)] == ["pending"]
    finally:
        await evil.close()
