"""Card numbers where free text goes are refused (422 ``pan_in_free_text``), never stored: the
description, metadata keys and values, idempotency keys, wallet payer ids, beneficiary names and
account owners are stored as given, so a card number there would reach the events and views."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from application.commands import BankBeneficiary, OpenAccount, WalletMethod
from domain.cards import PAN_IN_FREE_TEXT, contains_pan
from domain.errors import ValidationError
from tests.application.helpers import IBAN_OK, Driver, payment_command

PAN = "4242424242424242"


@pytest.fixture
def d(service) -> Driver:  # type: ignore[no-untyped-def]
    return Driver(service)


def codes(error: ValidationError) -> set[tuple[str, str]]:
    return {(e.field, e.code) for e in error.errors}


@pytest.mark.parametrize(
    "text",
    [PAN, f"order {PAN}", "card 4242 4242 4242 4242", "4242-4242-4242-4242",
     "amex 3782 822463 10005", f"ref{PAN}x", "13 digits: 4222222222222"],
)  # fmt: skip
def test_card_numbers_are_found_in_free_text(text: str) -> None:
    assert contains_pan(text)


@pytest.mark.parametrize(
    "text",
    ["order 4242424242424241", "1234567890123", "DE89370400440532013000", "4242 4242",
     "12345678901234567890", "tok_3f9c2a", "card ending 4242", ""],
)  # fmt: skip
def test_other_numbers_are_not_card_numbers(text: str) -> None:
    assert not contains_pan(text)


def test_every_free_text_field_refuses_a_card_number_and_records_nothing(d: Driver) -> None:
    alice, shop = d.open("alice"), d.open("shop", kind="merchant")
    d.deposit(alice, "10.00")
    before = d.position()
    attempts = {
        "description": payment_command("1.00", payer=alice, payee=shop, description=PAN),
        "Idempotency-Key": payment_command("1.00", payer=alice, payee=shop, key=f"k-{PAN}"),
    }
    for field, cmd in attempts.items():
        with pytest.raises(ValidationError) as e:
            d.submit(cmd)
        assert (field, PAN_IN_FREE_TEXT) in codes(e.value)
        assert PAN not in str(e.value)
    base = payment_command("1.00", payer=alice, payee=shop)
    variants = {
        "metadata.note": replace(base, metadata={"note": f"card {PAN}"}),
        "metadata": replace(base, metadata={PAN: "x"}),
        "payment_method.payer_id": replace(
            base, channel="alipay", payer_account_id=None,
            payment_method=WalletMethod("alipay", PAN),
        ),
        "beneficiary.name": replace(
            base, channel="bank_transfer", payee_account_id=None,
            beneficiary=BankBeneficiary(IBAN_OK, f"Bob {PAN}"),
        ),
    }  # fmt: skip
    for field, cmd in variants.items():
        with pytest.raises(ValidationError) as e:
            d.submit(cmd)
        assert (field, PAN_IN_FREE_TEXT) in codes(e.value), (field, codes(e.value))
        assert PAN not in str(e.value)
    for owner, key in ((f"Mr {PAN}", None), ("bob", PAN)):
        with pytest.raises(ValidationError) as e:
            cmd = OpenAccount(owner=owner, currency="CNY", idempotency_key=key)
            asyncio.run(d.svc.accounts.open(cmd, d.principal))
        assert PAN_IN_FREE_TEXT in {c for _, c in codes(e.value)}
    with pytest.raises(ValidationError) as e:
        d.deposit(alice, "1.00", key=PAN)
    assert ("Idempotency-Key", PAN_IN_FREE_TEXT) in codes(e.value)
    assert d.position() == before  # nothing recorded
    # Ordinary numbers still go through.
    ok = d.pay("1.00", payer=alice, payee=shop, description="order 1234567890123", key="o-42")
    assert ok.status == "succeeded"
