"""A batch's report, from the views: CSV (one line per item) and ISO 20022 pain.002 (group
status, and a transaction status with its reason code per item).

Statuses in pain.002: a succeeded item is ``ACSC`` (settled), a failed, invalid or cancelled one
``RJCT`` with its reason code, one still in flight or with an unknown outcome ``PDNG``. The group
is ``ACSC`` when every item settled, ``RJCT`` when none did and none is pending, ``PART`` for a
mix, ``ACTC`` while the batch awaits approval and ``PDNG`` while it runs.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from application.batch_files.model import StatusReport, TransactionStatus
from application.batch_files.pain002 import write_pain002
from application.batches.results import BatchResult
from domain.money import format_amount
from projections.batch_queries import ItemRow

CSV_COLUMNS = (
    "item_index", "end_to_end_id", "amount", "currency", "beneficiary_name", "beneficiary_iban",
    "payee_account_id", "value_date", "status", "reason_code", "reason", "payment_id",
    "attempt", "channel_reference",
)  # fmt: skip
TX_STATUS = {
    "succeeded": "ACSC", "failed": "RJCT", "invalid": "RJCT", "cancelled": "RJCT",
    "pending": "PDNG", "exception": "PDNG",
}  # fmt: skip
ISO_REASON = re.compile(r"[A-Z]{2}[0-9A-Z]{2}")
IN_FLIGHT = {"awaiting_approval": "ACTC", "approved": "PDNG", "scheduled": "PDNG",
             "processing": "PDNG"}  # fmt: skip
PAIN002_VERSIONS = {"pain.002.001.10", "pain.002.001.03"}


def csv_report(batch: BatchResult, items: Iterable[ItemRow]) -> Iterator[str]:
    """The report as CSV text, a chunk of lines at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for n, item in enumerate(items, 1):
        writer.writerow((
            item.index, item.end_to_end_id, format_amount(item.amount_minor, item.currency),
            item.currency, item.payee_name or "", item.payee_iban or "",
            item.payee_account_id or "", item.value_date or "", item.status,
            item.reason_code or "", item.reason or "", item.payment_id or "",
            item.attempt or "", item.channel_reference or "",
        ))  # fmt: skip
        if n % 1_000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def pain002_report(
    batch: BatchResult, items: Iterable[ItemRow], version: str = "pain.002.001.10"
) -> bytes:
    transactions, total_minor = [], 0
    for item in items:
        transactions.append(_transaction(item))
        total_minor += item.amount_minor
    statuses = {t.status for t in transactions}
    group = IN_FLIGHT.get(batch.status) or _group_status(statuses)
    source = batch.source
    blocks = sorted({t.payment_block_id for t in transactions if t.payment_block_id})
    block_status = [(b, _group_status({t.status for t in transactions
                                      if t.payment_block_id == b})) for b in blocks]  # fmt: skip
    created = source.get("created_at")
    report = StatusReport(
        message_id=f"PL{batch.id.hex[:24]}{int(datetime.now(UTC).timestamp()) % 10**9:09d}",
        created_at=datetime.now(UTC),
        original_message_id=source.get("message_id") or str(batch.id)[:35],
        original_message_name=(
            source["format"]
            if str(source.get("format", "")).startswith("pain.001")
            else "pain.001.001.09"
        ),
        original_created_at=datetime.fromisoformat(created) if created else batch.created_at,
        original_count=batch.item_count,
        original_control_sum=(
            source.get("declared_control_sum") or format_amount(total_minor, batch.currency)
        ),
        group_status=group,
        group_reason_code=_reason(batch.failure_code) if group == "RJCT" else None,
        group_additional_info=(batch.failure_message or None) if group == "RJCT" else None,
        transactions=transactions,
        payment_blocks=block_status,
    )
    return write_pain002(report, version)


def _transaction(item: ItemRow) -> TransactionStatus:
    status = TX_STATUS[item.status]
    code = info = None
    if status == "RJCT":
        code = _reason(item.reason_code)
        info = item.reason
        if code == "NARR" and item.reason_code and not ISO_REASON.fullmatch(item.reason_code):
            info = f"{item.reason_code}: {item.reason or ''}"  # our own code, in words
    return TransactionStatus(
        end_to_end_id=item.end_to_end_id,
        status=status,
        reason_code=code,
        additional_info=info[:105] if info else None,
        instruction_id=item.instruction_id,
        amount=format_amount(item.amount_minor, item.currency) if item.amount_minor else None,
        currency=item.currency,
        payment_block_id=item.payment_block_id,
    )


def _reason(code: str | None) -> str:
    return code if code and ISO_REASON.fullmatch(code) else "NARR"


def _group_status(statuses: set[str]) -> str:
    if statuses <= {"ACSC"}:
        return "ACSC"
    if statuses <= {"RJCT"}:
        return "RJCT"
    if "ACSC" in statuses or "RJCT" in statuses:
        return "PART"
    return "PDNG"
