"""Quote posts (FEP-044f, as Mastodon 4.5 sends them) end to end: QuoteRequest through the signed inbox,
Accept with a QuoteAuthorization the quoting server can fetch, Reject by policy, counts and text in the APIs,
and the quote's Delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fedibridge.tables import quotes

from .conftest import Bridge, BridgeFactory, wait_for
from .remote import AS, MASTODON_CONTEXT, RemoteAccount, RemoteInstance
from .test_followers import follow
from .test_inbox import done, inbox_of, n_rows

AP = {"Accept": "application/activity+json"}
QUOTE_TEXT = "À lire absolument « vraiment » 👇"


@pytest.fixture
async def remote() -> AsyncIterator[RemoteInstance]:
    async with RemoteInstance() as instance:
        yield instance


async def publish(bridge: Bridge, slug: str = "citable") -> str:
    data = {"title": "Un article « à citer »", "url": f"http://blog.test/{slug}/", "content": "<p>Été</p>",
            "slug": slug}
    async with bridge.http.post(f"{bridge.url}/api/articles", json=data, headers=bridge.admin) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


def quote_note(remote: RemoteInstance, acct: RemoteAccount, article: str, **extra: Any) -> dict[str, Any]:
    """A Mastodon 4.5 quote post: `quote` (FEP-044f) plus the older `quoteUri`/`_misskey_quote`, and the
    inline "RE:" fallback paragraph for servers that show no quotes."""
    html = f'<p>{QUOTE_TEXT}</p><p class="quote-inline">RE: <a href="{article}">{article}</a></p>'
    return remote.note(acct, html, quote=article, quoteUri=article, _misskey_quote=article, **extra)


def quote_request(acct: RemoteAccount, article: str, note: dict[str, Any] | str) -> dict[str, Any]:
    """What Mastodon 4.5 sends to the quoted post's author (ActivityPub::QuoteRequestSerializer)."""
    note_id = note if isinstance(note, str) else note["id"]
    return {
        "@context": [*MASTODON_CONTEXT, {"QuoteRequest": "https://w3id.org/fep/044f#QuoteRequest"}],
        "id": f"{note_id}/quote_request",
        "type": "QuoteRequest",
        "actor": acct.id,
        "object": article,
        "instrument": note,
    }


async def send(bridge: Bridge, remote: RemoteInstance, acct: RemoteAccount, activity: dict[str, Any]) -> None:
    status, text = await remote.send(acct, inbox_of(bridge), activity)
    assert status == 202, text
    await wait_for(lambda: done(bridge, str(activity["id"])))


async def answer(remote: RemoteInstance, kind: str, count: int = 1) -> dict[str, Any]:
    async def arrived() -> bool:
        return len(remote.received_of(kind)) >= count

    await wait_for(arrived, timeout=15)
    got = remote.received_of(kind)[count - 1]
    assert got.verified, got.reason
    doc: dict[str, Any] = got.json
    return doc


async def article_api(bridge: Bridge, slug: str = "citable") -> dict[str, Any]:
    async with bridge.http.get(f"{bridge.url}/api/articles/{slug}", headers=bridge.admin) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def public_reactions(bridge: Bridge) -> dict[str, Any]:
    async with bridge.http.get(f"{bridge.url}/api/articles/citable/comments") as resp:
        assert resp.status == 200
        body: dict[str, Any] = (await resp.json())["reactions"]
        return body


