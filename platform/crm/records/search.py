"""Search text analysis for CRM records: what a record's `search_vector` holds, and how a search box's
input becomes a query against it. Pure functions, plus two SQLAlchemy helpers.

Why not PostgreSQL's own text search configurations: none of them splits Chinese (the 'simple' parser
makes one token of a whole run of ideographs, so 北京 would not find 北京华为), and pg_trgm cannot use
its index for the most common Chinese search, a two-character word. So the application does the
analysis and PostgreSQL only stores and matches lexemes:

- a document is an array of lexemes turned into a `tsvector` with `array_to_tsvector` (no parsing, no
  stemming, no stop words), indexed with GIN;
- a query is a `tsquery` literal of quoted lexemes cast with `CAST(:q AS tsquery)`, which, unlike
  `to_tsquery('simple', :q)`, does not run the parser over our lexemes again (that would split an email
  or a Chinese bigram in ways the document side never did).

The analysis (the same on both sides, so that whatever was stored can be asked for):

- text is normalised with NFKC (full-width Ａ１ → half-width a1, half-width katakana → full-width) and
  casefolded; outside CJK, accents are stripped (Müller → muller);
- runs of CJK characters (Han, kana, Hangul) give every character and every overlapping bigram, as
  Lucene's CJK analyzer does: 北京华为 → 北 京 华 为 北京 京华 华为. A query of one character asks for the
  character, a longer one for all its bigrams (AND);
- runs of Han characters also give their pinyin without tones (phrase-aware, so 重庆 is chongqing),
  whole and by initials, from every syllable to the end of the run: beijinghuawei, jinghuawei, huawei,
  wei, bjhw, jhw, hw, w. Latin query words are prefix matches, so `beijing`, `huawei`, `bjhw` all find
  北京华为. The first character of a run (where a person's surname is) also gives its other readings
  (曾 is ceng in lazy_pinyin but zeng as a surname; 单 dan / shan);
- other words (letters and digits) are lexemes as they are; emails, host names, codes (a-b.c@d) give
  the whole compound and its parts (bob.smith@acme.com, bob.smith, acme.com, bob, smith, acme, com), a
  host also without its `www.`; phone-like digit sequences (7-20 digits, separators allowed) give their
  digits and every suffix of 4 or more digits, so +86 138-0013-8000 is found by 13800138000, 0138000
  or its last four digits 8000.

Everything is bounded: the characters read per text and in total, the pinyin per text, the length of
a lexeme (PostgreSQL allows < 2 kB, a whole tsvector < 1 MB) and the number of lexemes. The caller
passes the texts most worth finding first (name, code, then phones, emails, then addresses, notes).
Lexemes only hold letters, digits, CJK and `. @ _ + -`, so they need no escaping inside quotes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from pypinyin import Style, lazy_pinyin, pinyin
from pypinyin.seg.mmseg import seg as _phrase_segmenter
from sqlalchemy import ColumnElement, Text, cast, func, literal
from sqlalchemy.dialects.postgresql import ARRAY, TSQUERY, TSVECTOR

# Characters read from one text and from all texts of a record: a name or an address is far shorter,
# a long note is still found by its beginning, and a 200 kB paste costs no more than this.
MAX_TEXT_CHARS = 2_000
MAX_TOTAL_CHARS = 8_000
# Han characters per text that get pinyin: the suffixes cost O(n) lexemes of O(n) characters each.
PINYIN_CHARS = 64
# A lexeme's length in characters (≤ 256 bytes of UTF-8, far below PostgreSQL's 2 kB); longer words
# are cut, and query prefixes are cut the same way, so they still match.
MAX_LEXEME_CHARS = 64
# Lexemes per record: a typical customer makes 120-260 (docs/search.md).
MAX_TOKENS = 1_000
# Readings of a run's first character beyond lazy_pinyin's choice (surnames).
MAX_EXTRA_READINGS = 2
# The search box: characters read and terms ANDed (more terms only narrow an already narrow result).
MAX_QUERY_CHARS = 200
MAX_QUERY_TERMS = 16
# A sort key's length in characters.
SORT_KEY_CHARS = 200
# Phone-like digit runs: 7-20 digits; suffixes from this many digits (the "last four").
MIN_PHONE_SUFFIX = 4

_HAN = "\u3005\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_KANA_HANGUL = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
_CJK_RUN = re.compile(f"([{_HAN}{_KANA_HANGUL}]+)")
_HAN_RUN = re.compile(f"[{_HAN}]+")
# Letters and digits of any script ([^\W_] is \w without the underscore).
_WORD = re.compile(r"[^\W_]+")
# Words joined by the symbols of emails, hosts and codes; the classes are disjoint, so no backtracking.
_COMPOUND = re.compile(r"[^\W_]+(?:[._@+\-]+[^\W_]+)+")
# 7-20 digits, at most three separators between two digits: every repetition adds exactly one digit.
_PHONE = re.compile(r"\d(?:[ ().\-]{0,3}\d){6,19}")
_QUERY_PIECE = re.compile(rf"(?P<phone>{_PHONE.pattern})|(?P<compound>{_COMPOUND.pattern})|(?P<word>[^\W_]+)")
_SORT_DROP = re.compile(r"[^\w ]+|_")
_SPACES = re.compile(r"\s+")


def document_tokens(texts: Iterable[str], *, without_pinyin: Iterable[str] = ()) -> list[str]:
    """The lexemes to store for a record whose searchable texts are `texts` (names, codes, phones,
    emails: most important first), then `without_pinyin` (addresses, notes: found by their characters
    and words, not by pinyin, which costs two lexemes per Han character)."""
    tokens: dict[str, None] = {}
    budget = MAX_TOTAL_CHARS
    for with_pinyin, group in ((True, texts), (False, without_pinyin)):
        for raw in group:
            if budget <= 0 or len(tokens) >= MAX_TOKENS:
                break
            read = raw[: min(MAX_TEXT_CHARS, budget)]
            budget -= len(read)
            # Cut again after NFKC, which can make one character into up to 18 (U+FDFA).
            text = _normalise(read)[:MAX_TEXT_CHARS]
            # One text gives at most a few thousand lexemes (bounded by MAX_TEXT_CHARS): cut after it.
            tokens.update(dict.fromkeys(_text_tokens(text, PINYIN_CHARS if with_pinyin else 0)))
    tokens.pop("", None)
    return list(tokens)[:MAX_TOKENS]


def query(text: str) -> str | None:
    """A `tsquery` literal (for `CAST(:q AS tsquery)`) for a search box's input, or None when it holds
    nothing searchable. CJK asks for characters and bigrams, everything else for prefixes; all ANDed."""
    terms: dict[str, None] = {}
    for term in _query_terms(_normalise(text[:MAX_QUERY_CHARS])[:MAX_QUERY_CHARS]):
        terms[term] = None
        if len(terms) >= MAX_QUERY_TERMS:
            break
    return " & ".join(terms) or None


def sort_key(text: str) -> str:
    """A key that puts names in pinyin order under COLLATE "C": lowercase pinyin / Latin first (阿里巴巴
    is 'alibaba', between 'Acme' and 'Amazon'), then the tones, then the text itself as the tiebreak."""
    text = text[:SORT_KEY_CHARS]
    norm = _normalise(text)[:SORT_KEY_CHARS]
    plain: list[str] = []
    toned: list[str] = []
    last = 0
    for match in _HAN_RUN.finditer(norm):
        between = _strip_marks(norm[last: match.start()])
        plain.append(between)
        toned.append(between)
        plain.append("".join(_syllables(match.group())))
        toned.append("".join(_syllables(match.group(), Style.TONE3)))
        last = match.end()
    tail = _strip_marks(norm[last:])
    plain.append(tail)
    toned.append(tail)
    primary = _SPACES.sub(" ", _SORT_DROP.sub(" ", "".join(plain))).strip()
    secondary = _SPACES.sub(" ", _SORT_DROP.sub(" ", "".join(toned))).strip()
    # \x1f (unit separator) sorts below every printable character: a shorter primary comes first.
    # PostgreSQL's text cannot hold NUL, the one character a tiebreak would otherwise pass through.
    return f"{primary}\x1f{secondary}\x1f{text.replace(chr(0), '')}"[:SORT_KEY_CHARS]


def to_vector(tokens: list[str]) -> ColumnElement[Any]:
    """The SQL expression storing `tokens` (from document_tokens) as a tsvector, lexemes as they are."""
    return func.array_to_tsvector(cast(literal(tokens, ARRAY(Text)), ARRAY(Text)), type_=TSVECTOR)


def matches(column: ColumnElement[Any], text: str) -> ColumnElement[bool] | None:
    """`column @@ query(text)`, or None when the input holds nothing searchable (the caller then
    returns everything, or nothing, as its page wants)."""
    q = query(text)
    if q is None:
        return None
    return column.bool_op("@@")(cast(literal(q, Text), TSQUERY))


def _normalise(text: str) -> str:
    # Normalised on both sides of casefold, as Unicode's compatibility caseless matching does: folding
    # can leave a string that is no longer in NFKC.
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return text.replace("\x00", " ")


def _strip_marks(text: str) -> str:
    """Accents off (outside CJK only: NFKD would take Hangul syllables apart)."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _segments(text: str) -> Iterator[tuple[bool, str]]:
    """(is_cjk, segment) in order."""
    for i, part in enumerate(_CJK_RUN.split(text)):
        if part:
            yield bool(i % 2), part if i % 2 else _strip_marks(part)


