"""Chinese and English through gettext (Flask-Babel): the catalog covers every message, messages are
translated by id and parameters in the request's language, user input in a message is bounded."""

from __future__ import annotations

import ast
import datetime as dt
import io
import re
import shlex
from collections.abc import Callable, Iterator
from decimal import Decimal
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from flask import render_template_string

from core import errors as core_errors
from core.errors import DomainError
from core.i18n import (
    MAX_PARAM_CHARS,
    SHOWN_CHARS,
    Message,
    _l,
    _ln,
    both,
    catalog_path,
    format_currency,
    format_date,
    format_datetime,
    format_decimal,
    format_number,
    format_percent,
    negotiate,
    rendered,
    shown,
)
from core.security import password_problem
from core.settings import project_root
from core.tenancy import validate_slug
from tenants import errors as tenant_errors
from tenants import services
from tests.conftest import _csrf_from, host, sign_in

ROOT = project_root()
CJK_RE = re.compile(r"[\u4e00-\u9fff]")
PLACEHOLDER_RE = re.compile(r"%\((\w+)\)[sd]")
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


# --------------------------------------------------------------------------- the catalog


def _keywords() -> list[str]:
    """The extraction keywords of `make i18n`, read from the Makefile so that both agree."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("I18N_KEYWORDS"))
    return shlex.split(line.partition(":=")[2])


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """What `make i18n` would extract today, into a temporary template."""
    pot = tmp_path_factory.mktemp("i18n") / "messages.pot"
    CommandLineInterface().run([
        "pybabel", "-q", "extract", "-F", str(ROOT / "babel.cfg"), *_keywords(),
        "--ignore-dirs=.* ._ __pycache__ var node_modules tests bench migrations docs",
        "-o", str(pot), str(ROOT)])
    with pot.open("rb") as fh:
        return read_po(fh)


@pytest.fixture(scope="module")
def chinese() -> Catalog:
    with catalog_path("zh").open("rb") as fh:
        return read_po(fh, locale="zh_CN")


def _ids(message: Any) -> tuple[str, ...]:
    return message.id if isinstance(message.id, tuple) else (message.id,)


def _strings(message: Any) -> tuple[str, ...]:
    return message.string if isinstance(message.string, tuple) else (message.string,)


def test_extraction_finds_messages_of_services_views_and_templates(extracted: Catalog) -> None:
    ids = {_ids(m)[0] for m in extracted if m.id}
    # A keyword missing from the Makefile would silently leave a whole kind of message out.
    assert "'%(email)s' is not a valid e-mail address." in ids  # _l, a service
    assert "Use at least %(num)d character." in ids  # _ln, core
    assert "Wrong e-mail or password." in ids  # _, a view
    assert "Welcome, %(name)s" in ids  # a template
    assert "Not found." in ids  # tenants.context
    assert len(ids) > 200


def test_every_message_has_its_chinese_entry(extracted: Catalog, chinese: Catalog) -> None:
    problems: list[str] = []
    for message in extracted:
        if not message.id:
            continue
        entry = chinese.get(message.id)
        where = f"{_ids(message)[0]!r} ({', '.join(sorted({p for p, _ in message.locations}))})"
        if entry is None:
            problems.append(f"missing: {where}")
            continue
        if entry.fuzzy:
            problems.append(f"fuzzy: {where}")
        if _ids(entry) != _ids(message):
            problems.append(f"plural forms differ from the code: {where}")
        texts = _strings(entry)
        if not all(t and t.strip() for t in texts):
            problems.append(f"empty: {where}")
            continue
        wanted = set(PLACEHOLDER_RE.findall(_ids(message)[-1]))
        for text in texts:
            if set(PLACEHOLDER_RE.findall(text)) != wanted:
                problems.append(f"placeholders {sorted(wanted)} not kept: {where} -> {text!r}")
            # Translated, not copied (names such as "API" aside).
            if not CJK_RE.search(text) and text != _ids(message)[0]:
                problems.append(f"not Chinese: {where} -> {text!r}")
    assert not problems, "run `make i18n`, then translate in web/translations/zh/LC_MESSAGES/messages.po:\n" + \
        "\n".join(problems)


def test_the_catalog_holds_nothing_the_code_no_longer_says(extracted: Catalog, chinese: Catalog) -> None:
    stale = sorted(_ids(m)[0] for m in chinese if m.id and extracted.get(m.id) is None)
    assert not stale, f"run `make i18n` to drop them: {stale}"


def test_the_catalog_compiles_and_its_format_strings_check(chinese: Catalog) -> None:
    assert chinese.num_plurals == 1  # Chinese has one plural form
    errors = [(m.id, [str(e) for e in errs]) for m, errs in chinese.check()]
    assert not errors
    buffer = io.BytesIO()
    write_mo(buffer, chinese)
    buffer.seek(0)
    compiled = Translations(buffer)
    assert compiled.gettext("Sign in") == "登录"
    assert compiled.ngettext("Use at least %(num)d character.", "Use at least %(num)d characters.", 1) \
        == "至少使用 %(num)d 个字符。"


def test_the_installed_compiled_catalog_is_current() -> None:
    # `make install` compiles it; the app refuses to start without it (courtyard.app).
    compiled = catalog_path("zh", ".mo")
    assert compiled.is_file()
    assert compiled.stat().st_mtime >= catalog_path("zh").stat().st_mtime


# --------------------------------------------------------------------------- messages in the code


def _error_classes() -> set[str]:
    found: set[str] = set()
    stack: list[type] = [DomainError]
    while stack:
        cls = stack.pop()
        found.add(cls.__name__)
        stack.extend(cls.__subclasses__())
    assert {"ValidationFailed", "SlugTaken", "TooManyRequests"} <= found, (core_errors, tenant_errors)
    return found


def _literal(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or isinstance(node, ast.JoinedStr)


def test_messages_in_the_code_are_catalog_messages_not_built_text() -> None:
    """Errors, flashes, page errors and field errors carry `_l(...)` / `_(...)`, never literal or
    f-string text (which no catalog lookup finds). Old-style messages merged from elsewhere show up here."""
    classes = _error_classes()
    offenders: list[str] = []
    for path in sorted((ROOT / "platform").rglob("*.py")):
        rel = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            candidates: list[ast.AST] = []
            if (name in classes or name == "flash") and node.args:
                candidates.append(node.args[0])
            for kw in node.keywords:
                if kw.arg == "error" or (kw.arg == "message" and name == "render_template"):
                    candidates.append(kw.value)
                if kw.arg == "field_errors" and isinstance(kw.value, ast.Dict):
                    for value in kw.value.values:
                        candidates.extend(value.elts if isinstance(value, ast.List) else [value])
            offenders += [f"{rel}:{c.lineno}" for c in candidates if _literal(c)]
    assert not offenders, "wrap these messages in _l(...) (services) or _(...) (views):\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- translated when shown


@pytest.fixture
def zh_request(app: Any) -> Iterator[None]:
    with app.test_request_context("/", headers=ZH):
        yield


@pytest.fixture
def en_request(app: Any) -> Iterator[None]:
    with app.test_request_context("/", headers={"Accept-Language": "en-US"}):
        yield


def _raised(call: Callable[[], object]) -> DomainError:
    with pytest.raises(DomainError) as info:
        call()
    return info.value


SERVICE_ERRORS: list[tuple[Callable[[], object], str | None]] = [
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
]


@pytest.mark.parametrize(("make", "value"), SERVICE_ERRORS)
def test_service_errors_come_out_in_the_request_language(app: Any, make: Callable[[], object],
                                                         value: str | None) -> None:
    exc = _raised(make)  # raised outside any request: translated only when shown
    assert isinstance(exc.message, Message)
    messages = [exc.message, *(m for msgs in exc.field_errors.values() for m in msgs)]
    english = [str(m) for m in messages]
    with app.test_request_context("/", headers=ZH):
        chinese = [str(m) for m in messages]
    for en, zh in zip(english, chinese, strict=True):
        assert CJK_RE.search(zh), zh
        assert not CJK_RE.search(en), en
        # What the user typed survives translation untouched.
        if value is not None and value in en:
            assert value in zh
    with app.test_request_context("/", headers={"Accept-Language": "en"}):
        assert [str(m) for m in messages] == english


def test_outside_a_request_messages_are_english_and_the_cli_does_not_need_an_app() -> None:
    # No app, no request: the CLI prints errors with str(), as Exception does.
    exc = _raised(lambda: services.clean_email("nobody"))
    assert str(exc) == "'nobody' is not a valid e-mail address."
    assert f"{exc.message}" == "'nobody' is not a valid e-mail address."
    nested = _raised(lambda: validate_slug("www"))
    assert str(nested.message) == "Invalid slug: 'www' is reserved."
    assert rendered({"slug": [nested.message], "n": 1}) == {"slug": ["Invalid slug: 'www' is reserved."], "n": 1}


def test_nested_messages_and_plurals(app: Any, zh_request: None) -> None:
    assert str(_raised(lambda: validate_slug("www")).message) == "工作区地址无效：“www”是保留名称。"
    assert str(_raised(lambda: services.check_password("aaaaaaaaaaaaaa")).message) == "密码不可用：此密码太容易被猜到。"
    problem = password_problem("")
    assert problem is not None
    assert str(problem) == "至少使用 10 个字符。"
    seconds = _ln("This workspace has made too many API requests; try again in %(num)d second.",
                  "This workspace has made too many API requests; try again in %(num)d seconds.", 1)
    assert str(seconds) == "此工作区的 API 请求过多，请在 1 秒后重试。"


def test_english_plurals(en_request: None) -> None:
    one = "This workspace has made too many API requests; try again in %(num)d second."
    many = "This workspace has made too many API requests; try again in %(num)d seconds."
    assert str(_ln(one, many, 1)) == "This workspace has made too many API requests; try again in 1 second."
    assert str(_ln(one, many, 30)) == "This workspace has made too many API requests; try again in 30 seconds."
    assert str(_l("Unknown message %(x)s", x="y")) == "Unknown message y"  # not in the catalog: English


def test_both_languages_side_by_side_for_mail(zh_request: None) -> None:
    message = _l("You are invited to %(name)s on Courtyard", name="Acme 艾克米")
    assert both(message) == "邀请您加入 Courtyard 上的 Acme 艾克米 · You are invited to Acme 艾克米 on Courtyard"
    # The request's own language is back afterwards.
    assert str(_l("Sign in")) == "登录"


def test_templates_translate_with_named_parameters_and_escape_them(zh_request: None) -> None:
    html = render_template_string("{{ _('Welcome, %(name)s', name=who) }}|{{ msg }}", who="<b>王</b>",
                                  msg=_l("'%(email)s' is not a valid e-mail address.", email="<x>"))
    assert html == "欢迎，&lt;b&gt;王&lt;/b&gt;|“&lt;x&gt;”不是有效的电子邮箱地址。"


# --------------------------------------------------------------------------- bounded input in messages


def test_user_values_in_messages_are_bounded() -> None:
    assert shown("short") == "short"
    cut = shown("x" * 200_000)
    assert len(cut) == SHOWN_CHARS
    assert cut.endswith("…")
    assert shown("y" * 100, 10, ellipsis="...") == "yyyyyyy..."
    # Every string parameter of every message is capped, whoever forgot shown().
    message = _l("Invitation sent to %(email)s.", email="z" * 500_000)
    assert len(str(message)) < MAX_PARAM_CHARS + 40
    assert str(_l("%(n)s", n=12)) == "12"
    assert message.params["email"] == "z" * (MAX_PARAM_CHARS - 1) + "…"


def test_an_invalid_email_of_200_kb_is_quoted_short(zh_request: None) -> None:
    exc = _raised(lambda: services.clean_email("a" * 200_000 + "@"))
    text = str(exc.message)
    assert text == "“" + "a" * (SHOWN_CHARS - 1) + "…”不是有效的电子邮箱地址。"


def _form_error(response: Any) -> str:
    match = re.search(r'id="form-error">(.*?)</div>', response.get_data(as_text=True), re.DOTALL)
    assert match is not None, response.get_data(as_text=True)[:2000]
    return unescape(match.group(1))


def test_signup_with_a_200_kb_email_in_chinese_is_refused_with_a_short_message(client: Any, db: Any) -> None:
    token = _csrf_from(client.get("/signup", headers=ZH).get_data(as_text=True))
    huge = "李" * 100_000 + "@example"  # 200 kB as UTF-8 (300 kB), not an address: no dot after the @
    response = client.post("/signup", headers=ZH, data={
        "company": "Big 大", "slug": "big-input", "email": huge, "password": "a long enough password",
        "csrf_token": token})
    assert response.status_code == 422
    # The sign-up form says each problem beside its field; the summary on top only counts them, so
    # nothing of the huge value is quoted in any message.
    message = _form_error(response)
    assert message == "请更正下面标出的字段（共 1 处）。"
    assert re.search(r'data-error-for="email">请输入有效的电子邮箱地址。<', response.get_data(as_text=True))


def test_an_admin_invitation_with_a_200_kb_email_is_refused_with_a_short_message(client: Any, tenant: Any) -> None:
    acme = host("acme")
    assert sign_in(client, "acme").status_code == 302
    token = _csrf_from(client.get("/home", headers=acme).get_data(as_text=True))
    response = client.post("/admin/users/invite", headers={**acme, **ZH}, data={
        "email": "x" * 200_000 + "@", "name": "Big", "role": "sales", "csrf_token": token})
    assert response.status_code == 422
    message = _form_error(response)
    assert message == "“" + "x" * (SHOWN_CHARS - 1) + "…”不是有效的电子邮箱地址。"


def test_api_errors_are_translated_per_request(client: Any, tenant: Any) -> None:
    acme = host("acme")
    english = client.get("/api/v1/users", headers={**acme, "Accept-Language": "en"})
    chinese = client.get("/api/v1/users", headers={**acme, **ZH})
    assert english.status_code == chinese.status_code == 401
    assert english.get_json()["message"] == "Sign in or send a bearer token."
    assert chinese.get_json()["message"] == "请登录或发送 Bearer 令牌。"
    assert chinese.get_json()["code"] == english.get_json()["code"]
    # Werkzeug's own errors too, looked up by their exact text.
    missing = client.get("/api/v1/nothing-here", headers={**acme, **ZH})
    assert missing.status_code == 404
    assert missing.get_json()["message"].startswith("服务器上找不到请求的网址")


def test_field_errors_in_json_are_translated(client: Any, tenant: Any) -> None:
    acme = host("acme")
    assert sign_in(client, "acme").status_code == 302
    token = _csrf_from(client.get("/home", headers=acme).get_data(as_text=True))
    response = client.post("/api/v1/users", headers={**acme, **ZH, "X-CSRF-Token": token},
                           json={"email": "not-an-address"})
    assert response.status_code == 422
    body = response.get_json()
    assert body["message"] == "“not-an-address”不是有效的电子邮箱地址。"
    assert body["errors"] == {"email": ["请输入有效的电子邮箱地址。"]}


def test_pages_follow_the_session_choice_over_the_browser(client: Any, tenant: Any) -> None:
    acme = host("acme")
    page = client.get("/sign-in", headers={**acme, **ZH}).get_data(as_text=True)
    assert "登录 Acme 艾克米" in page
    token = _csrf_from(page)
    client.post("/locale", headers={**acme, **ZH}, data={"locale": "en", "csrf_token": token})
    assert "Sign in to Acme 艾克米" in client.get("/sign-in", headers={**acme, **ZH}).get_data(as_text=True)


def test_permission_labels_follow_the_reader(client: Any, tenant: Any) -> None:
    acme = host("acme")
    assert sign_in(client, "acme").status_code == 302
    assert "See colleagues" in client.get("/admin/roles", headers={**acme, "Accept-Language": "en"}).get_data(
        as_text=True)
    assert "查看同事" in client.get("/admin/roles", headers={**acme, **ZH}).get_data(as_text=True)


# --------------------------------------------------------------------------- CLDR formats


MOMENT = dt.datetime(2026, 11, 3, 14, 5, 9, tzinfo=dt.UTC)


def test_cldr_formats_in_english(en_request: None) -> None:
    assert format_date(MOMENT.date()) == "Nov 3, 2026"
    assert format_datetime(MOMENT) == "Nov 3, 2026, 2:05:09\u202fPM"
    assert format_number(1234567) == "1,234,567"
    assert format_decimal(Decimal("1234.5"), "#,##0.00") == "1,234.50"
    assert format_currency(Decimal("1234.5"), "CNY") == "CN¥1,234.50"
    assert format_currency(1234.5, "USD") == "$1,234.50"
    assert format_percent(0.256) == "26%"


def test_cldr_formats_in_chinese(zh_request: None) -> None:
    assert format_date(MOMENT.date()) == "2026年11月3日"
    assert format_datetime(MOMENT) == "2026年11月3日 14:05:09"
    assert format_number(1234567) == "1,234,567"
    assert format_currency(Decimal("1234.5"), "CNY") == "¥1,234.50"
    assert format_currency(1234.5, "USD") == "US$1,234.50"
    assert format_percent(0.256) == "26%"


def test_cldr_formats_as_template_filters(zh_request: None) -> None:
    html = render_template_string("{{ t|datetimeformat }} {{ t|dateformat('short') }} {{ n|numberformat }} "
                                  "{{ a|currencyformat('CNY') }}", t=MOMENT, n=12345, a=Decimal("9.9"))
    assert html == "2026年11月3日 14:05:09 2026/11/3 12,345 ¥9.90"


def test_formats_outside_a_request_are_english() -> None:
    assert format_currency(5, "EUR") == "€5.00"
    assert format_datetime(MOMENT.replace(tzinfo=None)) == "Nov 3, 2026, 2:05:09\u202fPM"


# --------------------------------------------------------------------------- negotiation


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


def test_the_old_json_catalog_is_gone() -> None:
    assert not (ROOT / "web" / "i18n").exists()
    source = (ROOT / "platform" / "core" / "i18n.py").read_text(encoding="utf-8")
    assert "import re" not in source
    assert "zh.json" not in source
    assert Path(catalog_path("zh")).is_file()
