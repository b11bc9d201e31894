"""Card numbers where free text goes are refused (422 ``pan_in_free_text``), never stored: the
description, metadata keys and values, idempotency keys, wallet payer ids, beneficiary names and
account owners are stored as given, so a card number there would reach the events and views."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from application.commands import BankBeneficiary, OpenAccount, WalletMethod
from domain.cards import PAN_IN_FREE_TEXT, contains_pan, redact_pan
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
     "12345678901234567890", "tok_3f9c2a", "card ending 4242", "",
     # uuid4() keys whose digits across the dashes make a Luhn-valid 4-4-4-4 run
     "00ae8318-7624-4361-8058-b56f2b3502d6", "order 9B3EF20F-0372-4033-8070-1421F46D27C6"],
)  # fmt: skip
def test_other_numbers_are_not_card_numbers(text: str) -> None:
    assert not contains_pan(text)


def test_a_uuid_spares_only_its_own_digits() -> None:
    uuid = "00ae8318-7624-4361-8058-b56f2b3502d6"
    assert contains_pan("8318-7624-4361-8058")  # the same digits, not inside a UUID
    assert contains_pan(f"{uuid} {PAN}") and contains_pan(f"{PAN}/{uuid}")
    assert redact_pan(f"key {uuid} card {PAN}.") == f"key {uuid} card [REDACTED-PAN]."


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
    # A uuid4() key whose digits look like a card number across its dashes, and an Alipay user
    # id (2088...) that happens to be Luhn-valid, are what they are.
    uuid_key = "00ae8318-7624-4361-8058-b56f2b3502d6"
    assert d.pay("1.00", payer=alice, payee=shop, key=uuid_key).status == "succeeded"
    alipay = replace(
        base, channel="alipay", payer_account_id=None, idempotency_key="alipay-2088",
        payment_method=WalletMethod("alipay", "2088102146225136"),
    )  # fmt: skip
    assert d.submit(alipay).status == "succeeded"
    wechat = replace(alipay, channel="wechat_pay", idempotency_key="wechat-2088",
                     payment_method=WalletMethod("wechat_pay", "2088102146225136"))  # fmt: skip
    with pytest.raises(ValidationError) as e:  # not an Alipay id there
        d.submit(wechat)
    assert ("payment_method.payer_id", PAN_IN_FREE_TEXT) in codes(e.value)