def _text_tokens(text: str, pinyin_chars: int) -> list[str]:
    """The lexemes of one normalised text, each at most MAX_LEXEME_CHARS long (lists, not generators:
    this runs for every record an import writes)."""
    tokens: list[str] = []
    pinyin_left = pinyin_chars
    for is_cjk, segment in _segments(text):
        if is_cjk:
            tokens += segment
            tokens += [segment[i: i + 2] for i in range(len(segment) - 1)]
            for han in _HAN_RUN.findall(segment):
                if pinyin_left <= 0:
                    break
                tokens += _pinyin_tokens(han[:pinyin_left])
                pinyin_left -= len(han)
        else:
            tokens += _latin_tokens(segment)
    return tokens


def _pinyin_tokens(han: str) -> list[str]:
    syllables = _syllables(han)
    if not syllables:
        return []
    tokens: list[str] = []
    initials = "".join(s[0] for s in syllables)
    # Suffixes built backwards, each one syllable longer than the last, cut where a lexeme is cut.
    whole = ""
    for i in range(len(syllables) - 1, -1, -1):
        whole = (syllables[i] + whole)[:MAX_LEXEME_CHARS]
        tokens += (whole, initials[i:])
    # Other readings of the first character (surnames: 曾 zeng, 单 shan, 仇 qiu), whole run only.
    rest, rest_initials = "".join(syllables[1:]), initials[1:]
    for reading in _readings(han[0]):
        if reading != syllables[0]:
            tokens += ((reading + rest)[:MAX_LEXEME_CHARS], reading[0] + rest_initials)
    return tokens


