"""Webhooks with real processes: SIGKILL ``payledger serve`` while it projects and delivers,
restart it, and every final payment outcome is delivered (at least once, always with the same
event id and body) and nothing else is; and ``payledger webhooks deliver`` as a process of its
own. On SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from interfaces.webhooks.verify import verify
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUESTS = 90
KILL_AFTER = 30
CARDS = ("4242424242424242", "4000000000000002", "4000000000000119")  # ok, declined, timeout
TYPE_OF_STATUS = {
    "succeeded": "payment.succeeded",
    "failed": "payment.failed",
    "exception": "payment.exception",
}
SERVER_ENV = {
    "PAYLEDGER_CHANNEL_TIMEOUT_MS": "500",
    "PAYLEDGER_SANDBOX_LATENCY_MS": '{"card": 50}',
    "PAYLEDGER_WEBHOOK_RETRY_BASE_S": "0.2",
    "PAYLEDGER_WEBHOOK_RETRY_MAX_S": "1",
    "PAYLEDGER_WEBHOOK_POLL_S": "0.05",
    "PAYLEDGER_WEBHOOK_CONNECT_TIMEOUT_S": "1",
    "PAYLEDGER_WEBHOOK_READ_TIMEOUT_S": "1",  # a claim's lease: 2 * (1 + 1) + 5 = 9 s
    # The timed-out payments stay exceptions (the resolver would settle them: more webhooks).
    "PAYLEDGER_EXCEPTION_RESOLVER_INTERVAL_S": "0",
}
EVENTS = list(TYPE_OF_STATUS.values())


def _register(http: httpx.Client, url: str) -> dict[str, Any]:
    answer = http.post("/v1/webhook-endpoints", json={"url": url, "events": EVENTS})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _merchant(http: httpx.Client) -> str:
    answer = http.post(
        "/v1/accounts", json={"owner": "shop", "currency": "CNY", "kind": "merchant"}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _body(shop: str, number: str) -> dict[str, Any]:
    method = {"type": "card", "number": number, "exp_month": 12, "exp_year": 2099, "cvc": "123"}
    return {"amount": "1.00", "currency": "CNY", "channel": "card", "payee_account_id": shop,
            "payment_method": method}  # fmt: skip


def _send(base_url: str, key: str, body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        answer = httpx.post(
            f"{base_url}/v1/payments", json=body, headers={"Idempotency-Key": key}, timeout=60
        )
    except httpx.TransportError:
        return None  # the server died under it
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def test_a_killed_server_loses_no_notification_and_invents_none(database_url, start_server):
    server = start_server(database_url, "--log-level", "warning", env=SERVER_ENV)
    with Receiver(delay_s=0.02) as receiver:
        with server.client() as http:
            endpoint = _register(http, receiver.url)
            shop = _merchant(http)
        requests = [(f"hook-crash-{i}", _body(shop, CARDS[i % 3])) for i in range(REQUESTS)]
        answered = 0
        lock = threading.Lock()

        def send_and_maybe_kill(item: tuple[str, dict[str, Any]]) -> dict[str, Any] | None:
            nonlocal answered
            result = _send(server.base_url, *item)
            with lock:
                answered += result is not None
                if answered == KILL_AFTER:
                    server.process.kill()  # SIGKILL: mid-projection, mid-delivery
            return result

        with ThreadPoolExecutor(max_workers=8) as pool:
            before = list(pool.map(send_and_maybe_kill, requests))
        server.process.wait(timeout=10)
        delivered_at_kill = len(receiver.all())
        print("answered before the kill:", sum(r is not None for r in before),
              "webhook requests:", delivered_at_kill)  # fmt: skip
        assert KILL_AFTER <= sum(r is not None for r in before) < REQUESTS

        restarted = start_server(database_url, "--log-level", "warning", env=SERVER_ENV)
        with ThreadPoolExecutor(max_workers=8) as pool:
            after = list(pool.map(lambda item: _send(restarted.base_url, *item), requests))
        assert all(r is not None for r in after)
        assert all(r["status"] in TYPE_OF_STATUS for r in after), Counter(
            r["status"] for r in after
        )
        expected = {(r["id"], TYPE_OF_STATUS[r["status"]]) for r in after}
        assert len(expected) == REQUESTS

        def delivered_pairs(r: Receiver) -> set[tuple[str, str]]:
            return {(x.json["entity_id"], x.json["type"]) for x in r.delivered()}

        receiver.wait_for(lambda r: delivered_pairs(r) >= expected, timeout_s=60)
        # Requests in flight at the kill may have been answered but not recorded: their rows
        # are claimed again once their lease (9 s here) has passed, and sent again.
        log = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
        with restarted.client() as http:
            deadline = time.monotonic() + 60
            while http.get(log, params={"status": "pending"}).json()["items"]:
                assert time.monotonic() < deadline, "deliveries still pending after 60 s"
                time.sleep(0.2)
            page = http.get(log, params={"limit": 100, "status": "delivered"}).json()
            assert len(page["items"]) == REQUESTS and page["next_cursor"] is None
            for status in ("failed", "cancelled"):
                assert http.get(log, params={"status": status}).json()["items"] == [], status
        time.sleep(0.5)

        got = receiver.all()
        bodies: dict[str, set[bytes]] = defaultdict(set)
        for request in got:
            event = verify(request.body, request.headers["payledger-signature"],
                           [endpoint["secret"]])  # fmt: skip
            assert event["id"] == request.event_id
            bodies[request.event_id].add(request.body)
        assert {(x.json["entity_id"], x.json["type"]) for x in got} == expected  # none invented
        assert len(bodies) == REQUESTS  # one event id per outcome...
        assert all(len(b) == 1 for b in bodies.values())  # ...always with the same body
        assert {x.event_id for x in got} == {d["id"] for d in page["items"]}
        print("delivered more than once (at-least-once):", len(receiver.delivered()) - REQUESTS)


def test_the_cli_delivers_beside_servers_that_do_not(database_url, start_server, cli_for):
    server = start_server(database_url, env=SERVER_ENV | {"PAYLEDGER_WEBHOOK_DELIVERY": "off"})
    cli = cli_for(database_url)
    cli.extra_env.update(SERVER_ENV)
    with Receiver() as receiver, server.client() as http:
        endpoint = _register(http, receiver.url)
        shop = _merchant(http)
        paid = _send(server.base_url, "cli-hook-1", _body(shop, CARDS[0]))
        assert paid is not None and paid["status"] == "succeeded"
        assert http.get(f"/v1/payments/{paid['id']}").status_code == 200  # views caught up
        time.sleep(0.5)
        assert receiver.all() == []  # nobody delivers in the server

        listed = cli("webhooks", "list", "--json")
        assert listed.code == 0, listed.stderr
        assert [e["id"] for e in listed.json()] == [endpoint["id"]]
        assert endpoint["secret"] not in listed.stdout

        done = cli("webhooks", "deliver")
        assert done.code == 0, done.stderr
        (request,) = receiver.delivered()
        event = verify(request.body, request.headers["payledger-signature"], [endpoint["secret"]])
        assert (event["entity_id"], event["type"]) == (paid["id"], "payment.succeeded")

        log = cli("webhooks", "deliveries", endpoint["id"], "--json")
        assert log.code == 0, log.stderr
        (row,) = log.json()
        assert (row["id"], row["status"], row["attempt_count"]) == (event["id"], "delivered", 1)
        assert cli("webhooks", "deliver").code == 0
        assert len(receiver.all()) == 1  # nothing twice
        missing = cli("webhooks", "deliveries", "00000000-0000-4000-8000-000000000000")
        assert missing.code == 3, missing.stdout + missing.stderr
