"""Exceptions: payments whose outcome is unknown. List them, resolve one by hand with a reason,
or have the resolver ask the channels now (application/exceptions.py).

The server's resolver also runs by itself every ``PAYLEDGER_EXCEPTION_RESOLVER_INTERVAL_S``
seconds (``start_resolver``, from the app's lifespan).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Body, FastAPI, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr, StringConstraints

from application.commands import Principal
from application.exceptions import REFERENCE_MAX_LENGTH
from application.service import Payledger
from domain.errors import ValidationError
from domain.money import format_amount
from domain.payments import REASON_MAX_LENGTH
from interfaces.http.authz import Allow, OwnedPayment, Permission
from interfaces.http.deps import service
from interfaces.http.query_schemas import Position
from interfaces.http.routes._responses import auth_problems, mark_position
from interfaces.http.routes.queries import ChannelName, Cursor, Timeout, WaitFor, _wait, read_side
from interfaces.http.schemas import NO_NUL, InputModel, PaymentOut
from projections.exception_queries import ExceptionQueries, OpenException
from projections.queries import BadCursor
from projections.read_side import ReadSide

log = logging.getLogger("payledger.http")
router = APIRouter(prefix="/v1/exceptions", tags=["exceptions"])


# --- schemas -------------------------------------------------------------------------------------


class ExceptionOut(BaseModel):
    payment_id: UUID
    kind: str
    channel: str
    amount: str = Field(description="Decimal string in the currency's minor units")
    currency: str
    batch_id: UUID | None = Field(description="The batch of a batch item, else null")
    code: str | None = Field(description="Why the outcome is unknown, e.g. `channel_timeout`")
    message: str | None
    created_at: datetime
    exception_since: datetime = Field(description="When the outcome became unknown")
    age_seconds: int = Field(description="Seconds since `exception_since`")
    flagged: bool = Field(
        description="Still unknown at the resolver's deadline: no longer asked about "
        "automatically, left to reconciliation"
    )
    flagged_at: datetime | None

    @classmethod
    def of(cls, x: OpenException, now: datetime) -> ExceptionOut:
        return cls(
            payment_id=x.payment_id, kind=x.kind, channel=x.channel,
            amount=format_amount(x.amount_minor, x.currency), currency=x.currency,
            batch_id=UUID(x.batch_id) if x.batch_id else None, code=x.code, message=x.message,
            created_at=x.created_at, exception_since=x.since, age_seconds=x.age_seconds(now),
            flagged=x.flagged_at is not None, flagged_at=x.flagged_at,
        )  # fmt: skip


class ExceptionListOut(BaseModel):
    items: list[ExceptionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last")
    as_of_position: int = Position


Reason = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=REASON_MAX_LENGTH, pattern=NO_NUL)
]
Reference = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=REFERENCE_MAX_LENGTH, pattern=NO_NUL)
]


class ResolveIn(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"outcome": "succeeded", "reason": "on the bank statement of 2026-11-25",
                 "channel_reference": "BANKREF-0042"},
                {"outcome": "failed", "reason": "the network confirmed no charge was made"},
            ]
        }
    )  # fmt: skip

    outcome: Literal["succeeded", "failed"]
    reason: Reason = Field(description="Why: recorded in the payment's history with your key")
    channel_reference: Reference | None = Field(
        default=None, description="The channel's reference for the charge, if known"
    )


class ResolverPassOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"succeeded": 3, "failed": 1, "open": 2, "flagged": 0, "asked": 6}]
        }
    )

    succeeded: int = Field(description="Resolved as succeeded (postings made)")
    failed: int = Field(description="Resolved as failed (funds released)")
    open: int = Field(description="Still unknown: no answer yet, or not due to be asked yet")
    flagged: int = Field(description="Past the deadline: left to reconciliation")
    asked: int = Field(description="Channel status queries made")


# --- routes --------------------------------------------------------------------------------------


def exception_queries(read: ReadSide) -> ExceptionQueries:
    return ExceptionQueries(read.model.db, lambda: read.model.position("payments"))


@router.get(
    "",
    summary="Open exceptions: payments whose outcome is unknown",
    response_model=ExceptionListOut,
    responses=auth_problems(422, 503),
)
def list_exceptions(
    request: Request,
    principal: Annotated[Principal, Allow(Permission.PAYMENTS_READ)],
    channel: ChannelName | None = None,
    flagged: Annotated[
        bool | None, Query(description="Only flagged (true) or only unflagged (false) ones")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
    wait_for_position: WaitFor = None,
    timeout_s: Timeout = 5.0,
) -> Any:
    """The tenant's payments in `exception`, oldest first, with their age; follow
    `next_cursor` for the next page. Funds stay held until each is resolved."""
    read = read_side(request)
    _wait(read, "payments", wait_for_position, timeout_s)
    try:
        page = exception_queries(read).open_exceptions(
            principal.tenant, channel=channel, flagged=flagged, limit=limit, cursor=cursor
        )
    except BadCursor as e:
        raise ValidationError.single("cursor", str(e)) from e
    now = service(request).clock.now()
    return {
        "items": [ExceptionOut.of(x, now) for x in page.items],
        "next_cursor": page.next_cursor,
        "as_of_position": page.as_of_position,
    }


@router.post(
    "/{payment_id}/resolve",
    summary="Resolve an exception by hand, with a reason",
    response_model=PaymentOut,
    responses=auth_problems(400, 404, 409, 422, 503),
)
async def resolve_exception(
    payment_id: UUID,
    body: Annotated[ResolveIn, Body()],
    request: Request,
    response: Response,
    principal: Annotated[Principal, OwnedPayment(Permission.EXCEPTIONS_RESOLVE)],
) -> PaymentOut:
    """`succeeded` posts the payment's entries and consumes its hold; `failed` releases the
    hold. The payment's history records how, why and by whom (`ExceptionResolved`). A payment
    whose outcome is not unknown (final, or still being sent) answers 409
    `payment_not_in_exception`."""
    result = await service(request).exceptions.resolve_manually(
        principal.tenant, payment_id, body.outcome, body.reason, principal.actor,
        channel_reference=body.channel_reference,
    )  # fmt: skip
    mark_position(response, request)
    return PaymentOut.of(result)


@router.post(
    "/resolve-pending",
    summary="Ask the channels about the tenant's open exceptions now",
    response_model=ResolverPassOut,
    responses=auth_problems(503),
)
async def resolve_pending(
    request: Request,
    response: Response,
    principal: Annotated[Principal, Allow(Permission.EXCEPTIONS_RESOLVE)],
) -> Any:
    """One resolver pass over the tenant's exceptions that are due (an exception is first
    asked about once older than the channel time-out plus 5 s, then with back-off); the
    server also runs one every `PAYLEDGER_EXCEPTION_RESOLVER_INTERVAL_S` seconds."""
    await asyncio.to_thread(read_side(request).consistent, "payments")
    done = await service(request).exceptions.run_once(tenant=principal.tenant)
    mark_position(response, request)
    return done.counts()


# --- the server's resolver -----------------------------------------------------------------------


def start_resolver(app: FastAPI, svc: Payledger) -> asyncio.Task[None] | None:
    """Point the resolver at this process's views and, unless its interval is 0, run it."""
    svc.exceptions.view = exception_queries(app.state.read)
    interval_s = svc.settings.exception_resolver_interval_s
    if interval_s <= 0:
        return None
    return asyncio.create_task(svc.exceptions.run_forever(interval_s))


async def stop_resolver(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
