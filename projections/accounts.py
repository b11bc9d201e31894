"""The ``accounts`` projection: balances per account, and the ``entries`` view (statement lines).

Every posting (``Debited``, ``Credited``) becomes one statement line with the balance after it,
so a statement reads as a bank statement does. Lines are keyed by (account, account version).
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, ClassVar

from projections.base import RawEvent, ViewProjection, timestamp_us

COLUMNS = (
    "account_id", "tenant", "owner", "currency", "kind", "overdraft_limit_minor",
    "balance_minor", "reserved_minor", "available_minor", "closed", "version", "created_us",
    "updated_us", "position", "iban",
)  # fmt: skip
MUTABLE = (
    "balance_minor", "reserved_minor", "available_minor", "closed", "version", "updated_us",
    "position",
)  # fmt: skip
ENTRY_COLUMNS = (
    "account_id", "version", "entry_id", "payment_id", "amount_minor", "balance_after_minor",
    "at_us", "position",
)  # fmt: skip


class AccountsProjection(ViewProjection):
    name = "accounts"
    TABLES: ClassVar[dict[str, str]] = {
        "accounts": (
            "account_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, owner TEXT NOT NULL, "
            "currency TEXT NOT NULL, kind TEXT NOT NULL, overdraft_limit_minor BIGINT, "
            "balance_minor BIGINT NOT NULL, reserved_minor BIGINT NOT NULL, "
            "available_minor BIGINT, closed SMALLINT NOT NULL, version BIGINT NOT NULL, "
            "created_us BIGINT NOT NULL, updated_us BIGINT NOT NULL, position BIGINT NOT NULL, "
            "iban TEXT"
        ),
        "entries": (
            "account_id TEXT NOT NULL, version BIGINT NOT NULL, entry_id TEXT NOT NULL, "
            "payment_id TEXT NOT NULL, amount_minor BIGINT NOT NULL, "
            "balance_after_minor BIGINT NOT NULL, at_us BIGINT NOT NULL, "
            "position BIGINT NOT NULL, PRIMARY KEY (account_id, version)"
        ),
    }
    INDEXES: ClassVar[dict[str, list[str]]] = {
        "accounts": ["tenant, created_us"],
        "entries": ["payment_id"],
    }
    APPEND_ONLY = frozenset({"entries"})
    PIPELINED = True
    ADDED_COLUMNS: ClassVar[dict[str, dict[str, str]]] = {"accounts": {"iban": "TEXT"}}
    HANDLED = frozenset(
        f"Account.{n}"
        for n in ("Opened", "FundsReserved", "ReservationReleased", "Debited", "Credited",
                  "Closed")
    )  # fmt: skip

    def prepare_page(self, events: list[RawEvent]) -> Any:
        handled = self.HANDLED
        mine = [e for e in events if e.name in handled]
        if not mine:
            return None
        opened = {e.originator_id for e in mine if e.name == "Account.Opened"}
        rows = self._load_rows({e.originator_id for e in mine} - opened)
        entries: list[tuple[Any, ...]] = []
        for event in mine:
            if event.name == "Account.Opened":
                rows[event.originator_id] = _new_row(event)
                continue
            line = _apply(rows[event.originator_id], event)
            if line is not None:
                entries.append(line)
        for row in rows.values():
            _set_available(row)
        changes = (
            [_all_columns(rows[a]) for a in opened],
            [(*_mutable(row), a) for a, row in rows.items() if a not in opened],
            entries,
        )
        self.keep(rows)
        return changes

    def write_changes(self, changes: Any) -> None:
        new, updated, entries = changes
        types = self.column_types("accounts")
        self.db.copy_rows(self.table("accounts"), COLUMNS, new, types)
        self.db.update_rows(self.table("accounts"), "account_id", MUTABLE, updated, types)
        self.db.copy_rows(
            self.table("entries"), ENTRY_COLUMNS, entries, self.column_types("entries")
        )

    def _load_rows(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        return self.load_rows("accounts", "account_id", COLUMNS, ids)


_all_columns = itemgetter(*COLUMNS)
_mutable = itemgetter(*MUTABLE)


def _new_row(e: RawEvent) -> dict[str, Any]:
    d = e.data
    at = timestamp_us(d["timestamp"])
    row = {
        "account_id": e.originator_id, "tenant": d["tenant"], "owner": d["owner"],
        "currency": d["currency"], "kind": d["kind"],
        "overdraft_limit_minor": d["overdraft_limit_minor"], "balance_minor": 0,
        "reserved_minor": 0, "available_minor": None, "closed": 0, "version": e.version,
        "created_us": at, "updated_us": at, "position": e.id, "iban": d.get("iban"),
    }  # fmt: skip
    _set_available(row)
    return row


def _apply(row: dict[str, Any], e: RawEvent) -> tuple[Any, ...] | None:
    """Mirror of the aggregate's ``apply`` methods (domain/accounts.py); returns the statement
    line of a posting. ``available_minor`` is left to ``_set_available``, once per row."""
    d, name = e.data, e.name
    at = timestamp_us(d["timestamp"])
    row["version"], row["updated_us"], row["position"] = e.version, at, e.id
    line = None
    if name == "Account.FundsReserved":
        row["reserved_minor"] += d["amount_minor"]
    elif name == "Account.ReservationReleased":
        row["reserved_minor"] -= d["amount_minor"]
    elif name == "Account.Debited":
        if d["from_hold"]:
            row["reserved_minor"] -= d["amount_minor"]
        row["balance_minor"] -= d["amount_minor"]
        line = -d["amount_minor"]
    elif name == "Account.Credited":
        row["balance_minor"] += d["amount_minor"]
        line = d["amount_minor"]
    elif name == "Account.Closed":
        row["closed"] = 1
    if line is None:
        return None
    return (e.originator_id, e.version, d["entry_id"], d["payment_id"], line,
            row["balance_minor"], at, e.id)  # fmt: skip


def _set_available(row: dict[str, Any]) -> None:
    limit = row["overdraft_limit_minor"]
    row["available_minor"] = (
        None if limit is None else row["balance_minor"] - row["reserved_minor"] + limit
    )
