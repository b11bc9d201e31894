"""Settlement statements: the line model, the CSV format, and reading either format as a stream.

A statement is what a channel says happened: one ``StatementLine`` per settlement, with the
channel's reference, our payment ids, the amount in minor units and its status. Two formats:

- CSV (what the channels' statement download and ``payledger channel-sim`` give): UTF-8 (a BOM
  is tolerated), a header row matched by name (extra columns ignored, ``entry_ref`` optional),
  one row per line. Amounts are decimal strings with the currency's exponent, strictly positive.
- ISO 20022 camt.053 (the bank channel): see ``camt053``.

``read_statement`` streams: its ``Statement`` yields the lines as it reads them, so a
million-line file never sits in memory. Every refusal is a ``StatementFormatError`` naming the
row (or camt element) and the field.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from domain.errors import FieldError, InvalidAmount, UnknownCurrency, ValidationError
from domain.money import MAX_AMOUNT_MINOR, currency_exponent, parse_amount

FORMATS = ("csv", "camt053")
DIRECTIONS = ("credit", "debit")
STATUSES = ("settled", "failed", "reversed")
CSV_COLUMNS = (
    "booking_date",
    "reference",
    "payment_id",
    "amount",
    "currency",
    "direction",
    "status",
    "entry_ref",
)
OPTIONAL_COLUMNS = frozenset({"entry_ref"})
#: Longest reference or entry reference we keep (camt.053 allows 35 characters; CSV rarely more).
MAX_REFERENCE_CHARS = 255
#: Most payment ids one line may settle (a CSV field holds at most ~3,500 anyway).
MAX_PAYMENT_IDS = 10_000
MAX_WARNINGS = 100
#: Longest physical CSV line read (a valid line is well under 1 KiB, a 1:N line a few KiB).
MAX_LINE_BYTES = 1024 * 1024
#: Bytes read ahead to tell XML from CSV.
_SNIFF_BYTES = 1024

# Text as read -> the canonical constant (validates and keeps one string object per value).
_DIRECTION = {d: d for d in DIRECTIONS}
_STATUS = {s: s for s in STATUSES}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class StatementLine:
    line_no: int  # 1-based data line number (CSV: row after the header; camt: entry ordinal)
    reference: str | None  # the channel's reference for the charge (a payment's channel_reference)
    payment_ids: tuple[str, ...]  # our payment ids (UUID strings) it settles; may be empty
    amount_minor: int  # > 0
    currency: str
    direction: str  # "credit" (money to us: pay-ins) | "debit" (payouts)
    status: str  # "settled" | "failed" | "reversed"
    booked_on: datetime.date  # booking / settlement date
    entry_ref: str | None = None  # the statement's own id for the line, if any


class StatementFormatError(ValidationError):
    """A statement that cannot be read: where (row or element), which field, and why."""

    code = "invalid_statement"

    def __init__(
        self, location: str, field: str, reason: str, *, line_no: int | None = None
    ) -> None:
        super().__init__(
            FieldError(f"{location}: {field}", reason, self.code), f"{location}, {field}: {reason}"
        )
        self.location = location
        self.field = field
        self.reason = reason
        self.line_no = line_no


@dataclass(frozen=True, slots=True)
class StatementPart:
    """One account statement inside a file (camt.053: one ``Stmt``), known once it is read."""

    id: str | None
    account: str | None
    currency: str | None
    opening_balance_minor: int | None
    closing_balance_minor: int | None
    line_count: int


class Statement:
    """A statement being read. Iterate it once for its lines (lazily, as the file is read);
    once iterated (``complete``), ``line_count`` and, where the format has them (camt.053), the
    balances, currency and account are known (None when a file mixes accounts: see ``parts``).
    ``skipped`` counts entries left out, by reason (camt.053: their status, e.g. ``PDNG``), and
    ``warnings`` says what was odd but not fatal (a balance in another currency, left out)."""

    def __init__(self, format: str, read: Callable[[Statement], Iterator[StatementLine]]) -> None:
        self.format = format
        self.line_count = 0
        self.opening_balance_minor: int | None = None
        self.closing_balance_minor: int | None = None
        self.currency: str | None = None
        self.account: str | None = None
        self.parts: list[StatementPart] = []
        self.skipped: dict[str, int] = {}
        self.warnings: list[str] = []  # oddities that did not stop the reading (at most 100)
        self.complete = False
        self._lines = read(self)  # a generator: nothing is read before the first line is asked

    def __iter__(self) -> Iterator[StatementLine]:
        return self._lines  # one pass, at C speed in a for loop

    def __next__(self) -> StatementLine:
        return next(self._lines)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)


def read_statement(
    stream: BinaryIO, *, format: str | None = None, validate: bool = False
) -> Statement:
    """Start reading a statement from a binary stream; the format is told by the content (XML
    or CSV) unless given. ``validate`` (camt.053 only) checks the file against its XSD first,
    which needs the whole file in memory: refused above ``camt053.MAX_VALIDATED_BYTES``."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown statement format {format!r}; known: {', '.join(FORMATS)}")
    buffered = _Borrowed.wrap(stream)
    if format is None:
        format = sniff_format(buffered.peek(_SNIFF_BYTES))
    if format == "camt053":
        from application.reconciliation import camt053  # camt053 imports this module

        return camt053.read_camt053(buffered, validate=validate)
    return Statement("csv", lambda statement: _csv_lines(statement, buffered))


