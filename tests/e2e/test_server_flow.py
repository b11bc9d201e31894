"""The real server over HTTP, then the CLI on the same database: both see the same ledger.

Runs on SQLite and on PostgreSQL (the ``database_url`` fixture parameter)."""

from __future__ import annotations

import pytest

from tests.conftest import idempotency_key

pytestmark = pytest.mark.e2e

CARD = "4242424242424242"


def _post(client, path, body, key=None):  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": key or idempotency_key()}
    return client.post(path, json=body, headers=headers)


def _open(client, owner, kind="customer"):  # type: ignore[no-untyped-def]
    response = _post(client, "/v1/accounts", {"owner": owner, "currency": "CNY", "kind": kind})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_server_and_cli_share_the_ledger(database_url, start_server, cli_for):
    server = start_server(database_url)
    cli = cli_for(database_url)
    with server.client() as http:
        assert http.get("/readyz").status_code == 200
        alice, shop = _open(http, "alice"), _open(http, "shop", "merchant")
        deposit = _post(http, f"/v1/accounts/{alice}/deposits", {"amount": "100.00"})
        assert deposit.status_code == 201, deposit.text
        paid = _post(
            http,
            "/v1/payments",
            {
                "amount": "40.50",
                "currency": "CNY",
                "channel": "internal",
                "payer_account_id": alice,
                "payee_account_id": shop,
            },
        )
        assert paid.status_code == 201, paid.text
        assert paid.json()["status"] == "succeeded"
        by_card = _post(
            http,
            "/v1/payments",
            {
                "amount": "9.99",
                "currency": "CNY",
                "channel": "card",
                "payment_method": {
                    "type": "card", "number": CARD, "exp_month": 12, "exp_year": 2031, "cvc": "123",
                },
                "payee_account_id": shop,
            },
        )  # fmt: skip
        assert by_card.json()["status"] == "succeeded", by_card.text
        assert http.get(f"/v1/accounts/{alice}").json()["balance"] == "59.50"

    account = cli("accounts", "show", alice, "--json")
    assert account.code == 0, account.stderr
    assert account.json()["balance"] == "59.50"
    assert account.json()["available"] == "59.50"
    assert cli("accounts", "show", shop, "--json").json()["balance"] == "50.49"

    shown = cli("payments", "show", paid.json()["id"], "--events", "--json")
    assert shown.code == 0, shown.stderr
    data = shown.json()
    assert (data["id"], data["status"], data["amount"]) == (paid.json()["id"], "succeeded", "40.50")
    assert [e["version"] for e in data["events"]] == list(range(1, len(data["events"]) + 1))
    assert data["events"][0]["type"] == "Requested"

    card_shown = cli("payments", "show", by_card.json()["id"], "--events", "--json")
    assert card_shown.json()["payer"]["last4"] == "4242"
    assert CARD not in card_shown.stdout

    # And the other way round: what the CLI writes, the server reads.
    deposited = cli("accounts", "deposit", alice, "0.50", "--json")
    assert deposited.code == 0, deposited.stderr
    with server.client() as http:
        assert http.get(f"/v1/accounts/{alice}").json()["balance"] == "60.00"
        assert http.get(f"/v1/payments/{deposited.json()['id']}").status_code == 200
    assert cli("ledger", "check").code == 0


def test_several_workers_share_one_store(database_url, start_server, cli_for):
    """serve creates the tables once, then starts workers that must not run DDL."""
    server = start_server(database_url, "--workers", "2")
    with server.client() as http:
        ids = [_open(http, f"owner-{i}") for i in range(6)]  # spread over both workers
        for account_id in ids:
            assert _post(http, f"/v1/accounts/{account_id}/deposits", {"amount": "1.00"}).is_success
    assert "worker(s)" in server.log()
    listing = [cli_for(database_url)("accounts", "show", i, "--json").json() for i in ids[:2]]
    assert [a["balance"] for a in listing] == ["1.00", "1.00"]
