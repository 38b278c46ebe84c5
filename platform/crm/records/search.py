"""Search text analysis (placeholder until the search branch lands: same functions, simpler rules)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Text, cast, func

_CJK = re.compile(r"[\u3400-\u9fff]+")
_WORD = re.compile(r"[0-9a-z]+")


def document_tokens(texts: Iterable[str]) -> list[str]:
    out: list[str] = []
    for raw in texts:
        text = (raw or "")[:1000].casefold()
        for run in _CJK.findall(text):
            out.extend(run)
            out.extend(run[i:i + 2] for i in range(len(run) - 1))
        out.extend(_WORD.findall(text))
    return sorted(set(out))[:2000]


def query(text: str) -> str | None:
    text = (text or "")[:200].casefold()
    terms: list[str] = []
    for run in _CJK.findall(text):
        terms.extend([run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)])
    terms.extend(f"{w}:*" for w in _WORD.findall(text))
    return " & ".join(f"'{t}'" if not t.endswith(":*") else f"'{t[:-2]}':*" for t in terms[:20]) or None


def sort_key(text: str) -> str:
    return (text or "").casefold()[:200]


def to_vector(tokens: list[str]) -> Any:
    return func.array_to_tsvector(cast(tokens, ARRAY(Text)))


def matches(column: Any, text: str) -> ColumnElement[bool] | None:
    q = query(text)
    if q is None:
        return None
    return column.bool_op("@@")(func.to_tsquery("simple", q))  # type: ignore[no-any-return]
