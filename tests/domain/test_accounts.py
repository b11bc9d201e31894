"""Account rules: holds, debits, credits, closing, overdraft, unlimited system accounts."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from domain.accounts import (
    SYSTEM_KINDS,
    Account,
    AccountKind,
    clearing_account_id,
    external_account_id,
)
from domain.errors import AccountRuleViolation, IllegalTransition

T0 = datetime(2025, 1, 2, tzinfo=UTC)
ENTRY = UUID(int=99)


def open_account(kind: AccountKind = AccountKind.CUSTOMER, overdraft: int = 0) -> Account:
    return Account.open(
        account_id=uuid4(), tenant="default", owner="alice", currency="CNY", kind=kind,
        overdraft_limit_minor=overdraft, at=T0, actor="alice",
    )  # fmt: skip


def funded(amount: int, overdraft: int = 0) -> Account:
    account = open_account(overdraft=overdraft)
    account.credit(uuid4(), ENTRY, amount, at=T0, actor="alice")
    return account


def test_new_account_is_empty_and_open():
    account = open_account()
    assert (account.balance_minor, account.reserved_minor, account.available_minor) == (0, 0, 0)
    assert account.holds == {} and not account.closed and not account.is_unlimited
    opened = account.pending_events[0]
    assert opened.actor == "alice" and opened.timestamp == T0


def test_negative_overdraft_is_refused():
    with pytest.raises(AccountRuleViolation):
        open_account(overdraft=-1)


@pytest.mark.parametrize(
    ("balance", "reserved", "overdraft"),
    [(0, 0, 0), (1_000, 300, 0), (1_000, 300, 500), (0, 0, 50)],
)
def test_available_is_balance_minus_reserved_plus_overdraft(balance, reserved, overdraft):
    account = open_account(overdraft=overdraft)
    if balance:
        account.credit(uuid4(), ENTRY, balance, at=T0, actor="a")
    if reserved:
        account.reserve(uuid4(), reserved, at=T0, actor="a")
    assert account.available_minor == balance - reserved + overdraft
    assert account.has_sufficient_funds(balance - reserved + overdraft)
    assert not account.has_sufficient_funds(balance - reserved + overdraft + 1)


def test_reserve_holds_funds_and_release_returns_them():
    account = funded(1_000)
    pid = uuid4()
    account.reserve(pid, 600, at=T0, actor="a")
    assert (account.reserved_minor, account.available_minor, account.holds_for(pid)) == (
        600,
        400,
        600,
    )
    assert account.balance_minor == 1_000
    account.release(pid, at=T0, actor="a")
    assert (account.reserved_minor, account.available_minor, account.holds_for(pid)) == (
        0,
        1_000,
        0,
    )
    assert account.balance_minor == 1_000


def test_reserve_beyond_available_is_refused_and_records_nothing():
    account = funded(1_000)
    account.reserve(uuid4(), 700, at=T0, actor="a")
    events = len(account.pending_events)
    with pytest.raises(AccountRuleViolation):
        account.reserve(uuid4(), 301, at=T0, actor="a")
    assert len(account.pending_events) == events
    account.reserve(uuid4(), 300, at=T0, actor="a")  # exactly what is left is fine
    assert account.available_minor == 0


def test_same_payment_cannot_reserve_twice():
    account = funded(1_000)
    pid = uuid4()
    account.reserve(pid, 100, at=T0, actor="a")
    with pytest.raises(IllegalTransition):
        account.reserve(pid, 100, at=T0, actor="a")
    assert account.reserved_minor == 100


def test_release_without_hold_is_illegal():
    account = funded(1_000)
    with pytest.raises(IllegalTransition):
        account.release(uuid4(), at=T0, actor="a")
    pid = uuid4()
    account.reserve(pid, 100, at=T0, actor="a")
    account.release(pid, at=T0, actor="a")
    with pytest.raises(IllegalTransition):  # not twice either
        account.release(pid, at=T0, actor="a")


def test_debit_from_hold_settles_the_hold():
    account = funded(1_000)
    pid = uuid4()
    account.reserve(pid, 400, at=T0, actor="a")
    account.debit(pid, ENTRY, 400, at=T0, actor="a")
    assert (account.balance_minor, account.reserved_minor, account.available_minor) == (600, 0, 600)
    assert account.holds_for(pid) == 0
    assert account.pending_events[-1].from_hold is True


def test_debit_from_hold_must_match_the_hold():
    account = funded(1_000)
    pid = uuid4()
    account.reserve(pid, 400, at=T0, actor="a")
    with pytest.raises(IllegalTransition):
        account.debit(pid, ENTRY, 300, at=T0, actor="a")
    assert (account.balance_minor, account.reserved_minor) == (1_000, 400)


def test_debit_from_hold_is_allowed_even_if_other_holds_ate_the_rest():
    # The hold already proved the funds; a debit settling it must not be re-checked.
    account = funded(1_000)
    pid = uuid4()
    account.reserve(pid, 400, at=T0, actor="a")
    account.reserve(uuid4(), 600, at=T0, actor="a")
    assert account.available_minor == 0
    account.debit(pid, ENTRY, 400, at=T0, actor="a")
    assert (account.balance_minor, account.reserved_minor, account.available_minor) == (600, 600, 0)


def test_debit_without_hold_checks_funds_now():
    account = funded(1_000)
    account.reserve(uuid4(), 300, at=T0, actor="a")
    with pytest.raises(AccountRuleViolation):
        account.debit(uuid4(), ENTRY, 701, at=T0, actor="a")
    account.debit(uuid4(), ENTRY, 700, at=T0, actor="a")
    assert (account.balance_minor, account.available_minor) == (300, 0)
    assert account.pending_events[-1].from_hold is False


def test_overdraft_lets_balance_go_negative_down_to_the_limit():
    account = funded(100, overdraft=500)
    assert account.available_minor == 600
    account.debit(uuid4(), ENTRY, 600, at=T0, actor="a")
    assert (account.balance_minor, account.available_minor) == (-500, 0)
    with pytest.raises(AccountRuleViolation):
        account.debit(uuid4(), ENTRY, 1, at=T0, actor="a")
    with pytest.raises(AccountRuleViolation):
        account.reserve(uuid4(), 1, at=T0, actor="a")


def test_credit_is_never_refused_even_on_a_closed_account():
    account = open_account()
    account.close(at=T0, actor="a")
    account.credit(uuid4(), ENTRY, 250, at=T0, actor="a")
    assert account.balance_minor == 250


@pytest.mark.parametrize("kind", sorted(SYSTEM_KINDS))
def test_system_accounts_are_unlimited(kind):
    account = open_account(kind=kind, overdraft=0)
    assert account.is_unlimited and account.available_minor is None
    assert account.overdraft_limit_minor is None
    assert account.has_sufficient_funds(10**15)
    account.reserve(uuid4(), 10**12, at=T0, actor="system")
    account.debit(uuid4(), ENTRY, 10**12, at=T0, actor="system")
    assert account.balance_minor == -(10**12)


@pytest.mark.parametrize("kind", sorted(SYSTEM_KINDS))
def test_system_accounts_cannot_close(kind):
    with pytest.raises(AccountRuleViolation):
        open_account(kind=kind).close(at=T0, actor="a")


@pytest.mark.parametrize("kind", [AccountKind.CUSTOMER, AccountKind.MERCHANT, AccountKind.FUNDING])
def test_customer_like_accounts_are_limited(kind):
    account = open_account(kind=kind, overdraft=0)
    assert not account.is_unlimited
    with pytest.raises(AccountRuleViolation):
        account.debit(uuid4(), ENTRY, 1, at=T0, actor="a")


def test_close_requires_zero_balance_and_no_holds():
    account = funded(100)
    with pytest.raises(AccountRuleViolation):
        account.close(at=T0, actor="a")
    account.debit(uuid4(), ENTRY, 100, at=T0, actor="a")
    account.credit(uuid4(), ENTRY, 50, at=T0, actor="a")
    pid = uuid4()
    account.reserve(pid, 50, at=T0, actor="a")
    with pytest.raises(AccountRuleViolation):
        account.close(at=T0, actor="a")  # held funds
    account.debit(pid, ENTRY, 50, at=T0, actor="a")
    account.close(at=T0, actor="a")
    assert account.closed


def test_negative_balance_account_cannot_close():
    account = open_account(overdraft=100)
    account.debit(uuid4(), ENTRY, 100, at=T0, actor="a")
    with pytest.raises(AccountRuleViolation):
        account.close(at=T0, actor="a")


def test_closed_account_refuses_reserve_debit_and_second_close():
    account = open_account(overdraft=1_000)
    account.close(at=T0, actor="a")
    with pytest.raises(AccountRuleViolation):
        account.reserve(uuid4(), 1, at=T0, actor="a")
    with pytest.raises(AccountRuleViolation):
        account.debit(uuid4(), ENTRY, 1, at=T0, actor="a")
    with pytest.raises(AccountRuleViolation):
        account.close(at=T0, actor="a")


def test_several_holds_settle_and_release_independently():
    account = funded(300)
    a, b = uuid4(), uuid4()
    account.reserve(a, 100, at=T0, actor="a")
    account.reserve(b, 200, at=T0, actor="a")
    account.release(a, at=T0, actor="a")
    account.debit(b, ENTRY, 200, at=T0, actor="a")
    assert (account.balance_minor, account.reserved_minor, account.holds) == (100, 0, {})


def test_system_account_ids_are_deterministic_and_distinct():
    assert clearing_account_id("default", "card", "CNY") == clearing_account_id(
        "default", "card", "CNY"
    )
    ids = {
        clearing_account_id("default", "card", "CNY"),
        clearing_account_id("default", "bank_transfer", "CNY"),
        clearing_account_id("default", "card", "USD"),
        clearing_account_id("acme", "card", "CNY"),
        external_account_id("default", "CNY"),
        external_account_id("default", "USD"),
    }
    assert len(ids) == 6


def test_every_account_event_has_actor_and_timestamp():
    account = funded(1_000)
    pid = uuid4()
    account.reserve(pid, 10, at=T0, actor="bob")
    account.debit(pid, ENTRY, 10, at=T0, actor="bob")
    for event in account.pending_events:
        assert event.actor and event.timestamp == T0
