"""Time travel: payments by version and accounts by time, rebuilt from the event store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest

from application import history
from application.app import SNAPSHOT_INTERVAL
from application.commands import Principal
from application.history import account_as_of, parse_as_of, payment_as_of_version
from application.service import Payledger
from domain.accounts import Account
from domain.errors import AccountNotFound, PaymentNotFound, ValidationError
from tests.application.helpers import CARD_DECLINED, CARD_TIMEOUT, Driver
from tests.conftest import make_settings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
# What each event leaves the payment in: written out here, not taken from the domain.
STATE_AFTER = {
    "Requested": "requested",
    "Rejected": "rejected",
    "Reserved": "reserved",
    "Submitted": "submitted",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "OutcomeUnknown": "exception",
}


class ManualClock:
    """Stands still until a test moves it."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> datetime:
        self.t += timedelta(**delta)
        return self.t


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(database_url: str, clock: ManualClock) -> Iterator[Payledger]:
    with Payledger(make_settings(database_url), clock=clock) as svc:
        yield svc


@pytest.fixture
def d(service: Payledger) -> Driver:
    return Driver(service)


def field_errors(error: ValidationError) -> set[tuple[str, str]]:
    return {(e.field, e.code) for e in error.errors}


# --- payments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "final"),
    [("internal", "succeeded"), ("declined", "failed"), ("timeout", "exception")],
)
def test_payment_status_at_every_version_follows_its_history(
    service: Payledger, d: Driver, clock: ManualClock, how: str, final: str
) -> None:
    payer, payee = d.open("payer"), d.open("payee", kind="merchant")
    d.deposit(payer, "50.00")
    clock.advance(seconds=1)
    if how == "internal":
        paid = d.pay("12.00", payer=payer, payee=payee)
    else:
        number = CARD_DECLINED if how == "declined" else CARD_TIMEOUT
        paid = d.pay("12.00", channel="card", card_number=number, payee=payee)
    events = service.payment_events(paid.id)
    assert paid.state == final and len(events) == paid.version >= 2

    states = []
    for event in events:
        past = service.get_payment_as_of_version(paid.id, event.version)
        assert (past.as_of_version, past.version, past.as_of) == (
            event.version, event.version, event.timestamp,
        )  # fmt: skip
        assert past.state == STATE_AFTER[event.type]
        states.append(past.state)
    assert states[0] == "requested" and states[-1] == final
    first = service.get_payment_as_of_version(paid.id, 1)
    assert (first.status, first.completed_at, first.amount_minor) == ("processing", None, 1200)
    latest = service.get_payment_as_of_version(paid.id, paid.version)
    now = service.get_payment(paid.id)
    assert latest == replace(now, as_of_version=now.version, as_of=latest.as_of)
    assert (now.as_of_version, now.as_of) == (None, None)  # no time travel asked: unchanged


def test_payment_versions_out_of_range_are_validation_errors(service: Payledger, d: Driver) -> None:
    payer, payee = d.open("payer"), d.open("payee")
    d.deposit(payer, "5.00")
    paid = d.pay("1.00", payer=payer, payee=payee)

    for bad in (0, -1):
        with pytest.raises(ValidationError) as low:
            service.get_payment_as_of_version(paid.id, bad)
        assert field_errors(low.value) == {("as_of_version", "invalid")}
    with pytest.raises(ValidationError) as high:
        service.get_payment_as_of_version(paid.id, paid.version + 1)
    assert field_errors(high.value) == {("as_of_version", "version_not_reached")}
    assert high.value.errors[0].reason == f"payment has only {paid.version} versions"


def test_payment_time_travel_keeps_the_tenant_rule(service: Payledger, d: Driver) -> None:
    payer, payee = d.open("payer"), d.open("payee")
    d.deposit(payer, "5.00")
    paid = d.pay("1.00", payer=payer, payee=payee)
    acme = Principal(tenant="acme", client="c1")

    for payment_id, principal in ((paid.id, acme), (uuid4(), d.principal), (payer, d.principal)):
        with pytest.raises(PaymentNotFound):
            payment_as_of_version(service.app, payment_id, 1, principal)
        # Even a version the payment never reached says nothing about another tenant's id.
        with pytest.raises(PaymentNotFound):
            payment_as_of_version(service.app, payment_id, 99, principal)


# --- accounts --------------------------------------------------------------------------------


def test_account_balance_as_of_a_time_between_two_payments(
    service: Payledger, d: Driver, clock: ManualClock
) -> None:
    opened_at = clock.t
    alice, shop = d.open("alice"), d.open("shop", kind="merchant")
    funded_at = clock.advance(minutes=1)
    d.deposit(alice, "100.00")
    first_at = clock.advance(minutes=1)
    d.pay("30.00", payer=alice, payee=shop)
    second_at = clock.advance(minutes=1)
    d.pay("20.00", payer=alice, payee=shop)
    assert d.balance(alice) == 5000

    def balance_at(at: datetime) -> int:
        return service.get_account_as_of(alice, at).balance_minor

    assert balance_at(opened_at) == 0
    assert balance_at(funded_at - timedelta(microseconds=1)) == 0
    assert balance_at(funded_at) == 10000  # an event stamped exactly then is included
    assert balance_at(first_at + timedelta(seconds=30)) == 7000  # between the two payments
    assert balance_at(second_at - timedelta(seconds=1)) == 7000
    assert balance_at(second_at) == 5000
    assert balance_at(second_at + timedelta(days=365)) == 5000
    shop_between = service.get_account_as_of(shop, first_at + timedelta(seconds=30))
    assert (shop_between.balance_minor, shop_between.reserved_minor) == (3000, 0)

    between = service.get_account_as_of(alice, first_at + timedelta(seconds=30))
    current = service.get_account(alice)
    assert between.as_of == first_at + timedelta(seconds=30)
    assert between.updated_at == first_at and between.version < current.version
    assert between.as_of_version == between.version
    assert (current.as_of, current.as_of_version) == (None, None)


