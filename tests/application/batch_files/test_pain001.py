"""pain.001 in: real third-party files, files from an independent generator (sepaxml), shapes
that exercise every mapping path, and the refusals (all FF01, each with a specific message)."""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime

import pytest
from sepaxml import SepaTransfer

from application.batch_files.model import BatchFileError, ParsedFile
from application.batch_files.pain001 import MAX_SCHEMA_ERRORS, parse_pain001
from tests.application.batch_files.files import generated_pain001, sample

V09 = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"


def refused(data: bytes) -> BatchFileError:
    with pytest.raises(BatchFileError) as caught:
        parse_pain001(data)
    assert caught.value.errors, "a refusal names at least one problem"
    assert {e.code for e in caught.value.errors} == {"FF01"}
    return caught.value


# --- real third-party files ------------------------------------------------------------------


def test_apiome_minimal_file_maps_header_block_and_item():
    parsed = parse_pain001(sample("apiome/01-minimal-pain001.xml"))
    assert parsed.format == "pain.001.001.09"
    assert parsed.message_id == "MSG-20260819-0001"
    assert parsed.created_at == datetime(2026, 8, 19, 10, 30)
    assert (parsed.declared_count, parsed.declared_control_sum) == (1, "150.00")
    assert parsed.initiating_party == "Example Company BV"
    assert (parsed.debtor_iban, parsed.debtor_name) == ("NL91ABNA0417164300", "Example Company BV")
    assert parsed.execution_date == date(2026, 8, 20)
    assert parsed.currency == "EUR"
    [item] = parsed.items
    assert item.location == "PmtInf[1]/CdtTrfTxInf[1]"
    assert (item.end_to_end_id, item.amount, item.currency) == ("E2E-0001", "150.00", "EUR")
    assert (item.iban, item.bic, item.name) == ("NL02ABNA0123456789", None, "Sample Alex")
    assert (item.instruction_id, item.remittance) == (None, None)
    assert (item.value_date, item.payment_block_id) == (date(2026, 8, 20), "BATCH-0001")


def test_apiome_salary_batch():
    parsed = parse_pain001(sample("apiome/02-typical-pain001-batch.xml"))
    [block] = parsed.payment_blocks
    assert (block.id, block.category_purpose) == ("SALARY-2026-08", "SALA")
    assert (block.declared_count, block.declared_control_sum, block.item_count) == (
        3,
        "13350.00",
        3,
    )
    assert [i.end_to_end_id for i in parsed.items] == ["SAL-0001", "SAL-0002", "SAL-0003"]
    assert [i.instruction_id for i in parsed.items] == ["INSTR-0001", "INSTR-0002", "INSTR-0003"]
    assert [i.amount for i in parsed.items] == ["4500.00", "5100.00", "3750.00"]
    assert [i.bic for i in parsed.items] == ["INGBNL2A", "RABONL2U", None]
    assert [i.name for i in parsed.items] == ["Sample Alex", "Sample Jordan", "Sample Chris"]
    assert {i.remittance for i in parsed.items} == {"Salary August 2026"}


def test_apiome_multi_block_file_keeps_blocks_apart():
    parsed = parse_pain001(sample("apiome/03-composition-pain001-multi-pmtinf.xml"))
    first, second = parsed.payment_blocks
    assert (first.id, first.execution_date, first.category_purpose) == (
        "SUPPLIERS-EUR",
        date(2026, 8, 21),
        "SUPP",
    )
    # The second block has no CtgyPurp: its transaction's Purp/Cd TRPT is not the block's.
    assert (second.id, second.execution_date, second.category_purpose) == (
        "SUPPLIERS-URGENT",
        date(2026, 8, 19),
        None,
    )
    assert second.debtor_iban == "NL91ABNA0417164301"
    assert parsed.debtor_iban == "NL91ABNA0417164300"  # the first block's
    assert parsed.execution_date == date(2026, 8, 19)  # the earliest
    assert [i.location for i in parsed.items] == [
        "PmtInf[1]/CdtTrfTxInf[1]",
        "PmtInf[1]/CdtTrfTxInf[2]",
        "PmtInf[2]/CdtTrfTxInf[1]",
        "PmtInf[2]/CdtTrfTxInf[2]",
    ]
    assert [i.payment_block_id for i in parsed.items] == ["SUPPLIERS-EUR"] * 2 + [
        "SUPPLIERS-URGENT"
    ] * 2
    assert [i.value_date for i in parsed.items] == [date(2026, 8, 21)] * 2 + [date(2026, 8, 19)] * 2
    # A structured remittance without a creditor reference (RfrdDocInf only) gives none.
    assert [i.remittance for i in parsed.items] == [
        None,
        "INV-77121",
        "Urgent freight settlement",
        "Duty deposit",
    ]


