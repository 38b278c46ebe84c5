"""Request-path benchmark: one-record GET through the full stack against a bare Flask app.

Full stack: ``GET /api/v1/users/<id>`` on ``Host: <slug>.localhost`` served by
``python -m gunicorn courtyard.wsgi:app``: tenant resolved from the host, bearer token checked against
the control plane, a session bound to the tenant, the ORM lookup, marshmallow, JSON out, commit.
Baseline: ``bench/bare_app.py`` (same route, same row and JSON, one SQLAlchemy Core query) under the
same gunicorn workers and worker class. Both are loaded by ``wrk --latency`` with ``bench/wrk_get.lua``
(same headers, same connections, same duration) in the same run, on 127.0.0.1.

The last line of output is one JSON object: rps, p99_ms, bare_rps, bare_p99_ms, ratio.

``--profile N`` instead serves N requests in-process (Flask test client, no gunicorn, no wrk) to
both apps, prints the CPU time per request of each and a cProfile of the full stack's request path.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

benchlib.fix_sys_path()

from core.db import Database, make_engine  # noqa: E402
from core.permissions import Actor  # noqa: E402
from tenants import migrator, services  # noqa: E402
from tenants.permissions import USERS_READ  # noqa: E402

SLUG = "bench-api"
PASSWORD = "bench-password-123"  # noqa: S105 - a throw-away tenant in a throw-away database
TARGET_RATIO = 0.60
TARGET_P99_MS = 25.0
LUA = benchlib.BENCH_DIR / "wrk_get.lua"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def seed(database_url: str) -> dict[str, Any]:
    """One provisioned tenant, an API client with users.read and a live bearer token."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        migrator.upgrade_shared(engine)
        actor = Actor.system("bench")
        with Database(engine).transaction() as session:
            made = services.provision(session, actor, slug=SLUG, name="Bench API 基准",
                                      admin_email=f"admin@{SLUG}.test", admin_password=PASSWORD)
            tenant = services.bound(made.tenant)
            client = services.create_client(session, actor, tenant, name="bench", scopes=[USERS_READ]).client
            secret, _ = services.issue_token(session, client, [USERS_READ], ttl_s=6 * 3600)
            return {"schema": tenant.schema, "user_id": str(made.admin.id), "token": secret}
    finally:
        engine.dispose()


def app_env(env: benchlib.BenchEnv, data: dict[str, Any]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("COURTYARD_")}
    out |= {
        "COURTYARD_DATABASE_URL": env.database_url,
        "COURTYARD_REDIS_URL": env.redis_url,
        "COURTYARD_VAR_DIR": str(env.settings.var_dir / "app"),
        "COURTYARD_SECRET_KEY": env.settings.secret_key,
        "COURTYARD_BASE_DOMAIN": "localhost",
        "COURTYARD_LOG_JSON": "1",
        # The quota is checked on every request (its Redis round trip is part of what is measured), but
        # a load test is one tenant sending far more than any real one may: it must never trip.
        "COURTYARD_API_REQUESTS_PER_MINUTE": str(10**9),
        "BENCH_DATABASE_URL": env.database_url,
        "BENCH_SCHEMA": data["schema"],
    }
    return out


def verify(port: int, bare_port: int, data: dict[str, Any]) -> None:
    """Both answer 200 with the same record; the full stack still refuses a missing token and a bad host."""
    path = f"/api/v1/users/{data['user_id']}"
    headers = {"Host": f"{SLUG}.localhost", "Authorization": f"Bearer {data['token']}"}
    status, body = benchlib.http_get(f"http://127.0.0.1:{port}{path}", headers)
    bare_status, bare_body = benchlib.http_get(f"http://127.0.0.1:{bare_port}{path}", headers)
    if status != 200 or bare_status != 200:
        msg = f"full stack answered {status}, bare app {bare_status}: {body[:300]!r} {bare_body[:300]!r}"
        raise RuntimeError(msg)
    full, bare = json.loads(body), json.loads(bare_body)
    if full["id"] != data["user_id"] or bare["id"] != data["user_id"] or set(full) != set(bare):
        msg = f"the two apps disagree: {full} vs {bare}"
        raise RuntimeError(msg)
    no_token, _ = benchlib.http_get(f"http://127.0.0.1:{port}{path}", {"Host": headers["Host"]})
    other_host, _ = benchlib.http_get(f"http://127.0.0.1:{port}{path}", headers | {"Host": "nobody.localhost"})
    if no_token != 401 or other_host != 404:
        msg = f"full stack checks look off: no token → {no_token} (want 401), unknown host → {other_host} (want 404)"
        raise RuntimeError(msg)


