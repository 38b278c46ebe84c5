"""Sliding-window counters in Redis: sign-up, login and reset throttling share them.

A fixed window (one counter per ``time // window``) lets a caller spend its limit twice across a window
boundary, and a test that happens to straddle the boundary sees no throttle at all. Each key is a sorted
set of attempt times instead: an attempt counts for exactly ``window_s`` seconds after it was made.
"""

from __future__ import annotations

import secrets
import time

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
