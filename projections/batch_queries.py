"""Queries over the batch views: a batch's items (filtered, paginated), all of them for a
report (streamed in pages, so a 100,000-item report never sits in memory twice), and the list
of a tenant's batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from projections.batches import BATCH_COLUMNS, ITEM_COLUMNS
from projections.db import ViewDB
from projections.queries import Page, decode_cursor, encode_cursor

REPORT_PAGE = 5_000


@dataclass(frozen=True)
class ItemRow:
    batch_id: str
    index: int
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

    @classmethod
    def of(cls, r: tuple[Any, ...]) -> ItemRow:
        d = dict(zip(ITEM_COLUMNS, r, strict=True))
        return cls(
            batch_id=d["batch_id"], index=d["item_index"], seq=d["seq"],
            end_to_end_id=d["end_to_end_id"], instruction_id=d["instruction_id"],
            payment_block_id=d["payment_block_id"], amount_minor=d["amount_minor"],
            currency=d["currency"], channel=d["channel"], payee_name=d["payee_name"],
            payee_iban=d["payee_iban"], payee_account_id=d["payee_account_id"],
            value_date=d["value_date"], status=d["status"], reason_code=d["reason_code"],
            reason=d["reason"], payment_id=d["payment_id"], attempt=d["attempt"],
            channel_reference=d["channel_reference"], location=d["location"],
        )  # fmt: skip


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
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM view_batch_items WHERE {where} "
            f"ORDER BY item_index LIMIT {int(limit) + 1}",
            params,
        )
        items = [ItemRow.of(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].index) if len(rows) > limit else None
        return Page(items, next_cursor, as_of)

    def all_items(self, batch_id: UUID) -> Iterator[ItemRow]:
        after = -1
        while True:
            rows = self.db.query(
                f"SELECT {', '.join(ITEM_COLUMNS)} FROM view_batch_items "
                f"WHERE batch_id = ? AND item_index > ? ORDER BY item_index LIMIT {REPORT_PAGE}",
                (str(batch_id), after),
            )
            for r in rows:
                yield ItemRow.of(r)
            if len(rows) < REPORT_PAGE:
                return
            after = rows[-1][ITEM_COLUMNS.index("item_index")]

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
