"""Follow-burst benchmark: N Follows from N actors on H loopback hosts, end to end, against a baseline.

    .venv/bin/python bench/follows.py [--follows 10000] [--hosts 1000] [--concurrency 32]
                                      [--database-url postgresql://…/empty_db] [--serve-profile PATH]

The "instances" are one aiohttp server in this process bound to H addresses 127.4.x.y (Linux answers all of
127.0.0.0/8): each serves its actors' documents (Mastodon-shaped; 50 RSA keys shared among the actors,
generating 10,000 would take minutes) and records every POST to their inboxes. The Follows are pre-signed
(draft-cavage, as Mastodon signs) and sent by `--concurrency` clients.

Measured, from the first Follow until every follower is listed by `GET /api/followers` (its `total`) and
every follower's inbox has received an Accept of its Follow: follows/s end to end, the 202 rate, the
bridge's peak RSS, and the CPU seconds each server process used meanwhile (all its threads): on a shared,
noisy machine the CPU per follow moves much less than the wall-clock rate, so compare versions by it too.
The bridge is a real `fedibridge serve` subprocess (role `all`, SQLite unless --database-url,
allow_private_addresses). Every Accept's signature is verified with the bridge's public
key after the clock stops (verifying inline would bill this process's CPU to the bridge).

Baseline in the same run, against the same instances and generator: bench/_bare.py follows, a process
doing the protocol's work without a database (fetch each actor once, verify the Follow's signature,
answer 202, sign an Accept and POST it). The ratio is bridge time / baseline time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bridge import (  # noqa: E402
    Bare,
    Bridge,
    cpu_seconds,
    free_port,
    loopback_hosts,
    raise_nofile,
    total,
)
from fedibridge.signatures import load_public_key, sign_request, verify_request  # noqa: E402

AS = "https://www.w3.org/ns/activitystreams"
N_KEYS = 50


@dataclass
class Instances:
    """H hosts, each with its share of the N actors; records the Accepts their inboxes receive."""

    hosts: list[str]
    per_host: int
    pems: list[str]
    port: int = field(default_factory=lambda: free_port("127.4.0.1"))
    received: dict[str, tuple[str, str, CIMultiDict[str], bytes]] = field(default_factory=dict)
    expected: int = 0
    last: float = 0.0
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    _host_index: dict[str, int] = field(default_factory=dict)

    def actors(self, n: int) -> list[str]:
        return [f"http://{self.hosts[i % len(self.hosts)]}:{self.port}/users/u{i // len(self.hosts)}"
                for i in range(n)]

    def index(self, host: str, name: str) -> int:
        if not self._host_index:
            self._host_index = {h: i for i, h in enumerate(self.hosts)}
        return int(name[1:]) * len(self.hosts) + self._host_index[host]

    async def actor(self, request: web.Request) -> web.Response:
        name, host = request.match_info["name"], request.url.host or ""
        actor = f"http://{request.host}/users/{name}"
        doc = {"@context": [AS, "https://w3id.org/security/v1"], "id": actor, "type": "Person",
               "preferredUsername": name, "name": f"Follower {name}@{host}", "inbox": f"{actor}/inbox",
               "outbox": f"{actor}/outbox", "followers": f"{actor}/followers", "url": f"http://{request.host}/@{name}",
               "endpoints": {"sharedInbox": f"http://{request.host}/inbox"}, "manuallyApprovesFollowers": False,
               "publicKey": {"id": f"{actor}#main-key", "owner": actor,
                             "publicKeyPem": self.pems[self.index(host, name) % len(self.pems)]}}
        return web.Response(body=json.dumps(doc).encode(), content_type="application/activity+json")

    async def inbox(self, request: web.Request) -> web.Response:
        body = await request.read()
        actor = f"http://{request.host}/users/{request.match_info['name']}"
        if actor not in self.received:
            self.received[actor] = (request.host, request.path_qs, CIMultiDict(request.headers), body)
            self.last = time.perf_counter()
            if len(self.received) >= self.expected:
                self.complete.set()
        return web.Response(status=202)

    def expect(self, n: int) -> None:
        self.received, self.expected, self.last, self.complete = {}, n, 0.0, asyncio.Event()

    def bad_accepts(self, public_pem: str, follow_ids: dict[str, str], sender: str) -> int:
        """Accepts not correctly signed by `sender`, or not accepting that follower's own Follow."""
        key = load_public_key(public_pem)
        bad = 0
        for actor, (host, path, headers, body) in self.received.items():
            doc = json.loads(body)
            obj = doc.get("object")
            follow_id = obj.get("id") if isinstance(obj, dict) else obj
            signed = verify_request("POST", path, headers, body, key, datetime.now(UTC), authority=host).ok
            bad += not (signed and doc.get("type") == "Accept" and doc.get("actor") == sender
                        and follow_id == follow_ids[actor])
        return bad

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/users/{name}", self.actor)
        app.router.add_post("/users/{name}/inbox", self.inbox)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        for ip in self.hosts:
            await web.TCPSite(self.runner, ip, self.port, backlog=1024).start()

    async def close(self) -> None:
        if self.runner:
            await self.runner.cleanup()


