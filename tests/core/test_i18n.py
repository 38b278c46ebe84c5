"""The Chinese catalog covers the UI, and core.i18n picks and fills messages correctly."""

from __future__ import annotations

import ast
import json
import re
import string
from pathlib import Path

import pytest

from core.errors import DomainError
from core.i18n import catalog, negotiate, translate
from core.security import password_problem
from core.settings import project_root
from core.tenancy import validate_slug
from tenants import services

ROOT = project_root()
TEMPLATES = ROOT / "web" / "templates"
CATALOG = ROOT / "web" / "i18n" / "zh.json"
# `_('...')` or `_("...")` with the usual backslash escapes, followed by `)` or `,` (parameters).
MESSAGE_RE = re.compile(r"""\b_\(\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*[,)]""")
CJK_RE = re.compile(r"[\u4e00-\u9fff]")
#: Error classes whose messages reach a page (error page, form error, flash).
ERROR_CLASSES = {"DomainError", "ValidationFailed", "Conflict", "NotFound", "PermissionDenied",
                 "NotAuthenticated", "TooManyRequests", "TenantUnavailable", "TenantNotFound", "SlugTaken",
                 "EmailTaken", "InvalidToken"}
#: Sources whose messages are shown to staff on pages.
UI_SOURCES = ("platform/tenants/views.py", "platform/tenants/services.py", "platform/tenants/context.py",
              "platform/core/tenancy.py", "platform/courtyard/app.py")
#: Messages in those sources that only operators see (start-up failures), never a page.
NOT_UI = {"create_app needs concrete database and Redis URLs; use courtyard.runtime.resolved_settings()"}


def template_messages() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(TEMPLATES.rglob("*.html")):
        for match in MESSAGE_RE.finditer(path.read_text(encoding="utf-8")):
            raw = match.group(1) if match.group(1) is not None else match.group(2)
            message = re.sub(r"\\(.)", r"\1", raw)
            found.setdefault(message, set()).add(str(path.relative_to(ROOT)))
    return found


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_the_extractor_reads_both_quote_styles_and_escapes() -> None:
    sample = """{{ _('Save') }} {{ _("Don't") }} {{ _('It\\'s {n}', n=1) }} {{ gettext_('x') }}"""
    found = [m.group(1) if m.group(1) is not None else m.group(2) for m in MESSAGE_RE.finditer(sample)]
    assert [re.sub(r"\\(.)", r"\1", f) for f in found] == ["Save", "Don't", "It's {n}"]


def test_every_template_message_has_a_chinese_entry() -> None:
    messages = template_messages()
    # The templates really use the catalog: an extractor that found nothing would prove nothing.
    assert len(messages) > 50
    assert "Sign in" in messages
    assert "Welcome, {name}" in messages
    zh = json.loads(CATALOG.read_text(encoding="utf-8"))
    missing = {m: sorted(where) for m, where in messages.items() if not zh.get(m, "").strip()}
    assert not missing, f"add these to web/i18n/zh.json: {json.dumps(missing, ensure_ascii=False, indent=1)}"


def test_catalog_entries_are_chinese_and_keep_their_placeholders() -> None:
    zh = json.loads(CATALOG.read_text(encoding="utf-8"))
    assert zh == catalog("zh")
    for key, value in zh.items():
        assert value.strip(), key
        assert placeholders(value) == placeholders(key), key
        # Every entry is translated, not copied (acronyms like "API" aside).
        assert CJK_RE.search(value) or value == key, key


def _ui_messages() -> list[tuple[str, str]]:
    """Messages the UI sources flash, render as `error`, raise, or give as field errors.

    f-strings come back with a sample value in each hole, as they would reach a page.
    """
    out: list[tuple[str, str]] = []

    def text_of(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(v.value if isinstance(v, ast.Constant) else "x1" for v in node.values)
        return None

    for rel in UI_SOURCES:
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            candidates: list[ast.AST] = []
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if (name in ERROR_CLASSES or name == "flash") and node.args:
                    candidates.append(node.args[0])
                for kw in node.keywords:
                    if kw.arg == "error":
                        candidates.append(kw.value)
                    if kw.arg == "field_errors" and isinstance(kw.value, ast.Dict):
                        for value in kw.value.values:
                            if isinstance(value, ast.List):
                                candidates.extend(value.elts)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("msg", "message")
                                                      for t in node.targets):
                candidates.append(node.value)
            for candidate in candidates:
                text = text_of(candidate)
                if text and text not in NOT_UI:
                    out.append((rel, text))
    return out


