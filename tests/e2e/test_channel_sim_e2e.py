"""Real processes: ``payledger channel-sim`` on a loopback port, and ``payledger serve`` with the
card and bank channels pointed at it (``PAYLEDGER_CHANNEL_<NAME>_URL``). Payments go over HTTP
to Payledger, then over HTTP to the simulator; what the simulator recorded is checked through its
own status endpoint and statement.

Runs on SQLite and on PostgreSQL; ``serve`` puts the committer in a process of its own there, so
this also shows that channels are called only from the API process."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from interfaces.channel_sim.process import simulator_process
from interfaces.channel_sim.provider import reference_of
from tests.conftest import idempotency_key

pytestmark = pytest.mark.e2e

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_TIMEOUT = "4000000000000119"
IBAN_TIMEOUT = "DE82370400440532010119"  # the bank charges, then does not answer in time


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, json=body, headers={"Idempotency-Key": idempotency_key()})


def _open(client: httpx.Client, owner: str, currency: str, kind: str = "customer") -> str:
    response = _post(client, "/v1/accounts", {"owner": owner, "currency": currency, "kind": kind})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _card_payment(client: httpx.Client, number: str, amount: str, payee: str) -> dict[str, Any]:
    method = {"type": "card", "number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    body = {"amount": amount, "currency": "EUR", "channel": "card", "payment_method": method,
            "payee_account_id": payee}  # fmt: skip
    response = _post(client, "/v1/payments", body)
    assert response.status_code in (200, 201, 202), response.text
    return response.json()  # type: ignore[no-any-return]


def test_payments_through_the_channel_simulator(
    database_url: str, start_server: Any, tmp_path: Path
) -> None:
    with simulator_process("--seed", "3", "--timeout-s", "10", log_dir=tmp_path) as sim:
        env = {
            "PAYLEDGER_CHANNEL_CARD_URL": sim.base_url,
            "PAYLEDGER_CHANNEL_BANK_TRANSFER_URL": sim.base_url,
            # A timed-out charge must end "exception" quickly, not be retried into success.
            "PAYLEDGER_CHANNEL_READ_TIMEOUT_MS": "500",
            "PAYLEDGER_CHANNEL_RETRIES": "0",
            "PAYLEDGER_CHANNEL_TIMEOUT_MS": "3000",
        }
        server = start_server(database_url, env=env)
        with server.client() as http:
            shop = _open(http, "shop", "EUR", "merchant")
            payer = _open(http, "alice", "EUR")
            deposit = _post(http, f"/v1/accounts/{payer}/deposits", {"amount": "100.00"})
            assert deposit.status_code == 201, deposit.text

            paid = _card_payment(http, CARD_OK, "25.00", shop)
            declined = _card_payment(http, CARD_DECLINED, "5.00", shop)
            lost = _card_payment(http, CARD_TIMEOUT, "7.50", shop)
            payout = _post(http, "/v1/payments", {
                "amount": "30.00", "currency": "EUR", "channel": "bank_transfer",
                "payer_account_id": payer,
                "beneficiary": {"type": "bank_account", "iban": IBAN_TIMEOUT, "name": "E. M."},
            })  # fmt: skip
            assert payout.status_code in (200, 201, 202), payout.text
            held = payout.json()

            assert paid["status"] == "succeeded", paid
            assert paid["channel_reference"] == reference_of("card", paid["id"])
            assert (declined["status"], declined["failure_code"]) == ("failed", "card_declined")
            # The simulator charged, then held its answer past our read timeout: unknown.
            assert lost["status"] == "exception", lost
            assert held["status"] == "exception", held
            assert http.get(f"/v1/accounts/{shop}").json()["balance"] == "25.00"
            alice = http.get(f"/v1/accounts/{payer}").json()
            # The payout's funds stay held until its outcome is known.
            assert (alice["balance"], alice["reserved"], alice["available"]) == (
                "100.00", "30.00", "70.00",
            )  # fmt: skip

        # The simulator's side: what it really did with each payment id.
        assert sim.charge(paid["id"])["status"] == "succeeded"  # type: ignore[index]
        assert sim.charge(declined["id"])["status"] == "failed"  # type: ignore[index]
        lost_charge = sim.charge(lost["id"])
        assert lost_charge is not None and lost_charge["status"] == "succeeded"
        assert lost_charge["amount"] == "7.50"
        assert sim.charge(held["id"])["status"] == "succeeded"  # type: ignore[index]
        day = datetime.now(UTC).date().isoformat()
        rows = list(csv.DictReader(io.StringIO(sim.statement(day).decode())))
        assert {r["payment_id"]: r["direction"] for r in rows} == {
            paid["id"]: "credit", lost["id"]: "credit", held["id"]: "debit",
        }  # fmt: skip
        assert "4242424242424242" not in sim.log() and CARD_TIMEOUT not in sim.log()
        assert CARD_TIMEOUT not in server.log()


def test_an_unreachable_channel_fails_the_payment_honestly(
    sqlite_url: str, start_server: Any
) -> None:
    from interfaces.channel_sim.process import free_port

    env = {"PAYLEDGER_CHANNEL_CARD_URL": f"http://127.0.0.1:{free_port()}"}
    server = start_server(sqlite_url, env=env)
    with server.client() as http:
        shop = _open(http, "shop", "EUR", "merchant")
        refused = _card_payment(http, CARD_OK, "3.00", shop)
    # Nothing ever reached the channel: not charged, so "failed", never "exception".
    assert (refused["status"], refused["failure_code"]) == ("failed", "channel_unreachable")


def test_a_bad_channel_url_stops_the_server_at_start(sqlite_url: str, cli_for: Any) -> None:
    cli = cli_for(sqlite_url)
    cli.extra_env["PAYLEDGER_CHANNEL_ALIPAY_URL"] = "ftp://127.0.0.1:21"
    result = cli("serve", "--port", "1", timeout_s=30)
    assert result.code == 2, (result.stdout, result.stderr)
    assert "channel_alipay_url" in result.stderr.lower()


def test_the_command_line_sets_the_simulators_knobs(tmp_path: Path) -> None:
    flags = (
        "--latency-ms", "5", "--decline-rate", "0.1", "--timeout-rate", "0.2",
        "--timeout-s", "3", "--error-rate", "0.3", "--drop-rate", "0.4", "--seed", "11",
    )  # fmt: skip
    with simulator_process(*flags, log_dir=tmp_path) as sim:
        config = httpx.get(f"{sim.base_url}/_sim/config", timeout=10).json()
        assert config == {
            "latency_ms": 5, "decline_rate": 0.1, "timeout_rate": 0.2, "timeout_s": 3.0,
            "error_rate": 0.3, "drop_rate": 0.4, "seed": 11,
        }  # fmt: skip
        assert sim.health()["status"] == "ok"
    assert "serving on http://127.0.0.1:" in sim.log() and "(seed 11)" in sim.log()
