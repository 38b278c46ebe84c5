"""The `courtyard` command: the platform's processes and its operator commands."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo, routes_command

from core.db import make_engine
from core.errors import ConfigError
from core.logs import configure_logging
from core.permissions import Actor
from core.settings import Settings
from crm.records.cli import COMMANDS as CRM_COMMANDS
from tenants import services
from tenants.cli import COMMANDS, CliRuntime

DEMO_TENANTS = (
    ("acme", "Acme Trading Co. 艾克米贸易", "admin@acme.test"),
    ("globex", "Globex 环球科技", "admin@globex.test"),
)
DEMO_PASSWORD = "courtyard-demo"  # noqa: S105 - printed for the demo on purpose


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _resolved() -> tuple[Any, Settings]:
    from courtyard.runtime import resolved_settings

    settings, services_ = resolved_settings(_settings())
    # Keep the embedded servers' handles alive as long as this process needs them.
    _HANDLES.append(services_)
    assert settings.database_url is not None
    return make_engine(settings.database_url, pool_size=8, max_overflow=8, timeouts=settings.cli_timeouts), settings


_HANDLES: list[Any] = []


def _create_app(runtime: CliRuntime) -> Flask:
    from courtyard.app import create_app

    engine = runtime.engine
    return create_app(runtime.settings, engine=engine)


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Courtyard: a hosted CRM platform, one PostgreSQL schema per tenant.

    With no COURTYARD_DATABASE_URL / COURTYARD_REDIS_URL, embedded PostgreSQL and Redis are started
    under var/ as needed.
    """
    # ctx.meta is shared by every context of this invocation: sub-commands find the runtime there.
    runtime = CliRuntime(_resolved)
    ctx.meta["courtyard_runtime"] = runtime
    ctx.call_on_close(runtime.close)


for command in (*COMMANDS, *CRM_COMMANDS):
    main.add_command(command)


@main.command("routes")
@click.option("--sort", "-s", type=click.Choice(("endpoint", "methods", "domain", "rule", "match")),
              default="endpoint", help="Sort order (as Flask's `flask routes`).")
@click.option("--all-methods", is_flag=True, help="Show HEAD and OPTIONS too.")
def routes(sort: str, all_methods: bool) -> None:
    """Print the URL map, as Flask's `routes` command prints it."""
    runtime: CliRuntime = click.get_current_context().meta["courtyard_runtime"]
    info = ScriptInfo(create_app=lambda: _create_app(runtime), set_debug_flag=False, load_dotenv_defaults=False)
    with click.Context(routes_command, obj=info) as ctx:
        ctx.invoke(routes_command, sort=sort, all_methods=all_methods)


# --------------------------------------------------------------------------- the task outbox


@main.group()
def outbox() -> None:
    """The task outbox: what waits for the broker, and dead letters (tasks that kept failing)."""


def _outbox_db() -> Any:
    runtime: CliRuntime = click.get_current_context().meta["courtyard_runtime"]
    return runtime.db


def _when(value: Any) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


@outbox.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def outbox_status(as_json: bool) -> None:
    """Rows waiting for the broker, how many of them are failing, and the number of dead letters."""
    from core import tasks

    with _outbox_db().transaction() as session:
        status = tasks.outbox_status(session)
    status["oldest"] = _when(status["oldest"])
    if as_json:
        click.echo(json.dumps(status))
        return
    click.echo(f"waiting: {status['waiting']} (failing: {status['failing']}, oldest: {status['oldest'] or '-'})")
    click.echo(f"dead letters: {status['dead_letters']}")


@outbox.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def outbox_list(limit: int, as_json: bool) -> None:
    """Dead letters, most recent first (their arguments stay sealed: they can hold links and secrets)."""
    from core import tasks

    with _outbox_db().transaction() as session:
        rows = [{"id": str(r.id), "task": r.task, "tenant_id": str(r.tenant_id) if r.tenant_id else None,
                 "attempts": r.attempts, "created_at": _when(r.created_at), "died_at": _when(r.died_at),
                 "last_error": r.last_error} for r in tasks.dead_letters(session, limit)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("No dead letters.")
    for row in rows:
        click.echo(f"{row['id']}  {row['task']}  tenant={row['tenant_id'] or '-'}  attempts={row['attempts']}  "
                   f"died={row['died_at']}\n    {row['last_error'] or ''}")


def _dead_ids(ids: tuple[uuid.UUID, ...], everything: bool) -> list[uuid.UUID] | None:
    if bool(ids) == everything:
        raise click.UsageError("Name dead letters by id, or pass --all (not both).")
    return None if everything else list(ids)


def _on_dead(action: Callable[[Any, list[uuid.UUID] | None], int], ids: list[uuid.UUID] | None) -> int:
    from core.tasks import UnknownDeadLetters

    try:
        with _outbox_db().transaction() as session:
            return action(session, ids)
    except UnknownDeadLetters as exc:
        shown = ", ".join(map(str, exc.missing[:10])) + (" …" if len(exc.missing) > 10 else "")
        raise click.ClickException(f"Not dead letters (nothing was changed): {shown}") from None


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=click.UUID)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
def outbox_retry(ids: tuple[uuid.UUID, ...], everything: bool) -> None:
    """Put dead letters back into the outbox (attempts start again); the relay's next run sends them."""
    from core.tasks import retry_dead

    count = _on_dead(retry_dead, _dead_ids(ids, everything))
    click.echo(f"{count} dead letter(s) put back into the outbox.")


