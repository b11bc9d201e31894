"""The batch engine's decisions, run by the committer: each checks the batch is where the engine
saw it, then records one step atomically (engine.py has the flow)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any
from uuid import UUID

from application.batches.engine import (
    ENGINE_ACTOR,
    Group,
    ItemOutcome,
    ensure_credit_accounts,
    group_entry_id,
    group_legs,
    item_payments,
    journal_entry,
)
from application.batches.results import BatchResult
from application.unit_of_work import UnitOfWork
from domain.accounts import Account
from domain.batch_rules import BatchRules
from domain.batches import Batch, BatchStatus
from domain.errors import Conflict
from domain.money import format_amount

if TYPE_CHECKING:
    from application.service import Payledger


class BatchMoved(Conflict):
    """The batch is not where the engine saw it (another engine recorded a step)."""

    code = "batch_moved"


class BatchEngineDecisions:
    def __init__(self, service: Payledger) -> None:
        self.service = service

    def _batch(self, uow: UnitOfWork, batch_id: UUID) -> Batch:
        batch = uow.get(batch_id, Batch)
        if batch is None:
            raise BatchMoved(f"batch {batch_id} vanished")
        return batch

    def _funding(self, uow: UnitOfWork, batch: Batch) -> Account:
        funding = uow.get(UUID(batch.funding_account_id), Account)
        assert funding is not None, "a batch's funding account exists from intake on"
        return funding

    def decide_start(self, batch_id: UUID, uow: UnitOfWork) -> BatchResult:
        batch = self._batch(uow, batch_id)
        if batch.current_status not in (BatchStatus.APPROVED, BatchStatus.SCHEDULED):
            return BatchResult.of(batch)
        rules = BatchRules.from_record(batch.rules)
        reserve = 0
        if batch.started_at is None and (rules.funds_check or rules.all_or_nothing):
            need = batch.control_sum_minor
            funding = self._funding(uow, batch)
            if funding.closed or not funding.has_sufficient_funds(need):
                available = format_amount(funding.available_minor or 0, batch.currency)
                batch.finish(
                    BatchStatus.FAILED, code="AM04",
                    message=f"the funding account has {available} {batch.currency} available, "
                    f"the batch needs {format_amount(need, batch.currency)}",
                    at=uow.now, actor=ENGINE_ACTOR,
                )  # fmt: skip
                return BatchResult.of(batch)
            funding.add_to_hold(batch.id, need, at=uow.now, actor=ENGINE_ACTOR)
            reserve = need
        batch.start_processing(reserve, at=uow.now, actor=ENGINE_ACTOR)
        return BatchResult.of(batch)

    def decide_abort(
        self, batch_id: UUID, failures: dict[str, list[str]], uow: UnitOfWork
    ) -> BatchResult:
        """All-or-nothing: some items would be refused, so nothing is sent."""
        batch = self._batch(uow, batch_id)
        if batch.started_at is not None or batch.is_final:
            return BatchResult.of(batch)
        first = min(failures, key=int)
        code, reason = failures[first]
        batch.finish(
            BatchStatus.FAILED, code=code,
            message=f"all-or-nothing: {len(failures)} item(s) would be refused, first item "
            f"{first}: {reason}; nothing was sent",
            item_failures=failures, at=uow.now, actor=ENGINE_ACTOR,
        )  # fmt: skip
        return BatchResult.of(batch)

    def decide_defer(self, batch_id: UUID, run_on: str, uow: UnitOfWork) -> BatchResult:
        batch = self._batch(uow, batch_id)
        if batch.current_status is BatchStatus.PROCESSING:
            batch.defer(date.fromisoformat(run_on), at=uow.now, actor=ENGINE_ACTOR)
        return BatchResult.of(batch)

    def decide_reserve_group(
        self,
        batch_id: UUID,
        start_seq: int,
        start_retry: int,
        end_seq: int,
        amounts: list[tuple[int, int]],
        uow: UnitOfWork,
    ) -> dict[str, Any]:
        batch = self._batch(uow, batch_id)
        if (batch.next_seq, batch.retry_done) != (start_seq, start_retry):
            raise BatchMoved(f"batch {batch_id} moved on")
        existing = batch.reservation
        if existing and (existing["next_seq"], existing["retry_done"]) == (start_seq, start_retry):
            return existing
        funding = self._funding(uow, batch)
        running = funding.available_minor
        fits, refused, total = [], [], 0
        for index, amount in amounts:
            if funding.closed or (running is not None and running < amount):
                refused.append(index)
                continue
            fits.append(index)
            total += amount
            if running is not None:
                running -= amount
        if total:
            funding.add_to_hold(batch.id, total, at=uow.now, actor=ENGINE_ACTOR)
        batch.reserve_group(
            next_seq=start_seq, end_seq=end_seq, retry_done=start_retry, fits=fits,
            refused=refused,
            reserved_minor=total, at=uow.now, actor=ENGINE_ACTOR,
        )  # fmt: skip
        assert batch.reservation is not None
        return batch.reservation

    def decide_record_group(
        self, batch_id: UUID, group: Group, outcomes: list[ItemOutcome], uow: UnitOfWork
    ) -> BatchResult:
        batch = self._batch(uow, batch_id)
        if (batch.next_seq, batch.retry_done) != (group.start_seq, group.start_retry):
            raise BatchMoved(f"batch {batch_id} moved on: the group was recorded elsewhere")
        rules = BatchRules.from_record(batch.rules)
        debit, credits = group_legs(batch, outcomes)
        entry_id = group_entry_id(batch.id, group)
        uow.add_created(item_payments(batch, outcomes, entry_id))
        funding = self._funding(uow, batch)
        at = uow.now
        if debit:
            entry = journal_entry(entry_id, batch, debit, credits)
            channels = {o.item.channel for o in outcomes}
            accounts = ensure_credit_accounts(uow, batch, credits, channels)
            funding.debit_from_hold(batch.id, entry_id, debit, at=at, actor=ENGINE_ACTOR)
            for account_id, amount in credits.items():
                accounts[account_id].credit(batch.id, entry_id, amount, at=at, actor=ENGINE_ACTOR)
            assert entry.legs  # balanced by construction (JournalEntry checks it)
        held_for = _held_items(batch, rules, group)
        release = sum(
            o.item.amount_minor for o in outcomes
            if o.outcome == "failed" and o.item.index in held_for
        )  # fmt: skip
        if release:
            funding.release_part(batch.id, release, at=at, actor=ENGINE_ACTOR)
        counts, amounts = _tally(outcomes, retry=group.retry)
        batch.record_group(
            next_seq=group.next_seq, retry_done=group.retry_done, counts=counts,
            amounts=amounts, reserved_minor=0, released_minor=release, debited_minor=debit,
            outcomes={str(o.item.index): o.outcome for o in outcomes if o.item.has_dependents},
            at=at, actor=ENGINE_ACTOR,
        )  # fmt: skip
        return BatchResult.of(batch)

    def decide_finish(self, batch_id: UUID, uow: UnitOfWork) -> BatchResult:
        batch = self._batch(uow, batch_id)
        if batch.current_status is not BatchStatus.PROCESSING or batch.pending_retry_items:
            return BatchResult.of(batch)
        if batch.next_seq < batch.item_count:
            raise BatchMoved(f"batch {batch_id} still has items to process")
        # Exceptions keep their funds held until resolved; everything else is given back.
        release = batch.held_minor - batch.amounts.get("exception", 0)
        if release > 0:
            self._funding(uow, batch).release_part(
                batch.id, release, at=uow.now, actor=ENGINE_ACTOR
            )
        succeeded = batch.counts.get("succeeded", 0)
        if succeeded == batch.item_count:
            status = BatchStatus.COMPLETED
        elif succeeded == 0:
            status = BatchStatus.FAILED
        else:
            status = BatchStatus.COMPLETED_WITH_FAILURES
        code = None if status is BatchStatus.COMPLETED else "PART" if succeeded else "NARR"
        message = None
        if status is not BatchStatus.COMPLETED:
            message = (
                f"{succeeded} of {batch.item_count} items succeeded, "
                f"{batch.counts.get('failed', 0)} failed, "
                f"{batch.counts.get('exception', 0)} with an unknown outcome, "
                f"{batch.invalid_item_count} invalid"
            )
        batch.finish(
            status, released_minor=max(release, 0), code=code, message=message,
            at=uow.now, actor=ENGINE_ACTOR,
        )  # fmt: skip
        return BatchResult.of(batch)


def _held_items(batch: Batch, rules: BatchRules, group: Group) -> set[int]:
    """The items of the group whose funds the batch holds (and must give back if they fail)."""
    if group.retry or rules.funds_check or rules.all_or_nothing:
        return {i.index for i, _a in group.items}
    reservation = batch.reservation or {}
    return set(reservation.get("fits", []))


def _tally(outcomes: list[ItemOutcome], *, retry: bool) -> tuple[dict[str, int], dict[str, int]]:
    counts = {"succeeded": 0, "failed": 0, "exception": 0}
    amounts = {"succeeded": 0, "failed": 0, "exception": 0}
    for o in outcomes:
        counts[o.outcome] += 1
        amounts[o.outcome] += o.item.amount_minor
        if retry:  # the earlier attempt failed: the item now counts under its new outcome
            counts["failed"] -= 1
            amounts["failed"] -= o.item.amount_minor
    return counts, amounts
