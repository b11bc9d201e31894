"""What batch commands hand back: snapshots of a batch, in minor units."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

from domain.batch_items import BatchItem
from domain.batches import Batch

MAX_LISTED_INVALID = 1_000


@dataclass(frozen=True)
class InvalidItem:
    index: int
    end_to_end_id: str
    location: str
    reason_code: str
    reason: str

    @classmethod
    def of(cls, item: BatchItem) -> InvalidItem:
        return cls(
            item.index, item.end_to_end_id, item.location, item.reason_code or "", item.reason or ""
        )


@dataclass(frozen=True)
class BatchResult:
    id: UUID
    tenant: str
    status: str
    item_count: int
    valid_item_count: int
    invalid_item_count: int
    control_sum_minor: int
    currency: str
    funding_account_id: UUID
    execution_date: date | None
    run_on: date | None
    rules: dict[str, Any]
    source: dict[str, Any]
    maker: str
    approved_by: str | None
    decided_by: str | None
    decision_reason: str | None
    counts: dict[str, int]
    amounts: dict[str, int]
    processed_count: int
    held_minor: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    failure_code: str | None
    failure_message: str | None
    version: int
    invalid_items: list[InvalidItem] = field(default_factory=list)
    replayed: bool = False

    @property
    def processing_time_ms(self) -> int | None:
        """T_b: submitted -> finished, once finished."""
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.created_at).total_seconds() * 1000)

    @classmethod
    def of(
        cls,
        batch: Batch,
        *,
        invalid_items: list[InvalidItem] | None = None,
        replayed: bool = False,
    ) -> BatchResult:
        return cls(
            id=batch.id, tenant=batch.tenant, status=batch.status, item_count=batch.item_count,
            valid_item_count=batch.valid_item_count, invalid_item_count=batch.invalid_item_count,
            control_sum_minor=batch.control_sum_minor, currency=batch.currency,
            funding_account_id=UUID(batch.funding_account_id),
            execution_date=batch.execution_date, run_on=batch.run_on, rules=dict(batch.rules),
            source=dict(batch.source), maker=batch.maker, approved_by=batch.approved_by,
            decided_by=batch.decided_by, decision_reason=batch.decision_reason,
            counts=dict(batch.counts), amounts=dict(batch.amounts),
            processed_count=sum(batch.counts.values()), held_minor=batch.held_minor,
            created_at=batch.created_on, started_at=batch.started_at,
            finished_at=batch.finished_at, failure_code=batch.failure_code,
            failure_message=batch.failure_message, version=batch.version,
            invalid_items=invalid_items or [], replayed=replayed,
        )  # fmt: skip


@dataclass(frozen=True)
class PredictedItem:
    index: int
    end_to_end_id: str
    amount_minor: int
    predicted: str  # succeeded | failed | scheduled
    reason_code: str | None
    reason: str | None
    value_date: date | None


@dataclass(frozen=True)
class DryRunResult:
    status: str  # the status the batch would reach: awaiting_approval | failed
    item_count: int
    valid_item_count: int
    invalid_item_count: int
    control_sum_minor: int
    currency: str
    funding_account_id: UUID
    available_minor: int | None
    predicted_counts: dict[str, int]
    items: list[PredictedItem]
    invalid_items: list[InvalidItem]
