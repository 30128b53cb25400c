"""Handles stored inbox activities: the inbox queue's handler and policy on the leased-row worker (worker.py).

The web side stores first and answers 202; this queue does the work, so a crash between the two loses
nothing (the row is still pending, or its lease runs out and another pass picks it up). Handlers must be
idempotent: a crash after a handler ran but before the row was marked done runs it again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import inbox_batch
from .dispatch import HANDLERS, dispatch
from .health import is_storage_outage
from .logsafe import logger
from .metrics import bounded
from .objects import ref_id
from .services import Services, Wakeups
from .store import utcnow
from .tables import inbox_items
from .worker import BatchHandler, Finish, Policy, Queue, Worker, listening, reap_dead_local_workers, run_loop

log = logger(__name__)  # arguments escaped and redacted (logsafe)

BUSY_PAUSE = 0.05  # at least this many seconds the worker steps aside after a batch while our inbox accepts…
BUSY_SHARE = 9  # …and 9× the batch's own time: caught up, handling gets about a tenth of the event loop
CATCH_UP_SHARE = 3  # …but only 3× after a full batch (a backlog): a quarter, so the lag stays bounded
MAX_PAUSE = 1.0  # …and never longer than this: a slow batch (slow remotes, not CPU) must not stall the next one
CONCURRENCY = 4  # senders handled at once: one sender's slow activity does not hold up the others'

METRIC = "fedibridge_inbox_activities_total"
TASK = "inbox_worker"  # its name in /healthz (the job's name)


def backoff(attempts: int) -> float:
    """10 s, 1 min, 5 min, 25 min…: handler failures are usually a remote being briefly unreachable."""
    return float(min(6 * 3600, 10 * 5 ** max(0, attempts - 1)))


# The attempt is counted when a row is claimed: an activity that takes the process down with it is not
# retried forever. Other processes (role web) only reach us through the database: poll each second.
# Rows record their owner: a batch leased by a process killed on this machine is taken over at once.
QUEUE = Queue(inbox_items, order=("id",), count_on_claim=True, owned=True, index="ix_inbox_items_pending",
              columns=("id", "type", "actor", "payload", "attempts"))  # what handlers read: no dates to convert
REAP_EVERY = 30.0  # seconds between looks for rows leased by dead local workers
# A batch of 1,000: per-batch statements are the cost once rows are handled together (a 20,000-reply burst
# measured ~2,000 comments/s end to end against ~1,500 with 300). Rows needing per-row work are capped
# (PER_ROW) so a batch of slow remotes still ends well inside its lease.
POLICY = Policy(lease=timedelta(minutes=5), batch=1000, max_attempts=5, retry=backoff, poll=1.0)
PER_ROW = 64  # rows handled one by one per batch (remote fetches); the rest are handed back for the next


async def run(services: Services) -> None:
    """Forever: handle what is due, then sleep until woken (this process's inbox, or NOTIFY) or the poll passes."""
    wake = services.wake.inbox  # set by this process's inbox (role all) and by NOTIFY
    worker = Worker(services.store, QUEUE, POLICY, handler(services), services.worker_id)
    pulse = services.wake if services.role == "all" else None
    pace = _Pace()
    await listening(services.store, services.health, wake, "inbox-listen",
                    lambda: run_loop(TASK, services.health, lambda: _step(worker, wake, pulse, pace), worker.stop))


@dataclass
class _Pace:
    """Between steps: when dead workers were last looked for."""

    reaped_at: float = -REAP_EVERY


async def _step(worker: Worker, wake: asyncio.Event, pulse: Wakeups | None, pace: _Pace) -> None:
    """One batch, then a pause while this process's own inbox is accepting (role all); or a wait for work.

    Handling runs during a burst, not after it: a reply becomes a comment within about a batch's time of its
    202 (issue 12: the lag stays bounded, and the burst's work is done when the burst ends). The pause after
    a batch shares the event loop with the inbox: a full batch means a backlog, and gets the larger share.
    """
    now = asyncio.get_running_loop().time()
    if now - pace.reaped_at >= REAP_EVERY:
        await reap_dead_local_workers(worker.store, worker.queue, worker.owner)
        pace.reaped_at = now
    wake.clear()
    seen = pulse.accepted if pulse else 0
    started = asyncio.get_running_loop().time()
    claimed = await worker.run_once()
    if not claimed:
        await worker.idle(wake)
    elif pulse is not None and pulse.accepted != seen:
        spent = asyncio.get_running_loop().time() - started
        await asyncio.sleep(pause(spent, backlog=claimed >= worker.policy.batch))


def pause(spent: float, backlog: bool = False) -> float:
    """How long to step aside after a batch that took `spent` seconds while our inbox kept accepting.

    A batch's time is mostly waiting on remotes (thread completion, actor fetches), not CPU: without the
    cap, one activity pointing at slow parents made everything behind it wait several times that long.
    """
    return min(MAX_PAUSE, max(BUSY_PAUSE, (CATCH_UP_SHARE if backlog else BUSY_SHARE) * spent))


def handler(services: Services) -> BatchHandler:
    """The inbox queue's batch handler: related activities in arrival order, unrelated groups side by side.

    Related activities run in arrival order (see `related`); unrelated ones run side by side, CONCURRENCY
    groups at a time, so an activity waiting on slow remotes delays only those tied to it.
    """

    async def handle(rows: list[Any]) -> list[Finish]:
        slots = asyncio.Semaphore(CONCURRENCY)
        outcomes: list[Finish] = []
        groups = related(rows)
        done, rest = await _batched(services, [g[0] for g in groups if len(g) == 1])
        counts: Counter[tuple[str, str]] = Counter()
        for row in rows:
            if row.id in done:
                counts[(row.type, done[row.id])] += 1
                outcomes.append(Finish(row.id, {"state": "done", "error": None if done[row.id] != "ignored"
                                                else "ignored"}))
        for (kind, outcome), n in counts.items():  # one increment per label set, not per row
            services.metrics.inc(METRIC, n, type=bounded(kind, HANDLERS), outcome=outcome)
        groups = _capped([g for g in groups if len(g) > 1] + [[row] for row in rest], PER_ROW)

        async def in_order(mine: list[Any]) -> None:
            async with slots:
                for row in mine:
                    outcomes.append(await _handle(services, row))

        await asyncio.gather(*(in_order(mine) for mine in groups))
        return outcomes

    return handle


def _capped(groups: list[list[Any]], limit: int) -> list[list[Any]]:
    """Whole groups, in order, until they hold `limit` rows (at least one group); the rows of the others get
    no outcome, so the worker hands them back (attempt uncounted) and the next batch takes them first."""
    taken: list[list[Any]] = []
    rows = 0
    for group in groups:
        if taken and rows + len(group) > limit:
            break
        taken.append(group)
        rows += len(group)
    return taken


INDEPENDENT = frozenset({"Create", "Update", "Follow", "Like", "EmojiReact", "Announce"})  # see _links


def _links(row: Any) -> tuple[set[str], set[str], bool]:
    """(ids the row defines, ids it refers to, whether it follows all its sender's rows) for `related`.

    A Create/Update defines its note, a Follow its sender's follow; a reply refers to its parent, an
    Undo/Delete/Update to what it names. An actor's own Update/Delete, an Undo naming no id, and every
    other type are ordered after (and before) all rows of their sender, as before.
    """
    activity = row.payload if isinstance(row.payload, dict) else {}
    kind, actor = activity.get("type"), row.actor
    obj = activity.get("object")
    defines, refers = {ref_id(activity.get("id"))}, set()
    target = ref_id(obj)
    if kind in ("Create", "Update") and target != actor:
        defines.add(target)
        if isinstance(obj, dict):
            refers.add(ref_id(obj.get("inReplyTo")))
    elif kind == "Follow":
        defines.add("follow\n" + actor)
    elif kind in ("Undo", "Delete"):
        refers.update((target, "follow\n" + actor))
    if kind in INDEPENDENT or kind in ("Undo", "Delete"):
        whole = not target or target == actor and kind in ("Update", "Delete")
    else:
        whole = True
    return {k for k in defines if k}, {k for k in refers if k}, whole


def related(rows: list[Any]) -> list[list[Any]]:
    """Rows that must keep their arrival order grouped together, each group in arrival order.

    Ordered: a reply after its parent's Create when both are in the batch (even from another server: handled
    first, the reply would fetch a parent that may not be fetchable), an Undo/Update/Delete after the
    Create/Follow/Like it names, an actor's own Update/Delete after its earlier rows. Replies to the same
    article, or Follows of the blog, are not related: groups share nothing and may run in any order.
    """
    root = list(range(len(rows)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        root[max(a, b)] = min(a, b)

    links = [_links(row) for row in rows]
    owner: dict[str, int] = {}
    by_actor: dict[str, list[int]] = {}
    for i, (defines, _, _) in enumerate(links):
        by_actor.setdefault(rows[i].actor, []).append(i)
        for key in defines:
            union(i, owner.setdefault(key, i))
    for i, (_, refers, whole) in enumerate(links):
        for key in refers:
            if key in owner:
                union(i, owner[key])
        if whole:
            for j in by_actor[rows[i].actor]:
                union(i, j)
    groups: dict[int, list[Any]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(find(i), []).append(row)
    return list(groups.values())


async def _batched(services: Services, rows: list[Any]) -> tuple[dict[int, str], list[Any]]:
    """The batched path (inbox_batch) for unrelated rows; should it fail, every row goes per row instead."""
    try:
        return await inbox_batch.handle(services, rows)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if is_storage_outage(exc, network=False):
            raise  # our database: the batch is released and retried
        log.warning("batched handling of %d inbox items failed, handling them one by one: %s: %s",
                    len(rows), type(exc).__name__, exc)
        return {}, rows


async def _handle(services: Services, row: Any) -> Finish:
    """Dispatch one activity; its outcome (done, or retry with backoff, or failed after MAX_ATTEMPTS)."""
    kind = bounded(row.type, HANDLERS)  # the types we handle, or "other": senders choose this value
    try:
        outcome = await dispatch(services, row.payload, row.actor)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if is_storage_outage(exc, network=False):
            raise  # our database, not this activity: not an attempt; the batch is released and retried
        error = f"{type(exc).__name__}: {exc}"[:2000]
        final = POLICY.gives_up(row.attempts)
        log.warning("inbox item %s (%s from %s) failed, attempt %s%s: %s", row.id, row.type, row.actor,
                    row.attempts, " (giving up)" if final else "", error)
        services.metrics.inc(METRIC, type=kind, outcome="failed" if final else "retry")
        return Finish(row.id, {"state": "failed" if final else "pending", "error": error,
                               "next_attempt_at": utcnow() + timedelta(seconds=POLICY.delay(row.attempts))})
    services.metrics.inc(METRIC, type=kind, outcome=outcome)
    return Finish(row.id, {"state": "done", "error": None if outcome != "ignored" else "ignored"})
