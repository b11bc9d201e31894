"""camt.053: real third-party statements, our writer against the official XSD, and refusals."""

from __future__ import annotations

import dataclasses
import datetime
import io
import itertools
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from application.reconciliation import camt053
from application.reconciliation.statements import (
    Statement,
    StatementFormatError,
    StatementLine,
    read_statement,
)

SAMPLES = Path(__file__).parents[2] / "data" / "camt053"
DAY = datetime.date(2026, 11, 25)
IBAN = "DE89370400440532013000"
P1 = "6f1c7e1a-8a0b-5c1d-9e2f-3a4b5c6d7e8f"
P2 = "0b2d4f60-8a9c-5e1f-a3b5-c7d9e1f30517"
P3 = "a1b2c3d4-e5f6-5a7b-8c9d-0e1f2a3b4c5d"


def read(data: bytes, **options: object) -> tuple[Statement, list[StatementLine]]:
    statement = read_statement(io.BytesIO(data), **options)  # type: ignore[arg-type]
    return statement, list(statement)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def refusal(data: bytes, **options: object) -> StatementFormatError:
    with pytest.raises(StatementFormatError) as caught:
        read(data, **options)
    return caught.value


def written(lines: list[StatementLine] | Iterator[StatementLine], **options: object) -> bytes:
    out = io.BytesIO()
    arguments: dict[str, object] = {
        "account_iban": IBAN,
        "currency": "EUR",
        "statement_date": DAY,
        "opening_balance_minor": 100_000,
    }
    arguments.update(options)
    camt053.write_camt053(lines, out=out, **arguments)  # type: ignore[arg-type]
    return out.getvalue()


# --- the shipped schemas ------------------------------------------------------------------------


def test_shipped_schemas_load_under_their_pinned_hashes() -> None:
    for version in camt053.SUPPORTED_VERSIONS:
        data = camt053.schema_bytes(version)
        assert f'targetNamespace="urn:iso:std:iso:20022:tech:xsd:{version}"'.encode() in data
        assert isinstance(camt053.schema(version), etree.XMLSchema)


def test_a_changed_schema_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    camt053.schema_bytes.cache_clear()
    monkeypatch.setitem(camt053.SCHEMA_SHA256, "camt.053.001.02", "0" * 64)
    try:
        with pytest.raises(camt053.SchemaIntegrityError, match=r"camt\.053\.001\.02\.xsd"):
            camt053.schema_bytes("camt.053.001.02")
    finally:
        camt053.schema_bytes.cache_clear()


# --- real third-party statements ----------------------------------------------------------------


def test_siauliu_bankas_statement() -> None:
    """camt.053.001.02 from a Lithuanian bank: EndToEndId NOTPROVIDED, TxId as the reference,
    an amount written ``1.7``, and only available (OPAV/CLAV) balances, which are not booked."""
    statement, lines = read(sample("siauliu-bankas-camt053.001.02.xml"), validate=True)
    assert statement.format == "camt053"
    assert [(x.amount_minor, x.direction, x.reference, x.booked_on) for x in lines] == [
        (164, "debit", "514026627", datetime.date(2015, 5, 11)),
        (273458, "debit", "515993893", datetime.date(2015, 5, 20)),
        (3016, "debit", "516079331", datetime.date(2015, 5, 20)),
        (170, "debit", "516079334", datetime.date(2015, 5, 20)),
    ]
    assert all(x.payment_ids == () and x.status == "settled" and x.currency == "EUR" for x in lines)
    assert [x.line_no for x in lines] == [1, 2, 3, 4]
    assert (statement.account, statement.currency) == ("LT007180000000000000", "EUR")
    assert (statement.opening_balance_minor, statement.closing_balance_minor) == (None, None)
    assert statement.line_count == 4 and statement.complete


def test_postfinance_statement_in_another_version() -> None:
    """camt.053.001.04 (no schema shipped: read by structure) from PostFinance."""
    statement, lines = read(sample("postfinance-camt053.001.04.xml"))
    assert [(x.amount_minor, x.direction, x.reference, x.entry_ref) for x in lines] == [
        (450, "credit", "0758103031480900", "41100000000872849"),
        (7770, "debit", "0758103031480977", None),
        (150000, "credit", "07582000303F0C7U", None),
        (153700, "credit", "07582000303KBMSU", "014295803"),
        (169222, "credit", "07582000303KBMSU", "CH7730000001250094239"),
    ]
    assert {x.currency for x in lines} == {"CHF"}
    assert {x.booked_on for x in lines} == {datetime.date(2020, 11, 24)}
    assert statement.opening_balance_minor == 21_199_319  # OPBD 211993.19 CRDT
    assert statement.closing_balance_minor == 21_511_221  # CLBD 215112.21 (CLAV, FWAV ignored)
    assert (statement.account, statement.currency) == ("CH2909000000250094239", "CHF")
    error = refusal(sample("postfinance-camt053.001.04.xml"), validate=True)
    assert "no schema shipped" in str(error)


