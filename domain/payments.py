"""The ``Payment`` aggregate and its state machine.

    requested -> rejected                       (rules refused it; nothing moved)
    requested -> reserved -> submitted -> succeeded | failed | exception
    reserved  -> failed                         (definitely not sent: released)
    exception -> succeeded | failed             (resolved later by asking the channel)
    submitted -> succeeded | failed | exception (abandoned: its process died before the outcome)

A resolution records ``ExceptionResolved`` (how it was found out, why, and who) followed, in the
same save, by the usual ``Succeeded`` or ``Failed``. An exception still unknown at the resolver's
deadline is flagged (``ExceptionFlagged``) and left to reconciliation.

``exception`` is honest: the channel may or may not have moved the money, so funds stay held until
someone finds out. Every event records when it happened and which principal caused it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from domain.errors import IllegalTransition, ValidationError
from domain.ids import NameIds, name_id
from domain.ledger import JournalEntry

PAYMENT_NAMESPACE = UUID("9d3b1f2a-4c5e-4f60-8a7b-1c2d3e4f5a60")


class PaymentState(StrEnum):
    REQUESTED = "requested"
    REJECTED = "rejected"
    RESERVED = "reserved"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXCEPTION = "exception"


S = PaymentState
TRANSITIONS: dict[PaymentState, frozenset[PaymentState]] = {
    S.REQUESTED: frozenset({S.REJECTED, S.RESERVED}),
    S.RESERVED: frozenset({S.SUBMITTED, S.FAILED}),
    S.SUBMITTED: frozenset({S.SUCCEEDED, S.FAILED, S.EXCEPTION}),
    S.EXCEPTION: frozenset({S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.REJECTED: frozenset(),
}
FINAL_STATES = frozenset({S.SUCCEEDED, S.FAILED, S.REJECTED})
BATCH_OUTCOME_STATES = {"succeeded": S.SUCCEEDED, "failed": S.FAILED, "exception": S.EXCEPTION}
# Exception resolution: how an unknown outcome was found out, and the outcomes it can end in.
RESOLUTION_HOWS = ("channel_status", "manual", "reconciliation")
RESOLVED_OUTCOMES = ("succeeded", "failed")
REASON_MAX_LENGTH = 500


class NotAnException(IllegalTransition):
    """Resolving a payment whose outcome is not unknown: final already, or still being sent."""

    code = "payment_not_in_exception"


# What a payment is asked to do: set on the aggregate by either event that creates it.
REQUEST_FIELDS = (
    "tenant", "kind", "client", "idempotency_key", "request_fingerprint", "amount_minor",
    "currency", "channel", "payer", "payee", "description", "metadata", "batch_id",
)  # fmt: skip


class PaymentKind(StrEnum):
    PAYMENT = "payment"
    DEPOSIT = "deposit"


def batch_item_payment_id(batch_id: UUID, item_index: int, attempt: int = 1) -> UUID:
    """One id per attempt at a batch item: the channel's idempotency key for that attempt
    (``name_id`` of ``/batches/<batch id>/items/<index>/attempts/<attempt>``)."""
    return _batch_item_ids(batch_id)(f"{item_index}/attempts/{attempt}")


@lru_cache(maxsize=64)  # the few batches being run or projected at once
def _batch_item_ids(batch_id: UUID) -> NameIds:
    return NameIds(PAYMENT_NAMESPACE, f"/batches/{batch_id}/items/")


def payment_id_for(tenant: str, client: str, idempotency_key: str) -> UUID:
    """The payment id is a function of who asked and their key: the store's unique
    (originator_id, version) then makes a duplicate impossible, whatever the race."""
    return name_id(PAYMENT_NAMESPACE, f"/tenants/{tenant}/clients/{client}/keys/{idempotency_key}")


class Payment(Aggregate):
    class Requested(Aggregate.Created):
        actor: str
        tenant: str
        kind: str
        client: str
        idempotency_key: str
        request_fingerprint: str
        amount_minor: int
        currency: str
        channel: str
        payer: dict[str, Any]  # {"type": "account", "account_id"} | {"type": "card", ...}
        payee: dict[str, Any]  # {"type": "account", "account_id"} | {"type": "bank_account", ...}
        description: str | None
        metadata: dict[str, str]
        batch_id: str | None

        def apply(self, aggregate: Any) -> None:
            for name in REQUEST_FIELDS:
                setattr(aggregate, name, getattr(self, name))
            aggregate.state = PaymentState.REQUESTED.value
            aggregate.hold_account_id = None
            aggregate.failure_code = None
            aggregate.failure_message = None
            aggregate.channel_reference = None
            aggregate.entry = None
            aggregate.completed_at = None
            aggregate.batch_item = None

    class BatchItemProcessed(Aggregate.Created):
        """A batch item, sent and answered, recorded in one event (with its batch's group).

        Its intent was durable before it was sent: the approved batch lists it, and its id
        (``batch_item_payment_id``) is the channel's idempotency key, so a batch resumed after
        a crash sends it again without paying twice. Its funds are held by the batch (one hold
        on the funding account for the whole batch), so it never holds funds of its own."""

        actor: str
        tenant: str
        kind: str
        client: str
        idempotency_key: str
        request_fingerprint: str
        amount_minor: int
        currency: str
        channel: str
        payer: dict[str, Any]
        payee: dict[str, Any]
        description: str | None
        metadata: dict[str, str]
        batch_id: str
        batch_item: dict[str, Any]  # {"index", "end_to_end_id", "attempt", "retry_of"}
        outcome: str  # succeeded | failed | exception
        code: str | None
        message: str | None
        channel_reference: str | None
        entry_id: str | None
        legs: list[list[Any]] | None
        hold_account_id: str | None  # the funding account while the outcome is unknown
        completed_at: datetime

        def apply(self, aggregate: Any) -> None:
            for name in (
                *REQUEST_FIELDS, "batch_item", "channel_reference", "hold_account_id",
                "completed_at",
            ):  # fmt: skip
                setattr(aggregate, name, getattr(self, name))
            aggregate.state = BATCH_OUTCOME_STATES[self.outcome].value
            aggregate.failure_code, aggregate.failure_message = self.code, self.message
            aggregate.entry = (
                None if self.entry_id is None else {"entry_id": self.entry_id, "legs": self.legs}
            )

    class Event(Aggregate.Event):
        actor: str

    class Rejected(Event):
        code: str
        message: str

        def apply(self, aggregate: Any) -> None:
            aggregate.state = PaymentState.REJECTED.value
            aggregate.failure_code, aggregate.failure_message = self.code, self.message
            aggregate.completed_at = self.timestamp

    class Reserved(Event):
        hold_account_id: str | None  # None when the payer is outside the ledger (card, wallet)

        def apply(self, aggregate: Any) -> None:
            aggregate.state = PaymentState.RESERVED.value
            aggregate.hold_account_id = self.hold_account_id

    class Submitted(Event):
        def apply(self, aggregate: Any) -> None:
            aggregate.state = PaymentState.SUBMITTED.value

    class Succeeded(Event):
        channel_reference: str
        entry_id: str
        legs: list[list[Any]]  # [[account_id, amount_minor], ...], summing to zero
        resolution: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.state = PaymentState.SUCCEEDED.value
            # After an unknown outcome (OutcomeUnknown) is resolved: no longer a failure.
            aggregate.failure_code = aggregate.failure_message = None
            aggregate.channel_reference = self.channel_reference
            aggregate.entry = {"entry_id": self.entry_id, "legs": self.legs}
            aggregate.completed_at = self.timestamp

    class Failed(Event):
        code: str
        message: str
        channel_reference: str | None
        resolution: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.state = PaymentState.FAILED.value
            aggregate.failure_code, aggregate.failure_message = self.code, self.message
            aggregate.channel_reference = self.channel_reference
            aggregate.completed_at = self.timestamp

    class OutcomeUnknown(Event):
        code: str
        message: str

        def apply(self, aggregate: Any) -> None:
            aggregate.state = PaymentState.EXCEPTION.value
            aggregate.failure_code, aggregate.failure_message = self.code, self.message
            aggregate.completed_at = self.timestamp

    class ExceptionResolved(Event):
        """How an unknown outcome was found out, why, and by whom (the event's actor). The
        ``Succeeded`` or ``Failed`` recorded with it in the same save says the outcome."""

        outcome: str  # succeeded | failed
        how: str  # channel_status | manual | reconciliation
        reason: str
        channel_reference: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.resolution = {
                "outcome": self.outcome, "how": self.how, "reason": self.reason,
                "channel_reference": self.channel_reference, "actor": self.actor,
                "at": self.timestamp,
            }  # fmt: skip

    class ExceptionFlagged(Event):
        """Still unknown at the resolver's deadline: no longer asked about automatically,
        left to reconciliation (or to an operator)."""

        deadline_s: int

        def apply(self, aggregate: Any) -> None:
            aggregate.flagged_at = self.timestamp

    if TYPE_CHECKING:  # set by the Created event; annotations here would become __init__ args
        tenant: str
        kind: str
        client: str
        idempotency_key: str
        request_fingerprint: str
        amount_minor: int
        currency: str
        channel: str
        payer: dict[str, Any]
        payee: dict[str, Any]
        description: str | None
        metadata: dict[str, str]
        batch_id: str | None
        state: str
        hold_account_id: str | None
        failure_code: str | None
        failure_message: str | None
        channel_reference: str | None
        entry: dict[str, Any] | None
        completed_at: datetime | None
        batch_item: dict[str, Any] | None
        resolution: dict[str, Any] | None  # set by ExceptionResolved
        flagged_at: datetime | None  # set by ExceptionFlagged
    else:  # defaults for every payment recorded before either event (class attributes)
        resolution = None
        flagged_at = None

    @classmethod
    def record_batch_item(
        cls,
        *,
        payment_id: UUID,
        fields: dict[str, Any],
        outcome: str,
        sent_at: datetime,
        completed_at: datetime,
        actor: str,
    ) -> BatchItemProcessed:
        """The event that creates a batch item's payment in its outcome (see
        ``BatchItemProcessed``), checked; the batch engine saves it without building the
        aggregate (100,000 of them per batch). ``fields``: the Requested fields, plus
        ``batch_id``, ``batch_item`` and the outcome's ``code``, ``message``,
        ``channel_reference``, ``entry_id``, ``legs``, ``hold_account_id``."""
        if outcome not in BATCH_OUTCOME_STATES:
            raise IllegalTransition(f"a batch item cannot end {outcome!r}")
        if fields["amount_minor"] <= 0:
            raise IllegalTransition("a payment moves a positive amount")
        if (outcome == "succeeded") != (fields.get("entry_id") is not None):
            raise IllegalTransition("a batch item has postings exactly when it succeeded")
        created: Any = cls.BatchItemProcessed  # its fields come from annotations, not __init__
        return created(  # type: ignore[no-any-return]
            originator_id=payment_id,
            originator_version=1,
            timestamp=sent_at,
            originator_topic=_PAYMENT_TOPIC,
            actor=actor,
            outcome=outcome,
            completed_at=completed_at,
            **fields,
        )

    @classmethod
    def request(
        cls,
        *,
        payment_id: UUID,
        tenant: str,
        kind: PaymentKind,
        client: str,
        idempotency_key: str,
        request_fingerprint: str,
        amount_minor: int,
        currency: str,
        channel: str,
        payer: dict[str, Any],
        payee: dict[str, Any],
        description: str | None,
        metadata: dict[str, str],
        at: datetime,
        actor: str,
        batch_id: UUID | None = None,
    ) -> Payment:
        if amount_minor <= 0:
            raise IllegalTransition("a payment moves a positive amount")
        return cls._create(
            cls.Requested,
            id=payment_id,
            timestamp=at,
            actor=actor,
            tenant=tenant,
            kind=str(kind),
            client=client,
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
            amount_minor=amount_minor,
            currency=currency,
            channel=channel,
            payer=payer,
            payee=payee,
            description=description,
            metadata=metadata,
            batch_id=None if batch_id is None else str(batch_id),
        )

    # --- queries -------------------------------------------------------------------------------

    @property
    def current_state(self) -> PaymentState:
        return PaymentState(self.state)

    @property
    def is_final(self) -> bool:
        return self.current_state in FINAL_STATES

    @property
    def is_in_flight(self) -> bool:
        return self.current_state in (S.REQUESTED, S.RESERVED, S.SUBMITTED)

    @property
    def outcome_unknown(self) -> bool:
        """In ``exception``, or ``submitted`` (unknown once its sender is gone)."""
        return self.current_state in (S.EXCEPTION, S.SUBMITTED)

    @property
    def is_flagged(self) -> bool:
        return self.flagged_at is not None

    @property
    def unknown_since(self) -> datetime:
        """When the outcome became unknown: the exception, or the last step of a submitted
        payment."""
        if self.current_state is S.EXCEPTION and self.completed_at is not None:
            return self.completed_at
        return self.modified_on

    def is_abandoned(self, now: datetime, after: timedelta) -> bool:
        """Submitted, and nothing recorded for longer than ``after``: its sender died."""
        return self.current_state is S.SUBMITTED and now - self.modified_on > after

    @property
    def latency_ms(self) -> int | None:
        if self.completed_at is None:
            return None
        return int((self.completed_at - self.created_on).total_seconds() * 1000)

    # --- commands ------------------------------------------------------------------------------

    def reject(self, code: str, message: str, *, at: datetime, actor: str) -> None:
        self._check_can_move_to(S.REJECTED)
        self.trigger_event(self.Rejected, timestamp=at, actor=actor, code=code, message=message)

    def mark_reserved(self, hold_account_id: UUID | None, *, at: datetime, actor: str) -> None:
        self._check_can_move_to(S.RESERVED)
        hold = None if hold_account_id is None else str(hold_account_id)
        self.trigger_event(self.Reserved, timestamp=at, actor=actor, hold_account_id=hold)

    def mark_submitted(self, *, at: datetime, actor: str) -> None:
        self._check_can_move_to(S.SUBMITTED)
        self.trigger_event(self.Submitted, timestamp=at, actor=actor)

    def mark_succeeded(
        self,
        channel_reference: str,
        entry: JournalEntry,
        *,
        at: datetime,
        actor: str,
        resolution: str | None = None,
    ) -> None:
        self._check_can_move_to(S.SUCCEEDED)
        if entry.currency != self.currency:
            raise IllegalTransition("the entry's currency is not the payment's")
        self.trigger_event(
            self.Succeeded,
            timestamp=at,
            actor=actor,
            channel_reference=channel_reference,
            entry_id=str(entry.entry_id),
            legs=entry.to_record(),
            resolution=resolution,
        )

    def mark_failed(
        self,
        code: str,
        message: str,
        *,
        at: datetime,
        actor: str,
        channel_reference: str | None = None,
        resolution: str | None = None,
    ) -> None:
        self._check_can_move_to(S.FAILED)
        self.trigger_event(
            self.Failed,
            timestamp=at,
            actor=actor,
            code=code,
            message=message,
            channel_reference=channel_reference,
            resolution=resolution,
        )

    def mark_exception(self, code: str, message: str, *, at: datetime, actor: str) -> None:
        self._check_can_move_to(S.EXCEPTION)
        self.trigger_event(
            self.OutcomeUnknown, timestamp=at, actor=actor, code=code, message=message
        )

    def check_resolvable(self, now: datetime, abandoned_after: timedelta) -> None:
        """Only an unknown outcome can be resolved: ``exception``, or ``submitted`` and
        abandoned (a payment still being sent gets its outcome from its sender)."""
        if self.current_state is S.EXCEPTION or self.is_abandoned(now, abandoned_after):
            return
        doing = "still being sent" if self.current_state is S.SUBMITTED else self.state
        raise NotAnException(
            f"payment {self.id} is {doing}: only a payment in exception can be resolved"
        )

    def resolve_exception(
        self,
        outcome: str,
        *,
        how: str,
        reason: str,
        at: datetime,
        actor: str,
        abandoned_after: timedelta,
        entry: JournalEntry | None = None,
        channel_reference: str | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Record how the unknown outcome was found out, then the outcome: ``succeeded`` with
        its postings (``entry``, already applied to the accounts), or ``failed``."""
        self.check_resolvable(at, abandoned_after)
        if outcome not in RESOLVED_OUTCOMES:
            raise ValidationError.single("outcome", "must be succeeded or failed")
        if how not in RESOLUTION_HOWS:
            raise ValidationError.single("how", f"must be one of {', '.join(RESOLUTION_HOWS)}")
        check_reason(reason)
        if (outcome == "succeeded") != (entry is not None):
            raise IllegalTransition("a resolved payment has postings exactly when it succeeded")
        if entry is not None and entry.currency != self.currency:
            raise IllegalTransition("the entry's currency is not the payment's")
        self.trigger_event(
            self.ExceptionResolved, timestamp=at, actor=actor, outcome=outcome, how=how,
            reason=reason, channel_reference=channel_reference,
        )  # fmt: skip
        if entry is not None:
            self.mark_succeeded(channel_reference or "", entry, at=at, actor=actor, resolution=how)
        else:
            self.mark_failed(
                code or "resolved_failed", message or reason, at=at, actor=actor,
                channel_reference=channel_reference, resolution=how,
            )  # fmt: skip

    def flag_exception(self, deadline_s: int, *, at: datetime, actor: str) -> None:
        """Past the deadline and still unknown: stop asking, leave it to reconciliation."""
        if not self.outcome_unknown:
            raise NotAnException(f"payment {self.id} is {self.state}: nothing to flag")
        if self.is_flagged:
            raise IllegalTransition(f"payment {self.id} is flagged already")
        self.trigger_event(self.ExceptionFlagged, timestamp=at, actor=actor, deadline_s=deadline_s)

    def _check_can_move_to(self, target: PaymentState) -> None:
        if target not in TRANSITIONS[self.current_state]:
            raise IllegalTransition(f"payment {self.id} cannot go from {self.state} to {target}")


def check_reason(reason: str) -> None:
    """A resolution says why, in a bounded line of text."""
    if not reason.strip():
        raise ValidationError.single("reason", "is required: say why", "required")
    if len(reason) > REASON_MAX_LENGTH or "\x00" in reason:
        raise ValidationError.single(
            "reason", f"must be at most {REASON_MAX_LENGTH} characters, without NUL"
        )


_PAYMENT_TOPIC = get_topic(Payment)
