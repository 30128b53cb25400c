"""Signing benchmark: RSA-signing Accepts/deliveries inline on the event loop, in a thread pool, or in a process pool.

    .venv/bin/python bench/signing.py [--signatures 3000] [--workers 2] [--scheme cavage|rfc9421]

Each variant signs the same N Accept activities (sign_request, 2048-bit key, as delivery signs them) with
up to 64 signings requested at once, while a ticker task measures how late the event loop wakes it (the
lag every inbox POST and public GET would see meanwhile). The inline rate is the baseline: ratios are
measured in the same run. `cryptography` releases the GIL during the RSA operation itself, so threads can
use a second core; processes pay pickling and a round trip per signature.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedibridge.signatures import load_private_key, sign_request  # noqa: E402
from fedibridge.signing import SigningPool  # noqa: E402

KEY_ID = "https://blog.example.org/fediverse/users/blog#main-key"
_KEY: RSAPrivateKey | None = None


def _init(pem: bytes) -> None:
    global _KEY
    _KEY = load_private_key(pem)


def _sign_in_child(url: str, body: bytes, now: datetime, scheme: str) -> dict[str, str]:
    assert _KEY is not None
    return sign_request("POST", url, {}, body, _KEY, KEY_ID, now, scheme=scheme)  # type: ignore[arg-type]


def accepts(n: int) -> list[tuple[str, bytes]]:
    """N Accept(Follow) bodies to N inboxes on 1,000 hosts, shaped like the bridge's."""
    out = []
    for i in range(n):
        actor = f"https://h{i % 1000}.example/users/u{i}"
        body = json.dumps({"@context": "https://www.w3.org/ns/activitystreams",
                           "id": f"https://blog.example.org/fediverse/activities/accept-{i}", "type": "Accept",
                           "actor": "https://blog.example.org/fediverse/users/blog",
                           "object": {"id": f"{actor}#follows/{i}", "type": "Follow", "actor": actor,
                                      "object": "https://blog.example.org/fediverse/users/blog"}}).encode()
        out.append((f"https://h{i % 1000}.example/users/u{i}/inbox", body))
    return out


async def run(name: str, sign_one: Callable[[str, bytes], Awaitable[object]], jobs: list[tuple[str, bytes]],
              concurrency: int = 64) -> tuple[float, float, float]:
    """(signatures/s, worst event-loop lag ms, median lag ms) for signing all jobs."""
    lags: list[float] = []
    stop = False

    async def ticker() -> None:
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - t - 0.001) * 1000)

    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            url, body = queue.pop()
            await sign_one(url, body)
            await asyncio.sleep(0)  # the inline path yields between signatures, as a delivery loop does

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    lags.clear()  # only the lag while signing counts
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    secs = time.perf_counter() - started
    stop = True
    await tick
    return len(jobs) / secs, max(lags or [0.0]), statistics.median(lags or [0.0])


async def main(n: int, workers: int, scheme: str, rounds: int) -> int:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    jobs = accepts(n)
    now = datetime.now(UTC)
    loop = asyncio.get_running_loop()

    async def inline(url: str, body: bytes) -> object:
        return sign_request("POST", url, {}, body, key, KEY_ID, now, scheme=scheme)  # type: ignore[arg-type]

    def in_pool(pool: Executor, fn: Callable[..., object], *args: object) -> Callable[[str, bytes], Awaitable[object]]:
        async def one(url: str, body: bytes) -> object:
            return await loop.run_in_executor(pool, fn, url, body, *args)
        return one

    def thread_sign(url: str, body: bytes) -> dict[str, str]:
        return sign_request("POST", url, {}, body, key, KEY_ID, now, scheme=scheme)  # type: ignore[arg-type]

    helper = SigningPool(key, KEY_ID)

    async def with_helper(url: str, body: bytes) -> object:
        return await helper.sign("POST", url, {}, body, now, scheme=scheme)  # type: ignore[arg-type]

    threads2, threads1 = ThreadPoolExecutor(workers), ThreadPoolExecutor(1)
    procs = ProcessPoolExecutor(workers, initializer=_init, initargs=(pem,))
    variants: dict[str, Callable[[str, bytes], Awaitable[object]]] = {
        "inline (event loop)": inline,
        f"thread pool ({workers})": in_pool(threads2, thread_sign),
        "thread pool (1)": in_pool(threads1, thread_sign),
        f"process pool ({workers})": in_pool(procs, _sign_in_child, now, scheme),
        "fedibridge.signing.SigningPool": with_helper,
    }
    for sign_one in variants.values():  # warm-up: threads and child processes started, key loaded
        await run("warm-up", sign_one, jobs[:50])
    # The machine is shared: variants take turns, round after round, and the median round counts.
    chunk = len(jobs) // rounds
    per: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, sign_one in variants.items():
            per[name].append(await run(name, sign_one, jobs[r * chunk:(r + 1) * chunk]))
    results = {name: (statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs),
                      statistics.median(x[2] for x in runs)) for name, runs in per.items()}
    for pool in (threads2, threads1, procs):
        pool.shutdown()
    helper.close()

    base = results["inline (event loop)"][0]
    print(f"{n} {scheme} signatures (2048-bit RSA) per variant in {rounds} interleaved rounds (median), "
          f"{os.cpu_count()} CPUs, up to 64 requested at once")
    for name, (rate, worst, median) in results.items():
        print(f"  {name:32s}: {rate:7.0f} signatures/s  {rate / base:5.2f}x inline   "
              f"event-loop lag: median {median:6.2f} ms, worst {worst:7.2f} ms (median round)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signatures", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2, help="pool size for the thread and process pools")
    parser.add_argument("--scheme", choices=("cavage", "rfc9421"), default="cavage")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.signatures, args.workers, args.scheme, args.rounds)))