def sniff_format(head: bytes) -> str:
    """``camt053`` for XML (the first non-blank character is ``<``), else ``csv``."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise StatementFormatError("file", "encoding", "must be UTF-8 (this is UTF-16)")
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head:
        raise StatementFormatError("file", "content", "the file is empty")
    return "camt053" if head.startswith(b"<") else "csv"


class _Borrowed(io.RawIOBase):
    """A caller's stream seen through a ``BufferedReader`` (for ``peek``) that never closes it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    @classmethod
    def wrap(cls, stream: BinaryIO) -> io.BufferedReader:
        return io.BufferedReader(cls(stream), buffer_size=256 * 1024)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# --- CSV ---------------------------------------------------------------------------------------


def _csv_lines(statement: Statement, stream: io.BufferedReader) -> Iterator[StatementLine]:
    """The rows as lines. The loop is written out with locals on purpose: a million rows must
    parse in a few seconds, so the common row takes no function call but the line's own
    constructor; anything unusual goes to ``_Rows``, which explains the refusal."""
    if stream.peek(3).startswith(b"\xef\xbb\xbf"):
        stream.read(3)
    reader = csv.reader(_decoded(stream), strict=True)
    row_no = 0
    try:
        header = next(reader, None)
        if header is None:
            raise StatementFormatError("file", "header", "the file is empty")
        rows = _Rows(_column_indexes(header))
        i_date, i_ref, i_ids, i_amount, i_currency, i_direction, i_status, i_entry = rows.indexes
        width, dates, currencies = rows.width, rows.dates, rows.currencies
        directions, statuses, is_uuid, line = _DIRECTION, _STATUS, _UUID.fullmatch, StatementLine
        count = 0
        for row_no, row in enumerate(reader, 1):
            if len(row) < width:
                if not row:
                    continue  # a blank line
                raise rows.error(row_no, "row", f"has {len(row)} fields, the header {width}")
            currency, exponent = currencies.get(row[i_currency]) or rows.currency(row, row_no)
            text = row[i_amount]
            whole, dot, fraction = text.partition(".")
            amount = 0
            if (
                len(fraction) == exponent
                and (dot or not exponent)
                and whole.isdigit()
                and text.isascii()
                and (fraction.isdigit() or not exponent)
                and (whole[0] != "0" or len(whole) == 1)
            ):
                amount = int(whole + fraction)
            if not 0 < amount <= MAX_AMOUNT_MINOR:
                amount = rows.amount(text, currency, row_no)
            direction = directions.get(row[i_direction]) or rows.direction(row, row_no)
            status = statuses.get(row[i_status]) or rows.status(row, row_no)
            booked_on = dates.get(row[i_date]) or rows.date(row[i_date], row_no)
            ids = row[i_ids]
            if not ids:
                payment_ids: tuple[str, ...] = ()
            elif len(ids) == 36 and is_uuid(ids):
                payment_ids = (ids,)
            else:
                payment_ids = rows.payment_ids(ids, row_no)
            reference = row[i_ref] or None
            entry_ref = (row[i_entry] or None) if i_entry >= 0 else None
            if (reference and len(reference) > MAX_REFERENCE_CHARS) or (
                entry_ref and len(entry_ref) > MAX_REFERENCE_CHARS
            ):
                rows.too_long(reference, row_no)
            count += 1
            yield line(
                row_no,
                reference,
                payment_ids,
                amount,
                currency,
                direction,
                status,
                booked_on,
                entry_ref,
            )
        statement.line_count = count
        statement.complete = True
    except UnicodeDecodeError as e:
        raise StatementFormatError(
            f"row {row_no + 1} (line {reader.line_num + 1})",
            "encoding",
            f"not UTF-8 (byte {e.start + 1} of the line: {e.reason})",
            line_no=row_no + 1,
        ) from None
    except csv.Error as e:
        raise StatementFormatError(
            f"row {row_no + 1} (line {reader.line_num})", "csv", str(e), line_no=row_no + 1
        ) from None


def _decoded(stream: io.BufferedReader) -> Iterator[str]:
    """The stream's physical lines as text, each at most ``MAX_LINE_BYTES`` (bounded memory),
    decoded one by one so that a bad byte is reported on its own line."""
    readline = stream.readline
    while True:
        raw = readline(MAX_LINE_BYTES)
        if not raw:
            return
        if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise StatementFormatError("file", "line", f"a line longer than {MAX_LINE_BYTES} bytes")
        yield raw.decode()


def _column_indexes(header: list[str]) -> dict[str, int]:
    names = [name.strip() for name in header]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen and name in CSV_COLUMNS:
            raise StatementFormatError("header", name, "the column appears twice")
        seen.setdefault(name, i)
    missing = [c for c in CSV_COLUMNS if c not in seen and c not in OPTIONAL_COLUMNS]
    if missing:
        raise StatementFormatError(
            "header",
            ", ".join(missing),
            f"missing column(s); the header must name {', '.join(CSV_COLUMNS)}",
        )
    return {c: seen[c] for c in CSV_COLUMNS if c in seen}


