"""Which handlers run for which activity type.

Each feature module exposes `HANDLERS: dict[str, Handler]`; several may claim one type (Undo, Delete and
Update concern both followers and comments), so all of them run, in module order. A handler looks at
the activity and returns a short outcome label, or None when the activity was not its business.
"""

from __future__ import annotations

from typing import Any

from . import comments, followers, quotes
from .services import Handler, Services


def _build() -> dict[str, list[Handler]]:
    table: dict[str, list[Handler]] = {}
    for module in (followers, comments, quotes):
        for kind, handler in module.HANDLERS.items():
            table.setdefault(kind, []).append(handler)
    return table


HANDLERS: dict[str, list[Handler]] = _build()


async def dispatch(services: Services, activity: dict[str, Any], actor_id: str) -> str:
    """Run every handler for the activity's type; "ignored" when none applies or none cared."""
    outcomes = []
    for handler in HANDLERS.get(str(activity.get("type")), []):
        outcome = await handler(services, activity, actor_id)
        if outcome:
            outcomes.append(outcome)
    return "+".join(outcomes) if outcomes else "ignored"
