"""CSV settlement statements: writing, streaming reading, and refusals that name row and column."""

from __future__ import annotations

import datetime
import io
import itertools
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from application.reconciliation.statements import (
    CSV_COLUMNS,
    Statement,
    StatementFormatError,
    StatementLine,
    read_statement,
    sniff_format,
    write_csv_statement,
)
from domain.errors import ValidationError

DAY = datetime.date(2026, 11, 25)
IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"payment-{n}")) for n in range(1, 6)]
HEADER = ",".join(CSV_COLUMNS)


def read_all(data: bytes, **options: object) -> tuple[Statement, list[StatementLine]]:
    statement = read_statement(io.BytesIO(data), **options)  # type: ignore[arg-type]
    return statement, list(statement)


def csv_bytes(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join((header, *rows)) + "\n").encode()


def refusal(data: bytes) -> StatementFormatError:
    with pytest.raises(StatementFormatError) as caught:
        read_all(data)
    return caught.value


YESTERDAY = DAY - datetime.timedelta(days=1)
SAMPLE_LINES = [
    StatementLine(1, "card_3f2a000000001", (IDS[0],), 1234, "EUR", "credit", "settled", DAY, "E1"),
    StatementLine(2, "bank_00000002", (IDS[1], IDS[2]), 5000, "EUR", "debit", "settled", DAY),
    StatementLine(3, None, (), 150, "JPY", "credit", "failed", YESTERDAY),
    StatementLine(4, 'ref "quoted", comma', (IDS[3],), 1, "KWD", "credit", "reversed", DAY, "E4"),
    StatementLine(5, "alip_x", (IDS[4],), 10**15, "USD", "credit", "settled", DAY),
]  # fmt: skip


def test_written_statement_reads_back_line_for_line() -> None:
    out = io.StringIO()
    assert write_csv_statement(SAMPLE_LINES, out) == 5
    text = out.getvalue()
    assert text.splitlines()[0] == HEADER
    assert text.splitlines()[1] == (
        f"2026-11-25,card_3f2a000000001,{IDS[0]},12.34,EUR,credit,settled,E1"
    )
    assert f"{IDS[1]};{IDS[2]},50.00,EUR,debit" in text  # 1:N: ids joined by ';'
    assert ",,1.50,JPY," not in text and ",,150,JPY,credit,failed," in text  # JPY: no decimals
    assert ",0.001,KWD," in text  # KWD: three decimals

    statement, lines = read_all(text.encode())
    assert statement.format == "csv"
    assert lines == SAMPLE_LINES
    assert statement.complete and statement.line_count == 5
    # CSV carries no balances or account: they come from camt.053 only
    assert (statement.opening_balance_minor, statement.closing_balance_minor) == (None, None)
    assert (statement.currency, statement.account) == (None, None)


def test_format_is_told_by_content_or_given() -> None:
    data = csv_bytes(f"2026-11-25,r1,{IDS[0]},1.00,EUR,credit,settled,")
    assert read_all(data)[0].format == "csv"
    assert read_all(data, format="csv")[0].format == "csv"
    assert sniff_format(b"\xef\xbb\xbf  \n<?xml version='1.0'?><Document/>") == "camt053"
    assert sniff_format(b"booking_date,reference") == "csv"
    with pytest.raises(ValueError, match="unknown statement format"):
        read_statement(io.BytesIO(data), format="mt940")
    with pytest.raises(StatementFormatError, match="UTF-16"):
        read_statement(io.BytesIO("booking_date".encode("utf-16")))
    with pytest.raises(StatementFormatError, match="empty"):
        read_statement(io.BytesIO(b"  \n"))


def test_header_by_name_bom_crlf_extra_columns_and_blank_lines() -> None:
    header = "status,amount,note,currency,booking_date,direction,payment_id,reference"
    data = (
        "\ufeff"
        + header
        + "\r\n"
        + f"settled,7.50,anything,EUR,2026-11-24,debit,{IDS[0]},bank_1\r\n"
        + "\r\n"
        + "reversed,1.00,,EUR,2026-11-25,credit,,\r\n"
    ).encode()
    statement, lines = read_all(data)
    assert lines == [
        StatementLine(1, "bank_1", (IDS[0],), 750, "EUR", "debit", "settled", DAY.replace(day=24)),
        StatementLine(3, None, (), 100, "EUR", "credit", "reversed", DAY),  # row 2 was blank
    ]
    assert statement.line_count == 2


