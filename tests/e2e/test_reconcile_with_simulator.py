"""Issue 6's proof end to end, real processes only: ``payledger channel-sim`` on a loopback port,
``payledger serve`` with the card and bank channels pointed at it. Payments whose answers the
simulator holds back end ``exception``; the server's resolver asks the simulator and settles
them (posted once); then the statements the simulator writes from its own records (CSV for the
card channel, camt.053 for the bank) reconcile fully with the ledger, and a doctored copy is
reported in the right categories."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from interfaces.channel_sim.process import simulator_process
from tests.conftest import idempotency_key

pytestmark = pytest.mark.e2e

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_TIMEOUT = "4000000000000119"
IBAN_OK = "DE89370400440532013000"
IBAN_TIMEOUT = "DE82370400440532010119"
DISCREPANCIES = ("missing_in_ledger", "missing_in_statement", "amount_mismatch",
                 "status_mismatch", "duplicate_in_statement")  # fmt: skip


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, json=body, headers={"Idempotency-Key": idempotency_key()})


def _open(client: httpx.Client, owner: str, kind: str = "customer") -> str:
    response = _post(client, "/v1/accounts", {"owner": owner, "currency": "EUR", "kind": kind})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _card(client: httpx.Client, number: str, amount: str, payee: str) -> dict[str, Any]:
    method = {"type": "card", "number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    response = _post(client, "/v1/payments", {
        "amount": amount, "currency": "EUR", "channel": "card", "payment_method": method,
        "payee_account_id": payee,
    })  # fmt: skip
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


def _payout(client: httpx.Client, payer: str, iban: str, amount: str) -> dict[str, Any]:
    response = _post(client, "/v1/payments", {
        "amount": amount, "currency": "EUR", "channel": "bank_transfer",
        "payer_account_id": payer,
        "beneficiary": {"type": "bank_account", "iban": iban, "name": "E. Mployee"},
    })  # fmt: skip
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


def _reconcile(
    client: httpx.Client, channel: str, day: str, data: bytes, name: str
) -> dict[str, Any]:
    response = client.post(
        "/v1/reconciliations",
        data={"channel": channel, "period_start": day, "period_end": day},
        files={"file": (name, data, "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _counts(run: dict[str, Any]) -> dict[str, int]:
    return {c: t["count"] for c, t in run["summary"].items() if t["count"]}


def _wait_status(client: httpx.Client, payment_id: str, status: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        found = client.get(f"/v1/payments/{payment_id}").json()
        if found["status"] == status:
            return
        assert time.monotonic() < deadline, f"{payment_id} still {found['status']}"
        time.sleep(0.2)


def test_exceptions_resolved_then_statements_reconcile(
    database_url: str, start_server: Any, tmp_path: Path
) -> None:
    with simulator_process("--seed", "5", "--timeout-s", "5", log_dir=tmp_path) as sim:
        env = {
            "PAYLEDGER_CHANNEL_CARD_URL": sim.base_url,
            "PAYLEDGER_CHANNEL_BANK_TRANSFER_URL": sim.base_url,
            "PAYLEDGER_CHANNEL_READ_TIMEOUT_MS": "500",  # the held answers time out: exception
            "PAYLEDGER_CHANNEL_RETRIES": "0",
            "PAYLEDGER_CHANNEL_TIMEOUT_MS": "3000",
            "PAYLEDGER_EXCEPTION_RESOLVER_INTERVAL_S": "1",
        }
        server = start_server(database_url, env=env)
        with server.client() as http:
            shop = _open(http, "shop", "merchant")
            payroll = _open(http, "payroll", "funding")
            assert _post(http, f"/v1/accounts/{payroll}/deposits",
                         {"amount": "1000.00"}).status_code == 201  # fmt: skip
            paid = [_card(http, CARD_OK, f"{10 + i}.25", shop) for i in range(4)]
            declined = _card(http, CARD_DECLINED, "5.00", shop)
            lost = _card(http, CARD_TIMEOUT, "7.50", shop)
            payouts = [_payout(http, payroll, IBAN_OK, f"{100 + i}.00") for i in range(3)]
            held = _payout(http, payroll, IBAN_TIMEOUT, "30.00")
            assert [p["status"] for p in paid + payouts] == ["succeeded"] * 7
            assert declined["status"] == "failed"
            assert (lost["status"], held["status"]) == ("exception", "exception")
            assert http.get(f"/v1/accounts/{payroll}").json()["reserved"] == "30.00"

            # The resolver asks the simulator, which did charge both: succeeded, posted once.
            _wait_status(http, lost["id"], "succeeded", 30)
            _wait_status(http, held["id"], "succeeded", 30)
            assert http.get(f"/v1/accounts/{shop}").json()["balance"] == "54.50"  # 47.00 + 7.50
            funding = http.get(f"/v1/accounts/{payroll}").json()
            assert (funding["balance"], funding["reserved"]) == ("667.00", "0.00")

            day = datetime.now(UTC).date().isoformat()
            card_csv = sim.statement(day, channel="card")
            card_run = _reconcile(http, "card", day, card_csv, "card.csv")
            assert card_run["status"] == "completed"
            assert _counts(card_run) == {"matched": 5}, card_run["summary"]
            assert card_run["summary"]["matched"]["amount"] == "54.50"  # the declined is absent
            assert card_run["balances"]["difference"] == "0.00"

            bank_xml = sim.statement(day, channel="bank_transfer", format="camt053")
            assert bank_xml.lstrip().startswith(b"<?xml")
            bank_run = _reconcile(http, "bank_transfer", day, bank_xml, "bank.xml")
            assert bank_run["format"] == "camt053"
            assert _counts(bank_run) == {"matched": 4}, bank_run["summary"]
            assert bank_run["balances"]["difference"] == "0.00"

            # A doctored card statement: one line dropped, one amount changed, one extra line.
            header, *lines = card_csv.decode().splitlines()
            first = lines[0].split(",")
            first[3] = "99.99"
            doctored = [header, ",".join(first), *lines[2:],
                        f"{day},card_unknown,,3.00,EUR,credit,settled,XTRA"]  # fmt: skip
            run = _reconcile(http, "card", day, ("\n".join(doctored) + "\n").encode(), "d.csv")
            assert _counts(run) == {"matched": 3, "amount_mismatch": 1, "missing_in_statement": 1,
                                    "missing_in_ledger": 1}, run["summary"]  # fmt: skip
            again = http.post(
                "/v1/reconciliations",
                data={"channel": "card", "period_start": day, "period_end": day},
                files={"file": ("same.csv", card_csv, "text/csv")},
            )
            assert again.status_code == 200 and again.json()["id"] == card_run["id"]
