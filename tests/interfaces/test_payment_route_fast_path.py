"""``POST /v1/payments`` skips FastAPI's per-request machinery (``served_by``): it must answer
exactly as the plain FastAPI route it replaced, which this module keeps as the reference, and
document itself the same way.

Both apps serve a fake service, so only the HTTP layer is compared: status, content type,
``Idempotent-Replayed`` and the body, byte for byte, for valid payments, replays and every kind
of bad input (headers, JSON, content types, validation errors).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Body, FastAPI, Header, Request, Response
from fastapi.openapi.utils import get_openapi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from application.commands import ANONYMOUS, Principal, SubmitPayment
from application.results import PaymentResult
from domain.keys import InvalidApiKey, Unauthenticated
from interfaces.http import problems
from interfaces.http.app import MAX_BODY_BYTES
from interfaces.http.authz import Allow, Permission
from interfaces.http.deps import IdempotencyKey, current_principal, required
from interfaces.http.deps import service as service_of
from interfaces.http.examples import PAYMENT_EXAMPLES
from interfaces.http.limits import BodySizeLimit
from interfaces.http.routes import payments
from interfaces.http.routes._responses import (
    POSITION_HEADER,
    auth_problems,
    mark_position,
    mark_replay,
    replay,
)
from interfaces.http.routes.payments import OTP_HEADER, OTP_HELP, payment_json, step_up_if_large
from interfaces.http.schemas import PaymentIn, PaymentOut
from tests.interfaces.conftest import LiveServer, serving

PAYEE = "6f1c1d3e-8d6b-4a8e-9a55-3f0a1c2b7e10"
PAYER = "2a4f6c8e-1b3d-4f5a-8c7e-9d0b1a2c3e4f"
CREATED = datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
REPLAY = "replay-"  # keys starting so are answered as replays by the fake service


# --- the reference: the route as it was, on plain FastAPI ---------------------------------------


async def legacy_submit_payment(
    body: Annotated[PaymentIn, Body(openapi_examples=PAYMENT_EXAMPLES)],
    request: Request,
    response: Response,
    principal: Annotated[Principal, Allow(Permission.PAYMENTS_CREATE)],
    key: IdempotencyKey = None,
    otp: Annotated[str | None, Header(alias=OTP_HEADER, description=OTP_HELP)] = None,
) -> PaymentOut:
    """Validates, routes to the channel and records the payment; answers with its final result.

    A well-formed payment the rules or the channel refuse is recorded and answered 201 with
    `status: "failed"` and a `failure_code`; an unknown outcome is `status: "exception"`."""
    command = body.to_command(required(key))
    if principal.key_id is not None:
        await step_up_if_large(service_of(request), principal, command, otp)
    result = await service_of(request).submit_payment(command, principal)
    mark_replay(response, result.replayed)
    mark_position(response, request)
    return PaymentOut.of(result)


def legacy_router() -> APIRouter:
    router = APIRouter(prefix="/v1/payments", tags=["payments"])
    router.add_api_route(
        "",
        legacy_submit_payment,
        methods=["POST"],
        name="submit_payment",
        status_code=201,
        summary="Submit a real-time payment",
        response_description="The final payment (201), or the original one on a replay (200)",
        responses=replay(PaymentOut) | auth_problems(400, 409, 422, 503),
    )
    return router


class FakeService:
    """Answers a payment from the command alone, so that user text reaches the answer."""

    def __init__(self) -> None:
        self.commands: list[tuple[SubmitPayment, Principal]] = []
        # What `mark_position` reads when the request saved nothing (the fake saves nothing).
        self.app = SimpleNamespace(recorder=SimpleNamespace(max_notification_id=lambda: 7))
        # Keys: the payments here are small, no step-up (tests/interfaces/test_step_up_http.py).
        self.keys = SimpleNamespace(payment_needs_step_up=lambda *args: False)

    async def submit_payment(self, command: SubmitPayment, principal: Principal) -> PaymentResult:
        self.commands.append((command, principal))
        card = command.payment_method is not None
        return PaymentResult(
            id=uuid.uuid5(uuid.NAMESPACE_URL, command.idempotency_key),
            tenant=principal.tenant,
            kind="payment",
            state="succeeded" if card else "settled",
            status="succeeded",
            amount_minor=4050,
            currency="CNY",
            channel=command.channel,
            payer={"type": "card", "last4": "4242", "exp_month": 12, "brand": "visa"}
            if card
            else {"type": "account", "account_id": str(command.payer_account_id)},
            payee={"type": "account", "account_id": str(command.payee_account_id), "x": None},
            description=command.description,
            metadata=dict(command.metadata),
            failure_code=None,
            failure_message=None,
            channel_reference="ch_1" if card else None,
            created_at=CREATED,
            completed_at=CREATED + timedelta(milliseconds=5),
            latency_ms=5,
            version=4,
            replayed=command.idempotency_key.startswith(REPLAY),
        )


# Stand-ins for API keys: the fake service has no store to keep them in.
SUBMITTER = Principal(tenant="acme", client="key:s", role="submitter", key_id=uuid.uuid4())
AUDITOR = Principal(tenant="acme", client="key:a", role="auditor", key_id=uuid.uuid4())
STUB_KEYS = {"Bearer submitter": SUBMITTER, "Bearer auditor": AUDITOR}


class StubAuthenticator:
    """``app.state.auth`` for the bare apps: no header is the sandbox, two known keys, and
    anything else an invalid key."""

    async def authenticate(self, authorization: str | None) -> Principal:
        if authorization is None:
            return ANONYMOUS
        if authorization == "Bearer nobody":
            raise Unauthenticated("send an API key")
        principal = STUB_KEYS.get(authorization)
        if principal is None:
            raise InvalidApiKey("the API key is not valid")
        return principal


def bare_app(router: APIRouter, svc: FakeService) -> FastAPI:
    """The parts of ``create_app`` a POST goes through: problems, the body limit, the route."""
    app = FastAPI(title="Payledger", version="0")
    problems.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.include_router(router)
    app.state.service = svc
    app.state.auth = StubAuthenticator()
    return app


Clients = tuple[httpx.Client, httpx.Client]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LiveServer, LiveServer]]:
    with (
        serving(bare_app(legacy_router(), FakeService())) as old,
        serving(bare_app(payments.router, FakeService())) as new,
    ):
        yield old, new


@pytest.fixture(scope="module")
def clients(servers: tuple[LiveServer, LiveServer]) -> Iterator[Clients]:
    """The reference's client, then the fast route's."""
    old, new = servers
    with (
        httpx.Client(base_url=old.base_url, timeout=30) as old_client,
        httpx.Client(base_url=new.base_url, timeout=30) as new_client,
    ):
        yield old_client, new_client


def answer(response: httpx.Response) -> tuple[Any, ...]:
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("idempotent-replayed"),
        response.headers.get("retry-after"),
        response.headers.get(POSITION_HEADER),
        response.content,
    )


def post_both(
    clients: Clients, content: bytes, headers: dict[str, str]
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    old, new = clients
    return tuple(  # type: ignore[return-value]
        answer(c.post("/v1/payments", content=content, headers=headers)) for c in (old, new)
    )


# --- the same answers --------------------------------------------------------------------------

JSON = {"content-type": "application/json"}
CARD = {
    "type": "card",
    "number": "4242424242424242",
    "exp_month": 12,
    "exp_year": 2035,
    "cvc": "123",
}
INTERNAL = {
    "amount": "40.50",
    "currency": "CNY",
    "channel": "internal",
    "payer_account_id": PAYER,
    "payee_account_id": PAYEE,
    "description": 'invoice "17" \\ \n\t\u2028 é 漢字 😀 \x7f',
    "metadata": {"order": "1001", "ключ": "значение", "e": ""},
}
CARD_PAYMENT = {
    "amount": "99.00",
    "currency": "CNY",
    "channel": "card",
    "payment_method": CARD,
    "payee_account_id": PAYEE,
}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


VALID_BODIES = {
    **{name: dumps(example["value"]) for name, example in PAYMENT_EXAMPLES.items()},
    "internal": dumps(INTERNAL),
    "ascii-escaped": json.dumps(INTERNAL, ensure_ascii=True).encode(),
    "card": dumps(CARD_PAYMENT),
    "duplicate key": b'{"amount": "1.00", "amount": "2.00",' + dumps(CARD_PAYMENT)[1:],
    "utf-8 BOM": b"\xef\xbb\xbf" + dumps(INTERNAL),  # json.loads takes it, pydantic does not
    "utf-16": json.dumps(INTERNAL).encode("utf-16"),
    "surrounding blanks": b" \n\t" + dumps(INTERNAL) + b"\r\n ",
}
BAD_BODIES = {
    "empty": b"",
    "broken": b'{"amount": "1.00",',
    "trailing data": dumps(INTERNAL) + b" x",
    "two objects": dumps(INTERNAL) + dumps(INTERNAL),
    "raw newline in a string": dumps(INTERNAL).replace(b"\\n", b"\n"),
    "lone surrogate": dumps(INTERNAL | {"description": "\ud800"}),
    "not UTF-8": dumps(INTERNAL).replace(b"invoice", b"inv\xffoice"),
    "too deep": b'{"metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "number too long": dumps(CARD_PAYMENT).replace(
        b'"exp_month": 12', b'"exp_month": ' + b"1" * 5000
    ),
    "NaN": dumps(CARD_PAYMENT).replace(b'"exp_month": 12', b'"exp_month": NaN'),
    "float month": dumps(CARD_PAYMENT).replace(b'"exp_month": 12', b'"exp_month": 12.0'),
    "null": b"null",
    "list": b'["amount"]',
    "string": b'"amount"',
    "number": b"12",
    "object": b"{}",
    "unknown field": dumps(INTERNAL | {"tip": "1.00"}),
    "amount as number": dumps(INTERNAL | {"amount": 10.5}),
    "missing amount": dumps({k: v for k, v in INTERNAL.items() if k != "amount"}),
    "unknown channel": dumps(INTERNAL | {"channel": "paypal"}),
    "payer not a uuid": dumps(INTERNAL | {"payer_account_id": "alice"}),
    "payer an int": dumps(INTERNAL | {"payer_account_id": 12}),
    "metadata a list": dumps(INTERNAL | {"metadata": ["a"]}),
    "oversize metadata": dumps(INTERNAL | {"metadata": {f"k{i}": "v" for i in range(21)}}),
    "unknown method type": dumps(CARD_PAYMENT | {"payment_method": CARD | {"type": "paypal"}}),
    "method without type": dumps(
        CARD_PAYMENT | {"payment_method": {k: v for k, v in CARD.items() if k != "type"}}
    ),
    "card month 13": dumps(CARD_PAYMENT | {"payment_method": CARD | {"exp_month": 13}}),
    "card number as number": dumps(CARD_PAYMENT | {"payment_method": CARD | {"number": 4242}}),
    "card with pin": dumps(CARD_PAYMENT | {"payment_method": CARD | {"pin": "0000"}}),
    "beneficiary wrong": dumps(INTERNAL | {"beneficiary": {"type": "bank", "iban": 1}}),
    "many errors": dumps({"amount": 1, "currency": 2, "channel": 3, "x": 4, "metadata": 5}),
}
CONTENT_TYPES = [
    None,
    "",
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/merchant+json",
    "application/jsonx",
    "text/json",
    "text/plain",
    "application/x-www-form-urlencoded",
]


def key_headers(key: str | None, content_type: str | None = "application/json") -> dict[str, str]:
    headers = {} if key is None else {"Idempotency-Key": key}
    if content_type is not None:
        headers["content-type"] = content_type
    return headers


@pytest.mark.parametrize("body", list(VALID_BODIES.values()), ids=list(VALID_BODIES))
@pytest.mark.parametrize("key", ["k-1", REPLAY + "1"], ids=["new", "replay"])
def test_valid_payments_are_answered_the_same(clients: Clients, body: bytes, key: str) -> None:
    old, new = post_both(clients, body, key_headers(key))

    assert new == old
    assert new[0] == (200 if key.startswith(REPLAY) else 201), new
    assert new[2] == ("true" if key.startswith(REPLAY) else None)


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
@pytest.mark.parametrize("key", [None, "", "k-2", "k" * 256], ids=["none", "empty", "ok", "long"])
def test_bad_bodies_and_keys_are_answered_the_same(
    clients: Clients, body: bytes, key: str | None
) -> None:
    old, new = post_both(clients, body, key_headers(key))

    assert new == old
    assert new[0] in (400, 422), new


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize(
    "body", [VALID_BODIES["internal"], BAD_BODIES["broken"], b""], ids=["valid", "broken", "empty"]
)
def test_content_types_are_answered_the_same(
    clients: Clients, content_type: str | None, body: bytes
) -> None:
    old, new = post_both(clients, body, key_headers("k-3", content_type))

    assert new == old


@pytest.mark.parametrize(
    "key", [None, "", "k" * 255, "k" * 256], ids=["none", "empty", "max", "long"]
)
def test_keys_with_a_valid_body_are_answered_the_same(clients: Clients, key: str | None) -> None:
    old, new = post_both(clients, VALID_BODIES["card"], key_headers(key))

    assert new == old


@pytest.mark.parametrize(
    "authorization", [None, "Bearer submitter", "Bearer auditor", "Bearer x", "Bearer nobody"]
)
@pytest.mark.parametrize(
    "body", [VALID_BODIES["card"], BAD_BODIES["broken"], BAD_BODIES["unknown field"]],
    ids=["valid", "broken", "invalid"],
)  # fmt: skip
@pytest.mark.parametrize("key", [None, "k-6"], ids=["no key", "key"])
def test_principals_are_answered_the_same(
    clients: Clients, authorization: str | None, body: bytes, key: str | None
) -> None:
    """401 (with its challenge) and 403 come where FastAPI's dependency put them: after a body
    that does not parse, before every other error."""
    headers = key_headers(key) | ({} if authorization is None else {"Authorization": authorization})
    old, new = (c.post("/v1/payments", content=body, headers=headers) for c in clients)

    assert answer(new) == answer(old)
    assert new.headers.get("www-authenticate") == old.headers.get("www-authenticate")
    if body is not BAD_BODIES["broken"] and authorization in ("Bearer x", "Bearer nobody"):
        assert new.status_code == 401 and new.headers["www-authenticate"].startswith("Bearer")
    if body is not BAD_BODIES["broken"] and authorization == "Bearer auditor":
        assert new.status_code == 403 and new.json()["code"] == "forbidden"


def test_oversize_bodies_are_answered_the_same(clients: Clients) -> None:
    huge = dumps(INTERNAL | {"description": "x" * (MAX_BODY_BYTES + 1)})
    declared = post_both(clients, huge, key_headers("k-4"))
    chunked = [
        answer(c.post("/v1/payments", content=iter([huge[:10], huge[10:]]), headers=JSON))
        for c in clients
    ]

    assert declared[0] == declared[1] and declared[1][0] == 413
    assert chunked[0] == chunked[1] and chunked[1][0] == 413


def test_the_service_gets_the_same_command_and_principal(
    clients: Clients, servers: tuple[LiveServer, LiveServer]
) -> None:
    for c in clients:
        c.post("/v1/payments", content=VALID_BODIES["card"], headers=key_headers("k-5"))

    commands = [live.app.state.service.commands[-1] for live in servers]
    assert commands[0] == commands[1]
    assert commands[1][0].idempotency_key == "k-5" and commands[1][1] == ANONYMOUS


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_field_values = {
    "amount": st.sampled_from(["1.00", "0", "-1", "1e3", "", "x" * 40]) | _json_values,
    "currency": st.sampled_from(["CNY", "cny", "", "TOOLONGCODE"]) | _json_values,
    "channel": st.sampled_from(["internal", "card", "alipay", "paypal"]) | _json_values,
    "payer_account_id": st.sampled_from([PAYER, PAYER.upper(), PAYER.replace("-", ""), "x"])
    | _json_values,
    "payee_account_id": st.just(PAYEE) | st.uuids().map(str) | _json_values,
    "payment_method": st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["card", "alipay", "wechat_pay", "x"]) | _json_values,
            "number": st.sampled_from(["4242424242424242", ""]) | _json_values,
            "exp_month": st.integers(0, 13) | _json_values,
            "exp_year": st.integers(1999, 2101) | _json_values,
            "cvc": st.sampled_from(["123", "12345"]) | _json_values,
            "payer_id": st.text(max_size=70),
        },
    )
    | _json_values,
    "beneficiary": st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["bank_account", "x"]),
            "iban": st.sampled_from(["DE89370400440532013000"]) | _json_values,
            "name": st.text(max_size=3),
            "bic": st.none() | st.text(max_size=12),
        },
    ),
    "description": st.none() | st.text(max_size=20) | _json_values,
    "metadata": st.dictionaries(st.text(max_size=41), st.text(max_size=5), max_size=22)
    | _json_values,
    "tip": _json_values,
}
_bodies = st.fixed_dictionaries({}, optional=_field_values) | _json_values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies, ascii_only=st.booleans(), key=st.sampled_from([None, "k-6", REPLAY + "6"]))
def test_any_json_body_is_answered_the_same(
    clients: Clients, body: Any, ascii_only: bool, key: str | None
) -> None:
    content = json.dumps(body, ensure_ascii=ascii_only).encode()

    old, new = post_both(clients, content, key_headers(key))

    assert new == old


# --- the JSON of PaymentOut, byte for byte -----------------------------------------------------

_text = st.text()
_timezones = st.timezones() | st.builds(
    timezone, st.timedeltas(timedelta(hours=-23, minutes=-59), timedelta(hours=23, minutes=59))
)
_times = st.datetimes(timezones=st.none() | _timezones)
_scalars = st.none() | st.booleans() | st.integers() | _text
_results = st.builds(
    PaymentResult,
    id=st.uuids(),
    tenant=st.just("default"),
    kind=st.sampled_from(["payment", "deposit"]),
    state=st.sampled_from(["requested", "succeeded", "failed"]) | _text,
    status=st.sampled_from(["processing", "succeeded", "failed", "exception"]),
    amount_minor=st.integers(0, 10**20),
    currency=st.sampled_from(["CNY", "JPY", "BHD", "EUR"]),
    channel=_text,
    payer=st.dictionaries(_text, _scalars | st.floats() | st.lists(_scalars, max_size=2)),
    payee=st.dictionaries(_text, _scalars),
    description=st.none() | _text,
    metadata=st.dictionaries(_text, _text),
    failure_code=st.none() | _text,
    failure_message=st.none() | _text,
    channel_reference=st.none() | _text,
    created_at=_times,
    completed_at=st.none() | _times,
    latency_ms=st.none() | st.integers(),
    version=st.integers(1, 10),
    replayed=st.booleans(),
    as_of_version=st.none() | st.integers(1, 10),
    as_of=st.none() | _times,
)


def _model_json(result: PaymentResult) -> bytes | type[Exception]:
    try:
        return PaymentOut.of(result).model_dump_json().encode()
    except Exception as e:  # a lone surrogate, a bad status: the same error either way
        return type(e)


def _fast_json(result: PaymentResult) -> bytes | type[Exception]:
    try:
        return payment_json(result)
    except Exception as e:
        return type(e)


@settings(max_examples=1000, deadline=None)
@given(result=_results)
def test_payment_json_is_the_models_json(result: PaymentResult) -> None:
    assert _fast_json(result) == _model_json(result)


def test_a_payment_is_written_by_orjson_not_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast way must be the usual one: every field of a real payment is a plain value."""
    result = PaymentResult(
        id=uuid.uuid4(), tenant="default", kind="payment", state="succeeded", status="succeeded",
        amount_minor=9900, currency="CNY", channel="card",
        payer={"type": "card", "token": "tok_1", "brand": "visa", "last4": "4242",
               "exp_month": 12, "exp_year": 2030, "fingerprint": "fp"},
        payee={"type": "bank_account", "iban": "DE89370400440532013000", "name": "E", "bic": None},
        description=None, metadata={"order_id": "1001"}, failure_code=None,
        failure_message=None, channel_reference="ch_1", created_at=datetime.now(UTC),
        completed_at=datetime.now(UTC), latency_ms=3, version=4,
    )  # fmt: skip
    expected = PaymentOut.of(result).model_dump_json().encode()

    def no_model(*args: object) -> None:
        raise AssertionError("took the model's way")

    processing = replace(result, completed_at=None, latency_ms=None, replayed=True)
    expected_processing = PaymentOut.of(processing).model_dump_json().encode()
    monkeypatch.setattr(PaymentOut, "of", no_model)
    assert payment_json(result) == expected
    assert payment_json(processing) == expected_processing


