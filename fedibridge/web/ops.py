"""Operator endpoints: health check and Prometheus metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy import func, select, text

from ..app import HEALTH, METRICS, STORE
from ..health import describe, is_storage_outage
from ..store import disk_free_bytes
from ..tables import deliveries, inbox_items

PROBE_TIMEOUT = 3.0  # seconds the database gets to answer SELECT 1 before /healthz calls it down


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers and no task has been failing past the grace; else 503 naming what."""
    failing = request.app[HEALTH].stuck()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT), request.app[STORE].connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        if not is_storage_outage(exc):
            raise
        failing["database"] = describe(exc) if not isinstance(exc, TimeoutError) else "no answer within 3 s"
    if failing:
        return web.json_response({"status": "failing", "failing": failing}, status=503)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Counters of this process plus queue gauges read from the shared database."""
    async with request.app[STORE].connect() as conn:
        by_state = (await conn.execute(
            select(deliveries.c.state, func.count()).group_by(deliveries.c.state))).all()
        inbox_pending = (await conn.execute(
            select(func.count()).select_from(inbox_items).where(inbox_items.c.state == "pending"))).scalar_one()
    gauges: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {
        "fedibridge_delivery_queue": ("Delivery rows by state.", [({"state": s}, n) for s, n in by_state]),
        "fedibridge_inbox_queue": ("Inbox activities waiting to be handled.", [({}, inbox_pending)]),
        "fedibridge_task_failing": ("1 for each long-lived task of this process that is failing now.",
                                    [({"task": name}, float(state.failing_since is not None))
                                     for name, state in sorted(request.app[HEALTH].tasks.items())]),
    }
    free = disk_free_bytes(request.app[STORE].database_url)
    if free is not None:
        gauges["fedibridge_disk_free_bytes"] = ("Free space on the SQLite database's filesystem.", [({}, free)])
    body = request.app[METRICS].render(gauges)
    return web.Response(text=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})
