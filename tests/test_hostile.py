"""Hostile input across the public surface: every case gets a clear 4xx and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from fedibridge.tables import articles, inbox_items
from tests.conftest import Bridge
from tests.remote import RemoteInstance

BOMB = b"[" * 200_000 + b"]" * 200_000  # deep nesting: json would recurse until it blows the stack


@pytest.fixture
async def remote() -> AsyncIterator[RemoteInstance]:
    async with RemoteInstance() as instance:
        yield instance


async def rows(bridge: Bridge, table: object) -> int:
    async with bridge.store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_nesting_bomb_at_the_inbox_is_400(bridge: Bridge, remote: RemoteInstance) -> None:
    alice = remote.add_actor("alice")
    status, text = await remote.send(alice, f"{bridge.url}/inbox", BOMB)
    assert status in (400, 413), text  # refused as malformed (or, if larger than the cap, as too big)
    small_bomb = b"[" * 50_000 + b"]" * 50_000
    status, text = await remote.send(alice, f"{bridge.url}/inbox", small_bomb)
    assert status == 400, text
    assert await rows(bridge, inbox_items) == 0


async def test_nesting_bomb_at_the_admin_api_is_400(bridge: Bridge) -> None:
    body = b'{"title": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    async with bridge.http.post(f"{bridge.url}/api/articles", data=body, headers={
            **bridge.admin, "Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert "error" in await resp.json()
    assert await rows(bridge, articles) == 0


async def test_chunked_body_over_the_cap_is_413(make_bridge) -> None:  # type: ignore[no-untyped-def]
    bridge = await make_bridge(max_inbox_bytes=10_000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b" " * 1000  # no Content-Length: the cap must hold while streaming

    async with bridge.http.post(f"{bridge.url}/inbox", data=chunks(),
                                headers={"Content-Type": "application/activity+json"}) as resp:
        assert resp.status == 413
    assert await rows(bridge, inbox_items) == 0


@pytest.mark.parametrize("path", [
    "/api/comments/99999999999999999999/approve",  # beyond any integer column
    "/api/comments/-1/approve",
    "/api/comments/abc/approve",
])
async def test_odd_ids_are_404_not_500(bridge: Bridge, path: str) -> None:
    async with bridge.http.post(bridge.url + path, headers=bridge.admin) as resp:
        assert resp.status in (404, 405), resp.status


@pytest.mark.parametrize("query", ["page=0", "page=-3", "page=99999999999999", "page=%00", "page=1e3"])
async def test_odd_pages_are_400(bridge: Bridge, query: str) -> None:
    async with bridge.http.get(f"{bridge.actor}/outbox?{query}",
                               headers={"Accept": "application/activity+json"}) as resp:
        assert resp.status == 400


async def test_admin_api_refuses_without_or_with_a_wrong_token(bridge: Bridge) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dGVzdA=="},
                    {"Authorization": "Bearer " + bridge.token + "x"}):
        async with bridge.http.post(f"{bridge.url}/api/articles", json={"title": "x"}, headers=headers) as resp:
            assert resp.status == 401
        async with bridge.http.get(f"{bridge.url}/api/comments?status=all", headers=headers) as resp:
            assert resp.status in (400, 401)  # without a token, /api/comments needs ?url= (the public alias)
    assert await rows(bridge, articles) == 0


async def test_webfinger_with_hostile_resources(bridge: Bridge) -> None:
    for resource in ("acct:blog@127.0.0.1%00", "acct:" + "a" * 5000 + "@x", "acct:blog@@", "javascript:alert(1)"):
        async with bridge.http.get(f"{bridge.url}/.well-known/webfinger", params={"resource": resource}) as resp:
            assert resp.status in (400, 404), (resource, resp.status)
