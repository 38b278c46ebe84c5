"""The file layer of import and export: CSV and ``.xlsx`` in, CSV and ``.xlsx`` out, nothing about records.

Reading (:func:`read_table`) turns an uploaded file into a header row and an iterator of rows of text, each
with the line number a user sees for it in Excel (the header is line 1 when nothing stands above it).
Every problem with the file itself is a :class:`FileRejected` (a 422 ``DomainError`` whose ``code`` says
which, with ``line`` and ``column`` where they are known); validating the values is the importer's job.

- CSV is decoded as UTF-8 (with or without a BOM) or, when that fails anywhere in the file, as GB18030,
  which is what Excel on a Chinese Windows writes for "CSV (comma delimited)"; UTF-16 with a BOM (Excel's
  "Unicode text") is read too. The whole file is decoded once before the first row is returned, because a
  GB18030 file often starts with pure ASCII lines that are valid UTF-8. The delimiter (comma, semicolon or
  tab) is chosen from the first lines. Rows are then parsed as a stream: memory does not grow with the file.
- ``.xlsx``: the zip directory is checked (entry count, declared sizes, compression ratio) before openpyxl
  opens anything; Python's zipfile stops at an entry's declared size and fails its CRC if the data goes on,
  so the declared sizes are a real bound. The first worksheet is read in openpyxl's read-only mode (a
  streaming parser; only the shared strings are held in memory, and their size is bounded by the same
  check). Cells become the text a user typed: dates as ``YYYY-MM-DD``, whole numbers without ``.0`` and
  never in exponent notation (a mobile number stored as a number stays ``13800138000``).
- Row errors that only show while streaming (too many rows, a cell too long, broken quoting) are raised
  by the iterator, with their line: an importer that validates every row before writing anything (a dry
  run first) meets them before any write.

Header mapping (:func:`map_headers`) matches a file's headers to fields by their labels, ignoring case,
spaces, full/half width, punctuation and required marks (``*``, ``（必填）``). Writing (:func:`write_csv`,
:func:`write_xlsx`) streams bytes and neutralises formulas (CSV injection).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import math
import re
import tempfile
import unicodedata
import warnings
import zipfile
from collections.abc import Generator, Iterable, Iterator, Sequence
from collections.abc import Mapping as MappingOf
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any, BinaryIO, Literal, Protocol

from core.errors import ValidationFailed
from core.i18n import Text, _l, shown

#: Excel's own limit for the text of one cell.
MAX_CELL_CHARS = 32_767
#: More columns than any import template has; a wider file is a mistake (or a sheet of something else).
MAX_COLUMNS = 200
#: An ``.xlsx`` may unpack to this many times its own size at most (counting small files as 1 MiB): sheet
#: XML compresses 12-15 times in the workbooks we measured, a zip bomb hundreds or thousands of times.
UNPACK_FACTOR = 40
RATIO_FLOOR_BYTES = 1 << 20
#: A workbook has a few dozen parts; thousands of entries are not a workbook.
MAX_ZIP_ENTRIES = 2_000

CSV_EXTENSIONS = frozenset({".csv", ".txt", ".tsv"})
XLSX_EXTENSIONS = frozenset({".xlsx", ".xlsm"})
DELIMITERS = (",", ";", "\t")
#: What a spreadsheet takes for the start of a formula (OWASP's list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: The value the user can give in a mapping to skip a column.
IGNORE = "ignore"

_CHUNK = 1 << 20
_SNIFF_CHARS = 64 * 1024
_SNIFF_RECORDS = 50
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
#: Compound File Binary: Excel 97-2003 workbooks, and every password-protected Office 2007+ file.
_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
# Control characters never found in text a person wrote (tab, line feed and carriage return are fine).
_BINARY_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_XLSX_ROW_BATCH = 256


class FileRejected(ValidationFailed):
    """The file cannot be read as a table: ``code`` says why, ``line``/``column`` where, when known."""

    code = "file_rejected"

    def __init__(self, message: Text, *, code: str, line: int | None = None, column: str | None = None) -> None:
        super().__init__(message, field_errors={"file": [message]}, code=code)
        self.line = line
        self.column = column


class MappingRejected(ValidationFailed):
    """A header mapping that cannot be used (two columns for one field, an unknown column or field)."""

    code = "mapping_rejected"


Row = tuple[int, list[str]]
Rows = Generator[Row, None, None]


@dataclass
class Table:
    """A file's header row and its rows; ``close()`` (or ``with``) releases the file early.

    ``rows`` yields ``(line, cells)``: ``line`` is the row number a user sees in Excel; blank rows are
    skipped (their numbers too), trailing empty cells are dropped, so a row may be shorter or longer than
    the header: the importer reports that. It is an iterator over the open file: read it once, while the
    stream given to :func:`read_table` is still open.
    """

    headers: list[str]
    rows: Iterator[Row]
    format: Literal["csv", "xlsx"]
    #: ``utf-8``, ``utf-8-sig`` (UTF-8 with a BOM), ``gb18030`` or ``utf-16`` for CSV; None for xlsx.
    encoding: str | None
    #: The CSV delimiter found (``,``, ``;`` or a tab); None for xlsx.
    delimiter: str | None = None
    header_line: int = 1
    _closers: list[Rows] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for rows in self._closers:
            rows.close()

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def column_letter(index: int) -> str:
    """Excel's name for the 0-based column ``index``: A, B, ... Z, AA ..."""
    name = ""
    number = index + 1
    while number:
        number, rest = divmod(number - 1, 26)
        name = chr(65 + rest) + name
    return name


