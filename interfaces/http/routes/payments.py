"""Real-time payments: submit one, read it, read its audit history."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Request, Response

from interfaces.http.deps import CurrentPrincipal, IdempotencyKey, required, service
from interfaces.http.examples import PAYMENT_EXAMPLES
from interfaces.http.routes._responses import mark_replay, problems, replay
from interfaces.http.schemas import EventOut, PaymentEventsOut, PaymentIn, PaymentOut

router = APIRouter(prefix="/v1/payments", tags=["payments"])


@router.post(
    "",
    status_code=201,
    summary="Submit a real-time payment",
    response_description="The final payment (201), or the original one on a replay (200)",
    responses=replay(PaymentOut) | problems(400, 409, 422, 503),
)
async def submit_payment(
    body: Annotated[PaymentIn, Body(openapi_examples=PAYMENT_EXAMPLES)],
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    key: IdempotencyKey = None,
) -> PaymentOut:
    """Validates, routes to the channel and records the payment; answers with its final result.

    A well-formed payment the rules or the channel refuse is recorded and answered 201 with
    `status: "failed"` and a `failure_code`; an unknown outcome is `status: "exception"`."""
    command = body.to_command(required(key))
    result = await service(request).submit_payment(command, principal)
    mark_replay(response, result.replayed)
    return PaymentOut.of(result)


@router.get("/{payment_id}", summary="Get a payment", responses=problems(404, 422))
def get_payment(payment_id: UUID, request: Request, principal: CurrentPrincipal) -> PaymentOut:
    return PaymentOut.of(service(request).get_payment(payment_id, principal))


@router.get(
    "/{payment_id}/events", summary="A payment's audit history", responses=problems(404, 422)
)
def payment_events(
    payment_id: UUID, request: Request, principal: CurrentPrincipal
) -> PaymentEventsOut:
    events = service(request).payment_events(payment_id, principal)
    return PaymentEventsOut(payment_id=payment_id, events=[EventOut.of(e) for e in events])
