"""The delivery worker against real loopback inboxes: outcomes, retries, limits, domain health, leases."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import event, select, update

from fedibridge import enqueue as queue
from fedibridge.app import SERVICES
from fedibridge.delivery import BUSY_HOLD, BUSY_RATE
from fedibridge.delivery_rows import backoff, serialize
from fedibridge.http_client import retry_after_seconds
from fedibridge.signatures import http_date
from fedibridge.store import Store, utcnow
from fedibridge.tables import activities, deliveries, domains, followers
from fedibridge.webhook import headers as webhook_headers
from tests.conftest import Bridge, BridgeFactory, free_port, wait_for
from tests.loopback import LoopbackServer
from tests.remote import RemoteInstance

Handler = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


class Inbox(LoopbackServer):
    """A tiny inbox server: scripted answers, records requests and the peak number of concurrent ones."""

    def __init__(self, handler: Handler | None = None) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.active = 0
        self.peak = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_route("POST", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            body = await request.read()
            self.requests.append(({k: v for k, v in request.headers.items()}, body))
            if self.handler is None:
                return web.Response(status=202)
            return await self.handler(request, len(self.requests))
        finally:
            self.active -= 1


def create_payload(bridge: Bridge, text: str = "Élan « vital » 🌍") -> dict[str, Any]:
    key = uuid.uuid4().hex
    note = f"{bridge.settings.base}/articles/{key}"
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{bridge.settings.base}/activities/{key}", "type": "Create", "actor": bridge.actor,
        "to": ["https://www.w3.org/ns/activitystreams#Public"], "cc": [f"{bridge.actor}/followers"],
        "object": {"id": note, "type": "Note", "attributedTo": bridge.actor, "content": f"<p>{text}</p>",
                   "to": ["https://www.w3.org/ns/activitystreams#Public"], "published": "2024-05-01T10:00:00Z"},
    }


async def enqueue(bridge: Bridge, inboxes: list[str], payload: dict[str, Any] | None = None,
                  **row: Any) -> int:
    """Store an activity and its delivery rows the way publishing does, then wake the worker."""
    payload = payload or create_payload(bridge)
    async with bridge.store.begin() as conn:
        aid = await insert_activity(conn, payload, inboxes)
        if row:
            await conn.execute(update(deliveries).where(deliveries.c.activity_id == aid).values(**row))
    bridge.app[SERVICES].wake.delivery.set()
    return aid


async def insert_activity(conn: Any, payload: dict[str, Any], inboxes: list[str]) -> int:
    """Store an activity and its delivery rows in the caller's transaction, as publishing does."""
    now = utcnow()
    result = await conn.execute(activities.insert().values(
        key=uuid.uuid4().hex, type=payload["type"], object_id=payload["object"]["id"], payload=payload,
        in_outbox=True, published=now))
    aid = int(result.inserted_primary_key[0])
    await queue.enqueue_to_inboxes(conn, aid, inboxes, now)
    return aid


async def rows(bridge: Bridge, activity_id: int | None = None) -> list[Any]:
    async with bridge.store.connect() as conn:
        stmt = select(deliveries).order_by(deliveries.c.id)
        if activity_id is not None:
            stmt = stmt.where(deliveries.c.activity_id == activity_id)
        return list((await conn.execute(stmt)).all())


async def until_state(bridge: Bridge, activity_id: int, state: str, within: float = 10.0) -> Any:
    async def check() -> bool:
        return all(r.state == state and r.locked_by is None for r in await rows(bridge, activity_id))
    await wait_for(check, within)
    return (await rows(bridge, activity_id))[0]


async def until_attempted(bridge: Bridge, activity_id: int, attempts: int = 1) -> Any:
    async def check() -> bool:
        r = (await rows(bridge, activity_id))[0]
        return bool(r.attempts >= attempts and r.locked_by is None)
    await wait_for(check, 10)
    return (await rows(bridge, activity_id))[0]