def run_wrk(url: str, headers: dict[str, str], *, seconds: int, connections: int, threads: int,
            save: Path | None = None) -> dict[str, Any]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
            "-s", str(LUA), url]
    env = os.environ | {"BENCH_HOST": headers["Host"], "BENCH_AUTH": headers.get("Authorization", "")}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    if save is not None:
        save.write_text(out)
    match = re.search(r"^BENCH_JSON (\{.*\})$", out, re.MULTILINE)
    if match is None:
        msg = f"no BENCH_JSON line in wrk's output:\n{out}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(match.group(1))
    errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    result["errors"] = errors
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["p50_ms"] = result["p50_us"] / 1000
    result["p99_ms"] = result["p99_us"] / 1000
    return result


def bench_http(env: benchlib.BenchEnv, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        msg = "wrk is not installed: apt-get update && apt-get install -y wrk (or `make bench`)"
        raise SystemExit(msg)
    path = f"/api/v1/users/{data['user_id']}"
    headers = {"Host": f"{SLUG}.localhost", "Authorization": f"Bearer {data['token']}"}
    environ = app_env(env, data)
    out_dir = benchlib.BENCH_DIR / "out"
    out_dir.mkdir(exist_ok=True)
    common = {"env": environ, "workers": args.workers, "worker_class": args.worker_class,
              "threads": args.threads, "probe_path": path, "probe_headers": headers}
    port, bare_port = benchlib.free_port(), benchlib.free_port()
    runs: dict[str, list[dict[str, Any]]] = {"full": [], "bare": []}
    with contextlib.ExitStack() as stack:
        threads = f", {args.threads} threads" if args.worker_class == "gthread" else ""
        log(f"Starting gunicorn ×2 ({args.workers} workers, {args.worker_class}{threads})…")
        procs = {
            "full": stack.enter_context(benchlib.gunicorn(
                "courtyard.wsgi:app", port=port, log_path=out_dir / "gunicorn-full.log", **common)),
            "bare": stack.enter_context(benchlib.gunicorn(
                "bare_app:app", port=bare_port, log_path=out_dir / "gunicorn-bare.log",
                extra=["--pythonpath", str(benchlib.BENCH_DIR)], **common)),
        }
        verify(port, bare_port, data)
        urls = {"full": f"http://127.0.0.1:{port}{path}", "bare": f"http://127.0.0.1:{bare_port}{path}"}
        for round_no in range(args.rounds):
            # Alternate which app goes first, so neither always gets the quieter half of the run.
            order = ("bare", "full") if round_no % 2 == 0 else ("full", "bare")
            for name in order:
                if args.warmup:
                    run_wrk(urls[name], headers, seconds=args.warmup, connections=args.connections,
                            threads=args.wrk_threads)
                app_cpu, db_cpu = benchlib.tree_cpu_s(procs[name].pid), benchlib.tree_cpu_s(env.pg_pid)
                result = run_wrk(urls[name], headers, seconds=args.duration, connections=args.connections,
                                 threads=args.wrk_threads, save=out_dir / f"wrk-{name}-round{round_no + 1}.txt")
                # CPU per request of the app's processes and of the (private) database server: unlike
                # req/s, these barely move when other work shares the machine.
                result["app_cpu_ms"] = (benchlib.tree_cpu_s(procs[name].pid) - app_cpu) * 1000 / result["requests"]
                result["db_cpu_ms"] = (benchlib.tree_cpu_s(env.pg_pid) - db_cpu) * 1000 / result["requests"]
                if result["errors"]:
                    msg = f"{name}: wrk counted {result['errors']} errors or non-2xx answers: {result}"
                    raise RuntimeError(msg)
                runs[name].append(result)
                log(f"  round {round_no + 1} {name:<4}: {result['rps']:8.0f} req/s   p50 {result['p50_ms']:6.2f} ms"
                    f"   p99 {result['p99_ms']:6.2f} ms   max {result['max_us'] / 1000:6.1f} ms"
                    f"   CPU/request: app {result['app_cpu_ms']:.2f} ms, db {result['db_cpu_ms']:.2f} ms")
    return runs


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    def med(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[name]))

    rps, bare_rps = med("full", "rps"), med("bare", "rps")
    # The ratio pairs the two runs of each round (measured back to back, so under similar background
    # load) and takes the median over rounds: steadier than a ratio of two independent medians.
    ratio = statistics.median(f["rps"] / b["rps"] for f, b in zip(runs["full"], runs["bare"], strict=True))
    cpu = statistics.median((b["app_cpu_ms"] + b["db_cpu_ms"]) / (f["app_cpu_ms"] + f["db_cpu_ms"])
                            for f, b in zip(runs["full"], runs["bare"], strict=True))
    return {"rps": round(rps, 1), "p50_ms": round(med("full", "p50_ms"), 2), "p99_ms": round(med("full", "p99_ms"), 2),
            "bare_rps": round(bare_rps, 1), "bare_p50_ms": round(med("bare", "p50_ms"), 2),
            "bare_p99_ms": round(med("bare", "p99_ms"), 2), "ratio": round(ratio, 3), "cpu_ratio": round(cpu, 3),
            "app_cpu_ms": round(med("full", "app_cpu_ms"), 3), "db_cpu_ms": round(med("full", "db_cpu_ms"), 3),
            "bare_app_cpu_ms": round(med("bare", "app_cpu_ms"), 3),
            "bare_db_cpu_ms": round(med("bare", "db_cpu_ms"), 3)}


