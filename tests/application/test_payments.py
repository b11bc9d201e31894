"""Real-time payments through the service, on SQLite and PostgreSQL: every outcome and refusal,
balances after each, the double-entry invariant after every step, idempotency, audit data."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from application.commands import MakeDeposit, OpenAccount
from domain.accounts import clearing_account_id, external_account_id
from domain.errors import AccountNotFound, IdempotencyKeyReused, ValidationError
from tests.application.helpers import (
    CARD_DECLINED,
    CARD_NO_FUNDS,
    CARD_OK,
    CARD_TIMEOUT,
    IBAN_AC01,
    IBAN_AC04,
    IBAN_OK,
    IBAN_TIMEOUT,
    Driver,
    fresh_key,
    payment_command,
    stored_notifications,
)

CARD_CLEARING = clearing_account_id("default", "card", "CNY")
BANK_CLEARING = clearing_account_id("default", "bank_transfer", "CNY")
EXTERNAL_CNY = external_account_id("default", "CNY")


@pytest.fixture
def d(service) -> Driver:
    return Driver(service)


@pytest.fixture
def alice(d: Driver) -> UUID:
    account = d.open("alice")
    d.deposit(account, "100.00")
    return account


@pytest.fixture
def shop(d: Driver) -> UUID:
    return d.open("shop", kind="merchant")


def assert_refused(d: Driver, result, code: str, *, untouched: dict[UUID, int]) -> None:
    assert result.status == "failed"
    assert result.state == "rejected"
    assert result.failure_code == code
    assert result.failure_message
    assert result.channel_reference is None
    for account_id, balance in untouched.items():
        assert d.balance(account_id) == balance
        assert d.reserved(account_id) == 0
    d.check_books()


# --- success paths -----------------------------------------------------------------------------


def test_deposit_credits_the_account_from_external_funding(d):
    account = d.open("bob")
    result = d.deposit(account, "250.75")
    assert result.payment.status == "succeeded"
    assert result.payment.kind == "deposit"
    assert result.account.balance_minor == 25_075
    assert d.balance(EXTERNAL_CNY) == -25_075
    assert d.account(EXTERNAL_CNY).kind == "external"
    assert d.account(EXTERNAL_CNY).available_minor is None
    d.deposit(account, "0.25")
    assert d.balance(account) == 25_100
    assert d.check_books() == {account: 25_100, EXTERNAL_CNY: -25_100}


def test_deposit_replay_and_refusals(d, service):
    account = d.open("bob")
    first = d.deposit(account, "10.00", key="dep-x")
    before = d.position()
    again = d.deposit(account, "10.00", key="dep-x")
    assert again.payment.replayed and again.payment.id == first.payment.id
    assert d.position() == before and d.balance(account) == 1_000
    with pytest.raises(IdempotencyKeyReused):
        d.deposit(account, "11.00", key="dep-x")
    with pytest.raises(ValidationError):
        asyncio.run(service.accounts.deposit(MakeDeposit(account, "1", "k", "USD"), d.principal))
    with pytest.raises(ValidationError):
        d.deposit(account, "1.001")
    with pytest.raises(AccountNotFound):
        d.deposit(uuid4(), "1.00")
    assert d.position() == before
    d.check_books()


def test_internal_payment_settles_in_one_step(d, alice, shop):
    result = d.pay("40.50", payer=alice, payee=shop)
    assert (result.status, result.state, result.failure_code) == ("succeeded", "succeeded", None)
    assert result.amount_minor == 4_050 and result.channel == "internal"
    assert result.completed_at is not None and result.latency_ms is not None
    assert result.channel_reference
    assert (d.balance(alice), d.reserved(alice), d.balance(shop)) == (5_950, 0, 4_050)
    d.check_books()


def test_overdraft_lets_an_internal_payment_go_below_zero(d, shop):
    od = d.open("od", overdraft="50.00")
    d.deposit(od, "10.00")
    assert d.pay("60.00", payer=od, payee=shop).status == "succeeded"
    assert d.balance(od) == -5_000 and d.account(od).available_minor == 0
    refused = d.pay("0.01", payer=od, payee=shop)
    assert_refused(d, refused, "insufficient_funds", untouched={od: -5_000, shop: 6_000})


def test_card_payment_debits_card_clearing_and_credits_the_merchant(d, shop):
    result = d.pay("12.34", channel="card", card_number=CARD_OK, payee=shop)
    assert result.status == "succeeded"
    assert result.channel_reference and result.channel_reference.startswith("card_")
    assert result.payer["last4"] == "4242" and result.payer["brand"]
    assert (d.balance(shop), d.balance(CARD_CLEARING)) == (1_234, -1_234)
    assert d.account(CARD_CLEARING).kind == "clearing"
    d.check_books()


@pytest.mark.parametrize("wallet", ["alipay", "wechat_pay"])
def test_wallet_payment_succeeds(d, shop, wallet):
    result = d.pay("8.00", channel=wallet, wallet_payer="user_1", payee=shop)
    assert result.status == "succeeded"
    assert d.balance(shop) == 800
    assert d.balance(clearing_account_id("default", wallet, "CNY")) == -800
    d.check_books()


def test_payout_debits_the_payer_and_credits_bank_clearing(d, alice):
    result = d.pay("30.00", channel="bank_transfer", payer=alice, iban=IBAN_OK)
    assert result.status == "succeeded"
    assert result.payee["iban"] == IBAN_OK
    assert (d.balance(alice), d.reserved(alice)) == (7_000, 0)
    assert d.balance(BANK_CLEARING) == 3_000
    d.check_books()


# --- refusals by the rules: recorded, answered "failed", nothing moves --------------------------


def test_insufficient_funds(d, alice, shop):
    result = d.pay("100.01", payer=alice, payee=shop)
    assert_refused(d, result, "insufficient_funds", untouched={alice: 10_000, shop: 0})
    assert "available" in result.failure_message
    # Exactly everything is fine.
    assert d.pay("100.00", payer=alice, payee=shop).status == "succeeded"
    assert (d.balance(alice), d.balance(shop)) == (0, 10_000)


def test_insufficient_funds_for_a_payout_holds_nothing(d, alice):
    result = d.pay("100.01", channel="bank_transfer", payer=alice, iban=IBAN_OK)
    assert_refused(d, result, "insufficient_funds", untouched={alice: 10_000})


@pytest.mark.parametrize("role", ["payer", "payee"])
def test_account_not_found(d, alice, role):
    ghost = uuid4()
    parties = (
        {"payer": alice, "payee": ghost} if role == "payee" else {"payer": ghost, "payee": alice}
    )
    result = d.pay("1.00", **parties)
    assert_refused(d, result, "account_not_found", untouched={alice: 10_000})
    assert role in result.failure_message


def test_account_closed(d, alice):
    gone = d.open("gone")
    d.close(gone)
    result = d.pay("1.00", payer=alice, payee=gone)
    assert_refused(d, result, "account_closed", untouched={alice: 10_000, gone: 0})
    result = d.pay("1.00", payer=gone, payee=alice)
    assert_refused(d, result, "account_closed", untouched={alice: 10_000})


def test_currency_mismatch(d, alice):
    dollars = d.open("usd", currency="USD")
    result = d.pay("1.00", payer=alice, payee=dollars)
    assert_refused(d, result, "currency_mismatch", untouched={alice: 10_000, dollars: 0})
    result = d.pay("1.00", currency="USD", payer=alice, payee=dollars)
    assert_refused(d, result, "currency_mismatch", untouched={alice: 10_000, dollars: 0})


def test_same_account(d, alice):
    result = d.pay("1.00", payer=alice, payee=alice)
    assert_refused(d, result, "same_account", untouched={alice: 10_000})


def test_system_accounts_cannot_be_paid_or_pay(d, alice):
    result = d.pay("1.00", payer=alice, payee=EXTERNAL_CNY)
    assert_refused(d, result, "account_not_payable", untouched={alice: 10_000})
    result = d.pay("1.00", payer=EXTERNAL_CNY, payee=alice)
    assert_refused(d, result, "account_not_payable", untouched={alice: 10_000})


def test_another_tenants_account_is_not_found(service, d, alice):
    from application.commands import Principal

    other = Driver(service, Principal(tenant="acme", client="c1"))
    theirs = other.open("mallory")
    result = d.pay("1.00", payer=alice, payee=theirs)
    assert_refused(d, result, "account_not_found", untouched={alice: 10_000})
    result = other.pay("1.00", payer=theirs, payee=alice)
    assert result.failure_code == "account_not_found"


# --- channel outcomes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "code"), [(CARD_DECLINED, "card_declined"), (CARD_NO_FUNDS, "insufficient_funds")]
)
def test_card_declined(d, shop, number, code):
    result = d.pay("5.00", channel="card", card_number=number, payee=shop)
    assert (result.status, result.state, result.failure_code) == ("failed", "failed", code)
    assert result.channel_reference  # the network answered
    assert d.balance(shop) == 0
    assert d.check_books().get(CARD_CLEARING, 0) == 0


def test_card_timeout_is_an_exception_not_a_failure(d, shop):
    result = d.pay("5.00", channel="card", card_number=CARD_TIMEOUT, payee=shop)
    assert (result.status, result.state, result.failure_code) == (
        "exception", "exception", "channel_timeout",
    )  # fmt: skip
    assert d.balance(shop) == 0
    d.check_books()


@pytest.mark.parametrize("wallet", ["alipay", "wechat_pay"])
def test_wallet_declined_and_timeout(d, shop, wallet):
    declined = d.pay("3.00", channel=wallet, wallet_payer="sandbox_declined", payee=shop)
    assert (declined.status, declined.failure_code) == ("failed", "wallet_declined")
    timeout = d.pay("3.00", channel=wallet, wallet_payer="sandbox_timeout", payee=shop)
    assert (timeout.status, timeout.failure_code) == ("exception", "channel_timeout")
    assert d.balance(shop) == 0
    d.check_books()


@pytest.mark.parametrize(("iban", "code"), [(IBAN_AC04, "AC04"), (IBAN_AC01, "AC01")])
def test_payout_rejected_by_the_bank_releases_the_hold(d, alice, iban, code):
    result = d.pay("30.00", channel="bank_transfer", payer=alice, iban=iban)
    assert (result.status, result.state, result.failure_code) == ("failed", "failed", code)
    account = d.account(alice)
    assert (account.balance_minor, account.reserved_minor, account.available_minor) == (
        10_000, 0, 10_000,
    )  # fmt: skip
    assert d.check_books().get(BANK_CLEARING, 0) == 0


def test_payout_timeout_keeps_the_payers_hold(d, alice, shop):
    result = d.pay("30.00", channel="bank_transfer", payer=alice, iban=IBAN_TIMEOUT)
    assert (result.status, result.failure_code) == ("exception", "channel_timeout")
    account = d.account(alice)
    # Outcome unknown: the money may have left, so it stays held, not posted, not released.
    assert (account.balance_minor, account.reserved_minor, account.available_minor) == (
        10_000, 3_000, 7_000,
    )  # fmt: skip
    payment = d.svc.load_payment(result.id)
    assert payment.hold_account_id == str(alice)
    # The held funds cannot be spent twice.
    refused = d.pay("70.01", payer=alice, payee=shop)
    assert refused.failure_code == "insufficient_funds"
    assert d.pay("70.00", payer=alice, payee=shop).status == "succeeded"
    assert (d.balance(alice), d.reserved(alice), d.account(alice).available_minor) == (
        3_000,
        3_000,
        0,
    )
    d.check_books()


def test_channel_error_after_sending_is_an_exception(d, shop):
    class Exploding:
        name = "card"

        async def execute(self, request):
            raise ConnectionResetError("peer went away")

        async def status(self, payment_id):
            return None

    d.svc.channels["card"] = Exploding()
    result = d.pay("5.00", channel="card", card_number=CARD_OK, payee=shop)
    assert (result.status, result.failure_code) == ("exception", "channel_error")
    assert d.balance(shop) == 0


def test_a_journey_keeps_the_books_balanced_after_every_step(d):
    payer, merchant = d.open("p", overdraft="20.00"), d.open("m", kind="merchant")
    steps = [
        lambda: d.deposit(payer, "50.00"),
        lambda: d.pay("30.00", payer=payer, payee=merchant),
        lambda: d.pay("40.00", payer=payer, payee=merchant),  # 20.00 of it on overdraft
        lambda: d.pay("9.99", channel="card", card_number=CARD_OK, payee=merchant),
        lambda: d.pay("1.00", channel="card", card_number=CARD_DECLINED, payee=merchant),
        lambda: d.pay("1.00", channel="bank_transfer", payer=merchant, iban=IBAN_AC04),
        lambda: d.pay("10.00", channel="bank_transfer", payer=merchant, iban=IBAN_OK),
        lambda: d.pay("1.00", channel="bank_transfer", payer=merchant, iban=IBAN_TIMEOUT),
        lambda: d.pay("100.00", payer=payer, payee=merchant),  # refused
    ]
    statuses = []
    for step in steps:
        result = step()
        statuses.append(getattr(result, "payment", result).status)
        d.check_books()
    assert statuses == ["succeeded"] * 4 + ["failed", "failed", "succeeded", "exception", "failed"]
    assert d.balance(payer) == 5_000 - 3_000 - 4_000
    assert d.balance(merchant) == 3_000 + 4_000 + 999 - 1_000
    assert d.reserved(merchant) == 100


# --- idempotency -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["internal", "card", "payout", "refused", "declined", "timeout"])
def test_same_key_same_body_replays_without_new_events(d, alice, shop, kind):
    args = {
        "internal": {"payer": alice, "payee": shop},
        "card": {"channel": "card", "card_number": CARD_OK, "payee": shop},
        "payout": {"channel": "bank_transfer", "payer": alice, "iban": IBAN_OK},
        "refused": {"payer": alice, "payee": uuid4()},
        "declined": {"channel": "card", "card_number": CARD_DECLINED, "payee": shop},
        "timeout": {"channel": "bank_transfer", "payer": alice, "iban": IBAN_TIMEOUT},
    }[kind]
    key = fresh_key("idem")
    first = d.pay("7.00", key=key, **args)
    assert not first.replayed
    balances = (d.balance(alice), d.reserved(alice), d.balance(shop))
    before = d.position()
    for _ in range(3):
        again = d.pay("7.00", key=key, **args)
        assert again.replayed
        assert (again.id, again.status, again.state, again.failure_code, again.version) == (
            first.id, first.status, first.state, first.failure_code, first.version,
        )  # fmt: skip
    assert d.position() == before
    assert (d.balance(alice), d.reserved(alice), d.balance(shop)) == balances
    d.check_books()


@pytest.mark.parametrize(
    "change",
    [
        {"amount": "7.01"},
        {"description": "different"},
        {"payee": "other"},
        {"currency": "USD"},
        {"channel": "bank_transfer", "iban": IBAN_OK, "payee": None},
    ],
    ids=["amount", "description", "payee", "currency", "channel"],
)
def test_same_key_different_body_is_refused(d, alice, shop, change):
    key = fresh_key("idem")
    first = d.pay("7.00", key=key, payer=alice, payee=shop)
    before = d.position()
    args = {"payer": alice, "payee": shop, **change}
    if args["payee"] == "other":
        args["payee"] = d.open("other")
        before = d.position()
    amount = args.pop("amount", "7.00")
    with pytest.raises(IdempotencyKeyReused):
        d.pay(amount, key=key, **args)
    assert d.position() == before
    assert d.svc.get_payment(first.id).status == "succeeded"
    assert (d.balance(alice), d.balance(shop)) == (9_300, 700)


def test_same_key_with_another_card_number_is_a_different_body(d, shop):
    key = fresh_key("card")
    d.pay("1.00", key=key, channel="card", card_number=CARD_OK, payee=shop)
    with pytest.raises(IdempotencyKeyReused):
        d.pay("1.00", key=key, channel="card", card_number="5555555555554444", payee=shop)


def test_keys_belong_to_a_client(service, d, alice, shop):
    from application.commands import Principal

    key = fresh_key("shared")
    mine = d.pay("1.00", key=key, payer=alice, payee=shop)
    other_client = Driver(service, Principal(tenant="default", client="someone-else"))
    theirs = other_client.pay("1.00", key=key, payer=alice, payee=shop)
    assert theirs.id != mine.id and not theirs.replayed
    assert d.balance(shop) == 200


@pytest.mark.parametrize(
    "bad",
    [
        {"amount": "1.001"},
        {"amount": "0"},
        {"amount": "-1.00"},
        {"amount": "1e3"},
        {"amount": "NaN"},
        {"currency": "ZZZ"},
        {"channel": "pigeon"},
        {"key": ""},
        {"key": "x" * 300},
        {"channel": "card", "card_number": "4242424242424241", "payer": None},  # Luhn
        {"channel": "internal", "iban": IBAN_OK, "payee": None},  # channel mismatch
        {"channel": "bank_transfer", "iban": "DE00370400440532013000", "payee": None},
        {"description": "x" * 501},
    ],
)
def test_validation_failure_records_nothing_and_frees_the_key(d, alice, shop, bad):
    args = {"payer": alice, "payee": shop, "key": fresh_key("val"), **bad}
    amount = args.pop("amount", "1.00")
    before = d.position()
    with pytest.raises(ValidationError) as info:
        d.pay(amount, **args)
    assert info.value.errors
    assert d.position() == before
    assert (d.balance(alice), d.balance(shop)) == (10_000, 0)
    if args["key"] and len(args["key"]) <= 255:  # the key was never used: it still works
        assert d.pay("1.00", key=args["key"], payer=alice, payee=shop).status == "succeeded"


def test_validation_reports_every_problem_at_once(d):
    cmd = payment_command("1.001", channel="pigeon", key="")
    with pytest.raises(ValidationError) as info:
        d.submit(cmd)
    fields = {e.field for e in info.value.errors}
    assert {"Idempotency-Key", "amount", "channel", "payer", "payee"} <= fields


def test_account_open_validation_records_nothing(service, d):
    before = d.position()
    for bad in (
        OpenAccount(owner="", currency="CNY"),
        OpenAccount(owner="x", currency="ZZZ"),
        OpenAccount(owner="x", currency="CNY", kind="wizard"),
        OpenAccount(owner="x", currency="CNY", overdraft_limit="-1"),
        OpenAccount(owner="x", currency="JPY", overdraft_limit="1.5"),
    ):
        with pytest.raises(ValidationError):
            asyncio.run(service.accounts.open(bad, d.principal))
    assert d.position() == before


# --- audit: no card numbers at rest, every event has a time and an actor -------------------------


def test_no_card_number_is_ever_stored(d, shop):
    numbers = [CARD_OK, CARD_DECLINED, CARD_TIMEOUT, CARD_NO_FUNDS, "5555555555554444"]
    ids = [d.pay("2.00", channel="card", card_number=n, payee=shop).id for n in numbers]
    d.pay("2.00", channel="card", card_number=CARD_OK, payee=shop, key="dup")
    d.pay("2.00", channel="card", card_number=CARD_OK, payee=shop, key="dup")
    notifications = list(stored_notifications(d.svc))
    assert len(notifications) > 10
    for n in notifications:
        for number in numbers:
            assert number.encode() not in n.state
            assert number[:6].encode() + number[-4:].encode() not in n.state
        event = d.svc.app.mapper.to_domain_event(n)
        assert not any(number in repr(vars(event)) for number in numbers)
    for payment_id in ids:
        history = d.svc.payment_events(payment_id)
        payer = history[0].data["payer"]
        assert set(payer) >= {"brand", "last4", "token"} and "number" not in payer
        assert "cvc" not in repr(history)


def test_every_stored_event_has_a_timestamp_and_an_actor(d, alice, shop):
    d.pay("1.00", payer=alice, payee=shop)
    d.pay("1.00", channel="card", card_number=CARD_TIMEOUT, payee=shop)
    d.pay("1.00", channel="bank_transfer", payer=alice, iban=IBAN_AC04)
    d.pay("999.00", payer=alice, payee=shop)
    count = 0
    for n in stored_notifications(d.svc):
        event = d.svc.app.mapper.to_domain_event(n)
        assert event.timestamp.tzinfo is not None, event
        assert isinstance(event.actor, str) and event.actor, event
        count += 1
    assert count >= 15


def test_payment_history_reads_like_the_state_machine(d, alice):
    result = d.pay("1.00", channel="bank_transfer", payer=alice, iban=IBAN_AC04)
    history = d.svc.payment_events(result.id)
    assert [e.type for e in history] == ["Requested", "Reserved", "Submitted", "Failed"]
    assert [e.version for e in history] == [1, 2, 3, 4]
    assert all(e.actor == "anonymous" for e in history)
    assert history[-1].data["code"] == "AC04"
    times = [e.timestamp for e in history]
    assert times == sorted(times)
