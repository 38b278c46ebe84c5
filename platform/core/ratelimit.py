"""Fixed-window counters in Redis: sign-up and login throttling share them."""

from __future__ import annotations

import time

from redis import Redis


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def hit(self, key: str, *, limit: int, window_s: int) -> bool:
        """Count one attempt; True while the caller is still within ``limit`` per ``window_s``."""
        bucket = f"rl:{key}:{int(time.time()) // window_s}"
        pipe = self.redis.pipeline()
        pipe.incr(bucket)
        pipe.expire(bucket, window_s + 1)
        count, _ = pipe.execute()
        return int(count) <= limit

    def reset(self, key: str, *, window_s: int) -> None:
        self.redis.delete(f"rl:{key}:{int(time.time()) // window_s}")
