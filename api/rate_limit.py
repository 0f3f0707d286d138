"""Per-caller rate limit: a token bucket per caller identity, in this process's memory.

Every caller (an account, whichever of its sessions it uses, or an integration key) has a
bucket of `burst` tokens that refills at `per_minute / 60` tokens a second; a request takes
one token, and a request that finds the bucket empty is answered 429 with `Retry-After`
(the whole seconds until a token is back, at least 1).

The buckets live in the API process, so the limit holds per replica: behind a load balancer
with N replicas a caller can get up to N times the limit. That is enough to stop a runaway
client from monopolising a replica, which is what the limit is for; a shared limit would
cost a database or cache round trip on every request.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by caller identity. Thread-safe; O(1) per request.

    Buckets that have refilled completely carry no information, so they are dropped in a
    sweep every `sweep_every` requests and memory stays bounded by the callers active in
    the last `burst / rate` seconds.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sweep_every: int = 10_000
    ) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._sweep_every = sweep_every
        self._since_sweep = 0

    def take(self, identity: str, per_minute: int, burst: int | None = None) -> int | None:
        """Take a token for `identity`: None when allowed, else the seconds to wait (>= 1).

        `per_minute` 0 disables the limit; `burst` (bucket size) defaults to `per_minute`.
        """
        if per_minute <= 0:
            return None
        capacity = float(burst if burst else per_minute)
        rate = per_minute / 60.0  # tokens per second
        now = self._clock()
        with self._lock:
            self._since_sweep += 1
            if self._since_sweep >= self._sweep_every:
                self._sweep(now, capacity, rate)
            bucket = self._buckets.get(identity)
            if bucket is None:
                bucket = self._buckets[identity] = _Bucket(tokens=capacity, updated=now)
            else:
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(capacity, bucket.tokens + elapsed * rate)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - bucket.tokens) / rate))

    def _sweep(self, now: float, capacity: float, rate: float) -> None:
        self._since_sweep = 0
        full_after = capacity / rate
        stale = [key for key, b in self._buckets.items() if now - b.updated >= full_after]
        for key in stale:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
