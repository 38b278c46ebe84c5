"""Test fixtures: real PostgreSQL and Redis, one database per xdist worker, a savepoint per test.

Servers: the embedded ones under var/test/ (or COURTYARD_DATABASE_URL / COURTYARD_REDIS_URL when set),
or, under `make test-citus`, a Citus cluster (COURTYARD_TEST_CITUS, see tests/citus/cluster.py).
Each worker gets its own database (migrated once) and its own Redis db number. Most tests run inside
one outer transaction that is rolled back, with every session the app opens joining it through a
savepoint; tests that need real commits (CLI, live server, fleet migration) use `committed_db` and
clean up what they made.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from redis import Redis
from sqlalchemy import Engine, text

from core.db import Database, make_engine
from core.permissions import Actor
from core.settings import Settings, project_root
from core.tasks import TaskRuntime, configure_tasks, task_runtime
from courtyard import citus
from courtyard.app import create_app
from courtyard.celery_app import make_celery
from courtyard.runtime import ensure_services, start_redis
from tenants import migrator, services

TEST_VAR = project_root() / "var" / "test"
# Set by `make test-citus` (tests/citus/cluster.py): the suite then runs on a Citus cluster.
CITUS_ENV = "COURTYARD_TEST_CITUS"
# tests/citus/ holds what only a Citus cluster can show; `make test` does not collect it at all
# (rather than skipping it), `make test-citus` runs it with everything else.
collect_ignore = [] if CITUS_ENV in os.environ else ["citus"]
PASSWORD = "correct horse battery"
# The live server and Chromium fixtures of the browser tests (tests/browser.py).
pytest_plugins = ["tests.browser"]


def _worker_index(worker_id: str) -> int:
    return 0 if worker_id == "master" else int(worker_id.removeprefix("gw"))


@pytest.fixture(scope="session")
def servers(worker_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    env = Settings.from_env()
    # A database of this worker's own, named uniquely so that concurrent runs never drop each other's.
    db_name = f"courtyard_test_{worker_id}_{uuid.uuid4().hex[:8]}"
    # Redis: a private embedded server per worker (flushing it cannot disturb anyone else), or a db
    # number of the configured server.
    redis_handle = None
    if env.redis_url is None:
        redis_handle, redis_url = start_redis(tmp_path_factory.mktemp("redis"))
    else:
        redis_url = _with_redis_db(env.redis_url, _worker_index(worker_id) + 1)
    try:
        if CITUS_ENV in os.environ:
            with _citus_database(db_name) as db_url:
                yield db_url, redis_url
        else:
            with _plain_database(env, db_name) as db_url:
                yield db_url, redis_url
    finally:
        if redis_handle is not None:
            redis_handle.shutdown()


@contextlib.contextmanager
def _plain_database(env: Settings, db_name: str) -> Iterator[str]:
    """One PostgreSQL server for all runs (embedded under var/test/ unless configured)."""
    running = ensure_services(env.with_overrides(var_dir=TEST_VAR, redis_url=env.redis_url or "redis://unused"))
    admin_url = _with_database(running.database_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    try:
        yield _with_database(running.database_url, db_name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@contextlib.contextmanager
def _citus_database(db_name: str) -> Iterator[str]:
    """`make test-citus`: the database on every node of the cluster, the suite connected as the
    application's ordinary role (docs/scaling.md); the superuser only makes and drops databases."""
    conf = json.loads(os.environ[CITUS_ENV])
    cluster = citus.discover(conf["admin_url"])
    assert cluster is not None, f"{CITUS_ENV} names a server without Citus"
    citus.create_database(cluster, db_name, owner=conf["role"])
    try:
        node = cluster.coordinator
        yield f"postgresql://{conf['role']}:{conf['password']}@{node.host}:{node.port}/{db_name}"
    finally:
        citus.drop_database(cluster, db_name)


