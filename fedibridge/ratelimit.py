"""Token buckets keyed by remote server or actor: one sender flooding the inbox must not delay the others.

A bucket holds up to `burst` tokens and gains `rate` a second; a request takes one or is told how long
to wait (the 429's Retry-After; Mastodon and Fedify retry then). Pure and in memory, one per process:
with several web processes each keeps its own buckets. At most `max_buckets` are kept: the least
recently used goes first, which costs it nothing but its history (a new bucket is full anyway).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_BUCKETS = 10_000


@dataclass
class TokenBuckets:
    """`take(key)` → 0.0 when allowed, else the seconds until one token is back. burst 0: no limit."""

    burst: int
    rate: float
    max_buckets: int = MAX_BUCKETS
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)  # key → (tokens, at)

    def take(self, key: str) -> float:
        if self.burst <= 0:
            return 0.0
        now = self.clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._evict()
            return 0.0
        self._buckets[key] = (tokens, now)
        self._evict()
        return (1.0 - tokens) / self.rate

    def _evict(self) -> None:
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> str:
    """Retry-After in whole seconds, at least 1 (RFC 9110 allows no fractions)."""
    return str(max(1, math.ceil(seconds)))
