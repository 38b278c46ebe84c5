"""Every CRM model, imported for its side effect on ``TenantBase.metadata``, and the tenant seed hook.

A tenant schema is created from the metadata (tenants.services.create_schema); the composition root
(courtyard) imports this module so that the metadata holds the CRM's tables before any schema is made.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from crm.accounts import models as accounts_models
from crm.activities import models as activities_models
from crm.activities import timeline as activities_timeline
from crm.records import attachments, definitions, import_jobs, seeds
from crm.records import models as records_models
from crm.records import permissions as records_permissions
from tenants import services as tenant_services

MODULES = (records_models, records_permissions, attachments, accounts_models, activities_models,
           activities_timeline, import_jobs)


def seed_tenant(session: Session) -> None:
    """A new tenant's starting data: the dictionaries."""
    definitions.seed(session, seeds.DICTIONARIES)


tenant_services.PROVISION_HOOKS.append(seed_tenant)
