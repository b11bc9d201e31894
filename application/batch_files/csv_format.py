"""CSV batch files, in.

Format:

- UTF-8 text, with or without a byte-order mark. Fields are separated by commas (or by
  semicolons, when the header row has semicolons and no comma), quoted the usual CSV way
  (RFC 4180: a field holding the separator, a quote or a line break is put in double quotes, and a
  quote inside it is doubled).
- The first row is the header: column names, in any order, each at most once. Names are matched
  ignoring case and surrounding spaces. Blank lines are skipped.
- Every other row is one credit transfer and has exactly as many fields as the header. Spaces
  around a value are dropped; an empty field means "no value".

Columns (``*``: at least one of ``iban`` and ``payee_account_id``):

| column | required | value |
|---|---|---|
| `end_to_end_id` | yes | the client's unique id of the item (ISO 20022: at most 35 characters) |
| `amount` | yes | decimal text with a dot and no thousands separator: `1500.00` |
| `currency` | yes | ISO 4217 code: `EUR` |
| `name` | yes | the beneficiary's name, in any script: `张伟` |
| `iban` | * | the beneficiary's IBAN, for a bank transfer |
| `payee_account_id` | * | a ledger account of the same tenant, for an internal transfer |
| `bic` | no | the beneficiary bank's BIC |
| `value_date` | no | the requested execution date, `YYYY-MM-DD` |
| `priority` | no | an integer; higher goes first when the batch orders by priority |
| `depends_on` | no | the `end_to_end_id` of an item that must succeed first |
| `remittance` | no | free text for the beneficiary (at most 140 characters) |
| `instruction_id` | no | the client's instruction id (at most 35 characters) |
| `channel` | no | the channel; default `bank_transfer` for an IBAN, `internal` for an account |

The file is refused as a whole (``BatchFileError``, code FF01) when it is not UTF-8, has no
header, lacks a required column (``iban`` and ``payee_account_id`` may not both be missing),
names an unknown or repeated column, has a row with the wrong number of fields (``line N``), or
has a ``value_date`` or ``priority`` that cannot be read (``line N, column value_date``). Whether
a value is acceptable (the amount for its currency, the IBAN's checksum, a missing name...) is
decided item by item by the batch rules, exactly as for pain.001 and JSON.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterator
from datetime import date

from application.batch_files.model import (
    BatchFileError,
    FieldError,
    ParsedFile,
    RawItem,
    location_error,
)

REQUIRED_COLUMNS = ("end_to_end_id", "amount", "currency", "name")
ACCOUNT_COLUMNS = ("iban", "payee_account_id")  # at least one of them
OPTIONAL_COLUMNS = (
    "bic",
    "value_date",
    "priority",
    "depends_on",
    "remittance",
    "instruction_id",
    "channel",
)
COLUMNS = REQUIRED_COLUMNS + ACCOUNT_COLUMNS + OPTIONAL_COLUMNS
MAX_ERRORS = 20
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_INTEGER = re.compile(r"[+-]?\d+")


def parse_csv(data: bytes) -> ParsedFile:
    """Parse a CSV batch file (see the module documentation) into ``ParsedFile``."""
    rows = _rows(_decode(data))
    header_line, header = next(rows, (1, []))
    columns = _columns(header, header_line)
    items: list[RawItem] = []
    errors: list[FieldError] = []
    for line, row in rows:
        if len(row) != len(columns):
            reason = f"{len(row)} fields, but the header has {len(columns)}"
            errors.append(FieldError(f"line {line}", reason, "FF01"))
        else:
            items.append(_item(line, dict(zip(columns, row, strict=True)), errors))
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise BatchFileError(errors[:MAX_ERRORS])
    currencies = {item.currency for item in items}
    return ParsedFile(
        format="csv",
        items=items,
        currency=currencies.pop() if len(currencies) == 1 else None,
    )


@functools.lru_cache(maxsize=4096)  # a batch has few distinct dates
def parse_date(text: str) -> date:
    """``YYYY-MM-DD`` exactly, or ``ValueError``."""
    if not _DATE.fullmatch(text):
        raise ValueError(f"{text!r} is not a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date of the calendar") from None


def parse_priority(text: str) -> int:
    """A decimal integer (ASCII digits, optional sign), or ``ValueError``."""
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise location_error(f"line {line}", "the file is not UTF-8 text") from None


def _rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank record with the line it starts on."""
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if ";" in first_line and "," not in first_line else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise location_error(f"line {line}", f"not readable as CSV: {e}") from None
        if row:
            yield line, row
        line = reader.line_num + 1


def _columns(header: list[str], line: int) -> list[str]:
    names = [name.strip().lower() for name in header]
    if not any(names):
        raise location_error(f"line {line}", "the header row (column names) is missing")
    errors: list[FieldError] = []
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        reason = f"unknown columns: {', '.join(unknown)}; known: {', '.join(COLUMNS)}"
        errors.append(FieldError(f"line {line}", reason, "FF01"))
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        errors.append(
            FieldError(f"line {line}", f"repeated columns: {', '.join(repeated)}", "FF01")
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if not any(name in names for name in ACCOUNT_COLUMNS):
        missing.append(" or ".join(ACCOUNT_COLUMNS))
    if missing:
        errors.append(FieldError(f"line {line}", f"missing columns: {', '.join(missing)}", "FF01"))
    if errors:
        raise BatchFileError(errors)
    return names


def _item(line: int, row: dict[str, str], errors: list[FieldError]) -> RawItem:
    values: dict[str, str | None] = {k: (v.strip() or None) for k, v in row.items()}
    value_date = priority = None
    try:
        text = values.get("value_date")
        value_date = None if text is None else parse_date(text)
    except ValueError as e:
        errors.append(FieldError(f"line {line}, column value_date", str(e), "FF01"))
    try:
        text = values.get("priority")
        priority = None if text is None else parse_priority(text)
    except ValueError as e:
        errors.append(FieldError(f"line {line}, column priority", str(e), "FF01"))
    return RawItem(
        location=f"line {line}",
        end_to_end_id=values["end_to_end_id"],
        amount=values["amount"],
        currency=values["currency"],
        iban=values.get("iban"),
        bic=values.get("bic"),
        name=values["name"],
        payee_account_id=values.get("payee_account_id"),
        channel=values.get("channel"),
        instruction_id=values.get("instruction_id"),
        value_date=value_date,
        priority=priority,
        depends_on=values.get("depends_on"),
        remittance=values.get("remittance"),
    )
