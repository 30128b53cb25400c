"""The Services object: everything the core needs (settings, storage, HTTP client, identity, clock…).

`app.py` builds one per application and hangs it on a single AppKey; core functions and workers take it
(or the parts they need) instead of a `web.Application`, so they run and test without a web app.
This module imports the classes it holds for typing only: importing it loads nothing of the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .config import Settings
    from .health import Health
    from .http_client import GuardedClient
    from .keys import KeyPair
    from .metrics import Metrics
    from .remote_actors import Resolver
    from .store import Store
    from .vocab import Site

Role = Literal["all", "web", "worker"]
# An inbox activity handler: (services, activity, verified sender) → outcome label, or None when not its business.
Handler = Callable[["Services", dict[str, Any], str], Awaitable[str | None]]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Wakeups:
    """In-process wake-up events of the queue workers (other processes are woken by LISTEN/NOTIFY).

    `accepted` counts what this process's own inbox stored: with role `all` the inbox worker yields
    while it grows, since a 202 needs the event loop now and handling may lag.
    """

    inbox: asyncio.Event = field(default_factory=asyncio.Event)
    delivery: asyncio.Event = field(default_factory=asyncio.Event)
    webhook: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: int = 0


@dataclass(eq=False)
class Services:
    """One per app (tests run several per process); long-lived parts are opened and closed by `app.py`."""

    settings: Settings
    keys: KeyPair
    site: Site
    admin_token: str
    role: Role
    worker_id: str
    metrics: Metrics
    health: Health
    store: Store
    client: GuardedClient
    resolver: Resolver
    wake: Wakeups = field(default_factory=Wakeups)
    # Snapshot of the blocklists the inbox checks on every request; cleared when an admin changes blocks.
    block_cache: dict[str, Any] = field(default_factory=dict)
    clock: Callable[[], datetime] = _now