# --------------------------------------------------------------------------- in-process profile


def _by_package(prof: cProfile.Profile) -> list[tuple[str, float]]:
    """Own (tottime) seconds summed per top-level package: courtyard's code, Flask, SQLAlchemy, …"""
    totals: dict[str, float] = {}
    ours = ("/platform/core/", "/platform/tenants/", "/platform/courtyard/")
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(prof).stats.items():
        if any(part in filename for part in ours):
            package = "courtyard (ours)"
        elif "site-packages/" in filename:
            package = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif filename.startswith(("~", "<")):
            package = "builtins"
        else:
            package = "stdlib"
        totals[package] = totals.get(package, 0.0) + tottime
    return sorted(totals.items(), key=lambda kv: -kv[1])[:14]


def profile(env: benchlib.BenchEnv, data: dict[str, Any], count: int, top: int) -> None:
    """CPU per request of both apps in this process, then where the full stack spends it."""
    environ = app_env(env, data)
    os.environ["BENCH_DATABASE_URL"] = environ["BENCH_DATABASE_URL"]
    os.environ["BENCH_SCHEMA"] = environ["BENCH_SCHEMA"]
    import bare_app
    from courtyard.app import create_app

    full = create_app(env.settings.with_overrides(var_dir=env.settings.var_dir / "app", log_json=True,
                                                  api_requests_per_minute=10**9))
    path = f"/api/v1/users/{data['user_id']}"
    headers = {"Host": f"{SLUG}.localhost", "Authorization": f"Bearer {data['token']}"}
    clients = {"full": full.test_client(), "bare": bare_app.app.test_client()}
    wall, cpu = {}, {}
    try:
        for name, client in clients.items():
            for _ in range(min(200, count)):  # warm: pools filled, caches compiled
                if client.get(path, headers=headers).status_code != 200:
                    msg = f"{name}: warm-up request failed"
                    raise RuntimeError(msg)
            started, started_cpu = time.perf_counter(), time.process_time()
            for _ in range(count):
                client.get(path, headers=headers)
            wall[name] = (time.perf_counter() - started) / count * 1000
            cpu[name] = (time.process_time() - started_cpu) / count * 1000
        # CPU time, not wall time: waiting for the database is not what this looks for.
        prof = cProfile.Profile(time.process_time)
        prof.enable()
        for _ in range(count):
            clients["full"].get(path, headers=headers)
        prof.disable()
    finally:
        full.extensions["courtyard"].db.engine.dispose()
        bare_app.engine.dispose()
    print(f"In-process, {count} requests each (test client, no HTTP server):")
    for name in ("full", "bare"):
        print(f"  {name:<4}: {wall[name]:.3f} ms wall, {cpu[name]:.3f} ms CPU per request")
    print(f"  CPU ratio bare / full: {cpu['bare'] / cpu['full']:.2f}")
    print("--- where the full stack's CPU goes, by package (own time) ---")
    for package, seconds in _by_package(prof):
        print(f"  {package:<16} {seconds / count * 1000:7.3f} ms per request")
    for sort in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(sort).print_stats(top)
        print(f"--- cProfile of the full stack, sorted by {sort} ---")
        print(buf.getvalue())


