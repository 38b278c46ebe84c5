"""The redone admin pages through the test client: the user page, the permission grid, custom roles,
the department tree and the audit log's filters and readable changes."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from core.permissions import Actor
from tenants import services
from tests.conftest import host, sign_in
from tests.tenants.test_views import add_user, post, user_row

ACME = host("acme")
ZH = {**ACME, "Accept-Language": "zh-CN,zh;q=0.9"}


def page(response: Any) -> str:
    return unescape(response.get_data(as_text=True))


def test_the_user_page_shows_details_and_what_happened_to_them(client, db, tenant) -> None:
    with db.transaction(tenant) as s:
        sales = services.save_department(s, Actor.system("test"), name="销售部", parent_id=None)
    colleague = add_user(db, tenant, "li@acme.test", name="李娜")
    assert sign_in(client, "acme").status_code == 302
    changed = post(client, f"/admin/users/{colleague}", {"role": "manager", "department_id": str(sales.id)})
    assert changed.status_code == 302
    shown = page(client.get(f"/admin/users/{colleague}", headers=ZH))
    assert "李娜" in shown
    assert 'id="user-facts"' in shown
    assert "最近登录" in shown
    history = shown[shown.index('id="user-history"'):]
    # Readable: the department by its name, the role by its Chinese name, never the ids.
    assert "<dt>部门</dt><dd><del>（顶级）</del>" not in history
    assert "销售部" in history
    assert "经理" in history
    assert str(sales.id) not in history
    assert client.get("/admin/users/00000000-0000-0000-0000-000000000000", headers=ACME).status_code == 404


def test_an_admin_cannot_deactivate_themself(client, db, tenant) -> None:
    admin = user_row(db, tenant, "admin@acme.test")
    assert admin is not None
    add_user(db, tenant, "second@acme.test", role="admin")
    assert sign_in(client, "acme").status_code == 302
    own = page(client.get(f"/admin/users/{admin.id}", headers=ACME))
    assert 'id="self-note"' in own
    assert 'value="deactivate"' not in own, "no button that can only fail"
    # Even with another administrator, the rule holds in the service, whatever is posted.
    refused = post(client, f"/admin/users/{admin.id}", {"action": "deactivate"})
    assert refused.status_code == 409
    assert "You cannot deactivate yourself." in page(refused)
    assert user_row(db, tenant, "admin@acme.test").active  # type: ignore[union-attr]


def test_the_permission_grid_saves_every_role_at_once_and_keeps_admin_locked(client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    saved = post(client, "/admin/roles", {"action": "grid", "perm-sales": ["users.read", "audit.read"],
                                          "perm-service": [], "perm-manager": ["users.read"],
                                          "perm-admin": []})
    assert saved.status_code == 302
    with db.transaction(tenant) as s:
        roles = {r.key: r for r in services.list_roles(s)}
        assert roles["sales"].permissions == ["audit.read", "users.read"]
        assert roles["service"].permissions == []
        assert roles["manager"].permissions == ["users.read"]
        assert roles["admin"].effective_permissions >= {"roles.manage", "users.manage"}
    grid = page(client.get("/admin/roles", headers=ZH))
    assert re.search(r'id="sales-audit\.read"\s+checked', grid)
    assert "人员与组织" in grid, "functions are grouped by area"
    assert "已锁定" in grid


def test_a_custom_role_is_created_from_a_name_with_the_functions_of_another(client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    made = post(client, "/admin/roles", {"action": "create", "name": "外勤销售", "copy_from": "manager"})
    assert made.status_code == 302
    with db.transaction(tenant) as s:
        custom = [r for r in services.list_roles(s) if not r.builtin]
        manager = services.get_role(s, "manager")
        assert [r.name for r in custom] == ["外勤销售"]
        assert custom[0].permissions == sorted(manager.permissions)
    assert "外勤销售" in page(client.get("/admin/roles", headers=ACME))
    empty = post(client, "/admin/roles", {"action": "create", "name": " "})
    assert empty.status_code == 422
    assert 'data-error-for="name"' in page(empty)


def _list_depths(html: str) -> dict[str, int]:
    """How many <ul> are open around each department's name."""
    from html.parser import HTMLParser

    found: dict[str, int] = {}

    class Walker(HTMLParser):
        depth, in_name = 0, False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.depth += tag == "ul"
            self.in_name = tag == "span" and ("class", "dept-name") in attrs

        def handle_endtag(self, tag: str) -> None:
            self.depth -= tag == "ul"
            self.in_name = False

        def handle_data(self, data: str) -> None:
            if self.in_name and data.strip():
                found[data.strip()] = self.depth

    Walker().feed(html)
    return found


