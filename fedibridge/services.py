"""The Services object: everything the core needs (settings, storage, HTTP client, identity, clock…).

`app.py` builds one per application and hangs it on a single AppKey; core functions and workers take it
(or the parts they need) instead of a `web.Application`, so they run and test without a web app.
This module imports the classes it holds for typing only: importing it loads nothing of the runtime.
"""

from __future__ import annotations

import asyncio
import time
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
RATE_WINDOW = 0.25  # seconds: the slots the inbox's accept rate is counted in (Wakeups.accept_rate)
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
    # Accepts per RATE_WINDOW-second slot of the monotonic clock: this slot's so far, and the one before.
    _slot: int = 0
    _in_slot: int = 0
    _in_previous: int = 0
    _busy_seen: float = float("-inf")  # when accept_rate last reached a caller's busy rate (Wakeups.busy)

    def accept(self) -> None:
        """Count one activity this process's inbox stored (role all: the workers yield to a burst)."""
        self.accepted += 1
        slot = int(time.monotonic() / RATE_WINDOW)
        if slot != self._slot:
            self._in_previous = self._in_slot if slot == self._slot + 1 else 0
            self._slot, self._in_slot = slot, 0
        self._in_slot += 1

    def accept_rate(self) -> float:
        """Accepts a second over the last RATE_WINDOW seconds or so: the busier of the slot under way and the
        one before it, so a burst counts from its first quarter second and an old one is forgotten within
        two slots (an average since some earlier moment would dilute a burst after a quiet spell)."""
        slot = int(time.monotonic() / RATE_WINDOW)
        if slot == self._slot:
            return max(self._in_slot, self._in_previous) / RATE_WINDOW
        if slot == self._slot + 1:
            return self._in_slot / RATE_WINDOW
        return 0.0

    def busy(self, rate: float, hold: float) -> bool:
        """Whether the inbox has accepted at least `rate` activities a second within the last `hold` seconds.

        A burst's senders are not a steady stream: one quarter-second slot a little short of the rate (a pause
        on a loaded machine) is not the burst's end, and treating it as one let deliveries claim their whole
        share in the middle of a burst.
        """
        now = time.monotonic()
        if self.accept_rate() >= rate:
            self._busy_seen = now
        return now - self._busy_seen < hold


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
