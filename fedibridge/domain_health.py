"""Which remote servers are failing: a streak of failures long enough marks a server unavailable.

Deliveries to an unavailable server are skipped (except a daily probe) until it answers again, like
Mastodon's unavailable domains, so a dead server does not hold thousands of rows in retry.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Connection

from .store import Store, insert_ignore
from .tables import domains

log = logging.getLogger(__name__)
DAY = 86_400.0
MAX_PROBED = 1000  # past this many remembered probes, those older than a day (useless) are dropped
SUCCESS_REFRESH = 3600.0  # a healthy host's success is written again after this long (seconds)…
MAX_HEALTHY = 100_000  # …and at most this many hosts are remembered as written


class Successes:
    """Which hosts' successes this worker wrote lately, so a fan-out does not rewrite them with every batch.

    Writing every success held SQLite's one write lock for ~0.8 s of a 10,000-follow burst (a row per host
    and batch, for a date nothing reads), while every 202 waited behind it. A success is written when the
    host was not written within SUCCESS_REFRESH, failed since (its streak must end at once), or was probed
    (it is marked unavailable). A streak another worker started is ended by our success within the refresh:
    a host is marked unavailable only after days of failures, so that hour never decides it.
    """

    def __init__(self) -> None:
        self._written: dict[str, float] = {}  # host -> time.monotonic() of its last written success

    def due(self, ok: set[str], probed: set[str]) -> set[str]:
        """The successful hosts whose success must be written now."""
        now = time.monotonic()
        return {h for h in ok if h in probed or now - self._written.get(h, -SUCCESS_REFRESH) >= SUCCESS_REFRESH}

    def recorded(self, ok: set[str], bad: set[str]) -> None:
        """After the write: remember the successes written; a failing host's next success is due at once."""
        now = time.monotonic()
        for host in bad:
            self._written.pop(host, None)
        self._written.update(dict.fromkeys(ok, now))
        if len(self._written) > MAX_HEALTHY:
            self._written = {h: t for h, t in self._written.items() if now - t < SUCCESS_REFRESH}
            if len(self._written) > MAX_HEALTHY:  # that many hosts within the hour: start over (a few rewrites)
                self._written.clear()


def record(conn: Connection, now: datetime, ok: set[str], bad: set[str], unavailable_days: int) -> None:
    """Success clears a host's failure streak; a streak of `unavailable_days` marks it unavailable."""
    conn.execute(insert_ignore(conn, domains), [{"host": h, "unavailable": False} for h in ok | bad])
    if ok:
        conn.execute(update(domains).where(domains.c.host.in_(ok))
                     .values(last_success=now, failing_since=None, unavailable=False))
    if bad:
        conn.execute(update(domains).where(domains.c.host.in_(bad), domains.c.failing_since.is_(None))
                     .values(failing_since=now))
        cutoff = now - timedelta(days=unavailable_days)
        result = conn.execute(
            update(domains).where(domains.c.host.in_(bad), domains.c.unavailable.is_(False),
                                  domains.c.failing_since <= cutoff)
            .values(unavailable=True))
        if result.rowcount:
            log.warning("%d domain(s) marked unavailable after failing for %d days", result.rowcount, unavailable_days)


async def may_probe(store: Store, host: str, worker_id: str, probed: dict[str, float]) -> bool:
    """One delivery a day may try an unavailable host, whichever worker gets the lease.

    `probed` is this worker's memory of its own probes (the lease renews for its owner, so it is needed);
    it is keyed by remote hosts, so expired entries are dropped and it stays bounded.
    """
    now = time.monotonic()
    if len(probed) > MAX_PROBED:
        for old in [h for h, when in probed.items() if now - when >= DAY]:
            del probed[old]
    last = probed.get(host)
    if last is not None and now - last < DAY:
        return False
    name = "probe:" + hashlib.sha256(host.encode()).hexdigest()[:40]
    if not await store.acquire_lease(name, worker_id, timedelta(days=1)):
        return False
    probed[host] = now
    return True
