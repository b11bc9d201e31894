"""Queries over the payments view for the exception workflow: the open exceptions of a tenant
(``GET /v1/exceptions``, ``payledger exceptions list``) and the resolver's candidates.

Both read only the payments whose outcome is unknown, through the view's partial index on them
(projections/payments.py). A lagging view errs on the safe side: the resolver's decisions re-read
each payment, and one it does not see yet is found on its next pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from application.exceptions import Candidate
from projections.db import ViewDB, from_us
from projections.payments import OPEN_CONDITION
from projections.queries import MAX_PAGE, Page, decode_cursor, encode_cursor

LIST_COLUMNS = (
    "payment_id", "tenant", "kind", "channel", "amount_minor", "currency", "batch_id",
    "failure_code", "failure_message", "created_us", "completed_us", "updated_us", "flagged_us",
)  # fmt: skip


@dataclass(frozen=True)
class OpenException:
    """One payment in ``exception``, as the payments view has it."""

    payment_id: UUID
    tenant: str
    kind: str
    channel: str
    amount_minor: int
    currency: str
    batch_id: str | None
    code: str | None
    message: str | None
    created_at: datetime
    since: datetime  # when its outcome became unknown
    flagged_at: datetime | None

    def age_seconds(self, now: datetime) -> int:
        return max(0, int((now - self.since).total_seconds()))


class ExceptionQueries:
    """``position``: the payments view's log position (``ReadModel.position``)."""

    def __init__(self, db: ViewDB, position: Callable[[], int]) -> None:
        self.db = db
        self.position = position

    def open_exceptions(
        self,
        tenant: str,
        *,
        channel: str | None = None,
        flagged: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """The tenant's payments in ``exception``, oldest exception first; the cursor goes on
        after the last item of the previous page. Raises ``BadCursor``."""
        as_of = self.position()
        where = [OPEN_CONDITION, "state = 'exception'", "tenant = ?"]
        params: list[Any] = [tenant]
        if channel is not None:
            where.append("channel = ?")
            params.append(channel)
        if flagged is not None:
            where.append(f"flagged_us IS {'NOT ' if flagged else ''}NULL")
        if cursor:
            since_us, payment_id = decode_cursor(cursor, 2)
            where.append("(completed_us > ? OR (completed_us = ? AND payment_id > ?))")
            params += [int(since_us), int(since_us), str(payment_id)]
        limit = max(1, min(limit, MAX_PAGE))
        rows = self.db.query(
            f"SELECT {', '.join(LIST_COLUMNS)} FROM view_payments WHERE {' AND '.join(where)} "
            "ORDER BY completed_us, payment_id LIMIT ?",
            [*params, limit + 1],
        )
        items = [_open_exception(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(last[LIST_COLUMNS.index("completed_us")], last[0])
        return Page(items, next_cursor, as_of)

    def open_payments(
        self, *, tenant: str | None, after: UUID | None, limit: int
    ) -> list[Candidate]:
        """The resolver's candidates: unflagged payments in ``exception`` or ``submitted``."""
        where = [OPEN_CONDITION, "flagged_us IS NULL"]
        params: list[Any] = []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if after is not None:
            where.append("payment_id > ?")
            params.append(str(after))
        rows = self.db.query(
            "SELECT payment_id, tenant, state, channel, completed_us, updated_us "
            f"FROM view_payments WHERE {' AND '.join(where)} ORDER BY payment_id LIMIT ?",
            [*params, limit],
        )
        return [_candidate(r) for r in rows]


def _candidate(r: tuple[Any, ...]) -> Candidate:
    payment_id, tenant, state, channel, completed_us, updated_us = r
    since = completed_us if state == "exception" and completed_us is not None else updated_us
    return Candidate(UUID(payment_id), tenant, state, channel, _at(since))


def _at(us: int) -> datetime:
    at = from_us(us)
    assert at is not None
    return at


def _open_exception(r: tuple[Any, ...]) -> OpenException:
    v: dict[str, Any] = dict(zip(LIST_COLUMNS, r, strict=True))
    since = v["completed_us"] if v["completed_us"] is not None else v["updated_us"]
    return OpenException(
        payment_id=UUID(v["payment_id"]), tenant=v["tenant"], kind=v["kind"],
        channel=v["channel"], amount_minor=v["amount_minor"], currency=v["currency"],
        batch_id=v["batch_id"], code=v["failure_code"], message=v["failure_message"],
        created_at=_at(v["created_us"]), since=_at(since), flagged_at=from_us(v["flagged_us"]),
    )  # fmt: skip
