"""Transaction-level matching of a channel statement against the ledger's payments view.

Streamed, with bounded memory: the statement's lines are copied into temporary tables of the
views' database (COPY on PostgreSQL), the database joins them with ``view_payments`` (by the
channel's reference, then by our payment id), and the joined rows come back ordered by payment,
so each payment's lines are judged together and forgotten. Nothing holds a million lines or a
million payments in Python.

Categories (the API's names):
- ``matched``: the line(s) and the payment agree on amount, currency and outcome. One line per
  payment (1:1), one line for several payments (1:N, a settlement line listing our ids) or
  several lines for one payment (N:1, e.g. a split settlement) whose amounts add up.
- ``missing_in_ledger``: a line whose payment we do not have (for this tenant and channel).
- ``missing_in_statement``: a payment of the period that succeeded (or is still an exception)
  with no line.
- ``amount_mismatch``: the amounts (or currencies) differ.
- ``status_mismatch``: we say failed (or exception, or in flight) and the channel settled it,
  or we say succeeded and the channel failed or reversed it.
- ``duplicate_in_statement``: a repeated copy of a line already matched.
- ``timing``: expected to settle in another statement: a payment of the period completed after
  its end or in its last ``timing_window`` minutes and absent, or a line matched by our id alone
  whose booking date is more than ``tolerance_days`` from the payment's completion.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from domain.errors import ValidationError
from domain.reconciliations import PAYOUT_CHANNELS
from projections.db import ViewDB, to_us

STAGE_ROWS = 20_000
FETCH_ROWS = 20_000
LINE_TYPES = {
    "line_no": "bigint", "reference": "text", "n_ids": "integer", "first_id": "text",
    "amount_minor": "bigint", "currency": "text", "direction": "text", "status": "text",
    "booked_on": "text", "entry_ref": "text",
}  # fmt: skip
LINE_COLUMNS = tuple(LINE_TYPES)
ID_TYPES = {"line_no": "bigint", "payment_id": "text"}


@dataclass(frozen=True)
class MatchParams:
    tenant: str
    channel: str
    period_start: date
    period_end: date  # inclusive
    tolerance_days: int = 1
    timing_window_minutes: int = 10

    @property
    def direction(self) -> str:
        """How this channel's lines book its payments on our account."""
        return "debit" if self.channel in PAYOUT_CHANNELS else "credit"

    @property
    def start_us(self) -> int:
        return to_us(datetime.combine(self.period_start, time.min, UTC))

    @property
    def end_us(self) -> int:  # exclusive: the first instant after the period
        return to_us(datetime.combine(self.period_end + timedelta(days=1), time.min, UTC))


@dataclass
class Totals:
    """What the run counts on the way: per category, and the statement's own sums."""

    summary: dict[str, dict[str, int]] = field(default_factory=dict)
    line_count: int = 0
    currency: str | None = None  # a statement is in one currency
    settled_net_minor: int = 0  # credits - debits of settled lines (reversals subtract)
    # What the statement itself says, where its format has it (camt.053).
    opening_balance_minor: int | None = None
    closing_balance_minor: int | None = None
    account: str | None = None

    def add(self, category: str, amount_minor: int | None) -> None:
        entry = self.summary.setdefault(category, {"count": 0, "amount_minor": 0})
        entry["count"] += 1
        entry["amount_minor"] += amount_minor or 0


def _item(
    category: str,
    line: tuple[Any, ...] | None,
    payment_ids: str | None,
    ledger_amount: int | None,
    ledger_status: str | None,
    detail: str | None,
    currency: str | None = None,
) -> list[Any]:
    if line is None:
        return [category, None, payment_ids, None, None, ledger_amount, currency, None,
                ledger_status, None, detail, None]  # fmt: skip
    line_no, reference, _n, _first, amount, line_currency, direction, status, booked_on, _e = line
    return [category, line_no, payment_ids, reference, amount, ledger_amount, line_currency,
            status, ledger_status, booked_on, detail, direction]  # fmt: skip


