"""The embeddable widget: served with the right cache/CORS headers, and rendered by a real headless Chromium
on a blog page of another origin, with comments that arrived through the real signed inbox flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import insert, select

from fedibridge.tables import articles, comments
from fedibridge.web.widget import WIDGET_FILE

from .conftest import Bridge, BridgeFactory, free_port, wait_for
from .remote import RemoteInstance
from .widget_page import BlogServer, NetworkGuard, blog_page, chromium

ARTICLE_TEXT = "Très bel article « merci » 🎉"
HOSTILE_NAME = "<img src=x onerror=\"window.__pwned='name'\">Mallory :evil:"
HOSTILE_HTML = (
    "<p>Texte hostile visible</p>"
    "<img src=x onerror=\"window.__pwned='img';alert(1)\">"
    "<script>window.__pwned='script';alert(2)</script>"
    "<p><a href=\"javascript:window.__pwned='link'\">cliquez ici</a> "
    "<a href=\"https://ok.example/page\" onclick=\"window.__pwned='onclick'\" rel=\"opener\">lien sûr</a></p>"
    "<iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>"
    "<svg><script>window.__pwned='svg'</script></svg>"
    "<style>*{display:none!important}</style>"
    "<form action=\"https://evil.example/\"><input name=q><button>envoyer</button></form>"
)

# Runs in the page: reads the widget's (open) shadow tree and describes what a reader sees.
DESCRIBE = """() => {
  const host = document.querySelector('.fedibridge-comments');
  const root = host.shadowRoot || host;
  const items = [...root.querySelectorAll('article.comment')].map(a => ({
    name: a.querySelector('.name') ? a.querySelector('.name').textContent : null,
    handle: a.querySelector('.handle') ? a.querySelector('.handle').textContent : null,
    content: a.querySelector('.content') ? a.querySelector('.content').textContent : null,
    emojiAlts: [...a.querySelectorAll('.name img.emoji')].map(i => i.alt),
    media: [...a.querySelectorAll('.media img')].map(i => i.alt),
    time: a.querySelector('time') ? [a.querySelector('time').getAttribute('datetime'),
                                     a.querySelector('time').title] : null,
    parentAuthor: (() => { const li = a.closest('li').parentElement.closest('li');
                           return li ? li.querySelector(':scope > article .name').textContent : null; })(),
  }));
  return {
    afterScript: host.previousElementSibling && host.previousElementSibling.tagName,
    heading: root.querySelector('h2').textContent,
    items,
    likes: root.querySelector('.reactions .likes .count')?.textContent,
    boosts: root.querySelector('.reactions .boosts .count')?.textContent,
    scripts: root.querySelectorAll('script, iframe, svg, style, form:not(.reply), img[src="x"]')
      .length,
    jsLinks: [...root.querySelectorAll('a')].filter(a => !/^https?:/.test(a.href)).length,
    handlers: [...root.querySelectorAll('*')].filter(e => [...e.attributes].some(x => x.name.startsWith('on')))
      .length,
    safeLink: (() => { const a = [...root.querySelectorAll('.content a')].find(x => x.textContent === 'lien sûr');
                       return a ? [a.href, a.rel, a.target] : null; })(),
    replyHeading: root.querySelector('form.reply h3')?.textContent,
    empty: root.querySelector('.empty')?.textContent ?? null,
    error: root.querySelector('.error')?.textContent ?? null,
  };
}"""


async def test_widget_js_headers_and_revalidation(bridge: Bridge) -> None:
    url = f"{bridge.url}/widget.js"
    async with bridge.http.get(url) as resp:
        assert resp.status == 200
        body = await resp.read()
        assert resp.headers["Content-Type"] == "application/javascript; charset=utf-8"
        assert resp.headers["Cache-Control"] == "public, max-age=300"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        etag = resp.headers["ETag"]
    assert body == WIDGET_FILE.read_bytes()
    assert etag.startswith('"') and etag.endswith('"')
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        async with bridge.http.get(url, headers={"If-None-Match": header}) as resp:
            assert resp.status == 304, header
            assert await resp.read() == b""
            assert resp.headers["ETag"] == etag
            assert resp.headers["Cache-Control"] == "public, max-age=300"
    async with bridge.http.get(url, headers={"If-None-Match": '"stale"'}) as resp:
        assert resp.status == 200
        assert await resp.read() == body
    async with bridge.http.head(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/javascript; charset=utf-8"


async def _publish(b: Bridge, title: str, url: str) -> dict[str, Any]:
    body = {"title": title, "url": url, "content": f"<p>{title} — contenu</p>", "tags": ["fédivers"],
            "language": "fr"}
    async with b.http.post(f"{b.url}/api/articles", json=body, headers=b.admin) as resp:
        assert resp.status in (200, 201), await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def _public_comments(b: Bridge, article_url: str) -> dict[str, Any]:
    async with b.http.get(f"{b.url}/api/comments", params={"url": article_url}) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


def _count(tree: list[dict[str, Any]]) -> int:
    return sum(1 + _count(c.get("replies") or []) for c in tree)


async def test_widget_renders_thread_safely_in_chromium(make_bridge: BridgeFactory) -> None:
    blog = BlogServer(free_port())
    b = await make_bridge(moderation="open", blog_url=blog.origin)
    await blog.start()
    try:
        await _scenario(b, blog)
    finally:
        await blog.close()


async def _scenario(b: Bridge, blog: BlogServer) -> None:
    article_url = f"{blog.origin}/2026/11/bel-article/"
    empty_url = f"{blog.origin}/2026/11/silence/"
    art = await _publish(b, "Un bel article", article_url)
    await _publish(b, "Un article sans réponse", empty_url)
    script = f"{b.url}/widget.js"
    blog.pages["/2026/11/bel-article/"] = blog_page("Un bel article", "fr", script, article_url)
    blog.pages["/2026/11/silence/"] = blog_page("Silence", "en-GB", script, empty_url)
    dead = f"http://127.0.0.1:{free_port()}"
    blog.pages["/broken/"] = blog_page("Broken", "fr", script, article_url, f'data-base="{dead}" data-lang="en"')

    async with RemoteInstance() as remote:
        alice = remote.add_actor("alice", "mastodon", name="Alice :blobcat:")
        emoji_url = f"{remote.base}/emojis/blobcat.png"
        alice.doc["tag"] = [{"id": f"{remote.base}/emojis/1", "type": "Emoji", "name": ":blobcat:",
                             "updated": "2024-01-01T00:00:00Z",
                             "icon": {"type": "Image", "mediaType": "image/png", "url": emoji_url}}]
        photo = {"type": "Document", "mediaType": "image/jpeg", "url": f"{remote.base}/media/chat.jpg",
                 "name": "un chat « roux »", "blurhash": "UBL_:rOpGG-oBUNG,qRj2so|=eE1w^n4S5NH"}
        spoiler = {**photo, "url": f"{remote.base}/media/fin.jpg", "name": "la dernière page"}
        bob = remote.add_actor("bob", "gotosocial", name="Bob")
        carol = remote.add_actor("carol", "misskey", name="Carol")
        inbox = f"{b.url}/inbox"

        first = remote.note(alice, f"<p>{ARTICLE_TEXT}</p>", art["id"], cc=[f"{alice.id}/followers", b.actor],
                            attachment=[photo])
        status, text = await remote.send(alice, inbox, remote.create(alice, first))
        assert status in (200, 202), text
        reply = remote.note(bob, "<p>La fin est surprenante !</p>", first["id"], summary="Divulgâchage ⚠",
                            sensitive=True, cc=[f"{bob.id}/followers", alice.id], attachment=[spoiler])
        status, text = await remote.send(bob, inbox, remote.create(bob, reply))
        assert status in (200, 202), text
        for account, activity in ((alice, remote.like(alice, art["id"])), (carol, remote.like(carol, art["id"])),
                                  (bob, remote.announce(bob, art["id"]))):
            status, text = await remote.send(account, inbox, activity)
            assert status in (200, 202), text

        async def arrived() -> bool:
            data = await _public_comments(b, article_url)
            reactions = data["reactions"]
            return _count(data["comments"]) == 2 and (reactions["likes"], reactions["boosts"]) == (2, 1)

        await wait_for(arrived, timeout=15)

        # A comment that never went through the server-side sanitiser: only the widget stands in the way.
        async with b.store.begin() as conn:
            article_pk = (await conn.execute(select(articles.c.id).where(articles.c.url == article_url))).scalar_one()
            now = datetime.now(UTC)
            await conn.execute(insert(comments).values(
                article_id=article_pk, ap_id=f"{remote.base}/users/mallory/statuses/666", in_reply_to=art["id"],
                author_id=f"{remote.base}/users/mallory", author_name=HOSTILE_NAME,
                author_handle="@mallory@evil.example", author_emojis=[[":evil:", "javascript:alert(3)"]],
                author_url="javascript:window.__pwned='profile'",
                author_avatar="javascript:window.__pwned='avatar'", content_html=HOSTILE_HTML,
                summary=None, sensitive=False, language="fr", url="javascript:window.__pwned='url'",
                attachments=[{"url": "javascript:window.__pwned='att'", "media_type": "image/png", "alt": "x"}],
                published=now + timedelta(seconds=5), status="approved", visibility="public", deleted=False,
                edited=False, created_at=now))
        api = await _public_comments(b, article_url)
        assert _count(api["comments"]) == 3

        async with chromium() as browser:
            context = await browser.new_context(locale="en-US")
            guard = NetworkGuard()
            await guard.attach(context)
            popups: list[str] = []
            context.on("page", lambda p: popups.append(p.url))
            dialogs: list[str] = []
            page = await context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            await page.goto(article_url)
            await page.locator(".fedibridge-comments article.comment").nth(2).wait_for()
            seen = await page.evaluate(DESCRIBE)
            assert seen["afterScript"] == "SCRIPT"  # inserted right after its own tag
            assert seen["heading"] == "Commentaires du fédivers"  # <html lang="fr"> wins over the browser's en-US
            assert seen["replyHeading"] == "Répondre depuis votre compte du fédivers"
            assert seen["likes"] == "2" and seen["boosts"] == "1"
            assert seen["empty"] is None and seen["error"] is None
            by_content = {item["content"]: item for item in seen["items"]}
            top = api["comments"][0]
            a_item = by_content[ARTICLE_TEXT]
            assert a_item["handle"] == top["author"]["handle"] and a_item["handle"].startswith("@alice@")
            assert top["author"]["emojis"]  # custom emoji as an image, its shortcode as alt text
            assert a_item["name"].strip() == "Alice" and a_item["emojiAlts"] == [":blobcat:"]
            assert a_item["media"] == ["un chat « roux »"]
            assert a_item["time"][0].startswith(top["published"][:16])
            assert a_item["time"][1]  # absolute date as a tooltip
            assert a_item["parentAuthor"] is None
            b_item = next(i for i in seen["items"] if i["name"] == "Bob")
            assert b_item["parentAuthor"].startswith("Alice")  # the reply sits inside its parent's <li>
            assert b_item["content"] == "La fin est surprenante !"
            m_item = next(i for i in seen["items"] if "Texte hostile visible" in (i["content"] or ""))
            assert m_item["name"] == HOSTILE_NAME  # shown as text, never parsed; no javascript: emoji image
            assert m_item["media"] == [] and m_item["emojiAlts"] == []
            assert "cliquez ici" in m_item["content"] and "lien sûr" in m_item["content"]
            assert m_item["parentAuthor"] is None
            assert seen["scripts"] == 0 and seen["jsLinks"] == 0 and seen["handlers"] == 0
            assert seen["safeLink"] == ["https://ok.example/page", "nofollow ugc noopener noreferrer", "_blank"]

            # The content warning hides the reply until the reader opens it, with the keyboard too.
            hidden = page.locator(".fedibridge-comments details.cw .content")
            assert await hidden.is_hidden()
            summary = page.locator(".fedibridge-comments details.cw summary")
            assert "Divulgâchage ⚠" in (await summary.text_content() or "")
            await summary.focus()
            await page.keyboard.press("Enter")
            assert await hidden.is_visible()
            assert await hidden.text_content() == "La fin est surprenante !"
            # Sensitive media are not even loaded until the reader asks.
            assert not [u for u in guard.seen if u.endswith("/media/fin.jpg")]
            reveal = page.locator(".fedibridge-comments details.cw .sensitive button")
            assert await reveal.text_content() == "Afficher le média sensible"
            await reveal.click()
            await page.locator(".fedibridge-comments details.cw .media img").wait_for()
            assert await reveal.get_attribute("aria-expanded") == "true"
            assert await page.locator(".fedibridge-comments details.cw .media img").get_attribute("alt") == \
                "la dernière page"

            # Clicking the neutered javascript: link does nothing.
            await page.locator(".fedibridge-comments .content >> text=cliquez ici").click()
            assert await page.evaluate("window.__pwned") is None
            assert dialogs == [] and errors == []

            # Reply from your own server: validated, remembered, opened in a new tab (aborted before it leaves).
            field = page.locator(".fedibridge-comments form.reply input")
            await field.fill("pas un serveur !")
            await page.locator(".fedibridge-comments form.reply button").click()
            assert await field.get_attribute("aria-invalid") == "true"
            assert "mastodon.social" in (await page.locator(".fedibridge-comments form.reply .status")
                                         .text_content() or "")
            await field.fill("  @moi@Mastodon.Example ")
            async with context.expect_page() as new_page:
                await field.press("Enter")
            popup = await new_page.value
            expected = "https://mastodon.example/authorize_interaction?uri=" + quote(art["id"], safe="-_.!~*'()")
            await wait_for(_async_true(lambda: expected in guard.external), timeout=10)
            assert popup is not None
            assert await page.evaluate("localStorage.getItem('fedibridge:instance')") == "mastodon.example"
            await page.reload()
            await page.locator(".fedibridge-comments article.comment").first.wait_for()
            assert await field.input_value() == "mastodon.example"
            assert await page.evaluate("window.__pwned") is None

            # An article without replies, on an English page: the empty state, in English.
            await page.goto(empty_url)
            await page.locator(".fedibridge-comments .empty").wait_for()
            seen = await page.evaluate(DESCRIBE)
            assert seen["heading"] == "Comments from the fediverse"
            assert seen["empty"].startswith("No comments yet")
            assert seen["items"] == [] and seen["likes"] is None

            # The bridge cannot be reached: an error state with a retry button, not a broken page.
            await page.goto(f"{blog.origin}/broken/")
            await page.locator(".fedibridge-comments .error").wait_for()
            seen = await page.evaluate(DESCRIBE)
            assert seen["error"].startswith("The comments could not be loaded")

            # Nothing left loopback except the remote-interaction tab the reader asked for (Chromium 156.0.8078.114
            # retries an aborted popup navigation once, so the same URL may be recorded twice).
            assert set(guard.external) == {expected}, guard.external
            assert not [u for u in guard.seen if u.endswith("/x")]
            assert dialogs == [] and errors == []
            assert popups  # the popup did open
            await context.close()


def _async_true(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


async def test_widget_shows_quotes_and_their_text(make_bridge: BridgeFactory) -> None:
    """An accepted quote post (FEP-044f, through the real QuoteRequest flow) shows as a count next to likes and
    boosts, and its text under its own heading, sanitised like a comment."""
    from .test_inbox import done
    from .test_quotes import quote_note, quote_request

    blog = BlogServer(free_port())
    # moderation open: a quote's text shows publicly as its author's comment would (quotes.quote_summary)
    b = await make_bridge(blog_url=blog.origin, moderation="open")
    await blog.start()
    try:
        article_url = f"{blog.origin}/2026/12/cite/"
        art = await _publish(b, "Un article cité", article_url)
        blog.pages["/2026/12/cite/"] = blog_page("Cité", "fr", f"{b.url}/widget.js", article_url)
        async with RemoteInstance() as remote:
            quinn = remote.add_actor("quinn", name="Quinn")
            note = quote_note(remote, quinn, art["id"])
            note["content"] += "<script>window.__pwned='quote'</script>"
            request = quote_request(quinn, art["id"], note)
            status, text = await remote.send(quinn, f"{b.url}/inbox", request)
            assert status == 202, text
            await wait_for(lambda: done(b, request["id"]))
            async with chromium() as browser:
                page = await (await browser.new_context(locale="en-US")).new_page()
                await page.goto(article_url)
                await page.locator(".fedibridge-comments .reactions .quotes").wait_for()
                seen = await page.evaluate("""() => {
                  const host = document.querySelector('.fedibridge-comments');
                  const root = host.shadowRoot || host;
                  return {
                    quotes: root.querySelector('.reactions .quotes .count').textContent,
                    label: root.querySelector('.reactions .quotes .label').textContent,
                    heading: root.querySelector('.mentions-heading').textContent,
                    texts: [...root.querySelectorAll('.mentions article.comment .content')].map(c => c.textContent),
                    names: [...root.querySelectorAll('.mentions article.comment .name')].map(c => c.textContent),
                    scripts: root.querySelectorAll('script').length,
                    pwned: window.__pwned || null,
                  };
                }""")
        assert seen["quotes"] == "1" and seen["label"] == "citation"
        assert seen["heading"] == "Cité sur le fédivers"
        (text,) = seen["texts"]
        assert "À lire absolument « vraiment »" in text
        assert [n.strip() for n in seen["names"]] == ["Quinn"]
        assert seen["scripts"] == 0 and seen["pwned"] is None
    finally:
        await blog.close()
