"""Fairness of role `all`: handling lag under a sustained stream of inbox POSTs *and* public GETs (issue 12).

A `fedibridge serve` subprocess (role all, SQLite) receives signed replies at a steady `--rate` for
`--seconds`, from 50 actors on 5 loopback hosts, while readers GET the widget, the article feed and the
public comments at `--gets` per second. Every 0.2 s the admin API's `total` says how many replies are
comments; the k-th reply answered 202 counts as handled once that total reaches k. Printed: the handling
lag (p50, p95, max: from a reply's 202 until it is a comment; issue 12 wants it under 5 s), the 202 rate
achieved, and the same stream's 202 rate with no readers, measured in the same run, as a ratio.

    python bench/fairness.py [--rate 300] [--seconds 20] [--gets 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bridge import Bridge, loopback_hosts, publish, raise_nofile, total  # noqa: E402
from bench.inbox import instances, presign  # noqa: E402

READS = ("/widget.js", "/feed.rss", "/api/articles/bench/comments")


async def stream(session: aiohttp.ClientSession, url: str, reqs: list[tuple[dict[str, str], bytes]], rate: float,
                 accepted_at: list[float]) -> None:
    """POST at a steady rate (each on its own task, as independent remote servers would send)."""
    started = time.perf_counter()

    async def one(headers: dict[str, str], body: bytes) -> None:
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            if resp.status == 202:
                accepted_at.append(time.perf_counter())

    tasks = []
    for i, (headers, body) in enumerate(reqs):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(headers, body)))
    await asyncio.gather(*tasks)


async def readers(session: aiohttp.ClientSession, base: str, rate: float, stop: asyncio.Event,
                  latencies: list[float]) -> None:
    """GET public pages at a steady rate until told to stop."""
    i = 0
    started = time.perf_counter()

    async def one(path: str) -> None:
        sent = time.perf_counter()
        async with session.get(base + path) as resp:
            await resp.read()
        latencies.append(time.perf_counter() - sent)

    tasks = []
    while not stop.is_set():
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(READS[i % len(READS)])))
        i += 1
    await asyncio.gather(*tasks, return_exceptions=True)


async def run(rate: float, seconds: float, gets: float, actors: list[tuple[str, rsa.RSAPrivateKey]],
              start: int) -> dict[str, float]:
    """One bridge, one stream (with readers when `gets` > 0); the lag figures and the 202 rate."""
    n = int(rate * seconds)
    async with Bridge("all") as bridge, aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        in_reply_to = await publish(session, bridge)
        url = f"{bridge.base}/inbox"
        per_actor = -(-n // len(actors))
        signed = [presign(url, actor, key, in_reply_to, start, per_actor) for actor, key in actors]
        reqs = [signed[i % len(actors)][i // len(actors)] for i in range(n)]
        accepted_at: list[float] = []
        handled_at: list[float] = []  # handled_at[k]: when the (k+1)-th comment was first listed
        latencies: list[float] = []
        stop = asyncio.Event()

        async def poll() -> None:
            while len(handled_at) < n:
                await asyncio.sleep(0.2)
                seen, now = await total(session, bridge, "/api/comments?status=all"), time.perf_counter()
                handled_at.extend([now] * (seen - len(handled_at)))
                if stop.is_set() and len(handled_at) >= len(accepted_at):
                    return

        poller = asyncio.create_task(poll())
        reading = asyncio.create_task(readers(session, bridge.base, gets, stop, latencies)) if gets else None
        began = time.perf_counter()
        await stream(session, url, reqs, rate, accepted_at)
        sent_secs = time.perf_counter() - began
        stop.set()
        if reading:
            await reading
        await asyncio.wait_for(poller, timeout=300)
    accepted_at.sort()
    lags = [handled - accepted for accepted, handled in zip(accepted_at, handled_at, strict=False)]
    cuts = statistics.quantiles(lags, n=20) if len(lags) > 1 else [0.0] * 19
    return {"accepted": len(accepted_at), "sent": n, "rate": len(accepted_at) / sent_secs,
            "p50": statistics.median(lags) if lags else 0.0, "p95": cuts[18], "max": max(lags, default=0.0),
            "get_p95": statistics.quantiles(latencies, n=20)[18] if len(latencies) > 1 else 0.0,
            "gets": len(latencies) / sent_secs}


async def main(rate: float, seconds: float, gets: float) -> bool:
    raise_nofile()
    hosts, per_host = loopback_hosts(5, second=3), 10
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(len(hosts) * per_host)]
    remote, actors = await instances(keys, hosts, per_host)
    try:
        alone = await run(rate, seconds, 0, actors, 0)
        mixed = await run(rate, seconds, gets, actors, 10 ** 6)
    finally:
        await remote.cleanup()
    print(f"[role all, SQLite: {rate:.0f} replies/s for {seconds:.0f} s from {len(actors)} actors on {len(hosts)} "
          f"hosts; readers {gets:.0f} GET/s of {', '.join(READS)}]")
    for name, r in (("no readers", alone), ("with readers", mixed)):
        print(f"  {name:12}: {r['accepted']:.0f}/{r['sent']:.0f} answered 202 at {r['rate']:6.0f}/s; handling lag "
              f"p50 {r['p50']:5.2f} s, p95 {r['p95']:5.2f} s, max {r['max']:5.2f} s"
              + (f"; GETs {r['gets']:.0f}/s, p95 {r['get_p95'] * 1000:.0f} ms" if r["gets"] else ""))
    print(f"  202 rate with readers / without: {mixed['rate'] / alone['rate']:.2f}")
    good = mixed["max"] < 5.0 and mixed["accepted"] == mixed["sent"]
    print("  PASS (lag under 5 s)" if good else "  FAIL (issue 12 wants the lag under 5 s)")
    return good


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300.0, help="inbox POSTs per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gets", type=float, default=100.0, help="public GETs per second")
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(main(args.rate, args.seconds, args.gets)) else 1)
