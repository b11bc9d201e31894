"""The exception workflow on both stores: unknown outcomes are asked about and resolved once, with
their postings or their hold released; operators resolve by hand; the deadline flags.

The service runs on a clock the tests move forward (exceptions are first asked about once older
than the channel time-out plus the grace), and the resolver reads its candidates from the real
payments view, caught up before each pass.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from application.batches.files import parse_batch_file
from application.batches.handlers import SubmitBatch
from application.channels.base import ChannelOutcome, ChannelResult, ChargeRequest
from application.commands import ANONYMOUS, MakeDeposit, OpenAccount, Principal
from application.drafts import validate_payment
from application.exceptions import NOT_RECEIVED, Resolution, ResolverPass
from application.service import Payledger
from application.settings import Settings
from domain.accounts import Account, clearing_account_id
from domain.errors import PaymentNotFound, ValidationError
from domain.payments import NotAnException, batch_item_payment_id
from projections.db import ViewDB
from projections.exception_queries import ExceptionQueries
from projections.payments import PaymentsProjection
from projections.read_side import ReadSide
from projections.replay import verify
from tests.application.helpers import (
    CARD_TIMEOUT,
    IBAN_TIMEOUT,
    Driver,
    fresh_key,
    payment_command,
)
from tests.conftest import make_settings
from tests.interfaces.batch_helpers import iban

LATER = timedelta(minutes=1)  # past the channel time-out plus the grace (10 s + 5 s)
RESOLVER = "system:exception-resolver"


class MovableClock:
    """The system clock, moved forward on demand."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.ahead

    def advance(self, by: timedelta = LATER) -> None:
        self.ahead += by


@dataclass
class Stub:
    """A channel whose charges time out after sending, and whose status query answers
    ``answer`` (or raises it), or ``answers[payment_id]`` when given."""

    name: str
    answer: ChannelResult | Exception | None = None
    answers: dict[UUID, ChannelResult | None] = field(default_factory=dict)
    asked: list[UUID] = field(default_factory=list)

    async def execute(self, request: ChargeRequest) -> ChannelResult:
        return ChannelResult(ChannelOutcome.UNKNOWN, None, "channel_timeout", "no answer")

    async def status(self, payment_id: UUID) -> ChannelResult | None:
        self.asked.append(payment_id)
        if payment_id in self.answers:
            return self.answers[payment_id]
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@dataclass
class World:
    svc: Payledger
    clock: MovableClock
    read: ReadSide
    d: Driver

    def run_once(self, tenant: str | None = None) -> ResolverPass:
        self.read.catch_up()
        return asyncio.run(self.svc.exceptions.run_once(tenant=tenant))

    def resolve(self, payment_id: UUID) -> Resolution:
        return asyncio.run(self.svc.exceptions.resolve_from_channel(payment_id))

    def manual(self, payment_id: UUID, outcome: str, **kwargs: Any) -> Any:
        values = {"reason": "the bank confirmed it", "actor": "key:operator-1"} | kwargs
        tenant = values.pop("tenant", "default")
        return asyncio.run(
            self.svc.exceptions.resolve_manually(tenant, payment_id, outcome, **values)
        )

    def events(self, payment_id: UUID) -> list[str]:
        return [e.type for e in self.svc.payment_events(payment_id, ANONYMOUS)]

    def event(self, payment_id: UUID, kind: str) -> Any:
        found = [e for e in self.svc.payment_events(payment_id, ANONYMOUS) if e.type == kind]
        assert len(found) == 1, [e.type for e in self.svc.payment_events(payment_id, ANONYMOUS)]
        return found[0]

    def stub(self, channel: str, answer: ChannelResult | Exception | None = None) -> Stub:
        stub = Stub(channel, answer)
        self.svc.channels[channel] = stub
        return stub

    def credits(self, account_id: UUID) -> int:
        events = self.svc.app.repository.event_store.get(account_id)
        return sum(1 for e in events if isinstance(e, Account.Credited))


