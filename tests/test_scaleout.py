"""Scale-out on the real PostgreSQL: `serve --role web` and several `--role worker` processes on one database.

Every bridge here is a real `python -m fedibridge serve` subprocess; the remote side is loopback
RemoteInstances that record each POST with its User-Agent. Each worker gets its own user_agent setting,
so the receivers can tell which process sent what. PostgreSQL only: SQLite is one process by design.
Run with FEDIBRIDGE_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test (CI sets it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from fedibridge import delivery
from fedibridge.store import Store, utcnow
from fedibridge.tables import activities, deliveries, inbox_items, leases
from tests.conftest import free_port, pem_private, wait_for
from tests.faults import stop_serve
from tests.remote import Received, RemoteInstance, add_followers

TOKEN = "scaleout-admin-token"


@dataclass
class Cluster:
    """Web and worker subprocesses sharing one database and one public base URL (the web process's)."""

    tmp: Path
    database_url: str
    key: rsa.RSAPrivateKey
    extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **overrides: str) -> dict[str, str]:
        keys = self.tmp / "keys"
        if not keys.exists():
            keys.mkdir()
            (keys / "private.pem").write_bytes(pem_private(self.key))
            (keys / "private.pem").chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIBRIDGE_")}
        env.update({"FEDIBRIDGE_BASE_URL": self.base, "FEDIBRIDGE_PORT": str(self.port),
                    "FEDIBRIDGE_DATABASE_URL": self.database_url, "FEDIBRIDGE_KEYS_DIR": str(keys),
                    "FEDIBRIDGE_ADMIN_TOKEN": TOKEN, "FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES": "true",
                    "FEDIBRIDGE_LOG_LEVEL": "warning", "FEDIBRIDGE_FEED_POLL_INTERVAL": "3600"})
        env.update(self.extra)
        env.update(overrides)
        return env

    async def start(self, name: str, role: str, **env: str) -> asyncio.subprocess.Process:
        """Start `serve --role …` and wait for its banner (printed once migrations ran and jobs started)."""
        log = self.tmp / f"{name}.log"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fedibridge", "serve", "--role", role, cwd=self.tmp, env=self.env(**env),
            stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT)
        self.procs[name] = proc

        async def up() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}: {log.read_text()}")
            # "fedibridge X (web) on http://…", or "(worker): …; no HTTP listener": a worker listens nowhere
            return f"({role})" in log.read_text(errors="replace")

        await wait_for(up, 60, 0.05)
        return proc

    async def stop(self) -> None:
        await asyncio.gather(*(stop_serve(proc) for proc in self.procs.values()))


@pytest.fixture
async def cluster(tmp_path: Path, pg_database_url: str, rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, pg_database_url, rsa_key)
    yield c
    await c.stop()


async def _instances(n: int, subnet: int, key: rsa.RSAPrivateKey, status: Any = 202) -> list[RemoteInstance]:
    out = [RemoteInstance(host_ip=f"127.0.{subnet}.{i + 1}", key=key, inbox_status=status) for i in range(n)]
    for inst in out:
        await inst.start()
    return out


async def _publish(base: str, slug: str, title: str = "Montée en charge « à deux » 🚀") -> str:
    async with aiohttp.ClientSession() as http, http.post(
        f"{base}/api/articles", headers={"Authorization": f"Bearer {TOKEN}"},
        json={"title": title, "url": f"http://blog.test/{slug}", "slug": slug,
              "content": "<p>Deux ouvriers, une seule livraison par boîte : c'est réglé.</p>"}) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


def _creates(instances: list[RemoteInstance], object_id: str) -> list[tuple[str, Received]]:
    return [(f"{inst.host}{r.path}", r) for inst in instances for r in list(inst.received)
            if r.type == "Create" and isinstance(r.json.get("object"), dict)
            and r.json["object"].get("id") == object_id]


async def _slow_ok(rec: Received) -> int:
    await asyncio.sleep(0.05)  # a busy Mastodon: keeps the fan-out running long enough to share and to kill
    return 202