def test_fewer_decimals_than_the_currency_has_are_read_exactly() -> None:
    _, lines = read_all(
        csv_bytes(
            "2026-11-25,r,,12.5,EUR,credit,settled,",
            "2026-11-25,r,,7,EUR,credit,settled,",
            "2026-11-25,r,,0.05,EUR,credit,settled,",
        )
    )
    assert [line.amount_minor for line in lines] == [1250, 700, 5]


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        ("2026-11-25,r,,12.345,EUR,credit,settled,", "amount", "too many decimals"),
        ("2026-11-25,r,,100.5,JPY,credit,settled,", "amount", "too many decimals"),
        ("2026-11-25,r,,1e3,EUR,credit,settled,", "amount", "plain decimal"),
        ("2026-11-25,r,,0.00,EUR,credit,settled,", "amount", "greater than zero"),
        ("2026-11-25,r,,-1.00,EUR,credit,settled,", "amount", "negative"),
        ('2026-11-25,r,,"1,00",EUR,credit,settled,', "amount", "thousands separators"),
        ("2026-11-25,r,,012.00,EUR,credit,settled,", "amount", "leading zeros"),
        ("2026-11-25,r,,\u0661\u0662.\u0660\u0660,EUR,credit,settled,", "amount", "ASCII"),
        ("2026-11-25,r,,,EUR,credit,settled,", "amount", "empty"),
        ("2026-11-25,r,,10000000000000.01,EUR,credit,settled,", "amount", "must not exceed"),
        ("2026-11-25,r,,1.00,EURO,credit,settled,", "currency", "ISO 4217"),
        ("2026-11-25,r,,1.00,eur,credit,settled,", "currency", "ISO 4217"),
        ("2026-11-25,r,,1.00,EUR,in,settled,", "direction", "'in' is not one of credit, debit"),
        ("2026-11-25,r,,1.00,EUR,credit,ok,", "status", "not one of settled, failed, reversed"),
        ("2026/11/25,r,,1.00,EUR,credit,settled,", "booking_date", "not a date"),
        ("20261125,r,,1.00,EUR,credit,settled,", "booking_date", "not a date"),
        ("2026-02-30,r,,1.00,EUR,credit,settled,", "booking_date", "not a date"),
        ("2026-11-25,r,not-a-uuid,1.00,EUR,credit,settled,", "payment_id", "not a UUID"),
        (f"2026-11-25,r,{IDS[0]};,1.00,EUR,credit,settled,", "payment_id", "id 2 '' is not"),
        (f"2026-11-25,r,{IDS[0]};{IDS[0]},1.00,EUR,credit,settled,", "payment_id", "twice"),
        (f"2026-11-25,r,{IDS[0].upper()},1.00,EUR,credit,settled,", "payment_id", "lowercase"),
        ("2026-11-25,r,,1.00,EUR,credit", "row", "has 6 fields"),
        (f"2026-11-25,{'x' * 256},,1.00,EUR,credit,settled,", "reference", "longer than 255"),
        (f"2026-11-25,r,,1.00,EUR,credit,settled,{'x' * 256}", "entry_ref", "longer than 255"),
    ],
)
def test_a_bad_row_is_refused_with_its_row_and_column(row: str, column: str, reason: str) -> None:
    good = f"2026-11-25,r,{IDS[0]},1.00,EUR,credit,settled,"
    error = refusal(csv_bytes(good, good, row, good))
    assert error.line_no == 3
    assert error.field == column
    assert reason in error.reason
    assert str(error).startswith(f"row 3, {column}: ")
    assert isinstance(error, ValidationError)  # mapped like every input error
    assert error.errors[0].field == f"row 3: {column}"


