"""The record foundation through its services: lifecycle, data scope, numbers, duplicates, merge, transfer."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.errors import NotFound, PermissionDenied, PreconditionFailed, ValidationFailed
from crm.accounts.models import CONTACTS, CUSTOMERS
from crm.activities.models import TASKS
from crm.records import lists, services
from crm.records.models import NumberFormat
from tenants.models import AuditEntry
from tests.crm.conftest import as_user


def names(rows):
    return sorted(r.name for r in rows)


def list_of(session, viewer, ent, params=()):
    from crm.records import definitions

    fields = definitions.fields(session, ent)
    lq = lists.parse(list(params), fields, ent)
    return lists.page(session, ent, viewer, lq, fields).rows


def test_create_validates_every_field_at_once_and_writes_nothing(tsession, org):
    rep = as_user(tsession, org.rep_a)
    with pytest.raises(ValidationFailed) as exc:
        services.create(tsession, rep, CUSTOMERS, {"name": "", "email": "not-mail", "phone": "abc",
                                                   "region": "atlantis", "nope": 1})
    errors = exc.value.field_errors
    assert set(errors) == {"name", "email", "phone", "region", "nope"}
    assert list_of(tsession, rep, CUSTOMERS) == []


def test_numbers_follow_the_tenant_format(tsession, org):
    rep = as_user(tsession, org.rep_a)
    first = services.create(tsession, rep, CUSTOMERS, {"name": "北京华为"})
    second = services.create(tsession, rep, CUSTOMERS, {"name": "上海电气"})
    assert first.number.startswith("KH-")
    assert first.number.endswith("-00001")
    assert second.number.endswith("-00002")
    tsession.add(NumberFormat(entity="contacts", pattern="C{yy}{mm}-{seq:03}"))
    tsession.flush()
    contact = services.create(tsession, rep, CONTACTS, {"name": "王小明", "customer_id": str(first.id)})
    assert contact.number.endswith("-001")
    assert contact.number.startswith("C")


def test_data_scope_own_department_subtree_and_shares(tsession, org):
    a, b = as_user(tsession, org.rep_a), as_user(tsession, org.rep_b)
    manager, far = as_user(tsession, org.manager), as_user(tsession, org.rep_far)
    admin = as_user(tsession, org.admin)
    mine = services.create(tsession, a, CUSTOMERS, {"name": "A's customer 甲"})
    services.create(tsession, b, CUSTOMERS, {"name": "B's customer 乙"})
    services.create(tsession, far, CUSTOMERS, {"name": "Far customer 丙"})
    assert names(list_of(tsession, a, CUSTOMERS)) == ["A's customer 甲"]
    assert names(list_of(tsession, b, CUSTOMERS)) == ["B's customer 乙"]
    # The manager's department is above East: the subtree scope sees both reps, not the far branch.
    assert names(list_of(tsession, manager, CUSTOMERS)) == ["A's customer 甲", "B's customer 乙"]
    assert len(list_of(tsession, admin, CUSTOMERS)) == 3
    # B cannot learn that A's record exists, not even by id.
    with pytest.raises(NotFound):
        services.get(tsession, b, CUSTOMERS, mine.id)
    services.share(tsession, a, CUSTOMERS, mine.id, user_id=org.rep_b, access="read")
    assert services.get(tsession, b, CUSTOMERS, mine.id).id == mine.id
    with pytest.raises(PermissionDenied):
        services.update(tsession, b, CUSTOMERS, mine.id, {"phone": "010-12345678"})
    services.share(tsession, a, CUSTOMERS, mine.id, user_id=org.rep_b, access="edit")
    services.update(tsession, b, CUSTOMERS, mine.id, {"phone": "010-12345678"})
    assert services.get(tsession, a, CUSTOMERS, mine.id).phone == "010-12345678"


def test_stale_version_is_refused_and_nothing_changes(tsession, org):
    a = as_user(tsession, org.rep_a)
    c = services.create(tsession, a, CUSTOMERS, {"name": "Acme"})
    version = c.version
    services.update(tsession, a, CUSTOMERS, c.id, {"phone": "13800138000"}, expected_version=version)
    with pytest.raises(PreconditionFailed):
        services.update(tsession, a, CUSTOMERS, c.id, {"phone": "13900139000"}, expected_version=version)
    assert services.get(tsession, a, CUSTOMERS, c.id).phone == "13800138000"


def test_recycle_bin_hides_then_restores_and_purges_after_30_days(tsession, org):
    import datetime as dt

    a = as_user(tsession, org.rep_a)
    c = services.create(tsession, a, CUSTOMERS, {"name": "To delete"})
    with pytest.raises(PermissionDenied):  # sales may not delete by default
        services.delete_records(tsession, a, CUSTOMERS, [c.id])
    manager = as_user(tsession, org.manager)
    assert services.delete_records(tsession, manager, CUSTOMERS, [c.id]) == 1
    assert list_of(tsession, a, CUSTOMERS) == []
    services.restore(tsession, manager, CUSTOMERS, c.id)
    assert names(list_of(tsession, a, CUSTOMERS)) == ["To delete"]
    services.delete_records(tsession, manager, CUSTOMERS, [c.id])
    assert services.purge_expired(tsession) == 0
    later = c.deleted_at + dt.timedelta(days=31)
    assert services.purge_expired(tsession, later) == 1
    with pytest.raises(NotFound):
        services.get(tsession, manager, CUSTOMERS, c.id, deleted=True)


def test_filters_sort_and_keyset_pages(tsession, org):
    admin = as_user(tsession, org.admin)
    for i, (name, region) in enumerate([("北京华为", "beijing"), ("阿里巴巴", "zhejiang"), ("Acme", None),
                                        ("重庆钢铁", "chongqing"), ("Zeta", "beijing")]):
        services.create(tsession, admin, CUSTOMERS, {"name": name, "region": region, "phone": f"1380013800{i}"})
    # Pinyin order: Acme, 阿里巴巴 (ali), 北京华为 (beijing), 重庆钢铁 (chongqing), Zeta
    rows = list_of(tsession, admin, CUSTOMERS)
    assert [r.name for r in rows][-1] == "Zeta"
    assert names(list_of(tsession, admin, CUSTOMERS, [("region", "beijing")])) == ["Zeta", "北京华为"]
    assert names(list_of(tsession, admin, CUSTOMERS, [("region__empty", "1")])) == ["Acme"]
    seen = []
    params = [("limit", "2")]
    from crm.records import definitions

    fields = definitions.fields(tsession, CUSTOMERS)
    cursor = None
    for _ in range(5):
        lq = lists.parse(params + ([("after", cursor)] if cursor else []), fields, CUSTOMERS)
        page = lists.page(tsession, CUSTOMERS, admin, lq, fields)
        seen += [r.name for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [r.name for r in rows]
    with pytest.raises(ValidationFailed):
        lists.parse([("nosuch", "1"), ("sort", "tags")], fields, CUSTOMERS)
    assert lists.count(tsession, CUSTOMERS, admin, lists.parse([], fields, CUSTOMERS), bound=3) == (3, False)
    assert lists.count(tsession, CUSTOMERS, admin, lists.parse([], fields, CUSTOMERS)) == (5, True)


def test_search_two_chinese_characters(tsession, org):
    admin = as_user(tsession, org.admin)
    services.create(tsession, admin, CUSTOMERS, {"name": "北京华为技术有限公司"})
    services.create(tsession, admin, CUSTOMERS, {"name": "南京电气"})
    assert names(list_of(tsession, admin, CUSTOMERS, [("q", "华为")])) == ["北京华为技术有限公司"]
    assert names(list_of(tsession, admin, CUSTOMERS, [("q", "京")])) == ["北京华为技术有限公司", "南京电气"]


def test_duplicates_merge_and_transfer(tsession, org):
    a = as_user(tsession, org.rep_a)
    manager = as_user(tsession, org.manager)
    keep = services.create(tsession, a, CUSTOMERS, {"name": "深圳腾飞科技有限公司", "phone": "0755-8888888"})
    with pytest.raises(services.PossibleDuplicates) as exc:
        services.create(tsession, a, CUSTOMERS, {"name": "深圳腾飞科技公司"}, allow_duplicates=False)
    assert [r.id for r in exc.value.records] == [keep.id]
    drop = services.create(tsession, a, CUSTOMERS, {"name": "深圳腾飞科技公司", "email": "info@tengfei.cn"})
    contact = services.create(tsession, a, CONTACTS, {"name": "刘工", "customer_id": str(drop.id)})
    task = services.create(tsession, a, TASKS, {"title": "回访", "customer_id": str(drop.id)})
    merged = services.merge(tsession, manager, CUSTOMERS, keep.id, drop.id)
    assert merged.email == "info@tengfei.cn"  # filled from the merged record
    assert services.get(tsession, a, CONTACTS, contact.id).customer_id == keep.id
    assert services.get(tsession, a, TASKS, task.id).customer_id == keep.id
    with pytest.raises(NotFound):
        services.get(tsession, a, CUSTOMERS, drop.id)
    actions = set(tsession.scalars(select(AuditEntry.action).where(AuditEntry.entity_id.in_([str(keep.id),
                                                                                           str(drop.id)]))))
    assert {"customers.merged", "customers.merged_into"} <= actions
    # Transfer takes the customer's contacts and open tasks along.
    services.transfer(tsession, manager, CUSTOMERS, [keep.id], org.rep_b)
    b = as_user(tsession, org.rep_b)
    assert services.get(tsession, b, CONTACTS, contact.id).owner_id == org.rep_b
    assert services.get(tsession, b, TASKS, task.id).owner_id == org.rep_b
    with pytest.raises(NotFound):
        services.get(tsession, a, CUSTOMERS, keep.id)


def test_the_timeline_holds_activities_tasks_and_changes_newest_first(tsession, org):
    from crm.activities.models import ACTIVITIES
    from crm.records import history

    a = as_user(tsession, org.rep_a)
    customer = services.create(tsession, a, CUSTOMERS, {"name": "时间线客户"})
    services.create(tsession, a, ACTIVITIES, {"kind": "call", "subject": "电话回访", "occurred_at": "2030-01-01T09:00",
                                              "customer_id": str(customer.id)})
    services.create(tsession, a, TASKS, {"title": "寄样品", "customer_id": str(customer.id)})
    items = history.timeline(tsession, a, CUSTOMERS, customer)
    assert {i.kind for i in items} == {"activity", "task", "change"}
    assert items[0].title == "电话回访"  # dated in 2030: the newest
    # Another rep sees the customer (shared) but not A's private activity and task.
    services.share(tsession, a, CUSTOMERS, customer.id, user_id=org.rep_b)
    b = as_user(tsession, org.rep_b)
    assert {i.kind for i in history.timeline(tsession, b, CUSTOMERS, customer)} == {"change"}


def test_definitions_are_read_once_per_session_for_every_entity_and_dictionary(tsession):
    """A record page shows several entities and dictionaries: one query each for all custom fields
    and all dictionaries, whatever is asked after; and what each entity gets is still its own."""
    from sqlalchemy import event

    from crm.activities.models import ACTIVITIES
    from crm.records import definitions
    from crm.records.models import CustomField

    tsession.add_all([CustomField(entity="contacts", key="wechat", type="text", label_en="WeChat"),
                      CustomField(entity="customers", key="old", type="text", label_en="Old", active=False)])
    tsession.flush()
    definitions.forget(tsession)
    seen = []
    engine = tsession.get_bind()
    listener = lambda *args: seen.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        contact_keys = [f.key for f in definitions.fields(tsession, CONTACTS) if f.custom]
        customer_keys = [f.key for f in definitions.fields(tsession, CUSTOMERS) if f.custom]
        every_customer_key = [f.key for f in definitions.fields(tsession, CUSTOMERS, include_inactive=True)
                              if f.custom]
        definitions.fields(tsession, ACTIVITIES)
        regions = definitions.dictionary(tsession, "region")
        industries = definitions.dictionary(tsession, "industry")
        assert definitions.dictionary(tsession, "no_such_kind") == []
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert contact_keys == ["wechat"]
    assert customer_keys == []
    assert every_customer_key == ["old"]
    assert {i.kind for i in regions} == {"region"}
    assert any(i.code == "beijing" for i in regions)
    assert {i.kind for i in industries} == {"industry"}
    assert len([s for s in seen if "custom_fields" in s]) == 1
    assert len([s for s in seen if "dictionary_items" in s]) == 1


def test_seeded_dictionaries_keep_their_tree_and_seeding_again_adds_nothing(tsession):
    from crm.records import definitions, seeds
    from crm.records.models import DictionaryItem

    regions = {i.code: i for i in definitions.dictionary(tsession, "region")}
    assert regions["beijing"].parent_id == regions["north"].id
    assert regions["shenzhen"].parent_id == regions["south"].id
    assert regions["north"].parent_id is None
    before = len(tsession.scalars(select(DictionaryItem)).all())
    definitions.seed(tsession, seeds.DICTIONARIES)
    assert len(tsession.scalars(select(DictionaryItem)).all()) == before == len(seeds.DICTIONARIES)


@pytest.mark.parametrize("sort", ["name", "-name", "region", "-region", "-updated_at"])
def test_keyset_pages_walk_every_row_once_both_ways(tsession, org, sort):
    """The row-comparison bound ((sort, id) > cursor) with ties, NULLs at the end, forwards and back."""
    from crm.records import definitions

    admin = as_user(tsession, org.admin)
    regions = ["beijing", None, "beijing", "zhejiang", None, "beijing", "chongqing"]
    for i, region in enumerate(regions):
        services.create(tsession, admin, CUSTOMERS, {"name": "同名公司" if i % 2 else f"公司{i}", "region": region,
                                                     "phone": f"1390013900{i}"})
    fields = definitions.fields(tsession, CUSTOMERS)
    everything = lists.page(tsession, CUSTOMERS, admin, lists.parse([("sort", sort)], fields, CUSTOMERS), fields).rows
    assert len(everything) == len(regions)
    if "region" in sort:
        assert [r.region for r in everything][-2:] == [None, None]
    forwards, cursor, last = [], None, None
    for _ in range(10):
        params = [("sort", sort), ("limit", "2")] + ([("after", cursor)] if cursor else [])
        page = lists.page(tsession, CUSTOMERS, admin, lists.parse(params, fields, CUSTOMERS), fields)
        forwards += [r.id for r in page.rows]
        last = page
        cursor = page.next_cursor
        if cursor is None:
            break
    assert forwards == [r.id for r in everything]
    backwards, cursor = [], last.prev_cursor
    backwards = [r.id for r in last.rows]
    while cursor:
        params = [("sort", sort), ("limit", "2"), ("before", cursor)]
        page = lists.page(tsession, CUSTOMERS, admin, lists.parse(params, fields, CUSTOMERS), fields)
        backwards = [r.id for r in page.rows] + backwards
        cursor = page.prev_cursor
    assert backwards == [r.id for r in everything]
