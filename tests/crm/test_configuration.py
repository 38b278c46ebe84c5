"""The tenant admin's configuration: custom fields, dictionaries, number formats (services, API, pages),
and custom fields end to end through the generic record API."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from core.errors import Conflict, NotFound, PermissionDenied, PreconditionFailed, ValidationFailed
from crm.records import configuration as config
from crm.records import definitions, services
from crm.records.entity import entity
from crm.records.models import DictionaryItem
from tenants.models import AuditEntry
from tests.conftest import csrf_of, host, sign_in
from tests.crm.conftest import as_user


def api(client, method, path, body=None, headers=None):
    h = {**host("acme"), **(headers or {})}
    if method != "GET":
        h["X-CSRF-Token"] = csrf_of(client, "acme")
    if body is not None:
        h["Content-Type"] = "application/json"
    return client.open(path, method=method, headers=h, data=json.dumps(body) if body is not None else None)


# --------------------------------------------------------------------------- services


def test_only_admins_configure(tsession, org):
    rep = as_user(tsession, org.rep_a).actor
    manager = as_user(tsession, org.manager).actor
    for actor in (rep, manager):
        with pytest.raises(PermissionDenied):
            config.create_field(tsession, actor, {"entity": "customers", "type": "text", "label_en": "X"})
        with pytest.raises(PermissionDenied):
            config.kinds(tsession, actor)
        with pytest.raises(PermissionDenied):
            config.set_format(tsession, actor, "customers", "KH{seq}")


def test_field_key_generated_validated_and_reserved(tsession, org):
    admin = as_user(tsession, org.admin).actor
    row = config.create_field(tsession, admin, {"entity": "customers", "type": "text",
                                                "label_en": "SAP code (ERP)", "label_zh": "SAP 编码"})
    assert row.key == "sap_code_erp"
    again = config.create_field(tsession, admin, {"entity": "customers", "type": "text", "label_en": "SAP code ERP"})
    assert again.key == "sap_code_erp_2"
    zh_only = config.create_field(tsession, admin, {"entity": "customers", "type": "text", "label_zh": "备注二"})
    assert zh_only.key == "field"
    assert zh_only.label_en == "备注二"
    for key, word in (("name", "system"), ("sort", "system"), ("Bad-Key", "lowercase"), ("a__b", "lowercase"),
                      ("sap_code_erp", "Another")):
        with pytest.raises(ValidationFailed) as exc:
            config.create_field(tsession, admin, {"entity": "customers", "type": "text", "label_en": "X", "key": key})
        assert word in str(exc.value.field_errors["key"][0]), key
    with pytest.raises(ValidationFailed) as exc:
        config.create_field(tsession, admin, {"entity": "planets", "type": "text", "label_en": "X"})
    assert "entity" in exc.value.field_errors


def test_every_mistake_of_a_definition_at_once(tsession, org):
    admin = as_user(tsession, org.admin).actor
    with pytest.raises(ValidationFailed) as exc:
        config.create_field(tsession, admin, {"entity": "customers", "type": "choice", "label_en": "x" * 101,
                                              "options": [], "unique": True, "default": "nope", "colour": 1})
    assert set(exc.value.field_errors) >= {"label_en", "options", "unique", "colour"}
    with pytest.raises(ValidationFailed) as exc:
        config.create_field(tsession, admin, {"entity": "customers", "type": "number", "label_en": "Size",
                                              "default": "many"})
    assert set(exc.value.field_errors) == {"default"}
    with pytest.raises(ValidationFailed) as exc:
        config.create_field(tsession, admin, {"entity": "customers", "type": "choice", "label_en": "Tier",
                                              "options": [{"value": "a,b", "label_en": "A"},
                                                          {"value": "x", "label_en": "X"},
                                                          {"value": "x", "label_en": "Y"}]})
    assert len(exc.value.field_errors["options"]) == 2
    with pytest.raises(ValidationFailed):
        config.create_field(tsession, admin, {"entity": "customers", "type": "choice", "label_en": "Many",
                                              "options": [f"o{n}" for n in range(config.MAX_OPTIONS + 1)]})


def test_type_change_refused_once_records_hold_values_and_used_options_stay(tsession, org):
    admin_v = as_user(tsession, org.admin)
    admin = admin_v.actor
    ent = entity("customers")
    tier = config.create_field(tsession, admin, {"entity": "customers", "type": "choice", "label_en": "Tier",
                                                 "label_zh": "等级",
                                                 "options": "gold | Gold | 金牌\nsilver | Silver | 银牌\n"
                                                            "bronze | Bronze | 铜牌"})
    assert [o["value"] for o in tier.options] == ["gold", "silver", "bronze"]
    # No record holds a value yet: the type may still change (and back).
    config.update_field(tsession, admin, tier.id, {"type": "multi"})
    config.update_field(tsession, admin, tier.id, {"type": "choice"})
    services.create(tsession, admin_v, ent, {"name": "华为", "tier": "金牌"})
    with pytest.raises(ValidationFailed) as exc:
        config.update_field(tsession, admin, tier.id, {"type": "text", "options": []})
    assert "1 record holds a value" in str(exc.value.field_errors["type"][0])
    with pytest.raises(ValidationFailed) as exc:
        config.update_field(tsession, admin, tier.id, {"options": [{"value": "silver", "label_en": "Silver"}]})
    assert "'gold' is chosen in 1 record" in str(exc.value.field_errors["options"][0])
    # An unused option goes; a renamed label is fine.
    row = config.update_field(tsession, admin, tier.id, {"options": [
        {"value": "gold", "label_en": "Gold", "label_zh": "金卡"}, {"value": "silver", "label_en": "Silver"}]})
    assert [o["value"] for o in row.options] == ["gold", "silver"]
    with pytest.raises(PreconditionFailed):
        config.update_field(tsession, admin, tier.id, {"label_en": "Level"}, expected_version=row.version - 1)
    with pytest.raises(ValidationFailed) as exc:
        config.update_field(tsession, admin, tier.id, {"key": "level"})
    assert "key" in exc.value.field_errors


def test_deactivate_keeps_values_and_hides_the_field(tsession, org):
    admin_v = as_user(tsession, org.admin)
    ent = entity("customers")
    f = config.create_field(tsession, admin_v.actor, {"entity": "customers", "type": "text", "label_en": "Old code"})
    rec = services.create(tsession, admin_v, ent, {"name": "Acme", "old_code": "A-1"})
    config.set_field_active(tsession, admin_v.actor, f.id, False)
    assert "old_code" not in definitions.field_map(tsession, ent)
    with pytest.raises(ValidationFailed):
        services.update(tsession, admin_v, ent, rec.id, {"old_code": "A-2"})
    tsession.refresh(rec)
    assert rec.custom["old_code"] == "A-1"
    config.set_field_active(tsession, admin_v.actor, f.id, True)
    assert services.value(rec, definitions.field_map(tsession, ent)["old_code"]) == "A-1"


def test_unique_turned_on_only_without_duplicates_and_field_limit(tsession, org, monkeypatch):
    admin_v = as_user(tsession, org.admin)
    ent = entity("customers")
    f = config.create_field(tsession, admin_v.actor, {"entity": "customers", "type": "text", "label_en": "VAT id"})
    services.create(tsession, admin_v, ent, {"name": "A", "vat_id": "T1"})
    services.create(tsession, admin_v, ent, {"name": "B", "vat_id": "T1"})
    with pytest.raises(ValidationFailed) as exc:
        config.update_field(tsession, admin_v.actor, f.id, {"unique": True})
    assert "1 value is held by more than one record" in str(exc.value.field_errors["unique"][0])
    monkeypatch.setattr(config, "MAX_FIELDS", 1)
    with pytest.raises(Conflict):
        config.create_field(tsession, admin_v.actor, {"entity": "customers", "type": "text", "label_en": "More"})


def test_reorder_and_audit_is_readable(tsession, org):
    admin = as_user(tsession, org.admin).actor
    a = config.create_field(tsession, admin, {"entity": "contacts", "type": "text", "label_en": "Alpha"})
    b = config.create_field(tsession, admin, {"entity": "contacts", "type": "bool", "label_en": "Beta",
                                              "label_zh": "贝塔"})
    config.move_field(tsession, admin, b.id, -1)
    assert [r.key for r in config.list_fields(tsession, admin, "contacts")] == ["beta", "alpha"]
    with pytest.raises(ValidationFailed):
        config.reorder_fields(tsession, admin, "contacts", [a.id])
    entry = tsession.scalars(select(AuditEntry).where(AuditEntry.action == "custom_field.created")
                             .order_by(AuditEntry.id.desc())).first()
    assert entry.after["label_zh"] == "贝塔"
    assert entry.after["entity"] == "Contacts"
    moved = tsession.scalars(select(AuditEntry).where(AuditEntry.action == "custom_field.reordered")).one()
    assert moved.before == {"order": ["alpha", "beta"]}
    assert moved.after == {"order": ["beta", "alpha"]}


def test_dictionary_items_tree_without_cycles_and_never_deleted_in_use(tsession, org):
    admin_v = as_user(tsession, org.admin)
    admin = admin_v.actor
    regions = config.items(tsession, admin, "region")
    east = next(r for r in regions if r.code == "east")
    shanghai = next(r for r in regions if r.code == "shanghai")
    pudong = config.add_item(tsession, admin, "region", {"label_en": "Pudong", "label_zh": "浦东",
                                                         "parent_id": str(shanghai.id)})
    assert pudong.code == "pudong"
    with pytest.raises(ValidationFailed) as exc:
        config.update_item(tsession, admin, "region", east.id, {"parent_id": str(pudong.id)})
    assert "itself" in str(exc.value.field_errors["parent_id"][0])
    with pytest.raises(ValidationFailed) as exc:
        config.add_item(tsession, admin, "industry", {"label_en": "Mining", "parent_id": str(east.id)})
    assert "parent_id" in exc.value.field_errors
    with pytest.raises(ValidationFailed) as exc:
        config.add_item(tsession, admin, "region", {"label_en": "Again", "code": "pudong"})
    assert "code" in exc.value.field_errors
    with pytest.raises(ValidationFailed):
        config.update_item(tsession, admin, "region", pudong.id, {"code": "pd"})
    with pytest.raises(NotFound):
        config.items(tsession, admin, "planets")
    with pytest.raises(NotFound):
        config.get_item(tsession, admin, "industry", pudong.id)
    nested = config.nested(config.items(tsession, admin, "region"), "zh")
    east_node = next(n for n in nested if n["code"] == "east")
    sh_node = next(n for n in east_node["children"] if n["code"] == "shanghai")
    assert [c["label"] for c in sh_node["children"]] == ["浦东"]
    # Used by a record: deactivated, not deleted; still shown on that record; no longer accepted.
    ent = entity("customers")
    rec = services.create(tsession, admin_v, ent, {"name": "浦东客户", "region": "浦东"})
    assert config.remove_item(tsession, admin, "region", pudong.id) is False
    tsession.refresh(pudong)
    assert pudong.active is False
    assert definitions.dictionary_label(tsession, "region", rec.region, "zh") == "浦东"
    with pytest.raises(ValidationFailed):
        services.create(tsession, admin_v, ent, {"name": "另一个", "region": "pudong"})
    spare = config.add_item(tsession, admin, "industry", {"label_en": "Mining", "label_zh": "采矿"})
    assert config.remove_item(tsession, admin, "industry", spare.id) is True
    assert tsession.get(DictionaryItem, spare.id) is None


def test_number_formats_preview_and_refusals(tsession, org):
    admin_v = as_user(tsession, org.admin)
    admin = admin_v.actor
    ent = entity("customers")
    fmt = config.set_format(tsession, admin, "customers", "KH-{yyyy}-{seq:05}")
    year = services.today().strftime("%Y")
    assert fmt.preview == f"KH-{year}-00001"
    rec = services.create(tsession, admin_v, ent, {"name": "First"})
    assert rec.number == f"KH-{year}-00001"
    assert config.preview(tsession, ent, "KH-{yyyy}-{seq:05}") == f"KH-{year}-00002"
    for bad in ("KH", "KH-{seq}-{week}", "X" * 61, "K{seq}\nH", "Y" * 40 + "{seq}"):
        with pytest.raises(ValidationFailed) as exc:
            config.set_format(tsession, admin, "customers", bad)
        assert "pattern" in exc.value.field_errors, bad
    # A format whose next number exists already would make the next record fail: refused.
    with pytest.raises(ValidationFailed) as exc:
        config.set_format(tsession, admin, "customers", f"KH-{year}-{{seq:05}}")  # a running count restarts at 1
    assert "already taken" in str(exc.value.message)
    reset = config.set_format(tsession, admin, "customers", "")
    assert reset.pattern == ent.number_format
    assert not reset.custom


# --------------------------------------------------------------------------- API


def test_config_api_round_trip(client, org):
    assert sign_in(client, "acme").status_code == 302
    made = api(client, "POST", "/api/v1/custom-fields", {"entity": "customers", "type": "choice",
                                                          "label_en": "Tier", "label_zh": "等级",
                                                          "options": [{"label_en": "Gold", "label_zh": "金牌"}]})
    assert made.status_code == 201, made.get_json()
    doc = made.get_json()
    assert doc["key"] == "tier"
    assert doc["options"][0]["value"] == "gold"
    fid = doc["id"]
    listed = api(client, "GET", "/api/v1/custom-fields?entity=customers").get_json()["items"]
    assert [f["key"] for f in listed] == ["tier"]
    assert api(client, "GET", "/api/v1/custom-fields?entity=planets").status_code == 422
    no_match = api(client, "PATCH", f"/api/v1/custom-fields/{fid}", {"label_en": "Level"})
    assert no_match.status_code == 400
    assert no_match.get_json()["code"] == "if_match_required"
    ok = api(client, "PATCH", f"/api/v1/custom-fields/{fid}", {"label_en": "Level"},
             {"If-Match": made.headers["ETag"]})
    assert ok.status_code == 200
    assert ok.get_json()["label_en"] == "Level"
    stale = api(client, "PATCH", f"/api/v1/custom-fields/{fid}", {"label_en": "Grade"},
                {"If-Match": made.headers["ETag"]})
    assert stale.status_code == 412
    bad = api(client, "PATCH", f"/api/v1/custom-fields/{fid}", {"type": "colour", "required": "maybe"},
              {"If-Match": ok.headers["ETag"]})
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]) == {"type", "required"}
    gone = api(client, "DELETE", f"/api/v1/custom-fields/{fid}")
    assert gone.status_code == 200
    assert gone.get_json()["active"] is False
    assert api(client, "POST", f"/api/v1/custom-fields/{fid}/activate").get_json()["active"] is True
    assert api(client, "GET", "/api/v1/custom-fields/00000000-0000-0000-0000-000000000000").status_code == 404

    kinds = api(client, "GET", "/api/v1/dictionaries").get_json()["items"]
    assert {"kind": "region", "label_en": "Region", "label_zh": "地区", "tree": True} .items() <= next(
        k for k in kinds if k["kind"] == "region").items()
    tree = api(client, "GET", "/api/v1/dictionaries/region").get_json()["items"]
    assert any(c["code"] == "beijing" for c in next(n for n in tree if n["code"] == "north")["children"])
    flat = api(client, "GET", "/api/v1/dictionaries/region?flat=true").get_json()["items"]
    assert flat[0]["depth"] == 0
    assert flat[1]["depth"] == 1
    assert api(client, "GET", "/api/v1/dictionaries/planets").status_code == 404
    added = api(client, "POST", "/api/v1/dictionaries/industry", {"label_en": "Mining", "label_zh": "采矿"})
    assert added.status_code == 201
    item = added.get_json()
    renamed = api(client, "PATCH", f"/api/v1/dictionaries/industry/{item['id']}", {"label_zh": "矿业"})
    assert renamed.get_json()["label_zh"] == "矿业"
    assert api(client, "DELETE", f"/api/v1/dictionaries/industry/{item['id']}").get_json()["active"] is False
    assert api(client, "PATCH", f"/api/v1/dictionaries/region/{item['id']}", {"label_zh": "x"}).status_code == 404

    formats = api(client, "GET", "/api/v1/number-formats").get_json()["items"]
    assert {f["entity"] for f in formats} >= {"customers", "contacts"}
    put = api(client, "PUT", "/api/v1/number-formats", {"entity": "customers", "pattern": "C{yy}{seq:04}"})
    assert put.status_code == 200
    assert put.get_json()["next"].endswith("0001")
    assert api(client, "PUT", "/api/v1/number-formats", {"entity": "customers", "pattern": "C"}).status_code == 422


def test_pages_show_errors_beside_fields_and_keep_input(client, org):
    assert sign_in(client, "acme").status_code == 302
    page = client.get("/settings/fields?entity=customers", headers=host("acme"))
    assert page.status_code == 200
    assert 'id="builtin-fields"' in page.get_data(as_text=True)
    token = csrf_of(client, "acme")
    bad = client.post("/settings/fields", headers=host("acme"), data={
        "csrf_token": token, "entity": "customers", "label_en": "Tier 等级", "key": "Bad Key", "type": "choice",
        "options": ""})
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert 'data-error-for="key"' in html
    assert 'data-error-for="options"' in html
    assert 'value="Tier 等级"' in html
    assert 'value="Bad Key"' in html
    ok = client.post("/settings/fields", headers=host("acme"), data={
        "csrf_token": token, "entity": "customers", "label_en": "Tier", "type": "choice",
        "options": "gold | Gold | 金牌"})
    assert ok.status_code == 302
    listed = client.get("/settings/fields?entity=customers", headers=host("acme")).get_data(as_text=True)
    assert 'data-key="tier"' in listed
    assert client.get("/settings/fields?entity=planets", headers=host("acme")).status_code == 404
    regions = client.get("/settings/dictionaries?kind=region", headers=host("acme"))
    assert regions.status_code == 200
    assert 'data-code="beijing"' in regions.get_data(as_text=True)
    numbers = client.get("/settings/numbers", headers=host("acme"))
    assert numbers.status_code == 200
    preview = client.get("/settings/numbers/preview?entity=customers&pattern=KH-{seq:03}", headers=host("acme"))
    assert preview.get_json() == {"ok": True, "preview": "KH-001"}
    refused = client.get("/settings/numbers/preview?entity=customers&pattern=KH", headers=host("acme"))
    assert refused.get_json()["ok"] is False


# --------------------------------------------------------------------------- end to end through the records API


def test_custom_fields_end_to_end_through_the_customers_api(client, org):
    assert sign_in(client, "acme").status_code == 302
    defs = [
        {"entity": "customers", "type": "choice", "label_en": "Tier", "label_zh": "等级", "key": "tier",
         "options": "gold | Gold | 金牌\nsilver | Silver | 银牌"},
        {"entity": "customers", "type": "number", "label_en": "Employees", "label_zh": "员工人数", "key": "staff"},
        {"entity": "customers", "type": "date", "label_en": "Customer since", "label_zh": "合作开始", "key": "since"},
        {"entity": "customers", "type": "text", "label_en": "ERP code", "label_zh": "ERP 编码", "key": "erp",
         "required": True},
        {"entity": "customers", "type": "email", "label_en": "Billing email", "label_zh": "账单邮箱",
         "key": "billing", "unique": True},
    ]
    for d in defs:
        r = api(client, "POST", "/api/v1/custom-fields", d)
        assert r.status_code == 201, r.get_json()
    spec = api(client, "GET", "/api/v1/openapi.json").get_json()
    assert "/api/v1/custom-fields" in spec["paths"]

    a = api(client, "POST", "/api/v1/customers", {"name": "华为", "tier": "gold", "staff": "1,200",
                                                   "since": "2020-03-01", "erp": "E1", "billing": "ap@huawei.test"})
    assert a.status_code == 201, a.get_json()
    adoc = a.get_json()
    assert adoc["custom"] == {"tier": "gold", "staff": 1200, "since": "2020-03-01", "erp": "E1",
                              "billing": "ap@huawei.test"}
    assert adoc["display"]["tier"] == "Gold"
    b = api(client, "POST", "/api/v1/customers", {"name": "腾讯", "custom": {"tier": "银牌", "staff": 800,
                                                                            "since": "2022/5/1", "erp": "E2"}})
    assert b.status_code == 201, b.get_json()
    c = api(client, "POST", "/api/v1/customers", {"name": "小米", "erp": "E3", "staff": 50})
    assert c.status_code == 201

    bad = api(client, "POST", "/api/v1/customers", {"name": "Bad", "tier": "platinum", "staff": "lots",
                                                     "billing": "ap@huawei.test", "since": "2020-13-01"})
    assert bad.status_code == 422
    errors = bad.get_json()["errors"]
    assert set(errors) == {"tier", "staff", "billing", "since", "erp"}
    assert "not one of the choices" in errors["tier"][0]
    assert "Expected a number" in errors["staff"][0]
    assert errors["erp"] == ["Required."]
    assert "already has this value" in errors["billing"][0]
    assert api(client, "GET", "/api/v1/customers?q=Bad").get_json()["count"] == 0

    # Update: a custom value changes, a required one cannot be emptied, the unique one stays unique.
    bid = b.get_json()["id"]
    patched = api(client, "PATCH", f"/api/v1/customers/{bid}", {"staff": 900, "tier": "gold"},
                  {"If-Match": b.headers["ETag"]})
    assert patched.status_code == 200, patched.get_json()
    emptied = api(client, "PATCH", f"/api/v1/customers/{bid}", {"erp": "", "billing": "AP@huawei.test"},
                  {"If-Match": patched.headers["ETag"]})
    assert emptied.status_code == 422
    assert set(emptied.get_json()["errors"]) >= {"erp"}

    def names(query):
        r = api(client, "GET", f"/api/v1/customers?{query}")
        assert r.status_code == 200, (query, r.get_json())
        return [i["name"] for i in r.get_json()["items"]]

    assert sorted(names("tier=gold")) == ["华为", "腾讯"]
    assert names("tier=silver") == []
    assert names("staff__gte=900&sort=-staff") == ["华为", "腾讯"]
    assert names("sort=staff") == ["小米", "腾讯", "华为"]
    assert names("since__lt=2021-01-01") == ["华为"]
    assert names("sort=-since") == ["腾讯", "华为", "小米"]
    assert names("erp=E3") == ["小米"]
    assert names("billing__contains=huawei") == ["华为"]
    assert sorted(names("billing__empty=1")) == sorted(["腾讯", "小米"])
    assert api(client, "GET", "/api/v1/customers?tier__gt=gold").status_code == 422
    # Keyset pages over a custom sort walk every record once.
    first = api(client, "GET", "/api/v1/customers?sort=staff&limit=2").get_json()
    rest = api(client, "GET", f"/api/v1/customers?sort=staff&limit=2&after={first['next_cursor']}").get_json()
    assert [i["name"] for i in first["items"] + rest["items"]] == ["小米", "腾讯", "华为"]

    history = api(client, "GET", f"/api/v1/customers/{bid}/history",
                  headers={"Accept-Language": "zh-CN"}).get_json()["items"]
    changes = {c["label"]: (c["before"], c["after"]) for c in history[0]["changes"]}
    assert changes["员工人数"] == ("800", "900")
    assert changes["等级"] == ("银牌", "金牌")


def test_pages_and_api_refuse_whoever_lacks_crm_configure(client, db, org):
    from core.permissions import Actor
    from tenants import services as tenant_services
    from tests.conftest import PASSWORD
    from tests.tenants.test_api import token

    with db.transaction(org.tenant) as s:
        tenant_services.create_user(s, Actor.system("test"), email="boss@acme.test", name="Boss 老板", role="manager",
                                    password=PASSWORD)
    assert sign_in(client, "acme", email="boss@acme.test").status_code == 302
    for path in ("/settings/fields", "/settings/dictionaries", "/settings/numbers"):
        assert client.get(path, headers=host("acme")).status_code == 403, path
    refused = api(client, "POST", "/api/v1/custom-fields", {"entity": "customers", "type": "text", "label_en": "X"})
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "forbidden"
    assert api(client, "GET", "/api/v1/dictionaries").status_code == 403
    # A machine client needs the crm.configure scope; with it, the same call works.
    without = token(client, db, org.tenant, ["users.read"])
    h = {**host("acme"), "Authorization": f"Bearer {without}"}
    assert client.get("/api/v1/number-formats", headers=h).status_code == 403
    with_scope = token(client, db, org.tenant, ["crm.configure"])
    h = {**host("acme"), "Authorization": f"Bearer {with_scope}"}
    assert client.get("/api/v1/number-formats", headers=h).status_code == 200