def test_the_lines_before_a_bad_row_have_been_yielded() -> None:
    good = f"2026-11-25,r,{IDS[0]},1.00,EUR,credit,settled,"
    statement = read_statement(io.BytesIO(csv_bytes(good, good, "oops")))
    assert next(statement).line_no == 1
    assert next(statement).line_no == 2
    with pytest.raises(StatementFormatError, match="row 3"):
        next(statement)
    assert not statement.complete


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("booking_date,reference,amount,currency,direction,status", "payment_id"),
        (HEADER + ",amount", "appears twice"),
    ],
)
def test_a_bad_header_is_refused(header: str, reason: str) -> None:
    error = refusal(csv_bytes(header=header))
    assert error.location == "header"
    assert reason in str(error)


def test_entry_ref_column_is_optional() -> None:
    header = HEADER.removesuffix(",entry_ref")
    _, lines = read_all(csv_bytes(f"2026-11-25,r,{IDS[0]},1.00,EUR,credit,settled", header=header))
    assert lines[0].entry_ref is None and lines[0].payment_ids == (IDS[0],)


def test_bytes_that_are_not_utf8_are_reported_on_their_line() -> None:
    good = f"2026-11-25,r,{IDS[0]},1.00,EUR,credit,settled,".encode()
    data = (
        csv_bytes().rstrip(b"\n")
        + b"\n"
        + good
        + b"\n2026-11-25,caf\xe9,,1.00,EUR,credit,settled,\n"
    )
    error = refusal(data)
    assert error.location == "row 2 (line 3)"
    assert error.field == "encoding"


def test_broken_csv_quoting_is_reported() -> None:
    error = refusal(csv_bytes('2026-11-25,"unterminated,,1.00,EUR,credit,settled,'))
    assert error.field == "csv"


def test_the_empty_file_and_the_header_only_file() -> None:
    assert "empty" in str(refusal(b""))
    statement, lines = read_all(csv_bytes())
    assert lines == [] and statement.line_count == 0 and statement.complete


def test_writer_refuses_lines_it_cannot_write() -> None:
    bad = [
        StatementLine(1, None, (), 0, "EUR", "credit", "settled", DAY),
        StatementLine(2, None, (), 100, "EUR", "sideways", "settled", DAY),
        StatementLine(3, None, (), 100, "EUR", "credit", "pending", DAY),
    ]
    for line in bad:
        with pytest.raises(ValueError, match=f"statement line {line.line_no}"):
            write_csv_statement([line], io.StringIO())


class CountingStream(io.RawIOBase):
    """A binary stream that counts the bytes handed out."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self.inner.readinto(buffer)
        self.bytes_read += n
        return n


def generated(count: int) -> Iterator[StatementLine]:
    for n in range(1, count + 1):
        payment_id = f"00000000-0000-4000-8000-{n:012x}"
        yield StatementLine(
            n, f"card_{n:020x}", (payment_id,), 100 + n % 9973, "EUR", "credit", "settled", DAY,
            f"E{n:07d}",
        )  # fmt: skip


def test_a_200k_line_statement_streams_in_bounded_memory(tmp_path: Path) -> None:
    count = 200_000
    path = tmp_path / "statement.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        assert write_csv_statement(generated(count), out) == count
    assert path.stat().st_size > 20_000_000  # ~110 bytes a line

    counting = CountingStream(path.read_bytes())
    statement = read_statement(counting)  # type: ignore[arg-type]
    assert iter(statement) is iter(statement)  # one pass, a real iterator
    total, seen = 0, 0
    for line in itertools.islice(statement, 100_000):
        total += line.amount_minor
        seen += 1
    assert counting.bytes_read < 12_000_000  # read as far as asked (plus a buffer), not the file

    # tracemalloc slows allocation tenfold: watch a window of 30,000 lines, which held at once
    # would take some 10 MB; streaming keeps a few buffers
    tracemalloc.start()
    try:
        for line in itertools.islice(statement, 30_000):
            total += line.amount_minor
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"peak {peak} bytes"
    for line in statement:
        total += line.amount_minor
        seen += 1
    assert seen == count == statement.line_count
    assert statement.complete and counting.bytes_read == path.stat().st_size
    assert total == sum(100 + n % 9973 for n in range(1, count + 1))
