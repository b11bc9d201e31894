"""The channel simulator's HTTP API (the issue-6 wire protocol, as a provider would serve it).

- ``POST /charges`` (``Idempotency-Key: <payment_id>``), ``POST /charges/batch``,
  ``GET /charges/{payment_id}``, ``POST /verifications`` (a beneficiary check, nothing moved);
- ``GET /statements?date=YYYY-MM-DD&format=csv|camt053[&channel=NAME][&currency=XXX]``: the
  day's settlement (camt.053 is in one currency: ``currency`` when the day has several);
- ``GET /_sim/config`` and ``PUT /_sim/config`` (the fault knobs, at run time), ``GET /health``.

One process keeps the records in memory: run it with one worker.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from application.channels.sandbox import DECLINED
from domain.errors import ValidationError
from domain.money import currency_exponent, parse_amount
from interfaces.channel_sim.book import ChargeBook
from interfaces.channel_sim.config import Knobs, SimConfig, SimConfigPatch
from interfaces.channel_sim.provider import ChargeOrder, Delivery, Handled, Provider, trigger
from interfaces.channel_sim.statements import (
    STATEMENT_FORMATS,
    AmbiguousCurrency,
    statement_body,
)

ChannelName = Literal["card", "alipay", "wechat_pay", "bank_transfer"]
BATCH_MAX = 10_000
DISCONNECT_POLL_S = 0.05
Party = Annotated[dict[str, Any], Field(default_factory=dict, max_length=50)]


class ChargeIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    payment_id: UUID
    channel: ChannelName
    amount: str = Field(max_length=40)
    currency: str = Field(min_length=3, max_length=3)
    payer: Party
    payee: Party
    card: dict[str, str] | None = Field(default=None, max_length=10)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    charges: list[ChargeIn] = Field(min_length=1, max_length=BATCH_MAX)


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class DroppedResponse(Response):
    """A 200 whose announced Content-Length is never reached: half the body is sent, then the
    handler returns, so the server closes the connection and the client sees the answer cut
    short (httpx: ``RemoteProtocolError``). The charge was made before this is sent."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body) + 64).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})


def create_app(config: SimConfig | None = None) -> FastAPI:
    """A simulator with its own records and knobs (``app.state.book``, ``app.state.knobs``,
    ``app.state.provider``)."""
    knobs = Knobs(config or SimConfig())
    book = ChargeBook()
    app = FastAPI(title="Payledger channel simulator", version="1", docs_url=None, redoc_url=None)
    app.state.knobs, app.state.book, app.state.provider = knobs, book, Provider(knobs, book)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Refused, _refused)  # type: ignore[arg-type]
    app.include_router(router)
    return app


router = APIRouter()


def _book(request: Request) -> ChargeBook:
    book: ChargeBook = request.app.state.book
    return book


def _provider(request: Request) -> Provider:
    provider: Provider = request.app.state.provider
    return provider


def _knobs(request: Request) -> Knobs:
    knobs: Knobs = request.app.state.knobs
    return knobs


Book = Annotated[ChargeBook, Depends(_book)]
TheProvider = Annotated[Provider, Depends(_provider)]
TheKnobs = Annotated[Knobs, Depends(_knobs)]


async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # Never echo the input: it may hold a card number.
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10]]
    return _problem(422, "invalid_request", "; ".join(parts))


async def _refused(_request: Request, exc: Refused) -> JSONResponse:
    return _problem(422, exc.code, exc.message)


@router.get("/health")
async def health(book: Book, provider: TheProvider) -> dict[str, Any]:
    return {"status": "ok", "charges": len(book), "deliveries": dict(provider.deliveries)}


@router.get("/_sim/config")
async def get_config(knobs: TheKnobs) -> SimConfig:
    return knobs.config


@router.put("/_sim/config")
async def put_config(patch: SimConfigPatch, knobs: TheKnobs) -> SimConfig:
    return knobs.update(patch)


@router.post("/charges")
async def charge(
    body: ChargeIn,
    request: Request,
    provider: TheProvider,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    if idempotency_key is not None and idempotency_key != str(body.payment_id):
        raise Refused("idempotency_key_mismatch", "Idempotency-Key must be the payment_id")
    handled = await provider.handle([_order(body)])
    return await _deliver(request, handled, lambda charges: charges[0].as_json())


@router.post("/charges/batch")
async def charge_batch(body: BatchIn, request: Request, provider: TheProvider) -> Response:
    handled = await provider.handle([_order(c) for c in body.charges])
    return await _deliver(
        request, handled, lambda charges: {"results": [c.as_json() for c in charges]}
    )


@router.get("/charges/{payment_id}")
async def charge_status(payment_id: UUID, book: Book) -> JSONResponse:
    known = book.get(str(payment_id))
    if known is None:
        return _problem(404, "not_found", f"no charge for payment {payment_id}")
    return JSONResponse(known.as_json())


@router.post("/verifications")
async def verify(body: ChargeIn) -> dict[str, Any]:
    """A beneficiary check: the triggers' declines, nothing moved or remembered."""
    verdict, code, message = trigger(_order(body))
    if verdict == DECLINED:
        return {"payment_id": str(body.payment_id), "status": "failed", "code": code,
                "message": message}  # fmt: skip
    return {"payment_id": str(body.payment_id), "status": "succeeded"}


@router.get("/statements")
async def statements(
    book: Book,
    date: Annotated[datetime.date, Query(description="The booking day (UTC), YYYY-MM-DD")],
    format: Annotated[Literal["csv", "camt053"], Query()] = "csv",
    channel: Annotated[ChannelName | None, Query()] = None,
    currency: Annotated[
        str | None,
        Query(min_length=3, max_length=3, description="camt.053: the statement's currency"),
    ] = None,
) -> StreamingResponse:
    media_type, suffix = STATEMENT_FORMATS[format]
    name = f"statement-{channel or 'all'}-{date.isoformat()}.{suffix}"
    try:
        if currency is not None:
            currency_exponent(currency)
        body = statement_body(book, date, format, channel, currency)
    except (ValidationError, AmbiguousCurrency) as e:
        raise Refused(getattr(e, "code", "ambiguous_currency"), str(e)) from None
    return StreamingResponse(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _order(body: ChargeIn) -> ChargeOrder:
    try:
        amount_minor = parse_amount(body.amount, body.currency)
    except ValidationError as e:
        raise Refused(e.code, str(e)) from None
    card = body.card or {}
    return ChargeOrder(
        payment_id=str(body.payment_id), channel=body.channel, amount_minor=amount_minor,
        currency=body.currency, payer=body.payer, payee=body.payee,
        card_number=card.get("card_number") or card.get("number") or "",
    )  # fmt: skip


async def _deliver(request: Request, handled: Handled, render: Any) -> Response:
    if handled.delivery is Delivery.UNAVAILABLE:
        return JSONResponse(
            {"code": "unavailable", "message": "the channel is unavailable, nothing was charged"},
            status_code=503,
        )
    body = orjson.dumps(render(list(handled.charges)))
    if handled.delivery is Delivery.DROP:
        return DroppedResponse(body)
    if handled.delivery is Delivery.TIMEOUT:
        await _wait_or_disconnect(request, request.app.state.knobs.config.timeout_s)
    return Response(body, media_type="application/json")


async def _wait_or_disconnect(request: Request, seconds: float) -> None:
    """Hold the answer back; stop early once the client has gone (it timed out)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while (left := until - loop.time()) > 0:
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(DISCONNECT_POLL_S, left))


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)
