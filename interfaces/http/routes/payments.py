"""Real-time payments: submit one, read it, read its audit history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, get_args
from uuid import UUID

import orjson
from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter

from application.commands import Principal, SubmitPayment
from application.results import PaymentResult
from application.service import Payledger
from domain.errors import ValidationError
from domain.money import parse_amount
from domain.payments import payment_id_for
from interfaces.http.authz import Allow, OwnedPayment, Permission, check
from interfaces.http.deps import (
    IdempotencyKey,
    current_principal,
    idempotency_key,
    json_body,
    required,
    served_by,
    service,
)
from interfaces.http.examples import PAYMENT_EXAMPLES
from interfaces.http.routes._responses import auth_problems, mark_position, mark_replay, replay
from interfaces.http.routes.queries import Timeout, WaitFor, current_payment
from interfaces.http.schemas import (
    TIME_TRAVEL_FIELDS,
    EventOut,
    PaymentEventsOut,
    PaymentIn,
    PaymentOut,
)

router = APIRouter(prefix="/v1/payments", tags=["payments"])


# POST /v1/payments is the hot route: it skips FastAPI's per-request machinery (the dependency
# solver, the body parameter's dict-then-model validation, the response model), ~60% of the
# event loop's CPU in the 10:49 profile (docs/performance.md). FastAPI still documents it from
# `_submit_payment_contract`'s signature; `submit_payment` serves it with the same answers.
_PAYMENT_IN = TypeAdapter(PaymentIn)


async def submit_payment(request: Request) -> Response:
    """Serves `_submit_payment_contract`: reads the body, principal and key as FastAPI would
    (same errors, same order) and answers `PaymentOut`'s JSON, byte for byte."""
    payment, body_errors = await json_body(request, _PAYMENT_IN)
    principal = check(await current_principal(request), Permission.PAYMENTS_CREATE)
    key, errors = idempotency_key(request)
    if errors or body_errors:
        raise RequestValidationError(errors + body_errors)
    assert payment is not None
    command = payment.to_command(required(key))
    svc = service(request)
    if principal.key_id is not None:
        await step_up_if_large(svc, principal, command, request.headers.get(OTP_HEADER))
    result = await svc.submit_payment(command, principal)
    response = Response(payment_json(result), 201, media_type="application/json")
    mark_replay(response, result.replayed)
    mark_position(response, request)
    return response


OTP_HEADER = "X-Payledger-OTP"
OTP_HELP = (
    "A fresh TOTP code of the key's second factor: required from API keys for payments above "
    "`PAYLEDGER_STEP_UP_AMOUNT` (in the payment's currency). Each code is accepted once."
)


async def step_up_if_large(
    svc: Payledger, principal: Principal, command: SubmitPayment, code: str | None
) -> None:
    """A payment above the step-up amount needs a fresh second-factor code (not on an
    idempotent replay of one that had it: the payment then exists already)."""
    try:
        amount_minor = parse_amount(command.amount, command.currency)
    except ValidationError:
        return  # the service refuses it, with every other error of the request
    if svc.keys.payment_needs_step_up(principal, amount_minor, command.currency):
        payment_id = payment_id_for(principal.tenant, principal.client, command.idempotency_key)
        await svc.keys.step_up(principal, code, unless_exists=payment_id)


async def _submit_payment_contract(
    body: Annotated[PaymentIn, Body(openapi_examples=PAYMENT_EXAMPLES)],
    principal: Annotated[Principal, Allow(Permission.PAYMENTS_CREATE)],
    key: IdempotencyKey = None,
    otp: Annotated[str | None, Header(alias=OTP_HEADER, description=OTP_HELP)] = None,
) -> PaymentOut:
    """Validates, routes to the channel and records the payment; answers with its final result.

    A well-formed payment the rules or the channel refuse is recorded and answered 201 with
    `status: "failed"` and a `failure_code`; an unknown outcome is `status: "exception"`."""
    raise NotImplementedError("documentation only: submit_payment serves this route")


router.add_api_route(
    "",
    _submit_payment_contract,
    methods=["POST"],
    name="submit_payment",
    route_class_override=served_by(submit_payment),
    status_code=201,
    summary="Submit a real-time payment",
    response_description="The final payment (201), or the original one on a replay (200)",
    responses=replay(PaymentOut) | auth_problems(400, 409, 422, 503),
)


