"""The Celery app: broker and results in Redis, tasks from every domain, beat schedule."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_process_init

from core.db import Database, make_engine
from core.logs import configure_logging, task_id_var
from core.mail import make_mailer
from core.settings import Settings
from core.storage import storage_from_settings
from core.tasks import RELAY_AFTER_S, TaskRuntime, configure_tasks
from courtyard.runtime import celery_redis_url, check_redis_memory_policy, make_redis

TASK_MODULES = ["core.tasks", "tenants.tasks", "crm.records.import_jobs"]


def make_celery(settings: Settings, *, eager: bool = False) -> Celery:
    assert settings.redis_url is not None
    broker = celery_redis_url(settings.redis_url)
    app = Celery("courtyard", broker=broker, backend=broker, include=TASK_MODULES)
    app.conf.update(
        task_always_eager=eager,
        task_eager_propagates=True,
        task_acks_late=True,              # a task killed mid-run is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Courtyard configures logging itself (JSON lines with task_id and tenant).
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        # Publishing: one quick retry, then give up. A request must not wait out a broker outage (kombu's
        # default retries for ~6 s); what it queued is safe in the outbox and the relay sends it later.
        # Timeouts: a Redis that accepts connections but never answers would otherwise hold a request
        # forever after its commit.
        broker_transport_options={"visibility_timeout": 3600, "max_retries": 1, "interval_start": 0,
                                  "interval_step": 0.2, "interval_max": 0.5,
                                  "socket_timeout": 5, "socket_connect_timeout": 2},
        timezone="UTC",
        beat_schedule={
            "purge-expired-tokens": {"task": "tenants.purge_expired_tokens", "schedule": 3600.0},
            # Tasks whose hand-over to the broker failed after their commit (crash, broker outage).
            "relay-task-outbox": {"task": "core.relay_outbox", "schedule": float(RELAY_AFTER_S)},
        },
    )
    app.set_default()
    return app


def configure_task_runtime(settings: Settings, db: Database | None = None) -> None:
    assert settings.database_url is not None
    configure_tasks(TaskRuntime(
        db=db or Database(make_engine(settings.database_url, pool_size=2, max_overflow=4,
                                         timeouts=settings.app_timeouts)),
        mailer=make_mailer(settings.smtp_url, settings.outbox_dir, settings.mail_from),
        settings=settings,
        storage=storage_from_settings(settings),
    ))


def worker_app() -> Celery:
    """The app `courtyard worker` and `courtyard beat` run (through courtyard.worker)."""
    from courtyard.runtime import resolved_settings

    settings, _services = resolved_settings()
    configure_logging(json_lines=settings.log_json)
    app = make_celery(settings)

    @setup_logging.connect
    def _logging(**_: Any) -> None:
        # Connecting this signal stops Celery from replacing our handlers with its own format.
        configure_logging(json_lines=settings.log_json)

    @worker_process_init.connect
    def _init(**_: Any) -> None:
        # Engines must be created after the fork: a pooled connection cannot cross processes.
        configure_task_runtime(settings)

    configure_task_runtime(settings)
    assert settings.redis_url is not None
    check_redis_memory_policy(make_redis(settings.redis_url))
    return app


@task_prerun.connect
def _bind_task_log(task_id: str | None = None, **_: Any) -> None:
    task_id_var.set(task_id)


@task_postrun.connect
def _unbind_task_log(**_: Any) -> None:
    task_id_var.set(None)