def attach_view(svc: Payledger) -> ReadSide:
    read = ReadSide(svc.app, svc.settings.store)
    svc.exceptions.view = ExceptionQueries(read.model.db, lambda: read.model.position("payments"))
    return read


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    with _world(make_settings(database_url)) as made:
        yield made


@contextmanager
def _world(settings: Settings) -> Iterator[World]:
    clock = MovableClock()
    with Payledger(settings, clock=clock) as svc:
        read = attach_view(svc)
        try:
            yield World(svc, clock, read, Driver(svc))
        finally:
            read.close()


SUCCEEDED = ChannelResult(ChannelOutcome.SUCCEEDED, "bank_0042")
DECLINED = ChannelResult(ChannelOutcome.FAILED, "bank_0043", "AC04", "Closed account number.")


# --- resolved from the channel's status ------------------------------------------------------


def test_a_card_charge_that_timed_out_after_the_charge_is_resolved_succeeded_once(
    world: World,
) -> None:
    d = world.d
    shop = d.open("shop", "CNY", "merchant")
    paid = d.pay("40.50", channel="card", card_number=CARD_TIMEOUT, payee=shop)
    assert (paid.status, paid.failure_code) == ("exception", "channel_timeout")

    young = world.run_once()  # not asked yet: the channel gets the time-out plus the grace
    assert (young.asked, young.open, young.succeeded) == (0, 1, 0)
    assert young.next_due is not None

    world.clock.advance()
    done = world.run_once()
    assert done.counts() == {"succeeded": 1, "failed": 0, "open": 0, "flagged": 0, "asked": 1}
    payment = world.svc.get_payment(paid.id)
    assert payment.status == "succeeded" and payment.channel_reference.startswith("card_")
    # No longer a failure: the time-out's code stays in the history only.
    assert (payment.failure_code, payment.failure_message) == (None, None)
    world.read.catch_up()
    assert world.read.model.db.query(
        "SELECT status, failure_code, failure_message FROM view_payments WHERE payment_id = ?",
        (str(paid.id),),
    ) == [("succeeded", None, None)]
    assert world.events(paid.id)[-3:] == ["OutcomeUnknown", "ExceptionResolved", "Succeeded"]
    resolved = world.event(paid.id, "ExceptionResolved")
    assert resolved.actor == RESOLVER
    assert (resolved.data["how"], resolved.data["outcome"]) == ("channel_status", "succeeded")
    assert world.event(paid.id, "Succeeded").data["resolution"] == "channel_status"
    assert d.balance(shop) == 4050
    assert d.balance(clearing_account_id("default", "card", "CNY")) == -4050

    # Asked again (the view, a second resolver): nothing more is posted.
    assert world.resolve(paid.id).result == "final"
    assert world.run_once().counts() == ResolverPass().counts()
    assert world.credits(shop) == 1 and d.balance(shop) == 4050
    assert world.events(paid.id).count("Succeeded") == 1
    d.check_books()


def test_a_payout_resolved_succeeded_consumes_its_hold(world: World) -> None:
    d = world.d
    payer = d.open("payer", "EUR")
    d.deposit(payer, "100.00")
    paid = d.pay("30.00", channel="bank_transfer", currency="EUR", payer=payer, iban=IBAN_TIMEOUT)
    assert paid.status == "exception"
    assert (d.balance(payer), d.reserved(payer)) == (10_000, 3_000)  # held until resolved

    world.clock.advance()
    assert world.run_once().succeeded == 1
    assert (d.balance(payer), d.reserved(payer)) == (7_000, 0)
    assert d.balance(clearing_account_id("default", "bank_transfer", "EUR")) == 3_000
    d.check_books()


