"""The import/export file layer: encodings, delimiters, workbooks, broken files, header mapping, export."""

from __future__ import annotations

import codecs
import datetime as dt
import io
import os
import random
import zipfile
from dataclasses import dataclass
from decimal import Decimal

import pytest
from openpyxl import Workbook, load_workbook
from openpyxl.styles import PatternFill

from crm.records.tabular import (
    IGNORE,
    FileRejected,
    HeaderMapping,
    MappingRejected,
    Table,
    column_letter,
    map_headers,
    normalize_label,
    read_table,
    write_csv,
    write_xlsx,
)

MB = 1 << 20


def read(data: bytes, name: str = "customers.csv", *, max_rows: int = 1000, max_bytes: int = 10 * MB,
         **limits: int) -> tuple[Table, list[tuple[int, list[str]]]]:
    table = read_table(data, name, max_rows=max_rows, max_bytes=max_bytes, **limits)
    with table:
        rows = list(table.rows)
    return table, rows


def rejected(data: bytes, name: str = "customers.csv", **kwargs: int) -> FileRejected:
    with pytest.raises(FileRejected) as caught:
        read(data, name, **kwargs)
    assert caught.value.status == 422
    assert caught.value.field_errors == {"file": [caught.value.message]}
    return caught.value


def xlsx(rows: list[list[object]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


CHINESE = ("客户代码,客户名称,所在地区,联系电话\r\n"
           "KH001,北京华为技术有限公司,北京,13800138000\r\nKH002,上海贝尔,上海,021-5555\r\n")
CHINESE_ROWS = [(2, ["KH001", "北京华为技术有限公司", "北京", "13800138000"]),
                (3, ["KH002", "上海贝尔", "上海", "021-5555"])]


# --------------------------------------------------------------------------- encodings and delimiters


def test_utf8_without_bom() -> None:
    table, rows = read(CHINESE.encode("utf-8"))
    assert (table.format, table.encoding, table.delimiter) == ("csv", "utf-8", ",")
    assert table.headers == ["客户代码", "客户名称", "所在地区", "联系电话"]
    assert rows == CHINESE_ROWS


def test_utf8_with_bom_loses_the_bom() -> None:
    table, rows = read(codecs.BOM_UTF8 + CHINESE.encode("utf-8"))
    assert table.encoding == "utf-8-sig"
    assert table.headers[0] == "客户代码"
    assert rows == CHINESE_ROWS


def test_gb18030_as_excel_in_china_writes_it() -> None:
    table, rows = read(CHINESE.encode("gb18030"))
    assert table.encoding == "gb18030"
    assert table.headers == ["客户代码", "客户名称", "所在地区", "联系电话"]
    assert rows == CHINESE_ROWS


def test_gb18030_whose_first_megabytes_are_ascii_is_still_gb18030() -> None:
    # The first chunk decodes as UTF-8; only the whole file says which encoding it is.
    ascii_rows = "".join(f"K{n:06d},Acme {n},Beijing,1380000{n % 10000:04d}\r\n" for n in range(60_000))
    data = ("code,name,region,phone\r\n" + ascii_rows + "K999999,华为,深圳,13900000000\r\n").encode("gb18030")
    assert len(data) > 2 * MB
    table, rows = read(data, max_rows=100_000)
    assert table.encoding == "gb18030"
    assert rows[-1] == (60_002, ["K999999", "华为", "深圳", "13900000000"])


def test_a_gb18030_bom_does_not_stick_to_the_first_header() -> None:
    table, rows = read("\ufeff客户代码,客户名称\r\nKH001,华为\r\n".encode("gb18030"))
    assert (table.encoding, table.headers, rows) == ("gb18030", ["客户代码", "客户名称"], [(2, ["KH001", "华为"])])


def test_utf16_as_excels_unicode_text() -> None:
    data = "客户代码\t客户名称\r\nKH001\t华为\r\n".encode("utf-16")
    table, rows = read(data, "customers.txt")
    assert (table.encoding, table.delimiter) == ("utf-16", "\t")
    assert rows == [(2, ["KH001", "华为"])]


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_delimiter_found(delimiter: str) -> None:
    text = delimiter.join(["code", "name", "amount"]) + "\n" + delimiter.join(["K1", "Müller", "1,5"]) + "\n"
    if delimiter == ",":
        text = 'code,name,amount\nK1,Müller,"1,5"\n'
    table, rows = read(text.encode("utf-8"))
    assert table.delimiter == delimiter
    assert table.headers == ["code", "name", "amount"]
    assert rows == [(2, ["K1", "Müller", "1,5"])]


def test_semicolons_win_over_commas_inside_values() -> None:
    data = b"code;name;note\nK1;Acme;a, b, c\nK2;Beta;d, e\n"
    table, rows = read(data)
    assert table.delimiter == ";"
    assert rows[0] == (2, ["K1", "Acme", "a, b, c"])


def test_quoted_newlines_count_as_one_excel_row() -> None:
    data = b'code,address\r\nK1,"Line one\r\nLine two"\r\n\r\nK2,plain\r\n'
    _table, rows = read(data)
    # Excel shows K1 on row 2 (one cell on two lines), a blank row 3, K2 on row 4.
    assert rows == [(2, ["K1", "Line one\r\nLine two"]), (4, ["K2", "plain"])]


def test_blank_lines_above_the_header_keep_the_numbers() -> None:
    table, rows = read(b"\r\n,,\r\ncode,name\r\nK1,A\r\n")
    assert table.header_line == 3
    assert rows == [(4, ["K1", "A"])]


def test_trailing_empty_cells_are_dropped_and_short_rows_stay_short() -> None:
    table, rows = read(b"code,name,phone,,\r\nK1,A,,,\r\nK2\r\nK3,B,1,extra\r\n")
    assert table.headers == ["code", "name", "phone"]
    assert rows == [(2, ["K1", "A"]), (3, ["K2"]), (4, ["K3", "B", "1", "extra"])]


def test_a_stream_is_read_without_being_closed() -> None:
    stream = io.BytesIO(CHINESE.encode("gb18030"))
    table = read_table(stream, "c.csv", max_rows=10, max_bytes=MB)
    assert list(table.rows) == CHINESE_ROWS
    assert not stream.closed


def test_a_stream_that_cannot_seek_is_copied_within_the_bound() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            chunk = self.inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    table = read_table(Pipe(CHINESE.encode()), "c.csv", max_rows=10, max_bytes=MB)  # type: ignore[arg-type]
    assert list(table.rows) == CHINESE_ROWS
    assert rejected_stream(Pipe(b"x" * 2000), max_bytes=1000).code == "file_too_large"


def rejected_stream(stream: object, *, max_bytes: int) -> FileRejected:
    with pytest.raises(FileRejected) as caught:
        read_table(stream, "c.csv", max_rows=10, max_bytes=max_bytes)  # type: ignore[arg-type]
    return caught.value


# --------------------------------------------------------------------------- xlsx


def test_xlsx_cells_read_as_the_user_typed_them() -> None:
    data = xlsx([
        ["客户代码", "客户名称", "成立日期", "联系电话", "金额", "数量", "启用", "拜访时间"],
        # Excel's dates and times have no time zone: naive ones are what a workbook holds.
        ["KH001", "北京华为", dt.datetime(2024, 3, 5), 13800138000, 1234.5, 3.0, True,  # noqa: DTZ001
         dt.datetime(2024, 3, 5, 9, 30)],  # noqa: DTZ001
        [],
        ["KH002", "上海贝尔", dt.date(2023, 12, 31), 13900139000.0, 0.1 + 0.2, 12, False, None],
    ])
    table, rows = read(data, "客户.xlsx")
    assert (table.format, table.encoding, table.delimiter) == ("xlsx", None, None)
    assert table.headers == ["客户代码", "客户名称", "成立日期", "联系电话", "金额", "数量", "启用", "拜访时间"]
    assert rows == [
        (2, ["KH001", "北京华为", "2024-03-05", "13800138000", "1234.5", "3", "TRUE", "2024-03-05 09:30"]),
        (4, ["KH002", "上海贝尔", "2023-12-31", "13900139000", "0.3", "12", "FALSE"]),
    ]


def test_xlsx_with_a_wrong_dimension_is_read_to_its_end() -> None:
    data = xlsx([["code"], ["K1"], ["K2"], ["K3"]])
    patched = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(patched, "w") as target:
        for entry in source.infolist():
            body = source.read(entry)
            if entry.filename == "xl/worksheets/sheet1.xml":
                assert b'<dimension ref="A1:A4" />' in body
                body = body.replace(b'<dimension ref="A1:A4" />', b'<dimension ref="A1" />')
            target.writestr(entry, body)
    _table, rows = read(patched.getvalue(), "c.xlsx")
    assert rows == [(2, ["K1"]), (3, ["K2"]), (4, ["K3"])]


def test_xlsx_first_sheet_is_read() -> None:
    book = Workbook()
    first = book.active
    assert first is not None
    first.append(["code"])
    first.append(["first"])
    second = book.create_sheet("Other")
    second.append(["code"])
    second.append(["second"])
    out = io.BytesIO()
    book.save(out)
    _table, rows = read(out.getvalue(), "c.xlsx")
    assert rows == [(2, ["first"])]


def test_large_number_formats() -> None:
    data = xlsx([["n"], [1e20], [1.5e-7], [-42.0], [123456789012345678]])
    _table, rows = read(data, "n.xlsx")
    # Excel keeps 15 significant digits of a number (a bank account typed as a number is already cut).
    assert [cells for _line, cells in rows] == [["100000000000000000000"], ["0.00000015"], ["-42"],
                                                ["123456789012346000"]]


# --------------------------------------------------------------------------- broken files


def test_empty_file() -> None:
    assert rejected(b"").code == "file_empty"
    assert rejected(b"", "c.xlsx").code == "file_empty"


def test_file_over_the_byte_limit() -> None:
    error = rejected(b"a,b\n" * 1000, max_bytes=3999)
    assert error.code == "file_too_large"
    assert error.message.params == {"size": "0.0 MB", "limit": "0.0 MB"}


def test_a_file_with_only_blank_lines_has_no_header() -> None:
    assert rejected(b"\r\n , \r\n").code == "no_header"
    assert rejected(codecs.BOM_UTF8).code == "no_header"


def test_random_bytes_are_not_text() -> None:
    data = bytes(range(256)) * 4 + random.Random(6).randbytes(4000)
    error = rejected(data)
    # 0x80 (byte 128, after the line feed at byte 10) is the first byte neither UTF-8 nor GB18030 decodes.
    assert (error.code, error.line) == ("bad_encoding", 2)
    assert rejected(random.Random(7).randbytes(4000), "c.xlsx").code == "wrong_format"
    # A NUL among otherwise plain text is binary, whatever the encoding.
    error = rejected(b"code,name\nK1,A\nK2,\x00\x01B\n")
    assert (error.code, error.line) == ("not_text", 3)


def test_undecodable_bytes_name_their_line() -> None:
    # \x80 alone is neither UTF-8 nor a GB18030 lead byte.
    error = rejected(b"code,name\nK1,A\nK2,\x80\n")
    assert (error.code, error.line, error.message.params["line"]) == ("bad_encoding", 3, 3)


def test_xlsx_renamed_csv_and_csv_renamed_xlsx() -> None:
    assert rejected(xlsx([["code"], ["K1"]]), "customers.csv").code == "wrong_format"
    assert rejected(CHINESE.encode(), "customers.xlsx").code == "wrong_format"


def test_other_zips_and_types() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("customers.csv", "code\nK1\n")
    assert rejected(out.getvalue(), "c.xlsx").code == "wrong_format"
    assert rejected(CHINESE.encode(), "customers.pdf").code == "unsupported_format"
    assert rejected(CHINESE.encode(), "customers").code == "unsupported_format"


def test_truncated_xlsx_is_corrupt() -> None:
    data = xlsx([["code"], ["K1"]] * 50)
    assert rejected(data[: len(data) // 2], "c.xlsx").code == "corrupt"
    assert rejected(b"PK\x03\x04" + os.urandom(3000), "c.xlsx").code == "corrupt"


def test_xlsx_with_broken_xml_is_corrupt() -> None:
    data = xlsx([["code"], ["K1"]])
    broken = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(broken, "w") as target:
        for entry in source.infolist():
            body = source.read(entry)
            if entry.filename == "xl/worksheets/sheet1.xml":
                body = body[: len(body) // 2]
            target.writestr(entry, body)
    assert rejected(broken.getvalue(), "c.xlsx").code == "corrupt"


def test_encrypted_workbook_and_old_xls() -> None:
    cfb = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    encrypted = cfb + bytes(1000) + "EncryptionInfo".encode("utf-16-le") + "EncryptedPackage".encode("utf-16-le")
    assert rejected(encrypted, "c.xlsx").code == "encrypted"
    assert rejected(cfb + bytes(2000), "c.xls").code == "old_excel"
    assert rejected(cfb + bytes(2000), "c.csv").code == "wrong_format"


def test_zip_bomb_is_refused_before_openpyxl_reads_it() -> None:
    # A real workbook with one more part that unpacks 1000 times its size.
    data = xlsx([["code"], ["K1"]])
    bomb = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, \
            zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry, source.read(entry))
        target.writestr("xl/media/padding.xml", b"\0" * (64 * MB))
    assert len(bomb.getvalue()) < MB
    error = rejected(bomb.getvalue(), "c.xlsx")
    assert error.code == "zip_bomb"


def test_workbook_unpacking_past_the_total_bound_is_refused() -> None:
    data = xlsx([["code", "name"]] + [[f"K{n}", f"name {n}"] for n in range(2000)])
    assert rejected(data, "c.xlsx", max_unpacked_bytes=len(data)).code == "zip_bomb"
    _table, rows = read(data, "c.xlsx", max_rows=2000)
    assert len(rows) == 2000


def test_too_many_rows() -> None:
    data = b"code\n" + b"".join(b"K%d\n" % n for n in range(11))
    error = rejected(data, max_rows=10)
    assert (error.code, error.line) == ("too_many_rows", 12)
    assert len(read(data, max_rows=11)[1]) == 11
    sheet = xlsx([["code"]] + [[n] for n in range(11)])
    assert rejected(sheet, "c.xlsx", max_rows=10).code == "too_many_rows"


def test_too_many_columns() -> None:
    wide = ",".join(f"c{n}" for n in range(6)).encode() + b"\n1,2\n"
    assert rejected(wide, max_columns=5).code == "too_many_columns"
    error = rejected(b"a,b\n1,2,3,4,5,6\n", max_columns=5)
    assert (error.code, error.line) == ("too_many_columns", 2)
    assert rejected(xlsx([[f"c{n}" for n in range(6)]]), "c.xlsx", max_columns=5).code == "too_many_columns"


def test_styled_empty_cells_far_right_are_not_columns() -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["code", "name"])
    sheet.append(["K1", "A"])
    sheet.cell(row=2, column=16_000).fill = PatternFill("solid", fgColor="FFFF00")
    sheet.append(["K2", "B"])
    sheet.cell(row=3, column=300, value="far")
    out = io.BytesIO()
    book.save(out)
    table = read_table(out.getvalue(), "c.xlsx", max_rows=10, max_bytes=MB)
    assert next(table.rows) == (2, ["K1", "A"])
    with pytest.raises(FileRejected) as caught:
        next(table.rows)
    assert (caught.value.code, caught.value.line) == ("too_many_columns", 3)


def test_header_only_file_has_no_rows() -> None:
    table, rows = read("客户代码,客户名称\r\n".encode("gb18030"))
    assert (table.headers, rows) == (["客户代码", "客户名称"], [])


def test_a_refused_header_leaves_the_callers_stream_open() -> None:
    stream = io.BytesIO(b"code,,name\nK1,x,A\n")
    with pytest.raises(FileRejected):
        read_table(stream, "c.csv", max_rows=10, max_bytes=MB)
    assert not stream.closed
    stream.seek(0)
    assert stream.read(4) == b"code"


def test_cell_over_the_bound() -> None:
    error = rejected(b"code,name\nK1," + b"x" * 101 + b"\n", max_cell_chars=100)
    assert (error.code, error.line, error.column, error.message.params["cell"]) == ("cell_too_long", 2, "B", "B2")
    assert rejected(xlsx([["code"], ["y" * 101]]), "c.xlsx", max_cell_chars=100).code == "cell_too_long"


def test_unclosed_quote() -> None:
    error = rejected(b'code,name\nK1,"Acme\nK2,Beta\n')
    assert (error.code, error.line) == ("bad_csv", 2)


def test_blank_and_duplicate_headers() -> None:
    error = rejected(b"code,,name\nK1,x,A\n")
    assert (error.code, error.column) == ("blank_header", "B")
    error = rejected("客户代码,名称, 客户代码 \nK1,A,B\n".encode())
    assert (error.code, error.column) == ("duplicate_header", "C")
    assert error.message.params == {"first": "A", "second": "C", "header": "客户代码"}
    assert rejected(xlsx([["code", None, "name"], ["K1", "x", "A"]]), "c.xlsx").code == "blank_header"


def test_column_letters() -> None:
    assert [column_letter(i) for i in (0, 25, 26, 701, 702)] == ["A", "Z", "AA", "ZZ", "AAA"]


# --------------------------------------------------------------------------- header mapping


@dataclass(frozen=True)
class Spec:
    key: str
    labels: tuple[str, ...]


FIELDS = [
    Spec("code", ("Customer code", "客户编号", "客户代码")),
    Spec("name", ("Customer name", "客户名称", "名称")),
    Spec("region", ("Region", "地区", "所在地区")),
    Spec("phone", ("Phone", "电话", "联系电话")),
    Spec("nature", ("Nature", "客户性质")),
    Spec("group", ("Group", "客户组别")),
    Spec("bank", ("Bank", "开户银行")),
    Spec("account_no", ("Account no.", "银行账号")),
    Spec("office_phone", ("Office phone", "电话(办公)")),
]


def test_headers_map_by_chinese_english_and_aliases() -> None:
    headers = ["客户代码*", "CUSTOMER NAME", " 所在地区 ", "联系电话（必填）", "客户性质", "ＧＲＯＵＰ", "开户银行",
               "Account No", "备注", "电话（办公）"]
    mapping = map_headers(headers, FIELDS)
    assert mapping == HeaderMapping(
        columns={0: "code", 1: "name", 2: "region", 3: "phone", 4: "nature", 5: "group", 6: "bank",
                 7: "account_no", 9: "office_phone"},
        unmatched=[(8, "备注")], ignored=[])


def test_normalisation() -> None:
    assert normalize_label("＊客户名称 (Required)") == normalize_label("客户名称") == "客户名称"
    assert normalize_label("E-mail") == normalize_label("email")
    assert normalize_label("电话(办公)") != normalize_label("电话(家庭)")


def test_field_keys_match_too() -> None:
    assert map_headers(["account_no", "CODE"], FIELDS).columns == {0: "account_no", 1: "code"}


def test_user_choice_overrides_and_ignores() -> None:
    mapping = map_headers(["客户代码", "备注", "名称"], FIELDS, {"备注": "name", "名称": IGNORE})
    assert (mapping.columns, mapping.unmatched, mapping.ignored) == ({0: "code", 1: "name"}, [], [2])


def test_two_columns_for_one_field_are_refused() -> None:
    with pytest.raises(MappingRejected) as caught:
        map_headers(["客户名称", "Customer name"], FIELDS)
    assert caught.value.code == "duplicate_mapping"
    assert set(caught.value.field_errors) == {"客户名称", "Customer name"}
    with pytest.raises(MappingRejected):
        map_headers(["客户代码", "备注"], FIELDS, {"备注": "code"})
    assert map_headers(["客户名称", "Customer name"], FIELDS, {"Customer name": IGNORE}).columns == {0: "name"}


def test_unknown_columns_and_fields_in_the_choice() -> None:
    with pytest.raises(MappingRejected) as caught:
        map_headers(["客户代码"], FIELDS, {"备注": "name"})
    assert caught.value.code == "unknown_column"
    with pytest.raises(MappingRejected) as caught:
        map_headers(["客户代码"], FIELDS, {"客户代码": "password_hash"})
    assert caught.value.code == "unknown_field"


def test_a_label_two_fields_share_is_left_to_the_user() -> None:
    fields = [Spec("a", ("Phone",)), Spec("b", ("phone",))]
    assert map_headers(["PHONE"], fields).unmatched == [(0, "PHONE")]


# --------------------------------------------------------------------------- writing


def test_csv_export_has_a_bom_and_crlf() -> None:
    data = b"".join(write_csv(["客户代码", "客户名称"], [["KH001", "北京华为"]]))
    assert data == codecs.BOM_UTF8 + "客户代码,客户名称\r\nKH001,北京华为\r\n".encode()


def test_csv_export_neutralises_formulas() -> None:
    rows = [["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "plain", -5, Decimal("-1.50")]]
    data = b"".join(write_csv(["a", "b", "c", "d", "e", "f", "g", "h"], rows)).decode("utf-8-sig")
    line = data.splitlines()[1]
    assert line == "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",'+1+1,'-2+3,'@SUM(A1),'\t=1,plain,-5,-1.50"


def test_csv_export_streams_in_chunks() -> None:
    chunks = list(write_csv(["n"], ([str(n) * 10] for n in range(20_000)), chunk_bytes=4096))
    assert len(chunks) > 20
    assert all(len(chunk) < 4096 + 200 for chunk in chunks)


def test_csv_round_trip() -> None:
    headers = ["客户代码", "客户名称", "公式", "成立日期", "金额", "时间", "空"]
    rows: list[list[object]] = [
        ["KH001", "北京华为, \"总部\"\n二楼", "=1+2", dt.date(2024, 3, 5), Decimal("12.50"),
         dt.datetime(2024, 3, 5, 1, 2, 3, tzinfo=dt.timezone(dt.timedelta(hours=8))), None],
        ["KH002", "-负数开头", "@x", dt.datetime(2024, 1, 1), 3.0, True, ""],  # noqa: DTZ001 - as a workbook
    ]
    data = b"".join(write_csv(headers, rows))
    table, read_rows = read(data)
    assert (table.encoding, table.headers) == ("utf-8-sig", headers)
    assert read_rows == [
        (2, ["KH001", "北京华为, \"总部\"\n二楼", "=1+2", "2024-03-05", "12.50", "2024-03-04 17:02:03"]),
        (3, ["KH002", "-负数开头", "@x", "2024-01-01", "3", "TRUE"]),
    ]


def test_xlsx_export_keeps_formulas_as_text() -> None:
    data = b"".join(write_xlsx(["a", "b"], [["=1+2", "@x"]]))
    book = load_workbook(io.BytesIO(data))
    sheet = book.active
    assert sheet is not None
    cell = sheet["A2"]
    assert (cell.value, cell.data_type, cell.quotePrefix) == ("=1+2", "s", True)
    assert sheet["A1"].font.bold
    assert sheet.freeze_panes == "A2"


def test_xlsx_round_trip() -> None:
    headers = ["客户代码", "客户名称", "联系电话", "成立日期", "金额", "大号码", "控制字符", "时间"]
    rows: list[list[object]] = [
        ["KH001", "北京华为", "13800138000", dt.date(2024, 3, 5), Decimal("12.5"), 6222021234567890123,
         "a\x01b", dt.datetime(2024, 3, 5, 1, 2, tzinfo=dt.UTC)],
        ["KH002", "=SUM(A1)", 13900139000, dt.datetime(2024, 1, 1), 0.25, 7, None, None],  # noqa: DTZ001
    ]
    data = b"".join(write_xlsx(headers, rows))
    table, read_rows = read(data, "export.xlsx")
    assert table.headers == headers
    assert read_rows == [
        (2, ["KH001", "北京华为", "13800138000", "2024-03-05", "12.5", "6222021234567890123", "ab",
             "2024-03-05 01:02"]),
        (3, ["KH002", "=SUM(A1)", "13900139000", "2024-01-01", "0.25", "7"]),
    ]
