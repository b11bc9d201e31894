"""The README's batch walkthrough on the files in examples/, through the CLI, as written."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest

pytestmark = [pytest.mark.e2e]

EXAMPLES = Path(__file__).parents[2] / "examples"
FUNDING_IBAN = "DE89370400440532013000"  # the examples' debtor account (DbtrAcct)


@pytest.mark.parametrize(
    ("example", "succeeded", "failed", "invalid"),
    [
        ("payroll-pain001.001.09.xml", 7, 1, 0),
        ("payroll-pain001.001.03.xml", 7, 1, 0),
        ("payroll.csv", 5, 1, 1),
    ],
)
def test_the_readme_walkthrough_on_each_example(  # type: ignore[no-untyped-def]
    sqlite_url, cli_for, example, succeeded, failed, invalid
) -> None:
    cli = cli_for(sqlite_url)
    opened = cli("accounts", "open", "--owner", "ACME payroll", "--currency", "EUR", "--kind",
                 "funding", "--iban", FUNDING_IBAN, "--json")  # fmt: skip
    funding = opened.json()["id"]
    assert cli("accounts", "deposit", funding, "100000.00").code == 0
    extra = ["--funding-account", funding] if example.endswith(".csv") else []
    submitted = cli("batches", "submit", str(EXAMPLES / example), *extra, "--json")
    assert submitted.code == 0, submitted.stderr
    batch = submitted.json()
    assert batch["status"] == "awaiting_approval" and batch["invalid_item_count"] == invalid
    approver = cli("keys", "create", "--tenant", "default", "--role", "approver", "--json").json()
    code = pyotp.parse_uri(approver["totp_uri"]).now()
    approved = cli("batches", "approve", batch["id"], "--execute-now", "--otp", code,
                   "--api-key", approver["key"], "--json")  # fmt: skip
    done = approved.json()
    assert done["status"] == "completed_with_failures", approved.stderr
    assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (succeeded, failed)
    report = cli("batches", "report", batch["id"], "--format", "csv")
    assert report.code == 0 and report.stdout.count("\n") == 1 + succeeded + failed + invalid
