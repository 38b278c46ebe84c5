"""Search text analysis (crm.records.search): the lexemes a record stores, the queries a search box
builds, the pinyin sort key, and, against the real PostgreSQL, that they find what they should through
a GIN index where pg_trgm cannot use its own."""

from __future__ import annotations

import random
import re

import pytest
from sqlalchemy import Column, MetaData, Table, Text, select, text
from sqlalchemy.dialects.postgresql import TSVECTOR

from crm.records import search
from crm.records.search import document_tokens, matches, query, sort_key, to_vector

SAFE_LEXEME = re.compile(r"^[\w.@+\-]+$")


# ---- document_tokens ----------------------------------------------------------------------------------

def test_cjk_run_gives_characters_and_overlapping_bigrams():
    tokens = document_tokens(["北京华为"])
    assert {"北", "京", "华", "为", "北京", "京华", "华为"} <= set(tokens)
    assert "北京华为" not in tokens  # only unigrams and bigrams: a query is built from the same pieces
    assert "为北" not in tokens


def test_single_character_name_and_surname():
    tokens = set(document_tokens(["王小明"]))
    assert {"王", "王小", "小明"} <= tokens


def test_pinyin_suffixes_whole_and_initials():
    tokens = set(document_tokens(["北京华为"]))
    assert {"beijinghuawei", "jinghuawei", "huaweii"[:-1], "wei"} <= tokens
    assert {"bjhw", "jhw", "hw", "w"} <= tokens


def test_pinyin_is_phrase_aware_for_polyphonic_characters():
    assert "chongqing" in document_tokens(["重庆"])
    assert "yinhang" in document_tokens(["银行"])
    assert "yinxing" not in document_tokens(["银行"])
    assert "zhangda" in document_tokens(["长大"])


def test_cached_conversion_agrees_with_pypinyin():
    from pypinyin import Style, lazy_pinyin
    for run in ["重庆", "银行行长", "中国工商银行股份有限公司", "长大了的长城", "北京华为技术有限公司重庆分公司",
                "曾经的音乐", "单于", "一行人行走在银行", "乐乐", "西安", "〇"]:
        for style in (Style.NORMAL, Style.TONE3):
            assert list(search._syllables(run, style)) == lazy_pinyin(run, style=style, errors="ignore"), run
            assert search._syllables(run, style) == search._syllables(run, style)  # a second, cached call


def test_texts_without_pinyin_give_characters_and_words_only():
    tokens = set(document_tokens(["华为"], without_pinyin=["北京市海淀区 Zhongguancun 5号"]))
    assert {"华为", "huawei", "北京", "海淀", "zhongguancun", "5", "号"} <= tokens
    assert "beijing" not in tokens
    assert not any(t.startswith("bj") for t in tokens)


def test_first_character_other_readings_cover_surnames():
    tokens = set(document_tokens(["曾先生"]))
    assert {"cengxiansheng", "zengxiansheng", "cxs", "zxs"} <= tokens
    # only the run's first character: 长 inside a run keeps lazy_pinyin's reading alone
    assert "chengchang" not in document_tokens(["城长"])


def test_latin_words_are_casefolded_and_full_width_is_half_width():
    tokens = set(document_tokens(["ＡＣＭＥ　Trading Ｃｏ．", "Müller GmbH", "STRASSE straße"]))
    assert {"acme", "trading", "co", "muller", "gmbh", "strasse"} <= tokens
    assert not any(t != t.lower() for t in tokens)


def test_email_gives_whole_local_part_domain_and_words():
    tokens = set(document_tokens(["Bob.Smith@Acme.COM"]))
    assert {"bob.smith@acme.com", "bob.smith", "acme.com", "bob", "smith", "acme", "com"} <= tokens


def test_url_gives_host_with_and_without_www():
    tokens = set(document_tokens(["https://www.acme.com.cn/about?x=1"]))
    assert {"www.acme.com.cn", "acme.com.cn", "acme", "about"} <= tokens
    assert not any("/" in t or ":" in t or "?" in t for t in tokens)