async def test_quote_request_accepted_counted_and_deleted(bridge: Bridge, remote: RemoteInstance) -> None:
    article = await publish(bridge)
    async with bridge.http.get(article, headers=AP) as resp:
        obj = await resp.json(content_type=None)
    assert obj["interactionPolicy"] == {"canQuote": {"automaticApproval": [AS + "#Public"]}}

    quinn = remote.add_actor("quinn", name="Quinn « cite » 📣")
    note = quote_note(remote, quinn, article)
    request = quote_request(quinn, article, note)
    await send(bridge, remote, quinn, request)
    accept = await answer(remote, "Accept")
    assert accept["actor"] == bridge.actor and accept["to"] == [quinn.id]
    assert accept["object"]["id"] == request["id"] and accept["object"]["type"] == "QuoteRequest"
    assert accept["object"]["instrument"] == note["id"]
    stamp_url = accept["result"]
    assert stamp_url.startswith(f"{bridge.url}/quote_authorizations/")

    # The quoting server (and every server showing the quote) fetches the stamp to verify consent.
    async with bridge.http.get(stamp_url, headers=AP) as resp:
        assert resp.status == 200 and resp.content_type == "application/activity+json"
        stamp = await resp.json(content_type=None)
    assert stamp["id"] == stamp_url and stamp["type"] == "QuoteAuthorization"
    assert stamp["attributedTo"] == bridge.actor
    assert (stamp["interactingObject"], stamp["interactionTarget"]) == (note["id"], article)
    async with bridge.http.get(accept["id"], headers=AP) as resp:  # the Accept itself is dereferenceable
        assert resp.status == 200 and (await resp.json(content_type=None))["result"] == stamp_url

    # Mastodon then sends the Update of its post carrying the stamp; counted once, text shown as a mention.
    await send(bridge, remote, quinn, remote.update(quinn, {**note, "quoteAuthorization": stamp_url}))
    body = await article_api(bridge)
    assert body["quotes"] == 1 and body["boosts"] == 0
    (mention,) = body["mentions"]
    assert mention["type"] == "quote" and mention["id"] == note["id"] and QUOTE_TEXT in mention["content_html"]
    assert mention["author"]["handle"] == quinn.handle and mention["author"]["name"] == "Quinn « cite » 📣"
    # Publicly (what the widget reads) the text shows as a comment would: Quinn is unknown to the blog
    # (moderation `known`), so only the count shows until the owner has approved a comment of Quinn's.
    public = await public_reactions(bridge)
    assert public["quotes"] == 1 and public["mentions"] == []
    reply = remote.note(quinn, "<p>Merci pour l’article !</p>", in_reply_to=article)
    await send(bridge, remote, quinn, remote.create(quinn, reply))
    async with bridge.http.get(f"{bridge.url}/api/comments?status=pending", headers=bridge.admin) as resp:
        (pending,) = (await resp.json())["comments"]
    async with bridge.http.post(f"{bridge.url}/api/comments/{pending['id']}/approve", headers=bridge.admin) as resp:
        assert resp.status == 200
    public = await public_reactions(bridge)
    assert public["quotes"] == 1 and [m["id"] for m in public["mentions"]] == [note["id"]]
    # Blocking Quinn's server hides the text again (the count stays: the quote exists).
    async with bridge.http.post(f"{bridge.url}/api/blocks", json={"kind": "domain", "value": remote.host},
                                headers=bridge.admin) as resp:
        assert resp.status in (200, 201)
    public = await public_reactions(bridge)
    assert public["quotes"] == 1 and public["mentions"] == []
    async with bridge.http.delete(f"{bridge.url}/api/blocks", json={"kind": "domain", "value": remote.host},
                                  headers=bridge.admin) as resp:
        assert resp.status == 200

    # A repeated request for the same post gets the same stamp, and still one quote.
    again = {**request, "id": request["id"] + "-2"}
    await send(bridge, remote, quinn, again)
    assert (await answer(remote, "Accept", 2))["result"] == stamp_url
    assert await n_rows(bridge, quotes) == 1

    # Only the author may delete it; then it is gone, and so is the stamp.
    mallory = remote.add_actor("mallory")
    forged = {**remote.delete(mallory, note), "id": f"{mallory.id}#delete-of-someone-else"}
    await send(bridge, remote, mallory, forged)
    assert (await article_api(bridge))["quotes"] == 1
    await send(bridge, remote, quinn, remote.delete(quinn, note))
    body = await article_api(bridge)
    assert body["quotes"] == 0 and body["mentions"] == []
    async with bridge.http.get(stamp_url, headers=AP) as resp:
        assert resp.status == 404