async def _rows(database_url: str) -> list[Any]:
    store = await Store.open(database_url, migrate=False)
    try:
        async with store.connect() as conn:
            return list(await conn.execute(select(deliveries)))
    finally:
        await store.close()


async def _close(instances: list[RemoteInstance]) -> None:
    for inst in instances:
        await inst.close()


# ----------------------------------------------------------------------------------------- fan-out
async def test_two_workers_share_one_fan_out_and_send_nothing_twice(cluster: Cluster,
                                                                    rsa_key: rsa.RSAPrivateKey) -> None:
    instances = await _instances(40, 3, rsa_key, _slow_ok)
    try:
        total = await add_followers(cluster.database_url, instances, 5)
        await cluster.start("web", "web")
        for name in ("worker-a", "worker-b"):
            await cluster.start(name, "worker", FEDIBRIDGE_USER_AGENT=name, FEDIBRIDGE_DELIVERY_CONCURRENCY="8")
        object_id = await _publish(cluster.base, "a-deux")

        async def all_arrived() -> bool:
            return len({t for t, _ in _creates(instances, object_id)}) == total

        await wait_for(all_arrived, 60, 0.05)
        await asyncio.sleep(1.5)  # anything sent twice would arrive by now
        creates = _creates(instances, object_id)
        counts = Counter(t for t, _ in creates)
        assert len(counts) == total and set(counts.values()) == {1}, counts.most_common(3)
        assert all(r.verified for _, r in creates), {r.reason for _, r in creates if not r.verified}
        by_worker = Counter(r.headers.get("User-Agent") for _, r in creates)
        assert set(by_worker) == {"worker-a", "worker-b"}, by_worker
        assert min(by_worker.values()) >= total // 10, by_worker  # both did a real share, not one stray row

        rows = await _rows(cluster.database_url)
        assert len(rows) == total
        assert all(r.state == "done" and r.attempts == 1 and r.locked_until is None for r in rows)
    finally:
        await _close(instances)


async def test_kill_9_of_one_worker_loses_nothing(cluster: Cluster, rsa_key: rsa.RSAPrivateKey) -> None:
    # Lease of 3 s: the dead worker's rows are taken over by the lease path long before the survivor's
    # next same-host reaping pass (every delivery.REAP_SECONDS; its first ran at start, before the kill).
    cluster.extra.update(FEDIBRIDGE_DELIVERY_LEASE_SECONDS="3", FEDIBRIDGE_DELIVERY_CONCURRENCY="8")
    instances = await _instances(60, 4, rsa_key, _slow_ok)
    try:
        total = await add_followers(cluster.database_url, instances, 5)
        await cluster.start("web", "web")
        victim = await cluster.start("victim", "worker", FEDIBRIDGE_USER_AGENT="victim")
        await cluster.start("survivor", "worker", FEDIBRIDGE_USER_AGENT="survivor")
        object_id = await _publish(cluster.base, "panne")

        async def both_busy() -> bool:
            who = Counter(r.headers.get("User-Agent") for _, r in _creates(instances, object_id))
            return who["victim"] >= 10 and who["survivor"] >= 10

        await wait_for(both_busy, 30, 0.005)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        killed_at = time.monotonic()
        await asyncio.sleep(0.2)  # bytes the victim wrote before dying are read by now
        before = {id(r) for _, r in _creates(instances, object_id)}
        at_kill = len({t for t, _ in _creates(instances, object_id)})
        assert at_kill < total, "the fan-out finished before the kill; the test proves nothing"
        store = await Store.open(cluster.database_url, migrate=False)
        try:
            async with store.connect() as conn:
                orphans = (await conn.execute(select(deliveries.c.id).where(
                    deliveries.c.state == "pending", deliveries.c.locked_by.like("%:" + str(victim.pid) + ":%"))
                )).all()
        finally:
            await store.close()

        async def all_arrived() -> bool:
            return len({t for t, _ in _creates(instances, object_id)}) == total

        await wait_for(all_arrived, 45, 0.1)
        assert time.monotonic() - killed_at < delivery.REAP_SECONDS  # the lease did it, not the reaper
        assert orphans, "the victim held no claimed rows when killed; the lease path was not exercised"
        creates = _creates(instances, object_id)
        counts = Counter(t for t, _ in creates)
        # Only rows in flight or delivered-but-unrecorded at the kill may be sent twice (at most what the
        # victim held: 2 × delivery_concurrency claimed); receivers dedupe by activity id, as the fediverse does.
        assert sum(n - 1 for n in counts.values()) <= 16, counts.most_common(5)
        assert len({t for t, r in creates if r.verified}) == total
        late = [r for _, r in creates if id(r) not in before]
        assert len(late) >= total - at_kill and {r.headers.get("User-Agent") for r in late} == {"survivor"}

        async def recorded() -> bool:  # outcomes are written in batches, a moment after the POSTs
            return all(r.state == "done" and r.locked_until is None for r in await _rows(cluster.database_url))

        await wait_for(recorded, 10, 0.1)
    finally:
        await _close(instances)


