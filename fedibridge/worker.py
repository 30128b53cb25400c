"""One leased-row worker for every queue: inbox handling, delivery and webhooks are queues, not loops.

A queue is a table of rows whose `state` says what happens next (pending → done | failed). A worker claims
due rows in batches with a lease (`locked_until`, and `locked_by` where the table records an owner) in one
statement — `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)` on PostgreSQL, the same statement under
SQLite's single writer — so any number of processes share a queue and a process killed with -9 loses
nothing: its rows are due again when the lease runs out (at once when the dead process ran on this machine
and the table records owners). A queue supplies only its `Queue` (table and leasing), its `Policy` (a value)
and a handler that takes a *batch* of claimed rows and returns one `Finish` per row; the rows are then
finished together, in one statement.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, literal_column, or_, select, text, update
from sqlalchemy.engine import Connection

from .health import Backoff, Health, describe
from .logsafe import logger
from .store import Store, utcnow, wait_event
from .wakeup import listen

log = logger(__name__)  # arguments escaped and redacted (logsafe)
# A stop waits this long for a claim or a batch in flight, then at most as long again to hand rows back: with the
# web's 2 s first and the exit's last 0.5 s (cli), the whole stop stays within the README's 10 s.
STOP_WAIT_SECONDS = 3.75


@dataclass(frozen=True)
class Policy:
    """How one queue leases and retries, stated once as a value."""

    lease: timedelta  # a claimed row not finished by then is another worker's again
    batch: int  # rows claimed per statement
    max_attempts: int  # tries before a row fails for good
    retry: Callable[[int], float]  # seconds before the next try after `attempts` failed tries
    poll: float = 1.0  # idle wait when no wake-up arrives
    min_delay: float = 0.0  # a floor under every retry delay (Retry-After: 0 must not hot-loop)

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds until the next try: the remote's Retry-After when it gave one, else the curve."""
        return max(self.min_delay, retry_after if retry_after is not None else self.retry(attempts))


@dataclass(frozen=True)
class Queue:
    """Where a queue's rows live and how they are leased."""

    table: Table
    order: tuple[str, ...] = ("id",)  # claim order (oldest first)
    owned: bool = False  # rows record their owner (`locked_by`): finish/release touch only ours, dead owners reaped
    count_on_claim: bool = False  # attempts counted when claimed (a handler may take the process down with it)
    columns: tuple[str, ...] = ()  # what a claim returns; empty: every column
    index: str | None = None  # a partial index of pending rows in `order` (tables.PENDING): claims read it

    def due(self, now: datetime) -> Any:
        c = self.table.c
        # 'pending' spelled out, not bound: only then do PostgreSQL's generic plans and SQLite use the
        # partial indexes of pending rows (tables.PENDING), and a claim reads its batch, not the backlog.
        return and_(c.state == literal_column("'pending'"), c.next_attempt_at <= now,
                    or_(c.locked_until.is_(None), c.locked_until < now))


FINISH_IDS = 500  # ids per UPDATE … IN (…): well inside SQLite's and asyncpg's limits on bound parameters


@dataclass
class Finish:
    """What became of one claimed row: the values to write (state, next_attempt_at, error…). The lease is cleared."""

    id: int
    values: dict[str, Any] = field(default_factory=dict)


BatchHandler = Callable[[list[Any]], Awaitable[list[Finish]]]


async def claim(store: Store, queue: Queue, policy: Policy, owner: str, now: datetime | None = None,
                limit: int | None = None) -> list[Any]:
    """Lease up to `limit` due rows to `owner`, oldest first; returned sorted by id.

    On SQLite a read comes first: an idle poll must not take the write lock, and a claim holds it for one
    statement only, so the inbox's group commit never queues behind a worker for long.
    """
    now = now or utcnow()
    c = queue.table.c
    if not store.is_postgres and not await store.has_rows(select(c.id).where(queue.due(now))):
        return []
    picked = pick(queue, now, limit or policy.batch, postgres=store.is_postgres)
    values: dict[str, Any] = {"locked_until": now + policy.lease}
    if queue.owned:
        values["locked_by"] = owner
    if queue.count_on_claim:
        values["attempts"] = c.attempts + 1
    returning = [c[name] for name in queue.columns] if queue.columns else list(c)
    stmt = update(queue.table).where(c.id.in_(picked.scalar_subquery())).values(**values).returning(*returning)
    rows = await store.write(_claim, stmt)
    return sorted(rows, key=lambda r: r.id)


