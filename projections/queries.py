"""Queries over the views: payments, accounts, statements and metrics. Nothing here loads an
aggregate; every answer says which log position the views had reached (``as_of_position``)."""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from application.results import AccountResult, PaymentResult
from domain.errors import ValidationError
from projections.accounts import COLUMNS as ACCOUNT_COLUMNS
from projections.base import TRACKING_TABLE
from projections.db import ViewDB, from_us, to_us
from projections.payments import COLUMNS as PAYMENT_COLUMNS
from projections.payments import HISTOGRAM, LATENCY_BOUNDS_MS, METRIC_COUNTS, OUTCOMES

MAX_PAGE = 500
BUCKETS_S = {"minute": 60, "hour": 3_600, "day": 86_400}
MAX_SERIES_POINTS = 10_000
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


class PositionNotReached(Exception):
    """``wait_for_position`` was not reached in time: the views lag; retry shortly."""

    code = "position_not_reached"


class BadCursor(ValueError):
    """A pagination cursor this server did not issue."""


@dataclass(frozen=True)
class PaymentFilter:
    status: str | None = None
    channel: str | None = None
    payer: str | None = None  # account id
    payee: str | None = None
    batch: str | None = None
    currency: str | None = None
    kind: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    amount_min_minor: int | None = None
    amount_max_minor: int | None = None

    def __post_init__(self) -> None:
        """A reversed range is a mistake to name, not an empty answer (times without an
        offset are UTC, as the views read them)."""
        since, until = self.created_from, self.created_to
        if since and until and to_us(since) >= to_us(until):
            raise ValidationError.single("created_from", "must be before `created_to`")
        low, high = self.amount_min_minor, self.amount_max_minor
        if low is not None and high is not None and low > high:
            raise ValidationError.single("amount_min", "must not be above `amount_max`")


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None
    as_of_position: int


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as e:
        raise BadCursor("not a cursor from this API") from e
    if not isinstance(parts, list) or len(parts) != arity:
        raise BadCursor("not a cursor from this API")
    return parts


