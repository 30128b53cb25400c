"""Storing accepted inbox activities with group commit.

Every accepted activity must be durable before its 202 goes out. One transaction per request caps the
inbox at the database's commit rate, so concurrent requests hand their row to one writer that inserts
everything waiting in one transaction (on the sink's thread, see inbox_sink) and commits once; each
request then learns whether its row was new or a duplicate.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

import orjson

from .errors import StorageUnavailable
from .health import Backoff, Health, describe, is_disk_full, is_storage_outage
from .inbox_sink import Row, WriterThread
from .logsafe import logger
from .store import wait_event

log = logger(__name__)  # arguments escaped and redacted (logsafe)
MAX_BATCH = 200  # rows a transaction; 200 x 9 parameters stays far below SQLite's 32766
TASK = "inbox-writer"  # its name in /healthz
STORE_TIMEOUT = 8.0  # seconds a request waits for its batch before answering 503 (a hung database)
RETRY_AFTER = 10  # seconds, in the 503's Retry-After: about when a reconnect will have been tried again
CHECKPOINT_ROWS = 2000  # SQLite: a PASSIVE checkpoint once a burst of this many rows has gone quiet


def encode_payload(activity: dict[str, Any]) -> str:
    """The stored JSON text (read back by tables.JSONText); orjson: this runs on every inbox POST."""
    return orjson.dumps(activity).decode("utf-8")


class InboxWriter:
    """Batches inbox_items inserts; `await add(row)` returns True when stored, False for a duplicate.

    It outlives its connection: a batch that fails closes the connection, the next one reconnects (with
    backoff while the database stays away), and meanwhile requests are answered StorageUnavailable (503)
    at once. A request waits at most `timeout` seconds for its batch, so nothing hangs.
    """

    def __init__(self, database_url: str, health: Health | None = None, timeout: float = STORE_TIMEOUT,
                 thread: Executor | None = None) -> None:
        self._sink = WriterThread(database_url, thread)  # thread: Store.write_thread(), shared on SQLite
        self._sqlite = database_url.startswith("sqlite")
        self._health = health or Health()
        self._timeout = timeout
        self._pending: list[tuple[Row, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._backoff = Backoff()
        self._retry_at = 0.0  # loop time before which a reconnect is not tried (the database is away)
        self._down: StorageUnavailable | None = None
        self._since_checkpoint = 0
        self._broken = False  # the connection failed: reopen it before the next write
        self._full = False

    async def start(self) -> None:
        """Open the writer's own connection: a database that cannot be opened fails here, at startup."""
        if not self._started:
            await self._sink.start()
            self._started = True
            self._health.ok(TASK)

    async def add(self, row: Row) -> bool:
        if self._closed:
            raise StorageUnavailable("inbox writer is closed (shutting down)", retry_after=RETRY_AFTER)
        if not self._started:
            await self.start()
        if self._down is not None and asyncio.get_running_loop().time() < self._retry_at:
            raise self._down  # the database was unreachable a moment ago: answer now, not after a timeout
        if self._task is None or self._task.done():  # never wait on a writer that is gone
            self._task = asyncio.create_task(self._run(), name="inbox-writer")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_consume)
        self._pending.append((row, fut))
        self._wake.set()
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(fut)  # the batch goes on: a late commit is a later duplicate
        except TimeoutError:
            raise StorageUnavailable(f"database did not answer within {self._timeout:g} s",
                                     retry_after=RETRY_AFTER) from None

    async def close(self) -> None:
        """Flush what is waiting, then stop: requests in flight still get their answer."""
        self._closed = True
        if self._task is not None:
            self._wake.set()
            await self._task
        if self._started:
            await self._sink.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._broken and not self._pending and not self._closed:
                # Idle while the database is away: probe it ourselves, so health recovers without traffic.
                await wait_event(self._wake, max(0.0, self._retry_at - loop.time()))
                if not self._pending and not self._closed:
                    await self._probe()
                    continue
            else:
                await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    await self._flush(batch)
                except Exception as exc:  # a bug must not end the writer: later requests would hang
                    log.exception("inbox writer failed")
                    _fail(batch, exc)
            if self._sqlite and self._since_checkpoint >= CHECKPOINT_ROWS and not self._pending:
                await self._checkpoint(full=False)
            if self._closed:
                return

    async def _flush(self, batch: list[tuple[Row, asyncio.Future[bool]]]) -> None:
        rows: dict[str, Row] = {}
        for row, _ in batch:
            rows.setdefault(row["ap_id"], row)  # the same activity twice in one batch: store it once
        try:
            if self._broken:
                await self._reconnect()
            inserted = await self._sink.write(list(rows.values()))
        except Exception as exc:
            _fail(batch, self._failed(exc))
            return
        self._recovered()
        self._since_checkpoint += len(rows)
        for row, fut in batch:
            if fut.done():
                continue
            ap_id = row["ap_id"]
            fut.set_result(ap_id in inserted)
            inserted.discard(ap_id)  # a second copy in the same batch is a duplicate

    async def _reconnect(self) -> None:
        """A fresh connection (the old one may be dead), then, after SQLITE_FULL, a TRUNCATE checkpoint:
        the WAL grew while checkpoints could not finish, and cutting it frees that space again."""
        if self._down is not None and asyncio.get_running_loop().time() < self._retry_at:
            raise self._down
        await self._sink.reopen()
        if self._full:
            await self._checkpoint(full=True)
        self._broken = False

    async def _probe(self) -> None:
        try:
            await self._reconnect()
        except Exception as exc:  # noqa: BLE001 - still away: _failed schedules the next try
            self._failed(exc)
            return
        if not self._full:  # reachable again; a full database proves itself only by a write
            self._recovered()

    async def _checkpoint(self, full: bool) -> None:
        self._since_checkpoint = 0
        try:
            await self._sink.checkpoint(full)
        except Exception as exc:  # noqa: BLE001 - best effort; the next write says whether space is back
            log.info("WAL checkpoint failed: %s", describe(exc))

    def _failed(self, exc: BaseException) -> BaseException:
        """Remember the outage and what to answer; a non-storage error (a bug) is answered as it is."""
        if isinstance(exc, StorageUnavailable):
            return exc
        self._broken = True  # whatever failed, the next batch starts on a fresh connection
        if not is_storage_outage(exc):
            log.error("storing inbox activities failed: %s", describe(exc))
            return exc
        self._full = is_disk_full(exc)
        self._retry_at = asyncio.get_running_loop().time() + self._backoff.next()
        reason = "database full" if self._full else "database unavailable"
        self._down = StorageUnavailable(f"{reason}; try again later", retry_after=RETRY_AFTER)
        if not self._health.is_failing(TASK):
            log.error("inbox writer: %s (%s); answering 503 until it is back", reason, describe(exc))
        self._health.failing(TASK, exc)
        return self._down

    def _recovered(self) -> None:
        if self._down is not None:
            log.warning("inbox writer: database is back, accepting again")
        self._down = None
        self._full = False
        self._backoff.reset()
        self._retry_at = 0.0
        self._health.ok(TASK)


def _fail(batch: list[tuple[Row, asyncio.Future[bool]]], exc: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)


def _consume(fut: asyncio.Future[bool]) -> None:
    """Mark a result as seen: a request that timed out is no longer waiting for its batch's answer."""
    if not fut.cancelled():
        fut.exception()
