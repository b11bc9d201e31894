"""Per-key rate limits: a token bucket per API key, in memory, in each process.

``PAYLEDGER_RATE_LIMIT_PER_S`` tokens flow into a key's bucket every second, up to
``PAYLEDGER_RATE_LIMIT_BURST``; each request takes one, and a request that finds less than one
answers 429 ``rate_limited`` with ``Retry-After`` (the seconds until a token is there). With N
API workers a key gets up to N times the rate. Taking a token is a few float operations on the
event loop's thread (no lock needed): the hot route does not notice it.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

from domain.errors import PayledgerError


class RateLimited(PayledgerError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        # key -> [tokens, when they were counted]; one entry per key seen (keys are few)
        self._buckets: dict[Hashable, list[float]] = {}

    def take(self, key: Hashable) -> None:
        """Take a token from ``key``'s bucket, or raise ``RateLimited``."""
        if self.rate_per_s <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [self.burst - 1, now]
            return
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate_per_s)
        if tokens < 1:
            bucket[0], bucket[1] = tokens, now
            raise RateLimited(
                f"this key is limited to {self.rate_per_s:g} requests/s "
                f"(bursts of {self.burst:g}); retry later",
                (1 - tokens) / self.rate_per_s,
            )
        bucket[0], bucket[1] = tokens - 1, now
