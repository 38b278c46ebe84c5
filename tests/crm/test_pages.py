"""The generic record pages through the test client: list, new (with every error at once), detail, edit."""

from __future__ import annotations

import re

from tests.conftest import csrf_of, host, sign_in


def test_customer_pages_round_trip(client, org):
    assert sign_in(client, "acme").status_code == 302
    empty = client.get("/customers", headers=host("acme"))
    assert empty.status_code == 200
    assert "No Customers yet" in empty.get_data(as_text=True)
    form = client.get("/customers/new", headers=host("acme"))
    assert form.status_code == 200
    token = csrf_of(client, "acme")
    bad = client.post("/customers/new", headers=host("acme"), data={
        "csrf_token": token, "name": "", "email": "nope", "phone": "电话"})
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert html.count("invalid-feedback") == 3
    assert 'value="nope"' in html
    made = client.post("/customers/new", headers=host("acme"), data={
        "csrf_token": token, "name": "北京华为技术有限公司", "region": "beijing", "phone": "010-88886666"})
    assert made.status_code == 302, made.get_data(as_text=True)[:2000]
    detail_url = made.headers["Location"]
    detail = client.get(detail_url, headers=host("acme"))
    assert detail.status_code == 200
    assert "北京华为技术有限公司" in detail.get_data(as_text=True)
    listed = client.get("/customers?q=华为", headers=host("acme")).get_data(as_text=True)
    assert "北京华为技术有限公司" in listed
    edit = client.get(detail_url + "/edit", headers=host("acme")).get_data(as_text=True)
    version = re.search(r'name="version" value="(\d+)"', edit).group(1)
    saved = client.post(detail_url + "/edit", headers=host("acme"), data={
        "csrf_token": token, "version": version, "name": "北京华为", "phone": "010-88886666"})
    assert saved.status_code == 302
    stale = client.post(detail_url + "/edit", headers=host("acme"), data={
        "csrf_token": token, "version": version, "name": "别的名字"})
    assert stale.status_code == 412
    assert "别的名字" in stale.get_data(as_text=True)  # what was typed is kept
    for tab in ("overview", "timeline", "related", "files", "history"):
        assert client.get(f"{detail_url}?tab={tab}", headers=host("acme")).status_code == 200
    assert client.get("/search?q=华为", headers=host("acme")).status_code == 200
    assert client.get("/recycle-bin", headers=host("acme")).status_code == 200


def test_org_chart_and_relationships_on_the_customer_page(client, org, tsession):
    from crm.accounts import services as accounts
    from crm.accounts.models import CONTACTS, CUSTOMERS
    from crm.records import services
    from tests.crm.conftest import as_user

    admin = as_user(tsession, org.admin)
    customer = services.create(tsession, admin, CUSTOMERS, {"name": "华东机械集团"})
    partner = services.create(tsession, admin, CUSTOMERS, {"name": "江苏钢铁贸易"})
    boss = services.create(tsession, admin, CONTACTS, {"name": "周总", "customer_id": customer.id,
                                                       "department": "总经办", "decision_role": "economic"})
    services.create(tsession, admin, CONTACTS, {"name": "吴工", "customer_id": customer.id, "department": "总经办",
                                                "reports_to_id": boss.id, "decision_role": "technical"})
    accounts.relate(tsession, admin, customer.id, partner.id, "supplier", "钢材供应")
    tsession.flush()
    chart = accounts.org_chart(tsession, admin, customer)
    assert [n.contact.name for n in chart["总经办"]] == ["周总"]
    assert [c.contact.name for c in chart["总经办"][0].children] == ["吴工"]
    assert sign_in(client, "acme").status_code == 302
    html = client.get(f"/customers/{customer.id}", headers=host("acme")).get_data(as_text=True)
    assert "吴工" in html
    assert "江苏钢铁贸易" in html
    # The rep who may not see the partner is not told its name.
    rep = as_user(tsession, org.rep_a)
    assert accounts.relations(tsession, rep, customer) == []
