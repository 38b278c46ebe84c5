import json
from tests.conftest import host

def test_x(client, tenant):
    r = client.get("/api/v1/openapi.json", headers=host("acme"))
    d = r.get_json()
    print(json.dumps(d["components"]["schemas"]["Error"], indent=1), json.dumps(d["components"]["responses"], indent=1))
