"""The exception routes over real HTTP, on SQLite and PostgreSQL: the open exceptions with their
age, a manual resolution (with the operator in the payment's history), the refusals (409, 404
across tenants, 403 for a role without the permission), a pass on demand, and the server's own
resolver in the background."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from application.service import Payledger
from application.settings import Settings
from interfaces.http.app import create_app
from tests.application.test_exceptions import MovableClock
from tests.conftest import make_settings
from tests.interfaces.conftest import Api, LiveServer, card, serving
from tests.interfaces.keys_helpers import HttpKey, issue, new_tenant, problem_code

CARD_TIMEOUT = "4000000000000119"  # the sandbox charges it, then times out: exception
IBAN_TIMEOUT = "DE82370400440532010119"


@dataclass
class Tenant:
    live: LiveServer
    name: str
    admin: HttpKey
    operator: HttpKey
    submitter: HttpKey

    def client(self, key: HttpKey | None = None) -> httpx.Client:
        return (key or self.admin).client(self.live.base_url)

    def pay_timeout_card(self, amount: str = "40.50") -> dict[str, Any]:
        with self.client() as http:
            api = Api(http)
            method = card(CARD_TIMEOUT)
            body = {"amount": amount, "currency": "CNY", "channel": "card",
                    "payment_method": method, "payee_account_id": api.merchant()}  # fmt: skip
            paid = api.pay(body)
        assert paid.status_code == 201 and paid.json()["status"] == "exception", paid.text
        return paid.json()  # type: ignore[no-any-return]

    def exceptions(self, key: HttpKey | None = None, **params: Any) -> httpx.Response:
        position = self.live.notification_position()
        with self.client(key) as http:
            return http.get("/v1/exceptions", params={"wait_for_position": position, **params})


@dataclass
class Server:
    live: LiveServer
    clock: MovableClock

    def tenant(self) -> Tenant:
        name = new_tenant()
        svc = self.live.service
        keys = {role: issue(svc, name, role) for role in ("admin", "operator", "submitter")}
        return Tenant(self.live, name, keys["admin"], keys["operator"], keys["submitter"])


@contextmanager
def server_on(settings: Settings) -> Iterator[Server]:
    clock = MovableClock()
    with Payledger(settings, clock=clock) as svc, serving(create_app(settings, svc)) as live:
        yield Server(live, clock)


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    """The resolver is off in the background: the tests decide when a pass runs."""
    with server_on(make_settings(database_url, exception_resolver_interval_s=0)) as made:
        yield made


def test_the_list_shows_the_tenants_open_exceptions_oldest_first_with_their_age(
    server: Server,
) -> None:
    t, other = server.tenant(), server.tenant()
    first = t.pay_timeout_card("40.50")
    server.clock.advance(timedelta(seconds=30))
    with t.client() as http:
        api = Api(http)
        payer = api.funded_account("100.00", "EUR")
        beneficiary = {"type": "bank_account", "iban": IBAN_TIMEOUT, "name": "Bob"}
        body = {"amount": "30.00", "currency": "EUR", "channel": "bank_transfer",
                "payer_account_id": payer, "beneficiary": beneficiary}  # fmt: skip
        second = api.pay(body).json()
        assert second["status"] == "exception"
        ok = api.pay({"amount": "1.00", "currency": "CNY", "channel": "card",
                      "payment_method": card(), "payee_account_id": api.merchant()})  # fmt: skip
        assert ok.json()["status"] == "succeeded"
    other.pay_timeout_card()
    server.clock.advance(timedelta(seconds=60))

    listed = t.exceptions(t.submitter)  # every role of the tenant reads its payments
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["as_of_position"] >= 1 and page["next_cursor"] is None
    assert [x["payment_id"] for x in page["items"]] == [first["id"], second["id"]]
    one, two = page["items"]
    assert (one["amount"], one["currency"], one["channel"], one["code"]) == (
        "40.50", "CNY", "card", "channel_timeout",
    )  # fmt: skip
    assert (two["amount"], two["currency"], two["batch_id"], two["flagged"]) == (
        "30.00", "EUR", None, False,
    )  # fmt: skip
    assert 90 <= one["age_seconds"] < 150 and 60 <= two["age_seconds"] < 120
    assert one["flagged_at"] is None and one["exception_since"] and one["message"]

    assert [x["payment_id"] for x in t.exceptions(channel="card").json()["items"]] == [first["id"]]
    assert t.exceptions(flagged="true").json()["items"] == []
    paged = t.exceptions(limit=1).json()
    assert [x["payment_id"] for x in paged["items"]] == [first["id"]] and paged["next_cursor"]
    rest = t.exceptions(limit=1, cursor=paged["next_cursor"]).json()
    assert [x["payment_id"] for x in rest["items"]] == [second["id"]]
    assert rest["next_cursor"] is None
    bad = t.exceptions(cursor="not-a-cursor")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"
    assert len(other.exceptions().json()["items"]) == 1  # its own only


def test_an_operator_resolves_an_exception_by_hand(server: Server) -> None:
    t, other = server.tenant(), server.tenant()
    paid = t.pay_timeout_card()
    path = f"/v1/exceptions/{paid['id']}/resolve"
    body = {"outcome": "succeeded", "reason": "on the network's settlement report",
            "channel_reference": "NET-77"}  # fmt: skip

    with t.client(t.submitter) as http:
        refused = http.post(path, json=body)
    assert (refused.status_code, problem_code(refused)) == (403, "forbidden")
    with other.client(other.operator) as http:
        theirs = http.post(path, json=body)
    assert (theirs.status_code, problem_code(theirs)) == (404, "payment_not_found")
    with t.client(t.operator) as http:
        for wrong in ({"outcome": "maybe", "reason": "x"}, {"outcome": "failed"},
                      {"outcome": "failed", "reason": ""}, {**body, "amount": "1.00"},
                      {"outcome": "failed", "reason": "x" * 501}):  # fmt: skip
            answer = http.post(path, json=wrong)
            assert answer.status_code == 422, (wrong, answer.text)
        resolved = http.post(path, json=body)
        assert resolved.status_code == 200, resolved.text
        assert int(resolved.headers["Payledger-Position"]) > 0
        payment = resolved.json()
        assert (payment["id"], payment["status"], payment["channel_reference"]) == (
            paid["id"], "succeeded", "NET-77",
        )  # fmt: skip
        again = http.post(path, json={"outcome": "failed", "reason": "second thoughts"})
        assert (again.status_code, problem_code(again)) == (409, "payment_not_in_exception")
        events = http.get(f"/v1/payments/{paid['id']}/events").json()["events"]
    resolution = next(e for e in events if e["type"] == "ExceptionResolved")
    assert resolution["actor"] == f"key:{t.operator.id}"
    assert resolution["data"] == {"outcome": "succeeded", "how": "manual",
                                  "reason": "on the network's settlement report",
                                  "channel_reference": "NET-77"}  # fmt: skip
    assert [e["type"] for e in events][-2:] == ["ExceptionResolved", "Succeeded"]
    assert t.exceptions().json()["items"] == []


def test_an_unknown_payment_is_404_and_a_final_one_409(server: Server) -> None:
    t = server.tenant()
    with t.client(t.operator) as http:
        body = {"outcome": "failed", "reason": "checked"}
        unknown = http.post("/v1/exceptions/not-a-uuid/resolve", json=body)
        assert unknown.status_code == 422
        missing = http.post("/v1/exceptions/00000000-0000-4000-8000-000000000000/resolve",
                            json=body)  # fmt: skip
        assert (missing.status_code, problem_code(missing)) == (404, "payment_not_found")
    with t.client() as http:
        api = Api(http)
        body_ok = {"amount": "1.00", "currency": "CNY", "channel": "card",
                   "payment_method": card(), "payee_account_id": api.merchant()}  # fmt: skip
        done = api.pay(body_ok).json()
    with t.client(t.operator) as http:
        final = http.post(f"/v1/exceptions/{done['id']}/resolve", json=body)
    assert (final.status_code, problem_code(final)) == (409, "payment_not_in_exception")


def test_an_operator_has_the_channels_asked_now(server: Server) -> None:
    t, other = server.tenant(), server.tenant()
    paid = t.pay_timeout_card()
    theirs = other.pay_timeout_card()
    with t.client(t.operator) as http:
        young = http.post("/v1/exceptions/resolve-pending")
        assert young.status_code == 200, young.text
        assert young.json() == {"succeeded": 0, "failed": 0, "open": 1, "flagged": 0, "asked": 0}
        server.clock.advance(timedelta(minutes=1))
        done = http.post("/v1/exceptions/resolve-pending")
        assert done.json() == {"succeeded": 1, "failed": 0, "open": 0, "flagged": 0, "asked": 1}
        assert http.get(f"/v1/payments/{paid['id']}").json()["status"] == "succeeded"
    with t.client(t.submitter) as http:
        assert http.post("/v1/exceptions/resolve-pending").status_code == 403
    with other.client() as http:  # another tenant's pass was not run
        assert http.get(f"/v1/payments/{theirs['id']}").json()["status"] == "exception"


def test_the_servers_resolver_finds_out_in_the_background(database_url: str) -> None:
    settings = make_settings(database_url, exception_resolver_interval_s=0.1)
    with server_on(settings) as server:
        t = server.tenant()
        paid = t.pay_timeout_card()
        server.clock.advance(timedelta(minutes=1))
        deadline = time.monotonic() + 15
        with t.client() as http:
            while True:
                payment = http.get(f"/v1/payments/{paid['id']}").json()
                if payment["status"] != "exception" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            events = http.get(f"/v1/payments/{paid['id']}/events").json()["events"]
        assert payment["status"] == "succeeded", payment
        resolution = next(e for e in events if e["type"] == "ExceptionResolved")
        assert (resolution["actor"], resolution["data"]["how"]) == (
            "system:exception-resolver", "channel_status",
        )  # fmt: skip
        assert [e["type"] for e in events].count("Succeeded") == 1