def test_a_charge_declined_after_the_time_out_is_resolved_failed_and_its_hold_released(
    world: World,
) -> None:
    d = world.d
    payer = d.open("payer", "EUR")
    d.deposit(payer, "100.00")
    stub = world.stub("bank_transfer", DECLINED)
    paid = d.pay("30.00", channel="bank_transfer", currency="EUR", payer=payer, iban=IBAN_TIMEOUT)
    assert paid.status == "exception" and d.reserved(payer) == 3_000

    world.clock.advance()
    done = world.run_once()
    assert (done.failed, done.asked, stub.asked) == (1, 1, [paid.id])
    payment = world.svc.get_payment(paid.id)
    assert (payment.status, payment.failure_code, payment.channel_reference) == (
        "failed", "AC04", "bank_0043",
    )  # fmt: skip
    assert (d.balance(payer), d.reserved(payer)) == (10_000, 0)
    assert world.event(paid.id, "Failed").data["resolution"] == "channel_status"
    d.check_books()


def test_a_payment_the_channel_never_saw_fails_only_once_old_enough(world: World) -> None:
    d = world.d
    payer = d.open("payer", "EUR")
    d.deposit(payer, "100.00")
    world.stub("bank_transfer", None)  # "never heard of it"
    paid = d.pay("30.00", channel="bank_transfer", currency="EUR", payer=payer, iban=IBAN_TIMEOUT)

    # Asked at once (an operator's explicit call): it may still be on its way to the channel.
    assert world.resolve(paid.id).result == "open"
    assert world.svc.get_payment(paid.id).status == "exception" and d.reserved(payer) == 3_000

    world.clock.advance()
    assert world.run_once().failed == 1
    payment = world.svc.get_payment(paid.id)
    assert (payment.status, payment.failure_code) == ("failed", NOT_RECEIVED)
    assert (d.balance(payer), d.reserved(payer)) == (10_000, 0)
    d.check_books()


def test_no_answer_keeps_it_open_and_asks_again_with_backoff(world: World) -> None:
    d = world.d
    stub = world.stub("card", TimeoutError())
    shop = d.open("s", kind="merchant")
    paid = d.pay("5.00", channel="card", card_number=CARD_TIMEOUT, payee=shop)
    world.clock.advance()
    assert world.run_once().counts() == {**ResolverPass().counts(), "open": 1, "asked": 1}
    assert world.run_once().counts() == {**ResolverPass().counts(), "open": 1}  # not due
    world.clock.advance(timedelta(seconds=1.5))
    assert world.run_once().asked == 1  # due after 1 s
    world.clock.advance(timedelta(seconds=1.5))
    assert world.run_once().asked == 0  # then after 2 s
    world.clock.advance(timedelta(seconds=1))
    assert world.run_once().asked == 1
    assert len(stub.asked) == 3
    stub.answer = ChannelResult(ChannelOutcome.UNKNOWN, None, "processing", "not settled")
    world.clock.advance(timedelta(minutes=10))
    assert world.run_once().counts() == {**ResolverPass().counts(), "open": 1, "asked": 1}
    stub.answer = SUCCEEDED
    world.clock.advance(timedelta(minutes=10))
    assert world.run_once().succeeded == 1
    assert world.svc.get_payment(paid.id).status == "succeeded"


def test_until_done_keeps_going_until_nothing_is_open(world: World) -> None:
    d = world.d
    stub = world.stub("card", TimeoutError())
    shop = d.open("s", kind="merchant")
    paid = d.pay("5.00", channel="card", card_number=CARD_TIMEOUT, payee=shop)
    world.clock.advance()
    passes: list[ResolverPass] = []

    def after_pass(one: ResolverPass) -> None:
        passes.append(one)
        stub.answer = SUCCEEDED  # the channel knows by the next question

    total = asyncio.run(
        world.svc.exceptions.run_until_done(
            10, before_pass=world.read.catch_up, after_pass=after_pass
        )
    )
    assert (total.succeeded, total.open, total.asked) == (1, 0, 2)
    assert [p.open for p in passes] == [1, 0]
    assert world.svc.get_payment(paid.id).status == "succeeded"


# --- abandoned intents -----------------------------------------------------------------------


