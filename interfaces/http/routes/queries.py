"""Queries from the views: payment search, account statements, metrics.

Every answer carries ``as_of_position``: the last log position the views had processed. A client
that just made a change and holds its position (the ``Payledger-Position`` header of a command's
answer) passes ``?wait_for_position=N`` to read its own writes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from application.commands import Principal
from application.results import AccountResult, PaymentResult
from domain.errors import AccountNotFound, FieldError, PaymentNotFound, ValidationError
from domain.money import format_amount, parse_amount
from interfaces.http.authz import Allow, OwnedAccount, Permission
from interfaces.http.query_schemas import EntriesOut, MetricsOut, PaymentListOut, entry_out
from interfaces.http.routes._responses import auth_problems
from interfaces.http.schemas import PaymentOut
from projections.queries import BadCursor, PaymentFilter, PositionNotReached
from projections.read_side import ReadSide

router = APIRouter()

Status = Literal["processing", "succeeded", "failed", "exception"]
ChannelName = Literal["internal", "card", "alipay", "wechat_pay", "bank_transfer"]
WaitFor = Annotated[
    int | None,
    Query(ge=0, description="Answer only once the views have processed this log position "
          "(from a command's `Payledger-Position` header)."),
]  # fmt: skip
Timeout = Annotated[
    float, Query(gt=0, le=30, description="How long to wait for `wait_for_position`, seconds.")
]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the last page")]
MAX_METRICS_SPAN = timedelta(days=31)
# The instants a period may name: datetime's range (years 1 to 9999) less the longest period at
# either end, so that the arithmetic on them (a default `from` before `to`, whole buckets, the
# dashboard's chart) stays inside it.
EARLIEST = datetime.min.replace(tzinfo=UTC) + MAX_METRICS_SPAN
LATEST = datetime.max.replace(tzinfo=UTC) - MAX_METRICS_SPAN
AS_OF_HEADER = "Payledger-As-Of-Position"  # on reads of one payment or account


def read_side(request: Request) -> ReadSide:
    return request.app.state.read  # type: ignore[no-any-return]


def current_payment(
    request: Request,
    response: Response,
    payment_id: UUID,
    principal: Principal,
    wait_for_position: int | None,
    timeout_s: float,
) -> PaymentResult:
    """One payment from the payments view, after the view has caught up with everything saved
    before this request (read-your-writes) or with ``wait_for_position``."""
    found = _current(request, response, "payments", wait_for_position, timeout_s,
                     lambda read: read.model.payment(principal.tenant, payment_id))  # fmt: skip
    if found is None:
        raise PaymentNotFound(f"payment {payment_id} does not exist")
    return found  # type: ignore[no-any-return]


def current_account(
    request: Request,
    response: Response,
    account_id: UUID,
    principal: Principal,
    wait_for_position: int | None,
    timeout_s: float,
) -> AccountResult:
    """One account from the accounts view (as ``current_payment``)."""
    found = _current(request, response, "accounts", wait_for_position, timeout_s,
                     lambda read: read.model.account(principal.tenant, account_id))  # fmt: skip
    if found is None:
        raise AccountNotFound(f"account {account_id} does not exist")
    return found  # type: ignore[no-any-return]


def _current(
    request: Request,
    response: Response,
    projection: str,
    wait_for_position: int | None,
    timeout_s: float,
    lookup: Callable[[ReadSide], Any],
) -> Any:
    """Wait as asked (or for the log's end as of now), look up, and say how far the view is.
    None only when the view has caught up and still has no such row."""
    read = read_side(request)
    _wait(read, projection, wait_for_position, timeout_s)
    caught_up = wait_for_position is not None or read.consistent(projection)
    found = lookup(read)
    response.headers[AS_OF_HEADER] = str(read.model.position(projection))
    if found is None and not caught_up:  # it may exist but not be projected yet: not a 404
        raise PositionNotReached(f"the {projection} view is behind the log; retry shortly")
    return found


def _wait(read: ReadSide, projection: str, position: int | None, timeout_s: float) -> None:
    if position is not None and not read.model.wait_for(projection, position, timeout_s):
        raise PositionNotReached(
            f"the {projection} view has not reached position {position} after {timeout_s} s "
            f"(it is at {read.model.position(projection)})"
        )


@router.get(
    "/v1/payments",
    summary="Search payments",
    response_model=PaymentListOut,
    responses=auth_problems(422, 503),
    tags=["payments"],
)
def list_payments(
    request: Request,
    principal: Annotated[Principal, Allow(Permission.PAYMENTS_READ)],
    status: Status | None = None,
    channel: ChannelName | None = None,
    payer: Annotated[UUID | None, Query(description="Payer account id")] = None,
    payee: Annotated[UUID | None, Query(description="Payee account id")] = None,
    batch: Annotated[UUID | None, Query(description="Batch id")] = None,
    currency: Annotated[str | None, Query(pattern="^[A-Za-z]{3}$")] = None,
    kind: Literal["payment", "deposit"] | None = None,
    created_from: Annotated[datetime | None, Query(description="Requested at or after")] = None,
    created_to: Annotated[datetime | None, Query(description="Requested before")] = None,
    amount_min: Annotated[str | None, Query(max_length=30, description="Needs `currency`")] = None,
    amount_max: Annotated[str | None, Query(max_length=30, description="Needs `currency`")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
    wait_for_position: WaitFor = None,
    timeout_s: Timeout = 5.0,
) -> Any:
    """Newest first, `limit` per page; follow `next_cursor` for the next page."""
    read = read_side(request)
    _wait(read, "payments", wait_for_position, timeout_s)
    bounds = _amount_bounds(amount_min, amount_max, currency)
    filters = PaymentFilter(
        status=status, channel=channel, payer=payer and str(payer), payee=payee and str(payee),
        batch=batch and str(batch), currency=currency and currency.upper(), kind=kind,
        created_from=created_from, created_to=created_to,
        amount_min_minor=bounds[0], amount_max_minor=bounds[1],
    )  # fmt: skip
    try:
        page = read.model.payments(principal.tenant, filters, limit=limit, cursor=cursor)
    except BadCursor as e:
        raise ValidationError.single("cursor", str(e)) from e
    return {
        "items": [PaymentOut.of(p) for p in page.items],
        "next_cursor": page.next_cursor,
        "as_of_position": page.as_of_position,
    }


def _amount_bounds(
    low: str | None, high: str | None, currency: str | None
) -> tuple[int | None, int | None]:
    if low is None and high is None:
        return None, None
    if currency is None:
        raise ValidationError(FieldError("currency", "is required with amount_min/amount_max"))
    parsed = tuple(
        None if text is None else parse_amount(text, currency.upper(), field=name)
        for name, text in (("amount_min", low), ("amount_max", high))
    )
    return parsed[0], parsed[1]


@router.get(
    "/v1/accounts/{account_id}/entries",
    summary="An account's statement",
    response_model=EntriesOut,
    responses=auth_problems(404, 422, 503),
    tags=["accounts"],
)
def account_entries(
    account_id: UUID,
    request: Request,
    principal: Annotated[Principal, OwnedAccount(Permission.ACCOUNTS_READ)],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
    wait_for_position: WaitFor = None,
    timeout_s: Timeout = 5.0,
) -> Any:
    """Every posting in the order it happened, with the balance after it (oldest first)."""
    read = read_side(request)
    _wait(read, "accounts", wait_for_position, timeout_s)
    if wait_for_position is None:
        read.consistent("accounts")
    account = read.model.account(principal.tenant, account_id)
    if account is None:
        raise AccountNotFound(f"account {account_id} does not exist")
    try:
        page = read.model.entries(principal.tenant, account_id, limit=limit, cursor=cursor)
    except BadCursor as e:
        raise ValidationError.single("cursor", str(e)) from e
    if page is None:
        raise AccountNotFound(f"account {account_id} does not exist")
    return {
        "account_id": account_id,
        "currency": account.currency,
        "balance": format_amount(account.balance_minor, account.currency),
        "items": [entry_out(e, account.currency) for e in page.items],
        "next_cursor": page.next_cursor,
        "as_of_position": page.as_of_position,
    }


@router.get(
    "/v1/metrics",
    summary="Success rate, volumes and latency",
    response_model=MetricsOut,
    responses=auth_problems(422, 503),
    tags=["metrics"],
)
def metrics(
    request: Request,
    principal: Annotated[Principal, Allow(Permission.METRICS_READ)],
    from_: Annotated[
        datetime | None, Query(alias="from", description="Start (default: `to` - 1 hour)")
    ] = None,
    to: Annotated[datetime | None, Query(description="End, exclusive (default: now)")] = None,
    channel: ChannelName | None = None,
    bucket: Literal["minute", "hour", "day"] = "minute",
    wait_for_position: WaitFor = None,
    timeout_s: Timeout = 5.0,
) -> Any:
    """For payments requested in [from, to): S = succeeded / total (total = succeeded + failed
    + exception; `processing` counted apart), counts by outcome, latency T = completed -
    requested as p50/p95/p99 (exact, nearest rank), per channel and as a series per bucket
    (series percentiles from histograms), and batch processing time T_b."""
    read = read_side(request)
    _wait(read, "payments", wait_for_position, timeout_s)
    end = instant(to, "to") if to else datetime.now(UTC)
    start = instant(from_, "from") if from_ else end - timedelta(hours=1)
    if start >= end:
        raise ValidationError.single("from", "must be before `to`")
    if end - start > MAX_METRICS_SPAN:
        raise ValidationError.single("from", "the period is limited to 31 days")
    return read.model.metrics(principal.tenant, start, end, channel=channel, bucket=bucket)


def instant(at: datetime, field: str) -> datetime:
    """``at`` in UTC (a naive time is UTC already); 422 on ``field`` outside EARLIEST..LATEST,
    also when its offset takes it past year 1 or 9999."""
    try:
        utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValidationError.single(
            field,
            f"must be between {EARLIEST.date()} and {LATEST.date()} (UTC)",
            "out_of_range",
        )
    return utc
