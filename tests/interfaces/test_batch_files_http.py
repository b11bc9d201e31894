"""Batch files over real HTTP: pain.001 made by an independent generator (sepaxml), CSV with
Chinese names, duplicate files, refused files, and the pain.002 report checked against the
official XSD and read back by an independent parser (pyiso20022)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from lxml import etree
from sepaxml import SepaTransfer

from tests.interfaces.batch_helpers import Payroll, iban, payroll
from tests.interfaces.conftest import LiveServer, new_key
from tests.interfaces.keys_helpers import problem_code

XSD = Path(__file__).parents[2] / "application" / "batch_files" / "xsd"
SAMPLES = Path(__file__).parents[1] / "data" / "iso20022"  # the vendored third-party corpus


@pytest.fixture
def pr(live_server: LiveServer) -> Payroll:
    return payroll(live_server)


def pain001(
    pr: Payroll, schema: str, amounts: list[int], suffixes: dict[int, str] | None = None
) -> bytes:
    """A SEPA credit transfer file from sepaxml, debiting the payroll's funding IBAN."""
    config = {"name": "ACME GmbH", "IBAN": pr.funding_iban, "BIC": "COBADEFFXXX",
              "batch": True, "currency": "EUR"}  # fmt: skip
    sepa = SepaTransfer(config, schema=schema, clean=True)
    for n, cents in enumerate(amounts):
        sepa.add_payment({
            "name": f"Mitarbeiter {n}", "IBAN": iban(n, (suffixes or {}).get(n, "")),
            "BIC": "COBADEFFXXX", "amount": cents, "description": "Gehalt",
            "execution_date": datetime.date.today(), "endtoend_id": f"SAL-{n}",
        })  # fmt: skip
    return sepa.export(validate=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize("schema", ["pain.001.001.03", "pain.001.001.09"])
def test_a_pain001_pays_and_reports_a_valid_pain002(pr: Payroll, schema: str) -> None:
    data = pain001(pr, schema, [150000, 250050, 9999], suffixes={2: "0004"})
    answer = pr.submit_file(data, "salaries.xml")
    assert answer.status_code == 201, answer.text
    batch = answer.json()
    assert (batch["format"], batch["funding_account_id"]) == (schema, pr.funding)
    assert (batch["valid_item_count"], batch["control_sum"]) == (3, "4100.49")
    assert pr.approve(batch["id"]).status_code == 200
    assert pr.wait(batch["id"])["status"] == "completed_with_failures"

    version = "pain.002.001.03" if schema.endswith("03") else "pain.002.001.10"
    with pr.as_(pr.submitter) as http:
        report = http.get(f"/v1/batches/{batch['id']}/report",
                          params={"format": "pain002", "version": version})  # fmt: skip
    assert report.status_code == 200, report.text
    tree = etree.fromstring(report.content)
    schema_doc = etree.XMLSchema(etree.parse(str(XSD / f"{version}.xsd")))
    assert schema_doc.validate(tree), schema_doc.error_log
    ns = {"p": tree.nsmap[None]}
    assert tree.findtext(".//p:OrgnlMsgId", namespaces=ns) == batch["message_id"]
    assert tree.findtext(".//p:GrpSts", namespaces=ns) == "PART"
    statuses = {
        tx.findtext("p:OrgnlEndToEndId", namespaces=ns): tx.findtext("p:TxSts", namespaces=ns)
        for tx in tree.iterfind(".//p:TxInfAndSts", namespaces=ns)
    }
    assert statuses == {"SAL-0": "ACSC", "SAL-1": "ACSC", "SAL-2": "RJCT"}
    rejected = tree.find(".//p:TxInfAndSts[p:TxSts='RJCT']", namespaces=ns)
    assert rejected.findtext(".//p:Rsn/p:Cd", namespaces=ns) == "AC04"


def test_the_report_is_read_by_an_independent_parser(pr: Payroll) -> None:
    from pyiso20022.pain.pain_002_001_10 import Document  # type: ignore[import-untyped]
    from xsdata.formats.dataclass.parsers import XmlParser

    data = pain001(pr, "pain.001.001.09", [1000, 2000])
    batch = pr.submit_file(data, "p.xml").json()
    assert pr.approve(batch["id"]).status_code == 200
    pr.wait(batch["id"])
    with pr.as_(pr.submitter) as http:
        xml = http.get(f"/v1/batches/{batch['id']}/report", params={"format": "pain002"}).content
    document = XmlParser().from_bytes(xml, Document)
    group = document.cstmr_pmt_sts_rpt.orgnl_grp_inf_and_sts
    assert (group.orgnl_nb_of_txs, str(group.orgnl_ctrl_sum), group.grp_sts) == (
        "2",
        "30.00",
        "ACSC",
    )


def test_the_same_file_twice_is_the_same_batch(pr: Payroll, live_server: LiveServer) -> None:
    data = pain001(pr, "pain.001.001.09", [1000])
    first = pr.submit_file(data, "a.xml")
    position = live_server.notification_position()
    again = pr.submit_file(data, "a-copy.xml")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert live_server.notification_position() == position
    changed = data.replace(b'<InstdAmt Ccy="EUR">10.00', b'<InstdAmt Ccy="EUR">10.50')
    changed = changed.replace(b"<CtrlSum>10.00", b"<CtrlSum>10.50")
    reused = pr.submit_file(changed, "b.xml")
    assert reused.status_code == 409 and problem_code(reused) == "DU01"


def test_the_same_csv_twice_is_the_same_batch_whatever_the_key(
    pr: Payroll, live_server: LiveServer
) -> None:
    data = f"end_to_end_id,amount,currency,name,iban\nA,1.00,EUR,Ann,{iban(1)}\n".encode()
    first = pr.submit_file(data, "p.csv", key=new_key(), funding_account_id=pr.funding)
    position = live_server.notification_position()
    again = pr.submit_file(data, "p-copy.csv", key=new_key(), funding_account_id=pr.funding)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["id"] == first.json()["id"]
    assert live_server.notification_position() == position  # not processed again
    changed = pr.submit_file(data + f"B,2.00,EUR,Bo,{iban(2)}\n".encode(), "p2.csv",
                             key=new_key(), funding_account_id=pr.funding)  # fmt: skip
    assert changed.status_code == 201 and changed.json()["id"] != first.json()["id"]


def test_one_item_in_another_currency_is_refused_alone(pr: Payroll) -> None:
    rows = ["end_to_end_id,amount,currency,name,iban",
            f"A,1.00,EUR,Ann,{iban(1)}", f"B,100,JPY,Bo,{iban(2)}"]  # fmt: skip
    answer = pr.submit_file("\n".join(rows).encode(), "mixed.csv", key=new_key(),
                            funding_account_id=pr.funding)  # fmt: skip
    assert answer.status_code == 201, answer.text
    batch = answer.json()
    assert (batch["currency"], batch["valid_item_count"]) == ("EUR", 1)
    assert [(i["index"], i["reason_code"]) for i in batch["invalid_items"]] == [(1, "AM03")]


def test_a_csv_item_without_an_amount_is_am12_missing(pr: Payroll) -> None:
    rows = ["end_to_end_id,amount,currency,name,iban", f"A,1.00,EUR,Ann,{iban(1)}",
            f"B,,EUR,Bo,{iban(2)}", f"C,abc,EUR,Cy,{iban(3)}"]  # fmt: skip
    answer = pr.submit_file("\n".join(rows).encode(), "p.csv", key=new_key(),
                            funding_account_id=pr.funding)  # fmt: skip
    assert answer.status_code == 201, answer.text
    invalid = {i["index"]: (i["reason_code"], i["reason"]) for i in answer.json()["invalid_items"]}
    assert invalid[1] == ("AM12", "amount is missing")
    assert invalid[2][0] == "AM12" and "'abc'" in invalid[2][1]


def test_control_sum_and_count_mismatches_refuse_the_file(pr: Payroll) -> None:
    data = pain001(pr, "pain.001.001.09", [1000, 2000])
    wrong_sum = data.replace(b"<CtrlSum>30.00</CtrlSum>", b"<CtrlSum>31.00</CtrlSum>", 1)
    answer = pr.submit_file(wrong_sum, "x.xml")
    assert answer.status_code == 422
    assert {(e["field"], e["code"]) for e in answer.json()["errors"]} >= {
        ("GrpHdr/CtrlSum", "AM10")
    }
    wrong_count = data.replace(b"<NbOfTxs>2</NbOfTxs>", b"<NbOfTxs>3</NbOfTxs>", 1)
    assert pr.submit_file(wrong_count, "y.xml").json()["errors"][0]["code"] == "AM18"


@pytest.mark.parametrize(
    ("sample", "why"),
    [
        ("apiome/negative/04-wrong-format-nacha.ach", "NACHA"),
        ("apiome/negative/billion-laughs-pain001.xml", "entities"),
        ("apiome/negative/06-version-out-of-range-pain001-099.xml", "version"),
        ("apiome/negative/03-truncated-mid-transaction.xml", "truncated"),
    ],
)
def test_files_that_are_not_batches_are_refused_with_ff01(
    pr: Payroll, sample: str, why: str
) -> None:
    answer = pr.submit_file((SAMPLES / sample).read_bytes(), Path(sample).name, key=new_key())
    assert answer.status_code == 422, (why, answer.text)
    assert answer.json()["errors"][0]["code"] == "FF01"


def test_a_csv_with_chinese_names(pr: Payroll) -> None:
    rows = ["end_to_end_id,amount,currency,name,iban"]
    rows += [f"CN-{n},{n + 1}00.00,EUR,{name},{iban(n)}" for n, name in enumerate(["张伟", "王芳"])]
    rows.append("CN-2,5.00,EUR,李娜,DE00370400440532013000")
    answer = pr.submit_file(
        "\n".join(rows).encode(), "payroll.csv", key=new_key(), funding_account_id=pr.funding
    )
    assert answer.status_code == 201, answer.text
    batch = answer.json()
    assert (batch["valid_item_count"], batch["invalid_item_count"]) == (2, 1)
    assert batch["invalid_items"][0] | {"reason": ""} == {
        "index": 2, "end_to_end_id": "CN-2", "location": "line 4", "reason_code": "AC01",
        "reason": "",
    }  # fmt: skip
    assert pr.approve(batch["id"]).status_code == 200
    pr.wait(batch["id"])
    names = [i["beneficiary_name"] for i in pr.items(batch["id"], status="succeeded")]
    assert names == ["张伟", "王芳"]


def test_a_csv_without_an_idempotency_key_or_with_a_bad_header(pr: Payroll) -> None:
    good = f"end_to_end_id,amount,currency,name,iban\nA,1.00,EUR,Ann,{iban(1)}\n".encode()
    no_key = pr.submit_file(good, "p.csv", funding_account_id=pr.funding)
    assert no_key.status_code == 400  # as for payments: idempotency_key_required
    bad = b"end_to_end_id,amount,currency,name,iban,shoe_size\nA,1.00,EUR,Ann,DE89\n"
    answer = pr.submit_file(bad, "p.csv", key=new_key(), funding_account_id=pr.funding)
    assert answer.status_code == 422 and "shoe_size" in answer.text