def test_two_statements_of_one_account_in_one_file() -> None:
    statement, lines = read(sample("genkgo-multi-statement-camt053.001.02.xml"), validate=True)
    assert [(x.line_no, x.amount_minor, x.direction, x.reference) for x in lines] == [
        (1, 885, "credit", "000000001"),  # a non-UUID EndToEndId becomes the reference
        (2, 700, "debit", "000000002"),
    ]
    assert [(p.id, p.opening_balance_minor, p.closing_balance_minor) for p in statement.parts] == [
        ("253EURNL26VAYB8060476890", 1815, 2700),
        ("254EURNL26VAYB8060476890", 2700, 2000),
    ]
    assert (statement.opening_balance_minor, statement.closing_balance_minor) == (1815, 2000)
    assert statement.account == "NL26VAYB8060476890"


def test_version_08_statement() -> None:
    """camt.053.001.08: ``Sts/Cd``, a booking date-time, an account by ``Othr/Id``; its CLBD is in
    SEK while the account is in EUR, so that balance is left out with a warning."""
    statement, lines = read(sample("genkgo-camt053.001.08.xml"), validate=True)
    assert lines == [
        StatementLine(
            line_no=1,
            reference="AAAASESS-FP-CN_98765/01",
            payment_ids=(),
            amount_minor=885,
            currency="EUR",
            direction="credit",
            status="settled",
            booked_on=datetime.date(2014, 12, 31),
            entry_ref=None,
        )
    ]
    assert statement.opening_balance_minor == 1815
    assert statement.closing_balance_minor is None
    assert statement.warnings == [
        "Stmt[1]/Bal: the CLBD balance is in SEK, the statement in EUR; left out"
    ]
    assert statement.account == "NL26VAYB8060476890"


def test_a_batched_entry_carrying_our_ids_is_one_line_with_all_of_them() -> None:
    """A real entry made a batch of two transactions (its TxDtls repeated), carrying our ids."""
    data = sample("siauliu-bankas-camt053.001.02.xml").decode()
    first = data.index("<TxDtls>")
    end = data.index("</TxDtls>", first) + len("</TxDtls>")
    details = data[first:end]
    batched = details.replace("NOTPROVIDED", P1.upper(), 1) + details.replace(
        "NOTPROVIDED", P2.replace("-", ""), 1
    )
    _, lines = read((data[:first] + batched + data[end:]).encode())
    assert lines[0].payment_ids == (P1, P2)  # canonical form, in document order
    assert [line.payment_ids for line in lines[1:]] == [(), (), ()]


def test_entries_not_booked_are_skipped_and_counted() -> None:
    data = sample("postfinance-camt053.001.04.xml").replace(
        b"<Sts>BOOK</Sts>", b"<Sts>PDNG</Sts>", 1
    )
    statement, lines = read(data)
    assert [x.line_no for x in lines] == [2, 3, 4, 5]  # line_no stays the entry's ordinal
    assert statement.skipped == {"PDNG": 1}
    assert statement.line_count == 4


# --- our writer ---------------------------------------------------------------------------------

LINES = [
    StatementLine(1, "bank_a1", (P1,), 12_345, "EUR", "debit", "settled", DAY, "E1"),
    StatementLine(2, "bank_batch", (P2, P3), 50_000, "EUR", "debit", "settled", DAY),
    StatementLine(3, "card_rev", (P3,), 700, "EUR", "credit", "reversed", DAY, "E3"),
    StatementLine(4, "bank_failed", (P1,), 999, "EUR", "debit", "failed", DAY),
    StatementLine(5, None, (), 1_000, "EUR", "credit", "settled", DAY - datetime.timedelta(1)),
]


