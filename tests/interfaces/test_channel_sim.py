"""The channel simulator (``payledger channel-sim``) as a provider: charges once per payment id,
declines, timeouts after charging, 503s without charging, answers cut off after charging, the
status endpoint, and daily statements (CSV and camt.053) from its own records.

The app runs under uvicorn on a loopback port (tests/interfaces/conftest.py ``serving``); the
concurrency and timing tests call it in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree

from application import reconciliation
from application.reconciliation.statements import read_statement
from interfaces.channel_sim import SimConfig, create_app
from interfaces.channel_sim.book import Charge
from interfaces.channel_sim.provider import reference_of
from interfaces.channel_sim.statements import SETTLEMENT_IBANS
from tests.application.helpers import (
    CARD_DECLINED,
    CARD_NO_FUNDS,
    CARD_OK,
    CARD_TIMEOUT,
    IBAN_AC01,
    IBAN_OK,
    IBAN_TIMEOUT,
)
from tests.interfaces.conftest import serving

CAMT_XSD = Path(reconciliation.__file__).parent / "xsd" / "camt.053.001.02.xsd"


def today() -> date:
    return datetime.now(UTC).date()


def card_body(number: str = CARD_OK, amount: str = "12.34", currency: str = "EUR", **extra: Any):  # type: ignore[no-untyped-def]
    return {
        "payment_id": str(uuid.uuid4()), "channel": "card", "amount": amount,
        "currency": currency, "payer": {"type": "card", "last4": number[-4:]},
        "payee": {"type": "account"}, "card": {"card_number": number},
    } | extra  # fmt: skip


def payout_body(iban: str = IBAN_OK, amount: str = "500.00") -> dict[str, Any]:
    return {
        "payment_id": str(uuid.uuid4()), "channel": "bank_transfer", "amount": amount,
        "currency": "EUR", "payer": {"type": "account"}, "payee": {"iban": iban},
    }  # fmt: skip


def wallet_body(payer_id: str, channel: str = "alipay") -> dict[str, Any]:
    return {
        "payment_id": str(uuid.uuid4()), "channel": channel, "amount": "88.00",
        "currency": "CNY", "payer": {"type": "wallet", "payer_id": payer_id}, "payee": {},
    }  # fmt: skip


@pytest.fixture
def app() -> FastAPI:
    return create_app(SimConfig(seed=1, timeout_s=0.3))


@pytest.fixture
def sim(app: FastAPI) -> Iterator[httpx.Client]:
    with serving(app) as live, httpx.Client(base_url=live.base_url, timeout=10) as client:
        yield client


def post_charge(sim: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return sim.post("/charges", json=body, headers={"Idempotency-Key": body["payment_id"]})


# --- charges -----------------------------------------------------------------------------------


def test_a_charge_is_made_once_per_payment_id(sim: httpx.Client) -> None:
    body = card_body()
    first = post_charge(sim, body)
    assert first.status_code == 200
    answer = first.json()
    assert answer["status"] == "succeeded"
    assert answer["reference"] == reference_of("card", body["payment_id"])
    assert (answer["amount"], answer["currency"]) == ("12.34", "EUR")
    again = post_charge(sim, body | {"amount": "99.99"})  # same id: the first answer
    assert again.json() == answer
    assert sim.get("/health").json()["charges"] == 1
    assert sim.get(f"/charges/{body['payment_id']}").json() == answer


def test_concurrent_duplicates_charge_once(app: FastAPI) -> None:
    app.state.knobs.config = app.state.knobs.config.model_copy(update={"latency_ms": 30})
    body = card_body()

    async def go() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            answers = await asyncio.gather(*(client.post("/charges", json=body) for _ in range(20)))
            return [a.json() for a in answers]

    answers = asyncio.run(go())
    assert all(a == answers[0] for a in answers)
    assert len(app.state.book) == 1
    assert app.state.provider.deliveries["answer"] == 20


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (card_body(CARD_DECLINED), "card_declined"),
        (card_body(CARD_NO_FUNDS), "insufficient_funds"),
        (wallet_body("sandbox_declined"), "wallet_declined"),
        (wallet_body("sandbox_declined", "wechat_pay"), "wallet_declined"),
        (payout_body(IBAN_AC01), "AC01"),
    ],
)
def test_sandbox_triggers_decline_without_charging(
    sim: httpx.Client, body: dict[str, Any], code: str
) -> None:
    answer = post_charge(sim, body).json()
    assert (answer["status"], answer["code"]) == ("failed", code)
    assert sim.get(f"/charges/{body['payment_id']}").json()["status"] == "failed"
    assert statement_rows(sim, today()) == []  # a decline is no charge: not on the statement


def test_the_decline_rate_declines(sim: httpx.Client) -> None:
    sim.put("/_sim/config", json={"decline_rate": 1.0})
    answer = post_charge(sim, card_body()).json()
    assert (answer["status"], answer["code"]) == ("failed", "card_declined")
    payout = post_charge(sim, payout_body()).json()
    assert (payout["status"], payout["code"]) == ("failed", "AC06")


@pytest.mark.parametrize(
    "body", [card_body(CARD_TIMEOUT), wallet_body("sandbox_timeout"), payout_body(IBAN_TIMEOUT)]
)
def test_a_timeout_charges_then_holds_the_answer(app: FastAPI, body: dict[str, Any]) -> None:
    async def go() -> tuple[dict[str, Any] | None, httpx.Response, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            started = time.monotonic()
            pending = asyncio.ensure_future(client.post("/charges", json=body))
            await asyncio.sleep(0.1)
            during = await client.get(f"/charges/{body['payment_id']}")
            answer = await pending
            return during.json(), answer, time.monotonic() - started

    during, answer, took_s = asyncio.run(go())
    assert during is not None and during["status"] == "succeeded"  # charged before answering
    assert took_s >= 0.3  # held for timeout_s
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
    assert app.state.provider.deliveries["timeout"] == 1


def test_the_timeout_rate_holds_every_answer_and_a_retry_charges_nothing_more(
    sim: httpx.Client,
) -> None:
    """A slow provider is slow for every call, a replay of a charge too (never charged again);
    once it answers in time, the replay gets the recorded charge at once."""
    sim.put("/_sim/config", json={"timeout_rate": 1.0, "timeout_s": 0.5})
    body = card_body()
    started = time.monotonic()
    first = post_charge(sim, body).json()
    assert first["status"] == "succeeded"
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    assert post_charge(sim, body).json() == first  # held again: the same record
    assert time.monotonic() - started >= 0.5
    sim.put("/_sim/config", json={"timeout_rate": 0.0})
    started = time.monotonic()
    assert post_charge(sim, body).json() == first
    assert time.monotonic() - started < 0.4
    assert sim.get("/health").json()["charges"] == 1


def test_a_timeout_trigger_is_never_answered_in_time_but_its_status_is(
    sim: httpx.Client,
) -> None:
    sim.put("/_sim/config", json={"timeout_s": 0.3})
    body = card_body(CARD_TIMEOUT)
    for _ in range(2):  # the first request and a retry: both held
        started = time.monotonic()
        assert post_charge(sim, body).json()["status"] == "succeeded"
        assert time.monotonic() - started >= 0.3
    status = sim.get(f"/charges/{body['payment_id']}")
    assert status.status_code == 200 and status.json()["status"] == "succeeded"


def test_a_503_charges_nothing_and_a_retry_is_safe(sim: httpx.Client) -> None:
    sim.put("/_sim/config", json={"error_rate": 1.0})
    body = card_body()
    refused = post_charge(sim, body)
    assert refused.status_code == 503
    assert sim.get(f"/charges/{body['payment_id']}").status_code == 404
    sim.put("/_sim/config", json={"error_rate": 0.0})
    assert post_charge(sim, body).json()["status"] == "succeeded"
    assert sim.get("/health").json() == {
        "status": "ok", "charges": 1, "deliveries": {"unavailable": 1, "answer": 1},
    }  # fmt: skip


def test_an_answer_dropped_after_the_charge(app: FastAPI) -> None:
    app.state.knobs.config = app.state.knobs.config.model_copy(update={"drop_rate": 1.0})
    body = card_body()
    with serving(app) as live, httpx.Client(base_url=live.base_url, timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/charges", json=body)
        status = client.get(f"/charges/{body['payment_id']}")
        assert status.status_code == 200 and status.json()["status"] == "succeeded"
        with pytest.raises(httpx.RemoteProtocolError):  # the replay's answer drops too
            client.post("/charges", json=body)
        payouts = {"charges": [payout_body(), payout_body()]}
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/charges/batch", json=payouts)
        app.state.knobs.config = app.state.knobs.config.model_copy(update={"drop_rate": 0.0})
        retry = client.post("/charges", json=body)
        assert retry.status_code == 200 and retry.json() == status.json()
        retried = client.post("/charges/batch", json=payouts)
        assert [r["status"] for r in retried.json()["results"]] == ["succeeded", "succeeded"]
    assert len(app.state.book) == 3  # each charged once
    assert app.state.provider.deliveries["drop"] == 3


def test_a_batch_answers_each_in_order_and_charges_each_once(sim: httpx.Client) -> None:
    bodies = [payout_body(), payout_body(IBAN_AC01), card_body(CARD_DECLINED), payout_body()]
    first = sim.post("/charges/batch", json={"charges": [*bodies, bodies[0]]})
    results = first.json()["results"]
    assert [r["payment_id"] for r in results] == [b["payment_id"] for b in [*bodies, bodies[0]]]
    assert [r["status"] for r in results] == [
        "succeeded", "failed", "failed", "succeeded", "succeeded",
    ]  # fmt: skip
    assert results[4] == results[0]  # the same id twice in one call: one charge
    assert sim.post("/charges/batch", json={"charges": bodies}).json()["results"] == results[:4]
    assert sim.get("/health").json()["charges"] == 4


def test_the_status_of_an_unknown_payment_is_404(sim: httpx.Client) -> None:
    response = sim.get(f"/charges/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_invalid_requests_are_refused_without_echoing_them(sim: httpx.Client) -> None:
    body = card_body(amount="1.234")
    response = post_charge(sim, body)
    assert response.status_code == 422 and response.json()["code"] == "invalid_amount"
    numeric = card_body() | {"amount": 12.34, "card": {"card_number": 4242424242424242}}
    response = sim.post("/charges", json=numeric)
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    assert "4242424242424242" not in response.text
    mismatch = sim.post("/charges", json=card_body(), headers={"Idempotency-Key": "other"})
    assert mismatch.json()["code"] == "idempotency_key_mismatch"
    assert sim.get("/health").json()["charges"] == 0


def test_the_config_is_read_and_changed_at_run_time(sim: httpx.Client) -> None:
    assert sim.get("/_sim/config").json()["seed"] == 1
    changed = sim.put("/_sim/config", json={"decline_rate": 0.25, "seed": 9}).json()
    assert (changed["decline_rate"], changed["seed"], changed["timeout_s"]) == (0.25, 9, 0.3)
    assert sim.put("/_sim/config", json={"error_rate": 1.5}).status_code == 422
    assert sim.put("/_sim/config", json={"bogus": 1}).status_code == 422
    assert sim.get("/_sim/config").json()["decline_rate"] == 0.25


def test_a_seed_replays_the_same_faults() -> None:
    def outcomes(seed: int) -> list[str]:
        app = create_app(SimConfig(seed=seed, decline_rate=0.5))
        with serving(app) as live, httpx.Client(base_url=live.base_url) as client:
            return [
                post_charge(client, card_body() | {"payment_id": str(uuid.UUID(int=i))}).json()[
                    "status"
                ]
                for i in range(40)
            ]

    first = outcomes(42)
    assert first == outcomes(42)
    assert 5 < first.count("failed") < 35


# --- statements --------------------------------------------------------------------------------


def statement_rows(sim: httpx.Client, day: date, **params: str) -> list[dict[str, str]]:
    response = sim.get("/statements", params={"date": day.isoformat(), "format": "csv", **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_the_csv_statement_lists_the_days_charges(sim: httpx.Client) -> None:
    card = card_body(amount="12.34")
    yen = card_body(amount="1500", currency="JPY")
    payout = payout_body(amount="500.00")
    declined = card_body(CARD_DECLINED)
    lost = card_body(CARD_TIMEOUT)
    for body in (card, yen, payout, declined, lost):
        post_charge(sim, body)
    rows = statement_rows(sim, today())
    assert list(rows[0]) == [
        "booking_date", "reference", "payment_id", "amount", "currency", "direction", "status",
        "entry_ref",
    ]  # fmt: skip
    by_id = {row["payment_id"]: row for row in rows}
    assert set(by_id) == {card["payment_id"], yen["payment_id"], payout["payment_id"],
                          lost["payment_id"]}  # fmt: skip
    assert by_id[card["payment_id"]] == {
        "booking_date": today().isoformat(), "reference": reference_of("card", card["payment_id"]),
        "payment_id": card["payment_id"], "amount": "12.34", "currency": "EUR",
        "direction": "credit", "status": "settled", "entry_ref": "E000001",
    }  # fmt: skip
    assert by_id[yen["payment_id"]]["amount"] == "1500"
    assert by_id[payout["payment_id"]]["direction"] == "debit"
    assert len({row["entry_ref"] for row in rows}) == 4
    assert statement_rows(sim, today()) == rows  # stable
    assert [r["payment_id"] for r in statement_rows(sim, today(), channel="bank_transfer")] == [
        payout["payment_id"]
    ]
    assert statement_rows(sim, today() - timedelta(days=1)) == []


def test_the_booking_day_is_the_charges_utc_date(app: FastAPI, sim: httpx.Client) -> None:
    app.state.provider.now = lambda: datetime(2026, 1, 31, 23, 59, 59, 900_000, tzinfo=UTC)
    late = card_body()
    post_charge(sim, late)
    app.state.provider.now = lambda: datetime(2026, 2, 1, 0, 0, 0, 100_000, tzinfo=UTC)
    early = card_body()
    post_charge(sim, early)
    assert [r["payment_id"] for r in statement_rows(sim, date(2026, 1, 31))] == [late["payment_id"]]
    assert [r["payment_id"] for r in statement_rows(sim, date(2026, 2, 1))] == [early["payment_id"]]


def test_the_csv_statement_reads_back_with_the_statement_parser(sim: httpx.Client) -> None:
    bodies = [card_body(amount=f"{i}.00") for i in range(1, 6)]
    for body in bodies:
        post_charge(sim, body)
    content = sim.get("/statements", params={"date": today().isoformat()}).content
    lines = list(read_statement(io.BytesIO(content)))
    assert [(ln.payment_ids, ln.amount_minor, ln.status) for ln in lines] == [
        ((b["payment_id"],), int(b["amount"][:-3]) * 100, "settled") for b in bodies
    ]


def test_a_camt053_statement_is_valid_and_carries_each_charge(sim: httpx.Client) -> None:
    payouts = [payout_body(amount="500.00"), payout_body(amount="20.50")]
    for body in payouts:
        post_charge(sim, body)
    post_charge(sim, payout_body(IBAN_AC01))  # declined: not booked
    response = sim.get(
        "/statements",
        params={"date": today().isoformat(), "format": "camt053", "channel": "bank_transfer"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    document = etree.fromstring(response.content)
    schema = etree.XMLSchema(etree.parse(str(CAMT_XSD)))
    assert schema.validate(document), schema.error_log
    ns = {"c": "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"}
    iban = document.findtext(".//c:Acct/c:Id/c:IBAN", namespaces=ns)
    assert iban == SETTLEMENT_IBANS["bank_transfer"]
    entries = document.findall(".//c:Ntry", ns)
    assert [e.findtext("c:Amt", namespaces=ns) for e in entries] == ["500.00", "20.50"]
    assert {e.findtext("c:CdtDbtInd", namespaces=ns) for e in entries} == {"DBIT"}
    end_to_end = [e.findtext(".//c:EndToEndId", namespaces=ns) for e in entries]
    assert end_to_end == [uuid.UUID(b["payment_id"]).hex for b in payouts]
    statement = read_statement(io.BytesIO(response.content))
    lines = list(statement)
    assert [ln.payment_ids for ln in lines] == [(b["payment_id"],) for b in payouts]
    assert [ln.direction for ln in lines] == ["debit", "debit"]
    assert (statement.opening_balance_minor, statement.closing_balance_minor) == (0, -52050)


def test_a_camt053_opening_balance_is_the_earlier_days_net(app: FastAPI, sim: httpx.Client) -> None:
    app.state.provider.now = lambda: datetime(2026, 3, 1, 12, tzinfo=UTC)
    post_charge(sim, card_body(amount="100.00"))
    post_charge(sim, card_body(amount="5.00", currency="GBP"))
    app.state.provider.now = lambda: datetime(2026, 3, 2, 12, tzinfo=UTC)
    post_charge(sim, card_body(amount="40.00"))
    post_charge(sim, card_body(amount="1.00", currency="GBP"))
    params = {"date": "2026-03-02", "format": "camt053", "channel": "card"}
    ambiguous = sim.get("/statements", params=params)
    assert ambiguous.status_code == 422 and "currency" in ambiguous.json()["message"]
    response = sim.get("/statements", params=params | {"currency": "EUR"})
    statement = read_statement(io.BytesIO(response.content))
    assert [ln.amount_minor for ln in statement] == [4000]
    assert (statement.opening_balance_minor, statement.closing_balance_minor) == (10000, 14000)


def test_a_large_statement_streams(app: FastAPI, sim: httpx.Client) -> None:
    book, day = app.state.book, date(2026, 4, 1)
    at = datetime(2026, 4, 1, 10, tzinfo=UTC)
    count = 50_000
    for i in range(count):
        payment_id = str(uuid.UUID(int=i + 1))
        book.record(Charge(payment_id, "card", "succeeded", reference_of("card", payment_id),
                           100 + i, "EUR", at))  # fmt: skip
    with sim.stream("GET", "/statements", params={"date": day.isoformat()}) as response:
        assert "content-length" not in response.headers  # streamed, not built then sent
        chunks = list(response.iter_bytes())
    assert len(chunks) > 1
    text = b"".join(chunks).decode()
    assert text.count("\n") == count + 1
    assert text.splitlines()[-1].endswith(f",E{count:06d}")


def test_statement_parameters_are_checked(sim: httpx.Client) -> None:
    assert sim.get("/statements", params={"date": "2026-13-01"}).status_code == 422
    assert sim.get("/statements", params={"date": "2026-01-01", "format": "pdf"}).status_code == 422
    assert sim.get("/statements", params={"date": "2026-01-01", "channel": "x"}).status_code == 422
    unknown = {"date": "2026-01-01", "format": "camt053", "currency": "ZZZ"}
    assert sim.get("/statements", params=unknown).status_code == 422
