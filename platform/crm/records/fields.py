"""Field definitions: what an entity declares once, and what every list, form, import and API reads.

A :class:`Field` is either a column of the entity's table (declared in code by the entity) or a
custom field (a row of ``custom_fields``, stored in the record's ``custom`` JSONB). Both are validated
and converted by the same :func:`convert`, so a value typed in a form, sent to the API or read from an
import file is checked by one set of rules.

Labels are data, not messages: custom fields carry their two labels as the tenant typed them, and the
built-in ones carry theirs the same way, so that an import file's headers can be matched against both
languages at once (the source documents' own Chinese headers among them).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from core.db import text_problem
from core.i18n import Message, _l, shown


class FieldType(enum.StrEnum):
    TEXT = "text"
    LONGTEXT = "longtext"
    NUMBER = "number"
    MONEY = "money"
    DATE = "date"
    DATETIME = "datetime"
    CHOICE = "choice"
    MULTI = "multi"
    BOOL = "bool"
    USER = "user"
    URL = "url"
    EMAIL = "email"
    PHONE = "phone"
    #: A value of one of the tenant's dictionaries (customer nature, industry, region …), by code.
    DICT = "dict"
    #: Another record (a customer's parent company, a contact's customer), by id.
    REF = "ref"
    TAGS = "tags"


#: The types a tenant admin may give a custom field (DICT, REF and TAGS are for built-in fields).
CUSTOM_TYPES = (FieldType.TEXT, FieldType.LONGTEXT, FieldType.NUMBER, FieldType.MONEY, FieldType.DATE,
                FieldType.DATETIME, FieldType.CHOICE, FieldType.MULTI, FieldType.BOOL, FieldType.USER,
                FieldType.URL, FieldType.EMAIL, FieldType.PHONE)

TYPE_LABELS: dict[FieldType, Message] = {
    FieldType.TEXT: _l("Text"), FieldType.LONGTEXT: _l("Long text"), FieldType.NUMBER: _l("Number"),
    FieldType.MONEY: _l("Money"), FieldType.DATE: _l("Date"), FieldType.DATETIME: _l("Date and time"),
    FieldType.CHOICE: _l("Choice"), FieldType.MULTI: _l("Multiple choice"), FieldType.BOOL: _l("Yes / no"),
    FieldType.USER: _l("User"), FieldType.URL: _l("Web address"), FieldType.EMAIL: _l("Email"),
    FieldType.PHONE: _l("Phone"), FieldType.DICT: _l("Dictionary"), FieldType.REF: _l("Record"),
    FieldType.TAGS: _l("Tags"),
}

TEXT_MAX = 200
LONGTEXT_MAX = 10_000
MULTI_MAX = 50
NUMBER_MAX = Decimal("1e15")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,63}")
#: Mobile (11 digits, optional +86), area code + number, or an international number: digits and the
#: usual separators, 5 to 20 digits in all.
PHONE_CHARS_RE = re.compile(r"\+?[0-9 ()\-./]{5,30}(?:\s*(?:ext\.?|x|转)\s*[0-9]{1,6})?")
URL_RE = re.compile(r"(?:https?://)?[A-Za-z0-9\-._~%]+(?:\.[A-Za-z0-9\-]+)+(?::[0-9]{1,5})?(?:[/?#][^\s]*)?")
TAG_RE = re.compile(r"[^\s,;，；]{1,40}")


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    label_en: str
    label_zh: str

    def label(self, locale: str) -> str:
        return (self.label_zh if locale == "zh" else self.label_en) or self.label_en or self.value


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    type: FieldType
    label_en: str
    label_zh: str
    #: More headers an import file may use for this field (the source documents' own words).
    aliases: tuple[str, ...] = ()
    required: bool = False
    unique: bool = False
    max_length: int | None = None
    choices: tuple[Choice, ...] = ()
    #: DICT: the dictionary kind; REF: the entity key of the record referred to.
    target: str | None = None
    default: Any = None
    custom: bool = False
    #: Shown in a new list view's columns, in this order (0 = not by default).
    list_order: int = 0
    searchable: bool = False
    #: Set by the system (number, owner's department …): never from a form, an import or the API.
    readonly: bool = False
    sortable: bool = True
    #: Forms group fields under these headings (free text, one of the entity's sections).
    section: str = "main"
    help_en: str = ""
    help_zh: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def label(self, locale: str) -> str:
        return (self.label_zh if locale == "zh" else self.label_en) or self.label_en or self.key

    @property
    def labels(self) -> tuple[str, ...]:
        """Every header an import may use for this field (tabular.map_headers reads it)."""
        return tuple(x for x in (self.label_en, self.label_zh, self.key, *self.aliases) if x)

    @property
    def limit(self) -> int:
        if self.max_length is not None:
            return self.max_length
        return LONGTEXT_MAX if self.type == FieldType.LONGTEXT else TEXT_MAX

    def choice(self, value: str) -> Choice | None:
        return next((c for c in self.choices if c.value == value), None)


class Invalid(ValueError):
    """One value refused; carries a translated message for the field it belongs to."""

    def __init__(self, message: Message) -> None:
        super().__init__(str(message))
        self.message = message


def _text(f: Field, raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        if isinstance(raw, (int, float, Decimal)) and not isinstance(raw, bool):
            raw = str(raw)
        else:
            raise Invalid(_l("Expected text."))
    if len(raw) > f.limit * 4:  # refuse before normalising something huge
        raise Invalid(_l("At most %(max)d characters.", max=f.limit))
    value: str = raw.strip() if f.type != FieldType.LONGTEXT else raw.strip("\r\n ")
    if not value:
        return None
    if len(value) > f.limit:
        raise Invalid(_l("At most %(max)d characters.", max=f.limit))
    problem = text_problem(value)
    if problem:
        raise Invalid(_l("This text cannot be stored: %(problem)s.", problem=problem))
    if f.type != FieldType.LONGTEXT and ("\n" in value or "\r" in value):
        raise Invalid(_l("Line breaks are only allowed in long text."))
    return value


def _number(f: Field, raw: Any) -> Decimal | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise Invalid(_l("Expected a number."))
    if isinstance(raw, str):
        cleaned = raw.strip().replace(",", "").replace("，", "").replace("¥", "").replace("￥", "")
        if len(cleaned) > 40:
            raise Invalid(_l("Expected a number."))
        raw = cleaned
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise Invalid(_l("Expected a number, not '%(value)s'.", value=shown(raw))) from None
    if not value.is_finite() or abs(value) >= NUMBER_MAX:
        raise Invalid(_l("The number is out of range."))
    if f.type == FieldType.MONEY:
        value = value.quantize(Decimal("0.01"))
    elif value == value.to_integral_value():
        value = value.quantize(Decimal(1))
    return value


def parse_date(raw: Any) -> dt.date | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    if not isinstance(raw, str) or len(raw) > 40:
        raise Invalid(_l("Expected a date like 2026-12-02."))
    text = raw.strip().replace("/", "-").replace(".", "-")
    text = text.replace("年", "-").replace("月", "-").replace("日", "")
    try:
        return dt.date.fromisoformat("-".join(p.zfill(2) for p in text.split("-")))
    except ValueError:
        raise Invalid(_l("Expected a date like 2026-12-02, not '%(value)s'.", value=shown(raw))) from None


def parse_datetime(raw: Any) -> dt.datetime | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, dt.datetime):
        value = raw
    elif not isinstance(raw, str) or len(raw) > 40:
        raise Invalid(_l("Expected a date and time like 2026-12-02 09:30."))
    else:
        try:
            value = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(_l("Expected a date and time like 2026-12-02 09:30, not '%(value)s'.",
                             value=shown(raw))) from None
    if value.tzinfo is None:  # a form's local time is the tenant's; we store UTC (see callers)
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


TRUE = frozenset({"1", "true", "yes", "y", "on", "是", "对", "√", "t"})
FALSE = frozenset({"0", "false", "no", "n", "off", "否", "不", "×", "f"})


def _bool(raw: Any) -> bool | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and len(raw) <= 10:
        lowered = raw.strip().casefold()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
    raise Invalid(_l("Expected yes or no."))


def _choice_value(f: Field, raw: str) -> str:
    text = raw.strip()
    for c in f.choices:
        if text in (c.value, c.label_en, c.label_zh) or text.casefold() == c.label_en.casefold():
            return c.value
    raise Invalid(_l("'%(value)s' is not one of the choices.", value=shown(text)))


def _multi(f: Field, raw: Any) -> list[str] | None:
    if raw is None or raw in ("", []):
        return None
    if isinstance(raw, str):
        if len(raw) > 4000:
            raise Invalid(_l("Too many values."))
        items = [p for p in re.split(r"[,;，；|]", raw) if p.strip()]
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise Invalid(_l("Expected a list of values."))
    if len(items) > MULTI_MAX:
        raise Invalid(_l("At most %(max)d values.", max=MULTI_MAX))
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise Invalid(_l("Expected a list of values."))
        value = _choice_value(f, item) if f.type == FieldType.MULTI else _tag(item)
        if value not in out:
            out.append(value)
    return out or None


def _tag(raw: str) -> str:
    value = raw.strip()
    if not TAG_RE.fullmatch(value) or text_problem(value):
        raise Invalid(_l("A tag is 1 to 40 characters without spaces or commas: '%(value)s'.", value=shown(value)))
    return value


def _uuid(raw: Any) -> uuid.UUID | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, uuid.UUID):
        return raw
    if isinstance(raw, str) and len(raw) <= 40:
        try:
            return uuid.UUID(raw.strip())
        except ValueError:
            pass
    raise Invalid(_l("Expected the id of a record."))


def convert(f: Field, raw: Any) -> Any:  # noqa: PLR0912 - one branch per field type
    """``raw`` (form text, JSON value or a cell of an import) as the field's Python value, or Invalid.

    Lookups that need the database (a dictionary code exists, a user or record exists and may be seen)
    are done by the caller (records.services), after every field was converted, so that a form shows
    every error at once.
    """
    t = f.type
    if isinstance(raw, str) and t not in (FieldType.LONGTEXT,) and not raw.strip():
        raw = None
    if t in (FieldType.TEXT, FieldType.LONGTEXT):
        return _text(f, raw)
    if t in (FieldType.NUMBER, FieldType.MONEY):
        return _number(f, raw)
    if t == FieldType.DATE:
        return parse_date(raw)
    if t == FieldType.DATETIME:
        return parse_datetime(raw)
    if t == FieldType.BOOL:
        return _bool(raw)
    if t in (FieldType.MULTI, FieldType.TAGS):
        return _multi(f, raw)
    if t in (FieldType.USER, FieldType.REF):
        return _uuid(raw)
    text = _text(f, raw)
    if text is None:
        return None
    if t == FieldType.CHOICE:
        return _choice_value(f, text)
    if t == FieldType.DICT:
        return text  # checked against the dictionary by the caller
    if t == FieldType.EMAIL:
        if len(text) > 254 or not EMAIL_RE.fullmatch(text):
            raise Invalid(_l("'%(value)s' is not an email address.", value=shown(text)))
        return text
    if t == FieldType.PHONE:
        if not PHONE_CHARS_RE.fullmatch(text) or not 5 <= sum(ch.isdigit() for ch in text) <= 20:
            raise Invalid(_l("'%(value)s' is not a phone number.", value=shown(text)))
        return text
    # FieldType.URL, the last one
    if len(text) > 500 or not URL_RE.fullmatch(text):
        raise Invalid(_l("'%(value)s' is not a web address.", value=shown(text)))
    return text if text.startswith(("http://", "https://")) else f"http://{text}"


def to_json(f: Field, value: Any) -> Any:
    """A converted value as JSON stores it (custom fields live in JSONB; the API answers it)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return str(value) if f.type == FieldType.MONEY else (int(value) if value == value.to_integral_value()
                                                             else float(value))
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def from_json(f: Field, value: Any) -> Any:
    """What :func:`to_json` stored, back as the Python value (for custom fields read from JSONB)."""
    if value is None:
        return None
    try:
        if f.type in (FieldType.NUMBER, FieldType.MONEY):
            return Decimal(str(value))
        if f.type == FieldType.DATE:
            return dt.date.fromisoformat(value)
        if f.type == FieldType.DATETIME:
            return dt.datetime.fromisoformat(value)
        if f.type in (FieldType.USER, FieldType.REF):
            return uuid.UUID(value)
    except (ValueError, TypeError, InvalidOperation):
        return None  # a definition changed type since: the old value reads as empty, it is not lost
    return value


def by_key(fields: Sequence[Field]) -> dict[str, Field]:
    return {f.key: f for f in fields}