@outbox.command("drop")
@click.argument("ids", nargs=-1, type=click.UUID)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def outbox_drop(ids: tuple[uuid.UUID, ...], everything: bool, yes: bool) -> None:
    """Delete dead letters for good: their tasks will never run."""
    from core.tasks import drop_dead

    chosen = _dead_ids(ids, everything)
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException("Refusing to drop without confirmation: pass --yes.")
        click.confirm("Drop these dead letters for good?", abort=True)
    count = _on_dead(drop_dead, chosen)
    click.echo(f"{count} dead letter(s) dropped.")


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["COURTYARD_DATABASE_URL"] = settings.database_url or ""
    env["COURTYARD_REDIS_URL"] = settings.redis_url or ""
    env["COURTYARD_VAR_DIR"] = str(settings.var_dir)
    env["COURTYARD_SECRET_KEY"] = settings.secret_key
    return env


def _run_child(argv: list[str], settings: Settings) -> int:
    """Run a server process in the foreground and pass SIGTERM/SIGINT on to it.

    Exiting normally (not by the default SIGTERM action) lets this process release the embedded
    servers it started, so stopping `courtyard worker` stops its PostgreSQL too when it is the last user.
    """
    child = subprocess.Popen(argv, env=_child_env(settings))  # noqa: S603

    def forward(signum: int, _frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return child.wait()


def _gunicorn_argv(settings: Settings, bind: str, workers: int, worker_class: str = "gthread") -> list[str]:
    threads = ["--threads", "4"] if worker_class == "gthread" else []
    return [sys.executable, "-m", "gunicorn", "courtyard.wsgi:app", "--bind", bind, "--workers", str(workers),
            "--worker-class", worker_class, *threads, "--graceful-timeout", "10",
            "--forwarded-allow-ips", "127.0.0.1"]


@main.command()
@click.option("--bind", default=None, help="host:port (default 0.0.0.0:$COURTYARD_PORT or 8000).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes.")
@click.option("--worker-class", type=click.Choice(("gthread", "sync")), default="gthread", show_default=True,
              help="sync suits a buffering proxy in front (less CPU per request); gthread serves browsers directly.")
def serve(bind: str | None, workers: int | None, worker_class: str) -> None:
    """Serve the web app and API with gunicorn."""
    _engine, settings = _resolved()
    argv = _gunicorn_argv(settings, bind or f"0.0.0.0:{settings.port}", workers or settings.web_workers,
                          worker_class)
    sys.exit(_run_child(argv, settings))


@main.command()
@click.option("--concurrency", "-c", type=click.IntRange(1, 64), default=2, show_default=True)
def worker(concurrency: int) -> None:
    """Run a Celery worker for background tasks (mail, later CRM jobs)."""
    _engine, settings = _resolved()
    argv = [sys.executable, "-m", "celery", "-A", "courtyard.worker", "worker",
            "--loglevel", "INFO", "--concurrency", str(concurrency), "--without-gossip", "--without-mingle"]
    sys.exit(_run_child(argv, settings))


@main.command()
def beat() -> None:
    """Run Celery beat (periodic tasks); its schedule file lives under var/."""
    _engine, settings = _resolved()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "celery", "-A", "courtyard.worker", "beat", "--loglevel", "INFO",
            "--schedule", str(settings.var_dir / "celerybeat-schedule")]
    sys.exit(_run_child(argv, settings))


