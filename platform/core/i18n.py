"""Chinese and English, side by side: English text is the message key, Chinese comes from a catalog.

The catalog is a flat JSON file (``web/i18n/zh.json``) so translators need no tooling; a test checks
that every message used in templates has a Chinese entry.
"""

from __future__ import annotations

import json
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


def translate(locale: str, message: str, **params: object) -> str:
    text = catalog(locale).get(message, message) if locale in LOCALES else message
    return text.format(**params) if params else text


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