async def test_a_lease_held_elsewhere_is_respected_until_it_expires(cluster: Cluster,
                                                                      rsa_key: rsa.RSAPrivateKey) -> None:
    """Rows claimed by a worker on another machine (never reaped: its pid means nothing here)."""
    LEASE = 6  # seconds the other machine still holds its row  # noqa: N806
    instances = await _instances(2, 5, rsa_key)
    held, expired = instances
    try:
        await cluster.start("web", "web")
        object_id = await _publish(cluster.base, "bail")  # no followers yet: nothing queued
        # The worker runs before the rows appear, so its start-up time (seconds on a loaded machine) is not
        # counted against the other machine's lease; it finds them on its next poll.
        await cluster.start("worker", "worker")
        store = await Store.open(cluster.database_url, migrate=False)
        try:
            async with store.begin() as conn:
                activity_id = (await conn.execute(select(activities.c.id).where(activities.c.type == "Create"))
                               ).scalar_one()
                now = utcnow()
                common = {"activity_id": activity_id, "kind": "ap", "state": "pending", "attempts": 0,
                          "next_attempt_at": now, "created_at": now}
                await conn.execute(deliveries.insert(), [
                    {**common, "inbox": held.shared_inbox, "host": held.host, "locked_by": "other-host:7:a",
                     "locked_until": now + timedelta(seconds=LEASE)},
                    {**common, "inbox": expired.shared_inbox, "host": expired.host, "locked_by": "other-host:8:b",
                     "locked_until": now - timedelta(seconds=1)}])
        finally:
            await store.close()
        held_until = time.monotonic() + LEASE

        async def got(inst: RemoteInstance) -> bool:
            return bool(_creates([inst], object_id))

        await wait_for(lambda: got(expired), 10, 0.05)
        assert not held.received and time.monotonic() < held_until - 0.5
        await wait_for(lambda: got(held), 15, 0.05)
        assert time.monotonic() >= held_until - 0.2  # not before the other machine's lease ran out
        assert _creates(instances, object_id)[0][1].verified
    finally:
        await _close(instances)


# ------------------------------------------------------------------------------------ wake-ups
async def test_workers_wake_on_notify_not_on_their_poll(cluster: Cluster, rsa_key: rsa.RSAPrivateKey) -> None:
    """A publish in the web process reaches an idle worker process at once (LISTEN/NOTIFY), not after ≤1 s."""
    arrived: dict[str, float] = {}

    def record(rec: Received) -> int:
        obj = rec.json.get("object") if isinstance(rec.json, dict) else None
        if rec.type == "Create" and isinstance(obj, dict):
            arrived[obj["id"]] = time.monotonic()
        return 202

    instances = await _instances(1, 6, rsa_key, record)
    try:
        await add_followers(cluster.database_url, instances, 1)
        await cluster.start("web", "web")
        await cluster.start("worker", "worker")
        latencies = []
        for i in range(6):
            await asyncio.sleep(0.3 + 0.17 * i)  # land at different points of the worker's 1 s poll
            sent = time.monotonic()
            object_id = await _publish(cluster.base, f"reveil-{i}", f"Réveil nº {i} ⏰")
            await wait_for(lambda oid=object_id: _has(arrived, oid), 10, 0.01)
            latencies.append(arrived[object_id] - sent)
        # Polling alone gives a mean near 0.5 s (uniform over the 1 s interval).
        assert sum(latencies) / len(latencies) < delivery.POLL_SECONDS / 4, latencies
    finally:
        await _close(instances)


