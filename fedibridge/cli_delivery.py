"""`fedibridge followers` and `fedibridge deliveries`: look at who follows and what the queue is doing.

They read the shared database directly, so they work while `serve` runs (and from any machine that
can reach a PostgreSQL database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update

from . import doc_cache, installation
from .store import Store, utcnow
from .tables import deliveries, domains, followers

FAILED_LIMIT = 200
FAILING_LIMIT = 50  # servers listed with their latest error


def add_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("followers", cmd_followers, "list the blog's fediverse followers")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("deliveries", cmd_deliveries, "show the delivery queue: pending, retrying, failed, per host")
    p.add_argument("--failed", action="store_true", help="list failed deliveries with their last error")
    p.add_argument("--retry-failed", action="store_true", help="queue every failed delivery again, due now")
    p.add_argument("--json", action="store_true", help="machine-readable output")


async def _with_store(args: argparse.Namespace, job: Callable[[Store], Any]) -> Any:
    settings = installation.load_existing(getattr(args, "config", None))  # never creates a database
    store = await Store.open(settings.database_url)
    doc_cache.tell_servers_on_close(store)  # running servers' cached documents follow
    try:
        return await job(store)
    finally:
        await store.close()


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*r).rstrip() for r in rows])


# ------------------------------------------------------------------------------------------ followers
def cmd_followers(args: argparse.Namespace) -> int:
    async def job(store: Store) -> list[Any]:
        async with store.connect() as conn:
            return list((await conn.execute(select(followers).order_by(followers.c.since, followers.c.id))).all())

    found = asyncio.run(_with_store(args, job))
    if args.json:
        print(json.dumps({"total": len(found), "followers": [
            {"id": f.actor_id, "handle": f.handle, "inbox": f.inbox, "shared_inbox": f.shared_inbox,
             "since": f.since.isoformat().replace("+00:00", "Z")} for f in found]}, ensure_ascii=False, indent=2))
        return 0
    if not found:
        print("no followers yet")
        return 0
    print(_table(["handle", "inbox", "since"],
                 [[f.handle or f.actor_id, f.shared_inbox or f.inbox, f.since.strftime("%Y-%m-%d %H:%M")]
                  for f in found]))
    print(f"\n{len(found)} follower(s)")
    return 0


# ----------------------------------------------------------------------------------------- deliveries
async def queue_summary(store: Store) -> dict[str, Any]:
    """Counts by state (pending split into first try and retrying), the 20 busiest hosts, unavailable domains."""
    c = deliveries.c
    retrying = case((c.attempts > 0, 1), else_=0)
    async with store.connect() as conn:
        totals = {"pending": 0, "retrying": 0, "failed": 0, "done": 0}
        for state, is_retry, n in await conn.execute(
            select(c.state, retrying, func.count()).group_by(c.state, retrying)
        ):
            key = "retrying" if state == "pending" and is_retry else state
            totals[key] = totals.get(key, 0) + n
        pending_n = func.sum(case((c.state == "pending", 1), else_=0))
        failed_n = func.sum(case((c.state == "failed", 1), else_=0))
        done_n = func.sum(case((c.state == "done", 1), else_=0))
        hosts = [
            {"host": h, "pending": int(p or 0), "failed": int(f or 0), "done": int(d or 0)}
            for h, p, f, d in await conn.execute(
                select(c.host, pending_n, failed_n, done_n).group_by(c.host)
                .order_by(pending_n.desc(), failed_n.desc(), c.host).limit(20))
        ]
        down = [
            {"host": r.host, "failing_since": r.failing_since.isoformat() if r.failing_since else None}
            for r in await conn.execute(select(domains).where(domains.c.unavailable.is_(True))
                                        .order_by(domains.c.host))
        ]
        failing = await _latest_errors(conn)
    return {"totals": totals, "hosts": hosts, "failing": failing, "unavailable": down}


async def _latest_errors(conn: Any) -> list[dict[str, Any]]:
    """Per server with retrying or failed rows, its most recent error: what the worker's log said."""
    c = deliveries.c
    when = func.coalesce(c.last_attempt_at, c.finished_at, c.created_at)  # rows from before 0002 lack the first
    rank = func.row_number().over(partition_by=c.host, order_by=(when.desc(), c.id.desc())).label("rank")
    failing = or_(c.state == "failed", and_(c.state == "pending", c.attempts > 0))
    latest = (select(c.host, c.last_status, c.last_error, c.last_attempt_at, c.state, rank)
              .where(failing, c.last_error.is_not(None)).subquery())
    rows = await conn.execute(select(latest).where(latest.c.rank == 1).order_by(latest.c.host).limit(FAILING_LIMIT))
    return [{"host": r.host, "state": "retrying" if r.state == "pending" else r.state, "last_status": r.last_status,
             "last_error": r.last_error,
             "at": r.last_attempt_at.isoformat().replace("+00:00", "Z") if r.last_attempt_at else None}
            for r in rows]


