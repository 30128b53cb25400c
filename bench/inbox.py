"""Benchmark: signed replies accepted per second at the shared inbox, against a bare aiohttp handler.

Both servers are hit by the same load generator in the same run, with requests pre-signed by
fedibridge.signatures (so signing cost is not measured); the remote actor is served by a loopback
server. Target: the bridge accepts at least 50 % of the bare handler's rate, every accepted reply is
in inbox_items when its 202 arrives, and ends up stored as a comment.

The generator runs in the same process and event loop as both servers (as a proxy sharing one CPU
would): its own cost per request is part of both rates. The bridge is measured in --rounds chunks, each
between two bare chunks taken with the bridge idle (backlog handled first); the figure is the median of
the per-round ratios (bridge chunk rate / mean of the bare chunks around it).

    .venv/bin/python bench/inbox.py [--requests 5000] [--rounds 5] [--concurrency 32] [--role all|web|both]
                                    [--database-url postgresql://…/empty_db] [--profile PATH]
                                    [--phase accept|e2e|both] [--replies 20000] [--serve-profile PATH] [--workers N]

End to end (--phase e2e, part of the default): a burst of --replies signed replies from 50 actors on 5
loopback hosts (127.3.0.1-5) to a real `fedibridge serve` subprocess (role `all` unless --role web, SQLite
unless --database-url), timed from the first POST until the last reply is listed by
`GET /api/comments?status=all`; comments/s end to end, the 202 rate, and the bridge's peak RSS. Baseline in
the same run: a bare handler in its own process (bench/_bare.py inbox) taking the same requests from the
same generator; the end-to-end ratio is comments/s over the bare 202/s. --serve-profile PATH runs the
bridge under cProfile (stats written to PATH; summarise with bench/profile_summary.py PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bridge import (  # noqa: E402
    Bare,
    Bridge,
    cpu_seconds,
    cpu_split,
    free_port,
    loopback_hosts,
    publish,
    raise_nofile,
    serve,
    total,
)
from fedibridge import articles, inbox_worker  # noqa: E402
from fedibridge.app import SERVICES, create_app  # noqa: E402
from fedibridge.config import Settings, validate  # noqa: E402
from fedibridge.signatures import sign_request  # noqa: E402
from fedibridge.tables import comments, inbox_items  # noqa: E402

PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
HOST = "127.0.0.1"


async def remote_actor(key: rsa.RSAPrivateKey) -> tuple[web.AppRunner, str]:
    """A Mastodon-shaped actor on loopback, so the bridge fetches and caches a real key."""
    port = free_port()
    actor = f"http://{HOST}:{port}/users/bench"
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    doc = {"@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"], "id": actor,
           "type": "Person", "preferredUsername": "bench", "name": "Bench Mark", "inbox": f"{actor}/inbox",
           "endpoints": {"sharedInbox": f"http://{HOST}:{port}/inbox"}, "url": f"http://{HOST}:{port}/@bench",
           "publicKey": {"id": f"{actor}#main-key", "owner": actor, "publicKeyPem": pem}}

    async def get(_: web.Request) -> web.Response:
        return web.Response(text=json.dumps(doc), content_type="application/activity+json")

    app = web.Application()
    app.router.add_get("/users/bench", get)
    return await serve(app, port), actor


def presign(url: str, actor: str, key: rsa.RSAPrivateKey, in_reply_to: str, start: int, n: int
            ) -> list[tuple[dict[str, str], bytes]]:
    """N distinct Create(Note) replies, signed like Mastodon signs (draft-cavage rsa-sha256)."""
    out = []
    now = datetime.now(UTC)
    for i in range(start, start + n):
        note_id = f"{actor}/statuses/{i}"
        body = json.dumps({
            "@context": "https://www.w3.org/ns/activitystreams", "id": f"{note_id}/activity", "type": "Create",
            "actor": actor, "to": [PUBLIC], "object": {
                "id": note_id, "type": "Note", "attributedTo": actor, "inReplyTo": in_reply_to, "to": [PUBLIC],
                "cc": [f"{actor}/followers"], "content": f"<p>Réponse n°{i} ☕</p>", "contentMap": {"fr": "x"},
                "published": now.strftime("%Y-%m-%dT%H:%M:%SZ")}}, ensure_ascii=False).encode()
        headers = sign_request("POST", url, {"Content-Type": "application/activity+json"}, body, key,
                               f"{actor}#main-key", now)
        headers.pop("Host", None)
        out.append((headers, body))
    return out


async def load(url: str, requests: list[tuple[dict[str, str], bytes]], concurrency: int) -> tuple[int, float]:
    """Send everything with `concurrency` workers; (accepted count, seconds)."""
    queue: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    accepted = 0
    connector = aiohttp.TCPConnector(limit=concurrency)

    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal accepted
            while not queue.empty():
                headers, body = queue.get_nowait()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    accepted += resp.status == 202

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return accepted, time.perf_counter() - started


async def bare_server() -> tuple[web.AppRunner, str]:
    """The baseline: read the body and answer 202, nothing else."""
    async def inbox(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    port = free_port()
    app = web.Application()
    app.router.add_post("/inbox", inbox)
    return await serve(app, port), f"http://{HOST}:{port}/inbox"


async def count(app: web.Application, table: Any) -> int:
    async with app[SERVICES].store.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def wait_stored(app: web.Application, expected: int) -> int:
    """Poll until `expected` comments exist (or 5 minutes pass); the count reached."""
    deadline = time.perf_counter() + 300
    stored = await count(app, comments)
    while stored < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
        stored = await count(app, comments)
    return stored


async def rate(url: str, requests: list[tuple[dict[str, str], bytes]], concurrency: int) -> tuple[int, float]:
    ok, secs = await load(url, requests, concurrency)
    return ok, ok / secs if secs else 0.0


async def measure(role: str, n: int, concurrency: int, rounds: int, database_url: str | None,
                  key: rsa.RSAPrivateKey, actor: str, bare_url: str, profile: str | None) -> bool:
    """One fresh bridge in `role`, measured in `rounds` chunks, each between two bare chunks.

    The machine is shared and noisy: alternating bare and bridge chunks and taking the median of the
    per-round ratios keeps one slow moment from deciding the figure. Bare always runs with the bridge
    idle (its worker has caught up), so the bridge's background work is never billed to bare.
    """
    chunk = n // rounds
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        settings = validate(Settings(base_url=f"http://{HOST}:{port}", port=port,
                                     database_url=database_url or f"sqlite:///{tmp}/b.db",
                                     keys_dir=str(Path(tmp, "keys")), admin_token="bench",
                                     allow_private_addresses=True, blog_url="http://blog.test", moderation="open",
                                     inbox_host_burst=0, inbox_actor_burst=0,  # one sender on purpose
                                     log_level="warning"))
        app = create_app(settings, role)  # type: ignore[arg-type]
        runner = await serve(app, port)
        worker: asyncio.Task[None] | None = None
        try:
            inp = articles.validate({"title": "Bench", "url": "http://blog.test/bench/", "content": "<p>x</p>",
                                     "slug": "bench"})
            await articles.publish_one(app[SERVICES].store, app[SERVICES].site, inp, deliver=False)
            inbox_url = f"{settings.base}/inbox"
            in_reply_to = app[SERVICES].site.article_id("bench")
            warm = 50  # also makes the bridge fetch and cache the actor's key before measuring
            await load(inbox_url, presign(inbox_url, actor, key, in_reply_to, 0, warm), 4)
            await load(bare_url, presign(bare_url, actor, key, in_reply_to, 0, warm), 4)
            if role == "all":
                await wait_stored(app, warm)
            bridge_reqs = presign(inbox_url, actor, key, in_reply_to, warm, chunk * rounds)
            bare_reqs = presign(bare_url, actor, key, in_reply_to, warm, chunk)
            bare_ok, bare_rates, bridge_rates, ok = 0, [], [], 0
            prof = cProfile.Profile() if profile else None
            got, r = await rate(bare_url, bare_reqs, concurrency)
            bare_ok, bare_rates = bare_ok + got, [r]
            for i in range(rounds):
                if prof:
                    prof.enable()
                got, r = await rate(inbox_url, bridge_reqs[i * chunk:(i + 1) * chunk], concurrency)
                if prof:
                    prof.disable()
                ok, bridge_rates = ok + got, bridge_rates + [r]
                if role == "all":
                    await wait_stored(app, warm + ok)  # the bridge idle again before bare runs
                got, r = await rate(bare_url, bare_reqs, concurrency)
                bare_ok, bare_rates = bare_ok + got, bare_rates + [r]
            if prof:
                prof.dump_stats(f"{profile}.{role}")
            expected = warm + ok
            durable = await count(app, inbox_items)  # stored before each 202: all there the moment load ends
            if role == "web":  # the web role only stores; a worker (normally another process) handles later
                worker = asyncio.create_task(inbox_worker.run(app[SERVICES]))
            stored = await wait_stored(app, expected)
        finally:
            if worker is not None:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
            await runner.cleanup()
    ratios = [b / ((bare_rates[i] + bare_rates[i + 1]) / 2) for i, b in enumerate(bridge_rates)]
    ratio = statistics.median(ratios)
    print(f"[role {role}]")
    print(f"  bare aiohttp handler : {bare_ok}/{chunk * (rounds + 1)} accepted, "
          f"{statistics.mean(bare_rates):8.0f} req/s (chunks: {', '.join(f'{x:.0f}' for x in bare_rates)})")
    print(f"  fedibridge /inbox    : {ok}/{chunk * rounds} accepted, {statistics.mean(bridge_rates):8.0f} req/s "
          f"(chunks: {', '.join(f'{x:.0f}' for x in bridge_rates)})")
    print(f"  ratio                : {ratio:.0%} of bare, median of {rounds} rounds "
          f"({', '.join(f'{x:.0%}' for x in ratios)}; target >= 50%)")
    print(f"  stored at 202        : {durable}/{expected} inbox items (warm-up included)")
    print(f"  stored as comments   : {stored}/{expected} accepted replies (warm-up included)")
    good = ratio >= 0.5 and ok == chunk * rounds and durable == expected and stored == expected
    print("  PASS" if good else "  FAIL")
    return good


async def instances(keys: list[rsa.RSAPrivateKey], hosts: list[str], per_host: int
                    ) -> tuple[web.AppRunner, list[tuple[str, rsa.RSAPrivateKey]]]:
    """Mastodon-shaped actors /users/a0… on each loopback host (one server bound to all of them)."""
    port = free_port()
    pems = [k.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode() for k in keys]

    async def get(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = hosts.index(request.url.host or "") * per_host + int(name[1:])
        base = f"http://{request.host}"
        actor = f"{base}/users/{name}"
        doc = {"@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"], "id": actor,
               "type": "Person", "preferredUsername": name, "name": f"Bench {index}", "inbox": f"{actor}/inbox",
               "endpoints": {"sharedInbox": f"{base}/inbox"}, "url": f"{base}/@{name}",
               "publicKey": {"id": f"{actor}#main-key", "owner": actor, "publicKeyPem": pems[index]}}
        return web.Response(text=json.dumps(doc), content_type="application/activity+json")

    app = web.Application()
    app.router.add_get("/users/{name}", get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for h in hosts:
        await web.TCPSite(runner, h, port).start()
    actors = [(f"http://{h}:{port}/users/a{i}", keys[j * per_host + i]) for j, h in enumerate(hosts)
              for i in range(per_host)]
    return runner, actors


def steady_rate(progress: list[tuple[float, int]], n: int, low: float = 0.1, high: float = 0.9) -> float | None:
    """Comments/s between the moments `low` and `high` of the n comments were listed (interpolated between
    polls): the handling rate without start-up or the timing of the first and last batch, which move a whole
    run's rate by a batch's time (1,000 comments) either way."""

    def when(target: float) -> float | None:
        for (t0, c0), (t1, c1) in zip(progress, progress[1:], strict=False):
            if c0 < target <= c1:
                return t0 + (t1 - t0) * (target - c0) / (c1 - c0)
        return None

    start, end = when(low * n), when(high * n)
    return (high - low) * n / (end - start) if start is not None and end is not None and end > start else None


async def end_to_end(n: int, concurrency: int, role: str, database_url: str | None, serve_profile: str | None,
                     workers: int = 1) -> bool:
    """A burst of n replies from 50 actors on 5 hosts to a `fedibridge serve` subprocess, until all are comments."""
    raise_nofile()
    hosts, per_host = loopback_hosts(5, second=3), 10
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(len(hosts) * per_host)]
    remote, actors = await instances(keys, hosts, per_host)
    try:
        async with Bare("inbox") as bare, Bridge(role, database_url, serve_profile) as bridge, \
                aiohttp.ClientSession() as session:
            in_reply_to = await publish(session, bridge)
            inbox_url = f"{bridge.base}/inbox"
            per_actor = -(-n // len(actors))
            signed = [presign(inbox_url, actor, key, in_reply_to, 0, per_actor) for actor, key in actors]
            reqs = [signed[i % len(actors)][i // len(actors)] for i in range(n)]  # actors interleaved
            bare_ok, bare_secs = await load(f"{bare.base}/inbox", reqs, concurrency)  # bare checks nothing
            bare.sample_rss()

            done = asyncio.Event()
            seen = [0]
            started = time.perf_counter()

            progress: list[tuple[float, int]] = []  # (when, comments listed) at each poll

            async def poll() -> None:
                while seen[0] < n:
                    await asyncio.sleep(0.1 if role == "web" else 0.25)
                    seen[0] = await total(session, bridge, "/api/comments?status=all")
                    progress.append((time.perf_counter(), seen[0]))
                    bridge.sample_rss()
                done.set()

            poller = asyncio.create_task(poll())
            ok, accept_secs = await load(inbox_url, reqs, concurrency)
            at_last_202 = await total(session, bridge, "/api/comments?status=all")
            spawned: list[asyncio.subprocess.Process] = []
            handling_from = time.perf_counter()
            if role == "web":  # handling starts only now, in worker processes of their own
                spawned = [await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "fedibridge", "serve", "--role", "worker", cwd=bridge.dir,
                    env=bridge.env(), stdout=asyncio.subprocess.DEVNULL) for _ in range(workers)]
            database = urlsplit(database_url).path.lstrip("/") if database_url else None
            cpu_from = cpu_seconds([w.pid for w in spawned], database)
            try:
                await asyncio.wait_for(done.wait(), timeout=max(300.0, n / 20))
            except TimeoutError:
                poller.cancel()
            finally:
                cpu = cpu_split(cpu_from, cpu_seconds([w.pid for w in spawned], database),
                                time.perf_counter() - handling_from)
                for worker in spawned:
                    worker.terminate()
                    await worker.wait()
            handling_secs = time.perf_counter() - handling_from
            first_handled = next((t for t, listed in progress if listed), 0.0)  # role web: workers' first comments
            working_secs = time.perf_counter() - first_handled if first_handled else handling_secs
            e2e_secs = time.perf_counter() - started
            stored = seen[0]
    finally:
        await remote.cleanup()
    bare_rate, accept_rate, e2e_rate = bare_ok / bare_secs, ok / accept_secs, stored / e2e_secs
    print(f"[end to end, role {role}, {'PostgreSQL' if database_url else 'SQLite'}: {n} replies, {len(actors)} "
          f"actors on {len(hosts)} hosts, concurrency {concurrency}]")
    print(f"  bare handler (own process)  : {bare_ok}/{n} accepted, {bare_rate:8.0f} req/s")
    print(f"  fedibridge serve 202s       : {ok}/{n} accepted in {accept_secs:6.1f} s, {accept_rate:8.0f} req/s "
          f"({accept_rate / bare_rate:.0%} of bare)")
    print(f"  end to end (first POST until listed by /api/comments): {stored}/{n} comments in {e2e_secs:6.1f} s, "
          f"{e2e_rate:8.0f} comments/s ({e2e_rate / bare_rate:.0%} of bare's 202 rate; issue 12 target >= 1,500/s)")
    print(f"  at the last 202 {at_last_202} were comments; the other {stored - at_last_202} took "
          f"{e2e_secs - accept_secs:.1f} s more")
    if role == "web":
        print(f"  handling by {workers} --role worker process(es) after the burst: {stored} in {handling_secs:6.1f} s, "
              f"{stored / handling_secs:8.0f} comments/s (includes worker start-up); from the first comment shown: "
              f"{working_secs:5.1f} s, {stored / working_secs:8.0f} comments/s")
        middle = steady_rate(progress, n)
        if middle:
            print(f"  steady handling, from 10 % to 90 % of the comments listed: {middle:8.0f} comments/s "
                  "(leaves out start-up, the first batch's landing and the last batch: compare workers by this)")
        print(f"  CPU while handling (start-up included): {cpu}")
    print(f"  peak RSS                    : bridge {bridge.peak_rss:.0f} MB, bare {bare.peak_rss:.0f} MB "
          "(target < 300 MB)")
    if serve_profile:
        print(f"  profile of the bridge process: {serve_profile} (python bench/profile_summary.py {serve_profile})")
    good = ok == n and stored == n and bridge.peak_rss < 300
    print("  PASS" if good else "  FAIL")
    return good


async def main(n: int, concurrency: int, rounds: int, roles: list[str], database_url: str | None = None,
               profile: str | None = None) -> int:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    remote, actor = await remote_actor(key)
    bare, bare_url = await bare_server()
    try:
        results = [await measure(role, n, concurrency, rounds, database_url, key, actor, bare_url, profile)
                   for role in roles]
    finally:
        await bare.cleanup()
        await remote.cleanup()
    return 0 if all(results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="bridge chunks, each between two bare chunks")
    parser.add_argument("--role", choices=("all", "web", "both"), default="all",
                        help="all: the inbox worker shares the process (default); web: accepting only, the "
                             "worker handles afterwards; both: one after the other")
    parser.add_argument("--database-url", help="an EMPTY database to use (default: a temporary SQLite file)")
    parser.add_argument("--profile", metavar="PATH", help="write cProfile stats of the bridge phase to PATH.<role>")
    parser.add_argument("--phase", choices=("accept", "e2e", "both"), default="both",
                        help="accept: the 202 rate against bare (in process); e2e: the end-to-end burst")
    parser.add_argument("--replies", type=int, default=20_000, help="replies in the end-to-end burst")
    parser.add_argument("--serve-profile", metavar="PATH", help="run the end-to-end bridge under cProfile")
    parser.add_argument("--workers", type=int, default=1, help="e2e with --role web: worker processes started "
                        "after the burst (compare 1 and 2 on PostgreSQL)")
    args = parser.parse_args()
    if args.database_url and args.role == "both" and args.phase != "e2e":
        parser.error("--role both needs a fresh database per role: use the default SQLite or run twice")
    roles = ["all", "web"] if args.role == "both" else [args.role]
    code = 0
    if args.phase in ("accept", "both"):
        code = asyncio.run(main(args.requests, args.concurrency, args.rounds, roles, args.database_url, args.profile))
    if args.phase in ("e2e", "both"):
        e2e_role = "web" if args.role == "web" else "all"
        good = asyncio.run(end_to_end(args.replies, args.concurrency, e2e_role, args.database_url,
                                      args.serve_profile, args.workers))
        code = code or (0 if good else 1)
    sys.exit(code)