# --------------------------------------------------------------------------- main


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of load per app per round (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load before each (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="measurement rounds, order alternating (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for both apps (default 2)")
    parser.add_argument("--worker-class", default="sync",
                        help="gunicorn worker class (default sync: what `courtyard serve` runs behind a proxy)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (default 4)")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (default 4)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--var-dir", type=Path, default=None, help="embedded servers' data (default var/bench)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile N in-process requests instead of the HTTP benchmark")
    parser.add_argument("--top", type=int, default=35, help="rows of the profile to print (default 35)")
    args = parser.parse_args(argv)
    if not (1 <= args.duration <= 600 and 0 <= args.warmup <= 60 and 1 <= args.rounds <= 10
            and 1 <= args.workers <= 32 and 1 <= args.threads <= 64
            and 1 <= args.wrk_threads <= args.connections <= 1000 and 0 <= args.profile <= 1_000_000):
        parser.error("an option is out of range")

    with benchlib.bench_env(args.var_dir) as env:
        log(f"Database {env.database} ({'embedded, var/bench' if env.embedded else 'configured server'})")
        engine_measured = env.engine
        data = seed(env.database_url)
        if args.profile:
            print(f"Engine: {engine_measured}")
            profile(env, data, args.profile, args.top)
            return 0
        runs = bench_http(env, data, args)

    summary = summarise(runs)
    print(f"Engine: {engine_measured}")
    print(f"GET /api/v1/users/<id>: gunicorn {args.workers} × {args.worker_class}"
          f"{f' ({args.threads} threads)' if args.worker_class == 'gthread' else ''}, "
          f"wrk {args.connections} connections, {args.duration} s × {args.rounds} round(s), loopback")
    print(f"  full stack   {summary['rps']:8.0f} req/s   p50 {summary['p50_ms']:6.2f} ms"
          f"   p99 {summary['p99_ms']:6.2f} ms"
          f"   target p99 <= {TARGET_P99_MS:.0f} ms: {mark(summary['p99_ms'] <= TARGET_P99_MS)}")
    print(f"  bare Flask   {summary['bare_rps']:8.0f} req/s   p50 {summary['bare_p50_ms']:6.2f} ms"
          f"   p99 {summary['bare_p99_ms']:6.2f} ms")
    print(f"  ratio full / bare throughput (median of per-round ratios): {summary['ratio']:.2f}   "
          f"target >= {TARGET_RATIO:.2f}: {mark(summary['ratio'] >= TARGET_RATIO)}")
    print(f"  CPU per request (app + db): full {summary['app_cpu_ms']:.2f} + {summary['db_cpu_ms']:.2f} ms, "
          f"bare {summary['bare_app_cpu_ms']:.2f} + {summary['bare_db_cpu_ms']:.2f} ms; ratio bare / full "
          f"{summary['cpu_ratio']:.2f} (what the throughput ratio tends to when the CPUs are the limit)")
    print(json.dumps({k: summary[k] for k in ("rps", "p99_ms", "bare_rps", "bare_p99_ms", "ratio", "cpu_ratio")}
                     | {"engine": engine_measured}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
