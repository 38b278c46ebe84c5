"""Rate limits in Redis: exact sliding windows for sign-in and sign-up, a cheap estimate for API quotas.

A fixed window (one counter per ``time // window``) lets a caller spend its limit twice across a window
boundary, and a test that happens to straddle the boundary sees no throttle at all. Each key is a sorted
set of attempt times instead: an attempt counts for exactly ``window_s`` seconds after it was made.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass

from redis import Redis


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def hit(self, key: str, *, limit: int, window_s: int) -> bool:
        """Count one attempt; True while the caller is still within ``limit`` per ``window_s``."""
        now = time.time()
        name = f"rl:{key}"
        pipe = self.redis.pipeline()  # MULTI/EXEC: concurrent attempts cannot both see a stale count
        pipe.zremrangebyscore(name, "-inf", now - window_s)
        pipe.zadd(name, {f"{now:.6f}:{secrets.token_hex(4)}": now})
        # Keep only the newest limit+1 attempts: enough to decide, and a flood cannot grow the set.
        pipe.zremrangebyrank(name, 0, -(limit + 2))
        pipe.zcard(name)
        pipe.expire(name, window_s + 1)
        _, _, _, count, _ = pipe.execute()
        return int(count) <= limit

    def reset(self, key: str) -> None:
        self.redis.delete(f"rl:{key}")


@dataclass(frozen=True, slots=True)
class Budget:
    """What a quota check found: whether the request may go on, and what to tell the client."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the current window ends


class QuotaLimiter:
    """A per-key request quota for busy paths (the API): one round trip, two counters per key.

    The exact sliding window above keeps one entry per attempt, right for a handful of sign-ins and
    wrong for a tenant's thousand API calls a minute. This is the usual estimate of a sliding window
    from two fixed ones: the previous window's count, weighted by how much of it still overlaps the
    last ``window_s`` seconds, plus the current one's. It never lets twice the limit through at a
    window boundary, as a plain fixed window does.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def spend(self, key: str, *, limit: int, window_s: int = 60) -> Budget:
        now = time.time()
        window, into = divmod(now, window_s)
        current, previous = f"rq:{key}:{int(window)}", f"rq:{key}:{int(window) - 1}"
        pipe = self.redis.pipeline(transaction=False)  # the counts need not be a snapshot, only cheap
        pipe.incr(current)
        pipe.expire(current, 2 * window_s)
        pipe.get(previous)
        count, _, before = pipe.execute()
        estimate = int(before or 0) * (1 - into / window_s) + int(count)
        allowed = estimate <= limit
        return Budget(allowed=allowed, limit=limit, remaining=max(0, math.floor(limit - estimate)),
                      reset_s=max(1, math.ceil(window_s - into)))