async def make_due(bridge: Bridge, activity_id: int) -> None:
    """Skip the backoff wait: the retry is due now."""
    async with bridge.store.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.activity_id == activity_id)
                           .values(next_attempt_at=utcnow()))
    bridge.app[SERVICES].wake.delivery.set()


async def add_follower(bridge: Bridge, actor: str, inbox: str, shared: str | None) -> None:
    async with bridge.store.begin() as conn:
        await conn.execute(followers.insert().values(actor_id=actor, handle="@x@remote", inbox=inbox,
                                                     shared_inbox=shared, since=utcnow()))


async def domain(bridge: Bridge, host: str) -> Any:
    async with bridge.store.connect() as conn:
        return (await conn.execute(select(domains).where(domains.c.host == host))).first()


# ------------------------------------------------------------------------------------------- pure parts
def test_backoff_spreads_sixteen_attempts_over_about_two_days() -> None:
    waits_min = sum(n**4 + 15 for n in range(1, 16))
    waits_max = sum(n**4 + 15 + 30 * (n + 1) for n in range(1, 16))
    assert 2.0 < waits_min / 86400 and waits_max / 86400 < 2.2
    assert all(n**4 + 15 <= backoff(n) <= n**4 + 15 + 30 * (n + 1) for n in range(1, 17) for _ in range(20))
    assert len({backoff(3) for _ in range(50)}) > 1  # jitter


def test_retry_after_parsing() -> None:
    now = utcnow()
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds(http_date(now + timedelta(seconds=300)), now) == pytest.approx(300, abs=1.5)
    assert retry_after_seconds(http_date(now - timedelta(seconds=300)), now) == 0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None
    assert retry_after_seconds("99999999", now) == 86400


def test_serialize_keeps_utf8_and_is_compact() -> None:
    assert serialize({"a": "« é 🌍 »", "b": [1]}) == '{"a":"« é 🌍 »","b":[1]}'.encode()


