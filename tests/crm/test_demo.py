"""The demo company is made through the record services and shows every role's scope."""

from __future__ import annotations

from sqlalchemy import func, select

from crm.accounts.models import Customer
from crm.workspace import demo
from tests.conftest import provision


def test_demo_company_has_people_in_every_role_and_scoped_data(db):
    tenant, _admin = provision(db, "demo-co", name="Demo Co")
    with db.transaction(tenant) as s:
        counts = demo.populate(s, "demo-co", password="courtyard-demo", customers=12)
        assert counts["customers"] == 12
        assert counts["contacts"] >= 12
        assert counts["activities"] >= 12
        owners = s.scalar(select(func.count(func.distinct(Customer.owner_id))))
        assert owners >= 4  # the reps and the manager own customers: data scopes show
