"""Storing accepted inbox activities with group commit.

Every accepted activity must be durable before its 202 goes out. One transaction per request caps the
inbox at the database's commit rate, so concurrent requests hand their row to one writer task that
inserts everything waiting in a single INSERT … ON CONFLICT DO NOTHING RETURNING and commits once;
each request then learns whether its row was new or a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .queue import insert_ignore
from .store import Store
from .tables import inbox_items
from .wakeup import announce

log = logging.getLogger(__name__)
MAX_BATCH = 200  # well under SQLite's 32766 bound parameters (10 columns a row)


class InboxWriter:
    """Batches inbox_items inserts; `await add(row)` returns True when stored, False for a duplicate."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[dict[str, Any], asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def add(self, row: dict[str, Any]) -> bool:
        if self._closed:
            raise RuntimeError("inbox writer is closed")
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

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._flush(batch)
            if self._closed:
                return

    async def _flush(self, batch: list[tuple[dict[str, Any], asyncio.Future[bool]]]) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for row, _ in batch:
            rows.setdefault(row["ap_id"], row)  # the same activity twice in one batch: store it once
        try:
            async with self.store.begin() as conn:
                # executemany + RETURNING: one cached compiled statement (SQLAlchemy's insertmanyvalues)
                stmt = insert_ignore(conn, inbox_items).returning(inbox_items.c.ap_id)
                inserted = {r.ap_id for r in await conn.execute(stmt, list(rows.values()))}
                if inserted:
                    await announce(conn)  # worker processes (PostgreSQL) wake at commit
        except (SQLAlchemyError, OSError) as exc:
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