# --- the same documentation --------------------------------------------------------------------


def _openapi(app: FastAPI) -> dict[str, Any]:
    return get_openapi(title="Payledger", version="0", routes=app.routes)


def test_openapi_documents_the_route_as_before() -> None:
    old = _openapi(bare_app(legacy_router(), FakeService()))
    new = _openapi(bare_app(payments.router, FakeService()))

    assert new["paths"]["/v1/payments"]["post"] == old["paths"]["/v1/payments"]["post"]
    for name, schema in old["components"]["schemas"].items():
        assert new["components"]["schemas"][name] == schema, name
    operation = new["paths"]["/v1/payments"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PaymentIn"}
    assert set(body["examples"]) == set(PAYMENT_EXAMPLES)
    assert [p["name"] for p in operation["parameters"]] == ["Idempotency-Key", OTP_HEADER]
    assert operation["security"] == [{"ApiKey": []}]
    assert {"401", "403", "429"} <= set(operation["responses"])
    assert {"200", "201", "400", "409", "422", "503"} <= set(operation["responses"])
    assert operation["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PaymentOut"
    }


def test_the_documented_endpoint_is_never_called(servers: tuple[LiveServer, LiveServer]) -> None:
    route = next(r for r in payments.router.routes if getattr(r, "name", "") == "submit_payment")
    assert route.get_route_handler() is payments.submit_payment  # type: ignore[attr-defined]
    assert servers[1].app.url_path_for("submit_payment") == "/v1/payments"


def test_current_principal_is_the_dependencys() -> None:
    def request(headers: dict[str, str]) -> Any:
        state = SimpleNamespace(auth=StubAuthenticator())
        app = SimpleNamespace(state=state)
        return SimpleNamespace(app=app, headers=headers, state=SimpleNamespace())

    assert asyncio.run(current_principal(request({}))) == ANONYMOUS
    assert asyncio.run(current_principal(request({"authorization": "Bearer submitter"}))) == (
        SUBMITTER
    )
    with pytest.raises(InvalidApiKey):
        asyncio.run(current_principal(request({"authorization": "Bearer x"})))


def test_the_body_adapter_is_payment_in() -> None:
    assert isinstance(payments._PAYMENT_IN, TypeAdapter)
    assert payments._PAYMENT_IN.validate_json(dumps(INTERNAL)) == PaymentIn.model_validate(INTERNAL)
