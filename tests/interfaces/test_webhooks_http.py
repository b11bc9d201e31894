"""Webhooks over real HTTP: endpoints, signed deliveries of every payment outcome, retries with
backoff, the delivery log, secret rotation, and tenant isolation; on SQLite and PostgreSQL.

A real receiver (tests/webhook_receiver.py, an ``http.server`` on a thread) records what the
server's deliverer thread posts; signatures are checked with interfaces/webhooks/verify.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from uuid import UUID

import httpx
import pytest

from application.commands import Principal
from application.keys import CreateKey
from domain.payments import Payment
from interfaces.http.app import create_app
from interfaces.webhooks.verify import SignatureMismatch, verify
from tests.conftest import make_settings
from tests.interfaces.conftest import Api, LiveServer, card, new_key, serving
from tests.waiting import wait_until
from tests.webhook_receiver import Receiver

PAYMENT_EVENTS = ["payment.succeeded", "payment.failed", "payment.exception"]
FAST_RETRIES = {
    "PAYLEDGER_WEBHOOK_RETRY_BASE_S": "0.2",
    "PAYLEDGER_WEBHOOK_RETRY_MAX_S": "1",
    "PAYLEDGER_WEBHOOK_POLL_S": "0.05",
    "PAYLEDGER_WEBHOOK_CONNECT_TIMEOUT_S": "2",
    "PAYLEDGER_WEBHOOK_READ_TIMEOUT_S": "2",
}

StartServer = Callable[..., AbstractContextManager[LiveServer]]


@pytest.fixture
def start_hooks_server(database_url: str, monkeypatch: pytest.MonkeyPatch) -> StartServer:
    """``with start_hooks_server(**env) as live``: a server whose deliverer retries fast."""

    @contextmanager
    def start(**env: str) -> Iterator[LiveServer]:
        for name, value in (FAST_RETRIES | env).items():
            monkeypatch.setenv(name, value)
        with serving(create_app(make_settings(database_url))) as live:
            yield live

    return start


@pytest.fixture
def hooks(start_hooks_server: StartServer) -> Iterator[LiveServer]:
    with start_hooks_server() as live:
        yield live


@pytest.fixture
def http(hooks: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hooks.base_url, timeout=30) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def register(http: httpx.Client, url: str, events: list[str] | None = None) -> dict[str, Any]:
    answer = http.post(
        "/v1/webhook-endpoints", json={"url": url, "events": events or PAYMENT_EVENTS}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def pay_card(api: Api, shop: str, number: str, amount: str = "10.00") -> dict[str, Any]:
    body = {"amount": amount, "currency": "CNY", "channel": "card", "payee_account_id": shop,
            "payment_method": card(number)}  # fmt: skip
    answer = api.pay(body)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def deliveries(http: httpx.Client, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    answer = http.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]  # type: ignore[no-any-return]


def delivered(http: httpx.Client, endpoint_id: str, n: int) -> list[dict[str, Any]]:
    """The log once it shows ``n`` deliveries delivered: a receiver has the request a moment
    before the deliverer records its answer."""

    def done() -> list[dict[str, Any]] | None:
        found = deliveries(http, endpoint_id, status="delivered")
        return found if len(found) == n else None

    return wait_until(done)  # type: ignore[no-any-return]


# --- endpoints ---------------------------------------------------------------------------------


def test_an_endpoint_is_registered_read_rotated_disabled_and_deleted(http, receiver):
    created = http.post(
        "/v1/webhook-endpoints",
        json={"url": receiver.url, "events": ["payment.succeeded"], "description": "orders"},
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    endpoint = created.json()
    secret = endpoint["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert endpoint["status"] == "enabled" and endpoint["signing_secrets"] == 1
    assert endpoint["events"] == ["payment.succeeded"] and endpoint["description"] == "orders"
    eid = endpoint["id"]

    one = http.get(f"/v1/webhook-endpoints/{eid}")
    assert one.status_code == 200
    assert "secret" not in one.json() and secret not in one.text  # shown once, never again
    listed = http.get("/v1/webhook-endpoints").json()["items"]
    assert [e["id"] for e in listed] == [eid] and secret not in str(listed)

    rotated = http.post(f"/v1/webhook-endpoints/{eid}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    new = rotated.json()
    assert new["secret"] != secret and new["secret"].startswith("whsec_")
    assert new["signing_secrets"] == 2 and new["previous_secret_expires_at"] is not None
    at_once = http.post(
        f"/v1/webhook-endpoints/{eid}/rotate-secret", json={"previous_secret_expires_in_s": 0}
    ).json()
    assert at_once["signing_secrets"] == 2  # the newest previous one is dropped at once...
    assert at_once["secret"] not in (secret, new["secret"])  # ...the first one still overlaps

    disabled = http.post(f"/v1/webhook-endpoints/{eid}/disable")
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    enabled = http.post(f"/v1/webhook-endpoints/{eid}/enable")
    assert enabled.json()["status"] == "enabled"

    deleted = http.delete(f"/v1/webhook-endpoints/{eid}")
    assert deleted.status_code == 204 and deleted.content == b""
    for method, path in (
        ("GET", ""), ("GET", "/deliveries"), ("POST", "/rotate-secret"), ("POST", "/disable"),
        ("DELETE", ""),
    ):  # fmt: skip
        gone = http.request(method, f"/v1/webhook-endpoints/{eid}{path}")
        assert gone.status_code == 404, (method, path, gone.text)
        assert gone.json()["code"] == "webhook_endpoint_not_found"
    assert http.get("/v1/webhook-endpoints").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["payment.failed"]}, "url"),
        ({"url": "https:///no-host", "events": ["payment.failed"]}, "url"),
        ({"url": "https://user:pw@example.com/", "events": ["payment.failed"]}, "url"),
        ({"url": "https://example.com/#frag", "events": ["payment.failed"]}, "url"),
        ({"url": "https://example.com/" + "a" * 2100, "events": ["payment.failed"]}, "url"),
        ({"url": "https://example.com/a b", "events": ["payment.failed"]}, "url"),
        ({"url": "https://example.com/", "events": []}, "events"),
        ({"url": "https://example.com/", "events": ["payment.refunded"]}, "events"),
        ({"url": "https://example.com/", "events": ["payment.failed"], "extra": 1}, "extra"),
        ({"events": ["payment.failed"]}, "url"),
    ],
)
def test_bad_registrations_answer_422_naming_the_field(http, body, field):
    answer = http.post("/v1/webhook-endpoints", json=body)
    assert answer.status_code == 422, answer.text
    fields = [e["field"] for e in answer.json()["errors"]]
    assert any(f == field or f.startswith(f"{field}.") for f in fields), fields
    assert http.get("/v1/webhook-endpoints").json()["items"] == []  # nothing recorded


def test_unknown_endpoint_ids_answer_404(http):
    missing = "00000000-0000-4000-8000-000000000000"
    assert http.get(f"/v1/webhook-endpoints/{missing}").status_code == 404
    assert http.get(f"/v1/webhook-endpoints/{missing}/deliveries").status_code == 404
    assert http.get("/v1/webhook-endpoints/not-a-uuid").status_code == 422


# --- deliveries --------------------------------------------------------------------------------


def test_every_final_outcome_is_delivered_once_signed_with_the_payment_as_the_api_shows_it(
    http, receiver
):
    endpoint = register(http, receiver.url)
    api = Api(http)
    shop = api.merchant()
    payer = api.open_account()["id"]  # not funded: an internal payment is refused
    payments = {
        "succeeded": pay_card(api, shop, "4242424242424242"),
        "declined": pay_card(api, shop, "4000000000000002"),
        "exception": pay_card(api, shop, "4000000000000119"),
    }
    refused = api.pay({"amount": "1.00", "currency": "CNY", "channel": "internal",
                       "payer_account_id": payer, "payee_account_id": shop})  # fmt: skip
    assert refused.status_code == 201 and refused.json()["failure_code"] == "insufficient_funds"
    payments["refused"] = refused.json()
    expected_types = {"succeeded": "payment.succeeded", "declined": "payment.failed",
                      "exception": "payment.exception", "refused": "payment.failed"}  # fmt: skip

    receiver.wait_for(lambda r: len(r.delivered()) >= len(payments))
    time.sleep(0.5)  # anything extra would arrive now
    got = receiver.all()
    assert len(got) == len(payments), [r.json["type"] for r in got]  # once each, nothing else
    by_entity = {r.json["entity_id"]: r for r in got}
    assert len({r.event_id for r in got}) == len(got)
    for name, payment in payments.items():
        request = by_entity[payment["id"]]
        event = verify(request.body, request.headers["payledger-signature"], [endpoint["secret"]])
        assert event["type"] == expected_types[name]
        assert request.headers["payledger-event-type"] == event["type"]
        assert request.headers["payledger-event-id"] == event["id"]
        assert request.headers["content-type"] == "application/json"
        assert request.path == "/hooks"
        # The payment exactly as GET /v1/payments/{id} shows it; amounts are decimal strings.
        assert event["data"] == http.get(f"/v1/payments/{payment['id']}").json()
        assert event["data"]["amount"] in ("10.00", "1.00")
        history = http.get(f"/v1/payments/{payment['id']}/events").json()["events"]
        assert event["sequence"] == history[-1]["version"]
        assert event["entity"] == "payment" and event["created_at"].endswith("Z")
    assert "4242424242424242" not in str([r.body for r in got])  # never a card number

    log = delivered(http, endpoint["id"], len(payments))
    assert {d["id"] for d in log} == {r.event_id for r in got}
    for d in log:
        assert d["status"] == "delivered" and d["attempt_count"] == 1
        assert [a["status_code"] for a in d["attempts"]] == [204]
        assert d["completed_at"] is not None and d["next_attempt_at"] is None
    assert [d["id"] for d in deliveries(http, endpoint["id"], status="pending")] == []


def test_a_resolved_exception_is_notified_again_with_a_higher_sequence(hooks, http, receiver):
    endpoint = register(http, receiver.url)
    api = Api(http)
    shop = api.merchant()
    payment = pay_card(api, shop, "4000000000000119")
    assert payment["status"] == "exception"
    receiver.wait_for(lambda r: len(r.delivered()) == 1)

    def resolve(uow):  # type: ignore[no-untyped-def]
        found = uow.get(UUID(payment["id"]), Payment)
        found.mark_failed("declined_on_inquiry", "the network declined it", at=uow.now,
                          actor="operator:test", resolution="inquiry")  # fmt: skip

    hooks.service.committer.run(resolve)  # type: ignore[union-attr]
    receiver.wait_for(lambda r: len(r.delivered()) == 2)
    first, second = (r.json for r in receiver.delivered())
    for r in receiver.delivered():
        verify(r.body, r.headers["payledger-signature"], [endpoint["secret"]])
    assert first["entity_id"] == second["entity_id"] == payment["id"]
    assert (first["type"], second["type"]) == ("payment.exception", "payment.failed")
    assert second["sequence"] > first["sequence"]
    assert first["id"] != second["id"]
    assert second["data"]["failure_code"] == "declined_on_inquiry"


def test_a_failing_receiver_gets_retries_with_backoff_then_success(http, receiver):
    endpoint = register(http, receiver.url)
    api = Api(http)
    receiver.fail_next(3, status=500)
    payment = pay_card(api, api.merchant(), "4242424242424242")
    receiver.wait_for(lambda r: len(r.delivered()) == 1)

    attempts = receiver.all()
    assert [r.answered for r in attempts] == [500, 500, 500, 204]
    assert len({r.event_id for r in attempts}) == 1  # the same event every time
    assert len({r.body for r in attempts}) == 1  # the same bytes every time
    assert [r.headers["payledger-delivery-attempt"] for r in attempts] == ["1", "2", "3", "4"]
    for r in attempts:  # each attempt signed afresh
        assert (
            verify(r.body, r.headers["payledger-signature"], [endpoint["secret"]])["data"]["id"]
            == payment["id"]
        )
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    # base 0.2 s doubling, each jittered to between half and all of it (plus polling)
    for k, gap in enumerate(gaps):
        assert gap >= 0.5 * 0.2 * 2**k - 0.02, gaps
    assert gaps[2] > gaps[0], gaps

    (log,) = delivered(http, endpoint["id"], 1)
    assert log["status"] == "delivered" and log["attempt_count"] == 4
    assert [a["status_code"] for a in log["attempts"]] == [500, 500, 500, 204]
    assert [a["error"] for a in log["attempts"]] == ["HTTP 500"] * 3 + [None]
    assert all(a["next_retry_at"] for a in log["attempts"][:3])
    assert log["attempts"][-1]["next_retry_at"] is None
    assert log["last_status_code"] == 204


def test_an_unreachable_receiver_is_retried_until_the_maximum_age_then_failed(
    start_hooks_server,
):
    with (
        start_hooks_server(PAYLEDGER_WEBHOOK_MAX_AGE_S="1.5") as live,
        httpx.Client(base_url=live.base_url, timeout=30) as http,
        Receiver() as receiver,
    ):
        endpoint = register(http, receiver.url)
        receiver.fail_next(1000, status=503)
        api = Api(http)
        pay_card(api, api.merchant(), "4242424242424242")

        def failed() -> list[dict[str, Any]]:
            return deliveries(http, endpoint["id"], status="failed")

        (log,) = wait_until(failed)
        assert log["attempt_count"] >= 3 and log["next_attempt_at"] is None
        assert "gave up" in log["last_error"]
        assert {a["status_code"] for a in log["attempts"]} == {503}
        count = len(receiver.all())
        time.sleep(0.6)
        assert len(receiver.all()) == count  # no attempt after giving up


def test_during_a_rotation_each_delivery_is_signed_with_both_secrets(http, receiver):
    endpoint = register(http, receiver.url)
    old = endpoint["secret"]
    new = http.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret").json()["secret"]
    api = Api(http)
    shop = api.merchant()
    pay_card(api, shop, "4242424242424242")
    receiver.wait_for(lambda r: len(r.delivered()) == 1)
    request = receiver.delivered()[0]
    header = request.headers["payledger-signature"]
    assert header.count("v1=") == 2
    assert verify(request.body, header, [old])  # a receiver not switched yet
    assert verify(request.body, header, [new])  # one switched already

    newest = http.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
        json={"previous_secret_expires_in_s": 0},
    ).json()["secret"]
    pay_card(api, shop, "4242424242424242")
    receiver.wait_for(lambda r: len(r.delivered()) == 2)
    request = receiver.delivered()[1]
    header = request.headers["payledger-signature"]
    assert verify(request.body, header, [newest])
    assert verify(request.body, header, [old])  # the first overlap (24 h) still runs
    with pytest.raises(SignatureMismatch):
        verify(request.body, header, [new])  # ended at once by the second rotation


def test_a_disabled_endpoint_receives_nothing_until_enabled(http, receiver):
    endpoint = register(http, receiver.url)
    other = register(http, receiver.url.replace("/hooks", "/other"), ["payment.failed"])
    api = Api(http)
    shop = api.merchant()
    http.post(f"/v1/webhook-endpoints/{endpoint['id']}/disable")
    pay_card(api, shop, "4242424242424242")  # succeeded: neither gets it
    time.sleep(0.8)
    assert receiver.all() == []
    http.post(f"/v1/webhook-endpoints/{endpoint['id']}/enable")
    pay_card(api, shop, "4000000000000002")  # failed: both subscribe
    receiver.wait_for(lambda r: len(r.delivered()) == 2)
    assert sorted(r.path for r in receiver.delivered()) == ["/hooks", "/other"]
    ids = {r.event_id for r in receiver.delivered()}
    assert len(ids) == 2  # one event id per endpoint
    assert deliveries(http, other["id"])[0]["type"] == "payment.failed"


# --- tenants and roles -------------------------------------------------------------------------


def _key(live: LiveServer, tenant: str, role: str) -> dict[str, str]:
    issued = asyncio.run(
        live.service.keys.create(CreateKey(tenant, role), Principal(tenant, "cli:test"))
    )
    return {"Authorization": f"Bearer {issued.token}"}


def test_endpoints_and_deliveries_are_per_tenant(hooks, http):
    acme, globex = _key(hooks, "acme", "admin"), _key(hooks, "globex", "admin")
    acme_submitter = _key(hooks, "acme", "submitter")
    with Receiver() as acme_rx, Receiver() as globex_rx:
        mine = http.post("/v1/webhook-endpoints", headers=acme,
                         json={"url": acme_rx.url, "events": PAYMENT_EVENTS})  # fmt: skip
        theirs = http.post("/v1/webhook-endpoints", headers=globex,
                           json={"url": globex_rx.url, "events": PAYMENT_EVENTS})  # fmt: skip
        assert mine.status_code == theirs.status_code == 201, (mine.text, theirs.text)
        mine_id, theirs_id = mine.json()["id"], theirs.json()["id"]

        # Another tenant's endpoint answers exactly as one that does not exist.
        for method, path in (
            ("GET", ""), ("GET", "/deliveries"), ("POST", "/rotate-secret"),
            ("POST", "/disable"), ("POST", "/enable"), ("DELETE", ""),
        ):  # fmt: skip
            answer = http.request(method, f"/v1/webhook-endpoints/{theirs_id}{path}", headers=acme)
            assert answer.status_code == 404, (method, path, answer.text)
            assert theirs_id in answer.json()["detail"] and globex_rx.url not in answer.text
        assert [e["id"] for e in http.get("/v1/webhook-endpoints", headers=acme).json()["items"]] \
            == [mine_id]  # fmt: skip
        assert http.get(f"/v1/webhook-endpoints/{theirs_id}", headers=globex).status_code == 200

        # Only admins manage endpoints; without a key: 401.
        endpoint_path = f"/v1/webhook-endpoints/{mine_id}"
        for method, path in (
            ("GET", "/v1/webhook-endpoints"), ("GET", endpoint_path),
            ("POST", f"{endpoint_path}/rotate-secret"),
        ):  # fmt: skip
            refused = http.request(method, path, headers=acme_submitter)
            assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert (
            http.post(
                "/v1/webhook-endpoints",
                headers=acme_submitter,
                json={"url": acme_rx.url, "events": PAYMENT_EVENTS},
            ).status_code
            == 403
        )
        assert http.get("/v1/webhook-endpoints").status_code == 401

        # Each tenant's payments go to its own endpoints only.
        paid = {}
        for name, headers in (("acme", acme), ("globex", globex)):
            shop = http.post(
                "/v1/accounts",
                headers=headers,
                json={"owner": "shop", "currency": "CNY", "kind": "merchant"},
            )
            assert shop.status_code == 201, shop.text
            answer = http.post("/v1/payments", headers=headers | {"Idempotency-Key": new_key()},
                               json={"amount": "3.00", "currency": "CNY", "channel": "card",
                                     "payee_account_id": shop.json()["id"],
                                     "payment_method": card()})  # fmt: skip
            assert answer.status_code == 201, answer.text
            paid[name] = answer.json()["id"]
        acme_rx.wait_for(lambda r: len(r.delivered()) == 1)
        globex_rx.wait_for(lambda r: len(r.delivered()) == 1)
        time.sleep(0.3)
        assert [r.json["entity_id"] for r in acme_rx.all()] == [paid["acme"]]
        assert [r.json["entity_id"] for r in globex_rx.all()] == [paid["globex"]]
        assert len(deliveries_as(http, mine_id, acme)) == 1
        assert len(deliveries_as(http, theirs_id, globex)) == 1


def deliveries_as(http: httpx.Client, endpoint_id: str, headers: dict[str, str]) -> list[Any]:
    answer = http.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]  # type: ignore[no-any-return]


def test_the_delivery_log_pages_newest_first(http, receiver):
    endpoint = register(http, receiver.url, ["payment.succeeded"])
    api = Api(http)
    shop = api.merchant()
    made = [pay_card(api, shop, "4242424242424242")["id"] for _ in range(5)]
    receiver.wait_for(lambda r: len(r.delivered()) == 5)
    wait_until(lambda: len(deliveries(http, endpoint["id"], status="delivered")) == 5)
    first = http.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", params={"limit": 2})
    page = first.json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    seen = [d["entity_id"] for d in page["items"]]
    while page["next_cursor"]:
        page = http.get(
            f"/v1/webhook-endpoints/{endpoint['id']}/deliveries",
            params={"limit": 2, "cursor": page["next_cursor"]},
        ).json()
        seen += [d["entity_id"] for d in page["items"]]
    assert seen == made[::-1]
    bad = http.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", params={"cursor": "x"})
    assert bad.status_code == 422
