"""A dry run: each item's outcome predicted from the current ledger and the batch's rules.

It walks the items in processing order exactly as the engine would, with what can be known
before anything is sent: validity, the funding account's available balance (the whole total
under the funds check, item by item without it), dependencies on items predicted to fail, the
stop rules, and value dates and the cut-off (``scheduled``). What a channel will answer cannot
be known in advance; an item that passes everything is predicted ``succeeded``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import UUID

from application.batches.intake import CheckedBatch
from application.batches.results import (
    MAX_LISTED_INVALID,
    DryRunResult,
    InvalidItem,
    PredictedItem,
)
from domain.accounts import Account
from domain.batch_rules import BatchRules
from domain.money import format_amount


def predict(
    checked: CheckedBatch, rules: BatchRules, funding: Account, booking: date
) -> DryRunResult:
    available = funding.available_minor
    covered = available is None or available >= checked.control_sum_minor
    whole_batch_refused = (rules.funds_check or rules.all_or_nothing) and not covered
    invalid = [i for i in checked.items if not i.valid]
    if rules.all_or_nothing and invalid:
        whole_batch_refused = True
    running = available
    failures = processed = 0
    outcome_of: dict[int, str] = {}
    predicted: list[PredictedItem] = []
    for item in checked.items:
        code: str | None = None
        reason: str | None = None
        if not item.valid:
            outcome, code, reason = "failed", item.reason_code, item.reason
        elif whole_batch_refused:
            outcome, code = "failed", "AM04" if not covered else "NARR"
            reason = (
                f"the funding account has {_amount(available, checked.currency)} available, "
                f"the batch needs {_amount(checked.control_sum_minor, checked.currency)}"
                if not covered
                else "all-or-nothing: the batch has invalid items, so nothing is paid"
            )
        elif stop_reached(rules, failures, processed):
            outcome, code, reason = "failed", "NARR", "the batch would stop before this item"
        elif item.depends_on is not None and outcome_of.get(item.depends_on) == "failed":
            outcome, code = "failed", "NARR"
            reason = f"depends on item {item.depends_on}, predicted to fail"
        elif not rules.funds_check and running is not None and running < item.amount_minor:
            outcome, code, reason = "failed", "AM04", "the funding account would run out here"
        else:
            outcome = "succeeded"
            if running is not None and not rules.funds_check:
                running -= item.amount_minor
        if item.valid and outcome == "succeeded" and item.value_date and item.value_date > booking:
            outcome = "scheduled"
        outcome_of[item.index] = outcome
        if item.valid and not whole_batch_refused:
            processed += 1
            failures += outcome == "failed"
        predicted.append(PredictedItem(
            item.index, item.end_to_end_id, item.amount_minor, outcome, code, reason,
            item.value_date,
        ))  # fmt: skip
    predicted.sort(key=lambda p: p.index)
    counts: dict[str, int] = {}
    for p in predicted:
        counts[p.predicted] = counts.get(p.predicted, 0) + 1
    return DryRunResult(
        status="failed" if whole_batch_refused or not checked.valid_count else "awaiting_approval",
        item_count=len(checked.items), valid_item_count=checked.valid_count,
        invalid_item_count=checked.invalid_count, control_sum_minor=checked.control_sum_minor,
        currency=checked.currency, funding_account_id=UUID(str(funding.id)),
        available_minor=available, predicted_counts=counts, items=predicted,
        invalid_items=[InvalidItem.of(i) for i in sorted(invalid, key=lambda i: i.index)][
            :MAX_LISTED_INVALID
        ],
    )  # fmt: skip


def stop_reached(rules: BatchRules, failures: int, processed: int) -> bool:
    """Whether the batch's stop rules end it after ``failures`` of ``processed`` items."""
    if rules.stop_after_failures is not None and failures >= rules.stop_after_failures:
        return True
    ratio = rules.ratio()
    return bool(ratio is not None and processed and Decimal(failures) / processed > ratio)


def _amount(amount_minor: int | None, currency: str) -> str:
    return "unlimited" if amount_minor is None else format_amount(amount_minor, currency)