def save_intent_only(svc: Payledger, cmd: Any) -> UUID:
    """Step 1 of a payment, and no step 2: its process died before the channel was called."""
    draft = validate_payment(cmd, ANONYMOUS, now=svc.clock.now(), secret_key=svc.secret_key)
    begun = asyncio.run(svc.commit("payments", "decide_intent", draft))
    assert begun.next.value == "send"
    return draft.payment_id


def test_an_abandoned_intent_the_channel_never_saw_becomes_an_exception_then_fails(
    world: World,
) -> None:
    d = world.d
    payer = d.open("payer", "EUR")
    d.deposit(payer, "100.00")
    cmd = payment_command("30.00", key=fresh_key("dead"), channel="bank_transfer",
                          currency="EUR", payer=payer, iban=IBAN_TIMEOUT)  # fmt: skip
    payment_id = save_intent_only(world.svc, cmd)
    assert world.run_once().counts() == ResolverPass().counts()  # its client may still retry
    assert world.svc.get_payment(payment_id).state == "submitted"

    world.clock.advance(timedelta(minutes=2))
    first = world.run_once()
    assert (first.asked, first.open, first.failed) == (1, 1, 0)  # an exception now
    payment = world.svc.get_payment(payment_id)
    assert (payment.state, payment.failure_code) == ("exception", "intent_abandoned")
    assert d.reserved(payer) == 3_000  # a retry taking it over meanwhile could still pay it

    world.clock.advance()
    assert world.run_once().failed == 1
    payment = world.svc.get_payment(payment_id)
    assert (payment.status, payment.failure_code) == ("failed", NOT_RECEIVED)
    assert (d.balance(payer), d.reserved(payer)) == (10_000, 0)
    d.check_books()


def test_an_abandoned_intent_the_channel_charged_is_resolved_succeeded(world: World) -> None:
    d = world.d
    payer = d.open("payer", "EUR")
    d.deposit(payer, "100.00")
    world.stub("bank_transfer", SUCCEEDED)
    cmd = payment_command("30.00", key=fresh_key("dead"), channel="bank_transfer",
                          currency="EUR", payer=payer, iban=IBAN_TIMEOUT)  # fmt: skip
    payment_id = save_intent_only(world.svc, cmd)
    with pytest.raises(NotAnException, match="still being sent"):
        world.manual(payment_id, "failed")  # its sender may be at work
    world.clock.advance(timedelta(minutes=2))
    assert world.run_once().succeeded == 1
    assert world.events(payment_id)[-3:] == ["Submitted", "ExceptionResolved", "Succeeded"]
    assert (d.balance(payer), d.reserved(payer)) == (7_000, 0)
    assert world.d.submit(cmd).status == "succeeded"  # the client's retry replays it
    d.check_books()


# --- nothing is posted twice -----------------------------------------------------------------


def test_two_resolvers_in_one_process_post_once(world: World) -> None:
    d = world.d
    shop = d.open("shop", kind="merchant")
    paid = d.pay("12.00", channel="card", card_number=CARD_TIMEOUT, payee=shop)

    async def both() -> list[Resolution]:
        ex = world.svc.exceptions
        return list(await asyncio.gather(
            ex.resolve_from_channel(paid.id), ex.resolve_from_channel(paid.id)
        ))  # fmt: skip

    results = sorted(r.result for r in asyncio.run(both()))
    assert results == ["final", "succeeded"]
    assert world.events(paid.id).count("ExceptionResolved") == 1
    assert world.credits(shop) == 1 and d.balance(shop) == 1_200
    d.check_books()