class ReadModel:
    """The query side. ``db`` is its own connection (the runner writes on another)."""

    def __init__(self, db: ViewDB, head: Any = None, local: Any = None) -> None:
        self.db = db
        self._head = head  # () -> the log's last notification id
        self.local = local  # what keeps the views current (a Follower or the projector process)

    # --- positions -----------------------------------------------------------------------------

    def position(self, projection: str) -> int:
        rows = self.db.query(
            f"SELECT notification_id FROM {TRACKING_TABLE} WHERE projection = ?", (projection,)
        )
        return int(rows[0][0]) if rows else 0

    def head(self) -> int:
        return int(self._head() or 0) if self._head else 0

    def wait_for(self, projection: str, position: int, timeout_s: float) -> bool:
        """Until the projection has processed ``position`` (True) or the time is up (False)."""
        if position <= 0:
            return True
        deadline = time.monotonic() + timeout_s
        pause = 0.002
        while self.position(projection) < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.local is not None:
                self.local.hurry()  # the follower or projector process; it skips its gathering
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)
        return True

    # --- payments ------------------------------------------------------------------------------

    def payment(self, tenant: str, payment_id: UUID) -> PaymentResult | None:
        rows = self.db.query(
            f"SELECT {', '.join(PAYMENT_COLUMNS)} FROM view_payments "
            "WHERE payment_id = ? AND tenant = ?",
            (str(payment_id), tenant),
        )
        return payment_result(rows[0]) if rows else None

    def payments(
        self, tenant: str, f: PaymentFilter, *, limit: int = 50, cursor: str | None = None
    ) -> Page:
        """Newest first; the cursor continues after the last item of the previous page."""
        as_of = self.position("payments")
        where, params = ["tenant = ?"], [tenant]
        for column, value in (
            ("status", f.status), ("channel", f.channel), ("payer_account_id", f.payer),
            ("payee_account_id", f.payee), ("batch_id", f.batch), ("currency", f.currency),
            ("kind", f.kind),
        ):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        for clause, value in (
            ("created_us >= ?", f.created_from and to_us(f.created_from)),
            ("created_us < ?", f.created_to and to_us(f.created_to)),
            ("amount_minor >= ?", f.amount_min_minor),
            ("amount_minor <= ?", f.amount_max_minor),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        if cursor:
            created_us, payment_id = decode_cursor(cursor, 2)
            where.append("(created_us < ? OR (created_us = ? AND payment_id < ?))")
            params += [int(created_us), int(created_us), str(payment_id)]
        limit = max(1, min(limit, MAX_PAGE))
        rows = self.db.query(
            f"SELECT {', '.join(PAYMENT_COLUMNS)} FROM view_payments "
            f"WHERE {' AND '.join(where)} ORDER BY created_us DESC, payment_id DESC LIMIT ?",
            [*params, limit + 1],
        )
        items = [payment_result(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(last[PAYMENT_COLUMNS.index("created_us")], last[0])
        return Page(items, next_cursor, as_of)

    # --- accounts ------------------------------------------------------------------------------

    def account(self, tenant: str, account_id: UUID) -> AccountResult | None:
        rows = self.db.query(
            f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM view_accounts "
            "WHERE account_id = ? AND tenant = ?",
            (str(account_id), tenant),
        )
        return account_result(rows[0]) if rows else None

    def entries(
        self, tenant: str, account_id: UUID, *, limit: int = 100, cursor: str | None = None
    ) -> Page | None:
        """A statement: postings in the order they happened, each with the balance after it.
        None when the account is not the tenant's (or not projected yet)."""
        as_of = self.position("accounts")
        if self.account(tenant, account_id) is None:
            return None
        after = int(decode_cursor(cursor, 1)[0]) if cursor else 0
        limit = max(1, min(limit, MAX_PAGE))
        rows = self.db.query(
            "SELECT version, entry_id, payment_id, amount_minor, balance_after_minor, at_us, "
            "position FROM view_entries WHERE account_id = ? AND version > ? "
            "ORDER BY version LIMIT ?",
            (str(account_id), after, limit + 1),
        )
        items = [
            {
                "version": r[0], "entry_id": r[1], "payment_id": r[2], "amount_minor": r[3],
                "balance_after_minor": r[4], "at": from_us(r[5]), "position": r[6],
            }
            for r in rows[:limit]
        ]  # fmt: skip
        next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
        return Page(items, next_cursor, as_of)

    # --- metrics -------------------------------------------------------------------------------

    def metrics(
        self,
        tenant: str,
        start: datetime,
        end: datetime,
        *,
        channel: str | None = None,
        bucket: str = "minute",
    ) -> dict[str, Any]:
        """S, counts and latency percentiles per channel and over time, for payments requested
        in [start, end). Totals' percentiles are exact (nearest rank over the payments view);
        the series' come from the per-minute histograms (interpolated inside a bucket)."""
        as_of = self.position("payments")
        start_us, end_us = to_us(start), to_us(end)
        where = "tenant = ? AND bucket_us >= ? AND bucket_us < ?"
        params: list[Any] = [tenant, start_us, end_us]
        if channel is not None:
            where += " AND channel = ?"
            params.append(channel)
        rows = self.db.query(
            f"SELECT channel, bucket_us, {', '.join(METRIC_COUNTS)} FROM view_metrics "
            f"WHERE {where} ORDER BY bucket_us",
            params,
        )
        step_us = BUCKETS_S[bucket] * 1_000_000
        overall = [0] * len(METRIC_COUNTS)
        per_channel: dict[str, list[int]] = {}
        series: dict[int, list[int]] = {}
        for row in rows:
            counts = row[2:]
            _add(overall, counts)
            _add(per_channel.setdefault(row[0], [0] * len(METRIC_COUNTS)), counts)
            _add(series.setdefault(row[1] - row[1] % step_us, [0] * len(METRIC_COUNTS)), counts)
        totals = _summary(overall)
        totals["latency_ms"] = self._exact_percentiles(tenant, start_us, end_us, channel)
        channels = []
        for name in sorted(per_channel):
            summary = _summary(per_channel[name])
            summary["latency_ms"] = self._exact_percentiles(tenant, start_us, end_us, name)
            channels.append({"channel": name, **summary})
        return {
            "from": start, "to": end, "channel": channel, "bucket": bucket,
            "as_of_position": as_of, "totals": totals, "channels": channels,
            "series": [
                {"bucket_start": from_us(at), **_summary(counts, histogram=True)}
                for at, counts in sorted(series.items())
            ],
            "batch_time_ms": self._batch_times(tenant, start_us, end_us),
        }  # fmt: skip

    def _batch_times(self, tenant: str, start_us: int, end_us: int) -> dict[str, int | None]:
        """T_b = finished - submitted, over the batches that finished in the period (exact,
        nearest rank). Batches are few: their times are read and ranked here."""
        rows = self.db.query(
            "SELECT finished_us - created_us FROM view_batches WHERE tenant = ? "
            "AND finished_us >= ? AND finished_us < ? AND status IN "
            "('completed', 'completed_with_failures', 'failed') ORDER BY 1",
            (tenant, start_us, end_us),
        )
        times = [int(r[0]) // 1000 for r in rows]
        result: dict[str, int | None] = {"count": len(times)}
        for name, q in QUANTILES:
            result[name] = times[max(1, math.ceil(q * len(times))) - 1] if times else None
        return result

    def _exact_percentiles(
        self, tenant: str, start_us: int, end_us: int, channel: str | None
    ) -> dict[str, int | None]:
        where = (
            "tenant = ? AND kind = 'payment' AND latency_ms IS NOT NULL "
            "AND created_us >= ? AND created_us < ?"
        )
        params: list[Any] = [tenant, start_us, end_us]
        if channel is not None:
            where += " AND channel = ?"
            params.append(channel)
        if self.db.is_postgres:
            row = self.db.query(
                "SELECT percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP "
                f"(ORDER BY latency_ms) FROM view_payments WHERE {where}",
                params,
            )[0][0]
            values = row or [None, None, None]
            return {name: values[i] for i, (name, _) in enumerate(QUANTILES)}
        n = self.db.query(f"SELECT count(*) FROM view_payments WHERE {where}", params)[0][0]
        result: dict[str, int | None] = {}
        for name, q in QUANTILES:
            if n == 0:
                result[name] = None
                continue
            rank = max(1, math.ceil(q * n))  # nearest rank, as percentile_disc
            result[name] = self.db.query(
                f"SELECT latency_ms FROM view_payments WHERE {where} "
                "ORDER BY latency_ms LIMIT 1 OFFSET ?",
                [*params, rank - 1],
            )[0][0]
        return result

    # --- all-time counts (the Prometheus exposition) -------------------------------------------

    def metric_counts_by_channel(self) -> dict[str, dict[str, int]]:
        """Every ``view_metrics`` count summed over all time and tenants, per channel: the
        outcomes, ``latency_count``, ``latency_sum_ms`` and the histogram columns."""
        sums = ", ".join(f"COALESCE(SUM({c}), 0)" for c in METRIC_COUNTS)
        rows = self.db.query(
            f"SELECT channel, {sums} FROM view_metrics GROUP BY channel ORDER BY channel"
        )
        return {r[0]: dict(zip(METRIC_COUNTS, map(int, r[1:]), strict=True)) for r in rows}


def _add(into: list[int], counts: Any) -> None:
    for i, n in enumerate(counts):
        into[i] += n


def _summary(counts: list[int], *, histogram: bool = False) -> dict[str, Any]:
    by = dict(zip(METRIC_COUNTS, counts, strict=True))
    total = by["succeeded"] + by["failed"] + by["exception"]
    summary: dict[str, Any] = {
        "total": total,
        **{outcome: by[outcome] for outcome in OUTCOMES},
        "success_rate": None if total == 0 else round(by["succeeded"] / total, 6),
    }
    if histogram:
        summary["latency_ms"] = histogram_percentiles([by[h] for h in HISTOGRAM])
    return summary


def histogram_percentiles(buckets: list[int]) -> dict[str, float | None]:
    """Quantiles from bucket counts, interpolating linearly inside the bucket (as Prometheus's
    ``histogram_quantile``); the open last bucket answers its lower bound."""
    n = sum(buckets)
    result: dict[str, float | None] = {}
    for name, q in QUANTILES:
        if n == 0:
            result[name] = None
            continue
        rank, seen = q * n, 0
        for i, count in enumerate(buckets):
            if count and seen + count >= rank:
                lower = 0 if i == 0 else LATENCY_BOUNDS_MS[i - 1]
                if i == len(LATENCY_BOUNDS_MS):
                    result[name] = float(lower)
                else:
                    upper = LATENCY_BOUNDS_MS[i]
                    result[name] = round(lower + (upper - lower) * (rank - seen) / count, 3)
                break
            seen += count
    return result


def payment_result(r: tuple[Any, ...]) -> PaymentResult:
    v = dict(zip(PAYMENT_COLUMNS, r, strict=True))
    return PaymentResult(
        id=UUID(v["payment_id"]), tenant=v["tenant"], kind=v["kind"], state=v["state"],
        status=v["status"], amount_minor=v["amount_minor"], currency=v["currency"],
        channel=v["channel"], payer=orjson.loads(v["payer"]), payee=orjson.loads(v["payee"]),
        description=v["description"], metadata=orjson.loads(v["metadata"]),
        failure_code=v["failure_code"], failure_message=v["failure_message"],
        channel_reference=v["channel_reference"], created_at=from_us(v["created_us"]),  # type: ignore[arg-type]
        completed_at=from_us(v["completed_us"]), latency_ms=v["latency_ms"],
        version=v["version"], batch_id=v["batch_id"],
    )  # fmt: skip


def account_result(r: tuple[Any, ...]) -> AccountResult:
    v = dict(zip(ACCOUNT_COLUMNS, r, strict=True))
    return AccountResult(
        id=UUID(v["account_id"]), tenant=v["tenant"], owner=v["owner"], currency=v["currency"],
        kind=v["kind"], balance_minor=v["balance_minor"], reserved_minor=v["reserved_minor"],
        available_minor=v["available_minor"], overdraft_limit_minor=v["overdraft_limit_minor"],
        closed=bool(v["closed"]), version=v["version"], created_at=from_us(v["created_us"]),  # type: ignore[arg-type]
        updated_at=from_us(v["updated_us"]), iban=v["iban"],  # type: ignore[arg-type]
    )  # fmt: skip
