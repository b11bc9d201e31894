"""The ``Batch`` aggregate: a batch payment's lifecycle and progress (批量支付).

    awaiting_approval -> approved -> processing -> completed | completed_with_failures | failed
    awaiting_approval -> scheduled (approved, execution date ahead) -> processing
    processing -> scheduled (the rest is due on a later business day: value dates, cut-off)
    awaiting_approval | scheduled -> rejected | cancelled
    awaiting_approval -> failed (all-or-nothing with invalid items: nothing is ever paid)

``submitted`` and ``validated`` are the steps of intake; a stored batch has passed both. The
batch holds progress, never per-item events: items are stored in ``BatchChunk``s and each paid
item is a ``Payment``. Every decision records its actor; the maker never approves their own batch.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import IllegalTransition
from domain.ids import name_id
from domain.keys import Forbidden

BATCH_NAMESPACE = UUID("a4f2c7e1-0b3d-4c59-8e6f-2d1c0b9a8e77")


class BatchStatus(StrEnum):
    SUBMITTED = "submitted"
    VALIDATED = "validated"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


B = BatchStatus
FINAL = frozenset({B.COMPLETED, B.COMPLETED_WITH_FAILURES, B.FAILED, B.REJECTED, B.CANCELLED})
RUNNABLE = frozenset({B.APPROVED, B.SCHEDULED, B.PROCESSING})


class MakerCannotApprove(Forbidden):
    """Four eyes: whoever submitted a batch never approves it (403)."""

    code = "maker_cannot_approve"


def batch_id_for(tenant: str, client: str, idempotency_key: str) -> UUID:
    return name_id(BATCH_NAMESPACE, f"/tenants/{tenant}/clients/{client}/keys/{idempotency_key}")


def batch_id_for_message(tenant: str, message_id: str) -> UUID:
    """A file's message id (pain.001 MsgId) names one batch per tenant: the same file sent
    twice is the same batch, whoever sends it and under whatever key."""
    return name_id(BATCH_NAMESPACE, f"/tenants/{tenant}/messages/{message_id}")


def batch_id_for_file(tenant: str, file_sha256: str) -> UUID:
    """A file without a message id (CSV) is named by its bytes: the same file uploaded twice
    is the same batch, whoever sends it and under whatever key."""
    return name_id(BATCH_NAMESPACE, f"/tenants/{tenant}/files/sha256/{file_sha256}")


class Batch(Aggregate):
    class Submitted(Aggregate.Created):
        actor: str
        tenant: str
        client: str
        idempotency_key: str | None
        fingerprint: str
        source: dict[str, Any]  # format, message id, file hash, pain.001 header echo
        funding_account_id: str
        currency: str
        execution_date: str | None  # ISO date (events hold JSON types)
        rules: dict[str, Any]
        item_count: int
        valid_item_count: int
        invalid_item_count: int
        control_sum_minor: int  # of the valid items: what the batch pays at most
        chunk_count: int

        def apply(self, aggregate: Any) -> None:
            for name in (
                "tenant", "client", "idempotency_key", "fingerprint", "source",
                "funding_account_id", "currency", "rules", "item_count",
                "valid_item_count", "invalid_item_count", "control_sum_minor", "chunk_count",
            ):  # fmt: skip
                setattr(aggregate, name, getattr(self, name))
            aggregate.execution_date = _day(self.execution_date)
            aggregate.maker = self.actor
            aggregate.status = B.AWAITING_APPROVAL.value
            aggregate.approved_by = None
            aggregate.execute_now = False
            aggregate.decided_by = None
            aggregate.decision_reason = None
            aggregate.run_on = None
            aggregate.next_seq = 0
            aggregate.groups = 0
            aggregate.counts = {"succeeded": 0, "failed": 0, "exception": 0}
            aggregate.amounts = {"succeeded": 0, "failed": 0, "exception": 0}
            aggregate.held_minor = 0
            aggregate.outcomes = {}  # item index (str) -> outcome, for items others depend on
            aggregate.started_at = None
            aggregate.finished_at = None
            aggregate.failure_code = None
            aggregate.failure_message = None
            aggregate.retries = []  # [{"attempt", "items": [[index, seq], ...]}]
            aggregate.retry_done = 0  # how many retry items have been processed
            aggregate.reservation = None  # the open group's funds decision (no funds check)
            aggregate.item_failures = {}

    class Event(Aggregate.Event):
        actor: str

    class Approved(Event):
        run_on: str | None  # ISO date; None: at once
        execute_now: bool  # at once, value dates included (a release ahead of its dates)

        def apply(self, aggregate: Any) -> None:
            aggregate.approved_by = self.actor
            aggregate.execute_now = self.execute_now
            aggregate.run_on = _day(self.run_on)
            aggregate.status = (B.SCHEDULED if self.run_on else B.APPROVED).value

    class Rejected(Event):
        reason: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.status = B.REJECTED.value
            aggregate.decided_by, aggregate.decision_reason = self.actor, self.reason
            aggregate.finished_at = self.timestamp

    class Cancelled(Event):
        reason: str | None
        # What the batch held (it started, then rolled past its cut-off), given back in the
        # same save; 0 in events recorded before this field.
        released_minor: int = 0

        def apply(self, aggregate: Any) -> None:
            aggregate.held_minor -= self.released_minor
            aggregate.status = B.CANCELLED.value
            aggregate.decided_by, aggregate.decision_reason = self.actor, self.reason
            aggregate.finished_at = self.timestamp

    class ProcessingStarted(Event):
        reserved_minor: int  # held on the funding account for the batch (0: group by group)

        def apply(self, aggregate: Any) -> None:
            aggregate.status = B.PROCESSING.value
            aggregate.held_minor += self.reserved_minor
            if aggregate.started_at is None:
                aggregate.started_at = self.timestamp

    class GroupReserved(Event):
        """Without the upfront funds check: the funds for the next group, held before it is
        sent, and the items the funding account could not cover (AM04). Kept, so that a
        resumed group sends exactly the items the first attempt may have sent."""

        next_seq: int  # the group starts here
        end_seq: int  # and ends before here: a resumed group is exactly this one
        retry_done: int
        fits: list[int]  # item indexes covered
        refused: list[int]  # item indexes not covered
        reserved_minor: int

        def apply(self, aggregate: Any) -> None:
            aggregate.held_minor += self.reserved_minor
            aggregate.reservation = {
                "next_seq": self.next_seq, "end_seq": self.end_seq,
                "retry_done": self.retry_done, "fits": self.fits, "refused": self.refused,
            }  # fmt: skip

    class GroupRecorded(Event):
        """One group of items paid (or not), saved with their payments in one transaction."""

        next_seq: int  # every position before it is done
        retry_done: int
        counts: dict[str, int]
        amounts: dict[str, int]
        reserved_minor: int  # added to the hold for this group (batches without funds check)
        released_minor: int  # given back: failed and unsent items
        debited_minor: int
        outcomes: dict[str, str]  # outcomes of items that others depend on

        def apply(self, aggregate: Any) -> None:
            aggregate.next_seq = self.next_seq
            aggregate.retry_done = self.retry_done
            aggregate.groups += 1
            for outcome, n in self.counts.items():
                aggregate.counts[outcome] = aggregate.counts.get(outcome, 0) + n
            for outcome, n in self.amounts.items():
                aggregate.amounts[outcome] = aggregate.amounts.get(outcome, 0) + n
            aggregate.held_minor += self.reserved_minor - self.released_minor - self.debited_minor
            aggregate.outcomes.update(self.outcomes)
            aggregate.reservation = None

    class Deferred(Event):
        run_on: str  # ISO date: the rest is due then (value dates ahead, or after the cut-off)

        def apply(self, aggregate: Any) -> None:
            aggregate.status = B.SCHEDULED.value
            aggregate.run_on = _day(self.run_on)

    class Finished(Event):
        status: str  # completed | completed_with_failures | failed
        code: str | None
        message: str | None
        released_minor: int
        item_failures: dict[str, list[str]]  # index -> [code, reason]: items that sank it

        def apply(self, aggregate: Any) -> None:
            if self.status == B.FAILED.value:  # what was never sent failed with the batch
                counts, amounts = aggregate.counts, aggregate.amounts
                unsent = aggregate.valid_item_count - sum(counts.values())
                if unsent > 0:
                    counts["failed"] = counts.get("failed", 0) + unsent
                    amounts["failed"] = amounts.get("failed", 0) + max(
                        0, aggregate.control_sum_minor - sum(amounts.values())
                    )
            aggregate.item_failures = self.item_failures
            aggregate.status = self.status
            aggregate.failure_code, aggregate.failure_message = self.code, self.message
            aggregate.held_minor -= self.released_minor
            aggregate.finished_at = self.timestamp

    class RetryRequested(Event):
        attempt: int
        items: list[list[int]]  # [item index, item seq] each
        reserved_minor: int

        def apply(self, aggregate: Any) -> None:
            aggregate.retries.append({"attempt": self.attempt, "items": self.items})
            aggregate.status = B.PROCESSING.value
            aggregate.held_minor += self.reserved_minor
            aggregate.finished_at = None

    class ItemResolved(Event):
        """An item whose outcome was unknown was resolved later (the exception resolver, an
        operator, reconciliation): its count and amount move from ``exception`` to its outcome,
        and its part of the hold was used or given back in the same save. The batch's final
        status stays what its run ended with."""

        index: int
        attempt: int
        outcome: str  # succeeded | failed
        amount_minor: int
        code: str | None  # why it failed
        channel_reference: str | None

        def apply(self, aggregate: Any) -> None:
            for book, n in ((aggregate.counts, 1), (aggregate.amounts, self.amount_minor)):
                book["exception"] = book.get("exception", 0) - n
                book[self.outcome] = book.get(self.outcome, 0) + n
            aggregate.held_minor -= self.amount_minor
            if str(self.index) in aggregate.outcomes:
                aggregate.outcomes[str(self.index)] = self.outcome

    if TYPE_CHECKING:
        tenant: str
        client: str
        idempotency_key: str | None
        fingerprint: str
        source: dict[str, Any]
        funding_account_id: str
        currency: str
        execution_date: date | None
        rules: dict[str, Any]
        item_count: int
        valid_item_count: int
        invalid_item_count: int
        control_sum_minor: int
        chunk_count: int
        maker: str
        status: str
        approved_by: str | None
        execute_now: bool
        decided_by: str | None
        decision_reason: str | None
        run_on: date | None
        next_seq: int
        groups: int
        counts: dict[str, int]
        amounts: dict[str, int]
        held_minor: int
        outcomes: dict[str, str]
        started_at: datetime | None
        finished_at: datetime | None
        failure_code: str | None
        failure_message: str | None
        retries: list[dict[str, Any]]
        retry_done: int
        reservation: dict[str, Any] | None
        item_failures: dict[str, list[str]]

    @classmethod
    def submit(cls, *, batch_id: UUID, at: datetime, actor: str, **fields: Any) -> Batch:
        execution = fields.pop("execution_date", None)
        return cls._create(
            cls.Submitted, id=batch_id, timestamp=at, actor=actor,
            execution_date=execution and execution.isoformat(), **fields,
        )  # fmt: skip

    # --- queries -------------------------------------------------------------------------------

    @property
    def current_status(self) -> BatchStatus:
        return BatchStatus(self.status)

    @property
    def is_final(self) -> bool:
        return self.current_status in FINAL

    @property
    def pending_retry_items(self) -> list[tuple[int, int, int]]:
        """(attempt, item index, item seq) of retries not yet processed, in request order."""
        pending = [(r["attempt"], i, s) for r in self.retries for i, s in r["items"]]
        return pending[self.retry_done :]

    # --- decisions -----------------------------------------------------------------------------

    def check_approver(self, actor: str) -> None:
        self._check_status(B.AWAITING_APPROVAL, "approved")
        if actor == self.maker:
            raise MakerCannotApprove(
                "the principal who submitted a batch cannot approve it: a second person must"
            )

    def approve(
        self, *, run_on: date | None, execute_now: bool = False, at: datetime, actor: str
    ) -> None:
        self.check_approver(actor)
        day = run_on and run_on.isoformat()
        self.trigger_event(
            self.Approved, timestamp=at, actor=actor, run_on=day, execute_now=execute_now
        )

    def reject(self, reason: str | None, *, at: datetime, actor: str) -> None:
        self._check_status(B.AWAITING_APPROVAL, "rejected")
        self.trigger_event(self.Rejected, timestamp=at, actor=actor, reason=reason)

    def cancel(self, reason: str | None, *, at: datetime, actor: str) -> int:
        """Cancel a batch not yet released; returns what it held (funds reserved when it
        started before rolling past its cut-off), which the caller gives back in the same
        save."""
        if self.current_status not in (B.AWAITING_APPROVAL, B.APPROVED, B.SCHEDULED) or (
            self.next_seq or self.groups
        ):
            raise IllegalTransition(
                f"batch {self.id} is {self.status}: only a batch not yet released can be cancelled"
            )
        held = max(self.held_minor, 0)
        self.trigger_event(
            self.Cancelled, timestamp=at, actor=actor, reason=reason, released_minor=held
        )
        return held

    def start_processing(self, reserved_minor: int, *, at: datetime, actor: str) -> None:
        if self.current_status not in RUNNABLE:
            raise IllegalTransition(f"batch {self.id} is {self.status}, not runnable")
        self.trigger_event(
            self.ProcessingStarted, timestamp=at, actor=actor, reserved_minor=reserved_minor
        )

    def reserve_group(self, *, at: datetime, actor: str, **decision: Any) -> None:
        self._check_status(B.PROCESSING, "given funds")
        self.trigger_event(self.GroupReserved, timestamp=at, actor=actor, **decision)

    def record_group(self, *, at: datetime, actor: str, **progress: Any) -> None:
        self._check_status(B.PROCESSING, "given progress")
        if progress["next_seq"] < self.next_seq or progress["retry_done"] < self.retry_done:
            raise IllegalTransition("a batch's progress never goes back")
        self.trigger_event(self.GroupRecorded, timestamp=at, actor=actor, **progress)

    def defer(self, run_on: date, *, at: datetime, actor: str) -> None:
        self._check_status(B.PROCESSING, "deferred")
        self.trigger_event(self.Deferred, timestamp=at, actor=actor, run_on=run_on.isoformat())

    def finish(
        self,
        status: BatchStatus,
        *,
        released_minor: int = 0,
        code: str | None = None,
        message: str | None = None,
        item_failures: dict[str, list[str]] | None = None,
        at: datetime,
        actor: str,
    ) -> None:
        if status not in (B.COMPLETED, B.COMPLETED_WITH_FAILURES, B.FAILED):
            raise IllegalTransition(f"a batch cannot finish {status}")
        if self.is_final:
            raise IllegalTransition(f"batch {self.id} is already {self.status}")
        self.trigger_event(
            self.Finished, timestamp=at, actor=actor, status=status.value, code=code,
            message=message, released_minor=released_minor, item_failures=item_failures or {},
        )  # fmt: skip

    def request_retry(
        self, items: list[list[int]], reserved_minor: int, *, at: datetime, actor: str
    ) -> int:
        if self.current_status not in (B.COMPLETED_WITH_FAILURES, B.FAILED) or not self.groups:
            raise IllegalTransition(
                f"batch {self.id} is {self.status}: only a processed batch with failed items "
                "can be retried"
            )
        attempt = 2 + len(self.retries)
        self.trigger_event(
            self.RetryRequested, timestamp=at, actor=actor, attempt=attempt, items=items,
            reserved_minor=reserved_minor,
        )  # fmt: skip
        return attempt

    def record_item_resolved(
        self, index: int, attempt: int, outcome: str, amount_minor: int, *, at: datetime,
        actor: str, code: str | None = None, channel_reference: str | None = None,
    ) -> None:  # fmt: skip
        if outcome not in ("succeeded", "failed"):
            raise IllegalTransition(f"an item resolves to succeeded or failed, not {outcome!r}")
        if self.counts.get("exception", 0) < 1 or self.amounts.get("exception", 0) < amount_minor:
            raise IllegalTransition(f"batch {self.id} has no item {index} in exception")
        self.trigger_event(
            self.ItemResolved, timestamp=at, actor=actor, index=index, attempt=attempt,
            outcome=outcome, amount_minor=amount_minor, code=code,
            channel_reference=channel_reference,
        )  # fmt: skip

    def _check_status(self, expected: BatchStatus, doing: str) -> None:
        if self.current_status is not expected:
            raise IllegalTransition(
                f"batch {self.id} is {self.status}: only a batch {expected} can be {doing}"
            )


def _day(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)
