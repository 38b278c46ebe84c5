"""Chinese and English, side by side: gettext catalogs through Flask-Babel, and Babel's CLDR formats.

How to write a message
======================

The English text is the message id; its Chinese lives in the gettext catalog
``web/translations/zh/LC_MESSAGES/messages.po``. Placeholders are named, ``%(name)s`` (``%(num)d``
for the count of a plural), so a translation may put them in any order.

- Services, errors and anything built at import time create a lazy :class:`Message` with :func:`_l`
  (or :func:`_ln` where a count decides the wording). It is translated only when it is shown, in the
  locale of the request that shows it; the CLI and tasks, which have no request, get English::

      from core.i18n import _l, _ln, shown

      raise ValidationFailed(_l("'%(email)s' is not a valid e-mail address.", email=shown(email)),
                             field_errors={"email": [_l("Enter a valid e-mail address.")]})
      _ln("Retry in %(num)d second.", "Retry in %(num)d seconds.", seconds)

- Views translate at once with :func:`_` / :func:`_n` (they run inside the request), e.g. for ``flash``.
- Templates: ``{{ _('Welcome, %(name)s', name=user.name) }}`` and ``{{ ngettext(...) }}``; a Message
  passed to a template is rendered (and escaped) as it is: never wrap it in ``_()`` again.
- Dates, numbers and money: :func:`format_date`, :func:`format_datetime`, :func:`format_number`,
  :func:`format_decimal`, :func:`format_currency`, :func:`format_percent`; in templates the filters of
  the same job (``datetimeformat``, ``dateformat``, ``numberformat``, ``decimalformat``,
  ``currencyformat``, ``percentformat``).

Never build the text before translating it (no f-string, ``+`` or ``.format`` around the id): the
catalog is looked up by the id alone. Quote what a user typed only through :func:`shown`, a short
display form; every string parameter is cut at :data:`MAX_PARAM_CHARS` anyway, so no message ever
carries unbounded input. Then run ``make i18n`` and write the Chinese into the ``.po`` file: a test
fails while any message lacks its translation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import flask
import flask_babel
from babel import Locale, dates, numbers

from core.settings import project_root

#: The interface languages as users and settings name them.
LOCALES = ("en", "zh")
LOCALE_NAMES = {"en": "English", "zh": "中文"}
#: What Babel calls them: the Chinese catalog and the CLDR formats are those of mainland China.
BABEL_LOCALES = {"en": "en", "zh": "zh_CN"}
DOMAIN = "messages"
#: How much of a user's value :func:`shown` quotes in a message.
SHOWN_CHARS = 40
#: No string parameter of a message is longer than this (every valid name or address fits).
MAX_PARAM_CHARS = 256


def translations_dir() -> Path:
    return project_root() / "web" / "translations"


def catalog_path(locale: str = "zh", suffix: str = ".po") -> Path:
    """Catalogs are named by the interface language (``zh``), not by Babel's ``zh_CN``: Babel calls that
    locale ``zh_Hans_CN``, and gettext finds the catalog of a ``zh_Hans_CN`` request under ``zh``."""
    return translations_dir() / locale / "LC_MESSAGES" / f"{DOMAIN}{suffix}"


def shown(value: object, limit: int = SHOWN_CHARS, ellipsis: str = "…") -> str:
    """``value`` as a message may quote it: at most ``limit`` characters, cut ones ending in "…".

    For what a user typed and the platform refuses: the input is still refused whole, never stored cut.
    """
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - len(ellipsis)] + ellipsis


def _bounded(value: object) -> Param:
    if isinstance(value, (Message, int, float, Decimal)) and not isinstance(value, bool):
        return value
    return shown(value, MAX_PARAM_CHARS)


class Message:
    """A message id, its parameters and (for plurals) its count: translated when turned into text."""

    __slots__ = ("msgid", "num", "params", "plural")

    def __init__(self, msgid: str, params: Mapping[str, object] | None = None, *, plural: str | None = None,
                 num: int | None = None) -> None:
        self.msgid = msgid
        self.plural = plural
        self.num = num
        self.params: dict[str, Param] = {k: _bounded(v) for k, v in (params or {}).items()}

    def __str__(self) -> str:
        # flask_babel answers English (the id) when there is no app context: the CLI, tasks, tests.
        if self.plural is None:
            return str(flask_babel.gettext(self.msgid, **self.params))
        return str(flask_babel.ngettext(self.msgid, self.plural, self.num, **self.params))

    def __repr__(self) -> str:
        return f"Message({self.msgid!r}, {self.params!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.msgid, self.plural, self.num, self.params) == (other.msgid, other.plural, other.num,
                                                                    other.params)

    def __hash__(self) -> int:
        return hash((self.msgid, self.plural, self.num))


Param = str | int | float | Decimal | Message
#: What errors and templates accept: a Message, or plain text that needs no translation.
Text = Message | str


def _l(msgid: str, **params: object) -> Message:
    """A lazy message (see the module docstring); extracted by ``make i18n``."""
    return Message(msgid, params)


def _ln(singular: str, plural: str, num: int, **params: object) -> Message:
    """A lazy message whose wording depends on ``num`` (``%(num)d`` in the text)."""
    return Message(singular, params, plural=plural, num=num)


def _(msgid: str, **params: object) -> str:
    """Translate now, in the current request's locale (views)."""
    return str(Message(msgid, params))


