"""Real-time payments over HTTP, on SQLite and PostgreSQL: every sandbox outcome, the audit
history, idempotency, and 50 concurrent duplicates."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.interfaces.conftest import Api, LiveServer, card, new_key

CARD_NUMBERS = ("4242424242424242", "4000000000000002", "4000000000000119")
PAYOUT_DECLINED_IBAN = "DE57370400440000000004"  # sandbox: ends in 0004 -> AC04 closed account
PAYOUT_OK_IBAN = "DE89370400440532013000"


def internal(payer: str, payee: str, amount: str = "40.50", **more: Any) -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "CNY",
        "channel": "internal",
        "payer_account_id": payer,
        "payee_account_id": payee,
        **more,
    }


def test_internal_payment_succeeds_and_moves_both_balances(api: Api) -> None:
    alice, shop = api.funded_account("100.00"), api.merchant()

    response = api.pay(internal(alice, shop, description="invoice 17", metadata={"n": "17"}))

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["amount"] == "40.50" and body["currency"] == "CNY"
    assert body["channel"] == "internal" and body["channel_reference"]
    assert body["failure_code"] is None and body["failure_message"] is None
    assert body["description"] == "invoice 17" and body["metadata"] == {"n": "17"}
    assert body["completed_at"] is not None and isinstance(body["latency_ms"], int)
    assert "batch_id" in body and body["batch_id"] is None  # a real-time payment
    assert "Idempotent-Replayed" not in response.headers
    assert api.account(alice)["balance"] == "59.50"
    assert api.account(shop)["balance"] == "40.50"
    assert api.client.get(f"/v1/payments/{body['id']}").json() == body


@pytest.mark.parametrize(
    ("payee_kind", "amount", "code"),
    [
        ("merchant", "100.01", "insufficient_funds"),
        ("unknown", "1.00", "account_not_found"),
        ("usd", "1.00", "currency_mismatch"),
    ],
)
def test_internal_payment_refused_by_rules_is_recorded_as_failed(
    api: Api, payee_kind: str, amount: str, code: str
) -> None:
    alice = api.funded_account("100.00")
    payee = {
        "merchant": api.merchant,
        "unknown": lambda: str(uuid.uuid4()),
        "usd": lambda: api.merchant("USD"),
    }[payee_kind]()

    response = api.pay(internal(alice, payee, amount))

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["failure_code"]) == ("failed", code)
    assert body["failure_message"]
    assert api.client.get(f"/v1/payments/{body['id']}").json()["failure_code"] == code
    after = api.account(alice)
    assert (after["balance"], after["reserved"], after["available"]) == ("100.00", "0.00", "100.00")


@pytest.mark.parametrize(
    ("number", "status", "code", "credited"),
    [
        ("4242424242424242", "succeeded", None, "25.00"),
        ("4000000000000002", "failed", "card_declined", "0.00"),
        ("4000000000000119", "exception", "channel_timeout", "0.00"),
    ],
)
def test_card_payment_outcomes(
    api: Api, number: str, status: str, code: str | None, credited: str
) -> None:
    shop = api.merchant()
    body = {"amount": "25.00", "currency": "CNY", "channel": "card", "payee_account_id": shop}

    response = api.pay(body | {"payment_method": card(number)})

    assert response.status_code == 201, response.text
    paid = response.json()
    assert (paid["status"], paid["failure_code"]) == (status, code)
    assert paid["payer"]["type"] == "card" and paid["payer"]["last4"] == number[-4:]
    assert paid["payer"]["brand"] == "visa"
    assert api.account(shop)["balance"] == credited
    events = api.client.get(f"/v1/payments/{paid['id']}/events")
    assert events.status_code == 200
    for text in (response.text, events.text):
        assert number not in text


@pytest.mark.parametrize(
    ("channel", "payer_id", "status", "code"),
    [
        ("alipay", "2088102146225135", "succeeded", None),
        ("alipay", "sandbox_declined", "failed", "wallet_declined"),
        ("wechat_pay", "sandbox_declined", "failed", "wallet_declined"),
        ("wechat_pay", "sandbox_timeout", "exception", "channel_timeout"),
    ],
)
def test_wallet_payment_outcomes(
    api: Api, channel: str, payer_id: str, status: str, code: str | None
) -> None:
    shop = api.merchant()
    body = {
        "amount": "12.00",
        "currency": "CNY",
        "channel": channel,
        "payment_method": {"type": channel, "payer_id": payer_id},
        "payee_account_id": shop,
    }

    paid = api.pay(body).json()

    assert (paid["status"], paid["failure_code"]) == (status, code)
    assert paid["payer"] == {"type": channel, "payer_id": payer_id}
    assert api.account(shop)["balance"] == ("12.00" if status == "succeeded" else "0.00")


@pytest.mark.parametrize(
    ("iban", "status", "code", "balance"),
    [
        (PAYOUT_DECLINED_IBAN, "failed", "AC04", "100.00"),
        (PAYOUT_OK_IBAN, "succeeded", None, "70.00"),
    ],
)
def test_bank_payout_outcomes_and_hold_release(
    api: Api, iban: str, status: str, code: str | None, balance: str
) -> None:
    eur = api.funded_account("100.00", "EUR")
    body = {
        "amount": "30.00",
        "currency": "EUR",
        "channel": "bank_transfer",
        "payer_account_id": eur,
        "beneficiary": {"type": "bank_account", "iban": iban, "name": "Erika Mustermann"},
    }

    paid = api.pay(body).json()

    assert (paid["status"], paid["failure_code"]) == (status, code)
    assert paid["payee"]["iban"] == iban
    after = api.account(eur)
    assert (after["balance"], after["reserved"], after["available"]) == (balance, "0.00", balance)
    types = [
        e["type"] for e in api.client.get(f"/v1/payments/{paid['id']}/events").json()["events"]
    ]
    assert types[:3] == ["Requested", "Reserved", "Submitted"]
    assert types[-1] == ("Failed" if status == "failed" else "Succeeded")


def test_events_are_the_audit_history_with_json_data(api: Api) -> None:
    alice, shop = api.funded_account("10.00"), api.merchant()
    paid = api.pay(internal(alice, shop, "1.00")).json()

    response = api.client.get(f"/v1/payments/{paid['id']}/events")

    assert response.status_code == 200
    history = response.json()
    assert history["payment_id"] == paid["id"]
    events = history["events"]
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "Requested" and events[-1]["type"] == "Succeeded"
    assert all(e["actor"] == "anonymous" and e["timestamp"] for e in events)
    requested = events[0]["data"]
    assert requested["amount_minor"] == 100 and requested["currency"] == "CNY"
    assert requested["payer"] == {"type": "account", "account_id": alice}
    assert "originator_id" not in requested and "timestamp" not in requested


def test_unknown_payment_is_404_problem(client: httpx.Client) -> None:
    for path in (f"/v1/payments/{uuid.uuid4()}", f"/v1/payments/{uuid.uuid4()}/events"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "payment_not_found"


# --- idempotency -------------------------------------------------------------------------------


def test_same_key_same_body_replays_the_original(api: Api) -> None:
    alice, shop = api.funded_account("100.00"), api.merchant()
    key = new_key()

    first = api.pay(internal(alice, shop, "10.00"), key)
    again = api.pay(internal(alice, shop, "10.00"), key)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert api.account(alice)["balance"] == "90.00"


def test_same_key_different_body_is_refused(live_server: LiveServer, api: Api) -> None:
    alice, shop = api.funded_account("100.00"), api.merchant()
    key = new_key()
    first = api.pay(internal(alice, shop, "10.00"), key).json()
    position = live_server.notification_position()

    response = api.pay(internal(alice, shop, "11.00"), key)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency_key_reused"
    assert api.client.get(f"/v1/payments/{first['id']}").json() == first
    assert api.account(alice)["balance"] == "90.00"
    assert live_server.notification_position() == position


def test_missing_idempotency_key_is_400_and_records_nothing(
    live_server: LiveServer, api: Api
) -> None:
    alice, shop = api.funded_account("100.00"), api.merchant()
    position = live_server.notification_position()

    responses = [
        api.client.post("/v1/payments", json=internal(alice, shop)),
        api.client.post(f"/v1/accounts/{alice}/deposits", json={"amount": "1.00"}),
        api.client.post(
            "/v1/payments", json=internal(alice, shop), headers={"Idempotency-Key": ""}
        ),
    ]

    for response in responses:
        assert response.status_code == 400, response.text
        problem = response.json()
        assert problem["code"] == "idempotency_key_required"
        assert problem["errors"] == [
            {
                "field": "Idempotency-Key",
                "reason": "is required",
                "code": "idempotency_key_required",
            }
        ]
    assert live_server.notification_position() == position
    assert api.account(alice)["balance"] == "100.00"


@pytest.mark.parametrize("channel", ["internal", "bank_transfer"])
def test_50_concurrent_identical_requests_make_exactly_one_payment(
    live_server: LiveServer, api: Api, channel: str
) -> None:
    payer = api.funded_account("100.00", "EUR")
    payee = api.merchant("EUR")
    body: dict[str, Any] = {
        "amount": "7.00",
        "currency": "EUR",
        "channel": channel,
        "payer_account_id": payer,
    }
    if channel == "internal":
        body["payee_account_id"] = payee
    else:
        body["beneficiary"] = {"type": "bank_account", "iban": PAYOUT_OK_IBAN, "name": "E. M."}
    key, n = new_key(), 50
    start = threading.Barrier(n)

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    with httpx.Client(base_url=live_server.base_url, timeout=60, limits=limits) as shared:

        def submit(_: int) -> httpx.Response:
            start.wait()  # all 50 in flight together
            return shared.post("/v1/payments", json=body, headers={"Idempotency-Key": key})

        with ThreadPoolExecutor(n) as pool:
            responses = list(pool.map(submit, range(n)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (n - 1) + [201], statuses
    assert len({r.json()["id"] for r in responses}) == 1
    assert {r.json()["status"] for r in responses} == {"succeeded"}
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == n - 1
    after = api.account(payer)
    assert (after["balance"], after["reserved"]) == ("93.00", "0.00")
    if channel == "internal":
        assert api.account(payee)["balance"] == "7.00"