def test_phone_gives_digits_and_every_suffix_of_four_or_more():
    tokens = set(document_tokens(["+86 (138) 0013-8000"]))
    assert {"8613800138000", "13800138000", "8000", "0138000"} <= tokens
    assert "000" not in tokens  # suffixes stop at four digits
    short = set(document_tokens(["12-34-56"]))  # six digits: not a phone
    assert "123456" not in short
    assert {"12", "34", "56"} <= short


def test_mixed_text_splits_scripts():
    tokens = set(document_tokens(["电话13800138000，华为Mate60"]))
    assert {"电话", "13800138000", "华为", "mate60", "huawei", "dianhua"} <= tokens


def test_kana_and_hangul_are_bigrammed_without_pinyin():
    tokens = set(document_tokens(["トヨタ 삼성전자"]))
    assert {"トヨ", "ヨタ", "삼성", "성전", "전자"} <= tokens


def test_tokens_are_deduplicated_and_safe_for_tsquery():
    tokens = document_tokens(["北京 北京 acme", "acme", "O'Brien \\ 'quoted' \"x\" a:b & c|d ! (e) <f>"])
    assert len(tokens) == len(set(tokens))
    assert all(SAFE_LEXEME.match(t) for t in tokens), tokens
    assert tokens.count("北京") == 1


def test_weird_input_is_harmless():
    tokens = document_tokens(["", "\x00\x00", "😀🎉 ok", "e\u0301te\u0301", "\u200b\ufeff", "Ａ\x00Ｂ", "﷽"])
    assert all(t and SAFE_LEXEME.match(t) and "\x00" not in t for t in tokens)
    assert "ete" in tokens  # combining accents dropped outside CJK
    assert "ok" in tokens
    assert {"a", "b"} <= set(tokens)  # NUL separates words
    assert document_tokens([]) == []
    assert document_tokens(["", "   ", "!!!"]) == []


def test_bounds_on_a_huge_text():
    huge = "北京华为技术有限公司" * 20_000 + " acme" * 40_000  # ~400 kB
    tokens = document_tokens([huge, "later text not reached"])
    assert len(tokens) <= search.MAX_TOKENS
    assert max(len(t) for t in tokens) <= search.MAX_LEXEME_CHARS
    assert sum(len(t.encode()) for t in tokens) < 200_000  # far below the 1 MB tsvector limit


def test_bounds_on_long_words_and_many_texts():
    tokens = document_tokens(["x" * 10_000, *(f"word{i}" for i in range(100_000))])
    assert "x" * search.MAX_LEXEME_CHARS in tokens
    assert len(tokens) <= search.MAX_TOKENS
    # the total character budget stops reading texts long before the token cap
    assert "word99999" not in tokens


def test_pinyin_is_bounded_per_text():
    long_run = "中" * 5_000
    tokens = document_tokens([long_run])
    pinyin_tokens = [t for t in tokens if t.isascii()]
    assert 0 < len(pinyin_tokens) <= 2 * search.PINYIN_CHARS + 2 * search.MAX_EXTRA_READINGS
    assert all(len(t) <= search.MAX_LEXEME_CHARS for t in tokens)


def test_earlier_texts_win_when_the_cap_is_reached():
    chunks = [" ".join(f"w{i}" for i in range(start, start + 300)) for start in range(0, 1_200, 300)]
    assert all(len(c) < search.MAX_TEXT_CHARS for c in chunks)
    tokens = document_tokens(["华为", *chunks])
    assert "华为" in tokens
    assert "huawei" in tokens
    assert len(tokens) == search.MAX_TOKENS


# ---- query --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("北", "'北'"),
    ("北京", "'北京'"),
    ("北京华为", "'北京' & '京华' & '华为'"),
    ("acme", "'acme':*"),
    ("ＡＣＭＥ  Trading", "'acme':* & 'trading':*"),
    ("bjhw", "'bjhw':*"),
    ("华为 acme", "'华为' & 'acme':*"),
    ("华为abc", "'华为' & 'abc':*"),
    ("Bob.Smith@Acme", "'bob.smith@acme':*"),
    ("+86 138-0013-8000", "'8613800138000':*"),
    ("8000", "'8000':*"),
    ("Müller", "'muller':*"),
    ("O'Brien", "'o':* & 'brien':*"),
    ("a:b & c | !d <-> (e)", "'a':* & 'b':* & 'c':* & 'd':* & 'e':*"),
    ("acme acme", "'acme':*"),
])
def test_query(text, expected):
    assert query(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "!!!", "😀", "\x00", "''", "\\", "&|!():*", "\u0301"])