def _n(singular: str, plural: str, num: int, **params: object) -> str:
    return str(Message(singular, params, plural=plural, num=num))


def rendered(value: object) -> object:
    """``value`` with every Message in it (in lists and dicts too) turned into text, e.g. for JSON."""
    if isinstance(value, Message):
        return str(value)
    if isinstance(value, dict):
        return {k: rendered(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rendered(v) for v in value]
    return value


@contextmanager
def in_locale(locale: str) -> Iterator[None]:
    """Messages turned into text inside this block use ``locale`` (``en`` or ``zh``)."""
    with flask_babel.force_locale(BABEL_LOCALES[locale]):
        yield


_catalog_app: flask.Flask | None = None


@contextmanager
def catalogs() -> Iterator[None]:
    """The catalogs within reach outside any request too (the CLI, tasks): Flask-Babel translates only
    inside an app context, so a bare app that knows where the catalogs are lends one. Inside the app,
    nothing changes."""
    global _catalog_app  # noqa: PLW0603 - one small app per process, made on first use
    if flask.has_app_context():
        yield
        return
    if _catalog_app is None:
        app = flask.Flask("courtyard-catalogs")
        app.config.update(BABEL_DEFAULT_LOCALE="en", BABEL_TRANSLATION_DIRECTORIES=str(translations_dir()))
        flask_babel.Babel(app)
        _catalog_app = app
    with _catalog_app.app_context():
        yield


def both(message: Message, sep: str = " · ") -> str:
    """Chinese and English side by side, for mail whose reader may not share the sender's language.

    Works in the CLI and in tasks as well as in a request (see :func:`catalogs`)."""
    with catalogs():
        with in_locale("zh"):
            chinese = str(message)
        with in_locale("en"):
            english = str(message)
    return f"{chinese}{sep}{english}"


def negotiate(accept_language: str | None, default: str = "en") -> str:
    """Pick ``zh`` or ``en`` from an Accept-Language header (``zh-CN,zh;q=0.9,en;q=0.8``)."""
    if not accept_language:
        return default
    best, best_q = default, -1.0
    for part in accept_language.split(","):
        lang, _sep, params = part.strip().partition(";")
        code = lang.strip().lower().split("-")[0]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if code in LOCALES and q > best_q:
            best, best_q = code, q
    return best


# --------------------------------------------------------------------------- CLDR formats


def current_locale() -> Locale:
    """The Babel locale of the current request (set by the app's locale selector), else English."""
    return flask_babel.get_locale() or Locale.parse("en")


def format_date(value: dt.date, format: str = "medium") -> str:  # noqa: A002 - Babel's own name
    return dates.format_date(value, format, locale=current_locale())


def format_datetime(value: dt.datetime, format: str = "medium") -> str:  # noqa: A002
    """Stored times are UTC and are shown as UTC (no per-user time zone yet); naive ones count as UTC."""
    return dates.format_datetime(value, format, tzinfo=dt.UTC, locale=current_locale())


def format_number(value: int | float | Decimal) -> str:
    return numbers.format_decimal(value, locale=current_locale())


def format_decimal(value: int | float | Decimal, format: str | None = None) -> str:  # noqa: A002
    return numbers.format_decimal(value, format=format, locale=current_locale())


def format_currency(value: int | float | Decimal, currency: str, format: str | None = None) -> str:  # noqa: A002
    """``currency`` is an ISO 4217 code (CNY, USD); digits follow the currency's own rule."""
    return numbers.format_currency(value, currency, format=format, locale=current_locale())


def format_percent(value: int | float | Decimal, format: str | None = None) -> str:  # noqa: A002
    return numbers.format_percent(value, format=format, locale=current_locale())


#: The template filters (``{{ order.total|currencyformat('CNY') }}``), same names as Flask-Babel's.
FILTERS = {
    "dateformat": format_date,
    "datetimeformat": format_datetime,
    "numberformat": format_number,
    "decimalformat": format_decimal,
    "currencyformat": format_currency,
    "percentformat": format_percent,
}
