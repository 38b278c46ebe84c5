"""The composition root: app factory, WSGI entry, Celery app and the `courtyard` CLI."""
