"""The ``reconciliations`` projection: one row per run, and one per result item.

``view_reconciliation_items`` gets a run's items from its ``ReconciliationChunk``s (only those of
the run's current attempt: a run restarted after a crash drops what its earlier attempt wrote),
then each decision on an item (annotation, exception resolved, correction proposed/approved).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from projections.base import RawEvent, ViewProjection, timestamp_us

RUN_COLUMNS = (
    "reconciliation_id", "tenant", "channel", "status", "period_start", "period_end",
    "file_sha256", "file_name", "file_format", "file_size", "tolerance_days", "started_by",
    "attempt", "line_count", "item_count", "summary", "balances", "created_us", "finished_us",
    "version", "position",
)  # fmt: skip
ITEM_COLUMNS = (
    "reconciliation_id", "item_index", "tenant", "category", "line_no", "payment_ids",
    "reference", "statement_amount_minor", "ledger_amount_minor", "currency",
    "statement_status", "ledger_status", "booked_on", "detail", "direction", "decision",
    "decided_by", "notes", "proposal", "position",
)  # fmt: skip


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class ReconciliationsProjection(ViewProjection):
    name = "reconciliations"
    TABLES: ClassVar[dict[str, str]] = {
        "reconciliations": (
            "reconciliation_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, channel TEXT NOT NULL, "
            "status TEXT NOT NULL, period_start TEXT NOT NULL, period_end TEXT NOT NULL, "
            "file_sha256 TEXT NOT NULL, file_name TEXT, file_format TEXT NOT NULL, "
            "file_size BIGINT NOT NULL, tolerance_days BIGINT NOT NULL, "
            "started_by TEXT NOT NULL, attempt BIGINT NOT NULL, line_count BIGINT, "
            "item_count BIGINT, summary TEXT, balances TEXT, created_us BIGINT NOT NULL, "
            "finished_us BIGINT, version BIGINT NOT NULL, position BIGINT NOT NULL"
        ),
        "reconciliation_items": (
            "reconciliation_id TEXT NOT NULL, item_index BIGINT NOT NULL, "
            "tenant TEXT NOT NULL, category TEXT NOT NULL, line_no BIGINT, payment_ids TEXT, "
            "reference TEXT, statement_amount_minor BIGINT, ledger_amount_minor BIGINT, "
            "currency TEXT, statement_status TEXT, ledger_status TEXT, booked_on TEXT, "
            "detail TEXT, direction TEXT, decision TEXT, decided_by TEXT, notes TEXT, "
            "proposal TEXT, position BIGINT NOT NULL, "
            "PRIMARY KEY (reconciliation_id, item_index)"
        ),
    }
    INDEXES: ClassVar[dict[str, list[str]]] = {
        "reconciliations": ["tenant, created_us"],
        "reconciliation_items": ["reconciliation_id, category, item_index"],
    }
    HANDLED = frozenset(
        {"ReconciliationChunk.Recorded"}
        | {
            f"Reconciliation.{n}"
            for n in ("Started", "Restarted", "Completed", "ItemAnnotated", "ExceptionResolved",
                      "CorrectionProposed", "CorrectionApproved")
        }
    )  # fmt: skip

    def prepare_page(self, events: list[RawEvent]) -> Any:
        handled = self.HANDLED
        mine = [e for e in events if e.name in handled]
        return mine or None

    def write_changes(self, changes: Any) -> None:
        for e in changes:
            self._apply(e)

    def _apply(self, e: RawEvent) -> None:
        d, name, db = e.data, e.name, self.db
        runs, items = self.table("reconciliations"), self.table("reconciliation_items")
        if name == "Reconciliation.Started":
            row = (
                e.originator_id, d["tenant"], d["channel"], "running", d["period_start"],
                d["period_end"], d["file_sha256"], d["file_name"], d["file_format"],
                d["file_size"], d["tolerance_days"], d["actor"], 1, None, None, None, None,
                timestamp_us(d["timestamp"]), None, e.version, e.id,
            )  # fmt: skip
            db.copy_rows(runs, RUN_COLUMNS, [row], self.column_types("reconciliations"))
        elif name == "ReconciliationChunk.Recorded":
            run_id = d["reconciliation_id"]
            current = db.query(f"SELECT attempt FROM {runs} WHERE reconciliation_id = ?", (run_id,))
            if not current or current[0][0] != d["attempt"]:
                return  # an earlier attempt's leftovers
            tenant, position = d["tenant"], e.id
            rows = [
                (run_id, r[0], tenant, *r[1:], None, None, None, None, position) for r in d["items"]
            ]
            db.copy_rows(items, ITEM_COLUMNS, rows, self.column_types("reconciliation_items"))
        elif name == "Reconciliation.Restarted":
            db.execute(
                f"UPDATE {runs} SET attempt = ?, status = 'running', version = ?, position = ? "
                "WHERE reconciliation_id = ?",
                (d["attempt"], e.version, e.id, e.originator_id),
            )
            db.execute(f"DELETE FROM {items} WHERE reconciliation_id = ?", (e.originator_id,))
        elif name == "Reconciliation.Completed":
            db.execute(
                f"UPDATE {runs} SET status = 'completed', line_count = ?, item_count = ?, "
                "summary = ?, balances = ?, finished_us = ?, version = ?, position = ? "
                "WHERE reconciliation_id = ?",
                (d["line_count"], d["item_count"], _dumps(d["summary"]), _dumps(d["balances"]),
                 timestamp_us(d["timestamp"]), e.version, e.id, e.originator_id),
            )  # fmt: skip
        else:
            self._decision(e, runs, items)

    def _decision(self, e: RawEvent, runs: str, items: str) -> None:
        d, name, db = e.data, e.name, self.db
        key = (e.originator_id, d["item_index"])
        found = db.query(
            f"SELECT decision, notes, proposal FROM {items} "
            "WHERE reconciliation_id = ? AND item_index = ?",
            key,
        )
        if not found:
            return
        decision, notes_text, proposal_text = found[0]
        notes = orjson.loads(notes_text) if notes_text else []
        proposal = orjson.loads(proposal_text) if proposal_text else None
        decided_by = None
        at = timestamp_us(d["timestamp"])
        if name == "Reconciliation.ItemAnnotated":
            notes.append({"note": d["note"], "by": d["actor"], "at_us": at})
            decision = decision or "annotated"
        elif name == "Reconciliation.ExceptionResolved":
            decision, decided_by = f"exception_resolved_{d['outcome']}", d["actor"]
            notes.append({"note": d["reason"], "by": d["actor"], "at_us": at})
        elif name == "Reconciliation.CorrectionProposed":
            decision = "correction_proposed"
            proposal = {
                "amount_minor": d["amount_minor"], "currency": d["currency"],
                "reason": d["reason"], "proposed_by": d["actor"], "at_us": at,
            }  # fmt: skip
        elif name == "Reconciliation.CorrectionApproved":
            decision, decided_by = "accepted", d["actor"]
            proposal = {**(proposal or {}), "approved_by": d["actor"], "entry_id": d["entry_id"]}
        db.execute(
            f"UPDATE {items} SET decision = ?, decided_by = COALESCE(?, decided_by), notes = ?, "
            "proposal = ?, position = ? WHERE reconciliation_id = ? AND item_index = ?",
            (decision, decided_by, _dumps(notes) if notes else None,
             _dumps(proposal) if proposal else None, e.id, *key),
        )  # fmt: skip
        db.execute(
            f"UPDATE {runs} SET version = ?, position = ? WHERE reconciliation_id = ?",
            (e.version, e.id, e.originator_id),
        )
