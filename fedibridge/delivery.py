"""The delivery queue (ActivityPub deliveries and webhooks) on the leased-row worker: POST, record what happened.

Claiming, leases, finishing, releasing and reaping dead local workers are worker.py's, as for every queue;
this module adds what is delivery's own: a pipeline that keeps up to 2 × delivery_concurrency rows in
flight (per-host limits, one probe per unavailable domain), 410 → the follower leaves, domain health.
Outcomes are written in batches, payloads are serialized once per activity, connections are reused:
the database must not be what limits a fan-out to thousands of servers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, exists, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from . import domain_health, webhook
from .delivery_rows import RETRYABLE, Claimed, Outcome, backoff, serialize
from .errors import FetchError
from .health import Health
from .hosts import netloc_of
from .http_client import retry_after_seconds
from .logsafe import logger
from .services import Services, Wakeups
from .store import Store, utcnow, wait_event
from .tables import activities, deliveries, domains, followers
from .worker import (
    Finish,
    Policy,
    Queue,
    claim,
    finish,
    listening,
    reap_dead_local_workers,
    release,
    release_all,
    run_loop,
)

log = logger(__name__)  # arguments escaped and redacted (logsafe)

LEASE = timedelta(minutes=5)  # default claim; settings.delivery_lease_seconds decides
BATCH = 200  # rows claimed per statement
POLL_SECONDS = 1.0  # idle polling when no wake-up arrives (services.wake.delivery here, wakeup.announce elsewhere)
FLUSH_ROWS = 100  # outcomes buffered before a batched UPDATE…
FLUSH_SECONDS = 0.1  # …or after this long
SHUTDOWN_SECONDS = 7.0  # in-flight POSTs get this long to finish on shutdown (the whole stop: ≤ 10 s)
RECORD_SECONDS = 0.5  # then their outcomes get this long to be written, and the rest handed back
TASK = "delivery"  # its name in /healthz (the job's name)
REAP_SECONDS = 60.0  # how often rows of dead local workers are released
BUSY_SHARE = 8  # role all, while our inbox accepts: at most 1/8 of the usual deliveries claimed…
BUSY_RATE = 40.0  # …while it accepts at least this many activities a second (services.Wakeups.accept_rate)…
BUSY_HOLD = 1.0  # …or did within this many seconds (a dip in a burst is not its end: Wakeups.busy)
_T = TypeVar("_T")

# Attempts are counted when a POST was tried (at finish); rows record their owner, so dead local workers are reaped.
QUEUE = Queue(deliveries, order=("next_attempt_at", "id"), owned=True, index="ix_deliveries_pending",
              columns=("id", "activity_id", "kind", "inbox", "host", "body", "attempts"))


class Worker:
    """One process's delivery loop; state is per app so tests can run several."""

    def __init__(
        self, *, store: Store, client: Any, settings: Any, metrics: Any, worker_id: str,
        health: Health | None = None, wake: asyncio.Event | None = None, pulse: Wakeups | None = None,
    ) -> None:
        self.health = health or Health()
        self.store = store
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.worker_id = worker_id
        self.wake = wake or asyncio.Event()  # services.wake.delivery: set after rows are enqueued
        # Role all: this process's inbox. While it accepts, a 202 needs the event loop now and deliveries
        # can wait a little (as the inbox worker does): fewer are started until it is quiet again.
        self.pulse = pulse
        # A claimed row is another worker's again after this (the only recovery for other machines' workers).
        self.lease = timedelta(seconds=getattr(settings, "delivery_lease_seconds", LEASE.total_seconds()))
        # Mastodon-like retries over ~2 days; a Retry-After is honoured, never under a second.
        self.policy = Policy(lease=self.lease, batch=BATCH, max_attempts=settings.delivery_max_attempts,
                             retry=backoff, poll=POLL_SECONDS, min_delay=1.0)
        self.limit = asyncio.Semaphore(settings.delivery_concurrency)
        # Claim ahead only what is about to be sent: rows held here are invisible to other workers.
        self.max_claimed = max(16, 2 * settings.delivery_concurrency)
        self.host_limits: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self.payloads: OrderedDict[int, bytes] = OrderedDict()
        self.claimed: dict[int, asyncio.Task[None]] = {}
        self.outcomes: list[Outcome] = []
        self.probed: dict[str, float] = {}
        self.successes = domain_health.Successes()
        self.stopping = False
        self.last_reap = 0.0
        self.db_task: asyncio.Future[Any] | None = None
        # A claim failed: it may have committed all the same (PostgreSQL cut mid-commit), leasing rows to us
        # that no one knows of; the next step hands back every row leased to us but those we hold.
        self.unsure = False

    # ------------------------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Forever (the leased-row worker's loop): step, report health, back off; on stop hand rows back."""
        await run_loop(TASK, self.health, self.step, self.shutdown)

    async def step(self) -> None:
        """One turn: flush outcomes, reap dead local workers, claim what fits, then wait for work."""
        if self.outcomes:
            await self._shielded(self.flush())
        if self.unsure:
            held = set(self.claimed) | {o.row.id for o in self.outcomes}
            await self._shielded(release_all(self.store, QUEUE, self.worker_id, keep=held))
            self.unsure = False
        if time.monotonic() - self.last_reap > REAP_SECONDS:
            self.last_reap = time.monotonic()
            await self._shielded(self.reap_dead_local_workers())
        self.wake.clear()
        limit = max(4, self.max_claimed // BUSY_SHARE) if self._inbox_busy() else self.max_claimed
        free = limit - len(self.claimed)
        if free >= limit // 4:
            want = min(BATCH, free)
            try:
                rows = await self._shielded(self.claim(want))
            except Exception:
                self.unsure = True
                raise
            for row in rows:
                self.claimed[row.id] = asyncio.create_task(self.deliver(row))
            if len(rows) == want:
                return  # probably more due right now
        timeout = FLUSH_SECONDS if self.outcomes else POLL_SECONDS
        await wait_event(self.wake, timeout)

    def _inbox_busy(self) -> bool:
        """Whether this process's inbox takes at least BUSY_RATE activities a second (role all), or did within
        BUSY_HOLD seconds: a burst, whose 202s need the event loop now. A trickle leaves deliveries at full speed."""
        return self.pulse is not None and self.pulse.busy(BUSY_RATE, BUSY_HOLD)

    async def _shielded(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a transaction that cancellation cannot cut in half (a half-done SQLite write keeps the lock)."""
        task = asyncio.ensure_future(coro)
        self.db_task = task
        return await asyncio.shield(task)

    def _finished(self, outcome: Outcome) -> None:
        if not self.outcomes:  # written within FLUSH_SECONDS: a crash then re-sends only that little
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.wake.set)
        self.outcomes.append(outcome)
        self.claimed.pop(outcome.row.id, None)
        if len(self.outcomes) >= FLUSH_ROWS or len(self.claimed) <= self.max_claimed // 2:
            self.wake.set()

    # ----------------------------------------------------------------------------------- claiming
    async def claim(self, n: int) -> list[Claimed]:
        claimed = await claim(self.store, QUEUE, self.policy, self.worker_id, limit=n)
        if not claimed:
            return []
        # Host from the inbox itself: rows queued before hosts were normalised may spell it otherwise.
        rows = [Claimed(r.id, r.activity_id, r.kind, r.inbox, netloc_of(r.inbox) or r.host, r.body, r.attempts,
                        time.monotonic())
                for r in claimed]
        hosts = {r.host for r in rows if r.kind == "ap"}
        async with self.store.connect() as conn:
            ids = {r.activity_id for r in rows if r.kind == "ap" and r.activity_id}
            payloads = await self._load_payloads(conn, ids)
            down = set((await conn.execute(
                select(domains.c.host).where(domains.c.host.in_(hosts), domains.c.unavailable.is_(True))
            )).scalars()) if hosts else set()
        for row in rows:
            row.payload = payloads.get(row.activity_id) if row.activity_id else None
        if down:
            rows = await self._skip_unavailable(rows, down)
        return rows

    async def _load_payloads(self, conn: AsyncConnection, ids: set[int]) -> dict[int, bytes]:
        """The serialized payloads of these activities (those that still exist), in one SELECT at most.

        The rows of a batch hold theirs, so a batch of Accepts (each its own activity) costs one statement
        however many there are; the small LRU only spares a fan-out's next batches the re-read.
        """
        found: dict[int, bytes] = {}
        missing = []
        for i in ids:
            if (cached := self.payloads.get(i)) is not None:
                self.payloads.move_to_end(i)
                found[i] = cached
            else:
                missing.append(i)
        if missing:
            for aid, payload in await conn.execute(
                select(activities.c.id, activities.c.payload).where(activities.c.id.in_(missing))
            ):
                found[aid] = self.payloads[aid] = serialize(payload)
        while len(self.payloads) > 64:
            self.payloads.popitem(last=False)
        return found

    async def _skip_unavailable(self, rows: list[Claimed], down: set[str]) -> list[Claimed]:
        """Rows to unavailable domains fail at once, except one probe per host per day (any worker)."""
        keep: list[Claimed] = []
        for row in rows:
            if row.host not in down:
                keep.append(row)
                continue
            if await domain_health.may_probe(self.store, row.host, self.worker_id, self.probed):
                row.probe = True
                keep.append(row)
            else:
                self._finished(Outcome(row, "failed", None, "domain unavailable", "failed", tried=False))
        return keep

    async def reap_dead_local_workers(self) -> None:
        """Release rows claimed by a worker of this machine whose process is gone (kill -9, crash).

        Other machines' workers are only trusted to be dead when their lease expires.
        """
        await reap_dead_local_workers(self.store, QUEUE, self.worker_id)

    # ---------------------------------------------------------------------------------- delivering
    def _host_limit(self, host: str) -> asyncio.Semaphore:
        sem, users = self.host_limits.get(host) or (asyncio.Semaphore(self.settings.delivery_per_host), 0)
        self.host_limits[host] = (sem, users + 1)
        return sem

    def _host_release(self, host: str) -> None:
        sem, users = self.host_limits[host]
        if users <= 1:
            del self.host_limits[host]
        else:
            self.host_limits[host] = (sem, users - 1)

    async def deliver(self, row: Claimed) -> None:
        host_sem = self._host_limit(row.host)
        try:
            async with host_sem, self.limit:
                if self.stopping or time.monotonic() - row.claimed_at > self.lease.total_seconds() * 0.8:
                    # Waited too long behind a slow host: another worker may own the row soon; hand it back.
                    self.claimed.pop(row.id, None)
                    await self._release([row.id])
                    return
                outcome = await self.attempt(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not lose the row: retry it later
            log.exception("delivery %d to %s crashed", row.id, row.inbox)
            outcome = self.failure(row, None, f"internal error: {exc!r}", None, host_failed=False)
        finally:
            self._host_release(row.host)
        self._finished(outcome)

    async def attempt(self, row: Claimed) -> Outcome:
        """POST once and classify the answer."""
        if row.kind == "webhook":
            body = (row.body or "").encode("utf-8")
            headers = webhook.headers(row.body or "", self.settings.webhook_secret)
            post = self.client.post(row.inbox, body, content_type="application/json", headers=headers, signed=False)
        else:
            if row.payload is None:  # its activity was deleted (with this row) between the claim and its read
                return Outcome(row, "failed", None, "activity no longer exists", "failed")
            post = self.client.post(row.inbox, row.payload)
        try:
            resp = await post
        except FetchError as exc:
            text = str(exc)
            if text.startswith(("refusing", "invalid URL")):
                return Outcome(row, "failed", None, text, "failed")
            return self.failure(row, None, text, None, host_failed=True)
        status = resp.status
        if 200 <= status < 300:
            return Outcome(row, "done", status, None, "delivered")
        reason = f"HTTP {status}" + (f": {resp.body[:200].decode('utf-8', 'replace')}" if resp.body else "")
        if status in RETRYABLE:
            delay = retry_after_seconds(resp.headers.get("retry-after"), utcnow()) if status in (429, 503) else None
            return self.failure(row, status, reason, delay, host_failed=status >= 500 or status == 408)
        if status == 410 and row.kind == "ap":
            return Outcome(row, "failed", status, reason, "gone", gone_inbox=row.inbox)
        return Outcome(row, "failed", status, reason, "failed")

    def failure(self, row: Claimed, status: int | None, error: str, retry_after: float | None,
                *, host_failed: bool) -> Outcome:
        """A retryable failure: back off, or give up after delivery_max_attempts tries."""
        tries = row.attempts + 1
        if self.policy.gives_up(tries):
            return Outcome(row, "failed", status, f"gave up after {tries} attempts: {error}", "failed",
                           host_failed=host_failed and row.kind == "ap")
        return Outcome(row, "pending", status, error, "retry", delay=self.policy.delay(tries, retry_after),
                       host_failed=host_failed and row.kind == "ap")

    # ------------------------------------------------------------------------------------ recording
    async def flush(self) -> None:
        """Write buffered outcomes in a few statements: rows, followers gone, domain health."""
        batch, self.outcomes = self.outcomes, []
        if not batch:
            return
        now = utcnow()
        finished = [Finish(o.row.id, {
            "state": o.state, "attempts": o.row.attempts + int(o.tried),
            "next_attempt_at": now + timedelta(seconds=o.delay) if o.state == "pending" else now,
            "last_status": o.status, "last_error": o.error[:1000] if o.error else None,
            "finished_at": None if o.state == "pending" else now,
        }) for o in batch]
        delivered = [o.row for o in batch if o.metric == "delivered" and o.row.kind == "ap"]
        ok_hosts = {r.host for r in delivered}
        bad_hosts = {o.row.host for o in batch if o.host_failed} - ok_hosts
        write_ok = self.successes.due(ok_hosts, {r.host for r in delivered if r.probe})
        try:
            await self.store.write(self._record, batch, finished, now, write_ok, bad_hosts)
        except BaseException:
            # Kept for the next flush (the database is away): dropped, these rows would wait out their lease
            # and be sent again. Written twice after a commit whose answer was lost, they change nothing: only
            # rows still leased to us are finished.
            self.outcomes[:0] = batch
            raise
        self.successes.recorded(write_ok, bad_hosts)
        for o in batch:
            self.metrics.inc("fedibridge_deliveries_total", outcome=o.metric)
            if o.state != "done":
                log.log(logging.WARNING if o.state == "failed" else logging.INFO,
                        "delivery %d to %s: %s (%s)", o.row.id, o.row.inbox, o.metric, o.error)

    def _record(self, conn: Connection, batch: list[Outcome], finished: list[Finish], now: datetime,
                ok_hosts: set[str], bad_hosts: set[str]) -> None:
        """One transaction (Store.write): the rows finished, followers gone, domain health."""
        finish(conn, QUEUE, self.worker_id, finished, last_attempt_at=now)
        for o in batch:
            if o.gone_inbox:
                self._follower_gone(conn, o)
        if ok_hosts or bad_hosts:
            domain_health.record(conn, now, ok_hosts, bad_hosts, self.settings.domain_unavailable_days)

    def _follower_gone(self, conn: Connection, o: Outcome) -> None:
        """410 from a personal inbox: that account is gone. From a shared inbox: the server is; just fail."""
        inbox = o.gone_inbox
        shared = conn.execute(select(exists().where(followers.c.shared_inbox == inbox))).scalar()
        if shared:
            o.metric = "failed"
            return
        result = conn.execute(delete(followers).where(followers.c.inbox == inbox))
        log.info("removed %d follower(s) with inbox %s (410 Gone)", result.rowcount, inbox)

    async def _release(self, ids: list[int]) -> None:
        await release(self.store, QUEUE, self.worker_id, ids)

    async def shutdown(self) -> None:
        """Stop claiming, let in-flight POSTs finish (bounded), record them, hand the rest back."""
        self.stopping = True
        deadline = time.monotonic() + SHUTDOWN_SECONDS  # one budget for the whole stop, not one per wait
        if self.db_task is not None and not self.db_task.done():
            await asyncio.wait([self.db_task], timeout=SHUTDOWN_SECONDS)
        if self.db_task is not None and self.db_task.done() and not self.db_task.cancelled():
            result = self.db_task.exception() or self.db_task.result()
            if isinstance(result, list):  # rows claimed just as we were cancelled: never started
                await self._release([r.id for r in result if r.id not in self.claimed])
        tasks = list(self.claimed.values())
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=max(0.1, deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # Recorded within RECORD_SECONDS of the POSTs' end (at the latest of their deadline): a database locked
        # by another writer waits out its busy timeout (30 s), and must not hold the whole stop up.
        record_by = min(time.monotonic(), deadline) + RECORD_SECONDS
        recording = asyncio.ensure_future(self._record_on_stop())
        done, _ = await asyncio.wait([recording], timeout=max(0.1, record_by - time.monotonic()))
        if not done:
            log.warning("could not record deliveries on shutdown in time; their leases will expire (a few posts may "
                        "be sent twice, which servers ignore)")
        self.claimed.clear()

    async def _record_on_stop(self) -> None:
        try:
            await self.flush()
            # Every row still leased to us: those whose POSTs were cut, and any of a claim whose answer was lost.
            await release_all(self.store, QUEUE, self.worker_id)
        except Exception:
            log.exception("could not record deliveries on shutdown; their leases will expire")


async def run(services: Services) -> None:
    """The background job app.py starts for roles all/worker."""
    worker = Worker(store=services.store, client=services.client, settings=services.settings,
                    metrics=services.metrics, worker_id=services.worker_id, health=services.health,
                    wake=services.wake.delivery, pulse=services.wake if services.role == "all" else None)
    await listening(services.store, services.health, worker.wake, "delivery-listen", worker.run)
