"""Chinese and English, side by side: English text is the message key, Chinese comes from a catalog.

The catalog is a flat JSON file (``web/i18n/zh.json``) so translators need no tooling; a test checks
that every message used in templates has a Chinese entry.

Services raise messages with their values already filled in ("The slug 'acme' is already taken."),
which no exact lookup can find; a catalog key with ``{name}`` placeholders therefore also matches such
a filled-in message, and the values it captured are themselves looked up ("Invalid slug: {reason}").
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from core.settings import project_root

LOCALES = ("en", "zh")
LOCALE_NAMES = {"en": "English", "zh": "中文"}


def catalog_path(locale: str) -> Path:
    return project_root() / "web" / "i18n" / f"{locale}.json"


@lru_cache(maxsize=4)
def catalog(locale: str) -> dict[str, str]:
    if locale == "en":
        return {}
    with catalog_path(locale).open(encoding="utf-8") as fh:
        data: dict[str, str] = json.load(fh)
    return data


_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


@lru_cache(maxsize=4)
def _patterns(locale: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """The catalog's keys with placeholders as regexes, the most specific (most literal text) first."""
    found: list[tuple[int, re.Pattern[str], str]] = []
    for key, value in catalog(locale).items():
        pieces = _PLACEHOLDER.split(key)
        names, literal = pieces[1::2], "".join(pieces[0::2])
        if not names or len(set(names)) != len(names) or not literal.strip():
            continue
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(pieces))
        found.append((len(literal), re.compile(regex, re.DOTALL), value))
    found.sort(key=lambda item: -item[0])
    return tuple((rx, value) for _, rx, value in found)


def _filled(locale: str, message: str, depth: int) -> str:
    table = catalog(locale)
    exact = table.get(message)
    if exact is not None or depth == 0:
        return exact if exact is not None else message
    for rx, value in _patterns(locale):
        match = rx.fullmatch(message)
        if match is None:
            continue
        values = {k: _filled(locale, v, depth - 1) for k, v in match.groupdict().items()}
        try:
            return value.format(**values)
        except (KeyError, IndexError, ValueError):
            return message
    return message


def translate(locale: str, message: str, **params: object) -> str:
    if locale not in LOCALES or locale == "en":
        return message.format(**params) if params else message
    if params:
        return catalog(locale).get(message, message).format(**params)
    return _filled(locale, message, depth=2)


def negotiate(accept_language: str | None, default: str = "en") -> str:
    """Pick ``zh`` or ``en`` from an Accept-Language header (``zh-CN,zh;q=0.9,en;q=0.8``)."""
    if not accept_language:
        return default
    best, best_q = default, -1.0
    for part in accept_language.split(","):
        lang, _, params = part.strip().partition(";")
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