def _syllables(han: str, style: Style = Style.NORMAL) -> tuple[str, ...]:
    """lazy_pinyin(han), phrase-aware (重庆 chongqing, 银行 yinhang), without what has no pinyin. The same
    words recur across records (公司, 有限, 北京), so each word of pypinyin's own segmentation is
    converted once, and short runs (names, cities) once as a whole; converting a run then costs a few
    dictionary look-ups instead of pypinyin's per-character style machinery (several times faster)."""
    if len(han) <= _CACHED_RUN_CHARS:
        return _short_run_syllables(han, style)
    return tuple(s for word in _phrase_segmenter.cut(han) for s in _word_syllables(word, style))


# Short runs only, so that the cache holds at most a few MB whatever the input.
_CACHED_RUN_CHARS = 12


@lru_cache(maxsize=20_000)
def _short_run_syllables(han: str, style: Style) -> tuple[str, ...]:
    return tuple(s for word in _phrase_segmenter.cut(han) for s in _word_syllables(word, style))


@lru_cache(maxsize=50_000)
def _word_syllables(word: str, style: Style) -> tuple[str, ...]:
    return tuple(s for s in lazy_pinyin(word, style=style, errors="ignore") if s.isascii() and s.isalnum())


@lru_cache(maxsize=20_000)
def _readings(char: str) -> tuple[str, ...]:
    readings = pinyin(char, style=Style.NORMAL, heteronym=True, errors="ignore")
    found = readings[0] if readings else []
    return tuple(r for r in found if r.isascii() and r.isalpha())[: MAX_EXTRA_READINGS + 1]


def _latin_tokens(segment: str) -> list[str]:
    tokens: list[str] = []
    for match in _PHONE.finditer(segment):
        digits = _digits(match.group())
        tokens += [digits[i:] for i in range(len(digits) - MIN_PHONE_SUFFIX + 1)]
    for match in _COMPOUND.finditer(segment):
        compound = match.group()
        tokens.append(compound[:MAX_LEXEME_CHARS])
        if "@" in compound:
            tokens += [piece.strip("._+-")[:MAX_LEXEME_CHARS] for piece in compound.split("@")]
        elif compound.startswith("www."):
            tokens.append(compound[4:MAX_LEXEME_CHARS + 4])
    tokens += [word[:MAX_LEXEME_CHARS] for word in _WORD.findall(segment)]
    return tokens


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _query_terms(text: str) -> Iterator[str]:
    for is_cjk, segment in _segments(text):
        if is_cjk:
            if len(segment) == 1:
                yield _quote(segment)
            yield from (_quote(segment[i: i + 2]) for i in range(len(segment) - 1))
            continue
        for match in _QUERY_PIECE.finditer(segment):
            term = _digits(match.group()) if match.lastgroup == "phone" else match.group()
            yield _quote(term[:MAX_LEXEME_CHARS]) + ":*"


def _quote(lexeme: str) -> str:
    # Our lexemes hold neither quotes nor backslashes; escaping anyway keeps the literal well-formed
    # whatever a future change lets through.
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