def _with_redis_db(url: str, number: int) -> str:
    """The URL with its database number replaced (``redis://h:6379/0`` → ``redis://h:6379/3``)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":  # a socket path: the number goes in the query
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(number))]
        return f"unix://{parts.path}?{urlencode(query)}"  # urlunsplit would drop the empty authority's //
    return urlunsplit(parts._replace(path=f"/{number}"))


def _with_database(url: str, name: str) -> str:
    """Swap the database name in a libpq URL (``postgresql://u@/db?host=/sock`` or ``…@host:port/db``)."""
    head, sep, query = url.partition("?")
    scheme_host, _, _db = head.rpartition("/")
    return f"{scheme_host}/{name}{sep}{query}"


@pytest.fixture(scope="session")
def settings(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    db_url, redis_url = servers
    var_dir = tmp_path_factory.mktemp("var")
    return Settings(var_dir=Path(var_dir), database_url=db_url, redis_url=redis_url, secret_key="test-secret",
                    base_domain="localhost", log_json=True)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    assert settings.database_url is not None
    # The web app's limits: the suite runs under the timeouts production requests have.
    eng = make_engine(settings.database_url, pool_size=5, max_overflow=20, timeouts=settings.app_timeouts)
    migrator.upgrade_shared(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> Redis:
    assert settings.redis_url is not None
    return Redis.from_url(settings.redis_url)


@pytest.fixture(scope="session")
def celery_app(settings: Settings):
    return make_celery(settings, eager=True)


@pytest.fixture(scope="session")
def app(settings: Settings, engine: Engine, redis_client: Redis, celery_app: object):
    application = create_app(settings, engine=engine, redis=redis_client)
    application.config["TESTING"] = True
    # Tasks run eagerly in this process; outside a `db` test they use the real engine, as the app does.
    configure_tasks(TaskRuntime(db=application.extensions["courtyard"].db,
                                mailer=application.extensions["courtyard"].mailer, settings=settings))
    return application


@pytest.fixture
def connection(engine: Engine) -> Iterator[object]:
    conn = engine.connect()
    outer = conn.begin()
    yield conn
    outer.rollback()
    conn.close()


@pytest.fixture
def db(app, connection, settings: Settings, redis_client: Redis) -> Iterator[Database]:
    """The test's Database: every session (requests, tasks, services) joins the rolled-back transaction."""
    database = Database(app.extensions["courtyard"].db.engine, connection=connection)
    previous, previous_tasks = app.extensions["courtyard"].db, task_runtime()
    app.extensions["courtyard"].db = database
    configure_tasks(TaskRuntime(db=database, mailer=app.extensions["courtyard"].mailer, settings=settings))
    redis_client.flushdb()
    yield database
    # Put both back: a later test must not send tasks into this test's closed connection.
    app.extensions["courtyard"].db = previous
    configure_tasks(previous_tasks)


@pytest.fixture
def session(db: Database) -> Iterator[object]:
    s = db.session()
    yield s
    s.close()


@pytest.fixture
def client(app, db):
    return app.test_client()


def provision(db: Database, slug: str, *, name: str | None = None, email: str | None = None):
    with db.transaction() as s:
        result = services.provision(s, Actor.system("test"), slug=slug, name=name or slug.title(),
                                    admin_email=email or f"admin@{slug}.test", admin_password=PASSWORD)
        return services.bound(result.tenant), result.admin.id


@pytest.fixture
def tenant(db: Database):
    return provision(db, "acme", name="Acme 艾克米")[0]


@pytest.fixture
def other_tenant(db: Database):
    return provision(db, "globex", name="Globex 环球")[0]


def host(slug: str) -> dict[str, str]:
    return {"Host": f"{slug}.localhost"}


def sign_in(client, slug: str, email: str | None = None, password: str = PASSWORD):
    """Sign in through the real form (CSRF token included) on the tenant's host."""
    page = client.get("/sign-in", headers=host(slug))
    token = _csrf_from(page.get_data(as_text=True))
    return client.post("/sign-in", headers=host(slug), data={
        "email": email or f"admin@{slug}.test", "password": password, "csrf_token": token})


def _csrf_from(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start: html.index('"', start)]


def csrf_of(client, slug: str) -> str:
    return _csrf_from(client.get("/home", headers=host(slug)).get_data(as_text=True))


@pytest.fixture
def committed_db(engine: Engine) -> Iterator[Database]:
    """A Database that really commits; tenants it creates are dropped afterwards."""
    with engine.connect() as conn:
        before = {r[0] for r in conn.execute(text("SELECT id FROM shared.tenants"))}
    yield Database(engine)
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT id FROM shared.tenants")).all()
        for (tid,) in rows:
            if tid not in before:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "t_{tid.hex}" CASCADE')
                conn.execute(text("DELETE FROM shared.tenants WHERE id = :id"), {"id": tid})
                conn.execute(text("DELETE FROM shared.task_outbox WHERE tenant_id = :id"), {"id": tid})


def unique_slug(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