def test_apiome_status_set_initiation():
    parsed = parse_pain001(sample("apiome/07-status-set-pain001.xml"))
    assert parsed.message_id == "MSG-20260824-0007"
    assert [(i.end_to_end_id, i.amount) for i in parsed.items] == [
        ("SUP-0007-A", "5100.00"),
        ("SUP-0007-B", "3500.00"),
    ]


@pytest.mark.parametrize("version", ["pain.001.001.03", "pain.001.001.09"])
def test_german_salary_corpus_file(version):
    parsed = parse_pain001(sample(f"pain001-corpus/de.sepa.sct-salary.{version}.xml"))
    assert parsed.format == version
    assert (parsed.message_id, parsed.declared_count, parsed.declared_control_sum) == (
        "MSTR-SAL-2026-09",
        2,
        "6230.50",
    )
    assert parsed.initiating_party == "Musterfirma GmbH"
    assert parsed.payment_blocks[0].category_purpose == "SALA"
    assert parsed.execution_date == date(2026, 9, 28)
    first, second = parsed.items
    assert (first.amount, first.bic, first.iban) == (
        "3250.00",
        "XOZFDEA0",
        "DE65261964603287767307",
    )
    assert (first.name, first.remittance) == ("Anna Beispiel", "Gehalt September 2026")
    assert (second.amount, second.bic, second.name) == ("2980.50", "DQBJDEN0", "Max Mustermann")
    assert second.remittance == "RF18539007547034"  # Strd/CdtrRefInf/Ref


def test_the_two_versions_of_the_corpus_file_give_the_same_items():
    v03 = parse_pain001(sample("pain001-corpus/de.sepa.sct-salary.pain.001.001.03.xml"))
    v09 = parse_pain001(sample("pain001-corpus/de.sepa.sct-salary.pain.001.001.09.xml"))
    assert v03.items == v09.items
    assert v03.payment_blocks == v09.payment_blocks


@pytest.mark.parametrize(
    ("version", "bic"), [("pain.001.001.03", "BANKDEFFXXX"), ("pain.001.001.09", "BANKDEFFXXX")]
)
def test_php_sepa_xml_fixture(version, bic):
    parsed = parse_pain001(sample(f"php-sepa-xml/{version}.xml"))
    assert parsed.created_at == datetime(2025, 8, 19, 8, 32, 2, tzinfo=dt.UTC)
    assert parsed.debtor_iban == "BG87200500001234567890"  # structurally invalid: a rule's job
    [item] = parsed.items
    assert (item.end_to_end_id, item.amount, item.bic) == ("SomethingUnique", "12.34", bic)
    assert (item.iban, item.name) == ("DE87200500001234567890", "John Doe")
    assert item.remittance == "CdtrRefInf-Ref"


def test_swiss_postfinance_variant_is_refused_as_an_unsupported_version():
    # The Musterfile uses the SIX namespace .../pain.001.001.03.ch.02.xsd, not the ISO one.
    error = refused(sample("moov-io-iso20022/musterfile_pain.001_Nov2020.xml"))
    [problem] = error.errors
    assert problem.field == "Document"
    assert "six-interbank-clearing.com" in problem.reason
    assert "(pain.001.001.03.ch.02)" in problem.reason
    assert "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09" in problem.reason  # what we read


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field", "words"),
    [
        (
            "apiome/negative/02-semantic-no-transactions.xml",
            "line 10",
            ["Element 'PmtInf'", "Missing child element", "CdtTrfTxInf"],
        ),
        (
            "apiome/negative/03-truncated-mid-transaction.xml",
            "line 15",
            ["not well-formed XML", "Premature end of data"],
        ),
        ("apiome/negative/04-wrong-format-nacha.ach", "line 1", ["not well-formed XML"]),
        (
            "apiome/negative/06-version-out-of-range-pain001-099.xml",
            "Document",
            ["unsupported message namespace", "(pain.001.001.99)"],
        ),
        ("apiome/negative/billion-laughs-pain001.xml", "DOCTYPE", ["DTD", "not allowed"]),
    ],
)
def test_negative_samples_are_refused_with_a_specific_message(path, field, words):
    error = refused(sample(path))
    assert error.errors[0].field == field
    for word in words:
        assert word in error.errors[0].reason


