"""Malformed input answers 422 in the problem format and records nothing; no card number is
ever echoed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from domain.payments import payment_id_for
from tests.interfaces.conftest import Api, LiveServer, card, new_key

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "errors"}
VALID_PAN = "4242424242424242"
LUHN_BAD_PAN = "4242424242424241"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert set(problem) == PROBLEM_KEYS
    assert problem["status"] == status and problem["code"] == code
    assert problem["type"].endswith(code) and problem["title"] and problem["detail"]
    for error in problem["errors"]:
        assert set(error) == {"field", "reason", "code"}
    return problem


def field_codes(problem: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["field"], e["code"]) for e in problem["errors"]}


def _set(path: str, value: Any) -> Any:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for part in parents:
            target = target[part]
        target[last] = value

    return change


@pytest.fixture
def live_server(shared_live_server: LiveServer) -> LiveServer:
    """One server per store for this module: every test makes its own accounts."""
    return shared_live_server


MALFORMED = [
    ("unknown field", _set("tip", "1.00"), ("tip", "extra_forbidden")),
    ("amount as JSON number", _set("amount", 10.5), ("amount", "amount_must_be_string")),
    ("amount as JSON integer", _set("amount", 10), ("amount", "amount_must_be_string")),
    ("too many decimals CNY", _set("amount", "1.001"), ("amount", "too_many_decimals")),
    (
        "decimals on JPY",
        lambda b: b.update(amount="1.5", currency="JPY"),
        ("amount", "too_many_decimals"),
    ),
    ("unknown currency", _set("currency", "XYZ"), ("currency", "unknown_currency")),
    ("lowercase currency", _set("currency", "cny"), ("currency", "unknown_currency")),
    ("unknown channel", _set("channel", "paypal"), ("channel", "literal_error")),
    ("negative amount", _set("amount", "-1.00"), ("amount", "amount_not_positive")),
    ("zero amount", _set("amount", "0.00"), ("amount", "amount_not_positive")),
    ("exponent amount", _set("amount", "1e3"), ("amount", "invalid_decimal")),
    ("oversize amount", _set("amount", "1" * 40), ("amount", "string_too_long")),
    ("oversize description", _set("description", "x" * 501), ("description", "string_too_long")),
    (
        "too many metadata keys",
        _set("metadata", {f"k{i}": "v" for i in range(21)}),
        ("metadata", "too_long"),
    ),
    (
        "oversize metadata value",
        _set("metadata", {"k": "v" * 501}),
        ("metadata.k", "string_too_long"),
    ),
    (
        "payer id not a uuid",
        _set("payer_account_id", "alice"),
        ("payer_account_id", "uuid_parsing"),
    ),
    ("missing amount", lambda b: b.pop("amount"), ("amount", "missing")),
    (
        "both payees",
        _set(
            "beneficiary", {"type": "bank_account", "iban": "DE89370400440532013000", "name": "E"}
        ),
        ("payee", "payee_required"),
    ),
]
CARD_MALFORMED = [
    (
        "card failing Luhn",
        _set("payment_method.number", LUHN_BAD_PAN),
        ("payment_method.number", "card_number_luhn"),
    ),
    (
        "card with unknown field",
        _set("payment_method.pin", "0000"),
        ("payment_method.pin", "extra_forbidden"),
    ),
    (
        "card month 13",
        _set("payment_method.exp_month", 13),
        ("payment_method.exp_month", "less_than_equal"),
    ),
    (
        "card number too long",
        _set("payment_method.number", VALID_PAN + "0000"),
        ("payment_method.number", "string_too_long"),
    ),
    (
        "card number as JSON number",
        _set("payment_method.number", int(VALID_PAN)),
        ("payment_method.number", "string_type"),
    ),
    (
        "unknown method type",
        _set("payment_method.type", "paypal"),
        ("payment_method", "union_tag_invalid"),
    ),
]


@pytest.fixture
def accounts(api: Api) -> tuple[str, str]:
    return api.funded_account("100.00"), api.merchant()


def _assert_refused_and_nothing_recorded(
    live_server: LiveServer,
    api: Api,
    payer_and_payee: tuple[str, str],
    body: dict[str, Any],
    expected: tuple[str, str],
) -> dict[str, Any]:
    before = [api.account(a) for a in payer_and_payee]
    position = live_server.notification_position()
    key = new_key()

    problem = assert_problem(api.pay(body, key), 422, "validation_error")

    assert expected in field_codes(problem), problem
    assert live_server.notification_position() == position
    assert [api.account(a) for a in payer_and_payee] == before
    unknown = api.client.get(f"/v1/payments/{payment_id_for('default', 'anonymous', key)}")
    assert unknown.status_code == 404
    return problem


@pytest.mark.parametrize(
    ("change", "expected"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_payment_is_422_and_records_nothing(
    live_server: LiveServer, api: Api, accounts: tuple[str, str], change: Any, expected: Any
) -> None:
    payer, payee = accounts
    body = {
        "amount": "10.00",
        "currency": "CNY",
        "channel": "internal",
        "payer_account_id": payer,
        "payee_account_id": payee,
    }
    change(body)
    _assert_refused_and_nothing_recorded(live_server, api, accounts, body, expected)


@pytest.mark.parametrize(
    ("change", "expected"), [m[1:] for m in CARD_MALFORMED], ids=[m[0] for m in CARD_MALFORMED]
)
def test_malformed_card_payment_is_422_records_nothing_and_echoes_no_number(
    live_server: LiveServer, api: Api, accounts: tuple[str, str], change: Any, expected: Any
) -> None:
    body = {
        "amount": "10.00",
        "currency": "CNY",
        "channel": "card",
        "payment_method": card(VALID_PAN),
        "payee_account_id": accounts[1],
    }
    change(body)
    problem = _assert_refused_and_nothing_recorded(live_server, api, accounts, body, expected)
    text = str(problem)
    for pan in (VALID_PAN, LUHN_BAD_PAN, VALID_PAN[:-4], "0000"):
        assert pan not in text


def test_body_that_is_not_json_or_not_an_object(live_server: LiveServer, api: Api) -> None:
    position = live_server.notification_position()
    headers = {"Idempotency-Key": new_key(), "content-type": "application/json"}

    broken = api.client.post("/v1/payments", content=b'{"amount": "1.00",', headers=headers)
    listed = api.client.post("/v1/payments", json=["amount"], headers=headers)

    assert ("body", "json_invalid") in field_codes(assert_problem(broken, 422, "validation_error"))
    assert assert_problem(listed, 422, "validation_error")["errors"][0]["field"] == "body"
    assert live_server.notification_position() == position


def test_domain_validation_lists_every_offending_field(api: Api) -> None:
    body = {
        "amount": "1.001",
        "currency": "CNY",
        "channel": "card",
        "payment_method": card(LUHN_BAD_PAN, cvc="1"),
    }

    problem = assert_problem(api.pay(body), 422, "validation_error")

    fields = {e["field"] for e in problem["errors"]}
    assert {"amount", "payment_method.number", "payment_method.cvc", "payee"} <= fields
    for error in problem["errors"]:
        assert error["field"] in problem["detail"]
    assert LUHN_BAD_PAN not in str(problem)


def test_oversize_idempotency_key_is_422(api: Api, accounts: tuple[str, str]) -> None:
    body = {"amount": "1.00", "currency": "CNY", "channel": "internal"}
    body |= {"payer_account_id": accounts[0], "payee_account_id": accounts[1]}

    problem = assert_problem(api.pay(body, key="k" * 256), 422, "validation_error")

    assert ("Idempotency-Key", "string_too_long") in field_codes(problem)


def test_no_card_number_in_any_response_or_event(api: Api) -> None:
    shop = api.merchant()
    seen: list[str] = []
    numbers = ("4242424242424242", "4000000000000002", "4000000000000119", "5555555555554444")
    for number in numbers:
        body = {"amount": "5.00", "currency": "CNY", "channel": "card", "payee_account_id": shop}
        paid = api.pay(body | {"payment_method": card(number)})
        assert paid.status_code == 201, paid.text
        payment_id = paid.json()["id"]
        seen += [
            paid.text,
            api.client.get(f"/v1/payments/{payment_id}").text,
            api.client.get(f"/v1/payments/{payment_id}/events").text,
        ]
    everything = "\n".join(seen)
    assert "last4" in everything
    for number in numbers:
        assert number not in everything
