"""Rate limits in Redis: exact sliding windows for sign-in and sign-up, a cheap estimate for API quotas.

A fixed window (one counter per ``time // window``) lets a caller spend its limit twice across a window
boundary, and a test that happens to straddle the boundary sees no throttle at all. The exact windows
are the ``limits`` library's moving window (one Lua call per attempt, at most ``limit`` entries per key:
bench/libraries.py found nothing ours did better). The API quota stays our own (see QuotaLimiter).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass

from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis import Redis
from redis.exceptions import RedisError


def limit_key(scope: str, *identity: str) -> str:
    """A rate-limit key of bounded size: ``scope`` is ours (a short constant), ``identity`` is whatever
    the client sent (an e-mail address, a forwarded address) and is hashed, so a 400 kB e-mail address
    leaves a 32-character key, not a 400 kB one."""
    joined = "\0".join(identity).encode("utf-8", "surrogatepass")
    return f"{scope}:{hashlib.sha256(joined).hexdigest()[:32]}"


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        # The app's own connection pool: same server, same timeouts, no second set of connections.
        self.strategy = MovingWindowRateLimiter(RedisStorage("redis://", connection_pool=redis.connection_pool))

    def hit(self, scope: str, *identity: str, limit: int, window_s: int) -> bool:
        """Count one attempt if it fits; True while the caller is within ``limit`` per ``window_s``.

        Test and count are one atomic step, so concurrent attempts cannot all pass on a stale count.
        """
        return bool(self.strategy.hit(RateLimitItemPerSecond(limit, window_s), limit_key(scope, *identity)))

    def reset(self, scope: str, *identity: str, limit: int, window_s: int) -> None:
        self.strategy.clear(RateLimitItemPerSecond(limit, window_s), limit_key(scope, *identity))


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Budget:
    """What a quota check found: whether the request may go on, and what to tell the client."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the current window ends


@dataclass(slots=True)
class _Tally:
    """One key's quota as this process knows it."""

    window: int = -1
    pending: int = 0  # spent here and not yet added to Redis
    current: int = 0  # the current window's count in Redis at the last sync (every process's)
    previous: int = 0  # the previous window's final count, read at the last sync
    synced_at: float = -math.inf


