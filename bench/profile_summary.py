"""Summarise a cProfile of the bridge process (bench/_profiled.py) into where the time goes per handled row.

    .venv/bin/python bench/profile_summary.py PATH --rows 3000 [--wall SECONDS] [--top 15]

Self time (tottime, exact per frame even across coroutine and greenlet switches) is grouped by what the
code does: waiting in epoll (the main thread idle: the SQLite thread, remotes, or deliberate pauses),
the hand-off to aiosqlite's thread, SQLAlchemy building/compiling statements, the event loop, aiohttp,
RSA, JSON, sanitising, and fedibridge's own code. Counts that are real calls (synchronous functions:
statements executed, commits, RSA operations, HTTP requests sent) are given per row. cProfile sees the
main thread only and slows it about 2×: --wall (the unprofiled end-to-end seconds) scales the shares to
milliseconds per row of an unprofiled run.
"""

from __future__ import annotations

import argparse
import pstats
import re
from collections import defaultdict

# (category, regex on "file:function"): first match wins
CATEGORIES: list[tuple[str, str]] = [
    ("idle in epoll (waiting: SQLite thread, remotes, pauses)", r"method 'poll' of 'select\.epoll'"),
    ("hand-off to aiosqlite's thread (queue put, GIL)", r"SimpleQueue|aiosqlite/"),
    ("RSA sign", r"'sign' of .*RSAPrivateKey"),
    ("RSA verify", r"'verify' of .*RSAPublicKey"),
    ("SQLAlchemy (build, compile, cache keys, results)", r"sqlalchemy/"),
    ("greenlet switches (SQLAlchemy async bridge)", r"greenlet"),
    ("sanitising (nh3, sanitize.py)", r"Cleaner|/fedibridge/sanitize\.py"),
    ("JSON (orjson, json, remote_json)", r"orjson|/json/|remote_json\.py"),
    ("aiohttp, yarl, multidict (HTTP server and client)", r"aiohttp/|yarl/|multidict/|_http_parser"),
    ("socket send/recv/connect", r"of '_socket\.socket'"),
    ("asyncio event loop and tasks", r"asyncio/|selectors\.py|_contextvars|_asyncio"),
    ("fedibridge code", r"/fedibridge/"),
    ("other", r""),
]

# (label, regex): call counts of synchronous functions, which cProfile counts exactly
COUNTS: list[tuple[str, str]] = [
    ("SQL statements executed", r"sqlalchemy/engine/default\.py:do_execute$"),
    ("transactions begun (reads and writes)", r"sqlalchemy/engine/base\.py:_begin_impl$"),
    ("commits (write transactions)", r"sqlalchemy/engine/base\.py:_commit_impl$"),
    ("hand-offs to aiosqlite's thread", r"method 'put_nowait' of '_queue\.SimpleQueue'"),
    ("RSA signatures", r"'sign' of .*RSAPrivateKey"),
    ("RSA verifications", r"'verify' of .*RSAPublicKey"),
    ("HTTP requests sent (GET actors, POST deliveries)", r"aiohttp/client_reqrep\.py:send$"),
    ("nh3 sanitiser runs", r"method 'clean' of 'builtins\.Cleaner'"),
]


def name(key: tuple[str, int, str]) -> str:
    file, _line, func = key
    return f"{file}:{func}"


def summarise(path: str, rows: int, wall: float | None, top: int) -> None:
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    by_cat: dict[str, float] = defaultdict(float)
    for key, (_cc, _nc, tt, _ct, _callers) in stats.items():
        n = name(key)
        for cat, rx in CATEGORIES:
            if re.search(rx, n):
                by_cat[cat] += tt
                break
    scale = (wall / total) if wall else 1.0
    unit = "ms/row (scaled to the unprofiled wall time)" if wall else "ms/row (profiled)"
    print(f"{path}: {total:.1f} s profiled on the main thread for {rows} rows; {unit}")
    for cat, secs in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"  {secs / total:6.1%}  {secs * scale * 1000 / rows:7.2f}  {cat}")
    print("per row (exact call counts):")
    for label, rx in COUNTS:
        calls = sum(v[1] for k, v in stats.items() if re.search(rx, name(k)))
        print(f"  {calls / rows:7.2f}  {label}")
    print(f"top {top} functions by self time:")
    ranked = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    for key, (_cc, nc, tt, _ct, _callers) in ranked:
        short = name(key).split("site-packages/")[-1].split("/fedibridge/")[-1]
        print(f"  {tt / total:6.1%}  {nc:8d} calls  {short}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--rows", type=int, required=True, help="rows handled in the profiled run")
    parser.add_argument("--wall", type=float, help="unprofiled end-to-end seconds of the same run size")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    summarise(args.path, args.rows, args.wall, args.top)