def test_an_external_entity_is_refused_not_resolved():
    data = (
        b'<?xml version="1.0"?><!DOCTYPE Document [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<Document xmlns="' + V09.encode() + b'"><CstmrCdtTrfInitn>&e;</CstmrCdtTrfInitn>'
        b"</Document>"
    )
    [problem] = refused(data).errors
    assert problem.field == "DOCTYPE"
    assert "root:" not in problem.reason


def test_empty_file_is_refused():
    assert refused(b"  \n").errors[0].field == "file"


def test_a_status_report_is_not_an_initiation():
    [problem] = refused(sample("apiome/07-status-set-pain002.xml")).errors
    assert "pain.002.001.10" in problem.reason


def test_root_other_than_document_is_refused():
    data = f'<Doc xmlns="{V09}"><CstmrCdtTrfInitn/></Doc>'.encode()
    [problem] = refused(data).errors
    assert problem.field == "Document"
    assert "Doc, not Document" in problem.reason


def test_schema_errors_name_their_lines_and_stop_at_twenty():
    lines = generated_pain001(30).decode().split("\n")
    bad_lines = []
    for number, line in enumerate(lines, 1):
        if "<InstdAmt" in line:
            lines[number - 1] = line.replace(".50<", ",50<")  # a decimal comma
            bad_lines.append(number)
    error = refused("\n".join(lines).encode())
    assert len(error.errors) == MAX_SCHEMA_ERRORS
    assert [e.field for e in error.errors] == [f"line {n}" for n in bad_lines[:MAX_SCHEMA_ERRORS]]
    assert "Element 'InstdAmt'" in error.errors[0].reason
    assert "{urn:" not in error.errors[0].reason  # our own namespace is left out of messages


def test_a_fault_in_the_last_transaction_refuses_the_whole_file():
    # The streamed pass has mapped every transaction before it reaches the fault: none of them
    # may come out, and the error is the whole-file one, with its line.
    lines = generated_pain001(3_000).decode().split("\n")
    [last] = [n for n, line in enumerate(lines) if "<EndToEndId>E2E-2999<" in line]
    lines[last] = lines[last].replace("EndToEndId>", "EndToEndRef>")
    [problem] = refused("\n".join(lines).encode()).errors
    assert problem.field == f"line {last + 1}"
    assert "EndToEndRef" in problem.reason and problem.code == "FF01"


def test_a_doctype_before_an_otherwise_valid_file_is_refused():
    data = generated_pain001(3).replace(b"?>\n", b"?>\n<!DOCTYPE Document>\n", 1)
    assert b"<!DOCTYPE" in data
    [problem] = refused(data).errors
    assert problem.field == "DOCTYPE"


def test_a_decimal_comma_in_the_control_sum_is_refused():
    data = sample("apiome/01-minimal-pain001.xml").replace(
        b"<CtrlSum>150.00</CtrlSum>", b"<CtrlSum>150,00</CtrlSum>", 1
    )
    [problem] = refused(data).errors
    assert problem.field == "line 8"
    assert "CtrlSum" in problem.reason


# --- an independent generator: sepaxml --------------------------------------------------------


def sepaxml_file(version: str) -> tuple[bytes, str]:
    config = {
        "name": "Müller GmbH",
        "IBAN": "DE89370400440532013000",
        "BIC": "COBADEFFXXX",
        "batch": True,
        "currency": "EUR",
    }
    transfer = SepaTransfer(config, schema=version, clean=False)  # clean=True would ASCII-fold
    payments = [
        ("Zoë Ångström", "NL91ABNA0417164300", "ABNANL2A", 123456, 28, "Gehalt für September"),
        ("张伟", "FR1420041010050500013M02606", None, 5, 28, "工资"),
        ("Ola Nordmann", "DE89370400440532013000", None, 99999, 29, "Lønn"),
    ]
    for n, (name, iban, bic, cents, day, text) in enumerate(payments, 1):
        payment = {
            "name": name,
            "IBAN": iban,
            "amount": cents,
            "execution_date": date(2026, 9, day),
            "description": text,
            "endtoend_id": f"E2E-{n}",
        }
        if bic:
            payment["BIC"] = bic
        transfer.add_payment(payment)
    return transfer.export(validate=True), transfer.msg_id