async def _has(arrived: dict[str, float], object_id: str) -> bool:
    return object_id in arrived


# ---------------------------------------------------------------------------------- periodic jobs
async def test_feed_is_polled_once_per_interval_across_workers(cluster: Cluster) -> None:
    gets: list[tuple[float, str]] = []

    async def feed(request: web.Request) -> web.Response:
        gets.append((time.monotonic(), request.headers.get("User-Agent", "")))
        body = ("<?xml version='1.0' encoding='UTF-8'?><rss version='2.0'><channel><title>Carnet</title>"
                "<link>http://blog.test/</link><description>d</description><item><title>Été « chaud » ☀️</title>"
                "<link>http://blog.test/ete</link><guid>http://blog.test/ete</guid><description>&lt;p&gt;Il fait "
                "chaud.&lt;/p&gt;</description></item></channel></rss>")
        return web.Response(body=body.encode(), content_type="application/rss+xml")

    app = web.Application()
    app.router.add_get("/feed.xml", feed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    feed_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", feed_port).start()
    try:
        cluster.extra.update(FEDIBRIDGE_SOURCE_FEED=f"http://127.0.0.1:{feed_port}/feed.xml",
                             FEDIBRIDGE_FEED_POLL_INTERVAL="1")
        await cluster.start("worker-a", "worker", FEDIBRIDGE_USER_AGENT="worker-a")
        await cluster.start("worker-b", "worker", FEDIBRIDGE_USER_AGENT="worker-b")
        start = time.monotonic()
        await asyncio.sleep(5)
        window = [g for g in gets if g[0] >= start]
        # One poller: about one GET a second. Two uncoordinated workers would make about two.
        assert 3 <= len(window) <= 7, window
        assert len({ua for _, ua in gets}) == 1, Counter(ua for _, ua in gets)
        store = await Store.open(cluster.database_url, migrate=False)
        try:
            async with store.connect() as conn:
                lease = (await conn.execute(select(leases).where(leases.c.name == "feed-poll"))).one()
        finally:
            await store.close()
        assert lease.owner.split(":")[1] in {str(p.pid) for p in cluster.procs.values()}
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------------------ roles
async def test_web_runs_no_jobs_and_worker_serves_no_http(cluster: Cluster, rsa_key: rsa.RSAPrivateKey) -> None:
    async with RemoteInstance(host_ip="127.0.7.1", key=rsa_key) as remote:
        account = remote.add_actor("zoe")
        await cluster.start("web", "web")
        status, text = await remote.send(account, f"{cluster.base}/inbox",
                                         remote.follow(account, f"{cluster.base}/users/blog"))
        assert status == 202, text

        async def items() -> list[Any]:
            store = await Store.open(cluster.database_url, migrate=False)
            try:
                async with store.connect() as conn:
                    return list(await conn.execute(select(inbox_items)))
            finally:
                await store.close()

        await asyncio.sleep(2.5)  # well past the inbox worker's 1 s poll, had the web process one
        [item] = await items()
        assert item.type == "Follow" and item.state == "pending" and item.attempts == 0
        assert not remote.received_of("Accept")

        worker_port = free_port()
        await cluster.start("worker", "worker", FEDIBRIDGE_PORT=str(worker_port))
        await wait_for(lambda: _accepted(remote), 15, 0.05)
        [item] = await items()
        assert item.state == "done"
        accept = remote.received_of("Accept")[0]
        assert accept.verified and accept.json["object"]["actor"] == account.id
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{worker_port}/healthz"):
                pass


async def _accepted(remote: RemoteInstance) -> bool:
    return bool(remote.received_of("Accept"))

