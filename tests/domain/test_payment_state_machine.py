"""The Payment state machine: every legal edge works, every other raises and records nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from domain.errors import IllegalTransition
from domain.ledger import transfer
from domain.payments import (
    FINAL_STATES,
    TRANSITIONS,
    Payment,
    PaymentKind,
    PaymentState,
    payment_id_for,
)

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
S = PaymentState
PAYER = {"type": "account", "account_id": str(UUID(int=1))}
PAYEE = {"type": "account", "account_id": str(UUID(int=2))}


def new_payment(amount_minor: int = 1_000, currency: str = "CNY", at: datetime = T0) -> Payment:
    return Payment.request(
        payment_id=uuid4(),
        tenant="default",
        kind=PaymentKind.PAYMENT,
        client="anonymous",
        idempotency_key="k1",
        request_fingerprint="fp",
        amount_minor=amount_minor,
        currency=currency,
        channel="internal",
        payer=PAYER,
        payee=PAYEE,
        description=None,
        metadata={},
        at=at,
        actor="alice",
    )


def entry_for(payment: Payment, currency: str | None = None):
    return transfer(
        uuid4(), currency or payment.currency, UUID(int=1), UUID(int=2), payment.amount_minor
    )


# One way to ask for each target state (REQUESTED has none: it is only ever the start).
MOVES: dict[PaymentState, Callable[[Payment, datetime], None]] = {
    S.REJECTED: lambda p, at: p.reject("insufficient_funds", "no money", at=at, actor="alice"),
    S.RESERVED: lambda p, at: p.mark_reserved(UUID(int=1), at=at, actor="alice"),
    S.SUBMITTED: lambda p, at: p.mark_submitted(at=at, actor="alice"),
    S.SUCCEEDED: lambda p, at: p.mark_succeeded("ref_1", entry_for(p), at=at, actor="alice"),
    S.FAILED: lambda p, at: p.mark_failed("card_declined", "declined", at=at, actor="alice"),
    S.EXCEPTION: lambda p, at: p.mark_exception("channel_timeout", "no answer", at=at, actor="a"),
}

# A legal path from requested to every state, used to set up each row of the matrix.
PATHS: dict[PaymentState, list[PaymentState]] = {
    S.REQUESTED: [],
    S.REJECTED: [S.REJECTED],
    S.RESERVED: [S.RESERVED],
    S.SUBMITTED: [S.RESERVED, S.SUBMITTED],
    S.SUCCEEDED: [S.RESERVED, S.SUBMITTED, S.SUCCEEDED],
    S.FAILED: [S.RESERVED, S.SUBMITTED, S.FAILED],
    S.EXCEPTION: [S.RESERVED, S.SUBMITTED, S.EXCEPTION],
}


def payment_in(state: PaymentState) -> Payment:
    payment = new_payment()
    for step, target in enumerate(PATHS[state], start=1):
        MOVES[target](payment, T0 + timedelta(seconds=step))
    assert payment.current_state is state
    return payment


MATRIX = list(itertools.product(list(S), list(MOVES)))
LEGAL = [(s, t) for s, t in MATRIX if t in TRANSITIONS[s]]
ILLEGAL = [(s, t) for s, t in MATRIX if t not in TRANSITIONS[s]]


def test_matrix_covers_every_state_and_the_documented_edges():
    assert set(TRANSITIONS) == set(S)
    assert all(S.REQUESTED not in targets for targets in TRANSITIONS.values())
    edges = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    assert edges == {
        (S.REQUESTED, S.REJECTED),
        (S.REQUESTED, S.RESERVED),
        (S.RESERVED, S.SUBMITTED),
        (S.RESERVED, S.FAILED),
        (S.SUBMITTED, S.SUCCEEDED),
        (S.SUBMITTED, S.FAILED),
        (S.SUBMITTED, S.EXCEPTION),
        (S.EXCEPTION, S.SUCCEEDED),
        (S.EXCEPTION, S.FAILED),
    }
    assert set(LEGAL) == edges
    assert len(LEGAL) + len(ILLEGAL) == len(S) * (len(S) - 1)


@pytest.mark.parametrize(("state", "target"), LEGAL, ids=lambda s: str(s))
def test_legal_transition_records_one_event(state, target):
    payment = payment_in(state)
    before = len(payment.pending_events)
    at = T0 + timedelta(minutes=5)
    MOVES[target](payment, at)
    assert payment.current_state is target
    assert len(payment.pending_events) == before + 1
    event = payment.pending_events[-1]
    assert event.timestamp == at
    assert event.actor


@pytest.mark.parametrize(("state", "target"), ILLEGAL, ids=lambda s: str(s))
def test_illegal_transition_raises_and_records_nothing(state, target):
    payment = payment_in(state)
    before = len(payment.pending_events)
    version = payment.version
    with pytest.raises(IllegalTransition):
        MOVES[target](payment, T0 + timedelta(minutes=5))
    assert payment.current_state is state
    assert len(payment.pending_events) == before
    assert payment.version == version


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_final_states_have_no_way_out(state):
    payment = payment_in(state)
    assert payment.is_final and not payment.is_in_flight
    assert TRANSITIONS[state] == frozenset()


@pytest.mark.parametrize("state", [S.REQUESTED, S.RESERVED, S.SUBMITTED])
def test_in_flight_states(state):
    payment = payment_in(state)
    assert payment.is_in_flight and not payment.is_final


def test_exception_is_neither_final_nor_in_flight():
    payment = payment_in(S.EXCEPTION)
    assert not payment.is_final and not payment.is_in_flight
    assert payment.failure_code == "channel_timeout"


def test_exception_resolved_to_success_records_the_resolution():
    payment = payment_in(S.EXCEPTION)
    entry = entry_for(payment)
    payment.mark_succeeded("ref_9", entry, at=T0 + timedelta(hours=1), actor="resolver",
                           resolution="channel_status")  # fmt: skip
    assert payment.current_state is S.SUCCEEDED
    event = payment.pending_events[-1]
    assert event.resolution == "channel_status"
    assert event.actor == "resolver"
    assert payment.entry == {"entry_id": str(entry.entry_id), "legs": entry.to_record()}


@pytest.mark.parametrize("amount", [0, -1, -10_000])
def test_request_refuses_non_positive_amounts(amount):
    with pytest.raises(IllegalTransition):
        new_payment(amount_minor=amount)


def test_success_with_an_entry_in_another_currency_is_refused():
    payment = payment_in(S.SUBMITTED)
    with pytest.raises(IllegalTransition):
        payment.mark_succeeded("ref", entry_for(payment, "USD"), at=T0, actor="alice")
    assert payment.current_state is S.SUBMITTED


def test_every_event_has_a_timestamp_and_an_actor():
    payment = payment_in(S.SUCCEEDED)
    assert [type(e).__name__ for e in payment.pending_events] == [
        "Requested", "Reserved", "Submitted", "Succeeded",
    ]  # fmt: skip
    for event in payment.pending_events:
        assert event.timestamp.tzinfo is not None
        assert isinstance(event.actor, str) and event.actor


def test_latency_and_completion_time():
    payment = new_payment(at=T0)
    assert payment.latency_ms is None and payment.completed_at is None
    payment.mark_reserved(None, at=T0, actor="alice")
    payment.mark_submitted(at=T0, actor="alice")
    done = T0 + timedelta(milliseconds=1_234)
    payment.mark_failed("card_declined", "declined", at=done, actor="alice", channel_reference="r")
    assert payment.completed_at == done
    assert payment.latency_ms == 1_234
    assert (payment.failure_code, payment.channel_reference) == ("card_declined", "r")


def test_reserved_records_the_hold_account_or_none():
    payment = new_payment()
    payment.mark_reserved(UUID(int=7), at=T0, actor="alice")
    assert payment.hold_account_id == str(UUID(int=7))
    other = new_payment()
    other.mark_reserved(None, at=T0, actor="alice")
    assert other.hold_account_id is None


def test_rejection_is_final_and_carries_its_code():
    payment = new_payment()
    payment.reject("currency_mismatch", "wrong currency", at=T0, actor="alice")
    assert payment.is_final
    assert (payment.failure_code, payment.failure_message) == (
        "currency_mismatch",
        "wrong currency",
    )


def test_payment_id_is_a_function_of_tenant_client_and_key():
    a = payment_id_for("default", "anonymous", "k1")
    assert a == payment_id_for("default", "anonymous", "k1")
    assert a != payment_id_for("default", "anonymous", "k2")
    assert a != payment_id_for("default", "other", "k1")
    assert a != payment_id_for("acme", "anonymous", "k1")
    assert a.version == 5