@pytest.mark.parametrize("rival", ["resolver", "operator"])
def test_two_processes_racing_post_once(database_url: str, rival: str) -> None:
    clock = MovableClock()
    card = Stub("card", SUCCEEDED)
    settings = make_settings(database_url)
    with Payledger(settings, clock=clock, channels={"card": card}) as one, Payledger(
        settings, clock=clock, channels={"card": card}
    ) as two:  # fmt: skip
        d = Driver(one)
        shop = d.open("shop", kind="merchant")
        paid = d.pay("12.00", channel="card", card_number=CARD_TIMEOUT, payee=shop)
        assert paid.status == "exception"
        for svc in (one, two):  # both have cached the payment in exception
            svc.committer.cache.put(svc.load_payment(paid.id))  # type: ignore[union-attr,arg-type]
        barrier = threading.Barrier(2)
        outcomes: list[Any] = []

        def resolver(svc: Payledger) -> None:
            barrier.wait()
            outcomes.append(asyncio.run(svc.exceptions.resolve_from_channel(paid.id)).result)

        def operator(svc: Payledger) -> None:
            barrier.wait()
            try:
                asyncio.run(svc.exceptions.resolve_manually(
                    "default", paid.id, "failed", "no such charge", "key:ops"
                ))  # fmt: skip
                outcomes.append("failed")
            except NotAnException:
                outcomes.append("refused")

        threads = [threading.Thread(target=resolver, args=(one,)),
                   threading.Thread(target=resolver if rival == "resolver" else operator,
                                    args=(two,))]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(outcomes) == 2, outcomes
        events = [e.type for e in one.payment_events(paid.id, ANONYMOUS)]
        assert events.count("ExceptionResolved") == 1
        assert events.count("Succeeded") + events.count("Failed") == 1
        settled = "Succeeded" in events
        assert d.balance(shop) == (1_200 if settled else 0)
        assert sum(1 for e in one.app.repository.event_store.get(shop)
                   if isinstance(e, Account.Credited)) == (1 if settled else 0)  # fmt: skip
        d.check_books()


# --- by hand -------------------------------------------------------------------------------------


def test_an_operator_resolves_by_hand_and_the_event_names_them(world: World) -> None:
    d = world.d
    payer = d.open("payer", "EUR")
    d.deposit(payer, "100.00")
    paid = d.pay("30.00", channel="bank_transfer", currency="EUR", payer=payer, iban=IBAN_TIMEOUT)

    result = world.manual(paid.id, "succeeded", reason="bank statement line 17",
                          actor="key:ops-1", channel_reference="BANKREF-9")  # fmt: skip
    assert (result.status, result.channel_reference) == ("succeeded", "BANKREF-9")
    resolved = world.event(paid.id, "ExceptionResolved")
    assert resolved.actor == "key:ops-1" == world.event(paid.id, "Succeeded").actor
    assert resolved.data == {"outcome": "succeeded", "how": "manual",
                             "reason": "bank statement line 17",
                             "channel_reference": "BANKREF-9"}  # fmt: skip
    assert (d.balance(payer), d.reserved(payer)) == (7_000, 0)

    with pytest.raises(NotAnException, match="is succeeded"):
        world.manual(paid.id, "failed")
    assert world.run_once().counts() == ResolverPass().counts()  # nothing left to ask
    d.check_books()


def test_a_manual_failure_releases_the_hold_and_says_so(world: World) -> None:
    d = world.d
    payer = d.open("payer", "EUR")
    d.deposit(payer, "100.00")
    paid = d.pay("30.00", channel="bank_transfer", currency="EUR", payer=payer, iban=IBAN_TIMEOUT)
    result = world.manual(paid.id, "failed", reason="returned by the bank",
                          how="reconciliation", actor="reconciliation:run-1")  # fmt: skip
    assert (result.status, result.failure_code) == ("failed", "resolved_by_reconciliation")
    assert world.event(paid.id, "ExceptionResolved").data["how"] == "reconciliation"
    assert (d.balance(payer), d.reserved(payer)) == (10_000, 0)


def test_a_manual_resolution_is_refused_for_another_tenant_or_bad_input(world: World) -> None:
    d = world.d
    shop = d.open("s", kind="merchant")
    paid = d.pay("5.00", channel="card", card_number=CARD_TIMEOUT, payee=shop)
    with pytest.raises(PaymentNotFound):
        world.manual(paid.id, "failed", tenant="someone-else")
    with pytest.raises(PaymentNotFound):
        world.manual(UUID(int=7), "failed")
    for bad, where in (({"reason": " "}, "reason"), ({"how": "channel_status"}, "how"),
                       ({"channel_reference": "x" * 101}, "channel_reference")):  # fmt: skip
        with pytest.raises(ValidationError) as refused:
            world.manual(paid.id, "failed", **bad)
        assert refused.value.errors[0].field == where
    with pytest.raises(ValidationError):
        world.manual(paid.id, "maybe")
    assert world.svc.get_payment(paid.id).status == "exception"  # untouched


