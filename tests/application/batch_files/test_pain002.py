"""pain.002 out, for .03 and .10: valid against the shipped XSD, and read back by an independent
client (pyiso20022's xsdata classes) with the same statuses, reasons, counts and sums."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from pyiso20022.pain.pain_002_001_03 import Document as Document03
from pyiso20022.pain.pain_002_001_10 import Document as Document10
from xsdata.formats.dataclass.parsers import XmlParser

from application.batch_files import schemas
from application.batch_files.model import StatusReport, TransactionStatus
from application.batch_files.pain002 import InvalidReport, write_pain002

VERSIONS = ["pain.002.001.03", "pain.002.001.10"]
CREATED = datetime(2026, 9, 25, 12, 0, tzinfo=UTC)
LONG_INFO = "Creditor account number closed at the beneficiary bank; " * 3


def read_back(data: bytes, version: str) -> Any:
    """The report as an independent client parses it; statuses as plain strings."""
    document_class = Document03 if version == "pain.002.001.03" else Document10
    return XmlParser().from_bytes(data, document_class).cstmr_pmt_sts_rpt


def code(value: Any) -> str:
    return getattr(value, "value", value)  # .03 statuses are enums in pyiso20022


def report(**changes: Any) -> StatusReport:
    transactions = [
        TransactionStatus("SAL-1", "ACSC", instruction_id="I-1", amount="4500.00", currency="EUR",
                          payment_block_id="SALARY"),
        TransactionStatus("SAL-2", "RJCT", "AC04", LONG_INFO, amount="5100.00", currency="EUR",
                          payment_block_id="SALARY"),
        TransactionStatus("SAL-3", "PDNG", amount="3750.00", currency="EUR",
                          payment_block_id="SALARY"),
        TransactionStatus("SUP-1", "ACSC", amount="12.5", currency="USD",
                          payment_block_id="SUPPLIERS"),
        TransactionStatus("API-1", "RJCT", "AM04", amount="1.00", currency="EUR"),
    ]  # fmt: skip
    fields: dict[str, Any] = {
        "message_id": "STS-2026-09-25-0001",
        "created_at": CREATED,
        "original_message_id": "MSG-SAL-2026-09",
        "original_message_name": "pain.001.001.09",
        "original_created_at": datetime(2026, 9, 25, 10, 0),
        "original_count": 5,
        "original_control_sum": "13363.50",
        "group_status": "PART",
        "transactions": transactions,
        "payment_blocks": [("SALARY", "PART"), ("SUPPLIERS", "ACSC")],
    }
    return StatusReport(**(fields | changes))


@pytest.mark.parametrize("version", VERSIONS)
def test_a_part_report_validates_and_reads_back(version):
    data = write_pain002(report(), version)
    assert schemas.validate(etree.fromstring(data), version) == []
    rpt = read_back(data, version)
    assert (rpt.grp_hdr.msg_id, rpt.grp_hdr.cre_dt_tm.to_datetime()) == (
        "STS-2026-09-25-0001",
        CREATED,
    )
    group = rpt.orgnl_grp_inf_and_sts
    assert (group.orgnl_msg_id, group.orgnl_msg_nm_id) == ("MSG-SAL-2026-09", "pain.001.001.09")
    assert group.orgnl_cre_dt_tm.to_datetime() == datetime(2026, 9, 25, 10, 0)
    assert (group.orgnl_nb_of_txs, group.orgnl_ctrl_sum) == ("5", Decimal("13363.50"))
    assert code(group.grp_sts) == "PART"
    assert [
        (n.dtld_nb_of_txs, code(n.dtld_sts), n.dtld_ctrl_sum) for n in group.nb_of_txs_per_sts
    ] == [
        ("2", "ACSC", Decimal("4512.50")),
        ("2", "RJCT", Decimal("5101.00")),
        ("1", "PDNG", Decimal("3750.00")),
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_transactions_are_grouped_by_payment_block(version):
    rpt = read_back(write_pain002(report(), version), version)
    blocks = rpt.orgnl_pmt_inf_and_sts
    # Without a block id, a transaction goes into a block named by the original message id.
    assert [b.orgnl_pmt_inf_id for b in blocks] == ["SALARY", "SUPPLIERS", "MSG-SAL-2026-09"]
    assert [code(b.pmt_inf_sts) for b in blocks] == ["PART", "ACSC", "RJCT"]
    assert [(b.orgnl_nb_of_txs, b.orgnl_ctrl_sum) for b in blocks] == [
        ("3", Decimal("13350.00")),
        ("1", Decimal("12.5")),
        ("1", Decimal("1.00")),
    ]
    salary = blocks[0]
    assert [(n.dtld_nb_of_txs, code(n.dtld_sts)) for n in salary.nb_of_txs_per_sts] == [
        ("1", "ACSC"),
        ("1", "RJCT"),
        ("1", "PDNG"),
    ]
    assert [t.orgnl_end_to_end_id for t in salary.tx_inf_and_sts] == ["SAL-1", "SAL-2", "SAL-3"]
    assert [code(t.tx_sts) for t in salary.tx_inf_and_sts] == ["ACSC", "RJCT", "PDNG"]
    all_transactions = [t for b in blocks for t in b.tx_inf_and_sts]
    status_ids = [t.sts_id for t in all_transactions]
    assert len(set(status_ids)) == 5
    assert all(len(s) <= 35 for s in status_ids)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_rejected_transaction_carries_its_reason_and_amount(version):
    rpt = read_back(write_pain002(report(), version), version)
    accepted, rejected, _ = rpt.orgnl_pmt_inf_and_sts[0].tx_inf_and_sts
    assert (accepted.orgnl_instr_id, accepted.sts_rsn_inf) == ("I-1", [])
    assert rejected.orgnl_instr_id is None
    [reason] = rejected.sts_rsn_inf
    assert reason.rsn.cd == "AC04"
    assert reason.addtl_inf == [LONG_INFO[:105]]
    amount = rejected.orgnl_tx_ref.amt.instd_amt
    assert (amount.value, amount.ccy) == (Decimal("5100.00"), "EUR")


@pytest.mark.parametrize("version", VERSIONS)
def test_elements_are_in_the_xsd_order(version):
    root = etree.fromstring(write_pain002(report(), version))
    ns = {"p": schemas.namespace(version)}
    [rejected] = root.xpath("//p:TxInfAndSts[p:OrgnlEndToEndId = 'SAL-2']", namespaces=ns)
    assert [etree.QName(e).localname for e in rejected] == [
        "StsId",
        "OrgnlEndToEndId",
        "TxSts",
        "StsRsnInf",
        "OrgnlTxRef",
    ]
    [group] = root.xpath("p:CstmrPmtStsRpt/p:OrgnlGrpInfAndSts", namespaces=ns)
    assert [etree.QName(e).localname for e in group] == [
        "OrgnlMsgId",
        "OrgnlMsgNmId",
        "OrgnlCreDtTm",
        "OrgnlNbOfTxs",
        "OrgnlCtrlSum",
        "GrpSts",
        "NbOfTxsPerSts",
        "NbOfTxsPerSts",
        "NbOfTxsPerSts",
    ]


def test_the_namespace_is_declared_once():
    data = write_pain002(report())
    assert data.count(b"xmlns") == 1
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_whole_file_rejection_has_a_group_reason_and_no_transactions(version):
    rejected = report(
        group_status="RJCT",
        group_reason_code="AM10",
        group_additional_info="CtrlSum 13363.50 is not the sum of the amounts, 13363.49",
        transactions=[],
        payment_blocks=[],
        original_control_sum="13363.50",
    )
    data = write_pain002(rejected, version)
    rpt = read_back(data, version)
    group = rpt.orgnl_grp_inf_and_sts
    assert code(group.grp_sts) == "RJCT"
    [reason] = group.sts_rsn_inf
    assert (reason.rsn.cd, reason.addtl_inf[0][:8]) == ("AM10", "CtrlSum ")
    assert group.nb_of_txs_per_sts == []
    assert rpt.orgnl_pmt_inf_and_sts == []


@pytest.mark.parametrize("version", VERSIONS)
def test_values_the_xsd_cannot_hold_are_left_out_or_shortened(version):
    transactions = [
        TransactionStatus("E" * 40, "RJCT", "AM01", amount="-5.00", currency="EUR"),
        TransactionStatus("E-2", "RJCT", "LOCAL-CODE-7", amount="1.234567", currency="EUR"),
        TransactionStatus("E-3", "RJCT", None, "NARRATIVE", amount="abc", currency="EUR"),
        TransactionStatus("E-4", "RJCT", "CURR", amount="1.00", currency="euro"),
        TransactionStatus("E\x01-5", "RJCT", "NARR", "bell\x07 in a reason"),
    ]
    data = write_pain002(
        report(transactions=transactions, payment_blocks=[], original_control_sum="12,5"), version
    )
    too_long = report(transactions=[], original_control_sum="1234567890123456789.5")
    assert (
        read_back(write_pain002(too_long, version), version).orgnl_grp_inf_and_sts.orgnl_ctrl_sum
        is None
    )
    rpt = read_back(data, version)
    assert rpt.orgnl_grp_inf_and_sts.orgnl_ctrl_sum is None
    [block] = rpt.orgnl_pmt_inf_and_sts
    assert block.orgnl_ctrl_sum is None
    assert [t.orgnl_tx_ref for t in block.tx_inf_and_sts] == [None] * 5
    first, second, third, _, fifth = block.tx_inf_and_sts
    assert first.orgnl_end_to_end_id == "E" * 35
    assert second.sts_rsn_inf[0].rsn.prtry == "LOCAL-CODE-7"  # longer than a 4-letter code
    assert (third.sts_rsn_inf[0].rsn, third.sts_rsn_inf[0].addtl_inf) == (None, ["NARRATIVE"])
    # Characters XML cannot hold are replaced, not a crash.
    assert fifth.orgnl_end_to_end_id == "E\ufffd-5"
    assert fifth.sts_rsn_inf[0].addtl_inf == ["bell\ufffd in a reason"]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"group_status": "ACCC"}, "group status 'ACCC'"),
        ({"payment_blocks": [("SALARY", "RCVC")]}, "group status 'RCVC'"),
        ({"transactions": [TransactionStatus("E-1", "PART")]}, "transaction status 'PART' (E-1)"),
        ({"transactions": [TransactionStatus("E-1", "RCVD")]}, "transaction status 'RCVD'"),
    ],
)
def test_statuses_outside_the_03_lists_are_refused(changes, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        write_pain002(report(**changes), "pain.002.001.03")


def test_external_codes_are_fine_in_10():
    data = write_pain002(report(group_status="ACCC"), "pain.002.001.10")
    assert code(read_back(data, "pain.002.001.10").orgnl_grp_inf_and_sts.grp_sts) == "ACCC"


def test_our_own_invalid_output_is_an_error_not_a_file():
    with pytest.raises(InvalidReport, match="GrpSts"):
        write_pain002(report(group_status="TOOLONG"), "pain.002.001.10")


def test_unknown_versions_are_refused():
    with pytest.raises(ValueError, match=r"pain\.002\.001\.14"):
        write_pain002(report(), "pain.002.001.14")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_thousand_transactions_round_trip(version):
    transactions = [
        TransactionStatus(
            f"E2E-{n}",
            "RJCT" if n % 7 == 0 else "ACSC",
            "AC01" if n % 7 == 0 else None,
            instruction_id=f"I-{n}" if n % 2 else None,
            amount=f"{n}.01",
            currency="EUR",
            payment_block_id=f"B-{n % 3}",
        )
        for n in range(1_000)
    ]
    data = write_pain002(report(transactions=transactions, payment_blocks=[]), version)
    rpt = read_back(data, version)
    read = {
        t.orgnl_end_to_end_id: (
            code(t.tx_sts),
            t.orgnl_instr_id,
            t.orgnl_tx_ref.amt.instd_amt.value,
        )
        for b in rpt.orgnl_pmt_inf_and_sts
        for t in b.tx_inf_and_sts
    }
    assert read == {
        t.end_to_end_id: (t.status, t.instruction_id, Decimal(t.amount or "")) for t in transactions
    }
    per_status = {code(n.dtld_sts): n for n in rpt.orgnl_grp_inf_and_sts.nb_of_txs_per_sts}
    assert per_status["RJCT"].dtld_nb_of_txs == "143"
    assert per_status["ACSC"].dtld_ctrl_sum == sum(
        (Decimal(t.amount or "") for t in transactions if t.status == "ACSC"), Decimal(0)
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_markup_in_values_is_escaped_and_reads_back_as_written(version):
    odd = ["Müller & Söhne <GmbH>", "a \"quoted\" 'name'", "line\r\nbreak", "]]> end", "张伟 工资"]
    transactions = [
        TransactionStatus(e2e, "RJCT", "AC04", info, amount="1.00", currency="EUR",
                          instruction_id=f"I&{n}", payment_block_id="B<&>")
        for n, (e2e, info) in enumerate(zip(odd, reversed(odd), strict=True))
    ]  # fmt: skip
    data = write_pain002(
        report(transactions=transactions, payment_blocks=[], original_message_id="M&<>"), version
    )
    rpt = read_back(data, version)
    assert rpt.orgnl_grp_inf_and_sts.orgnl_msg_id == "M&<>"
    [block] = rpt.orgnl_pmt_inf_and_sts
    assert block.orgnl_pmt_inf_id == "B<&>"
    read = [(t.orgnl_end_to_end_id, t.orgnl_instr_id, t.sts_rsn_inf[0].addtl_inf[0])
            for t in block.tx_inf_and_sts]  # fmt: skip
    assert read == [(e[:35], t.instruction_id, i) for e, i, t in
                    zip(odd, reversed(odd), transactions, strict=True)]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False),
            st.decimals(min_value=0, max_value=10**6, places=5, allow_nan=False),
            st.integers(min_value=0, max_value=10**9),
        ),
        max_size=12,
    )
)
def test_control_sums_are_exact_and_keep_the_most_decimals(amounts):
    texts = [str(a) if isinstance(a, int) else format(a, "f") for a in amounts]
    transactions = [
        TransactionStatus(f"E-{n}", "ACSC", amount=t, currency="EUR") for n, t in enumerate(texts)
    ]
    data = write_pain002(report(transactions=transactions, payment_blocks=[]), "pain.002.001.10")
    expected = format(sum((Decimal(t) for t in texts), Decimal(0)), "f")
    found = etree.fromstring(data).findtext(".//{*}OrgnlPmtInfAndSts/{*}OrgnlCtrlSum")
    if texts:
        assert found == expected
    else:
        assert found is None  # a block with no transactions has no sum