class Matcher:
    """One matching run on its own connection to the views' database."""

    def __init__(self, db: ViewDB, params: MatchParams, *, owns_db: bool = False) -> None:
        self.db = db
        self.owns_db = owns_db  # close the connection with the run
        self.params = params
        self.suffix = secrets.token_hex(4)
        self.lines_table = f"recon_lines_{self.suffix}"
        self.ids_table = f"recon_ids_{self.suffix}"
        self.match_table = f"recon_match_{self.suffix}"
        self.totals = Totals()

    # --- staging -------------------------------------------------------------------------------

    def stage(self, lines: Iterable[Any]) -> None:
        """Copy the statement's lines (``StatementLine``s) into this run's temporary tables."""
        db = self.db
        temp = "TEMPORARY"  # this connection's own: gone with it, never seen by another
        db.execute(
            f"CREATE {temp} TABLE {self.lines_table} ("
            + ", ".join(f"{c} {t.upper()}" for c, t in LINE_TYPES.items())
            + ")"
        )
        db.execute(f"CREATE {temp} TABLE {self.ids_table} (line_no BIGINT, payment_id TEXT)")
        db.execute(f"CREATE {temp} TABLE {self.match_table} (line_no BIGINT, payment_id TEXT)")
        rows: list[tuple[Any, ...]] = []
        ids: list[tuple[Any, ...]] = []
        totals = self.totals
        for line in lines:
            payment_ids = line.payment_ids
            n_ids = len(payment_ids)
            rows.append((
                line.line_no, line.reference, n_ids, payment_ids[0] if n_ids == 1 else None,
                line.amount_minor, line.currency, line.direction, line.status,
                line.booked_on.isoformat(), line.entry_ref,
            ))  # fmt: skip
            if n_ids > 1:
                ids.extend((line.line_no, pid) for pid in payment_ids)
            totals.line_count += 1
            if line.currency != totals.currency:
                if totals.currency is not None:
                    raise ValidationError.single(
                        f"line {line.line_no}.currency",
                        f"a statement is in one currency: this line is {line.currency}, "
                        f"the earlier ones {totals.currency}",
                        "mixed_currencies",
                    )
                totals.currency = line.currency
            sign = 1 if line.direction == "credit" else -1
            if line.status == "settled":
                totals.settled_net_minor += sign * line.amount_minor
            elif line.status == "reversed":
                totals.settled_net_minor -= sign * line.amount_minor
            if len(rows) >= STAGE_ROWS:
                self._copy(rows, ids)
                rows, ids = [], []
        self._copy(rows, ids)
        for name in ("opening_balance_minor", "closing_balance_minor", "account"):
            setattr(totals, name, getattr(lines, name, None))
        if totals.currency is None:  # no lines: the file's own (camt.053), or the payments'
            totals.currency = getattr(lines, "currency", None) or self._period_currency()

    def _period_currency(self) -> str | None:
        """The currency of the period's payments, for a statement without lines."""
        params = self.params
        found = self.db.query(
            "SELECT DISTINCT currency FROM view_payments WHERE tenant = ? AND channel = ? "
            "AND created_us >= ? AND created_us < ? AND status IN ('succeeded', 'exception') "
            "LIMIT 2",
            (params.tenant, params.channel, params.start_us, params.end_us),
        )
        if len(found) > 1:
            raise ValidationError.single(
                "file",
                "the statement has no lines and this channel's payments of the period are in "
                "several currencies: send one statement per currency, with its lines",
                "currency_unknown",
            )
        return str(found[0][0]) if found else None

    def _copy(self, rows: list[tuple[Any, ...]], ids: list[tuple[Any, ...]]) -> None:
        with self.db.transaction():
            self.db.copy_rows(self.lines_table, LINE_COLUMNS, rows, LINE_TYPES)
            self.db.copy_rows(self.ids_table, tuple(ID_TYPES), ids, ID_TYPES)

    def resolve(self) -> None:
        """Which payment each line is about: by the channel's reference, else by our id."""
        p, c = self.params.tenant, self.params.channel
        # Lines find their payment by the channel's reference: the payments view needs an
        # index on it (made once; a rebuild of the views drops it, the next run makes it again).
        self.db.execute(
            "CREATE INDEX IF NOT EXISTS ix_payments_channel_reference "
            "ON view_payments (channel_reference)"
        )
        with self.db.transaction():
            self.db.execute(
                f"CREATE INDEX {self.lines_table}_ref ON {self.lines_table} (reference)"
            )
            self.db.execute(
                f"INSERT INTO {self.match_table} (line_no, payment_id) "
                f"SELECT l.line_no, COALESCE(p1.payment_id, p2.payment_id) "
                f"FROM {self.lines_table} l "
                "LEFT JOIN view_payments p1 ON p1.channel_reference = l.reference "
                "AND p1.tenant = ? AND p1.channel = ? "
                "LEFT JOIN view_payments p2 ON p2.payment_id = l.first_id "
                "AND p2.tenant = ? AND p2.channel = ? "
                "WHERE l.n_ids <= 1",
                (p, c, p, c),
            )
            self.db.execute(
                f"INSERT INTO {self.match_table} (line_no, payment_id) "
                f"SELECT i.line_no, p.payment_id FROM {self.ids_table} i "
                "JOIN view_payments p ON p.payment_id = i.payment_id "
                "AND p.tenant = ? AND p.channel = ?",
                (p, c),
            )
            self.db.execute(
                f"CREATE INDEX {self.match_table}_pid ON {self.match_table} (payment_id)"
            )
            if self.db.is_postgres:
                self.db.execute(f"ANALYZE {self.match_table}")
                self.db.execute(f"ANALYZE {self.lines_table}")

    # --- judging -------------------------------------------------------------------------------

    def items(self) -> Iterator[list[Any]]:
        """Every result, streamed: lines about one payment, 1:N lines, then absent payments."""
        yield from self._single_payment_lines()
        yield from self._multi_payment_lines()
        yield from self._missing_in_statement()

    def _stream(self, statement: str, params: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        db = self.db
        if not db.is_postgres:
            with db._lock:
                yield from db.conn.execute(statement, params)
            return
        with db._lock, db.conn.transaction(), db.conn.cursor(name=f"c_{self.suffix}") as cur:
            cur.itersize = FETCH_ROWS
            cur.execute(db.sql(statement), params)
            yield from cur

    def _single_payment_lines(self) -> Iterator[list[Any]]:
        columns = ", ".join(f"l.{c}" for c in LINE_COLUMNS)
        rows = self._stream(
            f"SELECT m.payment_id, {columns}, p.amount_minor, p.currency, p.status, "
            "p.completed_us, p.channel_reference "
            f"FROM {self.lines_table} l JOIN {self.match_table} m ON m.line_no = l.line_no "
            "LEFT JOIN view_payments p ON p.payment_id = m.payment_id "
            "WHERE l.n_ids <= 1 ORDER BY m.payment_id, l.line_no",
            (),
        )
        group: list[tuple[Any, ...]] = []
        current: Any = object()
        for row in rows:
            if row[0] != current:
                if group:
                    yield from self._judge_group(group)
                group, current = [], row[0]
            group.append(row)
        if group:
            yield from self._judge_group(group)

    def _judge_group(self, rows: list[tuple[Any, ...]]) -> Iterator[list[Any]]:
        payment_id = rows[0][0]
        lines = [row[1:11] for row in rows]
        if payment_id is None:
            for line in lines:
                yield self._count(_item(
                    "missing_in_ledger", line, None, None, None,
                    "no payment of this channel has this reference or id",
                ))  # fmt: skip
            return
        amount, currency, status, completed_us, channel_reference = rows[0][11:16]
        if len(lines) == 1:
            yield self._count(self._judge_one(lines[0], payment_id, amount, currency, status,
                                              completed_us, channel_reference))  # fmt: skip
            return
        # Several lines for one payment: a split settlement (N:1), a charge reversed, or
        # repeated copies of a line.
        net = sum(_signed_status(line) for line in lines)
        split = status == "succeeded" and net == amount
        undone = status == "failed" and net == 0 and any(line[7] == "reversed" for line in lines)
        same_way = all(line[5] == currency and line[6] == self.params.direction for line in lines)
        if (split or undone) and same_way:
            detail = (
                f"one of {len(lines)} lines settling this payment (N:1)"
                if split
                else "charged, then reversed: nothing settled, as the ledger says"
            )
            for line in lines:
                yield self._count(_item("matched", line, payment_id, amount, status, detail))
            return
        seen: list[tuple[Any, ...]] = []
        for line in lines:
            key = line[1], line[4], line[5], line[7], line[8]  # not the entry's own id
            if key in seen:
                yield self._count(_item(
                    "duplicate_in_statement", line, payment_id, amount, status,
                    f"repeats line {lines[seen.index(key)][0]}",
                ))  # fmt: skip
                continue
            seen.append(key)
            yield self._count(self._judge_one(line, payment_id, amount, currency, status,
                                              completed_us, channel_reference))  # fmt: skip

    def _judge_one(
        self,
        line: tuple[Any, ...],
        payment_id: str,
        amount: int,
        currency: str,
        status: str,
        completed_us: int | None,
        channel_reference: str | None,
    ) -> list[Any]:
        line_amount, line_currency, line_status = line[4], line[5], line[7]
        if line_currency != currency:
            return _item("amount_mismatch", line, payment_id, amount, status,
                         f"the statement says {line_currency}, the ledger {currency}")  # fmt: skip
        if (wrong_way := self._wrong_way(line)) is not None:
            return _item("amount_mismatch", line, payment_id, amount, status, wrong_way)
        settled = line_status == "settled"
        if line_amount != amount and (settled or status == "succeeded"):
            return _item(
                "amount_mismatch",
                line,
                payment_id,
                amount,
                status,
                f"the statement says {line_amount}, the ledger {amount} (minor units)",
            )
        if settled and status != "succeeded":
            said = {"failed": "failed", "exception": "an open exception"}.get(status, status)
            return _item("status_mismatch", line, payment_id, amount, status,
                         f"the channel settled it; the ledger has it {said}")  # fmt: skip
        if not settled and status == "succeeded":
            return _item(
                "status_mismatch",
                line,
                payment_id,
                amount,
                status,
                f"the ledger has it succeeded; the channel says {line_status}",
            )
        if not settled and status == "exception":
            return _item(
                "status_mismatch",
                line,
                payment_id,
                amount,
                status,
                f"an open exception in the ledger; the channel says {line_status}",
            )
        if (
            line[1] != channel_reference
            and completed_us is not None
            and abs(_day_of(completed_us) - date.fromisoformat(line[8]))
            > timedelta(days=self.params.tolerance_days)
        ):
            return _item("timing", line, payment_id, amount, status,
                         f"booked {line[8]}, completed {_day_of(completed_us)}: outside the "
                         f"{self.params.tolerance_days}-day tolerance")  # fmt: skip
        return _item("matched", line, payment_id, amount, status, None)

    def _wrong_way(self, line: tuple[Any, ...]) -> str | None:
        """Why a line booked the other way round (a debit for a pay-in) is no match."""
        if line[6] == self.params.direction:
            return None
        return (
            f"the statement books it as a {line[6]}; {self.params.channel} payments are "
            f"{self.params.direction}s on our account"
        )

    def _multi_payment_lines(self) -> Iterator[list[Any]]:
        columns = ", ".join(f"l.{c}" for c in LINE_COLUMNS)
        rows = self._stream(
            f"SELECT {columns}, i.payment_id, p.amount_minor, p.currency, p.status, "
            f"(SELECT MIN(o.line_no) FROM {self.match_table} o "
            "WHERE o.payment_id = i.payment_id AND o.line_no <> i.line_no) "
            f"FROM {self.lines_table} l JOIN {self.ids_table} i ON i.line_no = l.line_no "
            "LEFT JOIN view_payments p ON p.payment_id = i.payment_id "
            "AND p.tenant = ? AND p.channel = ? "
            "WHERE l.n_ids > 1 ORDER BY l.line_no, i.payment_id",
            (self.params.tenant, self.params.channel),
        )
        group: list[tuple[Any, ...]] = []
        for row in rows:
            if group and row[0] != group[0][0]:
                yield self._count(self._judge_multi(group))
                group = []
            group.append(row)
        if group:
            yield self._count(self._judge_multi(group))

    def _judge_multi(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        line = rows[0][:10]
        ids = ";".join(row[10] for row in rows)
        found = [row for row in rows if row[11] is not None]
        ledger_total = sum(row[11] for row in found)
        statuses = {row[13] for row in found}
        status = statuses.pop() if len(statuses) == 1 else "mixed"
        if not found:
            return _item(
                "missing_in_ledger",
                line,
                ids,
                None,
                None,
                "none of the payments this line settles is in the ledger",
            )
        elsewhere = [(row[10], row[14]) for row in found if row[14] is not None]
        if elsewhere:
            payment, other = elsewhere[0]
            return _item("duplicate_in_statement", line, ids, ledger_total, status,
                         f"payment {payment} is settled on line {other} too")  # fmt: skip
        if len(found) < len(rows):
            missing = [row[10] for row in rows if row[11] is None]
            return _item("amount_mismatch", line, ids, ledger_total, status,
                         f"{len(missing)} of {len(rows)} payments are not in the ledger: "
                         + ";".join(missing[:5]))  # fmt: skip
        if (wrong_way := self._wrong_way(line)) is not None:
            return _item("amount_mismatch", line, ids, ledger_total, status, wrong_way)
        if any(row[12] != line[5] for row in found) or ledger_total != line[4]:
            return _item("amount_mismatch", line, ids, ledger_total, status,
                         f"the line says {line[4]}, its {len(rows)} payments add up to "
                         f"{ledger_total} (minor units)")  # fmt: skip
        settled = line[7] == "settled"
        if settled != (status == "succeeded"):
            return _item(
                "status_mismatch",
                line,
                ids,
                ledger_total,
                status,
                f"the channel says {line[7]}, the ledger {status}",
            )
        return _item(
            "matched",
            line,
            ids,
            ledger_total,
            status,
            f"one line settling {len(rows)} payments (1:N)",
        )

    def _missing_in_statement(self) -> Iterator[list[Any]]:
        params = self.params
        late_us = params.end_us - params.timing_window_minutes * 60_000_000
        rows = self._stream(
            "SELECT p.payment_id, p.amount_minor, p.currency, p.status, p.created_us, "
            "p.completed_us FROM view_payments p "
            "WHERE p.tenant = ? AND p.channel = ? AND p.created_us >= ? AND p.created_us < ? "
            "AND p.status IN ('succeeded', 'exception') AND p.currency = ? AND NOT EXISTS "
            f"(SELECT 1 FROM {self.match_table} m WHERE m.payment_id = p.payment_id) "
            "ORDER BY p.created_us, p.payment_id",
            (
                params.tenant,
                params.channel,
                params.start_us,
                params.end_us,
                self.totals.currency or "",
            ),
        )
        for payment_id, amount, currency, status, created_us, completed_us in rows:
            finished_us = completed_us or created_us
            if status == "succeeded" and (finished_us >= params.end_us or finished_us >= late_us):
                yield self._count(_item(
                    "timing", None, payment_id, amount, status,
                    "completed at the end of the period: expected in the next statement",
                    currency,
                ))  # fmt: skip
                continue
            detail = (
                "an open exception the channel does not list: it was probably never charged"
                if status == "exception"
                else "succeeded in the ledger, not in the statement"
            )
            yield self._count(_item("missing_in_statement", None, payment_id, amount, status,
                                    detail, currency))  # fmt: skip

    def _count(self, item: list[Any]) -> list[Any]:
        amount = item[4] if item[4] is not None else item[5]
        self.totals.add(item[0], amount)
        return item

    # --- balances ------------------------------------------------------------------------------

    def ledger_balances(self, clearing_account_id: Callable[[str], str]) -> dict[str, Any]:
        """The clearing account's movement in the period and balance at its end, per currency
        of the statement: what the channel should have settled, from our side."""
        found: dict[str, Any] = {}
        for currency in [self.totals.currency] if self.totals.currency else []:
            account_id = clearing_account_id(currency)
            movement = self.db.query(
                "SELECT COALESCE(SUM(amount_minor), 0) FROM view_entries "
                "WHERE account_id = ? AND at_us >= ? AND at_us < ?",
                (account_id, self.params.start_us, self.params.end_us),
            )[0][0]
            balance = self.db.query(
                "SELECT balance_after_minor FROM view_entries WHERE account_id = ? AND at_us < ? "
                "ORDER BY version DESC LIMIT 1",
                (account_id, self.params.end_us),
            )
            found[currency] = {
                "clearing_account_id": account_id,
                "movement_minor": int(movement),
                "balance_at_end_minor": int(balance[0][0]) if balance else 0,
            }
        return found

    def close(self) -> None:
        """Temporary tables go with the connection; a shared one drops them now."""
        if self.owns_db:
            self.db.close()
            return
        for table in (self.lines_table, self.ids_table, self.match_table):
            self.db.execute(f"DROP TABLE IF EXISTS {table}")


def _signed_status(line: tuple[Any, ...]) -> int:
    """A line's amount as it counts towards its payment: reversals take it back."""
    if line[7] == "settled":
        return int(line[4])
    if line[7] == "reversed":
        return -int(line[4])
    return 0


def _day_of(us: int) -> date:
    return datetime.fromtimestamp(us / 1_000_000, UTC).date()


def matcher_factory(store: Any) -> Callable[[Any, str], Matcher]:
    """For ``ReconciliationHandlers.run``: a matcher on its own connection to ``store``'s views
    for a run's command (channel, period, tolerances) and tenant."""

    def make(cmd: Any, tenant: str) -> Matcher:
        params = MatchParams(
            tenant=tenant, channel=cmd.channel, period_start=cmd.period_start,
            period_end=cmd.period_end, tolerance_days=cmd.tolerance_days,
            timing_window_minutes=cmd.timing_window_minutes,
        )  # fmt: skip
        return Matcher(ViewDB(store), params, owns_db=True)

    return make