async def failed_rows(store: Store) -> list[Any]:
    async with store.connect() as conn:
        return list((await conn.execute(
            select(deliveries).where(deliveries.c.state == "failed")
            .order_by(deliveries.c.finished_at.desc(), deliveries.c.id.desc()).limit(FAILED_LIMIT))).all())


async def retry_failed(store: Store) -> int:
    """Requeue failed rows from scratch (attempts reset): for after an outage was fixed."""
    async with store.begin() as conn:
        result = await conn.execute(
            update(deliveries).where(deliveries.c.state == "failed")
            .values(state="pending", attempts=0, next_attempt_at=utcnow(), locked_until=None, locked_by=None,
                    finished_at=None))
        return int(result.rowcount or 0)


def cmd_deliveries(args: argparse.Namespace) -> int:
    if args.retry_failed:
        n = asyncio.run(_with_store(args, retry_failed))
        print(f"requeued {n} failed deliver{'y' if n == 1 else 'ies'}; a running worker sends them within seconds")
        return 0
    if args.failed:
        found = asyncio.run(_with_store(args, failed_rows))
        if args.json:
            print(json.dumps([{"id": r.id, "kind": r.kind, "inbox": r.inbox, "attempts": r.attempts,
                               "last_status": r.last_status, "last_error": r.last_error,
                               "finished_at": r.finished_at.isoformat() if r.finished_at else None}
                              for r in found], ensure_ascii=False, indent=2))
            return 0
        if not found:
            print("no failed deliveries")
            return 0
        print(_table(["id", "inbox", "tries", "when", "last error"],
                     [[str(r.id), r.inbox, str(r.attempts),
                       r.finished_at.strftime("%Y-%m-%d %H:%M") if r.finished_at else "",
                       (r.last_error or "").replace("\n", " ")[:80]] for r in found]))
        return 0
    summary = asyncio.run(_with_store(args, queue_summary))
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    t = summary["totals"]
    print(f"pending {t['pending']}  retrying {t['retrying']}  failed {t['failed']}  done {t['done']}")
    if summary["hosts"]:
        print()
        print(_table(["host", "pending", "failed", "done"],
                     [[h["host"], str(h["pending"]), str(h["failed"]), str(h["done"])] for h in summary["hosts"]]))
    if summary["failing"]:
        print("\nfailing servers, latest error:")
        print(_table(["host", "state", "when", "last error"],
                     [[f["host"], f["state"], (f["at"] or "")[:16].replace("T", " "),
                       (f["last_error"] or "").replace("\n", " ")[:100]] for f in summary["failing"]]))
    if summary["unavailable"]:
        print("\nunavailable domains (skipped until they answer a daily probe):")
        for d in summary["unavailable"]:
            print(f"  {d['host']}  failing since {d['failing_since']}")
    return 0