# --- the deadline --------------------------------------------------------------------------------


def test_an_exception_past_the_deadline_is_flagged_once_and_no_longer_asked_about(
    database_url: str,
) -> None:
    with _world(make_settings(database_url, exception_deadline_s=3_600)) as world:
        d = world.d
        stub = world.stub("card", ChannelResult(ChannelOutcome.UNKNOWN, None, "pending", "?"))
        paid = d.pay("5.00", channel="card", card_number=CARD_TIMEOUT,
                     payee=d.open("s", kind="merchant"))  # fmt: skip
        world.clock.advance()
        assert world.run_once().counts() == {**ResolverPass().counts(), "open": 1, "asked": 1}
        world.clock.advance(timedelta(hours=2))
        done = world.run_once()
        assert (done.asked, done.flagged, done.open) == (1, 1, 0)  # asked once more first
        assert world.events(paid.id)[-1] == "ExceptionFlagged"
        assert world.event(paid.id, "ExceptionFlagged").data["deadline_s"] == 3_600
        asked = len(stub.asked)
        world.clock.advance(timedelta(hours=2))
        assert world.run_once().counts() == ResolverPass().counts()  # no longer a candidate
        assert len(stub.asked) == asked
        queries = world.svc.exceptions.view
        assert isinstance(queries, ExceptionQueries)
        flagged = queries.open_exceptions("default", flagged=True).items
        assert [x.payment_id for x in flagged] == [paid.id] and flagged[0].flagged_at
        assert queries.open_exceptions("default", flagged=False).items == []
        # Reconciliation (or an operator) can still settle it.
        world.manual(paid.id, "succeeded", how="reconciliation", reason="statement 2026-11-25")
        assert world.svc.get_payment(paid.id).status == "succeeded"


# --- batch items ---------------------------------------------------------------------------------


