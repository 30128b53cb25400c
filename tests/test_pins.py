"""Pinned articles end to end: admin API and CLI, the featured collection Mastodon reads, Add/Remove delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Bridge, wait_for
from .remote import RemoteInstance
from .test_cli_articles import cli
from .test_followers import follow

AP = {"Accept": "application/activity+json"}


@pytest.fixture
async def remote() -> AsyncIterator[RemoteInstance]:
    async with RemoteInstance() as instance:
        yield instance


async def publish(bridge: Bridge, slug: str) -> str:
    data = {"title": f"Épinglé « {slug} »", "url": f"http://blog.test/{slug}/", "content": "<p>Été 🌞</p>",
            "slug": slug}
    async with bridge.http.post(f"{bridge.url}/api/articles", json=data, headers=bridge.admin) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


async def featured(bridge: Bridge) -> dict[str, Any]:
    async with bridge.http.get(f"{bridge.actor}/collections/featured", headers=AP) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/activity+json"
        doc: dict[str, Any] = await resp.json(content_type=None)
        return doc


async def pin_api(bridge: Bridge, slug: str, method: str = "POST", headers: dict[str, str] | None = None
                  ) -> tuple[int, dict[str, Any]]:
    async with bridge.http.request(method, f"{bridge.url}/api/articles/{slug}/pin",
                                   headers=bridge.admin if headers is None else headers) as resp:
        return resp.status, await resp.json()


async def test_pin_and_unpin_through_the_api(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    await follow(bridge, remote, alice)
    first, _ = await publish(bridge, "premier"), await publish(bridge, "second")
    empty = await featured(bridge)
    assert (empty["type"], empty["totalItems"], empty["orderedItems"]) == ("OrderedCollection", 0, [])

    status, body = await pin_api(bridge, "premier")
    assert status == 200 and body["pinned"] and body["changed"] and body["queued"] == 1
    doc = await featured(bridge)
    assert doc["id"] == f"{bridge.actor}/collections/featured" and doc["totalItems"] == 1
    (item,) = doc["orderedItems"]
    assert item["id"] == first and item["type"] == "Note" and "Épinglé" in item["content"]
    assert "@context" not in item
    async with bridge.http.get(f"{bridge.url}/api/articles/premier", headers=bridge.admin) as resp:
        assert (await resp.json())["pinned"] is True

    async def added() -> bool:
        return bool(remote.received_of("Add"))

    await wait_for(added, timeout=15)
    got = remote.received_of("Add")[0]
    assert got.verified, got.reason
    # What Mastodon's Add handler compares: target is the actor's featured collection, object one of its posts.
    assert got.json["target"] == f"{bridge.actor}/collections/featured" and got.json["object"] == first
    assert got.json["actor"] == bridge.actor

    status, body = await pin_api(bridge, "premier")  # again: nothing changes, nothing is sent
    assert status == 200 and body["pinned"] and not body["changed"] and body["activity"] is None

    status, body = await pin_api(bridge, "premier", "DELETE")
    assert status == 200 and not body["pinned"] and body["changed"]
    assert (await featured(bridge))["totalItems"] == 0

    async def removed() -> bool:
        return bool(remote.received_of("Remove"))

    await wait_for(removed, timeout=15)
    got = remote.received_of("Remove")[0]
    assert got.verified and got.json["object"] == first
    assert got.json["target"] == f"{bridge.actor}/collections/featured"
    assert len(remote.received_of("Add")) == 1


async def test_pin_errors(bridge: Bridge) -> None:
    assert (await pin_api(bridge, "absent"))[0] == 404
    await publish(bridge, "a")
    status, body = await pin_api(bridge, "a", headers={})
    assert status == 401 and "admin token" in body["error"]
    for n in range(5):
        await publish(bridge, f"p{n}")
        assert (await pin_api(bridge, f"p{n}"))[0] == 200
    status, body = await pin_api(bridge, "a")
    assert status == 409 and "at most 5" in body["error"]
    async with bridge.http.delete(f"{bridge.url}/api/articles/p0", headers=bridge.admin) as resp:
        assert resp.status == 200
    assert [i["id"].rsplit("/", 1)[1] for i in (await featured(bridge))["orderedItems"]] == ["p4", "p3", "p2", "p1"]
    assert (await pin_api(bridge, "p0"))[0] == 410
    assert (await pin_api(bridge, "a"))[0] == 200  # the deleted one no longer counts


async def test_pin_and_unpin_from_the_cli(bridge: Bridge, tmp_path: Path) -> None:
    article = await publish(bridge, "carnet")
    code, out, err = await cli(bridge, "pin", "carnet", cwd=tmp_path)
    assert code == 0, err
    assert out.startswith("carnet: pinned") and "queued for 0 inbox(es)" in out
    assert [i["id"] for i in (await featured(bridge))["orderedItems"]] == [article]
    code, out, _ = await cli(bridge, "pin", "carnet", cwd=tmp_path)
    assert code == 0 and "already pinned" in out
    code, out, _ = await cli(bridge, "unpin", "carnet", cwd=tmp_path)
    assert code == 0 and out.startswith("carnet: unpinned")
    assert (await featured(bridge))["orderedItems"] == []
    code, _, err = await cli(bridge, "pin", "absent", cwd=tmp_path)
    assert code == 2 and "no article with slug absent" in err
