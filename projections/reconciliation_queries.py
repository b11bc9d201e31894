"""Queries over the reconciliation views: runs, one run's items (by category, paginated), all of
a run's items for the CSV export (streamed in pages), and the CSV rendering itself."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import orjson

from domain.money import format_amount
from projections.db import ViewDB
from projections.queries import Page, decode_cursor, encode_cursor
from projections.reconciliations import ITEM_COLUMNS, RUN_COLUMNS

EXPORT_PAGE = 5_000
CSV_COLUMNS = (
    "item_index", "category", "line_no", "payment_ids", "reference", "direction",
    "statement_amount", "ledger_amount", "currency", "statement_status", "ledger_status",
    "booked_on", "detail", "decision", "decided_by",
)  # fmt: skip


def run_row(r: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(RUN_COLUMNS, r, strict=True))
    row["summary"] = orjson.loads(row["summary"]) if row["summary"] else {}
    row["balances"] = orjson.loads(row["balances"]) if row["balances"] else {}
    return row


def item_row(r: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(ITEM_COLUMNS, r, strict=True))
    row["notes"] = orjson.loads(row["notes"]) if row["notes"] else []
    row["proposal"] = orjson.loads(row["proposal"]) if row["proposal"] else None
    return row


class ReconciliationQueries:
    def __init__(self, db: ViewDB, position: Callable[[], int]) -> None:
        self.db = db
        self._position = position  # () -> the reconciliations view's position

    def position(self) -> int:
        return self._position()

    def run(self, tenant: str, run_id: UUID) -> dict[str, Any] | None:
        rows = self.db.query(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM view_reconciliations "
            "WHERE reconciliation_id = ? AND tenant = ?",
            (str(run_id), tenant),
        )
        return run_row(rows[0]) if rows else None

    def runs(
        self, tenant: str, *, channel: str | None = None, limit: int = 50,
        cursor: str | None = None,
    ) -> Page:  # fmt: skip
        """Newest first."""
        as_of = self._position()
        where, params = "tenant = ?", [tenant]
        if channel is not None:
            where += " AND channel = ?"
            params.append(channel)
        if cursor:
            created_us, run_id = decode_cursor(cursor, 2)
            where += " AND (created_us < ? OR (created_us = ? AND reconciliation_id < ?))"
            params += [int(created_us), int(created_us), str(run_id)]
        rows = self.db.query(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM view_reconciliations WHERE {where} "
            f"ORDER BY created_us DESC, reconciliation_id DESC LIMIT {int(limit) + 1}",
            params,
        )
        items = [run_row(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1]["created_us"], items[-1]["reconciliation_id"])
        return Page(items, next_cursor, as_of)

    def items(
        self, tenant: str, run_id: UUID, *, category: str | None = None, limit: int = 100,
        cursor: str | None = None,
    ) -> Page:  # fmt: skip
        as_of = self._position()
        after = int(decode_cursor(cursor, 1)[0]) if cursor else -1
        where = "reconciliation_id = ? AND tenant = ? AND item_index > ?"
        params: list[Any] = [str(run_id), tenant, after]
        if category is not None:
            where += " AND category = ?"
            params.append(category)
        rows = self.db.query(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM view_reconciliation_items WHERE {where} "
            f"ORDER BY item_index LIMIT {int(limit) + 1}",
            params,
        )
        items = [item_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1]["item_index"]) if len(rows) > limit else None
        return Page(items, next_cursor, as_of)

    def item(self, tenant: str, run_id: UUID, index: int) -> dict[str, Any] | None:
        rows = self.db.query(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM view_reconciliation_items "
            "WHERE reconciliation_id = ? AND tenant = ? AND item_index = ?",
            (str(run_id), tenant, index),
        )
        return item_row(rows[0]) if rows else None

    def all_items(self, run_id: UUID, category: str | None = None) -> Iterator[dict[str, Any]]:
        after = -1
        extra, params = ("", ()) if category is None else (" AND category = ?", (category,))
        while True:
            rows = self.db.query(
                f"SELECT {', '.join(ITEM_COLUMNS)} FROM view_reconciliation_items "
                f"WHERE reconciliation_id = ? AND item_index > ?{extra} "
                f"ORDER BY item_index LIMIT {EXPORT_PAGE}",
                (str(run_id), after, *params),
            )
            for r in rows:
                yield item_row(r)
            if len(rows) < EXPORT_PAGE:
                return
            after = rows[-1][ITEM_COLUMNS.index("item_index")]


def csv_export(items: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """The items as CSV (UTF-8, header row), amounts as decimal strings, in pages."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for count, item in enumerate(items, 1):
        currency = item["currency"]
        writer.writerow((
            item["item_index"], item["category"], item["line_no"], item["payment_ids"],
            item["reference"], item["direction"], _amount(item["statement_amount_minor"], currency),
            _amount(item["ledger_amount_minor"], currency), currency, item["statement_status"],
            item["ledger_status"], item["booked_on"], item["detail"], item["decision"],
            item["decided_by"],
        ))  # fmt: skip
        if count % 2_000 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _amount(minor: int | None, currency: str | None) -> str:
    if minor is None or currency is None:
        return ""
    return format_amount(minor, currency)
