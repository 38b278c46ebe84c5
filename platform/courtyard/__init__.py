"""The composition root: app factory, WSGI entry, Celery app and the `courtyard` CLI."""

# The CRM's tables must be in the tenant metadata (and its seed hook registered) before anything here
# creates a tenant schema: every entry point (app, CLI, worker) imports this package first.
import crm.schema  # noqa: F401