def payment_json(p: PaymentResult) -> bytes:
    """`PaymentOut.of(p).model_dump_json()`, byte for byte, at a fraction of its cost: orjson
    writes the same JSON for the plain values a payment holds (UTC times end in `Z`, like
    pydantic's). A field or value of another kind takes the model's own way."""
    fields = PaymentOut.fields_of(p)
    for name in TIME_TRAVEL_FIELDS:  # PaymentOut leaves them out unless set
        if name in fields and fields[name] is None:
            del fields[name]
    if all(_PLAIN.get(name, _never)(value) for name, value in fields.items()):
        try:
            return orjson.dumps(fields, option=orjson.OPT_UTC_Z)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
            pass
    return PaymentOut.of(p).model_dump_json().encode()


_STATUSES = frozenset(get_args(PaymentOut.model_fields["status"].annotation))
_SCALARS = frozenset({str, int, bool, type(None)})


def _never(value: Any) -> bool:
    return False


def _text(value: Any) -> bool:
    return type(value) is str


def _text_or_none(value: Any) -> bool:
    return value is None or type(value) is str


def _int_or_none(value: Any) -> bool:
    return value is None or type(value) is int


def _time(value: Any) -> bool:
    """pydantic and orjson round an offset with seconds differently (e.g. LMT zones)."""
    if type(value) is not datetime:
        return False
    if value.tzinfo is UTC or value.tzinfo is None:
        return True
    offset = value.utcoffset()
    return offset is None or (offset.seconds % 60 == 0 and offset.microseconds == 0)


def _time_or_none(value: Any) -> bool:
    return value is None or _time(value)


def _party(value: Any) -> bool:
    return type(value) is dict and all(
        type(k) is str and type(v) in _SCALARS for k, v in value.items()
    )


def _metadata(value: Any) -> bool:
    return type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items())


#: Which values of each `PaymentOut` field orjson writes exactly as pydantic does.
_PLAIN = {
    "id": lambda v: type(v) is UUID,
    "status": lambda v: type(v) is str and v in _STATUSES,
    "state": _text,
    "kind": _text,
    "amount": _text,
    "currency": _text,
    "channel": _text,
    "channel_reference": _text_or_none,
    "payer": _party,
    "payee": _party,
    "description": _text_or_none,
    "metadata": _metadata,
    "failure_code": _text_or_none,
    "failure_message": _text_or_none,
    "created_at": _time,
    "completed_at": _time_or_none,
    "latency_ms": _int_or_none,
    "batch_id": _text_or_none,
    "as_of_version": _int_or_none,
    "as_of": _time_or_none,
}


AS_OF_VERSION_HELP = (
    "Time travel: the payment as it was at this version (1 = as requested, up to its latest), "
    "rebuilt from its events. The answer then has `as_of_version` and `as_of` (when that "
    "version was recorded). Below 1 or beyond the latest version: 422."
)


@router.get("/{payment_id}", summary="Get a payment", responses=auth_problems(404, 422, 503))
def get_payment(
    payment_id: UUID,
    request: Request,
    principal: Annotated[Principal, OwnedPayment(Permission.PAYMENTS_READ)],
    response: Response,
    as_of_version: Annotated[int | None, Query(description=AS_OF_VERSION_HELP)] = None,
    wait_for_position: WaitFor = None,
    timeout_s: Timeout = 5.0,
) -> PaymentOut:
    """From the payments view (after it has caught up with this request's arrival, or with
    `wait_for_position`); with `as_of_version`, rebuilt from the payment's events."""
    if as_of_version is None:
        return PaymentOut.of(
            current_payment(request, response, payment_id, principal, wait_for_position, timeout_s)
        )
    svc = service(request)
    return PaymentOut.of(svc.get_payment_as_of_version(payment_id, as_of_version, principal))


@router.get(
    "/{payment_id}/events",
    summary="A payment's audit history",
    responses=auth_problems(404, 422),
)
def payment_events(
    payment_id: UUID,
    request: Request,
    principal: Annotated[Principal, OwnedPayment(Permission.PAYMENTS_AUDIT)],
) -> PaymentEventsOut:
    events = service(request).payment_events(payment_id, principal)
    return PaymentEventsOut(payment_id=payment_id, events=[EventOut.of(e) for e in events])
