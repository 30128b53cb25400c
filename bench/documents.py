"""Benchmark: GETs of an article object (Accept: application/activity+json), against a bare aiohttp handler.

The stampede a boost causes: many servers fetching one article object at once. Both servers are hit by
the same load generator in the same run and process (its own cost per request is part of both rates),
the bare handler returning the very bytes the bridge serves. The bridge is measured in --rounds chunks,
each between two bare chunks; the figure is the median of the per-round ratios. Target: >= 60 %, every
answer 200 with the article's bytes, and the object rendered once for the whole run (the document cache).

    .venv/bin/python bench/documents.py [--requests 20000] [--rounds 5] [--concurrency 64]
                                        [--database-url postgresql://…/empty_db]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bridge import free_port, serve  # noqa: E402
from fedibridge import articles  # noqa: E402
from fedibridge.app import SERVICES, create_app  # noqa: E402
from fedibridge.config import Settings, validate  # noqa: E402
from fedibridge.web.documents import DOCS  # noqa: E402

HOST = "127.0.0.1"
ACCEPT = {"Accept": "application/activity+json"}


async def bare_server(body: bytes, content_type: str) -> tuple[web.AppRunner, str]:
    """The baseline: the same bytes and content type from a handler that does nothing else."""
    async def get(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    port = free_port()
    app = web.Application()
    app.router.add_get("/articles/bench", get)
    return await serve(app, port), f"http://{HOST}:{port}/articles/bench"


async def rate(session: aiohttp.ClientSession, url: str, n: int, concurrency: int, expected: bytes
               ) -> tuple[int, float]:
    """GET `url` n times with `concurrency` workers; (answers equal to `expected`, requests a second)."""
    left = n
    good = 0

    async def worker() -> None:
        nonlocal left, good
        while left > 0:
            left -= 1
            async with session.get(url, headers=ACCEPT) as resp:
                body = await resp.read()
                good += resp.status == 200 and body == expected

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    secs = time.perf_counter() - started
    return good, n / secs if secs else 0.0


async def main(n: int, concurrency: int, rounds: int, database_url: str | None) -> int:
    chunk = n // rounds
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        settings = validate(Settings(base_url=f"http://{HOST}:{port}", port=port,
                                     database_url=database_url or f"sqlite:///{tmp}/b.db",
                                     keys_dir=str(Path(tmp, "keys")), admin_token="bench",
                                     allow_private_addresses=True, blog_url="http://blog.test", log_level="warning"))
        app = create_app(settings, "web")
        runner = await serve(app, port)
        bare = None
        try:
            inp = articles.validate({"title": "Un billet très partagé", "url": "http://blog.test/bench/",
                                     "content": "<p>Un texte « boosté » par un grand compte 🚀</p>" * 20,
                                     "slug": "bench", "tags": ["fediverse", "blog"], "language": "fr"})
            await articles.publish_one(app[SERVICES].store, app[SERVICES].site, inp, deliver=False)
            url = f"{settings.base}/articles/bench"
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(url, headers=ACCEPT) as resp:
                    assert resp.status == 200, resp.status
                    body, ctype = await resp.read(), resp.headers["Content-Type"]
                bare, bare_url = await bare_server(body, ctype)
                await rate(session, bare_url, 500, concurrency, body)  # warm-up: connections open
                await rate(session, url, 500, concurrency, body)
                renders_before = app[DOCS].renders
                bare_good, bare_rates = 0, []
                good, r = await rate(session, bare_url, chunk, concurrency, body)
                bare_good, bare_rates = good, [r]
                ok, bridge_rates = 0, []
                for _ in range(rounds):
                    good, r = await rate(session, url, chunk, concurrency, body)
                    ok, bridge_rates = ok + good, bridge_rates + [r]
                    good, r = await rate(session, bare_url, chunk, concurrency, body)
                    bare_good, bare_rates = bare_good + good, bare_rates + [r]
                renders = app[DOCS].renders - renders_before
        finally:
            if bare is not None:
                await bare.cleanup()
            await runner.cleanup()
    ratios = [b / ((bare_rates[i] + bare_rates[i + 1]) / 2) for i, b in enumerate(bridge_rates)]
    ratio = statistics.median(ratios)
    ttl = settings.document_cache_seconds
    print(f"GET article object, Accept: application/activity+json, concurrency {concurrency}, {len(body)} bytes")
    print(f"  bare aiohttp handler : {bare_good}/{chunk * (rounds + 1)} ok, {statistics.mean(bare_rates):8.0f} req/s "
          f"(chunks: {', '.join(f'{x:.0f}' for x in bare_rates)})")
    print(f"  fedibridge           : {ok}/{chunk * rounds} ok, {statistics.mean(bridge_rates):8.0f} req/s "
          f"(chunks: {', '.join(f'{x:.0f}' for x in bridge_rates)})")
    print(f"  ratio                : {ratio:.0%} of bare, median of {rounds} rounds "
          f"({', '.join(f'{x:.0%}' for x in ratios)}; target >= 60%)")
    print(f"  renderings           : {renders} during the measured run (one per {ttl:g} s TTL at most)")
    good_run = ratio >= 0.6 and ok == chunk * rounds and bare_good == chunk * (rounds + 1)
    print("  PASS" if good_run else "  FAIL")
    return 0 if good_run else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="bridge chunks, each between two bare chunks")
    parser.add_argument("--database-url", help="an EMPTY database to use (default: a temporary SQLite file)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.requests, args.concurrency, args.rounds, args.database_url)))
