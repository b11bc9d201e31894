"""Rendering: plain JSON for scripts (the HTTP API's field names, amounts as decimal strings)
and rich tables for people. Card numbers never reach here: results carry brand and last4 only."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from application.results import AccountResult, EventRecord, PaymentResult
from domain.money import format_amount

# Wide enough for UUIDs when piped, so tables are not folded into unreadable columns.
PIPE_WIDTH = 200
STATUS_STYLE = {"succeeded": "green", "failed": "red", "exception": "yellow"}


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)


def note(text: str) -> None:
    """A plain line for people (no markup, no highlighting)."""
    console().print(text, markup=False, highlight=False, soft_wrap=True)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _amount(minor: int | None, currency: str) -> str | None:
    return format_amount(minor, currency) if minor is not None else None


def account_json(a: AccountResult) -> dict[str, Any]:
    return {
        "id": str(a.id),
        "owner": a.owner,
        "currency": a.currency,
        "kind": a.kind,
        "balance": format_amount(a.balance_minor, a.currency),
        "reserved": format_amount(a.reserved_minor, a.currency),
        "available": _amount(a.available_minor, a.currency),  # null: unlimited
        "overdraft_limit": _amount(a.overdraft_limit_minor, a.currency),
        "closed": a.closed,
        "iban": a.iban,
        "created_at": _iso(a.created_at),
        "updated_at": _iso(a.updated_at),
    }


def payment_json(p: PaymentResult) -> dict[str, Any]:
    return {
        "id": str(p.id),
        "kind": p.kind,
        "status": p.status,
        "state": p.state,
        "amount": format_amount(p.amount_minor, p.currency),
        "currency": p.currency,
        "channel": p.channel,
        "payer": p.payer,
        "payee": p.payee,
        "description": p.description,
        "metadata": p.metadata,
        "channel_reference": p.channel_reference,
        "failure_code": p.failure_code,
        "failure_message": p.failure_message,
        "created_at": _iso(p.created_at),
        "completed_at": _iso(p.completed_at),
        "latency_ms": p.latency_ms,
        "batch_id": p.batch_id,
    }


def event_json(e: EventRecord) -> dict[str, Any]:
    return {
        "type": e.type,
        "version": e.version,
        "timestamp": _iso(e.timestamp),
        "actor": e.actor,
        "data": e.data,
    }


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _styled_status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _cell(value: object) -> Text | str:
    # User text (owners, descriptions) must not be read as rich markup.
    if isinstance(value, Text):
        return value
    return "" if value is None else escape(str(value))


def _fields_table(title: str, rows: Iterable[tuple[str, object]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, _cell(value))
    return table


def print_account(a: AccountResult) -> None:
    data = account_json(a)
    if data["available"] is None:
        data["available"] = "unlimited"
        data["overdraft_limit"] = "unlimited"
    console().print(_fields_table(f"Account {a.id}", data.items()))


def _party(party: dict[str, Any]) -> str:
    kind = party.get("type")
    if kind == "account":
        return f"account {party.get('account_id')}"
    if kind == "card":
        return f"card {party.get('brand')} ****{party.get('last4')}"
    if kind == "bank_account":
        return f"bank account {party.get('iban')} ({party.get('name')})"
    if kind in ("alipay", "wechat_pay"):
        return f"{kind} {party.get('payer_id')}"
    return json.dumps(party, default=_default)


def print_payment(p: PaymentResult) -> None:
    data = payment_json(p)
    data["status"] = _styled_status(p.status)
    data["amount"] = f"{data['amount']} {p.currency}"
    data["payer"] = _party(p.payer)
    data["payee"] = _party(p.payee)
    data.pop("currency")
    data["metadata"] = json.dumps(p.metadata) if p.metadata else None
    console().print(_fields_table(f"Payment {p.id}", data.items()))


def print_events(events: list[EventRecord]) -> None:
    table = Table(title="Events")
    for column in ("version", "type", "timestamp", "actor"):
        table.add_column(column)
    table.add_column("data", overflow="fold")
    for e in events:
        data = json.dumps(e.data, default=_default, sort_keys=True)
        table.add_row(str(e.version), e.type, _iso(e.timestamp), _cell(e.actor), _cell(data))
    console().print(table)


def print_payments(rows: list[tuple[str, PaymentResult]], title: str) -> None:
    table = Table(title=title)
    for column in ("scenario", "id", "channel", "amount", "status", "failure code"):
        table.add_column(column, no_wrap=column in ("id", "amount"))
    for scenario, p in rows:
        table.add_row(
            _cell(scenario),
            str(p.id),
            p.channel,
            f"{format_amount(p.amount_minor, p.currency)} {p.currency}",
            _styled_status(p.status),
            p.failure_code or "",
        )
    console().print(table)


def print_trial_balance(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Trial balance: every currency must sum to 0", min_width=44)
    for column in ("currency", "total", "check"):
        table.add_column(column)
    for row in rows:
        check = Text("balanced", "green") if row["balanced"] else Text("UNBALANCED", "red")
        table.add_row(row["currency"], row["total"], check)
    console().print(table)
