"""Operator endpoints: health check and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import func, select, text

from ..app import METRICS, STORE
from ..tables import deliveries, inbox_items


async def healthz(request: web.Request) -> web.Response:
    async with request.app[STORE].connect() as conn:
        await conn.execute(text("SELECT 1"))
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
    }
    body = request.app[METRICS].render(gauges)
    return web.Response(text=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})
