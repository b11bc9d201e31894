"""Resolving an unknown outcome on the Payment aggregate: how it was found out and by whom is
recorded with the outcome; only an unknown outcome can be resolved, and flagged once."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from domain.errors import IllegalTransition, ValidationError
from domain.payments import REASON_MAX_LENGTH, NotAnException, Payment, PaymentState
from tests.domain.test_payment_state_machine import T0, entry_for, payment_in

S = PaymentState
GRACE = timedelta(seconds=15)  # the "abandoned after" the application passes in
LATER = T0 + timedelta(minutes=1)


def events(payment: Payment) -> list[str]:
    return [type(e).__name__ for e in payment.collect_events()]


def resolve(payment: Payment, outcome: str, **kwargs):  # type: ignore[no-untyped-def]
    entry = entry_for(payment) if outcome == "succeeded" else None
    values = {
        "how": "manual", "reason": "the bank confirmed it", "at": LATER, "actor": "key:operator",
        "abandoned_after": GRACE, "entry": entry,
    } | kwargs  # fmt: skip
    payment.resolve_exception(outcome, **values)


def test_an_exception_resolved_as_succeeded_records_how_then_the_outcome() -> None:
    payment = payment_in(S.EXCEPTION)
    payment.collect_events()
    resolve(payment, "succeeded", how="channel_status", channel_reference="card_42")

    pending = payment.collect_events()
    assert [type(e).__name__ for e in pending] == ["ExceptionResolved", "Succeeded"]
    resolved, succeeded = pending
    assert (resolved.outcome, resolved.how, resolved.reason) == (  # type: ignore[attr-defined]
        "succeeded", "channel_status", "the bank confirmed it",
    )  # fmt: skip
    assert resolved.actor == succeeded.actor == "key:operator"  # type: ignore[attr-defined]
    assert succeeded.resolution == "channel_status"  # type: ignore[attr-defined]
    assert payment.state == "succeeded" and payment.channel_reference == "card_42"
    assert payment.entry is not None and payment.completed_at == LATER
    assert payment.resolution == {
        "outcome": "succeeded", "how": "channel_status", "reason": "the bank confirmed it",
        "channel_reference": "card_42", "actor": "key:operator", "at": LATER,
    }  # fmt: skip


def test_an_exception_resolved_as_failed_keeps_the_given_code_or_says_it_was_resolved() -> None:
    declined = payment_in(S.EXCEPTION)
    resolve(declined, "failed", how="channel_status", code="card_declined", message="declined")
    assert (declined.state, declined.failure_code, declined.failure_message) == (
        "failed", "card_declined", "declined",
    )  # fmt: skip

    by_hand = payment_in(S.EXCEPTION)
    resolve(by_hand, "failed", reason="customer says it never arrived")
    assert (by_hand.failure_code, by_hand.failure_message) == (
        "resolved_failed", "customer says it never arrived",
    )  # fmt: skip
    assert by_hand.resolution is not None and by_hand.resolution["how"] == "manual"


@pytest.mark.parametrize("state", [S.SUCCEEDED, S.FAILED, S.REJECTED, S.REQUESTED, S.RESERVED])
def test_only_an_unknown_outcome_can_be_resolved(state: PaymentState) -> None:
    payment = payment_in(state)
    payment.collect_events()
    with pytest.raises(NotAnException, match="only a payment in exception"):
        resolve(payment, "failed")
    assert payment.collect_events() == []  # nothing recorded
    assert issubclass(NotAnException, IllegalTransition)  # a conflict: 409, exit 4


def test_a_submitted_payment_is_resolvable_only_once_abandoned() -> None:
    payment = payment_in(S.SUBMITTED)  # its last step was at T0 + 2 s
    at = payment.modified_on
    with pytest.raises(NotAnException, match="still being sent"):
        resolve(payment, "failed", at=at + GRACE)  # not more than the grace: still its sender's
    assert payment.is_abandoned(at + GRACE + timedelta(microseconds=1), GRACE)
    resolve(payment, "succeeded", at=at + GRACE + timedelta(seconds=1))
    assert payment.state == "succeeded"


def test_a_resolution_is_checked_before_anything_is_recorded() -> None:
    payment = payment_in(S.EXCEPTION)
    payment.collect_events()
    with pytest.raises(IllegalTransition, match="exactly when it succeeded"):
        resolve(payment, "failed", entry=entry_for(payment))
    with pytest.raises(IllegalTransition, match="exactly when it succeeded"):
        resolve(payment, "succeeded", entry=None)
    with pytest.raises(IllegalTransition, match="currency"):
        resolve(payment, "succeeded", entry=entry_for(payment, "EUR"))
    with pytest.raises(ValidationError) as outcome:
        resolve(payment, "pending")
    assert outcome.value.errors[0].field == "outcome"
    with pytest.raises(ValidationError) as how:
        resolve(payment, "failed", how="guess")
    assert how.value.errors[0].field == "how"
    for reason in ("", "   ", "x" * (REASON_MAX_LENGTH + 1), "a\x00b"):
        with pytest.raises(ValidationError) as bad:
            resolve(payment, "failed", reason=reason)
        assert bad.value.errors[0].field == "reason"
    assert payment.collect_events() == [] and payment.state == "exception"


def test_a_resolved_payment_cannot_be_resolved_again() -> None:
    payment = payment_in(S.EXCEPTION)
    resolve(payment, "succeeded")
    with pytest.raises(NotAnException):
        resolve(payment, "failed")
    assert payment.state == "succeeded"


def test_an_exception_past_the_deadline_is_flagged_once() -> None:
    payment = payment_in(S.EXCEPTION)
    payment.collect_events()
    assert not payment.is_flagged and payment.flagged_at is None
    payment.flag_exception(86_400, at=LATER, actor="system:exception-resolver")
    assert events(payment) == ["ExceptionFlagged"]
    assert payment.is_flagged and payment.flagged_at == LATER
    assert payment.state == "exception"  # still unknown: left to reconciliation
    with pytest.raises(IllegalTransition, match="flagged already"):
        payment.flag_exception(86_400, at=LATER, actor="system:exception-resolver")
    resolve(payment, "failed", how="reconciliation")  # reconciliation can still settle it
    assert payment.state == "failed" and payment.flagged_at == LATER


def test_only_an_unknown_outcome_is_flagged() -> None:
    payment = payment_in(S.SUCCEEDED)
    with pytest.raises(NotAnException):
        payment.flag_exception(60, at=LATER, actor="system:exception-resolver")


def test_unknown_since_is_the_exception_or_the_last_step_of_a_submitted_payment() -> None:
    exception = payment_in(S.EXCEPTION)
    assert exception.unknown_since == exception.completed_at == T0 + timedelta(seconds=3)
    submitted = payment_in(S.SUBMITTED)
    assert submitted.unknown_since == submitted.modified_on == T0 + timedelta(seconds=2)
    assert exception.outcome_unknown and submitted.outcome_unknown
    assert not payment_in(S.FAILED).outcome_unknown


def test_the_events_replay_into_the_same_aggregate() -> None:
    payment = payment_in(S.EXCEPTION)
    payment.flag_exception(60, at=LATER, actor="system:exception-resolver")
    resolve(payment, "succeeded", at=LATER + timedelta(seconds=1), channel_reference="r1")
    replayed = None
    for event in payment.collect_events():
        replayed = event.mutate(replayed)
    assert isinstance(replayed, Payment)
    assert replayed.state == "succeeded" and replayed.flagged_at == LATER
    assert replayed.resolution == payment.resolution
    assert replayed.entry == payment.entry and replayed.id == payment.id != UUID(int=0)
