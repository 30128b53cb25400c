"""The account documents (vocab_account.py and the actor's new fields), pure: shapes Mastodon acts on."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from fedibridge import vocab, vocab_account
from fedibridge.models import Article
from fedibridge.vocab import AS_PUBLIC, CONTEXT, Site

from .test_vocab import ACTOR, BASE, FOLLOWERS, article, public_pem, site  # noqa: F401 (fixtures)

WHEN = datetime(2024, 7, 14, 10, 30, tzinfo=UTC)
NEW = "https://mastodon.example/users/nouveau"


def test_actor_fields_for_migration_and_attribution(site: Site) -> None:  # noqa: F811
    plain = vocab.actor_document(site)
    assert not {"alsoKnownAs", "movedTo", "attributionDomains"} & set(plain)
    doc = vocab.actor_document(replace(site, also_known_as=("https://old.example/users/a",),
                                       attribution_domains=("blog.example.org",)), moved_to=NEW)
    assert doc["alsoKnownAs"] == ["https://old.example/users/a"]
    assert doc["movedTo"] == NEW
    assert doc["attributionDomains"] == ["blog.example.org"]
    terms = CONTEXT[2]
    assert terms["movedTo"] == {"@id": "as:movedTo", "@type": "@id"}
    assert terms["alsoKnownAs"] == {"@id": "as:alsoKnownAs", "@type": "@id"}


def test_move(site: Site) -> None:  # noqa: F811
    move = vocab_account.move_activity(site, NEW, "k1", WHEN)
    assert move == {"@context": CONTEXT, "id": f"{BASE}/activities/k1", "type": "Move", "actor": ACTOR,
                    "object": ACTOR, "target": NEW, "published": "2024-07-14T10:30:00Z", "to": [FOLLOWERS]}


def test_add_remove_and_featured(site: Site) -> None:  # noqa: F811
    add = vocab_account.featured_change(site, "Add", f"{BASE}/articles/a", "k2", WHEN)
    assert (add["type"], add["object"], add["target"]) == ("Add", f"{BASE}/articles/a", f"{ACTOR}/collections/featured")
    assert add["to"] == [AS_PUBLIC] and add["cc"] == [FOLLOWERS]
    coll = vocab_account.featured_collection(site, [{"@context": CONTEXT, "id": "x", "type": "Note"}])
    assert coll == {"@context": CONTEXT, "id": f"{ACTOR}/collections/featured", "type": "OrderedCollection",
                    "totalItems": 1, "orderedItems": [{"id": "x", "type": "Note"}]}


def test_quote_documents(site: Site) -> None:  # noqa: F811
    stamp = vocab_account.quote_authorization(site, "abc", "https://m.example/users/q/statuses/1", f"{BASE}/articles/a")
    assert stamp == {"@context": CONTEXT, "id": f"{BASE}/quote_authorizations/abc", "type": "QuoteAuthorization",
                     "attributedTo": ACTOR, "interactingObject": "https://m.example/users/q/statuses/1",
                     "interactionTarget": f"{BASE}/articles/a"}
    request = {"id": "https://m.example/r/1", "type": "QuoteRequest", "actor": "https://m.example/users/q",
               "object": f"{BASE}/articles/a", "instrument": {"id": "https://m.example/users/q/statuses/1"}}
    accept = vocab_account.answer_quote_request(site, "Accept", request, "https://m.example/users/q", "k3",
                                                stamp["id"])
    assert accept["result"] == stamp["id"] and accept["to"] == ["https://m.example/users/q"]
    assert accept["object"] == {"id": "https://m.example/r/1", "type": "QuoteRequest",
                                "actor": "https://m.example/users/q", "object": f"{BASE}/articles/a",
                                "instrument": "https://m.example/users/q/statuses/1"}
    reject = vocab_account.answer_quote_request(site, "Reject", request, "https://m.example/users/q", "k4")
    assert reject["type"] == "Reject" and "result" not in reject


def test_interaction_policy_follows_the_setting(site: Site, article: Article) -> None:  # noqa: F811
    for policy, approved in (("public", [AS_PUBLIC]), ("followers", [FOLLOWERS]), ("nobody", [ACTOR])):
        obj = vocab.article_object(replace(site, quote_policy=policy), article)  # type: ignore[arg-type]
        assert obj["interactionPolicy"] == {"canQuote": {"automaticApproval": approved}}
