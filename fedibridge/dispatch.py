"""Which handlers run for which activity type.

Each feature module exposes `HANDLERS: dict[str, Handler]`; several may claim one type (Undo, Delete and
Update concern both followers and comments), so all of them run, in module order. A handler looks at
the activity and returns a short outcome label, or None when the activity was not its business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import comments, followers, quotes

Handler = Callable[[web.Application, dict[str, Any], str], Awaitable[str | None]]


def _with_services(handler: quotes.ServicesHandler) -> Handler:
    """Newer handlers take Services; this adapts them until every handler does (the core refactor)."""
    async def run(app: web.Application, activity: dict[str, Any], actor_id: str) -> str | None:
        from .app import SERVICES

        return await handler(app[SERVICES], activity, actor_id)

    return run


def _build() -> dict[str, list[Handler]]:
    table: dict[str, list[Handler]] = {}
    for module in (followers, comments):
        for kind, handler in module.HANDLERS.items():
            table.setdefault(kind, []).append(handler)
    for kind, services_handler in quotes.HANDLERS.items():
        table.setdefault(kind, []).append(_with_services(services_handler))
    return table


HANDLERS: dict[str, list[Handler]] = _build()


async def dispatch(app: web.Application, activity: dict[str, Any], actor_id: str) -> str:
    """Run every handler for the activity's type; "ignored" when none applies or none cared."""
    outcomes = []
    for handler in HANDLERS.get(str(activity.get("type")), []):
        outcome = await handler(app, activity, actor_id)
        if outcome:
            outcomes.append(outcome)
    return "+".join(outcomes) if outcomes else "ignored"
