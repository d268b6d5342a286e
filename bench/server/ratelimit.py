"""Token buckets per key (a submitter token, a client address), kept in the server process.

State lives in one process: run one uvicorn worker per database, or put a shared limiter in front.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    per_minute: float
    burst: float


@dataclass(frozen=True)
class RateLimits:
    """Defaults sized for people submitting by hand or from a queue, not for scraping."""

    #: Any API request from one client address.
    requests: Rate = Rate(per_minute=600, burst=120)
    #: Runs submitted (new or repeated) under one token; the burst holds a full batch.
    submissions: Rate = Rate(per_minute=120, burst=100)
    #: New tokens issued to one client address.
    tokens: Rate = Rate(per_minute=2, burst=10)


class Limiter:
    """`take(key, cost)` spends units; it answers how many seconds to wait, or 0 when allowed."""

    #: Above this many keys, full buckets (idle keys) are forgotten.
    MAX_KEYS = 50_000

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate_per_s = rate.per_minute / 60
        self._burst = rate.burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1) -> float:
        """A cost above the burst can never be paid: the caller must keep requests smaller."""
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate_per_s)
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                return (cost - tokens) / self._rate_per_s
            self._buckets[key] = (tokens - cost, now)
            if len(self._buckets) > self.MAX_KEYS:
                self._forget_idle(now)
            return 0.0

    def _forget_idle(self, now: float) -> None:
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self._rate_per_s >= self._burst]
        for key in full:
            del self._buckets[key]
