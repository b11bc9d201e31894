"""Batches through the CLI as an operator runs them: open a funding account with its IBAN,
submit a CSV and a pain.001, approve with an approver key and a TOTP code, read items and
write the pain.002 report; the maker cannot approve, a wrong code is refused."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pyotp
import pytest
from lxml import etree
from schwifty import IBAN
from sepaxml import SepaTransfer

pytestmark = [pytest.mark.e2e]

XSD = Path(__file__).parents[2] / "application" / "batch_files" / "xsd"


def _iban(n: int, suffix: str = "") -> str:
    account = f"{532000000 + n * 10 + 5:09d}"
    if suffix:
        account = account[: -len(suffix)] + suffix
    return str(IBAN.generate("DE", bank_code="37040044", account_code=account))


@pytest.fixture
def setup(database_url, cli_for, tmp_path):  # type: ignore[no-untyped-def]
    cli = cli_for(database_url)
    tenant = "payroll-co"
    funding_iban = _iban(77_777)
    opened = cli(
        "--tenant", tenant, "accounts", "open", "--owner", "ACME payroll", "--currency", "EUR",
        "--kind", "funding", "--iban", funding_iban, "--json",
    )  # fmt: skip
    assert opened.code == 0, opened.stderr
    funding = opened.json()["id"]
    assert cli("--tenant", tenant, "accounts", "deposit", funding, "5000.00").code == 0
    approver = cli("keys", "create", "--tenant", tenant, "--role", "approver", "--json")
    assert approver.code == 0, approver.stderr
    return cli, tenant, funding, funding_iban, approver.json()


def test_csv_batch_through_the_cli(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cli, tenant, funding, _, approver = setup
    csv = tmp_path / "payroll.csv"
    csv.write_text(
        "end_to_end_id,amount,currency,name,iban\n"
        f"P-1,1000.00,EUR,张伟,{_iban(1)}\n"
        f"P-2,250.00,EUR,王芳,{_iban(2, '0004')}\n"
        "P-3,10.00,EUR,李娜,DE00370400440532013000\n",
        encoding="utf-8",
    )
    submitted = cli("--tenant", tenant, "batches", "submit", str(csv), "--funding-account",
                    funding, "--json")  # fmt: skip
    assert submitted.code == 0, submitted.stderr
    batch = submitted.json()
    assert (batch["status"], batch["valid_item_count"], batch["invalid_item_count"]) == (
        "awaiting_approval", 2, 1,
    )  # fmt: skip
    again = cli("--tenant", tenant, "batches", "submit", str(csv), "--funding-account", funding,
                "--json")  # fmt: skip
    assert again.json()["id"] == batch["id"]  # the same file: the same batch

    # The CLI user made it; it cannot approve it (no key, so no second factor either).
    own = cli("--tenant", tenant, "batches", "approve", batch["id"], "--otp", "123456")
    assert own.code == 8, own.stderr
    wrong = cli("batches", "approve", batch["id"], "--otp", "000000",
                "--api-key", approver["key"])  # fmt: skip
    assert wrong.code == 8 and "otp_invalid" in wrong.stderr
    code = pyotp.parse_uri(approver["totp_uri"]).now()
    approved = cli("batches", "approve", batch["id"], "--code", code, "--api-key",
                   approver["key"], "--json")  # fmt: skip
    assert approved.code == 6, approved.stderr  # finished with failures
    done = approved.json()
    assert done["status"] == "completed_with_failures"
    assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (1, 1)

    items = cli("--tenant", tenant, "batches", "items", batch["id"], "--json")
    assert [i["status"] for i in items.json()["items"]] == ["succeeded", "failed", "invalid"]
    report = tmp_path / "report.xml"
    written = cli("--tenant", tenant, "batches", "report", batch["id"], "--format", "pain002",
                  "-o", str(report))  # fmt: skip
    assert written.code == 0, written.stderr
    schema = etree.XMLSchema(etree.parse(str(XSD / "pain.002.001.10.xsd")))
    assert schema.validate(etree.parse(str(report))), schema.error_log
    shown = cli("--tenant", tenant, "batches", "status", batch["id"], "--json")
    assert shown.json()["processing_time_ms"] is not None
    account = cli("--tenant", tenant, "accounts", "show", funding, "--json").json()
    assert (account["balance"], account["reserved"]) == ("4000.00", "0.00")
    assert cli("ledger", "check").code == 0


def test_pain001_found_by_its_debtor_iban_and_scheduled(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cli, tenant, _funding, funding_iban, approver = setup
    config = {"name": "ACME", "IBAN": funding_iban, "BIC": "COBADEFFXXX", "batch": True,
              "currency": "EUR"}  # fmt: skip
    sepa = SepaTransfer(config, schema="pain.001.001.09", clean=True)
    later = datetime.date.today() + datetime.timedelta(days=30)
    sepa.add_payment({"name": "Anna", "IBAN": _iban(5), "BIC": "COBADEFFXXX", "amount": 1234,
                      "execution_date": later, "description": "Gehalt",
                      "endtoend_id": "S-1"})  # fmt: skip
    path = tmp_path / "salaries.xml"
    path.write_bytes(sepa.export(validate=True))
    submitted = cli("--tenant", tenant, "batches", "submit", str(path), "--json")
    assert submitted.code == 0, submitted.stderr
    batch = submitted.json()
    assert batch["format"] == "pain.001.001.09" and batch["execution_date"] == later.isoformat()
    code = pyotp.parse_uri(approver["totp_uri"]).now()
    approved = cli("batches", "approve", batch["id"], "--otp", code, "--api-key", approver["key"],
                   "--json")  # fmt: skip
    assert approved.code == 0, approved.stderr
    assert (approved.json()["status"], approved.json()["run_on"]) == (
        "scheduled",
        later.isoformat(),
    )
    due = cli("batches", "run-due", "--json")
    assert due.code == 0 and json.loads(due.stdout) == []  # not due before its date