@pytest.mark.parametrize("version", ["pain.001.001.03", "pain.001.001.09"])
def test_sepaxml_generated_file(version):
    data, message_id = sepaxml_file(version)
    parsed = parse_pain001(data)
    assert (parsed.format, parsed.message_id) == (version, message_id)
    assert (parsed.declared_count, parsed.declared_control_sum) == (3, "2234.60")
    assert parsed.initiating_party == parsed.debtor_name == "Müller GmbH"
    assert [i.end_to_end_id for i in parsed.items] == ["E2E-1", "E2E-2", "E2E-3"]
    assert [i.amount for i in parsed.items] == ["1234.56", "0.05", "999.99"]
    assert [i.name for i in parsed.items] == ["Zoë Ångström", "张伟", "Ola Nordmann"]
    assert [i.iban for i in parsed.items] == [
        "NL91ABNA0417164300",
        "FR1420041010050500013M02606",
        "DE89370400440532013000",
    ]
    assert [i.bic for i in parsed.items] == ["ABNANL2A", None, None]
    assert [i.remittance for i in parsed.items] == ["Gehalt für September", "工资", "Lønn"]
    assert [i.value_date for i in parsed.items] == [date(2026, 9, 28)] * 2 + [date(2026, 9, 29)]
    assert [b.item_count for b in parsed.payment_blocks] == [2, 1]
    assert [b.declared_control_sum for b in parsed.payment_blocks] == ["1234.61", "999.99"]
    assert parsed.currency == "EUR"


# --- every mapping path -------------------------------------------------------------------------


def tricky_file() -> bytes:
    """Two blocks: values beside look-alikes (UltmtCdtr/Nm, CdtrAcct/Nm, IntrmyAgt1 BICFI,
    RgltryRptg/Dtls/Amt, Dbtr-level names), an optional InstrId on only some transactions, an
    EqvtAmt, repeated Ustrd and Strd, a comment inside a value, and a DtTm execution date."""
    tx = """<CdtTrfTxInf><PmtId>{instr}<EndToEndId>{e2e}</EndToEndId></PmtId>{amt}
      <IntrmyAgt1><FinInstnId><BICFI>DEUTDEFFXXX</BICFI><Nm>Intermediary Bank</Nm></FinInstnId>
      </IntrmyAgt1>
      <CdtrAgt><FinInstnId><BICFI>{bic}</BICFI><Nm>Creditor Bank</Nm></FinInstnId></CdtrAgt>
      <Cdtr><Nm>{name}</Nm></Cdtr>
      <CdtrAcct><Id><IBAN>{iban}</IBAN></Id><Nm>Account Name</Nm></CdtrAcct>
      <UltmtCdtr><Nm>Ultimate Creditor</Nm></UltmtCdtr>
      <Purp><Cd>SALA</Cd></Purp>
      {extra}</CdtTrfTxInf>"""
    block = """<PmtInf><PmtInfId>{id}</PmtInfId><PmtMtd>TRF</PmtMtd>
      <PmtTpInf><SvcLvl><Cd>SEPA</Cd></SvcLvl>{purpose}</PmtTpInf>
      <ReqdExctnDt>{date}</ReqdExctnDt>
      <Dbtr><Nm>{debtor}</Nm></Dbtr>
      <DbtrAcct><Id><IBAN>{debtor_iban}</IBAN></Id><Nm>Debtor Account</Nm></DbtrAcct>
      <DbtrAgt><FinInstnId><BICFI>COBADEFFXXX</BICFI></FinInstnId></DbtrAgt>
      <UltmtDbtr><Nm>Ultimate Debtor</Nm></UltmtDbtr>{txs}</PmtInf>"""
    instd = '<Amt><InstdAmt Ccy="{ccy}">{value}</InstdAmt></Amt>'
    first = block.format(
        id="B-1",
        purpose="<CtgyPurp><Cd>SALA</Cd></CtgyPurp>",
        date="<Dt>2026-10-01</Dt>",
        debtor="Debtor One",
        debtor_iban="DE89370400440532013000",
        txs=tx.format(
            instr="<InstrId>I-1</InstrId>",
            e2e="T-1",
            amt=instd.format(ccy="EUR", value=" 10.50 "),
            bic="INGBNL2A",
            name="Anna<!-- a comment --> Beispiel",
            iban="NL91ABNA0417164300",
            extra="<RmtInf><Ustrd>first line</Ustrd><Ustrd>second line</Ustrd></RmtInf>",
        )
        + tx.format(
            instr="",
            e2e="T-2",
            amt='<Amt><EqvtAmt><Amt Ccy="CHF">7.25</Amt><CcyOfTrf>EUR</CcyOfTrf></EqvtAmt></Amt>',
            bic="RABONL2U",
            name="李娜",
            iban="NL44RABO0123456789",
            extra='<RgltryRptg><Dtls><Amt Ccy="USD">99.00</Amt></Dtls></RgltryRptg>'
            "<RmtInf><Strd><CdtrRefInf><Ref>RF18539007547034</Ref></CdtrRefInf></Strd>"
            "<Strd><CdtrRefInf><Ref>RF71</Ref></CdtrRefInf></Strd></RmtInf>",
        ),
    )
    second = block.format(
        id="B-2",
        purpose="",
        date="<DtTm>2026-09-30T18:00:00+02:00</DtTm>",
        debtor="Debtor Two",
        debtor_iban="FR1420041010050500013M02606",
        txs=tx.format(
            instr="<InstrId>I-3</InstrId>",
            e2e="T-3",
            amt=instd.format(ccy="EUR", value="1"),
            bic="ABNANL2A",
            name="Ola",
            iban="DE65261964603287767307",
            extra="",
        ),
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Document xmlns="{V09}"><CstmrCdtTrfInitn>'
        "<GrpHdr><MsgId>TRICKY</MsgId><CreDtTm>2026-09-25T10:00:00.123Z</CreDtTm>"
        "<NbOfTxs>3</NbOfTxs><InitgPty><Nm>Initiator</Nm></InitgPty></GrpHdr>"
        f"{first}{second}</CstmrCdtTrfInitn></Document>"
    ).encode()