class _Rows:
    """What the CSV loop keeps (column positions, caches) and its slow paths: each either
    returns the value (an unusual but valid form) or raises the error that names the row."""

    def __init__(self, columns: dict[str, int]) -> None:
        self.indexes = tuple(columns.get(c, -1) for c in CSV_COLUMNS)
        self.width = max(self.indexes) + 1
        self.dates: dict[str, datetime.date] = {}
        self.currencies: dict[str, tuple[str, int]] = {}

    def error(self, row_no: int, field: str, reason: str) -> StatementFormatError:
        return StatementFormatError(f"row {row_no}", field, reason, line_no=row_no)

    def currency(self, row: list[str], row_no: int) -> tuple[str, int]:
        text = row[self.indexes[4]]
        try:
            exponent = currency_exponent(text)
        except UnknownCurrency:
            raise self.error(row_no, "currency", f"{text!r} is not an ISO 4217 code") from None
        if len(self.currencies) < 1000:
            self.currencies[text] = (text, exponent)
        return text, exponent

    def amount(self, text: str, currency: str, row_no: int) -> int:
        try:
            return parse_amount(text, currency)
        except InvalidAmount as e:
            raise self.error(row_no, "amount", f"{text!r} {e.errors[0].reason}") from None

    def direction(self, row: list[str], row_no: int) -> str:
        raise self.error(row_no, "direction", _one_of(row[self.indexes[5]], DIRECTIONS))

    def status(self, row: list[str], row_no: int) -> str:
        raise self.error(row_no, "status", _one_of(row[self.indexes[6]], STATUSES))

    def date(self, text: str, row_no: int) -> datetime.date:
        value = parse_iso_date(text)
        if value is None:
            raise self.error(row_no, "booking_date", f"{text!r} is not a date (YYYY-MM-DD)")
        if len(self.dates) < 10_000:  # a statement has few distinct dates
            self.dates[text] = value
        return value

    def payment_ids(self, text: str, row_no: int) -> tuple[str, ...]:
        ids = text.split(";")
        if len(ids) > MAX_PAYMENT_IDS:
            raise self.error(row_no, "payment_id", f"more than {MAX_PAYMENT_IDS} ids")
        for i, pid in enumerate(ids, 1):
            if not _UUID.fullmatch(pid):
                shown = f"id {i} {pid!r}" if len(ids) > 1 else repr(pid)
                hint = " (write it in lowercase)" if _UUID.fullmatch(pid.lower()) else ""
                raise self.error(row_no, "payment_id", f"{shown} is not a UUID{hint}")
        if len(set(ids)) != len(ids):
            raise self.error(row_no, "payment_id", "an id appears twice")
        return tuple(ids)

    def too_long(self, reference: str | None, row_no: int) -> None:
        field = "reference" if reference and len(reference) > MAX_REFERENCE_CHARS else "entry_ref"
        raise self.error(row_no, field, f"longer than {MAX_REFERENCE_CHARS} characters")


def parse_iso_date(text: str) -> datetime.date | None:
    """``YYYY-MM-DD`` (the extended form only), else None."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-" or not text.isascii():
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def _one_of(text: str, allowed: Iterable[str]) -> str:
    return f"{text!r} is not one of {', '.join(allowed)}"


def write_csv_statement(lines: Iterable[StatementLine], out: TextIO) -> int:
    """Write ``lines`` as a CSV statement (header first) to ``out``; the number of lines."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    write = writer.writerow
    formats: dict[str, Callable[[int], str]] = {}
    count = 0
    for line in lines:
        check_line(line)
        amount = formats.get(line.currency)
        if amount is None:
            amount = formats[line.currency] = _amount_format(line.currency)
        write(
            (
                line.booked_on.isoformat(),
                line.reference or "",
                ";".join(line.payment_ids),
                amount(line.amount_minor),
                line.currency,
                line.direction,
                line.status,
                line.entry_ref or "",
            )
        )
        count += 1
    return count


def _amount_format(currency: str) -> Callable[[int], str]:
    """``format_amount`` for one currency, for positive amounts, without its per-call checks."""
    exponent = currency_exponent(currency)
    if exponent == 0:
        return str
    scale = 10**exponent
    return lambda amount: f"{amount // scale}.{amount % scale:0{exponent}d}"


def check_line(line: StatementLine) -> None:
    """``ValueError`` unless ``line`` can be written (a writer's caller's bug, not input)."""
    amount = line.amount_minor
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        problem = f"amount_minor must be a positive int, not {amount!r}"
    elif line.direction not in _DIRECTION:
        problem = _one_of(line.direction, DIRECTIONS)
    elif line.status not in _STATUS:
        problem = _one_of(line.status, STATUSES)
    elif line.payment_ids and ";" in "".join(line.payment_ids):
        problem = "a payment id contains ';'"
    else:
        return
    raise ValueError(f"statement line {line.line_no}: {problem}")
