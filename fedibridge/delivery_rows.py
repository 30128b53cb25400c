"""A delivery row as the worker holds it, what became of it, and the retry curve: the delivery queue's values.

Kept apart from the worker loop (delivery.py) so the policy reads on its own and tests import it without the
worker.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .jsontext import dump_bytes

RETRYABLE = frozenset({408, 429}) | frozenset(range(500, 600))  # statuses worth another try


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before the next try after `attempts` failed tries (1-based).

    Sidekiq's curve, as Mastodon's delivery uses: attempts⁴ + 15 + rand(0..30)·(attempts+1).
    Tries 1…16 are spread over about 2.1 days (15 waits: 178,312 s of attempts⁴ plus ~2,250 s of
    jitter), the last waits being about 10–14 h apart — a server down for a day still gets the post.
    """
    r = rng or random
    return attempts**4 + 15 + r.randint(0, 30) * (attempts + 1)


def serialize(payload: Any) -> bytes:
    """Compact UTF-8 JSON: one byte string per activity, the same for every target."""
    return dump_bytes(payload)


@dataclass
class Claimed:
    id: int
    activity_id: int | None
    kind: str
    inbox: str
    host: str
    body: str | None
    attempts: int
    claimed_at: float  # monotonic
    probe: bool = False
    payload: bytes | None = None  # the activity's JSON, read with the batch (shared by every row of it)


@dataclass
class Outcome:
    row: Claimed
    state: str  # done | pending | failed
    status: int | None
    error: str | None
    metric: str  # delivered | retry | failed | gone
    delay: float = 0.0  # seconds until the next try (state pending)
    host_failed: bool = False  # counts against the domain's health
    gone_inbox: str | None = None  # a 410 personal inbox: its follower leaves
    tried: bool = True  # False when skipped without a POST (unavailable domain)
