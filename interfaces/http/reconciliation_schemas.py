"""HTTP schemas of reconciliation runs and their items. Amounts are decimal strings in the
statement's currency; ``summary`` has every category, with a count and an amount."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, StringConstraints

from application.reconciliation.runs import ReconciliationResult
from domain.money import format_amount
from domain.reconciliations import CATEGORIES
from interfaces.http.schemas import InputModel
from projections.db import from_us, to_us

Category = Literal[
    "matched", "missing_in_ledger", "missing_in_statement", "amount_mismatch",
    "status_mismatch", "duplicate_in_statement", "timing",
]  # fmt: skip
Reason = Annotated[StrictStr, StringConstraints(min_length=1, max_length=500)]


class CategoryTotal(BaseModel):
    count: int
    amount: str


class ReconciliationOut(BaseModel):
    id: str
    status: Literal["running", "completed"]
    channel: str
    period_start: str
    period_end: str
    currency: str | None
    file_sha256: str
    file_name: str | None
    format: str
    started_by: str
    started_at: datetime
    finished_at: datetime | None
    line_count: int | None
    item_count: int | None
    summary: dict[str, CategoryTotal] = Field(
        description="Every category (matched, missing_in_ledger, missing_in_statement, "
        "amount_mismatch, status_mismatch, duplicate_in_statement, timing): count and amount"
    )
    discrepancy_count: int
    balances: dict[str, Any] = Field(
        description="The statement's balances (camt.053: opening and closing) and net settled "
        "amount, against the channel clearing account's movement and balance in the ledger"
    )
    attempt: int

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> ReconciliationOut:
        balances = row["balances"] or {}
        currency = balances.get("currency")
        raw = row["summary"] or {}
        summary = {
            c: CategoryTotal(
                count=raw.get(c, {}).get("count", 0),
                amount=_amount(raw.get(c, {}).get("amount_minor", 0), currency),
            )
            for c in CATEGORIES
        }
        discrepancies = sum(t.count for c, t in summary.items() if c not in ("matched", "timing"))
        return cls(
            id=row["reconciliation_id"], status=row["status"], channel=row["channel"],
            period_start=row["period_start"], period_end=row["period_end"], currency=currency,
            file_sha256=row["file_sha256"], file_name=row["file_name"],
            format=row["file_format"], started_by=row["started_by"],
            started_at=from_us(row["created_us"]), finished_at=from_us(row["finished_us"]),
            line_count=row["line_count"], item_count=row["item_count"], summary=summary,
            discrepancy_count=discrepancies, balances=_balances_out(balances),
            attempt=row["attempt"],
        )  # fmt: skip

    @classmethod
    def of_result(cls, run: ReconciliationResult) -> ReconciliationOut:
        """From the command's answer (the aggregate), not the view: consistent at once."""
        return cls.of_row({
            "reconciliation_id": str(run.id), "status": run.status, "channel": run.channel,
            "period_start": run.period_start, "period_end": run.period_end,
            "file_sha256": run.file_sha256, "file_name": run.file_name,
            "file_format": run.file_format, "started_by": run.started_by,
            "created_us": to_us(run.started_at),
            "finished_us": to_us(run.finished_at) if run.finished_at else None,
            "line_count": run.line_count, "item_count": run.item_count, "summary": run.summary,
            "balances": run.balances, "attempt": run.attempt,
        })  # fmt: skip


class ReconciliationListOut(BaseModel):
    items: list[ReconciliationOut]
    next_cursor: str | None
    as_of_position: int


class ReconciliationItemOut(BaseModel):
    index: int
    category: Category
    line_no: int | None
    payment_ids: list[str]
    reference: str | None
    direction: str | None
    statement_amount: str | None
    ledger_amount: str | None
    currency: str | None
    statement_status: str | None
    ledger_status: str | None
    booked_on: str | None
    detail: str | None
    decision: str | None
    decided_by: str | None
    notes: list[dict[str, Any]]
    proposal: dict[str, Any] | None

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> ReconciliationItemOut:
        currency = row["currency"]
        proposal = row["proposal"]
        if proposal is not None and "amount_minor" in proposal:
            proposal = {
                **proposal,
                "amount": format_amount(abs(proposal["amount_minor"]), proposal["currency"]),
                "clearing_side": "debit" if proposal["amount_minor"] > 0 else "credit",
            }
        return cls(
            index=row["item_index"], category=row["category"], line_no=row["line_no"],
            payment_ids=row["payment_ids"].split(";") if row["payment_ids"] else [],
            reference=row["reference"], direction=row["direction"],
            statement_amount=_maybe(row["statement_amount_minor"], currency),
            ledger_amount=_maybe(row["ledger_amount_minor"], currency), currency=currency,
            statement_status=row["statement_status"], ledger_status=row["ledger_status"],
            booked_on=row["booked_on"], detail=row["detail"], decision=row["decision"],
            decided_by=row["decided_by"], notes=row["notes"], proposal=proposal,
        )  # fmt: skip


class ReconciliationItemsOut(BaseModel):
    items: list[ReconciliationItemOut]
    next_cursor: str | None
    as_of_position: int


class AnnotateIn(InputModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"note": "the provider confirms a double booking"}]}
    )

    note: Reason


class ResolveExceptionIn(InputModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "settled on the card statement of 25 Nov"}]}
    )

    outcome: Literal["succeeded", "failed"] | None = Field(
        default=None,
        description="Default: what the statement says (settled: succeeded; absent or failed: "
        "failed)",
    )
    reason: Reason


class AcceptIn(InputModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "fee deducted by the provider, confirmed"}]}
    )

    reason: Reason


def _amount(minor: int, currency: str | None) -> str:
    return format_amount(minor, currency) if currency else str(minor)


def _maybe(minor: int | None, currency: str | None) -> str | None:
    return None if minor is None or currency is None else format_amount(minor, currency)


def _balances_out(balances: dict[str, Any]) -> dict[str, Any]:
    """Minor units -> decimal strings in the statement's currency."""
    currency = balances.get("currency")
    if not currency:
        return balances
    out: dict[str, Any] = {"currency": currency}
    for key, value in balances.items():
        if key.endswith("_minor") and isinstance(value, int):
            out[key.removesuffix("_minor")] = format_amount(value, currency)
        elif key == "ledger" and isinstance(value, dict):
            out["ledger"] = {
                cur: {
                    k.removesuffix("_minor"): format_amount(v, cur) if k.endswith("_minor") else v
                    for k, v in entry.items()
                }
                for cur, entry in value.items()
            }
        elif key != "currency":
            out[key] = value
    return out
