"""The ``batches`` projection: one row per batch (status, progress, T_b) and one per item.

``view_batch_items`` gets every item when the batch's chunks are recorded at intake (``pending``,
or ``invalid`` with its reason code), then each item's outcome from its payment's event; a batch
that ends without sending (all-or-nothing, no funds, cancelled, rejected) marks the items it
never sent. Reports and item queries read these views.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, ClassVar
from uuid import UUID

from domain.payments import batch_item_payment_id
from projections.base import RawEvent, ViewProjection, timestamp_us

BATCH_COLUMNS = (
    "batch_id", "tenant", "status", "currency", "funding_account_id", "item_count",
    "valid_item_count", "invalid_item_count", "control_sum_minor", "succeeded_count",
    "failed_count", "exception_count", "succeeded_minor", "failed_minor", "exception_minor",
    "maker", "approved_by", "format", "message_id", "execution_date", "run_on",
    "failure_code", "failure_message", "created_us", "started_us", "finished_us", "version",
    "updated_us", "position",
)  # fmt: skip
BATCH_MUTABLE = BATCH_COLUMNS[2:3] + BATCH_COLUMNS[9:15] + BATCH_COLUMNS[16:17] + (
    "run_on", "failure_code", "failure_message", "started_us", "finished_us", "version",
    "updated_us", "position",
)  # fmt: skip
ITEM_COLUMNS = (
    "item_id", "batch_id", "tenant", "item_index", "seq", "end_to_end_id", "instruction_id",
    "payment_block_id", "amount_minor", "currency", "channel", "payee_name", "payee_iban",
    "payee_account_id", "value_date", "status", "reason_code", "reason", "payment_id",
    "attempt", "channel_reference", "location", "completed_us", "position",
)  # fmt: skip
ITEM_MUTABLE = (
    "status", "reason_code", "reason", "payment_id", "attempt", "channel_reference",
    "completed_us", "position",
)  # fmt: skip
ANALYZE_AFTER_ROWS = 10_000
UNSENT_STATUS = {"failed": "failed", "cancelled": "cancelled", "rejected": "cancelled"}


def item_id(batch_id: str, index: int) -> str:
    return f"{batch_id}:{index:06d}"


class BatchesProjection(ViewProjection):
    name = "batches"
    TABLES: ClassVar[dict[str, str]] = {
        "batches": (
            "batch_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, status TEXT NOT NULL, "
            "currency TEXT NOT NULL, funding_account_id TEXT NOT NULL, "
            "item_count BIGINT NOT NULL, valid_item_count BIGINT NOT NULL, "
            "invalid_item_count BIGINT NOT NULL, control_sum_minor BIGINT NOT NULL, "
            "succeeded_count BIGINT NOT NULL, failed_count BIGINT NOT NULL, "
            "exception_count BIGINT NOT NULL, succeeded_minor BIGINT NOT NULL, "
            "failed_minor BIGINT NOT NULL, exception_minor BIGINT NOT NULL, "
            "maker TEXT NOT NULL, approved_by TEXT, format TEXT NOT NULL, message_id TEXT, "
            "execution_date TEXT, run_on TEXT, failure_code TEXT, failure_message TEXT, "
            "created_us BIGINT NOT NULL, started_us BIGINT, finished_us BIGINT, "
            "version BIGINT NOT NULL, updated_us BIGINT NOT NULL, position BIGINT NOT NULL"
        ),
        "batch_items": (
            "item_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, tenant TEXT NOT NULL, "
            "item_index BIGINT NOT NULL, seq BIGINT NOT NULL, end_to_end_id TEXT NOT NULL, "
            "instruction_id TEXT, payment_block_id TEXT, amount_minor BIGINT NOT NULL, "
            "currency TEXT NOT NULL, channel TEXT NOT NULL, payee_name TEXT, payee_iban TEXT, "
            "payee_account_id TEXT, value_date TEXT, status TEXT NOT NULL, reason_code TEXT, "
            "reason TEXT, payment_id TEXT, attempt BIGINT, channel_reference TEXT, "
            "location TEXT NOT NULL, completed_us BIGINT, position BIGINT NOT NULL"
        ),
    }
    INDEXES: ClassVar[dict[str, list[str]]] = {
        "batches": ["tenant, created_us"],
        # No index has ``status``: every item's row is updated with its outcome, and an update
        # that changes no indexed column can stay on its page (HOT, with the room STORAGE
        # leaves). A status filter reads the batch's items in order and skips the others.
        "batch_items": ["batch_id, item_index"],
    }
    STORAGE: ClassVar[dict[str, str]] = {"batch_items": "fillfactor = 50"}
    HANDLED = frozenset(
        {"BatchChunk.Recorded", "Payment.BatchItemProcessed"}
        | {
            f"Batch.{n}"
            for n in ("Submitted", "Approved", "Rejected", "Cancelled", "ProcessingStarted",
                      "GroupReserved", "GroupRecorded", "Deferred", "Finished", "RetryRequested",
                      "ItemResolved")
        }
    )  # fmt: skip

    def prepare_page(self, events: list[RawEvent]) -> Any:
        handled = self.HANDLED
        mine = [e for e in events if e.name in handled]
        if not mine:
            return None
        batch_events = [e for e in mine if e.name.startswith("Batch.")]
        created = {e.originator_id for e in batch_events if e.name == "Batch.Submitted"}
        rows = self.load_rows(
            "batches", "batch_id", BATCH_COLUMNS,
            {e.originator_id for e in batch_events} - created,
        )  # fmt: skip
        new_items: list[tuple[Any, ...]] = []
        item_updates: dict[str, tuple[Any, ...]] = {}
        unsent: list[tuple[str, str, str | None, str | None, int]] = []
        for e in mine:
            name = e.name
            if name == "BatchChunk.Recorded":
                new_items += _item_rows(e)
            elif name == "Payment.BatchItemProcessed":
                key, update = _item_outcome(e)
                item_updates[key] = update
            elif name == "Batch.Submitted":
                rows[e.originator_id] = _new_batch(e)
            else:
                _apply(rows[e.originator_id], e, item_updates, unsent)
        return (
            [_batch_columns(rows[b]) for b in created],
            [(*_batch_mutable(r), b) for b, r in rows.items() if b not in created],
            new_items,
            [(*update, key) for key, update in item_updates.items()],
            unsent,
        )

    def write_changes(self, changes: Any) -> None:
        new, updated, new_items, item_updates, unsent = changes
        batches, items = self.table("batches"), self.table("batch_items")
        types, item_types = self.column_types("batches"), self.column_types("batch_items")
        self.db.copy_rows(batches, BATCH_COLUMNS, new, types)
        self.db.update_rows(batches, "batch_id", BATCH_MUTABLE, updated, types)
        self.db.copy_rows(items, ITEM_COLUMNS, new_items, item_types)
        if len(new_items) >= ANALYZE_AFTER_ROWS and self.db.is_postgres:
            # A batch's items arrive all at once: without fresh statistics the planner takes
            # them for a few rows, and pages of a report scan the whole rest of the batch.
            self.db.execute(f"ANALYZE {items}")
        self.db.update_rows(items, "item_id", ITEM_MUTABLE, item_updates, item_types)
        for batch_id, status, code, reason, position in unsent:
            self.db.execute(
                f"UPDATE {items} SET status = ?, reason_code = COALESCE(reason_code, ?), "
                "reason = COALESCE(reason, ?), position = ? "
                "WHERE batch_id = ? AND status = 'pending'",
                (status, code, reason, position, batch_id),
            )


def count_unsent_as_failed(row: dict[str, Any]) -> None:
    """A batch row at its ``Batch.Finished`` as failed: what was never sent failed with it,
    as the aggregate counts it (``Batch.Finished.apply``)."""
    outcomes = ("succeeded", "failed", "exception")
    never_sent = row["valid_item_count"] - sum(row[f"{o}_count"] for o in outcomes)
    if never_sent > 0:
        row["failed_count"] += never_sent
        row["failed_minor"] += max(
            0, row["control_sum_minor"] - sum(row[f"{o}_minor"] for o in outcomes)
        )


_batch_columns = itemgetter(*BATCH_COLUMNS)
_batch_mutable = itemgetter(*BATCH_MUTABLE)


def _new_batch(e: RawEvent) -> dict[str, Any]:
    d = e.data
    at = timestamp_us(d["timestamp"])
    source = d["source"]
    execution = d.get("execution_date")
    return {
        "batch_id": e.originator_id, "tenant": d["tenant"], "status": "awaiting_approval",
        "currency": d["currency"], "funding_account_id": d["funding_account_id"],
        "item_count": d["item_count"], "valid_item_count": d["valid_item_count"],
        "invalid_item_count": d["invalid_item_count"],
        "control_sum_minor": d["control_sum_minor"], "succeeded_count": 0, "failed_count": 0,
        "exception_count": 0, "succeeded_minor": 0, "failed_minor": 0, "exception_minor": 0,
        "maker": d["actor"], "approved_by": None, "format": source["format"],
        "message_id": source.get("message_id"), "execution_date": _day(execution),
        "run_on": None, "failure_code": None, "failure_message": None, "created_us": at,
        "started_us": None, "finished_us": None, "version": e.version, "updated_us": at,
        "position": e.id,
    }  # fmt: skip


def _day(value: Any) -> str | None:
    """Dates are stored by the transcoder as ``{"_type_": "date_iso", "_data_": ...}``."""
    if value is None:
        return None
    return str(value["_data_"] if isinstance(value, dict) else value)


def _apply(
    row: dict[str, Any],
    e: RawEvent,
    item_updates: dict[str, tuple[Any, ...]],
    unsent: list[tuple[str, str, str | None, str | None, int]],
) -> None:
    d, name = e.data, e.name
    at = timestamp_us(d["timestamp"])
    row["version"], row["updated_us"], row["position"] = e.version, at, e.id
    if name == "Batch.Approved":
        row["approved_by"] = d["actor"]
        row["run_on"] = _day(d["run_on"])
        row["status"] = "scheduled" if row["run_on"] else "approved"
    elif name in ("Batch.Rejected", "Batch.Cancelled"):
        row["status"] = "rejected" if name == "Batch.Rejected" else "cancelled"
        row["finished_us"] = at
        reason = d.get("reason") or f"the batch was {row['status']}"
        unsent.append((e.originator_id, "cancelled", "DS02", reason, e.id))
    elif name == "Batch.ProcessingStarted" or name == "Batch.RetryRequested":
        row["status"] = "processing"
        row["started_us"] = row["started_us"] or at
        row["finished_us"] = None
    elif name == "Batch.GroupRecorded":
        for outcome, n in d["counts"].items():
            row[f"{outcome}_count"] += n
        for outcome, n in d["amounts"].items():
            row[f"{outcome}_minor"] += n
    elif name == "Batch.ItemResolved":  # an exception resolved later: its outcome now
        outcome, amount = d["outcome"], d["amount_minor"]
        row["exception_count"] -= 1
        row[f"{outcome}_count"] += 1
        row["exception_minor"] -= amount
        row[f"{outcome}_minor"] += amount
        payment_id = str(batch_item_payment_id(UUID(e.originator_id), d["index"], d["attempt"]))
        item_updates[item_id(e.originator_id, d["index"])] = (
            outcome, d["code"], None, payment_id, d["attempt"], d["channel_reference"], at, e.id,
        )  # fmt: skip
    elif name == "Batch.Deferred":
        row["status"], row["run_on"] = "scheduled", _day(d["run_on"])
    elif name == "Batch.Finished":
        if d["status"] == "failed":
            count_unsent_as_failed(row)
        row["status"], row["finished_us"] = d["status"], at
        row["failure_code"], row["failure_message"] = d["code"], d["message"]
        for index, (code, reason) in d.get("item_failures", {}).items():
            key = item_id(e.originator_id, int(index))
            item_updates[key] = ("failed", code, reason, None, None, None, at, e.id)
        if d["status"] == "failed":
            unsent.append((e.originator_id, "failed", d["code"], d["message"], e.id))


def _item_rows(e: RawEvent) -> list[tuple[Any, ...]]:
    d = e.data
    batch_id, tenant = d["batch_id"], d["tenant"]
    rows = []
    for r in d["items"]:
        payee = r[6] or {}
        status = "pending" if r[11] is None else "invalid"
        rows.append((
            item_id(batch_id, r[0]), batch_id, tenant, r[0], r[1], r[2], r[14], r[15], r[3],
            r[4], r[5], payee.get("name"), payee.get("iban"), payee.get("account_id"), r[7],
            status, r[11], r[12], None, None, None, r[10], None, e.id,
        ))  # fmt: skip
    return rows


def _item_outcome(e: RawEvent) -> tuple[str, tuple[Any, ...]]:
    d = e.data
    item = d["batch_item"]
    return item_id(d["batch_id"], item["index"]), (
        d["outcome"], d["code"], d["message"], e.originator_id, item["attempt"],
        d["channel_reference"], timestamp_us(d["completed_at"]), e.id,
    )  # fmt: skip
