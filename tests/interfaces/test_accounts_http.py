"""Accounts over HTTP: open, read, deposit (idempotent), close."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.interfaces.conftest import Api, LiveServer, new_key
from tests.interfaces.test_validation_http import assert_problem, field_codes


@pytest.fixture
def live_server(shared_live_server: LiveServer) -> LiveServer:
    """One server per store for this module: every test makes its own accounts."""
    return shared_live_server


def test_open_and_get_account(client: httpx.Client) -> None:
    body = {"owner": "alice", "currency": "CNY", "kind": "customer", "overdraft_limit": "5.00"}

    created = client.post("/v1/accounts", json=body)

    assert created.status_code == 201, created.text
    account = created.json()
    uuid.UUID(account["id"])
    assert account | {"id": None, "created_at": None} == {
        "id": None,
        "owner": "alice",
        "currency": "CNY",
        "kind": "customer",
        "balance": "0.00",
        "reserved": "0.00",
        "available": "5.00",
        "overdraft_limit": "5.00",
        "closed": False,
        "iban": None,
        "created_at": None,
    }
    assert client.get(f"/v1/accounts/{account['id']}").json() == account


def test_amounts_use_the_currency_exponent(api: Api) -> None:
    assert api.open_account("JPY")["balance"] == "0"
    assert api.open_account("KWD", overdraft_limit="1.5")["overdraft_limit"] == "1.500"


def test_open_with_idempotency_key_opens_one_account(client: httpx.Client) -> None:
    body, key = {"owner": "bob", "currency": "USD"}, new_key()

    first = client.post("/v1/accounts", json=body, headers={"Idempotency-Key": key})
    again = client.post("/v1/accounts", json=body, headers={"Idempotency-Key": key})
    other = client.post(
        "/v1/accounts", json=body | {"owner": "eve"}, headers={"Idempotency-Key": key}
    )

    assert first.json()["id"] == again.json()["id"]
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert_problem(other, 422, "idempotency_key_reused")


def test_unknown_account_is_404_and_bad_id_is_422(client: httpx.Client) -> None:
    missing = client.get(f"/v1/accounts/{uuid.uuid4()}")
    assert_problem(missing, 404, "account_not_found")
    bad = assert_problem(client.get("/v1/accounts/not-a-uuid"), 422, "validation_error")
    assert field_codes(bad) == {("account_id", "uuid_parsing")}
    assert len(bad["errors"]) == 1 and bad["detail"].count("account_id") == 1  # listed once
    assert "not-a-uuid" not in bad["detail"]
    payment = assert_problem(client.get("/v1/payments/xyz"), 422, "validation_error")
    assert [e["field"] for e in payment["errors"]] == ["payment_id"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"owner": "a", "currency": "CNY", "overdraft_limit": 0},
            ("overdraft_limit", "amount_must_be_string"),
        ),
        ({"owner": "a", "currency": "CNY", "kind": "vip"}, ("kind", "literal_error")),
        ({"owner": "a" * 201, "currency": "CNY"}, ("owner", "string_too_long")),
        ({"owner": "a", "currency": "XYZ"}, ("currency", "unknown_currency")),
        (
            {"owner": "a", "currency": "CNY", "overdraft_limit": "0.001"},
            ("overdraft_limit", "too_many_decimals"),
        ),
        ({"owner": "a", "currency": "CNY", "id": "x"}, ("id", "extra_forbidden")),
    ],
)
def test_malformed_account_is_422_and_records_nothing(
    live_server: LiveServer,
    client: httpx.Client,
    body: dict[str, object],
    expected: tuple[str, str],
) -> None:
    position = live_server.notification_position()

    problem = assert_problem(client.post("/v1/accounts", json=body), 422, "validation_error")

    assert expected in field_codes(problem)
    assert live_server.notification_position() == position


def test_deposit_credits_the_account_and_replays(api: Api) -> None:
    account_id, key = api.open_account()["id"], new_key()
    path = f"/v1/accounts/{account_id}/deposits"

    first = api.client.post(path, json={"amount": "250.00"}, headers={"Idempotency-Key": key})
    again = api.client.post(path, json={"amount": "250.00"}, headers={"Idempotency-Key": key})
    other = api.client.post(path, json={"amount": "1.00"}, headers={"Idempotency-Key": key})

    assert first.status_code == 201, first.text
    deposit = first.json()
    assert (deposit["kind"], deposit["status"], deposit["amount"]) == (
        "deposit",
        "succeeded",
        "250.00",
    )
    assert deposit["account_id"] == account_id and deposit["balance"] == "250.00"
    assert deposit["account"]["available"] == "250.00"
    assert deposit["payee"] == {"type": "account", "account_id": account_id}
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == deposit["id"]
    assert_problem(other, 422, "idempotency_key_reused")
    assert api.account(account_id)["balance"] == "250.00"


def test_deposit_problems(live_server: LiveServer, api: Api) -> None:
    account_id = api.open_account("CNY")["id"]
    headers = {"Idempotency-Key": new_key()}
    position = live_server.notification_position()

    wrong_currency = api.client.post(
        f"/v1/accounts/{account_id}/deposits",
        json={"amount": "1.00", "currency": "USD"},
        headers=headers,
    )
    as_number = api.client.post(
        f"/v1/accounts/{account_id}/deposits", json={"amount": 1}, headers=headers
    )
    unknown = api.client.post(
        f"/v1/accounts/{uuid.uuid4()}/deposits", json={"amount": "1.00"}, headers=headers
    )

    assert ("currency", "currency_mismatch") in field_codes(
        assert_problem(wrong_currency, 422, "validation_error")
    )
    assert ("amount", "amount_must_be_string") in field_codes(
        assert_problem(as_number, 422, "validation_error")
    )
    assert_problem(unknown, 404, "account_not_found")
    assert live_server.notification_position() == position


def test_close_account(api: Api) -> None:
    empty, funded = api.open_account()["id"], api.funded_account("1.00")

    closed = api.client.post(f"/v1/accounts/{empty}/close")

    assert closed.status_code == 200 and closed.json()["closed"] is True
    assert api.account(empty)["closed"] is True
    assert_problem(api.client.post(f"/v1/accounts/{empty}/close"), 409, "account_rule_violation")
    assert_problem(api.client.post(f"/v1/accounts/{funded}/close"), 409, "account_rule_violation")
    assert_problem(api.client.post(f"/v1/accounts/{uuid.uuid4()}/close"), 404, "account_not_found")
    paid = api.pay(
        {
            "amount": "1.00",
            "currency": "CNY",
            "channel": "internal",
            "payer_account_id": funded,
            "payee_account_id": empty,
        }
    ).json()
    assert (paid["status"], paid["failure_code"]) == ("failed", "account_closed")
