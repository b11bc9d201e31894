"""Double entry: balanced journal entries and the posting rules for each kind of payment."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from domain.accounts import Account, AccountKind, clearing_account_id
from domain.errors import LedgerInvariantBroken
from domain.ledger import JournalEntry, Leg, entry_id_for, transfer
from domain.payments import Payment, PaymentKind
from domain.posting import (
    credit_account_of,
    debit_account_of,
    ledger_account_of,
    post_entry,
    settlement_entry,
)

T0 = datetime(2025, 1, 2, tzinfo=UTC)
A, B, C = UUID(int=1), UUID(int=2), UUID(int=3)


# --- journal entries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "legs",
    [
        (Leg(A, -100), Leg(B, 99)),
        (Leg(A, -100), Leg(B, 100), Leg(C, 1)),
        (Leg(A, 100), Leg(B, 100)),
    ],
)
def test_unbalanced_entry_is_refused(legs):
    with pytest.raises(LedgerInvariantBroken, match="sum"):
        JournalEntry(uuid4(), "CNY", legs)


@pytest.mark.parametrize("legs", [(Leg(A, 0), Leg(B, 0)), (Leg(A, -100), Leg(B, 100), Leg(C, 0))])
def test_entry_with_a_zero_leg_is_refused(legs):
    with pytest.raises(LedgerInvariantBroken, match="zero"):
        JournalEntry(uuid4(), "CNY", legs)


@pytest.mark.parametrize("legs", [(), (Leg(A, 100),), (Leg(A, -100),)])
def test_entry_with_fewer_than_two_legs_is_refused(legs):
    with pytest.raises(LedgerInvariantBroken, match="two legs"):
        JournalEntry(uuid4(), "CNY", legs)


def test_balanced_entries_are_accepted_and_recorded_as_plain_data():
    entry = JournalEntry(uuid4(), "CNY", (Leg(A, -300), Leg(B, 100), Leg(C, 200)))
    assert entry.to_record() == [[str(A), -300], [str(B), 100], [str(C), 200]]
    assert [leg.is_debit for leg in entry.legs] == [True, False, False]


@pytest.mark.parametrize("amount", [0, -5])
def test_transfer_refuses_non_positive_amounts(amount):
    with pytest.raises(LedgerInvariantBroken):
        transfer(uuid4(), "CNY", A, B, amount)


def test_transfer_debits_one_and_credits_the_other():
    entry = transfer(uuid4(), "USD", A, B, 250)
    assert entry.legs == (Leg(A, -250), Leg(B, 250))
    assert entry.currency == "USD"


def test_entry_ids_are_deterministic_per_payment_and_purpose():
    pid = uuid4()
    assert entry_id_for(pid) == entry_id_for(pid, "settlement")
    assert entry_id_for(pid) != entry_id_for(pid, "refund")
    assert entry_id_for(pid) != entry_id_for(uuid4())


# --- posting rules -----------------------------------------------------------------------------


def payment(channel: str, payer: dict, payee: dict, amount: int = 1_000) -> Payment:
    return Payment.request(
        payment_id=uuid4(), tenant="acme", kind=PaymentKind.PAYMENT, client="c",
        idempotency_key="k", request_fingerprint="f", amount_minor=amount, currency="CNY",
        channel=channel, payer=payer, payee=payee, description=None, metadata={}, at=T0,
        actor="c",
    )  # fmt: skip


def account_party(account_id: UUID) -> dict:
    return {"type": "account", "account_id": str(account_id)}


CARD = {"type": "card", "token": "tok_x", "brand": "visa", "last4": "4242"}
BANK = {"type": "bank_account", "iban": "DE89370400440532013000", "name": "Bob", "bic": None}


def test_account_to_account_moves_between_the_two_accounts():
    p = payment("internal", account_party(A), account_party(B))
    entry = settlement_entry(p)
    assert entry.entry_id == entry_id_for(p.id)
    assert entry.currency == "CNY"
    assert entry.legs == (Leg(A, -1_000), Leg(B, 1_000))


def test_card_payment_debits_card_clearing_and_credits_the_merchant():
    p = payment("card", CARD, account_party(B))
    card_clearing = clearing_account_id("acme", "card", "CNY")
    assert debit_account_of(p) == card_clearing
    assert settlement_entry(p).legs == (Leg(card_clearing, -1_000), Leg(B, 1_000))


@pytest.mark.parametrize("wallet", ["alipay", "wechat_pay"])
def test_wallet_payment_debits_that_wallets_clearing(wallet):
    p = payment(wallet, {"type": wallet, "payer_id": "u1"}, account_party(B))
    assert debit_account_of(p) == clearing_account_id("acme", wallet, "CNY")
    assert credit_account_of(p) == B


def test_payout_debits_the_payer_and_credits_bank_clearing():
    p = payment("bank_transfer", account_party(A), BANK)
    bank_clearing = clearing_account_id("acme", "bank_transfer", "CNY")
    assert credit_account_of(p) == bank_clearing
    assert settlement_entry(p).legs == (Leg(A, -1_000), Leg(bank_clearing, 1_000))


def test_ledger_account_of_uses_the_tenant_channel_and_currency():
    assert ledger_account_of(CARD, "t1", "card", "USD") == clearing_account_id("t1", "card", "USD")
    assert ledger_account_of(account_party(C), "t1", "card", "USD") == C


def open_account(account_id: UUID, currency: str = "CNY", kind=AccountKind.CUSTOMER, od=0):
    return Account.open(
        account_id=account_id, tenant="acme", owner="o", currency=currency, kind=kind,
        overdraft_limit_minor=od, at=T0, actor="c",
    )  # fmt: skip


def test_post_entry_settles_the_payers_hold_and_credits_the_payee():
    p = payment("internal", account_party(A), account_party(B), amount=400)
    payer, payee = open_account(A), open_account(B)
    payer.credit(uuid4(), uuid4(), 1_000, at=T0, actor="c")
    payer.reserve(p.id, 400, at=T0, actor="c")
    post_entry(settlement_entry(p), {A: payer, B: payee}, p.id, at=T0, actor="c")
    assert (payer.balance_minor, payer.reserved_minor) == (600, 0)
    assert payee.balance_minor == 400
    assert payer.balance_minor + payee.balance_minor == 1_000


def test_post_entry_checks_every_currency_before_touching_anything():
    p = payment("internal", account_party(A), account_party(B), amount=400)
    payer, payee = open_account(A), open_account(B, currency="USD")
    payer.credit(uuid4(), uuid4(), 1_000, at=T0, actor="c")
    before = (len(payer.pending_events), len(payee.pending_events))
    with pytest.raises(LedgerInvariantBroken):
        post_entry(settlement_entry(p), {A: payer, B: payee}, p.id, at=T0, actor="c")
    assert (len(payer.pending_events), len(payee.pending_events)) == before
    assert payer.balance_minor == 1_000


def test_post_card_entry_drives_clearing_negative_and_keeps_the_sum_zero():
    p = payment("card", CARD, account_party(B), amount=700)
    clearing_id = clearing_account_id("acme", "card", "CNY")
    clearing = open_account(clearing_id, kind=AccountKind.CLEARING)
    merchant = open_account(B, kind=AccountKind.MERCHANT)
    post_entry(settlement_entry(p), {clearing_id: clearing, B: merchant}, p.id, at=T0, actor="c")
    assert (clearing.balance_minor, merchant.balance_minor) == (-700, 700)
