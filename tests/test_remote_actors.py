"""Resolver under load: coalesced fetches, per-host and global limits, prefetching a batch of authors.

The remote instances are real aiohttp servers on loopback that count requests and record how many were
in flight at once; the bridge's GETs are really signed (the resolver's guarded client signs them).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from fedibridge.errors import FetchError
from fedibridge.http_client import GuardedClient, Signer
from fedibridge.remote_actors import Resolver
from tests.test_http_client import OUR_KEY_ID, UA, ap_response, mastodon_actor, pem_of


@dataclass
class Instance:
    """A Mastodon-like instance that answers actor GETs after `delay`, counting hits and peak concurrency."""

    pem: str
    delay: float = 0.05
    hits: Counter[str] = field(default_factory=Counter)
    inflight: int = 0
    peak: int = 0
    server: TestServer | None = None

    async def actor(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await asyncio.sleep(self.delay)
            name = request.match_info["name"]
            if name.startswith("gone"):
                return web.Response(status=410)
            return ap_response(mastodon_actor(str(request.url.origin()), name, self.pem))
        finally:
            self.inflight -= 1

    def url(self, name: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/users/{name}"))


@pytest.fixture(scope="module")
def remote_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def instances(remote_key: rsa.RSAPrivateKey) -> AsyncIterator[list[Instance]]:
    """Three instances on 127.0.0.1, .2 and .3 (distinct hosts, as the per-host limit sees them)."""
    made: list[Instance] = []
    for ip in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        inst = Instance(pem_of(remote_key))
        app = web.Application()
        app.router.add_get("/users/{name}", inst.actor)
        inst.server = TestServer(app, host=ip)
        await inst.server.start_server()
        made.append(inst)
    yield made
    for inst in made:
        assert inst.server is not None
        await inst.server.close()


@pytest.fixture
async def client(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[GuardedClient]:
    guarded = GuardedClient(user_agent=UA, signer=Signer(rsa_key, OUR_KEY_ID), allow_private=True, timeout=5.0)
    async with guarded:
        yield guarded


async def test_fifty_concurrent_resolves_of_one_actor_send_one_get(
    instances: list[Instance], client: GuardedClient
) -> None:
    inst = instances[0]
    inst.delay = 0.2
    resolver = Resolver(client)
    got = await asyncio.gather(*(resolver.actor(inst.url("alice")) for _ in range(50)))
    assert inst.hits["/users/alice"] == 1
    assert all(a is got[0] for a in got)
    assert got[0].id == inst.url("alice")


async def test_key_lookup_joins_the_actor_fetch_under_way(instances: list[Instance], client: GuardedClient) -> None:
    """A prefetch of a reply's author and the signature check of its next POST ("<actor>#main-key") at the
    same moment: one GET of the actor serves both."""
    inst = instances[0]
    inst.delay = 0.2
    resolver = Resolver(client)
    alice = inst.url("alice")
    actor, key, key2 = await asyncio.gather(resolver.actor(alice), resolver.key(f"{alice}#main-key"),
                                            resolver.key(f"{alice}#main-key"))
    assert inst.hits["/users/alice"] == 1
    assert key == key2 == (alice, actor.public_key_pem)


async def test_plain_lookup_joins_a_refresh_under_way(instances: list[Instance], client: GuardedClient) -> None:
    inst = instances[0]
    inst.delay = 0.2
    resolver = Resolver(client)
    alice = inst.url("alice")
    fresh, plain = await asyncio.gather(resolver.actor(alice, refresh=True), resolver.actor(alice))
    assert inst.hits["/users/alice"] == 1 and fresh is plain


async def test_per_host_limit_is_what_each_server_sees(instances: list[Instance], client: GuardedClient) -> None:
    resolver = Resolver(client, per_host=3)
    names = [f"user{i}" for i in range(15)]
    results = await resolver.prefetch([inst.url(n) for inst in instances for n in names])
    assert all(not isinstance(r, FetchError) for r in results.values())
    for inst in instances:
        assert inst.peak == 3  # never more than the limit, and the limit was used
        assert sum(inst.hits.values()) == len(names)  # one GET per actor
    # hosts are fetched concurrently: all three were busy at once (45 fetches, not 3 at a time in all)
    assert sum(inst.peak for inst in instances) == 9


async def test_global_limit_caps_all_hosts_together(instances: list[Instance], client: GuardedClient) -> None:
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(sum(i.inflight for i in instances))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        resolver = Resolver(client, per_host=4, max_concurrent=5)
        await resolver.prefetch([inst.url(f"u{i}") for inst in instances for i in range(8)])
    finally:
        watcher.cancel()
    assert max(seen) == 5
    assert sum(sum(i.hits.values()) for i in instances) == 24


async def test_prefetch_fetches_each_actor_once_and_reports_failures(
    instances: list[Instance], client: GuardedClient
) -> None:
    now = [datetime(2026, 12, 2, 12, 0, tzinfo=UTC)]
    a, b = instances[0], instances[1]
    resolver = Resolver(client, ttl=timedelta(hours=1), clock=lambda: now[0])
    ids = [a.url("alice"), b.url("bob"), a.url("alice"), a.url("gone1"), b.url("bob"), a.url("carol")]
    results = await resolver.prefetch(ids)
    assert list(results) == [a.url("alice"), b.url("bob"), a.url("gone1"), a.url("carol")]
    assert isinstance(results[a.url("gone1")], FetchError)
    alice = results[a.url("alice")]
    assert not isinstance(alice, FetchError) and alice.id == a.url("alice")
    assert a.hits == Counter({"/users/alice": 1, "/users/gone1": 1, "/users/carol": 1})
    assert b.hits == Counter({"/users/bob": 1})

    # fresh: neither a second prefetch nor the key check of a later POST fetches again
    again = await resolver.prefetch(ids)
    assert again[a.url("alice")] is alice
    assert await resolver.key(f"{a.url('carol')}#main-key") == (a.url("carol"), alice.public_key_pem)
    assert sum(a.hits.values()) == 4 and sum(b.hits.values()) == 1  # only the failed one is tried again

    now[0] += timedelta(hours=2)  # stale: fetched anew
    await resolver.prefetch([a.url("alice")])
    assert a.hits["/users/alice"] == 2


async def test_a_caller_giving_up_does_not_cancel_the_others(
    instances: list[Instance], client: GuardedClient
) -> None:
    inst = instances[0]
    inst.delay = 0.3
    resolver = Resolver(client, per_host=1)
    impatient = asyncio.create_task(resolver.actor(inst.url("alice")))
    patient = asyncio.create_task(resolver.prefetch([inst.url("alice"), inst.url("bob")]))
    await asyncio.sleep(0.1)
    impatient.cancel()
    results: dict[str, Any] = await patient
    assert results[inst.url("alice")].id == inst.url("alice")
    assert results[inst.url("bob")].id == inst.url("bob")
    assert inst.hits == Counter({"/users/alice": 1, "/users/bob": 1}) and inst.peak == 1
    with pytest.raises(asyncio.CancelledError):
        await impatient


def test_limits_must_be_positive(client: GuardedClient) -> None:
    with pytest.raises(ValueError):
        Resolver(client, per_host=0)