def test_query_with_nothing_searchable_is_none(text):
    assert query(text) is None


def test_query_is_bounded():
    assert query("北京华为" * 1_000) == "'北京' & '京华' & '华为' & '为北'"  # repeated bigrams count once
    long_cjk = "".join(chr(0x4E00 + i) for i in range(1_000))
    q = query(long_cjk)
    assert q is not None
    assert q.count("&") == search.MAX_QUERY_TERMS - 1
    assert q.startswith("'" + long_cjk[:2] + "'")
    many = query(" ".join(f"w{i}" for i in range(1_000)))
    assert many is not None
    assert many.count("&") == search.MAX_QUERY_TERMS - 1
    long_word = query("y" * 5_000)
    assert long_word == "'" + "y" * search.MAX_LEXEME_CHARS + "':*"


def test_a_long_word_still_finds_itself_once_cut():
    word = "z" * 100
    assert query(word) == "'" + "z" * search.MAX_LEXEME_CHARS + "':*"
    assert "z" * search.MAX_LEXEME_CHARS in document_tokens([word])


# ---- sort_key -----------------------------------------------------------------------------------------

def test_sort_key_puts_chinese_in_pinyin_order_among_latin_names():
    names = ["Zoo Ltd", "重庆钢铁", "阿里巴巴", "Acme", "北京华为", "amazon", "华为", "Beta", "张三", "中国银行"]
    ordered = sorted(names, key=sort_key)
    assert ordered == ["Acme", "阿里巴巴", "amazon", "北京华为", "Beta", "重庆钢铁", "华为", "张三",
                       "中国银行", "Zoo Ltd"]


def test_sort_key_ties_broken_by_tone_then_text():
    assert sorted(["利", "李", "黎"], key=sort_key) == ["黎", "李", "利"]  # li2, li3, li4
    assert sorted(["先", "西安"], key=sort_key) == ["西安", "先"]  # xi an before xian, as a dictionary
    assert sort_key("Acme") != sort_key("ACME")


def test_sort_key_is_bounded_and_tolerates_weird_input():
    assert len(sort_key("北京" * 10_000)) <= search.SORT_KEY_CHARS
    assert len(sort_key("x" * 10_000)) <= search.SORT_KEY_CHARS
    assert "\x00" not in sort_key("a\x00b")
    assert sort_key("a\x00b").startswith("a b\x1f")
    assert sort_key("★Acme").startswith("acme\x1f")
    assert sort_key("").startswith("\x1f")


# ---- against PostgreSQL -------------------------------------------------------------------------------

def _table(connection, name: str) -> Table:
    table = Table(name, MetaData(), Column("name", Text, nullable=False), Column("search_vector", TSVECTOR),
                  prefixes=["TEMPORARY"], postgresql_on_commit="DROP")
    table.create(connection)
    return table


def _index(connection, table: Table) -> None:
    # After the load, as a migration on existing rows would: rows inserted into a GIN index with
    # fastupdate wait in its pending list (until vacuum), which the planner prices as a scan.
    connection.execute(text(f"CREATE INDEX {table.name}_search ON {table.name} USING gin (search_vector)"))


def _insert(connection, table: Table, names: list[str]) -> None:
    rows = [{"name": n, "tokens": document_tokens([n])} for n in names]
    connection.execute(text(f"INSERT INTO {table.name} (name, search_vector) "
                            "VALUES (:name, array_to_tsvector(CAST(:tokens AS text[])))"), rows)


def _found(connection, table: Table, q: str) -> set[str]:
    condition = matches(table.c.search_vector, q)
    assert condition is not None
    return set(connection.scalars(select(table.c.name).where(condition)))


