"""WSGI entry point for gunicorn: ``gunicorn courtyard.wsgi:app``."""

from __future__ import annotations

from core.logs import configure_logging
from courtyard.app import create_app
from courtyard.celery_app import configure_task_runtime, make_celery
from courtyard.runtime import check_redis_memory_policy, make_redis, resolved_settings

_settings, _services = resolved_settings()
configure_logging(json_lines=_settings.log_json)
make_celery(_settings)
configure_task_runtime(_settings)
_redis = make_redis(_settings.redis_url or "")
check_redis_memory_policy(_redis)
app = create_app(_settings, redis=_redis)