class QuotaLimiter:
    """A per-key request quota for busy paths (the API), shared by every process through Redis.

    The exact sliding window above keeps one entry per attempt, right for a handful of sign-ins and
    wrong for a tenant's thousand API calls a minute. This is the usual estimate of a sliding window
    from two fixed ones: the previous window's count, weighted by how much of it still overlaps the
    last ``window_s`` seconds, plus the current one's. It never lets twice the limit through at a
    window boundary, as a plain fixed window does.

    A Redis round trip on every request cost about a sixth of the API's CPU (bench/README.md), so each
    process counts locally and adds its count to Redis at most every ``sync_every_s`` seconds, or at
    once when its estimate comes within ``NEAR`` of the limit, or when the window turns. A process
    learns the others' counts at its next sync, so their view of each other lags by at most
    ``sync_every_s``; once a process has seen the count near the limit, each of its requests is counted
    in Redis before it is allowed. The limit therefore holds to within what the processes admit in
    one sync interval while the count crosses from ``NEAR`` to the limit.
    """

    NEAR = 0.9
    MAX_KEYS = 10_000  # past this many, keys idle for a whole window are dropped from memory

    def __init__(self, redis: Redis, *, sync_every_s: float = 0.1) -> None:
        self.redis = redis
        self.sync_every_s = sync_every_s
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()  # gthread workers share one limiter

    def spend(self, key: str, *, limit: int, window_s: int = 60) -> Budget:
        """Count one call against ``key``'s quota if it fits; a refused call is not counted."""
        now = time.time()
        window_f, into = divmod(now, window_s)
        window, weight = int(window_f), 1 - into / window_s
        with self._lock:
            tally = self._tallies.get(key)
            if tally is None:
                if len(self._tallies) >= self.MAX_KEYS:
                    self._forget_idle(window)
                tally = self._tallies.setdefault(key, _Tally())
            stale: tuple[int, int] | None = None
            if tally.window != window:
                if tally.pending:
                    stale = (tally.window, tally.pending)  # counted in the old window: added to it
                tally.window, tally.pending, tally.current, tally.previous = window, 0, 0, 0
                tally.synced_at = -math.inf
            tally.pending += 1
            estimate = tally.previous * weight + tally.current + tally.pending
            sync = now - tally.synced_at >= self.sync_every_s or estimate >= limit * self.NEAR
            if sync:
                # Take this process's count out under the lock and talk to Redis without it: one
                # workspace's round trip must not hold up every other workspace's calls.
                sending, tally.pending, tally.synced_at = tally.pending, 0, now
        if sync:  # also with nothing to send (a refused call was taken back): the others' count is news
            estimate = self._sync(key, window, window_s, weight, sending, stale)
        with self._lock:
            allowed = estimate <= limit
            if not allowed:
                # Not spent: taken back at the next sync, so a client that keeps calling over its quota
                # still gets calls through as its older ones age out of the window.
                tally.pending -= 1
                previous, current = tally.previous, tally.current + tally.pending
        if allowed:
            return Budget(allowed=True, limit=limit, remaining=max(0, math.floor(limit - estimate)),
                          reset_s=max(1, math.ceil(window_s - into)))
        return Budget(allowed=False, limit=limit, remaining=0,
                      reset_s=_wait_s(previous, current, limit, into, window_s))

    def _forget_idle(self, window: int) -> None:
        # One entry per workspace that called lately; one that has been quiet for a whole window has
        # nothing left to tell (its pending calls, if any, are lost: at most one sync interval's worth).
        for key in [k for k, t in self._tallies.items() if t.window < window - 1]:
            del self._tallies[key]

    def _sync(self, key: str, window: int, window_s: int, weight: float, sending: int,
              stale: tuple[int, int] | None) -> float:
        """Add ``sending`` calls to Redis and learn every process's count; returns the new estimate."""
        pipe = self.redis.pipeline(transaction=False)  # the counts need not be a snapshot, only cheap
        if stale is not None:
            pipe.incrby(f"rq:{key}:{stale[0]}", stale[1])
            pipe.expire(f"rq:{key}:{stale[0]}", 2 * window_s)
        current = f"rq:{key}:{window}"
        pipe.incrby(current, sending)
        pipe.expire(current, 2 * window_s)
        pipe.get(f"rq:{key}:{window - 1}")
        try:
            *_, count, _, before = pipe.execute()
        except RedisError as exc:
            # A quota is no reason to refuse service while Redis is away: count locally, retry the sync
            # after the usual interval.
            log.warning("API quota not synced (Redis unavailable): %s", exc)
            with self._lock:
                tally = self._tallies.get(key)
                if tally is None or tally.window != window:
                    return 0.0
                tally.pending += sending
                return tally.previous * weight + tally.current + tally.pending
        with self._lock:
            tally = self._tallies.get(key)
            if tally is None or tally.window != window:  # the window turned meanwhile: nothing to keep
                return int(before or 0) * weight + int(count)
            tally.current, tally.previous = int(count), int(before or 0)
            return tally.previous * weight + tally.current + tally.pending


def _wait_s(previous: float, current: float, limit: int, into: float, window_s: int) -> int:
    """Seconds until one more call fits under ``limit`` as the previous window's weight shrinks."""
    if current + 1 <= limit:
        # previous * (1 - x / window_s) + current + 1 <= limit, for x (seconds into this window) >= into
        x = window_s * (1 - (limit - current - 1) / previous) if previous > 0 else into
        return max(1, math.ceil(x - into - _EPSILON))
    # Only in the next window, where this window's count is the one that fades.
    x = window_s * (1 - (limit - 1) / current) if current > 0 else 0.0
    return max(1, math.ceil(window_s - into + max(0.0, x) - _EPSILON))


_EPSILON = 1e-6  # 60 * (1 - 0.7) is 18.000000000000004 in floating point: not a 19th second
