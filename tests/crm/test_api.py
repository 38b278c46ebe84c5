"""The generic CRM API: one entity's routes end to end, through the test client with a bearer-less session."""

from __future__ import annotations

import json

from tests.conftest import csrf_of, host, sign_in


def api(client, method, path, slug="acme", body=None, headers=None):
    h = {**host(slug), **(headers or {})}
    if method != "GET":
        h["X-CSRF-Token"] = csrf_of(client, slug)
    if body is not None:
        h["Content-Type"] = "application/json"
    return client.open(path, method=method, headers=h, data=json.dumps(body) if body is not None else None)


def test_customer_crud_with_etag_and_custom_values(client, org):
    assert sign_in(client, "acme").status_code == 302
    created = api(client, "POST", "/api/v1/customers", body={"name": "北京华为", "region": "北京", "level": "vip"})
    assert created.status_code == 201, created.get_json()
    doc = created.get_json()
    assert doc["region"] == "beijing"
    assert doc["display"]["region"] == "Beijing"
    etag = created.headers["ETag"]
    rid = doc["id"]
    missing = api(client, "PATCH", f"/api/v1/customers/{rid}", body={"phone": "13800138000"})
    assert missing.status_code == 400
    assert missing.get_json()["code"] == "if_match_required"
    ok = api(client, "PATCH", f"/api/v1/customers/{rid}", body={"phone": "13800138000"}, headers={"If-Match": etag})
    assert ok.status_code == 200
    assert ok.get_json()["phone"] == "13800138000"
    stale = api(client, "PATCH", f"/api/v1/customers/{rid}", body={"phone": "13900139000"},
                headers={"If-Match": etag})
    assert stale.status_code == 412
    assert api(client, "GET", f"/api/v1/customers/{rid}").get_json()["phone"] == "13800138000"
    bad = api(client, "POST", "/api/v1/customers", body={"email": "x", "region": "mars"})
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]) >= {"name", "email", "region"}
    listed = api(client, "GET", "/api/v1/customers?q=华为&sort=-updated_at").get_json()
    assert [i["name"] for i in listed["items"]] == ["北京华为"]
    assert listed["count"] == 1
    history = api(client, "GET", f"/api/v1/customers/{rid}/history").get_json()["items"]
    assert history[0]["changes"][0]["label"] == "Phone"
    assert api(client, "DELETE", f"/api/v1/customers/{rid}").status_code == 204
    assert api(client, "GET", f"/api/v1/customers/{rid}").status_code == 404
    assert api(client, "GET", "/api/v1/customers/deleted").get_json()["count"] == 1
    assert api(client, "POST", f"/api/v1/customers/{rid}/restore").status_code == 200
