"""Discovery as a remote server reads it: WebFinger, host-meta, NodeInfo, actor, collections."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import quote

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .conftest import Bridge, BridgeFactory

AP = "application/activity+json"
LD = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'


async def mastodon_style_lookup(bridge: Bridge, handle: str) -> dict:
    """What Mastodon's ResolveAccountService does: WebFinger, follow rel=self, fetch the actor, check round trip."""
    user, domain = handle.lstrip("@").split("@")
    async with bridge.http.get(f"{bridge.url}/.well-known/webfinger",
                               params={"resource": f"acct:{user}@{domain}"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/jrd+json")
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        jrd = await resp.json(content_type=None)
    assert jrd["subject"] == f"acct:{user}@{domain}"
    self_link = next(link for link in jrd["links"] if link["rel"] == "self")
    assert self_link["type"] == AP
    async with bridge.http.get(self_link["href"], headers={"Accept": AP}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith(AP)
        actor = await resp.json(content_type=None)
    assert actor["id"] == self_link["href"]
    # Mastodon confirms preferredUsername@WebFinger host points back to the same actor
    async with bridge.http.get(f"{bridge.url}/.well-known/webfinger",
                               params={"resource": f"acct:{actor['preferredUsername']}@{domain}"}) as resp:
        back = await resp.json(content_type=None)
    assert any(link.get("href") == actor["id"] for link in back["links"])
    return actor


async def test_webfinger_and_actor_resolve_like_mastodon(bridge: Bridge) -> None:
    actor = await mastodon_style_lookup(bridge, "@blog@127.0.0.1:" + str(bridge.settings.port))
    assert actor["type"] == "Person"
    assert actor["preferredUsername"] == "blog"
    assert actor["name"] == "Carnet de Léa"
    assert "« en direct » 🌍" in actor["summary"]
    assert actor["url"] == "http://blog.test"
    assert actor["inbox"] == bridge.actor + "/inbox"
    assert actor["outbox"] == bridge.actor + "/outbox"
    assert actor["followers"] == bridge.actor + "/followers"
    assert actor["following"] == bridge.actor + "/following"
    assert actor["featured"] == bridge.actor + "/collections/featured"
    assert actor["endpoints"]["sharedInbox"] == bridge.url + "/inbox"
    key = actor["publicKey"]
    assert key["id"] == bridge.actor + "#main-key" and key["owner"] == bridge.actor
    load_pem_public_key(key["publicKeyPem"].encode())
    assert actor["discoverable"] is True and actor["indexable"] is True
    assert actor["manuallyApprovesFollowers"] is False
    assert actor["published"].endswith("Z")
    assert "https://www.w3.org/ns/activitystreams" in actor["@context"]
    assert "https://w3id.org/security/v1" in actor["@context"]
    assert any(a["type"] == "PropertyValue" and "blog.test" in a["value"] for a in actor["attachment"])


async def test_handle_on_blog_domain_with_bridge_elsewhere(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(domain="example.org", icon_url="http://blog.test/avatar.png",
                               header_url="http://blog.test/header.jpg")
    actor = await mastodon_style_lookup(bridge, "@blog@example.org")
    assert actor["icon"]["url"] == "http://blog.test/avatar.png"
    assert actor["image"]["url"] == "http://blog.test/header.jpg"
    # the actor URL itself is a valid resource too (Misskey and GoToSocial look up by URL)
    async with bridge.http.get(f"{bridge.url}/.well-known/webfinger", params={"resource": bridge.actor}) as resp:
        assert resp.status == 200
        assert (await resp.json(content_type=None))["subject"] == "acct:blog@example.org"


async def test_webfinger_errors(bridge: Bridge) -> None:
    wf = f"{bridge.url}/.well-known/webfinger"
    async with bridge.http.get(wf, params={"resource": "acct:someone@127.0.0.1"}) as resp:
        assert resp.status == 404
    async with bridge.http.get(wf, params={"resource": "acct:blog@elsewhere.example"}) as resp:
        assert resp.status == 404
    async with bridge.http.get(wf) as resp:
        assert resp.status == 400
        assert "resource" in (await resp.json())["error"]
    for bad in ("acct:", "acct:@", "nonsense", "acct:blog@"):
        async with bridge.http.get(wf + "?resource=" + quote(bad)) as resp:
            assert resp.status == 400, bad


async def test_actor_content_negotiation(bridge: Bridge) -> None:
    for accept in (AP, LD):
        async with bridge.http.get(bridge.actor, headers={"Accept": accept}) as resp:
            assert resp.status == 200, accept
            assert (await resp.json(content_type=None))["id"] == bridge.actor
    async with bridge.http.get(bridge.actor, headers={"Accept": "text/html"}, allow_redirects=False) as resp:
        assert resp.status in (302, 303)
        assert resp.headers["Location"] == "http://blog.test"


async def test_host_meta_xml_and_json(bridge: Bridge) -> None:
    async with bridge.http.get(f"{bridge.url}/.well-known/host-meta") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/xrd+xml")
        root = ET.fromstring(await resp.read())
    link = root.find("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")
    assert link is not None and link.get("rel") == "lrdd"
    assert link.get("template") == f"{bridge.url}/.well-known/webfinger?resource={{uri}}"
    async with bridge.http.get(f"{bridge.url}/.well-known/host-meta.json") as resp:
        doc = await resp.json(content_type=None)
    assert doc["links"][0]["template"].endswith("/.well-known/webfinger?resource={uri}")


async def test_nodeinfo_20_and_21(bridge: Bridge) -> None:
    async with bridge.http.get(f"{bridge.url}/.well-known/nodeinfo") as resp:
        links = (await resp.json(content_type=None))["links"]
    # The rels crawlers and servers match exactly (the NodeInfo protocol): the schema URL without '#'.
    hrefs = {link["rel"]: link["href"] for link in links}
    assert set(hrefs) == {f"http://nodeinfo.diaspora.software/ns/schema/{v}" for v in ("2.0", "2.1")}
    for version in ("2.0", "2.1"):
        href = hrefs[f"http://nodeinfo.diaspora.software/ns/schema/{version}"]
        async with bridge.http.get(href) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == (
                f'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/{version}#"')
            doc = await resp.json(content_type=None)
        assert doc["version"] == version
        assert doc["software"]["name"] == "fedibridge"
        assert doc["software"]["version"]
        assert doc["protocols"] == ["activitypub"]
        assert doc["usage"]["users"]["total"] == 1
        assert doc["usage"]["localPosts"] == 0
        assert doc["openRegistrations"] is False
    async with bridge.http.get(f"{bridge.url}/nodeinfo/3.0") as resp:
        assert resp.status == 404


async def test_collections_are_paged_ordered_collections(bridge: Bridge) -> None:
    # /followers: see test_privacy.py; /collections/featured embeds its items unpaged, as Mastodon's: test_pins.py
    for path in ("/outbox", "/following"):
        async with bridge.http.get(bridge.actor + path, headers={"Accept": AP}) as resp:
            assert resp.status == 200, path
            coll = await resp.json(content_type=None)
        assert coll["type"] == "OrderedCollection"
        assert coll["id"] == bridge.actor + path
        assert coll["totalItems"] == 0
        async with bridge.http.get(coll["first"], headers={"Accept": AP}) as resp:
            page = await resp.json(content_type=None)
        assert page["type"] == "OrderedCollectionPage"
        assert page["partOf"] == coll["id"]
        assert page["orderedItems"] == []
    async with bridge.http.get(bridge.actor + "/outbox?page=abc") as resp:
        assert resp.status == 400