def test_stored_vectors_and_built_queries_find_what_they_should(connection):
    table = _table(connection, "search_probe")
    connection.execute(table.insert().values(name="北京华为", search_vector=to_vector(document_tokens(["北京华为"]))))
    _insert(connection, table, ["南京银行", "华为南京分公司", "Acme Trading", "曾先生",
                                "bob.smith@acme.com +86 138-0013-8000", "O'Brien & Co"])
    _index(connection, table)
    for q in ["北京", "华为", "北京华为", "bjhw", "beijing", "huawei", "BeiJing Hua", "北", "bj hw", "京华"]:
        assert "北京华为" in _found(connection, table, q), q
    assert _found(connection, table, "南京") == {"南京银行", "华为南京分公司"}
    assert _found(connection, table, "北京华为") == {"北京华为"}
    assert _found(connection, table, "华为") == {"北京华为", "华为南京分公司"}
    assert _found(connection, table, "acme") == {"Acme Trading", "bob.smith@acme.com +86 138-0013-8000"}
    assert _found(connection, table, "zengx") == {"曾先生"}
    assert _found(connection, table, "13800138000") == {"bob.smith@acme.com +86 138-0013-8000"}
    assert _found(connection, table, "bob@") == {"bob.smith@acme.com +86 138-0013-8000"}  # a trailing @ is no part
    assert _found(connection, table, "bob.smith@ac") == {"bob.smith@acme.com +86 138-0013-8000"}
    assert _found(connection, table, "o'brien") == {"O'Brien & Co"}
    # pinyin suffixes start at every syllable: a word inside a run is found by its pinyin prefix
    assert _found(connection, table, "nanjing") == {"南京银行", "华为南京分公司"}
    assert _found(connection, table, "京华为") == {"北京华为"}
    assert matches(table.c.search_vector, "!!!") is None


def test_hostile_query_text_never_breaks_the_tsquery(connection):
    table = _table(connection, "search_hostile")
    _insert(connection, table, ["x"])
    connection.execute(table.insert().values(name="empty", search_vector=to_vector(document_tokens(["!!!"]))))
    assert connection.scalar(text("SELECT search_vector = ''::tsvector FROM search_hostile WHERE name = 'empty'"))
    for q in ["'", "\\'", "a' | 'b", ":*", "!a", "a <-> b", "(((", "'); DROP TABLE x; --", "\x00", "😀a"]:
        condition = matches(table.c.search_vector, q)
        if condition is not None:
            connection.execute(select(table.c.name).where(condition)).all()


def _plan(connection, sql: str, **params: object) -> str:
    return "\n".join(connection.scalars(text("EXPLAIN " + sql), params))


def test_two_character_search_uses_the_gin_index_where_trigrams_cannot(connection):
    rng = random.Random(6)
    pool = "东西南中华天海山江河金银国际科技贸易实业集团有限公司工程建设电子机械食品服务商店医药"
    names = ["".join(rng.choice(pool) for _ in range(rng.randint(4, 12))) for _ in range(20_000)]
    names[::200] = [f"北京{n}" for n in names[::200]]  # 100 rows of 20,000 hold the word
    table = _table(connection, "search_bench")
    _insert(connection, table, names)
    _index(connection, table)
    connection.execute(text("ANALYZE search_bench"))

    condition = matches(table.c.search_vector, "北京")
    assert condition is not None
    sql = select(table.c.name).where(condition).compile(connection, compile_kwargs={"literal_binds": True})
    plan = _plan(connection, str(sql))
    assert "Bitmap Index Scan on search_bench_search" in plan, plan
    assert len(_found(connection, table, "北京")) == 100

    connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    connection.execute(text("CREATE INDEX search_bench_trgm ON search_bench USING gin (name gin_trgm_ops)"))
    connection.execute(text("ANALYZE search_bench"))
    trgm_plan = _plan(connection, "SELECT name FROM search_bench WHERE name ILIKE :p", p="%北京%")
    assert "search_bench_trgm" not in trgm_plan, trgm_plan
    assert "Seq Scan" in trgm_plan
    # three characters are enough for pg_trgm: the comparison is fair
    trgm3 = _plan(connection, "SELECT name FROM search_bench WHERE name ILIKE :p", p="%北京东%")
    assert "search_bench_trgm" in trgm3, trgm3
