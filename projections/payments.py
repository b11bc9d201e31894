"""The ``payments`` projection: one row per payment, and the per-minute ``metrics`` view.

Both tables are written in the same transaction with one tracking row, so the metrics always
agree with the payments they count: a payment's contribution to its minute bucket (by request
time, per tenant and channel) moves from its old status to its new one whenever it changes.
"""

from __future__ import annotations

import secrets
from bisect import bisect_left
from operator import itemgetter
from typing import Any, ClassVar

import orjson

from projections.base import RawEvent, ViewProjection, timestamp_us

STATUS_OF_STATE = {
    "requested": "processing", "reserved": "processing", "submitted": "processing",
    "rejected": "failed", "failed": "failed", "succeeded": "succeeded", "exception": "exception",
}  # fmt: skip
OUTCOMES = ("processing", "succeeded", "failed", "exception")
# Upper bounds of the latency histogram's buckets, in ms; the last bucket is everything above.
LATENCY_BOUNDS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
HISTOGRAM = tuple(f"h{i:02d}" for i in range(len(LATENCY_BOUNDS_MS) + 1))
MINUTE_US = 60_000_000

COLUMNS = (
    "payment_id", "tenant", "kind", "state", "status", "amount_minor", "currency", "channel",
    "payer_account_id", "payee_account_id", "payer", "payee", "description", "metadata",
    "batch_id", "failure_code", "failure_message", "channel_reference", "created_us",
    "completed_us", "latency_ms", "version", "updated_us", "position", "flagged_us", "resolution",
)  # fmt: skip
# What can change after a payment is requested.
MUTABLE = (
    "state", "status", "failure_code", "failure_message", "channel_reference", "completed_us",
    "latency_ms", "version", "updated_us", "position", "flagged_us", "resolution",
)  # fmt: skip
# The payments whose outcome is unknown, for the exception list and the resolver: a partial
# index, so only those rows are in it (queries repeat its condition: SQLite needs it verbatim).
OPEN_CONDITION = "state IN ('exception', 'submitted')"
METRIC_COUNTS = (*OUTCOMES, "latency_count", "latency_sum_ms", *HISTOGRAM)


def latency_bucket(latency_ms: int) -> int:
    return bisect_left(LATENCY_BOUNDS_MS, latency_ms)