def test_written_statement_is_valid_and_reads_back() -> None:
    data = written(LINES)
    root = etree.fromstring(data)
    assert camt053.schema_errors(root, "camt.053.001.02") == []
    assert etree.QName(root).namespace == camt053.namespace("camt.053.001.02")
    assert data.count(b"xmlns=") == 1  # one declaration, not one per entry
    assert f"<EndToEndId>{P1.replace('-', '')}</EndToEndId>".encode() in data  # fits Max35Text
    assert b"bank_failed" not in data  # a bank statement books no failed payment

    statement, lines = read(data, validate=True)
    booked = [line for line in LINES if line.status != "failed"]
    # line_no is the entry's ordinal in the file
    assert lines == [dataclasses.replace(x, line_no=n) for n, x in enumerate(booked, 1)]
    assert statement.line_count == 4
    # booked: -123.45 -500.00, the reversal of a 7.00 credit is a 7.00 debit, +10.00
    assert statement.opening_balance_minor == 100_000
    assert statement.closing_balance_minor == 100_000 - 12_345 - 50_000 - 700 + 1_000
    assert (statement.account, statement.currency) == (IBAN, "EUR")


def test_writer_output_is_the_same_from_a_list_or_a_stream_of_lines() -> None:
    assert written(LINES) == written(iter(LINES))


def test_negative_balances_and_a_currency_without_decimals() -> None:
    lines = [StatementLine(1, "r", (P1,), 5_000, "JPY", "debit", "settled", DAY)]
    data = written(lines, currency="JPY", opening_balance_minor=-1_000)
    assert b'<Amt Ccy="JPY">1000</Amt><CdtDbtInd>DBIT</CdtDbtInd>' in data
    assert camt053.schema_errors(etree.fromstring(data), "camt.053.001.02") == []
    statement, read_lines = read(data)
    assert read_lines == lines
    assert (statement.opening_balance_minor, statement.closing_balance_minor) == (-1_000, -6_000)


OK_LINE = StatementLine(1, "r", (), 5, "EUR", "credit", "settled", DAY)