@pytest.fixture(scope="module")
def tricky() -> ParsedFile:
    return parse_pain001(tricky_file())


def test_values_are_taken_from_their_own_paths_not_look_alikes(tricky):
    assert [i.name for i in tricky.items] == ["Anna Beispiel", "李娜", "Ola"]
    assert [i.bic for i in tricky.items] == ["INGBNL2A", "RABONL2U", "ABNANL2A"]
    assert [i.iban for i in tricky.items] == [
        "NL91ABNA0417164300",
        "NL44RABO0123456789",
        "DE65261964603287767307",
    ]
    assert [b.debtor_name for b in tricky.payment_blocks] == ["Debtor One", "Debtor Two"]
    assert [b.category_purpose for b in tricky.payment_blocks] == ["SALA", None]


def test_optional_values_on_only_some_transactions(tricky):
    assert [i.instruction_id for i in tricky.items] == ["I-1", None, "I-3"]


def test_amounts_instructed_or_equivalent(tricky):
    assert [(i.amount, i.currency) for i in tricky.items] == [
        ("10.50", "EUR"),  # xs:decimal whitespace dropped
        ("7.25", "CHF"),  # EqvtAmt/Amt, not RgltryRptg/Dtls/Amt
        ("1", "EUR"),
    ]
    assert tricky.currency is None  # EUR and CHF


def test_remittance_joins_repeats(tricky):
    assert [i.remittance for i in tricky.items] == [
        "first line second line",
        "RF18539007547034 RF71",
        None,
    ]


def test_dates_and_datetimes(tricky):
    assert tricky.created_at == datetime(2026, 9, 25, 10, 0, 0, 123000, tzinfo=dt.UTC)
    assert [b.execution_date for b in tricky.payment_blocks] == [
        date(2026, 10, 1),
        date(2026, 9, 30),  # the date of the DtTm, as written
    ]
    assert tricky.execution_date == date(2026, 9, 30)
    assert [i.value_date for i in tricky.items] == [date(2026, 10, 1)] * 2 + [date(2026, 9, 30)]
    assert tricky.declared_control_sum is None
    assert [b.declared_count for b in tricky.payment_blocks] == [None, None]
    assert [b.item_count for b in tricky.payment_blocks] == [2, 1]


@pytest.mark.parametrize("version", ["pain.001.001.03", "pain.001.001.09"])
def test_many_blocks_and_items(version):
    parsed = parse_pain001(generated_pain001(1_000, version, blocks=7))
    assert len(parsed.items) == parsed.declared_count == 1_000
    assert [b.item_count for b in parsed.payment_blocks] == [143] * 6 + [142]
    last = parsed.items[-1]
    assert last.location == "PmtInf[7]/CdtTrfTxInf[142]"
    assert (last.end_to_end_id, last.instruction_id, last.amount) == ("E2E-999", "I-999", "1000.50")
    assert (last.name, last.bic, last.payment_block_id) == (
        "Employee 999 Müller",
        "INGBNL2A",
        "BLOCK-7",
    )
    assert last.value_date == date(2026, 9, 22)
    assert parsed.execution_date == date(2026, 9, 22)
    assert [i.end_to_end_id for i in parsed.items] == [f"E2E-{n}" for n in range(1_000)]