# ------------------------------------------------------------------------------------------- outcomes
async def test_delivers_signed_create_with_exact_bytes(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        payload = create_payload(bridge, "Déjà « vu » 🎉")
        aid = await enqueue(bridge, [remote.shared_inbox], payload)
        row = await until_state(bridge, aid, "done")
        assert row.attempts == 1 and row.last_status == 202 and row.finished_at is not None
        [got] = remote.received
        assert got.verified, got.reason
        assert got.key_id == f"{bridge.actor}#main-key"
        assert got.body == serialize(payload)
        assert got.json["object"]["content"] == "<p>Déjà « vu » 🎉</p>"
        assert got.headers["Content-Type"] == "application/activity+json"
        dom = await domain(bridge, remote.host)
        assert dom.last_success is not None and dom.failing_since is None
        assert bridge.app[SERVICES].metrics.value("fedibridge_deliveries_total", outcome="delivered") == 1


async def test_same_bytes_to_every_target(bridge: Bridge) -> None:
    async with RemoteInstance() as a, RemoteInstance(host_ip="127.0.0.2") as b:
        aid = await enqueue(bridge, [a.shared_inbox, b.shared_inbox])
        await until_state(bridge, aid, "done")
        assert a.received[0].body == b.received[0].body
        assert a.received[0].verified and b.received[0].verified


async def test_500_is_retried_then_delivered(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        remote.inbox_status = lambda rec: 500 if len(remote.received) == 1 else 202
        aid = await enqueue(bridge, [remote.shared_inbox])
        row = await until_attempted(bridge, aid)
        assert row.state == "pending" and row.last_status == 500
        wait = (row.next_attempt_at - utcnow()).total_seconds()
        assert 1**4 + 15 - 2 <= wait <= 1**4 + 15 + 60  # backoff(1), not immediately
        assert (await domain(bridge, remote.host)).failing_since is not None
        await asyncio.sleep(0.3)
        assert len(remote.received) == 1  # nothing before it is due
        await make_due(bridge, aid)
        row = await until_state(bridge, aid, "done")
        assert row.attempts == 2 and row.last_error is None
        assert [r.verified for r in remote.received] == [True, True]
        assert (await domain(bridge, remote.host)).failing_since is None
        metrics = bridge.app[SERVICES].metrics
        assert metrics.value("fedibridge_deliveries_total", outcome="retry") == 1
        assert metrics.value("fedibridge_deliveries_total", outcome="delivered") == 1


async def test_network_error_is_retried(bridge: Bridge) -> None:
    aid = await enqueue(bridge, [f"http://127.0.0.1:{free_port()}/inbox"])  # nobody listens
    row = await until_attempted(bridge, aid)
    assert row.state == "pending" and row.last_status is None and "connect" in row.last_error


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_is_honoured(bridge: Bridge, status: int) -> None:
    async def answer(request: web.Request, n: int) -> web.Response:
        return web.Response(status=status, headers={"Retry-After": "600"})

    async with Inbox(answer) as inbox:
        aid = await enqueue(bridge, [f"{inbox.url}/inbox"])
        row = await until_attempted(bridge, aid)
        assert row.state == "pending" and row.last_status == status
        assert (row.next_attempt_at - utcnow()).total_seconds() == pytest.approx(600, abs=5)


async def test_retry_after_http_date_is_honoured(bridge: Bridge) -> None:
    async def answer(request: web.Request, n: int) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": http_date(utcnow() + timedelta(hours=2))})

    async with Inbox(answer) as inbox:
        aid = await enqueue(bridge, [f"{inbox.url}/inbox"])
        row = await until_attempted(bridge, aid)
        assert (row.next_attempt_at - utcnow()).total_seconds() == pytest.approx(7200, abs=5)


async def test_404_fails_permanently(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        remote.inbox_status = 404
        aid = await enqueue(bridge, [remote.shared_inbox])
        row = await until_state(bridge, aid, "failed")
        assert row.attempts == 1 and row.last_status == 404 and row.last_error.startswith("HTTP 404")
        await asyncio.sleep(1.2)  # a poll later: no retry
        assert len(remote.received) == 1
        assert (await domain(bridge, remote.host)) is None or (await domain(bridge, remote.host)).failing_since is None


async def test_410_from_personal_inbox_removes_the_follower(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        alice = remote.add_actor("alice", shared_inbox=False)
        bob = remote.add_actor("bob", shared_inbox=False)
        await add_follower(bridge, alice.id, alice.inbox, None)
        await add_follower(bridge, bob.id, bob.inbox, None)
        remote.inbox_status = lambda rec: 410 if rec.path == "/users/alice/inbox" else 202
        aid = await enqueue(bridge, [alice.inbox, bob.inbox])

        async def settled() -> bool:
            return all(r.state != "pending" for r in await rows(bridge, aid))
        await wait_for(settled)
        async with bridge.store.connect() as conn:
            left = (await conn.execute(select(followers.c.actor_id))).scalars().all()
        assert left == [bob.id]
        assert bridge.app[SERVICES].metrics.value("fedibridge_deliveries_total", outcome="gone") == 1


async def test_410_from_shared_inbox_keeps_followers(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        alice = remote.add_actor("alice")
        await add_follower(bridge, alice.id, alice.inbox, remote.shared_inbox)
        remote.inbox_status = 410
        aid = await enqueue(bridge, [remote.shared_inbox])
        row = await until_state(bridge, aid, "failed")
        assert row.last_status == 410
        async with bridge.store.connect() as conn:
            assert (await conn.execute(select(followers.c.actor_id))).scalars().all() == [alice.id]


async def test_gives_up_after_max_attempts(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(delivery_max_attempts=3)
    async with RemoteInstance() as remote:
        remote.inbox_status = 502
        aid = await enqueue(bridge, [remote.shared_inbox], attempts=2)
        row = await until_state(bridge, aid, "failed")
        assert row.attempts == 3 and "gave up after 3 attempts" in row.last_error
        assert bridge.app[SERVICES].metrics.value("fedibridge_deliveries_total", outcome="failed") == 1


async def test_per_host_limit(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(delivery_per_host=2)

    async def slow(request: web.Request, n: int) -> web.Response:
        await asyncio.sleep(0.15)
        return web.Response(status=202)

    async with Inbox(slow) as one, Inbox(slow) as other:
        aid = await enqueue(bridge, [f"{one.url}/users/u{i}/inbox" for i in range(8)]
                            + [f"{other.url}/users/u{i}/inbox" for i in range(8)])
        await until_state(bridge, aid, "done")
        assert one.peak == 2 and other.peak == 2  # parallel, but never more than the limit
        assert len(one.requests) == len(other.requests) == 8


async def test_global_limit(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(delivery_concurrency=3, delivery_per_host=10)

    async def slow(request: web.Request, n: int) -> web.Response:
        await asyncio.sleep(0.15)
        return web.Response(status=202)

    async with Inbox(slow) as one:
        aid = await enqueue(bridge, [f"{one.url}/users/u{i}/inbox" for i in range(9)])
        await until_state(bridge, aid, "done")
        assert one.peak == 3


# ------------------------------------------------------------------------------------------- domains
async def test_domain_marked_unavailable_after_failing_for_days(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        remote.inbox_status = 503
        async with bridge.store.begin() as conn:
            await conn.execute(domains.insert().values(host=remote.host, unavailable=False,
                                                       failing_since=utcnow() - timedelta(days=8)))
        aid = await enqueue(bridge, [remote.shared_inbox])
        await until_attempted(bridge, aid)
        assert (await domain(bridge, remote.host)).unavailable is True


async def test_a_healthy_hosts_success_is_written_once_an_hour_not_with_every_batch(bridge: Bridge) -> None:
    """Each written success held SQLite's write lock (and the 202s behind it); a failure's streak still
    ends with the very next success."""
    async with RemoteInstance() as remote:
        first = await enqueue(bridge, [remote.shared_inbox])
        await until_state(bridge, first, "done")
        assert (await domain(bridge, remote.host)).last_success is not None
        marker = utcnow() - timedelta(days=2)  # rewritten only if a success is written again
        async with bridge.store.begin() as conn:
            await conn.execute(update(domains).where(domains.c.host == remote.host).values(last_success=marker))
        second = await enqueue(bridge, [remote.shared_inbox], create_payload(bridge, "Encore « une » 🎈"))
        await until_state(bridge, second, "done")
        assert (await domain(bridge, remote.host)).last_success == marker  # written within the hour: not again

        remote.inbox_status = lambda rec: 500 if len(remote.received) == 3 else 202
        third = await enqueue(bridge, [remote.shared_inbox], create_payload(bridge, "Troisième 🎯"))
        await until_attempted(bridge, third)
        assert (await domain(bridge, remote.host)).failing_since is not None
        await make_due(bridge, third)
        await until_state(bridge, third, "done")
        dom = await domain(bridge, remote.host)
        assert dom.failing_since is None and dom.last_success > marker  # the streak ended at once
        assert len(remote.received) == 4


async def test_unavailable_domain_is_skipped_except_one_probe_a_day(bridge: Bridge) -> None:
    async with RemoteInstance() as remote:
        async with bridge.store.begin() as conn:
            await conn.execute(domains.insert().values(host=remote.host, unavailable=True,
                                                       failing_since=utcnow() - timedelta(days=9)))
        first = await enqueue(bridge, [remote.shared_inbox])
        await until_state(bridge, first, "done")  # the probe went through…
        dom = await domain(bridge, remote.host)
        assert dom.unavailable is False and dom.failing_since is None  # …and the host is back
        assert len(remote.received) == 1

        async with bridge.store.begin() as conn:  # down again the same day: no second probe
            await conn.execute(update(domains).where(domains.c.host == remote.host).values(unavailable=True))
        second = await enqueue(bridge, [remote.shared_inbox])
        row = await until_state(bridge, second, "failed")
        assert row.last_error == "domain unavailable" and row.attempts == 0
        assert len(remote.received) == 1


# ------------------------------------------------------------------------------------------- webhook
async def test_webhook_is_signed_with_hmac(make_bridge: BridgeFactory) -> None:
    secret = "s3cr3t-clé"
    bridge = await make_bridge(webhook_secret=secret)
    async with Inbox() as hook:
        body = json.dumps({"event": "comment.created", "comment": {"content_html": "<p>Très « bien » 👍</p>"}},
                          ensure_ascii=False)
        async with bridge.store.begin() as conn:
            await conn.run_sync(queue.enqueue_webhook, f"{hook.url}/hooks/fediverse", body, utcnow())
        bridge.app[SERVICES].wake.delivery.set()

        async def got() -> bool:
            return bool(hook.requests)
        await wait_for(got)
        headers, raw = hook.requests[0]
        assert raw == body.encode("utf-8")
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        assert headers["X-Fedibridge-Signature"] == f"sha256={expected}"
        assert headers["X-Fedibridge-Event"] == "comment.created"
        assert headers["Content-Type"] == "application/json"
        assert "Signature" not in headers  # not an ActivityPub request
        [row] = await rows(bridge)
        assert row.kind == "webhook"
        await wait_for(lambda: _state_is(bridge, row.id, "done"))


async def _state_is(bridge: Bridge, row_id: int, state: str) -> bool:
    return any(r.id == row_id and r.state == state for r in await rows(bridge))


def test_webhook_headers_tampered_body_does_not_match() -> None:
    h = webhook_headers('{"event":"comment.approved"}', "k")
    forged = hmac.new(b"k", b'{"event":"comment.rejected"}', hashlib.sha256).hexdigest()
    assert h["X-Fedibridge-Signature"] != f"sha256={forged}" and h["X-Fedibridge-Event"] == "comment.approved"
    assert "X-Fedibridge-Event" not in webhook_headers("not json", "k")


async def test_webhook_5xx_is_retried(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(webhook_secret="k")

    async def fail(request: web.Request, n: int) -> web.Response:
        return web.Response(status=500)

    async with Inbox(fail) as hook:
        async with bridge.store.begin() as conn:
            await conn.run_sync(queue.enqueue_webhook, f"{hook.url}/hook", '{"event":"x"}', utcnow())
        bridge.app[SERVICES].wake.delivery.set()

        async def retried() -> bool:
            r = await rows(bridge)
            return bool(r and r[0].attempts == 1 and r[0].locked_by is None)
        await wait_for(retried)
        [row] = await rows(bridge)
        assert row.state == "pending" and row.next_attempt_at > utcnow()


# ------------------------------------------------------------------------------------------- leases
async def test_rows_of_a_dead_worker_are_picked_up(make_bridge: BridgeFactory) -> None:
    web_only = await make_bridge(role="web")
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    dead_pid = dead.pid  # reaped: no process has this pid now
    async with RemoteInstance() as expired, RemoteInstance() as held, RemoteInstance() as local_dead:
        past, future = utcnow() - timedelta(seconds=5), utcnow() + timedelta(minutes=5)
        a = await enqueue(web_only, [expired.shared_inbox], locked_until=past, locked_by="elsewhere:1:a")
        b = await enqueue(web_only, [held.shared_inbox], locked_until=future, locked_by="elsewhere:2:b")
        c = await enqueue(web_only, [local_dead.shared_inbox], locked_until=future,
                          locked_by=f"{socket.gethostname()}:{dead_pid}:c")
        # The worker signs with the public base URL, where the web process serves the key.
        worker = await make_bridge(role="worker", base_url=web_only.settings.base_url)
        await until_state(worker, a, "done")  # lease expired
        await until_state(worker, c, "done")  # its worker process no longer exists on this machine
        assert expired.received[0].verified and local_dead.received[0].verified
        await asyncio.sleep(1.2)
        row = (await rows(worker, b))[0]
        assert row.state == "pending" and row.locked_by == "elsewhere:2:b" and not held.received


async def test_graceful_shutdown_finishes_in_flight_and_returns_the_rest(
        make_bridge: BridgeFactory, database_url: str) -> None:
    bridge = await make_bridge(delivery_per_host=1)
    started = asyncio.Event()

    async def slow(request: web.Request, n: int) -> web.Response:
        started.set()
        await asyncio.sleep(1.0)
        return web.Response(status=202)

    async with Inbox(slow) as inbox:
        aid = await enqueue(bridge, [f"{inbox.url}/users/u{i}/inbox" for i in range(3)])
        await asyncio.wait_for(started.wait(), 10)
        worker_id = bridge.app[SERVICES].worker_id
        await bridge.runner.cleanup()  # what SIGTERM does in `serve`
        assert len(inbox.requests) == 1
    store = await Store.open(database_url)
    try:
        async with store.connect() as conn:
            states = (await conn.execute(select(deliveries).where(deliveries.c.activity_id == aid)
                                         .order_by(deliveries.c.id))).all()
    finally:
        await store.close()
    assert [r.state for r in states].count("done") == 1  # the in-flight POST was recorded
    returned = [r for r in states if r.state == "pending"]
    assert len(returned) == 2
    assert all(r.locked_until is None and r.locked_by is None and r.attempts == 0 for r in returned)
    assert worker_id


async def test_two_workers_share_a_fan_out_without_duplicates(make_bridge: BridgeFactory) -> None:
    first = await make_bridge(role="worker")
    second = await make_bridge(role="worker")
    per_inbox: dict[str, int] = {}

    async def count(request: web.Request, n: int) -> web.Response:
        per_inbox[request.path] = per_inbox.get(request.path, 0) + 1
        await asyncio.sleep(0.01)
        return web.Response(status=202)

    async with Inbox(count) as inbox:
        aid = await enqueue(first, [f"{inbox.url}/users/u{i}/inbox" for i in range(300)])
        second.app[SERVICES].wake.delivery.set()
        await until_state(first, aid, "done", within=30)
        assert len(per_inbox) == 300 and set(per_inbox.values()) == {1}
        by_worker = [first.app[SERVICES].metrics.value("fedibridge_deliveries_total", outcome="delivered"),
                     second.app[SERVICES].metrics.value("fedibridge_deliveries_total", outcome="delivered")]
        assert sum(by_worker) == 300


async def test_delivery_rows_name_each_server_once_however_spelled(database_url: str) -> None:
    """Per-host limits and domain health key on the row's host: one server, one key (hosts.netloc_of)."""
    store = await Store.open(database_url)
    try:
        async with store.begin() as conn:
            activity_id = (await conn.execute(activities.insert().values(
                key="spellings", type="Create", payload={}, published=utcnow(),
            ))).inserted_primary_key[0]
            await queue.enqueue_to_inboxes(conn, activity_id, [
                "https://Mastodon.Example./inbox", "https://mastodon.example/users/a/inbox",
                "https://mastodon.example:443/users/b/inbox", "https://bücher.example/inbox",
                "https://XN--BCHER-KVA.example/users/c/inbox", "http://mastodon.example:8080/inbox",
            ], utcnow())
        async with store.connect() as conn:
            hosts = (await conn.execute(select(deliveries.c.host))).scalars().all()
    finally:
        await store.close()
    assert sorted(set(hosts)) == ["mastodon.example", "mastodon.example:8080", "xn--bcher-kva.example"]
    assert len(hosts) == 6


async def test_deliveries_yield_to_a_busy_inbox(make_bridge: BridgeFactory) -> None:
    """Role all: while this process's inbox takes a burst (>= 40 activities/s), deliveries keep an eighth of
    their share of the event loop (a 202 cannot wait, a delivery can), also through a pause in the burst
    shorter than BUSY_HOLD; a trickle does not slow them, and once the burst is over they get all of it again."""
    bridge = await make_bridge(delivery_concurrency=32, delivery_per_host=32,
                               inbox_actor_burst=0, inbox_host_burst=0)

    async def slow(request: web.Request, n: int) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(status=202)

    servers = [Inbox(slow) for _ in range(4)]  # 4 servers: the HTTP client opens at most 8 connections to one
    for server in servers:
        await server.start()
    try:
        async with RemoteInstance() as masto:
            lea = masto.add_actor("lea")

            async def like() -> None:  # a signed Like, stored before its 202
                status, text = await masto.send(lea, f"{bridge.url}/inbox",
                                                masto.like(lea, f"{bridge.settings.base}/articles/nope"))
                assert status == 202, text

            busy_seconds, dipped = [0.0], [False]

            async def peak_while(task: asyncio.Task[None], busy_only: bool = False) -> int:
                """Peak deliveries in flight; with busy_only, counted only once the inbox has been busy (as the
                bridge sees it, through dips shorter than BUSY_HOLD) for longer than a delivery lasts: a lull
                of BUSY_HOLD on a loaded machine rightly lets deliveries take their whole share, and those
                would still be in flight."""
                loop = asyncio.get_running_loop()
                peak, busy_since, last_busy = 0, None, float("-inf")
                while not task.done():
                    now = loop.time()
                    if bridge.services.wake.accept_rate() >= BUSY_RATE:
                        busy_since, last_busy = busy_since or now, now
                    elif now - last_busy >= BUSY_HOLD:
                        busy_since = None
                    else:
                        dipped[0] = True
                    if not busy_only or busy_since is not None and now - busy_since >= 0.5:
                        peak = max(peak, sum(s.active for s in servers))
                        busy_seconds[0] += 0.01 if busy_only else 0
                    await asyncio.sleep(0.01)
                await task
                return peak

            async def trickle() -> None:  # 5 a second, for 2 s
                for _ in range(10):
                    await like()
                    await asyncio.sleep(0.2)

            sent_in_burst = []

            async def burst() -> None:  # 12 senders back to back for 2.4 s, well over 40 a second, with a pause
                # of 0.6 s after 1.2 s: two quarter-second slots without an accept, as a stall on a loaded machine
                # makes (such a dip once let deliveries claim their whole share in the middle of a burst).
                # (4 senders were once too few on a loaded CI machine: at ~150 ms a request they made ~27 a
                # second, so the inbox was rightly not busy and deliveries rightly took their whole share.)
                loop = asyncio.get_running_loop()
                start = loop.time()
                pause, resume, until = start + 1.2, start + 1.8, start + 3.0

                async def sender() -> None:
                    while (now := loop.time()) < until:
                        if pause <= now < resume:
                            await asyncio.sleep(resume - now)
                            continue
                        await like()
                        sent_in_burst.append(1)

                await asyncio.gather(*(sender() for _ in range(12)))

            first = await enqueue(bridge, [f"{s.url}/users/t{i}/inbox" for s in servers for i in range(40)])
            assert await peak_while(asyncio.create_task(trickle())) > 8
            await until_state(bridge, first, "done")
            task = asyncio.create_task(burst())
            await asyncio.sleep(0.5)  # the burst is under way and measured
            aid = await enqueue(bridge, [f"{s.url}/users/u{i}/inbox" for s in servers for i in range(60)])
            during = await peak_while(task, busy_only=True)
        await asyncio.sleep(0.5)  # a window without accepts has passed
        after = 0
        while any(r.state != "done" for r in await rows(bridge, aid)):
            after = max(after, sum(s.active for s in servers))
            await asyncio.sleep(0.01)
        assert sum(len(s.requests) for s in servers) == 400
        assert len(sent_in_burst) / 2.4 >= 2 * BUSY_RATE, "the burst was not one: the test's premise failed"
        assert busy_seconds[0] >= 0.5, "the inbox was never busy for long: the test's premise failed"
        assert dipped[0], "the burst's pause made no dip in the accept rate: the test's premise failed"
        assert 0 < during <= 8  # 64 claimable rows / 8 while the inbox takes the burst, its pause included
        assert after > 8, after  # then up to delivery_concurrency again
    finally:
        for server in servers:
            await server.close()


async def test_a_batch_of_accepts_reads_its_payloads_together(bridge: Bridge) -> None:
    """Accepts are one activity each: a burst of 200 must not cost a SELECT per delivery (the bounded
    payload cache holds 64), and every inbox gets exactly its own activity's bytes."""
    reads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM activities" in statement:
            reads.append(statement)

    async with Inbox() as inbox:
        n, ids = 200, []
        event.listen(bridge.store.engine.sync_engine, "before_cursor_execute", count)
        try:
            async with bridge.store.begin() as conn:  # all queued at once, as a batch of follows queues them
                for i in range(n):
                    ids.append(await insert_activity(conn, create_payload(bridge, f"réponse {i} ✓"),
                                                     [f"{inbox.url}/users/u{i}/inbox"]))
            bridge.app[SERVICES].wake.delivery.set()
            for aid in ids:
                await until_state(bridge, aid, "done", within=30)
        finally:
            event.remove(bridge.store.engine.sync_engine, "before_cursor_execute", count)
        async with bridge.store.connect() as conn:
            payloads = dict((await conn.execute(select(activities.c.id, activities.c.payload))).all())
        by_content = {json.loads(body)["object"]["content"]: body for _, body in inbox.requests}
        assert len(inbox.requests) == n
        for i, aid in enumerate(ids):
            assert by_content[f"<p>réponse {i} ✓</p>"] == serialize(payloads[aid])
        assert len(reads) <= 10, f"{len(reads)} SELECTs of activities for {n} deliveries"


async def test_the_inbox_accept_rate_counts_the_last_quarter_seconds_only() -> None:
    """A burst after a quiet spell counts at once (an average since the last look would dilute it: deliveries
    then went on at full share during the burst), and it is forgotten within two quarter-second slots."""
    from fedibridge.services import Wakeups

    wake = Wakeups()
    assert wake.accept_rate() == 0.0
    wake.accept()  # one activity, then a quiet spell
    await asyncio.sleep(0.6)
    assert wake.accept_rate() == 0.0
    for _ in range(20):  # 20 within one slot: at least 80 a second
        wake.accept()
    assert wake.accept_rate() >= 40.0 and wake.accepted == 21
    await asyncio.sleep(0.55)  # two slots later
    assert wake.accept_rate() == 0.0


async def test_a_dip_in_a_burst_is_not_its_end() -> None:
    """Wakeups.busy holds a burst through a dip of its accept rate shorter than the hold, and lets it go after."""
    from fedibridge.services import Wakeups

    wake = Wakeups()
    assert not wake.busy(40.0, 1.0)
    for _ in range(20):  # 20 within one slot: at least 80 a second
        wake.accept()
    assert wake.busy(40.0, 1.0)
    await asyncio.sleep(0.55)  # two slots later the rate itself is 0…
    assert wake.accept_rate() == 0.0
    assert wake.busy(40.0, 1.0)  # …but the burst is held
    await asyncio.sleep(0.5)
    assert not wake.busy(40.0, 1.0)  # and let go a second after it was last seen