@pytest.mark.parametrize(
    ("line", "options", "message"),
    [
        (StatementLine(1, "r", (), 100, "USD", "credit", "settled", DAY), {}, "USD, not EUR"),
        (StatementLine(1, "r" * 36, (), 100, "EUR", "credit", "settled", DAY), {}, "reference"),
        (StatementLine(1, "r", ("abc",), 100, "EUR", "credit", "settled", DAY), {}, "payment id"),
        (StatementLine(1, "r", (), -5, "EUR", "credit", "settled", DAY), {}, "positive"),
        (OK_LINE, {"account_iban": "x"}, "IBAN"),
        (OK_LINE, {"message_id": "m" * 36}, "message_id"),
    ],
)  # fmt: skip
def test_writer_refuses_what_camt053_cannot_hold(
    line: StatementLine, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        written([line], **options)


def generated(count: int) -> Iterator[StatementLine]:
    for n in range(1, count + 1):
        payment_id = f"00000000-0000-4000-8000-{n:012x}"
        yield StatementLine(
            n, f"bank_{n:010x}", (payment_id,), 100 + n % 997, "EUR", "debit", "settled", DAY,
        )  # fmt: skip


def test_a_large_statement_is_written_and_read_as_streams(tmp_path: Path) -> None:
    count = 20_000
    path = tmp_path / "statement.xml"
    with path.open("wb") as out:
        camt053.write_camt053(
            generated(count),  # not a list: spooled, never held
            account_iban=IBAN,
            currency="EUR",
            statement_date=DAY,
            opening_balance_minor=0,
            out=out,
        )
    statement = read_statement(path.open("rb"))
    total = sum(x.amount_minor for x in itertools.islice(statement, 10_000))
    tracemalloc.start()  # 5,000 entries as trees or lines would take megabytes
    try:
        total += sum(x.amount_minor for x in itertools.islice(statement, 5_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_500_000, f"peak {peak} bytes"
    total += sum(x.amount_minor for x in statement)
    expected = sum(100 + n % 997 for n in range(1, count + 1))
    assert total == expected and statement.line_count == count
    assert statement.closing_balance_minor == -expected


# --- refusals -----------------------------------------------------------------------------------

ENTITY_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE Document [
  <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>
<Stmt><Id>&c;</Id></Stmt></BkToCstmrStmt></Document>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE Document [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>
<Stmt><Id>&secret;</Id></Stmt></BkToCstmrStmt></Document>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Document SYSTEM "http://127.0.0.1:9/camt.dtd">
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt/></Document>"""


@pytest.mark.parametrize("data", [ENTITY_BOMB, EXTERNAL_ENTITY, EXTERNAL_DTD])
@pytest.mark.parametrize("validate", [False, True])
def test_a_dtd_is_refused_before_anything_is_read(data: bytes, validate: bool) -> None:
    error = refusal(data, validate=validate)
    assert error.location == "DOCTYPE"
    assert "root:" not in str(error)  # nothing of /etc/passwd


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03">'
            b"<CstmrCdtTrfInitn/></Document>",
            "not a camt.053 statement",
        ),
        (b"<Statement><Ntry/></Statement>", "root Statement"),
        (b'<Document xmlns="urn:example:other"><Other/></Document>', "no BkToCstmrStmt"),
        (
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">'
            b"<BkToCstmrStmt><GrpHdr/></BkToCstmrStmt></Document>",
            "holds no statement",
        ),
        (b"<Document><BkToCstmrStmt><Stmt>", "not well-formed"),
    ],
)
def test_what_is_not_a_statement_is_refused(data: bytes, message: str) -> None:
    assert message in str(refusal(data))


def entry_doc(entry: str, version: str = "camt.053.001.02") -> bytes:
    return (
        f'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:{version}"><BkToCstmrStmt>'
        f"<Stmt><Id>S1</Id><Acct><Id><IBAN>{IBAN}</IBAN></Id></Acct>{entry}</Stmt>"
        "</BkToCstmrStmt></Document>"
    ).encode()


GOOD_ENTRY = (
    '<Ntry><Amt Ccy="CHF">4.50</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>'
    "<BookgDt><Dt>2020-11-24</Dt></BookgDt></Ntry>"
)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (("4.50", "4.505"), "Amt", "more decimals than CHF has (2)"),
        (("4.50", "4,50"), "Amt", "not an amount"),
        (('"CHF"', '"XYZ"'), "Amt/@Ccy", "not an ISO 4217 code"),
        (("CRDT", "CREDIT"), "CdtDbtInd", "not CRDT or DBIT"),
        (("2020-11-24", "24.11.2020"), "BookgDt/Dt", "not a date"),
        (("<BookgDt><Dt>2020-11-24</Dt></BookgDt>", ""), "BookgDt", "no booking"),
        (("<Sts>BOOK</Sts>", ""), "Sts", "missing"),
    ],
)
def test_a_bad_entry_is_refused_naming_entry_and_element(
    change: tuple[str, str], field: str, reason: str
) -> None:
    bad = GOOD_ENTRY.replace(*change)
    error = refusal(entry_doc(GOOD_ENTRY + bad))
    assert error.location == "Stmt[1]/Ntry[2]"
    assert error.field == field
    assert reason in error.reason


def test_amounts_in_every_xsd_decimal_form_and_zero_entries() -> None:
    entries = "".join(
        GOOD_ENTRY.replace("4.50", amount) for amount in ("4.5", "4", "004.500", "+4.50", "0.00")
    )
    statement, lines = read(entry_doc(entries))
    assert [x.amount_minor for x in lines] == [450, 400, 450, 450]
    assert statement.skipped == {"zero_amount": 1}


def test_a_prefixed_namespace_and_a_later_version_read_alike() -> None:
    data = entry_doc(GOOD_ENTRY, "camt.053.001.13")
    prefixed = (
        data.replace(b'xmlns="', b'xmlns:c="').replace(b"<", b"<c:").replace(b"<c:/", b"</c:")
    )
    for document in (data, prefixed):
        statement, lines = read(document)
        assert [(x.amount_minor, x.currency, x.booked_on) for x in lines] == [
            (450, "CHF", datetime.date(2020, 11, 24))
        ]
        assert statement.account == IBAN


def test_validation_reports_schema_errors_and_has_a_size_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invalid = entry_doc(GOOD_ENTRY)  # no GrpHdr, no balances, no BkTxCd: readable, not valid
    assert len(read(invalid)[1]) == 1
    error = refusal(invalid, validate=True)
    assert error.location == "schema" and "line 1:" in error.reason
    monkeypatch.setattr(camt053, "MAX_VALIDATED_BYTES", 1000)
    error = refusal(sample("siauliu-bankas-camt053.001.02.xml"), validate=True)
    assert error.field == "size"