async def test_followers_only_quote_is_counted_not_shown(bridge: Bridge, remote: RemoteInstance) -> None:
    article = await publish(bridge)
    quinn = remote.add_actor("quinn")
    note = quote_note(remote, quinn, article, to=[f"{quinn.id}/followers"], cc=[article.rsplit("/", 2)[0]])
    await send(bridge, remote, quinn, quote_request(quinn, article, note))
    await answer(remote, "Accept")
    body = await article_api(bridge)
    assert body["quotes"] == 1 and body["mentions"] == []


async def test_forged_or_foreign_quotes_are_rejected(bridge: Bridge, remote: RemoteInstance) -> None:
    article = await publish(bridge)
    quinn, mallory = remote.add_actor("quinn"), remote.add_actor("mallory")
    # Mallory asks for Quinn's post: not hers to ask for.
    await send(bridge, remote, mallory, quote_request(mallory, article, quote_note(remote, quinn, article)))
    reject = await answer(remote, "Reject")
    assert reject["to"] == [mallory.id] and reject["object"]["type"] == "QuoteRequest" and "result" not in reject
    # A post quoting something else.
    other = quote_note(remote, quinn, "http://elsewhere.example/notes/1")
    await send(bridge, remote, quinn, quote_request(quinn, article, other))
    await answer(remote, "Reject", 2)
    assert await n_rows(bridge, quotes) == 0 and not remote.received_of("Accept")
    # A request about someone else's post is not ours to answer.
    stranger = quote_request(quinn, "http://elsewhere.example/notes/2", quote_note(remote, quinn, article))
    await send(bridge, remote, quinn, stranger)
    assert len(remote.received_of("Reject")) == 2


async def test_policy_nobody_rejects(make_bridge: BridgeFactory, remote: RemoteInstance) -> None:
    bridge = await make_bridge(quote_policy="nobody")
    article = await publish(bridge)
    async with bridge.http.get(article, headers=AP) as resp:
        policy = (await resp.json(content_type=None))["interactionPolicy"]
    assert policy == {"canQuote": {"automaticApproval": [bridge.actor]}}  # Mastodon's "only me"
    quinn = remote.add_actor("quinn")
    request = quote_request(quinn, article, quote_note(remote, quinn, article))
    await send(bridge, remote, quinn, request)
    reject = await answer(remote, "Reject")
    assert reject["object"]["id"] == request["id"] and reject["actor"] == bridge.actor
    assert await n_rows(bridge, quotes) == 0 and (await article_api(bridge))["quotes"] == 0


async def test_policy_followers_accepts_only_followers(make_bridge: BridgeFactory, remote: RemoteInstance) -> None:
    bridge = await make_bridge(quote_policy="followers")
    article = await publish(bridge)
    async with bridge.http.get(article, headers=AP) as resp:
        policy = (await resp.json(content_type=None))["interactionPolicy"]
    assert policy == {"canQuote": {"automaticApproval": [f"{bridge.actor}/followers"]}}
    quinn, fanny = remote.add_actor("quinn"), remote.add_actor("fanny")
    await follow(bridge, remote, fanny)
    await send(bridge, remote, quinn, quote_request(quinn, article, quote_note(remote, quinn, article)))
    assert (await answer(remote, "Reject"))["to"] == [quinn.id]
    await send(bridge, remote, fanny, quote_request(fanny, article, quote_note(remote, fanny, article)))

    async def accepted_quote() -> bool:
        return any("result" in r.json for r in remote.received_of("Accept"))

    await wait_for(accepted_quote, timeout=15)
    (accept,) = [r.json for r in remote.received_of("Accept") if "result" in r.json]
    assert accept["to"] == [fanny.id]
    assert (await article_api(bridge))["quotes"] == 1


async def test_actor_carries_attribution_domains(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    async with bridge.http.get(bridge.actor, headers=AP) as resp:
        doc = await resp.json(content_type=None)
    assert doc["attributionDomains"] == ["blog.test"]  # the blog's own domain by default
    assert doc["@context"][2]["attributionDomains"] == {"@id": "toot:attributionDomains", "@type": "@id"}
    other = await make_bridge(attribution_domains=["example.org", "notes.example.org"])
    async with other.http.get(other.actor, headers=AP) as resp:
        assert (await resp.json(content_type=None))["attributionDomains"] == ["example.org", "notes.example.org"]
