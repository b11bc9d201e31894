"""The read side over HTTP, on SQLite and PostgreSQL: payment search with filters and cursors, the
statement with running balances, metrics against a count made here, and read-your-writes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from tests.interfaces.conftest import Api, card

DECLINED, TIMEOUT = "4000000000000002", "4000000000000119"


def internal(payer: str, payee: str, amount: str) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY", "channel": "internal",
            "payer_account_id": payer, "payee_account_id": payee}  # fmt: skip


def card_payment(number: str, payee: str, amount: str = "3.00") -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY", "channel": "card",
            "payment_method": card(number), "payee_account_id": payee}  # fmt: skip


def caught_up(client: httpx.Client, response: httpx.Response) -> dict[str, str]:
    """The query parameters that make a read see ``response``'s write."""
    return {"wait_for_position": response.headers["Payledger-Position"]}


def test_search_filters_and_pages_through_every_payment(api: Api, client: httpx.Client) -> None:
    alice, bob, shop = api.funded_account("500.00"), api.funded_account("500.00"), api.merchant()
    made = []
    for i in range(7):
        payer = alice if i % 2 == 0 else bob
        response = api.pay(internal(payer, shop, f"{i + 1}.00"))
        assert response.status_code == 201
        made.append(response.json())
    last = api.pay(card_payment(DECLINED, shop))
    made.append(last.json())

    listed, cursor = [], None
    while True:
        params: dict[str, Any] = {"payee": shop, "limit": 3, **caught_up(client, last)}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/payments", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["as_of_position"] >= int(last.headers["Payledger-Position"])
        listed += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(p["id"] for p in listed) == sorted(p["id"] for p in made)
    assert [p["created_at"] for p in listed] == sorted((p["created_at"] for p in listed),
                                                       reverse=True)  # fmt: skip

    by_alice = client.get("/v1/payments", params={"payer": alice, "status": "succeeded"}).json()
    assert {p["amount"] for p in by_alice["items"]} == {"1.00", "3.00", "5.00", "7.00"}
    failed = client.get("/v1/payments", params={"payee": shop, "status": "failed"}).json()
    assert [p["failure_code"] for p in failed["items"]] == ["card_declined"]
    ranged = client.get(
        "/v1/payments",
        params={"payee": shop, "currency": "CNY", "amount_min": "2.00", "amount_max": "4.00",
                "channel": "internal"},
    ).json()  # fmt: skip
    assert sorted(p["amount"] for p in ranged["items"]) == ["2.00", "3.00", "4.00"]


def test_bad_filters_are_specific_422s(api: Api, client: httpx.Client) -> None:
    cases = [
        ({"status": "done"}, "status"),
        ({"amount_min": "1.00"}, "currency"),
        ({"amount_min": "1.001", "currency": "CNY"}, "amount_min"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"payer": "nope"}, "payer"),
        # reversed ranges (a time without an offset is UTC)
        ({"created_from": "2030-01-01T00:00:00Z", "created_to": "2020-01-01T00:00:00Z"},
         "created_from"),
        ({"created_from": "2030-01-01T00:00:00", "created_to": "2030-01-01T01:00:00+02:00"},
         "created_from"),
        ({"amount_min": "20.00", "amount_max": "10.00", "currency": "CNY"}, "amount_min"),
    ]  # fmt: skip
    for params, field in cases:
        response = client.get("/v1/payments", params=params)
        assert response.status_code == 422, (params, response.text)
        fields = [e["field"] for e in response.json()["errors"]]
        assert any(field in f for f in fields), (params, fields)


def test_statement_has_running_balances(api: Api, client: httpx.Client) -> None:
    alice, shop = api.funded_account("100.00"), api.merchant()
    for amount in ("10.00", "20.50", "0.25"):
        assert api.pay(internal(alice, shop, amount)).status_code == 201

    body = client.get(f"/v1/accounts/{alice}/entries").json()

    assert [e["amount"] for e in body["items"]] == ["100.00", "-10.00", "-20.50", "-0.25"]
    assert [e["balance_after"] for e in body["items"]] == ["100.00", "90.00", "69.50", "69.25"]
    assert body["balance"] == api.account(alice)["balance"] == "69.25"
    second = client.get(f"/v1/accounts/{alice}/entries", params={"limit": 3}).json()
    rest = client.get(
        f"/v1/accounts/{alice}/entries", params={"cursor": second["next_cursor"]}
    ).json()
    assert [e["version"] for e in second["items"] + rest["items"]] == [
        e["version"] for e in body["items"]
    ]
    unknown = client.get("/v1/accounts/00000000-0000-0000-0000-000000000000/entries")
    assert unknown.status_code == 404


def test_metrics_match_the_payments_made(api: Api, client: httpx.Client) -> None:
    shop = api.merchant()
    numbers = ["4242424242424242"] * 5 + [DECLINED] * 3 + [TIMEOUT] * 2
    answers = [api.pay(card_payment(n, shop)) for n in numbers]
    statuses = Counter(a.json()["status"] for a in answers)
    latencies = sorted(a.json()["latency_ms"] for a in answers)

    body = client.get(
        "/v1/metrics", params={"channel": "card", **caught_up(client, answers[-1])}
    ).json()

    totals = body["totals"]
    assert statuses == {"succeeded": 5, "failed": 3, "exception": 2}
    assert (totals["succeeded"], totals["failed"], totals["exception"]) == (5, 3, 2)
    assert totals["total"] == 10 and totals["processing"] == 0
    assert totals["success_rate"] == pytest.approx(0.5)
    assert [c["channel"] for c in body["channels"]] == ["card"]
    assert sum(p["total"] for p in body["series"]) == 10
    # Nearest rank over the latencies the payments answered with.
    assert totals["latency_ms"] == {"p50": latencies[4], "p95": latencies[9], "p99": latencies[9]}


def test_metrics_reject_a_reversed_period(client: httpx.Client) -> None:
    response = client.get(
        "/v1/metrics", params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "from"


@pytest.mark.parametrize(
    "params",
    [
        {"to": "0001-01-01T00:00:00Z"},  # `from` would default to an hour before year 1
        {"from": "0001-01-01T00:30:00+05:00"},  # before year 1 in UTC
        {"to": "9999-12-31T23:59:59-05:00"},  # after year 9999 in UTC
    ],
)
@pytest.mark.parametrize("path", ["/v1/metrics", "/dashboard"])
def test_a_period_beyond_the_calendar_is_a_422(
    client: httpx.Client, path: str, params: dict[str, str]
) -> None:
    # Found by tests/interfaces/test_schemathesis.py: these were 500 (OverflowError).
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert [e["code"] for e in response.json()["errors"]] == ["out_of_range"]


def test_waiting_for_a_position_never_reached_is_a_503(client: httpx.Client) -> None:
    response = client.get("/v1/payments", params={"wait_for_position": 10**12, "timeout_s": 0.2})
    assert response.status_code == 503
    assert response.json()["code"] == "position_not_reached"