def test_messages_raised_or_flashed_for_pages_are_translated() -> None:
    messages = _ui_messages()
    assert len(messages) > 40  # the scan really walked the sources
    assert ("platform/tenants/views.py", "Wrong e-mail or password.") in messages
    untranslated = sorted({f"{rel}: {text}" for rel, text in messages if translate("zh", text) == text})
    assert not untranslated, "add these to web/i18n/zh.json:\n" + "\n".join(untranslated)


def _raised(call: object) -> DomainError:
    with pytest.raises(DomainError) as info:
        call()  # type: ignore[operator]
    return info.value


@pytest.mark.parametrize(("make", "value"), [
    (lambda: validate_slug("www"), "www"),
    (lambda: validate_slug("admin"), "admin"),
    (lambda: validate_slug("ab"), None),
    (lambda: validate_slug("Acme"), None),
    (lambda: validate_slug("acme--x"), None),
    (lambda: validate_slug(""), None),
    (lambda: services.clean_email("not-an-address"), "not-an-address"),
    (lambda: services.clean_name("", "name"), None),
    (lambda: services.clean_name("x" * 300, "name"), "200"),
    (lambda: services.check_password("short"), "10"),
    (lambda: services.check_password("aaaaaaaaaaaaaa"), None),
])
def test_real_service_errors_come_out_in_chinese(make: object, value: str | None) -> None:
    exc = _raised(make)
    for message in [exc.message, *(m for msgs in exc.field_errors.values() for m in msgs)]:
        chinese = translate("zh", message)
        assert chinese != message, message
        assert CJK_RE.search(chinese), chinese
        # What the user typed survives translation untouched.
        if value is not None and value in message:
            assert value in chinese
    assert translate("en", exc.message) == exc.message


def test_password_problems_are_translated() -> None:
    for password in ("", "x" * 300, "abababababab"):
        problem = password_problem(password)
        assert problem is not None
        assert CJK_RE.search(translate("zh", problem)), problem


def test_filled_in_messages_are_matched_and_their_parts_translated() -> None:
    assert translate("zh", "Invalid slug: 'www' is reserved.") == "工作区地址无效：“www”是保留名称。"
    assert translate("zh", "The slug 'acme' is already taken.") == "工作区地址“acme”已被占用。"
    assert translate("zh", "Invitation sent to 李雷@example.cn.") == "邀请已发送至 李雷@example.cn。"
    # A captured value that is itself a catalog message is translated too (nested once).
    nested = translate("zh", "Password refused: This password is too easy to guess.")
    assert nested == "密码不可用：此密码太容易被猜到。"
    # Nothing matches: the English text stays, braces and all.
    assert translate("zh", "Totally new {message}") == "Totally new {message}"
    assert translate("zh", "Invalid slug") == "Invalid slug"


def test_translate_with_params() -> None:
    assert translate("zh", "Welcome, {name}", name="王小明") == "欢迎，王小明"
    assert translate("en", "Welcome, {name}", name="王小明") == "Welcome, 王小明"
    assert translate("zh", "Sign in to {name}", name="Acme 艾克米") == "登录 Acme 艾克米"
    # An unknown message is still filled in, in English.
    assert translate("zh", "Hello {who}", who="Ada") == "Hello Ada"
    # An unknown locale falls back to English.
    assert translate("fr", "Sign in") == "Sign in"
    assert translate("fr", "Welcome, {name}", name="Ada") == "Welcome, Ada"
    assert translate("zh", "Sign in") == "登录"
    assert translate("en", "Sign in") == "Sign in"


@pytest.mark.parametrize(("header", "default", "expected"), [
    (None, "en", "en"),
    ("", "zh", "zh"),
    ("zh-CN,zh;q=0.9,en;q=0.8", "en", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "zh", "en"),
    ("en;q=0.3, zh-TW;q=0.7", "en", "zh"),
    ("ZH-hans", "en", "zh"),
    ("fr-FR,fr;q=0.9", "en", "en"),
    ("fr-FR,fr;q=0.9", "zh", "zh"),
    ("fr, de;q=0.9, zh;q=0.2", "en", "zh"),
    ("zh;q=abc, en;q=0.1", "zh", "en"),
    ("*", "zh", "zh"),
])
def test_negotiate(header: str | None, default: str, expected: str) -> None:
    assert negotiate(header, default) == expected


def test_catalog_file_is_valid_utf8_json_object() -> None:
    data = json.loads(Path(CATALOG).read_bytes().decode("utf-8"))
    assert isinstance(data, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())
