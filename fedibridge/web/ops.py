"""Operator endpoints: health check and Prometheus metrics.

Metrics say who talks to the blog and how much, so they are not public: on the main port /metrics needs
the admin token; with metrics_bind set they are served there (no token, for a scraper on a private
address) and not on the main port at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import func, select, text

from .. import heap
from ..config import metrics_address
from ..health import describe, is_storage_outage
from ..store import disk_free_bytes
from ..tables import deliveries, inbox_items
from .common import SERVICES, require_admin

PROBE_TIMEOUT = 3.0  # seconds the database gets to answer SELECT 1 before /healthz calls it down


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers and no task has been failing past the grace; else 503 naming what."""
    return await _health(request.app)


async def _health(app: web.Application) -> web.Response:
    services = app[SERVICES]
    failing = services.health.stuck()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT), services.store.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        if not is_storage_outage(exc):
            raise
        failing["database"] = describe(exc) if not isinstance(exc, TimeoutError) else "no answer within 3 s"
    if failing:
        return web.json_response({"status": "failing", "failing": failing}, status=503)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """/metrics on the main port: for the admin only."""
    require_admin(request)
    return await render(request.app)


async def render(app: web.Application) -> web.Response:
    """Counters of this process plus queue gauges read from the shared database."""
    services = app[SERVICES]
    async with services.store.connect() as conn:
        by_state = (await conn.execute(
            select(deliveries.c.state, func.count()).group_by(deliveries.c.state))).all()
        inbox_pending = (await conn.execute(
            select(func.count()).select_from(inbox_items).where(inbox_items.c.state == "pending"))).scalar_one()
    gauges: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {
        "fedibridge_delivery_queue": ("Delivery rows by state.", [({"state": s}, n) for s, n in by_state]),
        "fedibridge_inbox_queue": ("Inbox activities waiting to be handled.", [({}, inbox_pending)]),
        "fedibridge_task_failing": ("1 for each long-lived task of this process that is failing now.",
                                    [({"task": name}, float(state.failing_since is not None))
                                     for name, state in sorted(services.health.tasks.items())]),
    }
    free = disk_free_bytes(services.store.database_url)
    if free is not None:
        gauges["fedibridge_disk_free_bytes"] = ("Free space on the SQLite database's filesystem.", [({}, free)])
    gauges.update(heap.gauges())
    body = services.metrics.render(gauges, heap.counters())
    return web.Response(text=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


async def metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """Serve /metrics (and /healthz) on metrics_bind, a separate address the public port never answers for."""
    host, port = metrics_address(app[SERVICES].settings.metrics_bind)

    async def scrape(request: web.Request) -> web.Response:
        return await render(app)

    async def health(request: web.Request) -> web.Response:
        return await _health(app)

    side = web.Application()
    side.router.add_get("/metrics", scrape)
    side.router.add_get("/healthz", health)
    runner = web.AppRunner(side, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    yield
    await runner.cleanup()