def test_the_department_tree_is_nested(client, db, tenant) -> None:
    with db.transaction(tenant) as s:
        actor = Actor.system("test")
        sales = services.save_department(s, actor, name="销售部", parent_id=None)
        east = services.save_department(s, actor, name="华东区", parent_id=sales.id)
        services.save_department(s, actor, name="上海", parent_id=east.id)
        services.save_department(s, actor, name="客服部", parent_id=None)
    assert sign_in(client, "acme").status_code == 302
    tree = page(client.get("/admin/departments", headers=ACME))
    tree = tree[tree.index('id="department-tree"'):]
    depths = re.findall(r'<li data-depth="(\d)">', tree)
    assert depths == ["0", "0", "1", "2"]  # 客服部 sorts before 销售部
    # Real nesting: each name sits inside as many nested lists as its depth (counted inside the tree's own).
    assert _list_depths(tree) == {"客服部": 0, "销售部": 0, "华东区": 1, "上海": 2}
    # A department cannot be offered as its own parent, nor one of its sub-departments.
    sales_form = tree[tree.index(f'id="parent-{sales.id}"'):]
    sales_form = sales_form[: sales_form.index("</select>")]
    assert str(east.id) not in sales_form
    assert f'value="{sales.id}"' not in sales_form


def test_the_audit_log_filters_and_says_what_changed_in_words(client, db, tenant) -> None:
    with db.transaction(tenant) as s:
        dept = services.save_department(s, Actor.system("test"), name="华东区", parent_id=None)
    colleague = add_user(db, tenant, "li@acme.test", name="李娜")
    assert sign_in(client, "acme").status_code == 302
    changed = post(client, f"/admin/users/{colleague}", {"role": "manager", "department_id": str(dept.id)})
    assert changed.status_code == 302
    users_only = page(client.get("/admin/audit?type=user", headers=ZH))
    log = users_only[users_only.index('id="audit-table"'):]
    assert "创建部门" not in log
    assert "<dt>部门</dt><dd>" in log
    assert "华东区" in log
    assert str(dept.id) not in log, "the department by its name, not its id"
    assert "\\u" not in log
    departments = page(client.get("/admin/audit?type=department", headers=ACME))
    assert "Department created" in departments
    assert "User changed" not in departments[departments.index('id="audit-table"'):]
    nothing = page(client.get("/admin/audit?from=2000-01-01&to=2000-01-02", headers=ACME))
    assert 'id="audit-empty"' in nothing
    for bad in ("from=2026-13-01", "type=planet", "actor=nobody", "from=2026-02-02&to=2026-02-01"):
        assert client.get(f"/admin/audit?{bad}", headers=ACME).status_code == 422, bad


def test_the_audit_log_pages_back_and_forth_by_keyset(client, db, tenant) -> None:
    with db.transaction(tenant) as s:
        for i in range(60):
            services.save_department(s, Actor.system("test"), name=f"D{i:02d}", parent_id=None)
    assert sign_in(client, "acme").status_code == 302
    first = page(client.get("/admin/audit?type=department", headers=ACME))
    older = re.search(r'rel="next" href="([^"]+)"', first)
    assert older is not None
    assert 'rel="prev"' not in first
    second = page(client.get(older.group(1), headers=ACME))
    assert "D00" in second
    assert "D59" not in second
    newer = re.search(r'rel="prev" href="([^"]+)"', second)
    assert newer is not None
    assert "type=department" in newer.group(1), "the filters follow the pages"
    back = page(client.get(newer.group(1), headers=ACME))
    assert "D59" in back
    assert "D09" not in back