def ensure_demo(engine: Any) -> list[tuple[str, str, str]]:
    """Create the demo tenants once; running it again changes nothing."""
    from core.db import Database, bind_tenant
    from crm.workspace import demo as demo_data

    created = []
    db = Database(engine)
    for slug, name, email in DEMO_TENANTS:
        with db.transaction() as session:
            if services.find_tenant(session, slug) is not None:
                continue
            made = services.provision(session, Actor.system("demo"), slug=slug, name=name, admin_email=email,
                                      admin_password=DEMO_PASSWORD, admin_name="Demo Admin 演示管理员")
            # The CRM's demo company: acme is the full one, globex a small one (isolation shows).
            demo_data.populate(bind_tenant(session, services.bound(made.tenant)), slug, password=DEMO_PASSWORD,
                               customers=500 if slug == "acme" else 40)
            created.append((slug, name, email))
    return created


@main.command()
def demo() -> None:
    """Create the demo tenants acme and globex, each with an admin (idempotent)."""
    from tenants import migrator

    engine, settings = _resolved()
    migrator.upgrade_shared(engine, migrator.lock_policy(settings))
    created = ensure_demo(engine)
    for slug, _name, email in created:
        click.echo(f"Created {slug}: {email} / {DEMO_PASSWORD}")
    if not created:
        click.echo("Demo tenants already exist.")


@main.command()
@click.option("--port", type=int, default=None, help="Web port (default $COURTYARD_PORT or 8000).")
def up(port: int | None) -> None:
    """Everything `make run` needs: servers, migrations, demo data, web, worker and beat. Ctrl-C stops all."""
    from courtyard.runtime import WEB_READY_TIMEOUT_S, wait_until_answering
    from tenants import migrator

    configure_logging(json_lines=False)
    engine, settings = _resolved()
    port = port or settings.port
    click.echo("Migrating…")
    policy = migrator.lock_policy(settings)
    migrator.upgrade_shared(engine, policy)
    report = migrator.migrate_fleet(engine, workers=4, policy=policy)
    if report.failed:
        click.echo(f"{len(report.failed)} tenant(s) failed to migrate; see `courtyard migrate`.", err=True)
    ensure_demo(engine)
    engine.dispose()
    env = _child_env(settings)
    procs = [
        subprocess.Popen(_gunicorn_argv(settings, f"0.0.0.0:{port}", settings.web_workers), env=env),  # noqa: S603
        subprocess.Popen([sys.executable, "-m", "courtyard.cli", "worker"], env=env),
        subprocess.Popen([sys.executable, "-m", "courtyard.cli", "beat"], env=env),
    ]
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        # "running" only once the web server answers: a started gunicorn is still importing the app.
        web = procs[0]
        click.echo("Starting the web server…")
        if not wait_until_answering(f"http://127.0.0.1:{port}/healthz",
                                    alive=lambda: web.poll() is None and not stopping):
            if not stopping:
                click.echo(f"The web server did not answer on port {port} within {WEB_READY_TIMEOUT_S:.0f} s "
                           "(see its output above); stopping.", err=True)
                sys.exit(1)
            return
        click.echo(_running_banner(settings, port))
        while not stopping:
            if any(p.poll() is not None for p in procs):
                click.echo("A process exited; stopping the others.", err=True)
                break
            time.sleep(0.5)
    finally:
        _stop(procs)
        click.echo("Stopped.")


def _running_banner(settings: Settings, port: int) -> str:
    base = settings.base_domain
    return f"""
Courtyard is running.
  Public site and sign-up:  http://{base}:{port}/
  Demo workspaces:          http://acme.{base}:{port}/   or  http://{base}:{port}/t/acme/
                            http://globex.{base}:{port}/ or  http://{base}:{port}/t/globex/
  Demo logins:              admin@acme.test / {DEMO_PASSWORD}
                            admin@globex.test / {DEMO_PASSWORD}
                            acme's staff (same password): wang.jingli@acme.test (manager),
                            zhang.wei@acme.test (sales), chen.jing@acme.test (service)
  API docs:                 http://acme.{base}:{port}/api/v1/docs
  Mail without SMTP:        {settings.outbox_dir}/
Press Ctrl-C to stop."""


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def run() -> None:
    """The console script: unreachable servers are reported in one line, not a traceback."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    try:
        main(prog_name="courtyard")
    except (OperationalError, psycopg.OperationalError) as exc:
        orig = getattr(exc, "orig", exc)
        reason = str(orig).strip().splitlines()[0]
        if isinstance(orig, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
            # A limit of COURTYARD_CLI_*_TIMEOUT_MS, not an unreachable server.
            click.echo(f"Error: the database gave up: {reason}", err=True)
        else:
            click.echo(f"Error: cannot reach the database: {reason}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