def follows(url: str, target: str, actors: list[str], keys: list[rsa.RSAPrivateKey]
            ) -> tuple[list[tuple[dict[str, str], bytes]], dict[str, str]]:
    """One Mastodon-shaped, signed Follow of `target` per actor; and each actor's Follow id."""
    now = datetime.now(UTC)
    out, ids = [], {}
    for i, actor in enumerate(actors):
        follow_id = f"{actor.rsplit('/users/', 1)[0]}/{i:08x}-follow"
        body = json.dumps({"@context": AS, "id": follow_id, "type": "Follow", "actor": actor,
                           "object": target}).encode()
        headers = sign_request("POST", url, {"Content-Type": "application/activity+json"}, body,
                               keys[i % len(keys)], f"{actor}#main-key", now)
        headers.pop("Host", None)
        out.append((headers, body))
        ids[actor] = follow_id
    return out, ids


PROGRESS = {"202": 0}  # 202s so far, for --timeline


async def send(url: str, requests: list[tuple[dict[str, str], bytes]], concurrency: int) -> tuple[int, float]:
    """POST everything with `concurrency` clients; (202 count, seconds)."""
    todo = list(reversed(requests))
    accepted = PROGRESS["202"] = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def client() -> None:
            nonlocal accepted
            while todo:
                headers, body = todo.pop()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    accepted += resp.status == 202
                    PROGRESS["202"] = accepted

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return accepted, time.perf_counter() - started


@dataclass
class Result:
    label: str
    accepted: int
    accept_secs: float
    secs: float  # first Follow → last Accept received and (bridge) every follower listed
    listed: int
    accepts: int
    bad: int
    rss: float
    cpu: float  # CPU seconds (user + system, every thread) the server process used from the first Follow on


async def run_baseline(inst: Instances, actors: list[str], keys: list[rsa.RSAPrivateKey], concurrency: int,
                       timeout: float) -> Result:
    async with Bare("follows") as bare, aiohttp.ClientSession() as session:
        target = f"{bare.base}/actor"
        reqs, ids = follows(f"{bare.base}/inbox", target, actors, keys)
        async with session.get(target) as resp:
            pem = (await resp.json(content_type=None))["publicKey"]["publicKeyPem"]
        inst.expect(len(actors))
        assert bare.proc is not None
        cpu = cpu_seconds([bare.proc.pid])["workers"]
        started = time.perf_counter()
        ok, accept_secs = await send(f"{bare.base}/inbox", reqs, concurrency)
        try:
            await asyncio.wait_for(inst.complete.wait(), timeout)
        except TimeoutError:
            pass
        secs = (inst.last or time.perf_counter()) - started
        cpu = cpu_seconds([bare.proc.pid])["workers"] - cpu
        bare.sample_rss()
        return Result("baseline (bench/_bare.py follows)", ok, accept_secs, secs, len(inst.received),
                      len(inst.received), inst.bad_accepts(pem, ids, target), bare.peak_rss, cpu)