def test_batch_items_in_exception_are_resolved_from_the_batch_hold(world: World) -> None:
    svc, d = world.svc, world.d
    maker, checker = Principal("t1", "cli:maker"), Principal("t1", "key:checker")
    funding = asyncio.run(svc.accounts.open(OpenAccount("payroll", "EUR", "funding"), maker)).id
    asyncio.run(svc.accounts.deposit(MakeDeposit(funding, "1000.00", "dep-1"), maker))
    rows = ["end_to_end_id,amount,currency,name,iban",
            f"E0,10.00,EUR,Ann,{iban(0)}", f"E1,20.00,EUR,Bob,{iban(1, '0119')}",
            f"E2,30.00,EUR,Cy,{iban(2, '0119')}"]  # fmt: skip
    parsed = parse_batch_file("\n".join(rows).encode())
    batch = asyncio.run(svc.batches.submit(SubmitBatch(parsed, "b-1", funding), maker))
    svc.committer.run(svc.decision("batches", "decide_approve", batch.id, checker, False))
    done = asyncio.run(svc.batch_runner.run(batch.id))
    assert done is not None and done.status == "completed_with_failures"
    held = svc.get_account(funding, maker)
    assert (held.balance_minor, held.reserved_minor) == (99_000, 5_000)  # the exceptions' funds

    item1, item2 = (batch_item_payment_id(batch.id, i) for i in (1, 2))
    sandbox = svc.channels["bank_transfer"]
    stub = world.stub("bank_transfer")
    stub.answers = {item2: DECLINED}
    stub.answer = None

    async def sandbox_says(payment_id: UUID) -> ChannelResult | None:
        stub.asked.append(payment_id)
        if payment_id in stub.answers:
            return stub.answers[payment_id]
        return await sandbox.status(payment_id)  # the charge it made before timing out

    stub.status = sandbox_says  # type: ignore[method-assign]
    world.clock.advance()
    resolved = world.run_once(tenant="t1")
    assert (resolved.succeeded, resolved.failed, resolved.open) == (1, 1, 0)

    account = svc.get_account(funding, maker)
    assert (account.balance_minor, account.reserved_minor) == (97_000, 0)  # 10 + 20 paid
    clearing = clearing_account_id("t1", "bank_transfer", "EUR")
    assert svc.get_account(clearing, maker).balance_minor == 3_000
    one = [e.type for e in svc.payment_events(item1, maker)]
    assert one == ["BatchItemProcessed", "ExceptionResolved", "Succeeded"]
    two = svc.get_payment(item2, maker)
    assert (two.status, two.failure_code) == ("failed", "AC04")
    debits = [e for e in svc.app.repository.event_store.get(funding)
              if isinstance(e, Account.Debited) and e.payment_id == str(batch.id)]  # fmt: skip
    assert sorted(e.amount_minor for e in debits) == [1_000, 2_000] and all(
        e.from_hold for e in debits
    )
    assert svc.trial_balance()["totals"] == {"EUR": 0}
    d.check_books()
    # The batch counts each item under its outcome now (Batch.ItemResolved), and so do its views.
    after = svc.batches.get(batch.id, maker)
    assert after.counts == {"succeeded": 2, "failed": 1, "exception": 0}
    assert after.amounts == {"succeeded": 3_000, "failed": 3_000, "exception": 0}
    assert after.held_minor == 0 and after.status == "completed_with_failures"
    world.read.catch_up()
    page = world.read.batches.items("t1", batch.id)
    assert [(i.index, i.status, i.reason_code) for i in page.items] == [
        (0, "succeeded", None), (1, "succeeded", None), (2, "failed", "AC04"),
    ]  # fmt: skip
    assert page.items[1].payment_id == str(item1)


# --- the view ------------------------------------------------------------------------------------


def test_a_payments_view_from_before_the_workflow_gets_its_columns_and_agrees_with_a_rebuild(
    database_url: str,
) -> None:
    settings = make_settings(database_url)
    settings.store.prepare()
    old = ViewDB(settings.store)
    definition = PaymentsProjection.TABLES["payments"].replace(
        ", flagged_us BIGINT, resolution TEXT", ""
    )
    old.execute(f"CREATE TABLE view_payments ({definition})")
    old.close()
    with _world(settings) as world:
        d = world.d
        payer = d.open("payer", "EUR")
        d.deposit(payer, "100.00")
        paid = d.pay("30.00", channel="bank_transfer", currency="EUR", payer=payer,
                     iban=IBAN_TIMEOUT)  # fmt: skip
        world.read.catch_up()
        queries = world.svc.exceptions.view
        assert isinstance(queries, ExceptionQueries)
        [open_one] = queries.open_exceptions("default").items
        assert (open_one.payment_id, open_one.flagged_at, open_one.code) == (
            paid.id, None, "channel_timeout",
        )  # fmt: skip
        world.manual(paid.id, "failed", reason="returned")
        world.read.catch_up()
        assert queries.open_exceptions("default").items == []
        row = world.read.model.db.query(
            "SELECT state, resolution, flagged_us FROM view_payments WHERE payment_id = ?",
            (str(paid.id),),
        )
        assert row == [("failed", "manual", None)]
        report = verify(world.svc.app, settings.store, ["payments"])
        assert report.ok, report.differences


def test_a_resolution_through_the_committer_process(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, committer="process")
    with _world(settings) as world:
        paid = world.d.pay("5.00", channel="card", card_number=CARD_TIMEOUT,
                           payee=world.d.open("s", kind="merchant"))  # fmt: skip
        result = world.manual(paid.id, "failed", reason="declined on the phone")
        assert (result.status, result.failure_code) == ("failed", "resolved_manually")
