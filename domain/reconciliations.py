"""The ``Reconciliation`` aggregate: one run of a channel statement against the ledger (对账).

    running -> completed
    running -> running (restarted: a run whose process died is run again, as a new attempt)

A run records who started it, on which file (its SHA-256 names the run: the same statement
imported twice is the same run), the period and the matching tolerance, and at the end the
totals per category and the balances. Per-line results are stored in ``ReconciliationChunk``s of
up to ``RESULT_CHUNK`` items each, so a million-line statement is a thousand events, not one
enormous one. Discrepancies are then decided item by item, each decision an event with its
actor: annotate, resolve the linked exception payment, or accept with a correcting ledger entry
that a second person approves.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import IllegalTransition
from domain.ids import name_id
from domain.keys import Forbidden

RECONCILIATION_NAMESPACE = UUID("5d0c3a9e-7f41-4b2a-9c86-1e2f3a4b5c6d")
RESULT_CHUNK = 5_000
# Channels whose statement lines debit our account (payouts); the others' credit it (pay-ins).
PAYOUT_CHANNELS = frozenset({"bank_transfer"})


class Category(StrEnum):
    MATCHED = "matched"
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_IN_STATEMENT = "missing_in_statement"
    AMOUNT_MISMATCH = "amount_mismatch"
    STATUS_MISMATCH = "status_mismatch"
    DUPLICATE_IN_STATEMENT = "duplicate_in_statement"
    TIMING = "timing"


CATEGORIES = tuple(c.value for c in Category)
DISCREPANCIES = frozenset(CATEGORIES) - {Category.MATCHED, Category.TIMING}

# One result item, stored as a list (compact: a million of them per run).
ITEM_FIELDS = (
    "index",  # position in the run's results
    "category",
    "line_no",  # the statement line (None: a ledger payment with no line)
    "payment_ids",  # our payments it concerns, ";"-joined (several: a 1:N line)
    "reference",  # the channel's reference
    "statement_amount_minor",
    "ledger_amount_minor",
    "currency",
    "statement_status",
    "ledger_status",
    "booked_on",  # ISO date of the line
    "detail",  # why, in words
    "direction",  # of the line: credit (money to us) | debit (money out)
)


class CorrectionSameActor(Forbidden):
    """Four eyes: whoever proposed a correcting entry never approves it (403)."""

    code = "same_person_approval"


class ItemNotDecidable(IllegalTransition):
    """The item is not a discrepancy that can take this decision, or already took one."""

    code = "item_not_decidable"


def reconciliation_id_for(tenant: str, channel: str, file_sha256: str) -> UUID:
    """The same statement imported twice (by anyone, under any name) is the same run."""
    return name_id(RECONCILIATION_NAMESPACE, f"/tenants/{tenant}/{channel}/{file_sha256}")


def result_chunk_id(reconciliation_id: UUID, attempt: int, number: int) -> UUID:
    return name_id(reconciliation_id, f"results/{attempt}/{number}")


def suspense_account_id(tenant: str, channel: str, currency: str) -> UUID:
    """Where accepted differences wait to be explained: one per tenant, channel and currency."""
    return name_id(RECONCILIATION_NAMESPACE, f"/tenants/{tenant}/suspense/{channel}/{currency}")


def correction_entry_id(reconciliation_id: UUID, item_index: int) -> UUID:
    return name_id(reconciliation_id, f"corrections/{item_index}")


class Reconciliation(Aggregate):
    class Started(Aggregate.Created):
        actor: str
        tenant: str
        channel: str
        period_start: str  # ISO date
        period_end: str  # ISO date (inclusive)
        file_sha256: str
        file_name: str | None
        file_format: str  # csv | camt053
        file_size: int
        tolerance_days: int

        def apply(self, aggregate: Any) -> None:
            for name in (
                "tenant", "channel", "period_start", "period_end", "file_sha256", "file_name",
                "file_format", "file_size", "tolerance_days",
            ):  # fmt: skip
                setattr(aggregate, name, getattr(self, name))
            aggregate.started_by = self.actor
            aggregate.status = "running"
            aggregate.attempt = 1
            aggregate.summary = {}
            aggregate.balances = {}
            aggregate.chunk_count = 0
            aggregate.item_count = 0
            aggregate.line_count = 0
            aggregate.finished_at = None
            aggregate.decisions = {}  # item index (str) -> {"action", ...}
            aggregate.proposals = {}  # item index (str) -> the proposed correction

    class Event(Aggregate.Event):
        actor: str

    class Restarted(Event):
        attempt: int

        def apply(self, aggregate: Any) -> None:
            aggregate.attempt = self.attempt
            aggregate.status = "running"

    class Completed(Event):
        tenant: str  # repeated from the start: a webhook tells the tenant's endpoints
        channel: str
        attempt: int
        summary: dict[str, dict[str, int]]  # category -> {"count", "amount_minor"}
        balances: dict[str, Any]
        line_count: int
        item_count: int
        chunk_count: int

        def apply(self, aggregate: Any) -> None:
            aggregate.status = "completed"
            aggregate.summary = self.summary
            aggregate.balances = self.balances
            aggregate.line_count = self.line_count
            aggregate.item_count = self.item_count
            aggregate.chunk_count = self.chunk_count
            aggregate.finished_at = self.timestamp

    class ItemAnnotated(Event):
        item_index: int
        note: str

        def apply(self, aggregate: Any) -> None:
            aggregate.decisions.setdefault(str(self.item_index), {"action": "annotated"})

    class ExceptionResolved(Event):
        item_index: int
        payment_id: str
        outcome: str  # succeeded | failed
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.decisions[str(self.item_index)] = {
                "action": "exception_resolved", "payment_id": self.payment_id,
                "outcome": self.outcome,
            }  # fmt: skip

    class CorrectionProposed(Event):
        item_index: int
        amount_minor: int  # signed: > 0 debits the clearing account (credits suspense)
        currency: str
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.proposals[str(self.item_index)] = {
                "amount_minor": self.amount_minor, "currency": self.currency,
                "reason": self.reason, "proposed_by": self.actor,
            }  # fmt: skip

    class CorrectionApproved(Event):
        item_index: int
        entry_id: str

        def apply(self, aggregate: Any) -> None:
            proposal = aggregate.proposals[str(self.item_index)]
            aggregate.decisions[str(self.item_index)] = {
                "action": "accepted", "entry_id": self.entry_id,
                "amount_minor": proposal["amount_minor"], "approved_by": self.actor,
            }  # fmt: skip

    @classmethod
    def start(
        cls,
        *,
        reconciliation_id: UUID,
        tenant: str,
        channel: str,
        period_start: str,
        period_end: str,
        file_sha256: str,
        file_name: str | None,
        file_format: str,
        file_size: int,
        tolerance_days: int,
        at: datetime,
        actor: str,
    ) -> Reconciliation:
        return cls._create(
            cls.Started,
            id=reconciliation_id,
            timestamp=at,
            actor=actor,
            tenant=tenant,
            channel=channel,
            period_start=period_start,
            period_end=period_end,
            file_sha256=file_sha256,
            file_name=file_name,
            file_format=file_format,
            file_size=file_size,
            tolerance_days=tolerance_days,
        )

    if TYPE_CHECKING:  # set by the events' apply
        tenant: str
        channel: str
        period_start: str
        period_end: str
        file_sha256: str
        file_name: str | None
        file_format: str
        file_size: int
        tolerance_days: int
        started_by: str
        status: str
        attempt: int
        summary: dict[str, dict[str, int]]
        balances: dict[str, Any]
        line_count: int
        item_count: int
        chunk_count: int
        finished_at: datetime | None
        decisions: dict[str, dict[str, Any]]
        proposals: dict[str, dict[str, Any]]

    def restart(self, *, at: datetime, actor: str) -> None:
        if self.status != "running":
            raise IllegalTransition(f"reconciliation {self.id} is {self.status}, not running")
        self.trigger_event(self.Restarted, timestamp=at, actor=actor, attempt=self.attempt + 1)

    def complete(
        self,
        *,
        summary: dict[str, dict[str, int]],
        balances: dict[str, Any],
        line_count: int,
        item_count: int,
        chunk_count: int,
        at: datetime,
        actor: str,
    ) -> None:
        if self.status != "running":
            raise IllegalTransition(f"reconciliation {self.id} is {self.status}, not running")
        self.trigger_event(
            self.Completed, timestamp=at, actor=actor, tenant=self.tenant, channel=self.channel,
            attempt=self.attempt, summary=summary,
            balances=balances, line_count=line_count, item_count=item_count,
            chunk_count=chunk_count,
        )  # fmt: skip

    def _check_open(self, item_index: int) -> None:
        if self.status != "completed":
            raise ItemNotDecidable(f"reconciliation {self.id} is still {self.status}")
        decided = self.decisions.get(str(item_index))
        if decided is not None and decided["action"] != "annotated":
            raise ItemNotDecidable(f"item {item_index} was already {decided['action']}")

    def annotate(self, item_index: int, note: str, *, at: datetime, actor: str) -> None:
        if self.status != "completed":
            raise ItemNotDecidable(f"reconciliation {self.id} is still {self.status}")
        self.trigger_event(
            self.ItemAnnotated, timestamp=at, actor=actor, item_index=item_index, note=note
        )

    def record_exception_resolved(
        self, item_index: int, payment_id: UUID, outcome: str, reason: str, *, at: datetime,
        actor: str,
    ) -> None:  # fmt: skip
        self._check_open(item_index)
        self.trigger_event(
            self.ExceptionResolved, timestamp=at, actor=actor, item_index=item_index,
            payment_id=str(payment_id), outcome=outcome, reason=reason,
        )  # fmt: skip

    def propose_correction(
        self, item_index: int, amount_minor: int, currency: str, reason: str, *, at: datetime,
        actor: str,
    ) -> None:  # fmt: skip
        self._check_open(item_index)
        if str(item_index) in self.proposals:
            raise ItemNotDecidable(f"item {item_index} already has a proposed correction")
        if amount_minor == 0:
            raise ItemNotDecidable(f"item {item_index} has no difference to correct")
        self.trigger_event(
            self.CorrectionProposed, timestamp=at, actor=actor, item_index=item_index,
            amount_minor=amount_minor, currency=currency, reason=reason,
        )  # fmt: skip

    def approve_correction(self, item_index: int, *, at: datetime, actor: str) -> UUID:
        """Returns the correcting entry's id; the caller posts it in the same save."""
        self._check_open(item_index)
        proposal = self.proposals.get(str(item_index))
        if proposal is None:
            raise ItemNotDecidable(f"item {item_index} has no proposed correction to approve")
        if proposal["proposed_by"] == actor:
            raise CorrectionSameActor(
                "a correcting entry needs a second person: its proposer may not approve it"
            )
        entry_id = correction_entry_id(self.id, item_index)
        self.trigger_event(
            self.CorrectionApproved, timestamp=at, actor=actor, item_index=item_index,
            entry_id=str(entry_id),
        )  # fmt: skip
        return entry_id


class ReconciliationChunk(Aggregate):
    """Up to ``RESULT_CHUNK`` result items of one attempt of a run. Written once."""

    class Recorded(Aggregate.Created):
        actor: str
        tenant: str
        reconciliation_id: str
        attempt: int
        number: int
        items: list[list[Any]]  # ITEM_FIELDS each

        def apply(self, aggregate: Any) -> None:
            aggregate.tenant = self.tenant
            aggregate.reconciliation_id = self.reconciliation_id
            aggregate.attempt = self.attempt
            aggregate.number = self.number
            aggregate.items = self.items

    @classmethod
    def record(
        cls,
        *,
        reconciliation_id: UUID,
        tenant: str,
        attempt: int,
        number: int,
        items: list[list[Any]],
        at: datetime,
        actor: str,
    ) -> ReconciliationChunk:
        return cls._create(
            cls.Recorded,
            id=result_chunk_id(reconciliation_id, attempt, number),
            timestamp=at,
            actor=actor,
            tenant=tenant,
            reconciliation_id=str(reconciliation_id),
            attempt=attempt,
            number=number,
            items=items,
        )
