"""A tenant with an org chart for CRM tests: two sales reps in one department, a manager above them,
a rep in another branch, and the admin; each as a Viewer the record services take."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from core.db import Database
from core.permissions import Actor
from core.tenancy import BoundTenant
from crm.records.scope import Viewer, viewer_for
from tenants import services
from tenants.models import Department, User
from tests.tenants.test_cli import cli, cli_env  # noqa: F401 - the CLI tests' fixtures, for crm commands


@dataclass
class Org:
    tenant: BoundTenant
    admin: uuid.UUID
    manager: uuid.UUID
    rep_a: uuid.UUID
    rep_b: uuid.UUID
    rep_far: uuid.UUID
    sales_dept: uuid.UUID
    east_dept: uuid.UUID
    far_dept: uuid.UUID


def make_org(db: Database, tenant: BoundTenant, admin_id: uuid.UUID) -> Org:
    with db.transaction(tenant) as s:
        system = Actor.system("test")
        head = Department(name="销售部 Sales")
        s.add(head)
        s.flush()
        east = Department(name="华东区 East", parent_id=head.id)
        far = Department(name="华南区 South", parent_id=None)
        s.add_all([east, far])
        s.flush()
        ids = {}
        for key, name, role, dept in (("manager", "Manager 王经理", "manager", head.id),
                                      ("rep_a", "Rep A 张三", "sales", east.id),
                                      ("rep_b", "Rep B 李四", "sales", east.id),
                                      ("rep_far", "Rep Far 赵六", "sales", far.id)):
            user = services.create_user(s, system, email=f"{key}@{tenant.slug}.test", name=name, role=role,
                                        department_id=dept)
            ids[key] = user.id
        s.flush()
        return Org(tenant, admin_id, ids["manager"], ids["rep_a"], ids["rep_b"], ids["rep_far"], head.id, east.id,
                   far.id)


@pytest.fixture
def org(db: Database) -> Org:
    from tests.conftest import provision

    tenant, admin_id = provision(db, "acme", name="Acme 艾克米")
    return make_org(db, tenant, admin_id)


@pytest.fixture
def tsession(db: Database, org: Org) -> Iterator[object]:
    s = db.session(org.tenant)
    yield s
    s.close()


def as_user(session: object, user_id: uuid.UUID, locale: str = "en") -> Viewer:
    user = session.get(User, user_id)  # type: ignore[attr-defined]
    actor = services.actor_for(user)
    return viewer_for(session, actor, locale=locale)  # type: ignore[arg-type]
