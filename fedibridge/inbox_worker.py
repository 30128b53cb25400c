"""Handles stored inbox activities: claim due rows, dispatch by type, mark done or retry with backoff.

The web side stores first and answers 202; this loop does the work, so a crash between the two loses
nothing (the row is still pending, or its lease runs out and another pass picks it up). Handlers must be
idempotent: a crash after a handler ran but before the row was marked done runs it again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import and_, or_, select

from .app import HEALTH, METRICS, STORE
from .health import Backoff, describe, is_storage_outage
from .logsafe import logger
from .metrics import bounded
from .objects import ref_id
from .store import utcnow, wait_event
from .tables import inbox_items

log = logger(__name__)  # arguments escaped and redacted (logsafe)

# Set by the web side (same process) when it stores an activity, so handling starts at once.
WAKE = web.AppKey("inbox_wake", asyncio.Event)
BUSY_PAUSE = 0.2  # at least this many seconds the worker steps aside after a batch while our inbox accepts
QUIET = 0.05  # role all: handling starts once the inbox has accepted nothing for this long…
MAX_DEFER = 2.0  # …or after this many seconds of continuous load, so a sustained stream still progresses
BUSY_SHARE = 9  # …and 9× the batch's own time: under load, handling gets about a tenth of the event loop
MAX_PAUSE = 1.0  # …but never longer than this: a slow batch (slow remotes, not CPU) must not stall the next one
CONCURRENCY = 4  # senders handled at once: one sender's slow activity does not hold up the others'


@dataclass
class Pulse:
    """How many activities this process's own inbox has stored (role all): the worker yields while it grows.

    Accepting has priority over handling: a 202 needs the event loop now, handling is durable and may lag.
    """

    accepted: int = 0


PULSE = web.AppKey("inbox_pulse", Pulse)
POLL_SECONDS = 1.0  # other processes (role=web) only reach us through the database
BATCH = 20
LEASE = timedelta(minutes=5)  # a claimed row not finished by then is considered abandoned
MAX_ATTEMPTS = 5
METRIC = "fedibridge_inbox_activities_total"
TASK = "inbox_worker"  # its name in /healthz (the job's name)


def backoff(attempts: int) -> timedelta:
    """10 s, 1 min, 5 min, 25 min…: handler failures are usually a remote being briefly unreachable."""
    return timedelta(seconds=min(6 * 3600, 10 * 5 ** max(0, attempts - 1)))


async def run(app: web.Application) -> None:
    """Forever: handle what is due, then sleep until woken (this process's inbox, or NOTIFY) or the poll passes."""
    from .wakeup import listen

    wake = app.get(WAKE) or asyncio.Event()  # worker role: no inbox route here, only NOTIFY wakes us
    listener = asyncio.create_task(listen(app, wake, "inbox-listen"), name="inbox-listen")
    try:
        await _loop(app, wake)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def _loop(app: web.Application, wake: asyncio.Event) -> None:
    pulse = app.get(PULSE)
    health = app[HEALTH]
    retry = Backoff()
    held: set[int] = set()  # rows this process claimed and has not finished or released
    try:
        while True:
            if pulse is not None:
                await _until_quiet(pulse)
            wake.clear()
            seen = pulse.accepted if pulse else 0
            started = asyncio.get_running_loop().time()
            try:
                handled = await run_once(app, held)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away (or a bug): keep trying, say so on /healthz
                if not health.is_failing(TASK):
                    log.exception("inbox worker pass failed; retrying")
                else:
                    log.debug("inbox worker pass failed again: %s", describe(exc))
                health.failing(TASK, exc)
                await asyncio.sleep(retry.next())
                continue
            health.ok(TASK)
            retry.reset()
            if handled:
                if pulse is not None and pulse.accepted != seen:
                    spent = asyncio.get_running_loop().time() - started
                    await asyncio.sleep(pause(spent))  # one batch per pause: never starves
                continue
            await wait_event(wake, POLL_SECONDS)
    except asyncio.CancelledError:
        if held:  # a graceful stop: hand back at once what we did not finish
            try:
                await asyncio.shield(asyncio.ensure_future(_release(app, held)))
            except Exception as exc:  # noqa: BLE001 - their lease expires; nothing is lost
                log.warning("could not release %d inbox items on stop (their lease will expire): %s",
                            len(held), describe(exc))
        raise


def pause(spent: float) -> float:
    """How long to step aside after a batch that took `spent` seconds while our inbox kept accepting.

    A batch's time is mostly waiting on remotes (thread completion, actor fetches), not CPU: without the
    cap, one activity pointing at slow parents made everything behind it wait 9× that long.
    """
    return min(MAX_PAUSE, max(BUSY_PAUSE, BUSY_SHARE * spent))


async def _until_quiet(pulse: Pulse) -> None:
    """Wait while this process's inbox is accepting (a burst), but never longer than MAX_DEFER."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_DEFER
    seen = pulse.accepted
    while loop.time() < deadline:
        await asyncio.sleep(QUIET)
        if pulse.accepted == seen:
            return
        seen = pulse.accepted


async def run_once(app: web.Application, held: set[int] | None = None) -> int:
    """Claim and handle one batch of due rows; returns how many were handled.

    Related activities run in arrival order (see `related`); unrelated ones run side by side,
    CONCURRENCY groups at a time, so an activity waiting on slow remotes delays only those tied to it.
    `held` collects the ids claimed and not yet finished: when the database fails mid-batch (or the process
    stops), they are released, on the next pass (or at once), instead of waiting out their lease.
    """
    held = set() if held is None else held
    if held:
        await _release(app, held)
        held.clear()
    claiming = asyncio.ensure_future(claim(app, utcnow()))
    try:
        rows = await asyncio.shield(claiming)  # a claim cut in half by a stop would leave rows leased
    except asyncio.CancelledError:
        await asyncio.wait([claiming])
        if not claiming.cancelled() and claiming.exception() is None:
            held.update(r.id for r in claiming.result())
        raise
    held.update(r.id for r in rows)
    slots = asyncio.Semaphore(CONCURRENCY)

    async def in_order(mine: list[Any]) -> None:
        async with slots:
            for row in mine:
                await _handle(app, row)
                held.discard(row.id)

    await asyncio.gather(*(in_order(mine) for mine in related(rows)))
    return len(rows)


def _keys(row: Any) -> list[str]:
    """What an activity touches: its sender, its object, and what that object replies to."""
    obj = row.payload.get("object") if isinstance(row.payload, dict) else None
    keys = [row.actor, ref_id(obj)]
    if isinstance(obj, dict):
        keys.append(ref_id(obj.get("inReplyTo")))
    return [k for k in keys if k]


def related(rows: list[Any]) -> list[list[Any]]:
    """Rows grouped by shared sender, object or thread link, each group in arrival order.

    One sender's Create comes before its Update and Delete, a Follow before its Undo, and a reply after
    its parent's Create even from another server (handled first, the reply would fetch a parent that may
    not be fetchable). Groups share nothing, so they may run in any order.
    """
    root = list(range(len(rows)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        for key in _keys(row):
            a, b = find(i), find(first.setdefault(key, i))
            root[max(a, b)] = min(a, b)
    groups: dict[int, list[Any]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(find(i), []).append(row)
    return list(groups.values())


async def _release(app: web.Application, ids: set[int]) -> None:
    """Put claimed rows back to pending now, lease cleared and the claim's attempt not counted, so the next
    worker (or this one restarted) handles them within its poll, not when the 5-minute lease runs out."""
    async with app[STORE].begin() as conn:
        await conn.execute(inbox_items.update()
                           .where(inbox_items.c.id.in_(sorted(ids)), inbox_items.c.state == "pending")
                           .values(locked_until=None, attempts=inbox_items.c.attempts - 1))


async def claim(app: web.Application, now: datetime, limit: int = BATCH) -> list[Any]:
    """Lease due pending rows to this process: one UPDATE … RETURNING over the oldest due rows
    (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's single writer makes the statement atomic).

    On SQLite a read comes first: an idle poll must not take the write lock, and a claim holds it for
    one statement only, so the inbox's group commit never queues behind the worker for long.
    """
    store = app[STORE]
    due = and_(
        inbox_items.c.state == "pending",
        inbox_items.c.next_attempt_at <= now,
        or_(inbox_items.c.locked_until.is_(None), inbox_items.c.locked_until < now),
    )
    pick = select(inbox_items.c.id).where(due).order_by(inbox_items.c.id).limit(limit)
    if store.is_postgres:
        pick = pick.with_for_update(skip_locked=True)
    elif not await store.has_rows(select(inbox_items.c.id).where(due)):
        return []
    stmt = (
        inbox_items.update().where(inbox_items.c.id.in_(pick.scalar_subquery()))
        .values(locked_until=now + LEASE, attempts=inbox_items.c.attempts + 1)
        .returning(*inbox_items.c)
    )
    async with store.begin() as conn:
        rows = (await conn.execute(stmt)).all()
    return sorted(rows, key=lambda r: r.id)


async def _handle(app: web.Application, row: Any) -> None:
    from .dispatch import HANDLERS, dispatch

    metrics = app[METRICS]
    kind = bounded(row.type, HANDLERS)  # the types we handle, or "other": senders choose this value
    try:
        outcome = await dispatch(app, row.payload, row.actor)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if is_storage_outage(exc, network=False):
            raise  # our database, not this activity: not an attempt; the row is released and retried

        now = utcnow()
        error = f"{type(exc).__name__}: {exc}"[:2000]
        final = row.attempts >= MAX_ATTEMPTS
        log.warning("inbox item %s (%s from %s) failed, attempt %s%s: %s", row.id, row.type, row.actor,
                    row.attempts, " (giving up)" if final else "", error)
        await _finish(app, row.id, state="failed" if final else "pending", error=error,
                      next_attempt_at=now + backoff(row.attempts))
        metrics.inc(METRIC, type=kind, outcome="failed" if final else "retry")
        return
    await _finish(app, row.id, state="done", error=None if outcome != "ignored" else "ignored")
    metrics.inc(METRIC, type=kind, outcome=outcome)


async def _finish(app: web.Application, item_id: int, **values: Any) -> None:
    async with app[STORE].begin() as conn:
        await conn.execute(inbox_items.update().where(inbox_items.c.id == item_id).values(locked_until=None, **values))
