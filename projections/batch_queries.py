"""Queries over the batch views: a batch's items (filtered, paginated), all of them for a
report (streamed in pages, so a 100,000-item report never sits in memory twice), and the list
of a tenant's batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple
from uuid import UUID

from projections.batches import BATCH_COLUMNS, ITEM_COLUMNS
from projections.db import ViewDB
from projections.queries import Page, decode_cursor, encode_cursor

REPORT_PAGE = 5_000


class ItemRow(NamedTuple):
    """One row of ``view_batch_items`` as queries and reports read it. A named tuple built
    straight from the selected columns (``ROW_COLUMNS``, in field order): a report makes
    100,000 of them."""

    batch_id: str
    index: int  # type: ignore[assignment]  # the item's position in the file; shadows tuple.index
    seq: int
    end_to_end_id: str
    instruction_id: str | None
    payment_block_id: str | None
    amount_minor: int
    currency: str
    channel: str
    payee_name: str | None
    payee_iban: str | None
    payee_account_id: str | None
    value_date: str | None
    status: str
    reason_code: str | None
    reason: str | None
    payment_id: str | None
    attempt: int | None
    channel_reference: str | None
    location: str


# The view's columns for ItemRow's fields, in their order.
ROW_COLUMNS = tuple("item_index" if f == "index" else f for f in ItemRow._fields)
assert set(ROW_COLUMNS) <= set(ITEM_COLUMNS)
_SELECTED = ", ".join(ROW_COLUMNS)
_row = ItemRow._make
_INDEX = ROW_COLUMNS.index("item_index")


class BatchQueries:
    def __init__(self, db: ViewDB, position: Any) -> None:
        self.db = db
        self._position = position  # () -> the batches view's position

    def items(
        self,
        tenant: str,
        batch_id: UUID,
        *,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """In file order; the cursor continues after the last item of the previous page."""
        as_of = self._position()
        after = int(decode_cursor(cursor, 1)[0]) if cursor else -1
        where = "batch_id = ? AND tenant = ? AND item_index > ?"
        params: list[Any] = [str(batch_id), tenant, after]
        if status is not None:
            where += " AND status = ?"
            params.append(status)
        rows = self.db.query(
            f"SELECT {_SELECTED} FROM view_batch_items WHERE {where} "
            f"ORDER BY item_index LIMIT {int(limit) + 1}",
            params,
        )
        items = [_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].index) if len(rows) > limit else None
        return Page(items, next_cursor, as_of)

    def all_items(self, batch_id: UUID) -> Iterator[ItemRow]:
        after = -1
        while True:
            rows = self.db.query(
                f"SELECT {_SELECTED} FROM view_batch_items "
                f"WHERE batch_id = ? AND item_index > ? ORDER BY item_index LIMIT {REPORT_PAGE}",
                (str(batch_id), after),
            )
            yield from map(_row, rows)
            if len(rows) < REPORT_PAGE:
                return
            after = rows[-1][_INDEX]

    def batches(
        self, tenant: str, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page:
        """Newest first."""
        as_of = self._position()
        where, params = "tenant = ?", [tenant]
        if status is not None:
            where += " AND status = ?"
            params.append(status)
        if cursor:
            created_us, batch_id = decode_cursor(cursor, 2)
            where += " AND (created_us < ? OR (created_us = ? AND batch_id < ?))"
            params += [int(created_us), int(created_us), str(batch_id)]
        rows = self.db.query(
            f"SELECT {', '.join(BATCH_COLUMNS)} FROM view_batches WHERE {where} "
            f"ORDER BY created_us DESC, batch_id DESC LIMIT {int(limit) + 1}",
            params,
        )
        items = [dict(zip(BATCH_COLUMNS, r, strict=True)) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1]["created_us"], items[-1]["batch_id"])
        return Page(items, next_cursor, as_of)
