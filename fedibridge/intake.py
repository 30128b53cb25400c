"""Storing accepted inbox activities with group commit.

Every accepted activity must be durable before its 202 goes out. One transaction per request caps the
inbox at the database's commit rate, so concurrent requests hand their row to one writer that inserts
everything waiting in one transaction (on the sink's thread, see inbox_sink) and commits once; each
request then learns whether its row was new or a duplicate.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import asyncpg
import orjson

from .inbox_sink import Row, WriterThread
from .logsafe import logger

log = logger(__name__)  # arguments escaped and redacted (logsafe)
MAX_BATCH = 200  # rows a transaction; 200 x 9 parameters stays far below SQLite's 32766


def encode_payload(activity: dict[str, Any]) -> str:
    """The stored JSON text (read back by tables.JSONText); orjson: this runs on every inbox POST."""
    return orjson.dumps(activity).decode("utf-8")


class InboxWriter:
    """Batches inbox_items inserts; `await add(row)` returns True when stored, False for a duplicate."""

    def __init__(self, database_url: str) -> None:
        self._sink = WriterThread(database_url)
        self._pending: list[tuple[Row, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Open the writer's own connection: a database that cannot be opened fails here, at startup."""
        if not self._started:
            await self._sink.start()
            self._started = True

    async def add(self, row: Row) -> bool:
        if self._closed:
            raise RuntimeError("inbox writer is closed")
        if not self._started:
            await self.start()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="inbox-writer")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((row, fut))
        self._wake.set()
        return await fut

    async def close(self) -> None:
        """Flush what is waiting, then stop: requests in flight still get their answer."""
        self._closed = True
        if self._task is not None:
            self._wake.set()
            await self._task
        if self._started:
            await self._sink.stop()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._flush(batch)
            if self._closed:
                return

    async def _flush(self, batch: list[tuple[Row, asyncio.Future[bool]]]) -> None:
        rows: dict[str, Row] = {}
        for row, _ in batch:
            rows.setdefault(row["ap_id"], row)  # the same activity twice in one batch: store it once
        try:
            inserted = await self._sink.write(list(rows.values()))
        except (sqlite3.Error, asyncpg.PostgresError, OSError) as exc:
            log.error("storing %d inbox activities failed: %s", len(batch), exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for row, fut in batch:
            if fut.done():
                continue
            ap_id = row["ap_id"]
            fut.set_result(ap_id in inserted)
            inserted.discard(ap_id)  # a second copy in the same batch is a duplicate