def test_account_as_of_text_naive_means_utc_and_offsets_convert(
    service: Payledger, d: Driver, clock: ManualClock
) -> None:
    alice = d.open("alice")
    clock.advance(hours=1)  # 10:00 UTC
    d.deposit(alice, "10.00")

    naive = service.get_account_as_of(alice, "2026-03-01T09:30:00")  # UTC: before the deposit
    assert (naive.balance_minor, naive.as_of) == (0, T0 + timedelta(minutes=30))
    assert service.get_account_as_of(alice, "2026-03-01T10:00:00Z").balance_minor == 1000
    # 17:30 in UTC+8 is 09:30 UTC; 11:00+01:00 is 10:00 UTC.
    assert service.get_account_as_of(alice, "2026-03-01T17:30:00+08:00").balance_minor == 0
    assert service.get_account_as_of(alice, "2026-03-01T11:00:00 01:00").balance_minor == 1000
    plus8 = timezone(timedelta(hours=8))
    aware = account_as_of(service.app, alice, datetime(2026, 3, 1, 18, tzinfo=plus8), d.principal)
    assert aware.balance_minor == 1000 and aware.as_of == T0 + timedelta(hours=1)


def test_account_before_it_was_opened_did_not_exist_yet(
    service: Payledger, d: Driver, clock: ManualClock
) -> None:
    alice = d.open("alice")

    with pytest.raises(AccountNotFound, match="did not exist yet"):
        service.get_account_as_of(alice, T0 - timedelta(seconds=1))
    with pytest.raises(AccountNotFound, match="did not exist yet"):
        service.get_account_as_of(alice, "2026-02-28")


def test_account_time_travel_keeps_the_tenant_rule(
    service: Payledger, d: Driver, clock: ManualClock
) -> None:
    alice = d.open("alice")
    shop = d.open("shop")
    d.deposit(alice, "5.00")
    paid = d.pay("1.00", payer=alice, payee=shop)
    acme = Principal(tenant="acme", client="c1")

    cases = ((alice, acme), (uuid4(), d.principal), (paid.id, d.principal))
    for account_id, principal in cases:
        for at in (T0 - timedelta(days=1), T0 + timedelta(days=1)):
            with pytest.raises(AccountNotFound) as e:
                account_as_of(service.app, account_id, at, principal)
            assert "did not exist yet" not in e.value.message  # says nothing about the id


def test_account_as_of_starts_from_a_snapshot_taken_by_then(
    service: Payledger, d: Driver, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SNAPSHOT_INTERVAL, Account, 3)
    alice = d.open("alice")
    times, balances = [], []
    for n in range(1, 8):
        times.append(clock.advance(minutes=1))
        d.deposit(alice, f"{n}.00")
        balances.append(d.balance(alice))
    assert service.app.snapshots is not None
    assert len(list(service.app.snapshots.get(alice))) >= 2
    start = history._latest_snapshot_by(service.app, alice, times[-1])
    assert start is not None and 1 < start.version < d.account(alice).version
    assert history._latest_snapshot_by(service.app, alice, times[0]) is None

    for n, (at, balance) in enumerate(zip(times, balances, strict=True), start=1):
        assert service.get_account_as_of(alice, at).balance_minor == balance
        just_before = service.get_account_as_of(alice, at - timedelta(seconds=1))
        assert just_before.balance_minor == balance - n * 100
        assert just_before.as_of_version == just_before.version < d.account(alice).version


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T09:00:00Z", T0),
        ("2026-03-01T09:00:00+00:00", T0),
        ("2026-03-01T17:00:00+08:00", T0),
        ("2026-03-01T17:00:00 08:00", T0),  # "+" sent unencoded in a query string
        ("2026-03-01T09:00:00", T0),  # no offset: UTC
        ("2026-03-01 09:00", T0),
        ("2026-03-01", T0 - timedelta(hours=9)),
        ("2026-03-01T09:00:00.250Z", T0 + timedelta(milliseconds=250)),
    ],
)
def test_parse_as_of_accepts_iso_8601(text: str, expected: datetime) -> None:
    parsed = parse_as_of(text)
    assert parsed == expected and parsed.tzinfo == UTC


@pytest.mark.parametrize("text", ["", "  ", "yesterday", "2026-13-01", "1700000000", "9" * 65])
def test_parse_as_of_refuses_other_text_without_echoing_it(text: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_as_of(text)
    assert field_errors(e.value) == {("as_of", "invalid_datetime")}
    assert not text.strip() or text not in e.value.message