def _claim(conn: Connection, stmt: Any) -> list[Any]:
    prefer_index_order(conn)
    return list(conn.execute(stmt).all())


def prefer_index_order(conn: Connection) -> None:
    """For this transaction, PostgreSQL reads a claim's batch in its partial index's order rather than sorting.

    A queue table filled by a burst has no statistics until autovacuum's next ANALYZE: the planner then takes
    the pending rows for a few dozen and sorts them all, 39 ms per claim of 1,000 behind 40,000 (1.5 ms by the
    index). Transaction-local (SET LOCAL), so no other query's plans change.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL enable_sort = off"))


def pick(queue: Queue, now: datetime, limit: int, *, postgres: bool) -> Any:
    """The ids a claim leases: up to `limit` due rows in the queue's order, read from its partial index of
    pending rows, so a claim costs its batch, not the backlog (a 40,000-row backlog cost 28 ms per claim on
    PostgreSQL and 25 ms on SQLite, sorted whole each time; 1-2 ms by the index)."""
    c = queue.table.c
    stmt = select(c.id).where(queue.due(now)).order_by(*(c[name] for name in queue.order)).limit(limit)
    if postgres:
        return stmt.with_for_update(skip_locked=True)  # in index order, see prefer_index_order
    if queue.index:
        # SQLite without statistics prefers the (state, next_attempt_at) index and sorts every pending row,
        # or after ANALYZE scans the table from its first (long finished) row.
        stmt = stmt.with_hint(queue.table, f"INDEXED BY {queue.index}", "sqlite")
    return stmt


def _owned_by(queue: Queue, owner: str) -> list[Any]:
    return [queue.table.c.locked_by == owner] if queue.owned else []


def finish(conn: Connection, queue: Queue, owner: str, outcomes: Sequence[Finish], **common: Any) -> None:
    """Write outcomes in the caller's transaction, leases cleared: rows with the very same values (a batch of
    handled activities, a fan-out's deliveries) in one `UPDATE … WHERE id IN (…)` per FINISH_IDS rows, the
    others in one executemany per shape of values. PostgreSQL runs an executemany as one UPDATE per row:
    finishing 1,000 rows took 15.8 ms there, one UPDATE … IN (…) per 500 takes 10.9 ms.

    Only rows still leased to `owner` change (where the table records owners): a row whose lease ran out and
    was claimed by another worker is that worker's to finish.
    """
    same: dict[tuple[tuple[str, Any], ...], list[int]] = {}
    shapes: dict[tuple[str, ...], list[Finish]] = {}
    for outcome in outcomes:
        values = tuple(sorted(outcome.values.items()))
        try:
            same.setdefault(values, []).append(outcome.id)
        except TypeError:  # a value that cannot be a dict key: written on its own
            shapes.setdefault(tuple(sorted(outcome.values)), []).append(outcome)
    c = queue.table.c
    for values, ids in same.items():
        if len(ids) == 1:
            shapes.setdefault(tuple(k for k, _ in values), []).append(Finish(ids[0], dict(values)))
            continue
        for start in range(0, len(ids), FINISH_IDS):
            conn.execute(
                update(queue.table).where(c.id.in_(ids[start:start + FINISH_IDS]), *_owned_by(queue, owner))
                .values(**common, locked_until=None, **({"locked_by": None} if queue.owned else {}), **dict(values)))
    for keys, group in shapes.items():
        stmt = (update(queue.table).where(c.id == bindparam("w_id"), *_owned_by(queue, owner))
                .values(**common, locked_until=None, **({"locked_by": None} if queue.owned else {}),
                        **{k: bindparam(f"w_{k}") for k in keys}))
        conn.execute(stmt, [{"w_id": o.id, **{f"w_{k}": o.values[k] for k in keys}} for o in group])


async def release(store: Store, queue: Queue, owner: str, ids: Iterable[int]) -> None:
    """Hand claimed rows back now (lease cleared; an attempt counted at claim is uncounted), so the next
    worker handles them within its poll instead of when the lease runs out."""
    ids = sorted(ids)
    if ids:
        await store.write(_execute, _handing_back(queue, queue.table.c.id.in_(ids), *_owned_by(queue, owner)))


async def release_all(store: Store, queue: Queue, owner: str, keep: Iterable[int] = ()) -> None:
    """Hand back every pending row leased to `owner` but those in `keep` (the rows its worker still holds):
    after a claim whose answer was lost, the rows it may have leased are known to no one else."""
    if not queue.owned:
        return  # rows without an owner cannot say which are ours
    c = queue.table.c
    kept = [c.id.not_in(sorted(keep))] if keep else []
    await store.write(_execute, _handing_back(queue, *_owned_by(queue, owner), *kept))


def _handing_back(queue: Queue, *where: Any) -> Any:
    """The UPDATE that hands pending rows back: lease cleared, an attempt counted at claim uncounted."""
    c = queue.table.c
    values: dict[str, Any] = {"locked_until": None}
    if queue.owned:
        values["locked_by"] = None
    if queue.count_on_claim:
        values["attempts"] = c.attempts - 1
    return update(queue.table).where(*where, c.state == "pending").values(**values)


def _execute(conn: Connection, stmt: Any) -> None:
    conn.execute(stmt)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def reap_dead_local_workers(store: Store, queue: Queue, owner: str) -> list[str]:
    """Release rows leased by a worker of this machine whose process is gone (kill -9, crash); returns them.

    Owners are "host:pid:…"; other machines' workers are only trusted to be dead when their lease expires.
    """
    if not queue.owned:
        return []
    c = queue.table.c
    prefix = socket.gethostname() + ":"
    like = prefix.replace("%", r"\%").replace("_", r"\_") + "%"
    async with store.connect() as conn:
        owners = (await conn.execute(
            select(c.locked_by).distinct()
            .where(c.state == "pending", c.locked_until > utcnow(), c.locked_by.like(like, escape="\\"))
        )).scalars().all()
    dead = []
    for other in owners:
        pid = other[len(prefix):].split(":", 1)[0]
        if other != owner and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            dead.append(other)
    if dead:
        async with store.begin() as conn:
            result = await conn.execute(update(queue.table).where(c.locked_by.in_(dead), c.state == "pending")
                                        .values(locked_until=None, locked_by=None))
        log.info("released %d %s rows of dead workers %s", result.rowcount, queue.table.name, ", ".join(dead))
    return dead


async def run_loop(task: str, health: Health, step: Callable[[], Awaitable[Any]],
                   stop: Callable[[], Awaitable[None]]) -> None:
    """Forever: `step()`; when it fails (the database is away, or a bug) back off and say so on /healthz
    under `task`; when cancelled, `stop()` (hand back leases) before the cancellation goes on."""
    retry = Backoff()
    try:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not health.is_failing(task):
                    log.exception("%s: pass failed; retrying", task)
                else:
                    log.debug("%s: pass failed again: %s", task, describe(exc))
                health.failing(task, exc)
                await asyncio.sleep(retry.next())
                continue
            if health.is_failing(task):
                log.warning("%s: working again", task)
            health.ok(task)
            retry.reset()
    except asyncio.CancelledError:
        await stop()
        raise


async def listening(store: Store, health: Health, wake: asyncio.Event, name: str,
                    body: Callable[[], Awaitable[None]]) -> None:
    """Run `body` while LISTEN/NOTIFY (PostgreSQL) sets `wake` when another process queues work."""
    listener = asyncio.create_task(listen(store, health, wake, name), name=name)
    try:
        await body()
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


@dataclass
class Worker:
    """Claims batches from one queue, hands each to its handler, finishes the rows together.

    `held` holds the ids claimed and not yet finished: when the database fails mid-batch they are released
    on the next pass, and a graceful stop releases them at once, so nothing waits out its lease.
    """

    store: Store
    queue: Queue
    policy: Policy
    handler: BatchHandler
    owner: str
    held: set[int] = field(default_factory=set)
    unsure: bool = False  # a claim failed: it may have committed all the same (see run_once)

    async def run_once(self) -> int:
        """Claim and handle one batch of due rows; returns how many were claimed.

        A claim whose commit fails with the connection (PostgreSQL cut mid-commit) may have committed on the
        server: its rows would then be leased to us, unknown to us, for the whole lease. This worker handles one
        batch at a time, so before its next claim every pending row still leased to it is handed back.
        """
        if self.unsure:
            await release_all(self.store, self.queue, self.owner)
            self.unsure = False
            self.held.clear()
        if self.held:
            await release(self.store, self.queue, self.owner, self.held)
            self.held.clear()
        claiming = asyncio.ensure_future(claim(self.store, self.queue, self.policy, self.owner))
        try:
            rows = await asyncio.shield(claiming)  # a claim cut in half by a stop would leave rows leased
        except asyncio.CancelledError:
            await asyncio.wait([claiming], timeout=STOP_WAIT_SECONDS)  # bounded, even on a locked database
            if claiming.done() and not claiming.cancelled() and claiming.exception() is None:
                self.held.update(r.id for r in claiming.result())
            raise
        except Exception:
            self.unsure = self.queue.owned
            raise
        if not rows:
            return 0
        self.held.update(r.id for r in rows)
        handling = asyncio.ensure_future(self.handler(rows))
        try:
            outcomes = await asyncio.shield(handling)
        except asyncio.CancelledError:
            await self._end_on_stop(handling)
            raise
        await self._record(outcomes)
        return len(rows)

    async def _end_on_stop(self, handling: asyncio.Future[list[Finish]]) -> None:
        """A stop arrived mid-batch: let the batch end and record it (bounded), rather than cut it anywhere.

        A handler cancelled inside a write transaction can leave that connection holding SQLite's lock while
        the process closes (seen once in CI: the stop then overran its bound). A batch is usually done within
        a second; one still waiting on slow remotes near the end of STOP_WAIT_SECONDS is cancelled, and
        `stop()` hands its rows back.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT_SECONDS
        await asyncio.wait([handling], timeout=STOP_WAIT_SECONDS - 1.0)
        if not handling.done():
            handling.cancel()
            await asyncio.wait([handling], timeout=1.0)
            return
        if not handling.cancelled() and handling.exception() is None:
            await self._record(handling.result(), within=max(0.1, deadline - loop.time()))

    async def _record(self, outcomes: list[Finish], within: float | None = None) -> None:
        """Finish the batch's rows in one transaction, which a stop never cuts in half; `within`: on a stop,
        stop waiting then (a database locked by another process), and the rows stay held to be handed back."""
        writing = asyncio.ensure_future(self._finish(outcomes))
        if within is None:
            await asyncio.shield(writing)
        else:
            await asyncio.wait([writing], timeout=within)
            if not writing.done() or writing.cancelled() or writing.exception() is not None:
                return
        self.held.difference_update(o.id for o in outcomes)

    async def _finish(self, outcomes: list[Finish]) -> None:
        if outcomes:
            await self.store.write(finish, self.queue, self.owner, outcomes)

    async def stop(self) -> None:
        """Hand back at once what was claimed and not finished (their lease would expire anyway)."""
        if not self.held:
            return
        try:
            releasing = asyncio.ensure_future(release(self.store, self.queue, self.owner, self.held))
            # Bounded: a database locked by another writer must not hold up the whole stop (a restart on this
            # machine takes the rows over at once, their owner being dead; elsewhere their lease expires).
            await asyncio.wait_for(asyncio.shield(releasing), STOP_WAIT_SECONDS)
            self.held.clear()
        except Exception as exc:  # noqa: BLE001 - their lease expires; nothing is lost
            log.warning("could not release %d %s rows on stop (their lease will expire): %s",
                        len(self.held), self.queue.table.name, describe(exc))

    async def idle(self, wake: asyncio.Event) -> None:
        """Sleep until woken (this process queued work, or NOTIFY) or the poll passes."""
        await wait_event(wake, self.policy.poll)
