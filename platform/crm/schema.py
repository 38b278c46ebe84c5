"""Every CRM model, imported for its side effect on ``TenantBase.metadata``, and the tenant seed hook.

A tenant schema is created from the metadata (tenants.services.create_schema); the composition root
(courtyard) imports this module so that the metadata holds the CRM's tables before any schema is made.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.i18n import _l
from crm.accounts import models as accounts_models
from crm.activities import models as activities_models
from crm.activities import services as activities_services
from crm.activities import timeline as activities_timeline
from crm.records import archive_checks, attachments, definitions, import_jobs, preferences, seeds
from crm.records import models as records_models
from crm.records import permissions as records_permissions
from tenants import services as tenant_services
from tenants.archive import refuse as archive_refuse
from tenants.archive import row_check

#: Imported for what they register: tables, permissions, timeline sources, task rules, row checks.
MODULES = (records_models, records_permissions, attachments, preferences, accounts_models, activities_models,
           activities_services, activities_timeline, import_jobs)


def seed_tenant(session: Session) -> None:
    """A new tenant's starting data: the dictionaries."""
    definitions.seed(session, seeds.DICTIONARIES)


tenant_services.PROVISION_HOOKS.append(seed_tenant)
archive_checks.register()


@row_check("customer_relations")
def _customer_relations(session: Session) -> None:
    kinds = {c.value for c in accounts_models.RELATION_KINDS}
    for row in session.scalars(select(accounts_models.CustomerRelation)):
        if row.kind not in kinds or row.from_id == row.to_id:
            raise archive_refuse("customer_relations", row.id, "kind",
                                 _l("not a relationship the application records."))
