"""OpenAPI examples: the payment body once per channel (with the sandbox triggers), and the
answers."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

_PAYEE = "6f1c1d3e-8d6b-4a8e-9a55-3f0a1c2b7e10"
_PAYER = "2a4f6c8e-1b3d-4f5a-8c7e-9d0b1a2c3e4f"


def _example(summary: str, description: str, value: dict[str, Any]) -> Example:
    return Example(summary=summary, description=description, value=value)


PAYMENT_EXAMPLES: dict[str, Example] = {
    "internal": _example(
        "Book transfer between two ledger accounts",
        "Settles in one atomic save; `insufficient_funds` when the payer cannot cover it.",
        {
            "amount": "40.50",
            "currency": "CNY",
            "channel": "internal",
            "payer_account_id": _PAYER,
            "payee_account_id": _PAYEE,
            "description": "invoice 17",
        },
    ),
    "card": _example(
        "Card payment to a merchant account",
        "Sandbox: 4242424242424242 succeeds, 4000000000000002 is declined (`card_declined`), "
        "4000000000000119 times out after sending (`exception`).",
        {
            "amount": "99.00",
            "currency": "CNY",
            "channel": "card",
            "payment_method": {
                "type": "card",
                "number": "4242424242424242",
                "exp_month": 12,
                "exp_year": 2030,
                "cvc": "123",
            },
            "payee_account_id": _PAYEE,
            "metadata": {"order_id": "1001"},
        },
    ),
    "wallet": _example(
        "Alipay or WeChat Pay payment",
        "Sandbox: payer id `sandbox_declined` is declined, `sandbox_timeout` times out.",
        {
            "amount": "12.00",
            "currency": "CNY",
            "channel": "alipay",
            "payment_method": {"type": "alipay", "payer_id": "2088102146225135"},
            "payee_account_id": _PAYEE,
        },
    ),
    "payout": _example(
        "Bank payout to an external beneficiary",
        "Sandbox: an IBAN ending in 0004 fails with AC04 (closed account), 0001 with AC01.",
        {
            "amount": "250.00",
            "currency": "EUR",
            "channel": "bank_transfer",
            "payer_account_id": _PAYER,
            "beneficiary": {
                "type": "bank_account",
                "iban": "DE89370400440532013000",
                "name": "Erika Mustermann",
            },
        },
    ),
}

ACCOUNT_EXAMPLE: dict[str, Any] = {
    "id": "6f1c1d3e-8d6b-4a8e-9a55-3f0a1c2b7e10",
    "owner": "alice",
    "currency": "CNY",
    "kind": "customer",
    "balance": "1000.00",
    "reserved": "0.00",
    "available": "1000.00",
    "overdraft_limit": "0.00",
    "closed": False,
    "created_at": "2025-01-01T12:00:00.000000+00:00",
}
PAYMENT_OUT_EXAMPLE: dict[str, Any] = {
    "id": "0b7e4b44-3b0a-5d8e-9a1f-2f5b8f7c9d01",
    "status": "succeeded",
    "state": "succeeded",
    "kind": "payment",
    "amount": "40.50",
    "currency": "CNY",
    "channel": "card",
    "channel_reference": "card_3f2a9c1b0d4e5f6a7b8c",
    "payer": {
        "type": "card",
        "token": "tok_9c1b0d4e5f6a7b8c9d0e1f2a",
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2030,
        "fingerprint": "5d41402abc4b2a76b9719d91",
    },
    "payee": {"type": "account", "account_id": "6f1c1d3e-8d6b-4a8e-9a55-3f0a1c2b7e10"},
    "description": "order 1001",
    "metadata": {"order_id": "1001"},
    "failure_code": None,
    "failure_message": None,
    "created_at": "2025-01-01T12:00:00.000000+00:00",
    "completed_at": "2025-01-01T12:00:00.121000+00:00",
    "latency_ms": 121,
    "batch_id": None,
}