class PaymentsProjection(ViewProjection):
    name = "payments"
    TABLES: ClassVar[dict[str, str]] = {
        "payments": (
            "payment_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL, "
            "state TEXT NOT NULL, status TEXT NOT NULL, amount_minor BIGINT NOT NULL, "
            "currency TEXT NOT NULL, channel TEXT NOT NULL, payer_account_id TEXT, "
            "payee_account_id TEXT, payer TEXT NOT NULL, payee TEXT NOT NULL, description TEXT, "
            "metadata TEXT NOT NULL, batch_id TEXT, failure_code TEXT, failure_message TEXT, "
            "channel_reference TEXT, created_us BIGINT NOT NULL, completed_us BIGINT, "
            "latency_ms BIGINT, version BIGINT NOT NULL, updated_us BIGINT NOT NULL, "
            "position BIGINT NOT NULL, flagged_us BIGINT, resolution TEXT"
        ),
        "metrics": (
            "tenant TEXT NOT NULL, channel TEXT NOT NULL, bucket_us BIGINT NOT NULL, "
            + ", ".join(f"{c} BIGINT NOT NULL DEFAULT 0" for c in METRIC_COUNTS)
            + ", PRIMARY KEY (tenant, channel, bucket_us)"
        ),
    }
    INDEXES: ClassVar[dict[str, list[str]]] = {
        "payments": [
            "tenant, created_us, payment_id",
            "tenant, status, created_us",
            "tenant, channel, created_us",
            "payer_account_id, created_us",
            "payee_account_id, created_us",
            "batch_id, created_us",
        ],
        "metrics": ["bucket_us"],
    }
    PIPELINED = True
    # Added after views existed (exception workflow): NULL in an older view's rows, as a
    # rebuild would make them (no payment had these events before).
    ADDED_COLUMNS: ClassVar[dict[str, dict[str, str]]] = {
        "payments": {"flagged_us": "BIGINT", "resolution": "TEXT"}
    }
    HANDLED = frozenset(
        f"Payment.{n}"
        for n in ("Requested", "Rejected", "Reserved", "Submitted", "Succeeded", "Failed",
                  "OutcomeUnknown", "BatchItemProcessed", "ExceptionResolved", "ExceptionFlagged")
    )  # fmt: skip

    def columns_added(self, name: str, columns: list[str]) -> None:
        if name == "payments":  # a view from before the exception workflow: its index too
            self._create_open_index()

    def _create_indexes(self, name: str) -> None:
        super()._create_indexes(name)
        if name == "payments":
            self._create_open_index()

    def _create_open_index(self) -> None:
        generation = secrets.token_hex(3)  # unique per schema/file, as the other indexes
        self.db.execute(
            f"CREATE INDEX ix_payments_open_{generation} ON {self.table('payments')} "
            f"(tenant, completed_us, payment_id) WHERE {OPEN_CONDITION}"
        )

    def prepare_page(self, events: list[RawEvent]) -> Any:
        handled = self.HANDLED
        mine = [e for e in events if e.name in handled]
        if not mine:
            return None
        created = {e.originator_id for e in mine if e.name in CREATED}
        rows = self._load_rows({e.originator_id for e in mine} - created)
        before = {pid: _contribution(row) for pid, row in rows.items()}
        for event in mine:
            if event.name == "Payment.Requested":
                rows[event.originator_id] = _new_row(event)
            elif event.name == "Payment.BatchItemProcessed":
                rows[event.originator_id] = _batch_item_row(event)
            else:
                _apply(rows[event.originator_id], event)
        changes = (
            [_all_columns(rows[pid]) for pid in created],
            [(*_mutable(row), pid) for pid, row in rows.items() if pid not in created],
            _metric_changes(rows, before),
        )
        self.keep(rows, drop=_is_final)
        return changes

    def write_changes(self, changes: Any) -> None:
        new, updated, metrics = changes
        types = self.column_types("payments")
        self.db.copy_rows(self.table("payments"), COLUMNS, new, types)
        self.db.update_rows(self.table("payments"), "payment_id", MUTABLE, updated, types)
        self.db.upsert_add(
            self.table("metrics"), ("tenant", "channel", "bucket_us"), METRIC_COUNTS, metrics,
            self.column_types("metrics"),
        )  # fmt: skip

    # --- reading and writing rows ------------------------------------------------------------

    def _load_rows(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        return self.load_rows("payments", "payment_id", COLUMNS, ids)


def _metric_changes(
    rows: dict[str, dict[str, Any]], before: dict[str, _Contribution | None]
) -> list[tuple[Any, ...]]:
    """(tenant, channel, bucket, *counts to add) for each bucket the page's payments moved."""
    deltas: dict[tuple[str, str, int], list[int]] = {}
    for pid, row in rows.items():
        after = _contribution(row)
        previous = before.get(pid)
        if after == previous:
            continue
        if previous is not None:
            _add(deltas, previous, -1)
        if after is not None:
            _add(deltas, after, 1)
    return [(*key, *delta) for key, delta in deltas.items() if any(delta)]


_all_columns = itemgetter(*COLUMNS)
FINAL_STATES = frozenset(("succeeded", "failed", "rejected"))  # no event follows these


def _is_final(row: dict[str, Any]) -> bool:
    return row["state"] in FINAL_STATES


_mutable = itemgetter(*MUTABLE)
# What one payment adds to its metrics bucket: (bucket key, outcome index, latency or None).
_Contribution = tuple[tuple[str, str, int], int, "int | None"]
_OUTCOME_INDEX = {status: i for i, status in enumerate(OUTCOMES)}
_LATENCY_COUNT, _LATENCY_SUM, _FIRST_BUCKET = len(OUTCOMES), len(OUTCOMES) + 1, len(OUTCOMES) + 2


def _contribution(row: dict[str, Any]) -> _Contribution | None:
    """Deposits are not counted."""
    if row["kind"] != "payment":
        return None
    created = row["created_us"]
    key = (row["tenant"], row["channel"], created - created % MINUTE_US)
    return key, _OUTCOME_INDEX[row["status"]], row["latency_ms"]


def _add(deltas: dict[tuple[str, str, int], list[int]], c: _Contribution, sign: int) -> None:
    key, outcome, latency = c
    delta = deltas.get(key)
    if delta is None:
        delta = deltas[key] = [0] * len(METRIC_COUNTS)
    delta[outcome] += sign
    if latency is not None:
        delta[_LATENCY_COUNT] += sign
        delta[_LATENCY_SUM] += sign * latency
        delta[_FIRST_BUCKET + latency_bucket(latency)] += sign


def _new_row(e: RawEvent) -> dict[str, Any]:
    d = e.data
    payer, payee = d["payer"], d["payee"]
    at = timestamp_us(d["timestamp"])
    return {
        "payment_id": e.originator_id, "tenant": d["tenant"], "kind": d["kind"],
        "state": "requested", "status": "processing", "amount_minor": d["amount_minor"],
        "currency": d["currency"], "channel": d["channel"],
        "payer_account_id": payer.get("account_id"), "payee_account_id": payee.get("account_id"),
        "payer": orjson.dumps(payer).decode(), "payee": orjson.dumps(payee).decode(),
        "description": d.get("description"), "metadata": orjson.dumps(d["metadata"]).decode(),
        "batch_id": d.get("batch_id"), "failure_code": None, "failure_message": None,
        "channel_reference": None, "created_us": at, "completed_us": None, "latency_ms": None,
        "version": e.version, "updated_us": at, "position": e.id, "flagged_us": None,
        "resolution": None,
    }  # fmt: skip


def _batch_item_row(e: RawEvent) -> dict[str, Any]:
    """A batch item's payment arrives in its outcome (domain/payments.py)."""
    row = _new_row(e)
    d = e.data
    state = d["outcome"]
    completed = timestamp_us(d["completed_at"])
    row["state"], row["status"] = state, STATUS_OF_STATE[state]
    row["failure_code"], row["failure_message"] = d["code"], d["message"]
    row["channel_reference"] = d["channel_reference"]
    row["completed_us"], row["updated_us"] = completed, completed
    row["latency_ms"] = int((completed - row["created_us"]) / 1_000_000 * 1000)
    return row


CREATED = frozenset(("Payment.Requested", "Payment.BatchItemProcessed"))
STATE_OF_EVENT = {
    "Payment.Rejected": "rejected", "Payment.Reserved": "reserved",
    "Payment.Submitted": "submitted", "Payment.Succeeded": "succeeded",
    "Payment.Failed": "failed", "Payment.OutcomeUnknown": "exception",
}  # fmt: skip
FINAL_EVENTS = frozenset(
    ("Payment.Rejected", "Payment.Succeeded", "Payment.Failed", "Payment.OutcomeUnknown")
)
EXCEPTION_NOTES = frozenset(("Payment.ExceptionResolved", "Payment.ExceptionFlagged"))


def _apply(row: dict[str, Any], e: RawEvent) -> None:
    """Mirror of the aggregate's ``apply`` methods (domain/payments.py) on a view row."""
    d, name = e.data, e.name
    at = timestamp_us(d["timestamp"])
    if name in EXCEPTION_NOTES:  # the state is unchanged (the outcome event follows)
        if name == "Payment.ExceptionResolved":
            row["resolution"] = d["how"]
        else:
            row["flagged_us"] = at
        row["version"], row["updated_us"], row["position"] = e.version, at, e.id
        return
    state = STATE_OF_EVENT[name]
    row["state"], row["status"] = state, STATUS_OF_STATE[state]
    if name in ("Payment.Rejected", "Payment.Failed", "Payment.OutcomeUnknown"):
        row["failure_code"], row["failure_message"] = d["code"], d["message"]
    elif name == "Payment.Succeeded":  # a resolved exception is no longer a failure
        row["failure_code"] = row["failure_message"] = None
    if name in ("Payment.Succeeded", "Payment.Failed"):
        row["channel_reference"] = d["channel_reference"]
    if name in FINAL_EVENTS:
        row["completed_us"] = at
        # Exactly as Payment.latency_ms computes it (float seconds, then truncated ms).
        row["latency_ms"] = int((at - row["created_us"]) / 1_000_000 * 1000)
    row["version"], row["updated_us"], row["position"] = e.version, at, e.id
