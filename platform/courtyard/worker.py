"""Celery entry point: ``celery -A courtyard.worker worker`` (what `courtyard worker` runs)."""

from __future__ import annotations

from courtyard.celery_app import worker_app

app = worker_app()