def _megabytes(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB"


# --------------------------------------------------------------------------- reading


def read_table(data: bytes | BinaryIO | IO[bytes], filename: str, *, max_rows: int, max_bytes: int,
               max_columns: int = MAX_COLUMNS, max_cell_chars: int = MAX_CELL_CHARS,
               max_unpacked_bytes: int | None = None) -> Table:
    """Open an uploaded CSV or ``.xlsx`` file (see the module docstring); raises :class:`FileRejected`.

    ``data`` may be bytes or a binary stream (a non-seekable one is copied to a temporary file first,
    at most ``max_bytes`` of it). ``max_rows`` counts the data rows that are not blank.
    """
    stream = _bounded_stream(data, max_bytes)
    head = stream.read(8)
    stream.seek(0)
    extension = _extension(filename)
    limits = _Limits(max_rows, max_columns, max_cell_chars,
                     max_unpacked_bytes if max_unpacked_bytes is not None else UNPACK_FACTOR * max_bytes)
    if head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        if extension in CSV_EXTENSIONS:
            raise FileRejected(_l("This file is an Excel workbook although its name ends in %(ext)s: save it as "
                                  "CSV, or rename it to .xlsx.", ext=extension), code="wrong_format")
        if extension not in (*XLSX_EXTENSIONS, ".xls"):
            raise _unsupported(extension)
        return _read_xlsx(stream, limits)
    if head.startswith(_CFB_MAGIC):
        if extension in CSV_EXTENSIONS:
            raise FileRejected(_l("This file is an Excel workbook although its name ends in %(ext)s: save it as "
                                  "CSV, or rename it to .xlsx.", ext=extension), code="wrong_format")
        if extension not in (*XLSX_EXTENSIONS, ".xls"):
            raise _unsupported(extension)
        raise _compound_file(stream)
    if extension in CSV_EXTENSIONS:
        return _read_csv(stream, limits)
    if extension in XLSX_EXTENSIONS:
        raise FileRejected(_l("This file is not an Excel workbook although its name ends in %(ext)s: if it is "
                              "CSV text, rename it to .csv.", ext=extension), code="wrong_format")
    if extension == ".xls":
        raise FileRejected(_l("This is not an Excel 97-2003 workbook although its name ends in .xls: save it "
                              "from Excel as .xlsx or as CSV."), code="wrong_format")
    raise _unsupported(extension)


@dataclass(frozen=True)
class _Limits:
    rows: int
    columns: int
    cell_chars: int
    unpacked_bytes: int


def _extension(filename: str) -> str:
    name = filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    return f".{ext.lower()}" if dot and stem else ""


def _unsupported(extension: str) -> FileRejected:
    return FileRejected(_l("Files of type %(ext)s cannot be imported: use .csv or .xlsx.",
                           ext=shown(extension or "?", 12)), code="unsupported_format")


def _bounded_stream(data: bytes | BinaryIO | IO[bytes], max_bytes: int) -> IO[bytes]:
    """A seekable stream positioned at the file's start, after refusing empty and oversized files."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        size = len(data)
        stream: IO[bytes] = io.BytesIO(data)
    elif data.seekable():
        start = data.tell()
        size = data.seek(0, io.SEEK_END) - start
        data.seek(start)
        stream = data
        if start:  # the file starts where the caller left the stream: give the readers a stream at 0
            stream = _copy(data, max_bytes)
    else:
        stream = _copy(data, max_bytes)
        size = stream.seek(0, io.SEEK_END)
        stream.seek(0)
    if size == 0:
        raise FileRejected(_l("The file is empty."), code="file_empty")
    if size > max_bytes:
        raise FileRejected(_l("The file is too large (%(size)s); the limit is %(limit)s.", size=_megabytes(size),
                              limit=_megabytes(max_bytes)), code="file_too_large")
    return stream


def _copy(data: BinaryIO | IO[bytes], max_bytes: int) -> IO[bytes]:
    copy: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - the Table owns it
    left = max_bytes + 1  # one byte more than allowed is enough to know the file is too large
    while left > 0:
        chunk = data.read(min(_CHUNK, left))
        if not chunk:
            break
        copy.write(chunk)
        left -= len(chunk)
    copy.seek(0)
    return copy


def _compound_file(stream: IO[bytes]) -> FileRejected:
    # Office puts a password-protected .xlsx in a compound file with an "EncryptedPackage" stream; any
    # other compound file named like a workbook is an Excel 97-2003 one. The whole file is within
    # max_bytes, and the directory sector may be anywhere in it.
    found, tail = False, b""
    while chunk := stream.read(_CHUNK):
        if _ENCRYPTED_STREAM in tail + chunk:
            found = True
            break
        tail = chunk[-len(_ENCRYPTED_STREAM):]
    if found:
        return FileRejected(_l("The workbook is password-protected: save a copy without a password and "
                               "import that."), code="encrypted")
    return FileRejected(_l("This is an Excel 97-2003 workbook (.xls): save it as an Excel workbook (.xlsx) "
                           "and import that."), code="old_excel")


# --------------------------------------------------------------------------- CSV


def _read_csv(stream: IO[bytes], limits: _Limits) -> Table:
    encoding, sample = _detect_encoding(stream)
    delimiter = _detect_delimiter(sample)
    stream.seek(0)
    rows = _csv_rows(stream, encoding, delimiter, limits)
    first = next(rows, None)
    if first is None:
        raise FileRejected(_l("The file has no header row."), code="no_header")
    line, cells = first
    try:
        headers = _headers(cells, line, limits)
    except FileRejected:
        rows.close()  # detaches the text layer now, so the caller's stream is never closed by it
        raise
    return Table(headers=headers, rows=rows, format="csv", encoding=encoding, delimiter=delimiter,
                 header_line=line, _closers=[rows])


def _detect_encoding(stream: IO[bytes]) -> tuple[str, str]:
    """The file's encoding, and its first characters for the delimiter guess; the file is decoded whole."""
    head = stream.read(4)
    stream.seek(0)
    if head.startswith(codecs.BOM_UTF8):
        candidates: tuple[str, ...] = ("utf-8-sig",)
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ("utf-16",)
    else:
        candidates = ("utf-8", "gb18030")
    bad_line = 1
    for encoding in candidates:
        stream.seek(0)
        sample = _decode_all(stream, encoding)
        if isinstance(sample, str):
            return encoding, sample
        bad_line = max(bad_line, sample)
    raise FileRejected(_l("The file is neither UTF-8 nor GB18030 text (line %(line)d cannot be decoded): save it "
                          "from Excel as \u201cCSV UTF-8\u201d and import that.", line=bad_line),
                       code="bad_encoding", line=bad_line)


def _decode_all(stream: IO[bytes], encoding: str) -> str | int:
    """The first characters of the file if all of it decodes, else the (physical) line that does not.

    Control characters are refused here, once, rather than per cell: they mean a binary file.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    sample = ""
    newlines = 0
    while True:
        chunk = stream.read(_CHUNK)
        final = not chunk
        try:
            text = decoder.decode(chunk, final=final)
        except UnicodeDecodeError as error:
            return newlines + chunk[: max(error.start, 0)].count(b"\n") + 1
        junk = _BINARY_RE.search(text)
        if junk is not None:
            line = newlines + text.count("\n", 0, junk.start()) + 1
            raise FileRejected(_l("The file contains binary data (a control character on line %(line)d): it is "
                                  "not a CSV text file.", line=line), code="not_text", line=line)
        if len(sample) < _SNIFF_CHARS:
            sample += text[: _SNIFF_CHARS - len(sample)]
        newlines += text.count("\n")
        if final:
            return sample


def _detect_delimiter(sample: str) -> str:
    """The candidate that splits the header into most columns with the following rows as wide as it."""
    if len(sample) >= _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # the last line may be cut
    best, best_score = ",", (False, 0.0, 0)
    for delimiter in DELIMITERS:
        widths = []
        try:
            for record in csv.reader(io.StringIO(sample), delimiter=delimiter):
                if any(record):
                    widths.append(len(record))
                if len(widths) >= _SNIFF_RECORDS:
                    break
        except csv.Error:
            continue
        if not widths:
            continue
        agree = sum(1 for width in widths if width == widths[0]) / len(widths)
        score = (widths[0] > 1, agree, widths[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _csv_rows(stream: IO[bytes], encoding: str, delimiter: str, limits: _Limits) -> Rows:
    text = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    line = 0
    count = -1  # the header is not a data row
    try:
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                at = line + 1
                if "field larger than field limit" in str(error):
                    raise _cell_too_long(at, None, limits) from None
                raise FileRejected(_l("Line %(line)d is not valid CSV: a quoted value is not closed properly.",
                                      line=at), code="bad_csv", line=at) from None
            line += 1
            if not any(cells):
                continue
            while not cells[-1]:
                cells.pop()
            _check_width(cells, line, limits)
            for index, cell in enumerate(cells):
                if cell[:1] == "'" and cell[1:2] in FORMULA_STARTS:
                    cells[index] = cell[1:]  # our own export's formula guard (write_csv) comes off again
            count += 1
            if count > limits.rows:
                raise _too_many_rows(line, limits)
            yield line, cells
    finally:
        text.detach()  # the caller's stream stays open: closing it is the caller's business


def _check_width(cells: list[str], line: int, limits: _Limits) -> None:
    if len(cells) > limits.columns:
        raise _too_many_columns(line, limits)
    if max(map(len, cells)) > limits.cell_chars:
        index = next(i for i, cell in enumerate(cells) if len(cell) > limits.cell_chars)
        raise _cell_too_long(line, index, limits)


def _too_many_columns(line: int, limits: _Limits) -> FileRejected:
    return FileRejected(_l("Line %(line)d has more than %(limit)d columns.", line=line, limit=limits.columns),
                        code="too_many_columns", line=line)


def _cell_too_long(line: int, index: int | None, limits: _Limits) -> FileRejected:
    if index is None:
        return FileRejected(_l("A value on line %(line)d is longer than %(limit)d characters (a quote may not be "
                               "closed).", line=line, limit=limits.cell_chars), code="cell_too_long", line=line)
    cell = f"{column_letter(index)}{line}"
    return FileRejected(_l("Cell %(cell)s is longer than %(limit)d characters.", cell=cell, limit=limits.cell_chars),
                        code="cell_too_long", line=line, column=column_letter(index))


def _too_many_rows(line: int, limits: _Limits) -> FileRejected:
    return FileRejected(_l("The file has more than %(limit)d data rows: split it into smaller files.",
                           limit=limits.rows), code="too_many_rows", line=line)


def _headers(cells: list[str], line: int, limits: _Limits) -> list[str]:
    # A second BOM (a GB18030 one, or UTF-8 twice) would otherwise stick to the first header.
    headers = [cell.replace("\ufeff", "").strip() for cell in cells]
    while headers and not headers[-1]:
        headers.pop()
    if not headers:
        raise FileRejected(_l("The file has no header row."), code="no_header", line=line)
    seen: dict[str, int] = {}
    for index, header in enumerate(headers):
        if not header:
            column = column_letter(index)
            raise FileRejected(_l("Column %(column)s has no header (line %(line)d).", column=column, line=line),
                               code="blank_header", line=line, column=column)
        folded = header.casefold()
        if folded in seen:
            column = column_letter(index)
            raise FileRejected(_l("Columns %(first)s and %(second)s have the same header \u201c%(header)s\u201d.",
                                  first=column_letter(seen[folded]), second=column, header=shown(header)),
                               code="duplicate_header", line=line, column=column)
        seen[folded] = index
    return headers


# --------------------------------------------------------------------------- xlsx


def _read_xlsx(stream: IO[bytes], limits: _Limits) -> Table:
    _check_zip(stream, limits)
    stream.seek(0)
    from openpyxl import load_workbook

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions it skips
            book = load_workbook(stream, read_only=True, data_only=True, keep_links=False)
    except Exception:  # any failure of the parser on untrusted bytes means a damaged file
        raise _corrupt() from None
    rows = _xlsx_rows(book, limits)
    first = next(rows, None)  # a generator that raises has run its ``finally``: the workbook is closed
    if first is None:
        rows.close()
        raise FileRejected(_l("The file has no header row."), code="no_header")
    line, cells = first
    try:
        headers = _headers(cells, line, limits)
    except FileRejected:
        rows.close()
        raise
    return Table(headers=headers, rows=rows, format="xlsx", encoding=None, header_line=line, _closers=[rows])


def _corrupt() -> FileRejected:
    return FileRejected(_l("The workbook is damaged and cannot be read: open it in Excel, save it again and "
                           "import that."), code="corrupt")


def _check_zip(stream: IO[bytes], limits: _Limits) -> None:
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise _corrupt() from None
    if len(entries) > MAX_ZIP_ENTRIES:
        raise _corrupt()
    names = {entry.filename for entry in entries}
    if "xl/workbook.bin" in names:
        raise FileRejected(_l("This is an Excel binary workbook (.xlsb): save it as an Excel workbook (.xlsx) and "
                              "import that."), code="unsupported_format")
    if "xl/workbook.xml" not in names or "[Content_Types].xml" not in names:
        raise FileRejected(_l("This file is a zip archive, not an Excel workbook: save it from Excel as .xlsx."),
                           code="wrong_format")
    allowed = min(limits.unpacked_bytes, UNPACK_FACTOR * max(size, RATIO_FLOOR_BYTES))
    if sum(entry.file_size for entry in entries) > allowed:
        raise FileRejected(_l("The workbook would unpack to more than %(limit)s: it is refused as a possible "
                              "zip bomb.", limit=_megabytes(allowed)), code="zip_bomb")


def _xlsx_rows(book: object, limits: _Limits) -> Rows:
    from openpyxl.workbook.workbook import Workbook

    assert isinstance(book, Workbook)
    try:
        try:
            sheets = book.worksheets
        except Exception:  # see _read_xlsx
            raise _corrupt() from None
        if not sheets:
            raise FileRejected(_l("The workbook has no worksheet."), code="no_sheet")
        sheet = sheets[0]
        # The <dimension> element may be missing or wrong (files not written by Excel): openpyxl then
        # stops early, so the rows are read to the end of the sheet's data instead.
        sheet.reset_dimensions()
        values = sheet.iter_rows(values_only=True)
        line = 0
        count = -1
        while True:
            batch = _next_rows(values)
            if not batch:
                return
            for values_of_row in batch:
                line += 1
                raw = values_of_row
                if not raw:
                    continue
                if len(raw) > limits.columns:
                    # Styled empty cells far to the right widen a row without values: only values count.
                    # Counted in C: a Python loop over 16,384 cells a row would be the cost to bound.
                    tail = raw[limits.columns:]
                    if tail.count(None) + tail.count("") != len(tail):
                        raise _too_many_columns(line, limits)
                    raw = raw[: limits.columns]
                cells = [_cell_text(value) for value in raw]
                if not any(cells):
                    continue
                while not cells[-1]:
                    cells.pop()
                _check_width(cells, line, limits)
                count += 1
                if count > limits.rows:
                    raise _too_many_rows(line, limits)
                yield line, cells
    finally:
        book.close()


def _next_rows(values: Iterator[tuple[object, ...]]) -> list[tuple[object, ...]]:
    rows = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for raw in values:
                rows.append(raw)
                if len(rows) >= _XLSX_ROW_BATCH:
                    break
    except Exception:  # see _read_xlsx
        raise _corrupt() from None
    return rows


def _cell_text(value: object) -> str:
    """A cell's value as the user typed it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.strftime("%Y-%m-%d")
        return value.strftime("%Y-%m-%d %H:%M" if value.second == 0 else "%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M" if value.second == 0 else "%H:%M:%S")
    if isinstance(value, dt.timedelta):
        minutes, seconds = divmod(int(value.total_seconds()), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return str(value)


def _number_text(value: float) -> str:
    """Excel shows 15 significant digits and never an exponent for what a user typed as digits."""
    if not math.isfinite(value):
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = format(Decimal(f"{value:.15g}"), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# --------------------------------------------------------------------------- header mapping


class FieldLabels(Protocol):
    """What an importable field tells the mapper: its key and every label a header may carry."""

    @property
    def key(self) -> str: ...

    @property
    def labels(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class HeaderMapping:
    """Which column feeds which field; ``unmatched`` are the (index, header) pairs the user must decide."""

    columns: dict[int, str]
    unmatched: list[tuple[int, str]]
    ignored: list[int]

    def key_of(self, index: int) -> str | None:
        return self.columns.get(index)


# Required and optional marks that templates put in headers: 客户名称*, 客户名称（必填）, Name (required).
_MARKS_RE = re.compile(
    r"[(\[{<【〔]\s*(必填|必须|必需|必输|选填|可选|非必填|required|optional|mandatory)\s*[)\]}>】〕]", re.IGNORECASE)


def normalize_label(text: str) -> str:
    """The form in which a header and a label are compared (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = _MARKS_RE.sub("", folded)
    return "".join(char for char in folded if unicodedata.category(char)[0] not in "PSZC")


def map_headers(headers: Sequence[str], fields: Iterable[FieldLabels],
                chosen: MappingOf[str, str] | None = None) -> HeaderMapping:
    """Map each header to a field by its labels (or its key); ``chosen`` (header → key or ``"ignore"``),
    what the user decided, wins. Raises :class:`MappingRejected` when two columns would feed one field.
    """
    by_label: dict[str, str | None] = {}
    keys: set[str] = set()
    for spec in fields:
        keys.add(spec.key)
        for label in (*spec.labels, spec.key):
            norm = normalize_label(label)
            if not norm:
                continue
            known = by_label.get(norm, spec.key)
            by_label[norm] = spec.key if known == spec.key else None  # a label two fields share decides nothing
    chosen = dict(chosen or {})
    positions = {header: index for index, header in enumerate(headers)}
    for header, key in chosen.items():
        if header not in positions:
            raise MappingRejected(_l("There is no column \u201c%(header)s\u201d in the file.", header=shown(header)),
                                  field_errors={header: [_l("There is no such column.")]}, code="unknown_column")
        if key != IGNORE and key not in keys:
            raise MappingRejected(_l("\u201c%(key)s\u201d is not a field that can be imported.", key=shown(key)),
                                  field_errors={header: [_l("Choose a field or ignore the column.")]},
                                  code="unknown_field")
    columns: dict[int, str] = {}
    unmatched: list[tuple[int, str]] = []
    ignored: list[int] = []
    owner: dict[str, int] = {}
    for index, header in enumerate(headers):
        target = chosen[header] if header in chosen else by_label.get(normalize_label(header))
        if target == IGNORE:
            ignored.append(index)
            continue
        if target is None:
            unmatched.append((index, header))
            continue
        if target in owner:
            first = headers[owner[target]]
            message = _l("The columns \u201c%(first)s\u201d and \u201c%(second)s\u201d are both mapped to the same "
                         "field.", first=shown(first), second=shown(header))
            raise MappingRejected(message, field_errors={first: [message], header: [message]},
                                  code="duplicate_mapping")
        owner[target] = index
        columns[index] = target
    return HeaderMapping(columns=columns, unmatched=unmatched, ignored=ignored)


# --------------------------------------------------------------------------- writing


def _export_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return _cell_text(value)
    if isinstance(value, (dt.date, dt.time)):
        return _cell_text(value)
    return str(value)  # int, and anything else that knows how to show itself


def write_csv(headers: Sequence[str], rows: Iterable[Sequence[object]], *, chunk_bytes: int = 64 * 1024
              ) -> Iterator[bytes]:
    """The rows as UTF-8 CSV with a BOM (Excel then reads Chinese right), in chunks of about ``chunk_bytes``.

    Text that a spreadsheet would take for a formula (``=``, ``+``, ``-``, ``@`` ...) gets a leading
    apostrophe; numbers are written as numbers. Aware datetimes are written in UTC.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([_export_text(header) for header in headers])
    yield codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    for row in rows:
        writer.writerow([_export_text(value) for value in row])
        if buffer.tell() >= chunk_bytes:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8")


def write_xlsx(headers: Sequence[str], rows: Iterable[Sequence[object]], *, sheet_title: str = "Sheet1",
               chunk_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """The rows as an ``.xlsx`` workbook, built in openpyxl's write-only mode in a temporary file.

    Text is always stored as text (never as a formula, so no injection); whole numbers too large for
    Excel's 15 digits are written as text; aware datetimes in UTC.
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import Cell
    from openpyxl.styles import Font

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title=sheet_title)
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)

    def cell(value: object, *, header: bool = False) -> Cell:
        written = WriteOnlyCell(sheet, value=_xlsx_value(value))
        if isinstance(written.value, str):
            written.data_type = "s"  # openpyxl would store "=..." as a formula
            if written.value.startswith(FORMULA_STARTS):
                written.quotePrefix = True  # and Excel keeps it text when the cell is edited
        if header:
            written.font = bold
        return written

    sheet.append([cell(header, header=True) for header in headers])
    for row in rows:
        sheet.append([cell(value) for value in row])
    with tempfile.TemporaryFile() as out:
        book.save(out)
        out.seek(0)
        while chunk := out.read(chunk_bytes):
            yield chunk


_ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _xlsx_value(value: object) -> Any:  # what openpyxl takes: its stubs name fewer types than it writes
    if value is None or isinstance(value, (bool, float, Decimal, dt.date, dt.time)):
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**15 else str(value)
    # XML cannot hold most control characters: they are dropped rather than failing the whole export.
    return _ILLEGAL_XML_RE.sub("", str(value))