async def run_bridge(inst: Instances, actors: list[str], keys: list[rsa.RSAPrivateKey], concurrency: int,
                     database_url: str | None, profile: str | None, timeout: float, show_timeline: bool) -> Result:
    async with Bridge("all", database_url, profile) as bridge, aiohttp.ClientSession() as session:
        target = f"{bridge.base}/users/blog"
        reqs, ids = follows(f"{bridge.base}/inbox", target, actors, keys)
        inst.expect(len(actors))
        listed = [0, 0.0]
        assert bridge.proc is not None
        cpu = cpu_seconds([bridge.proc.pid])["workers"]
        started = time.perf_counter()

        async def poll() -> None:
            while listed[0] < len(actors):
                await asyncio.sleep(0.25)
                listed[0] = await total(session, bridge, "/api/followers")
                listed[1] = time.perf_counter()
                bridge.sample_rss()

        async def finished() -> None:
            await asyncio.gather(poll(), inst.complete.wait())

        async def timeline() -> None:
            while True:
                await asyncio.sleep(1.0)
                print(f"    {time.perf_counter() - started:5.1f} s: 202s {PROGRESS['202']:6d}, listed {listed[0]:6d}, "
                      f"Accepts received {len(inst.received):6d}", flush=True)

        ticker = asyncio.create_task(timeline()) if show_timeline else None

        waiting = asyncio.create_task(finished())
        ok, accept_secs = await send(f"{bridge.base}/inbox", reqs, concurrency)
        try:
            await asyncio.wait_for(waiting, timeout)
        except TimeoutError:
            pass
        secs = max(inst.last or time.perf_counter(), listed[1]) - started
        cpu = cpu_seconds([bridge.proc.pid])["workers"] - cpu
        if ticker is not None:
            ticker.cancel()
        pem = (bridge.dir / "keys" / "public.pem").read_text()
        bridge.sample_rss()
        return Result("fedibridge serve (role all)", ok, accept_secs, secs, int(listed[0]), len(inst.received),
                      inst.bad_accepts(pem, ids, target), bridge.peak_rss, cpu)


async def main(n: int, hosts: int, concurrency: int, database_url: str | None, profile: str | None,
               show_timeline: bool = False) -> int:
    raise_nofile()
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(N_KEYS)]
    pems = [k.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode() for k in keys]
    inst = Instances(loopback_hosts(hosts, second=4), -(-n // hosts), pems)
    await inst.start()
    actors = inst.actors(n)
    key_of = [keys[inst.index(a.split("//")[1].split(":")[0], a.rsplit("/", 1)[1]) % N_KEYS] for a in actors]
    timeout = max(300.0, n / 10)
    try:
        base = await run_baseline(inst, actors, key_of, concurrency, timeout)
        bridge = await run_bridge(inst, actors, key_of, concurrency, database_url, profile, timeout, show_timeline)
    finally:
        await inst.close()
    print(f"{n} follows from {n} actors on {hosts} loopback hosts, {concurrency} concurrent senders, "
          f"{'PostgreSQL' if database_url else 'SQLite'}")
    for r in (base, bridge):
        print(f"  {r.label:34s}: 202s {r.accepted}/{n} in {r.accept_secs:6.1f} s "
              f"({r.accepted / r.accept_secs:6.0f}/s); "
              f"end to end {r.secs:6.1f} s = {r.accepts / r.secs:6.0f} follows/s; listed {r.listed}, "
              f"Accepts {r.accepts}/{n} ({r.bad} bad); peak RSS {r.rss:.0f} MB; "
              f"CPU {r.cpu:.1f} s ({1000 * r.cpu / n:.2f} ms a follow)")
    ratio = bridge.secs / base.secs
    print(f"  ratio: bridge {ratio:.1f}x the baseline's time, {bridge.cpu / max(base.cpu, 0.01):.1f}x its CPU "
          f"(issue 12 target: >= 600 follows/s, peak RSS < 300 MB)")
    if profile:
        print(f"  profile of the bridge process: {profile} (python bench/profile_summary.py {profile})")
    good = (bridge.accepted == n and bridge.listed == n and bridge.accepts == n and bridge.bad == 0
            and base.bad == 0 and bridge.rss < 300)
    print("  PASS" if good else "  FAIL")
    return 0 if good else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--follows", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeline", action="store_true", help="print the bridge's progress each second")
    parser.add_argument("--database-url", help="an EMPTY database to use (default: a temporary SQLite file)")
    parser.add_argument("--serve-profile", metavar="PATH", help="run the bridge under cProfile, stats to PATH")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.follows, args.hosts, args.concurrency, args.database_url, args.serve_profile,
                              args.timeline)))
