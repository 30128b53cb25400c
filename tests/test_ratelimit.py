"""Inbox rate limits: a flooding server gets 429 + Retry-After while another server's reply still becomes a
comment; per-actor buckets are charged only after the signature is proven; the buckets themselves."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from fedibridge import articles
from fedibridge.app import SERVICES
from fedibridge.config import Settings, validate
from fedibridge.errors import ConfigError
from fedibridge.ratelimit import TokenBuckets, retry_after
from fedibridge.tables import comments

from .conftest import Bridge, BridgeFactory, wait_for
from .remote import RemoteInstance


async def publish(bridge: Bridge) -> str:
    inp = articles.validate({"title": "Le café", "url": "http://blog.test/cafe/", "content": "<p>Du café.</p>",
                             "slug": "cafe", "language": "fr"})
    await articles.publish_one(bridge.store, bridge.app[SERVICES].site, inp, deliver=False)
    return bridge.app[SERVICES].site.article_id("cafe")


async def scrape(bridge: Bridge) -> str:
    async with bridge.http.get(f"{bridge.url}/metrics", headers=bridge.admin) as resp:
        assert resp.status == 200
        return await resp.text()


def sample(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert found, f"{series} missing from /metrics"
    return float(found.group(1))


async def comment_count(bridge: Bridge, **where: Any) -> int:
    cond = [getattr(comments.c, k) == v for k, v in where.items()]
    async with bridge.store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(comments).where(*cond))).scalar_one())


async def test_flooding_server_is_throttled_while_another_server_gets_through(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(moderation="open", inbox_host_burst=40, inbox_host_rate=2.0, inbox_actor_burst=1000)
    article_id = await publish(bridge)
    async with RemoteInstance() as flood, RemoteInstance() as quiet:
        senders = [flood.add_actor(f"bot{i}") for i in range(10)]
        # Mastodon-shaped replies from many accounts of one server: the host bucket is what stops them.
        jobs = [post(bridge, flood, senders[i % 10],
                     flood.create(senders[i % 10], flood.note(senders[i % 10], f"<p>spam {i}</p>", article_id)))
                for i in range(200)]
        flooding = asyncio.gather(*jobs)
        lea = quiet.add_actor("lea")
        reply = quiet.note(lea, "<p>Très bel article « vraiment » 👏</p>", article_id)
        started = time.monotonic()
        status, text = await quiet.send(lea, f"{bridge.url}/inbox", quiet.create(lea, reply))
        assert status == 202, text

        async def visible() -> bool:
            async with bridge.http.get(f"{bridge.url}/api/articles/cafe/comments") as resp:
                data = await resp.json()
            return any(c["ap_id"] == reply["id"] for c in data["comments"])

        await wait_for(visible, timeout=5)  # generous: what matters is that the flood does not queue it
        assert time.monotonic() - started < 5
        answers = await flooding
    statuses = [s for s, _ in answers]
    limited = [h.get("Retry-After", "") for s, h in answers if s == 429]
    accepted = statuses.count(202)
    assert len(limited) + accepted == 200 and limited, statuses
    assert 40 <= accepted < 100  # the burst, plus what 2 tokens a second refilled meanwhile
    assert all(int(h) >= 1 for h in limited)  # Retry-After: whole seconds
    text = await scrape(bridge)
    assert sample(text, 'fedibridge_inbox_rate_limited_total{scope="host"}') == len(limited)
    assert sample(text, 'fedibridge_inbox_rate_limited_total{scope="actor"}') == 0
    assert sample(text, 'fedibridge_inbox_requests_total{outcome="rate_limited"}') == len(limited)

    async def all_handled() -> bool:  # every 202 was stored and becomes a comment: nothing accepted is lost
        return await comment_count(bridge) == accepted + 1

    await wait_for(all_handled, timeout=30)


async def post(bridge: Bridge, remote: RemoteInstance, account: Any, activity: dict[str, Any]
               ) -> tuple[int, dict[str, str]]:
    """POST signed the way Mastodon signs; returns the status and the headers a sender reads (Retry-After)."""
    body = json.dumps(activity, ensure_ascii=False).encode()
    headers = remote.sign_cavage(account, f"{bridge.url}/inbox", body, datetime.now(UTC))
    headers.pop("Host", None)
    async with bridge.http.post(f"{bridge.url}/inbox", data=body, headers=headers) as resp:
        answer = await resp.json()
        if resp.status == 429:
            assert resp.content_type == "application/json" and "retry later" in answer["error"]
        return resp.status, dict(resp.headers)


async def test_retry_after_header_and_actor_bucket(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(inbox_actor_burst=3, inbox_actor_rate=0.01)
    article_id = await publish(bridge)
    async with RemoteInstance() as masto:
        noisy, other = masto.add_actor("noisy"), masto.add_actor("other")
        # Forged requests in noisy's name are refused 401 before its bucket is touched.
        for _ in range(5):
            status, _ = await masto.send(noisy, f"{bridge.url}/inbox", masto.like(noisy, article_id),
                                         tamper="signature")
            assert status == 401
        results = [await masto.send(noisy, f"{bridge.url}/inbox", masto.like(noisy, article_id)) for _ in range(5)]
        assert [s for s, _ in results] == [202, 202, 202, 429, 429]
        status, _ = await masto.send(other, f"{bridge.url}/inbox", masto.like(other, article_id))
        assert status == 202  # same server, another actor: its own bucket
        status, headers = await post(bridge, masto, noisy, masto.like(noisy, article_id))
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 100  # 1 token at 0.01/s
    text = await scrape(bridge)
    assert sample(text, 'fedibridge_inbox_rate_limited_total{scope="actor"}') == 3


def test_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(burst=3, rate=0.5, max_buckets=100, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(2.0)  # one token at 0.5/s
    assert buckets.take("b") == 0.0  # another key is untouched
    now[0] = 2.0
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    now[0] = 1000.0
    assert [buckets.take("a") for _ in range(4)][-1] > 0  # refilled to the burst, never beyond
    for i in range(1000):
        buckets.take(f"host{i}.example")
    assert len(buckets) == 100  # idle buckets are evicted, least recently used first
    assert TokenBuckets(burst=0, rate=0).take("x") == 0.0  # burst 0: no limit
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


def test_settings_are_checked() -> None:
    assert Settings().inbox_host_burst == 300 and Settings().inbox_actor_burst == 60
    validate(Settings(inbox_host_burst=0, inbox_host_rate=0))
    with pytest.raises(ConfigError, match="inbox_host_rate"):
        validate(Settings(inbox_host_rate=0))
    with pytest.raises(ConfigError, match="inbox_actor_burst"):
        validate(Settings(inbox_actor_burst=-1))
    with pytest.raises(ConfigError, match="document_cache_seconds"):
        validate(Settings(document_cache_seconds=-1))
