from tests.conftest import host, sign_in


def test_sign_in_and_home(client, tenant):
    page = client.get("/sign-in", headers=host("acme"))
    assert page.status_code == 200
    response = sign_in(client, "acme")
    assert response.status_code == 302, response.get_data(as_text=True)
    home = client.get("/home", headers=host("acme"))
    assert home.status_code == 200
    assert "admin" in home.get_data(as_text=True)
