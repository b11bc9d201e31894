"""``GET /metrics`` over HTTP, on SQLite and PostgreSQL: the Prometheus exposition parses, and its
counts, latency histograms and projection positions equal what the payments made here answered."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from projections.payments import LATENCY_BOUNDS_MS
from tests.interfaces.conftest import Api, LiveServer, card

SUCCEEDS, DECLINED, EXCEPTION = "4242424242424242", "4000000000000002", "4000000000000119"


def card_payment(number: str, payee: str) -> dict[str, Any]:
    return {"amount": "3.00", "currency": "CNY", "channel": "card",
            "payment_method": card(number), "payee_account_id": payee}  # fmt: skip


def internal(payer: str, payee: str, amount: str) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY", "channel": "internal",
            "payer_account_id": payer, "payee_account_id": payee}  # fmt: skip


def scrape(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def samples(family: Any, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def test_exposition_counts_the_payments_made(
    api: Api, client: httpx.Client, live_server: LiveServer
) -> None:
    empty = scrape(client)
    assert samples(empty["payledger_payments"], "payledger_payments_total") == {}

    alice, shop = api.funded_account("100.00"), api.merchant()
    bodies = [internal(alice, shop, "1.00"), internal(alice, shop, "2.00"),
              internal(alice, shop, "500.00")]  # fmt: skip  # the last: insufficient funds
    bodies += [card_payment(n, shop) for n in [SUCCEEDS] * 3 + [DECLINED] * 2 + [EXCEPTION]]
    made = []
    for body in bodies:
        response = api.pay(body)
        assert response.status_code == 201, response.text
        made.append(response.json())
    position = live_server.notification_position()
    # Both views have processed every event: payments (the counts) and accounts (positions).
    assert client.get("/v1/metrics", params={"wait_for_position": position}).status_code == 200
    entries = client.get(f"/v1/accounts/{alice}/entries", params={"wait_for_position": position})
    assert entries.status_code == 200

    families = scrape(client)

    outcomes = Counter((p["channel"], p["status"]) for p in made)
    assert outcomes == {("internal", "succeeded"): 2, ("internal", "failed"): 1,
                        ("card", "succeeded"): 3, ("card", "failed"): 2,
                        ("card", "exception"): 1}  # fmt: skip
    payments = families["payledger_payments"]
    assert payments.type == "counter"
    expected = {
        (("channel", channel), ("outcome", outcome)): float(outcomes[(channel, outcome)])
        for channel in ("card", "internal")
        for outcome in ("succeeded", "failed", "exception")
    }
    assert samples(payments, "payledger_payments_total") == expected
    processing = samples(families["payledger_payments_processing"], "payledger_payments_processing")
    assert processing == {(("channel", "card"),): 0.0, (("channel", "internal"),): 0.0}

    latency = families["payledger_payment_latency_ms"]
    assert latency.type == "histogram"
    by_channel: dict[str, list[int]] = defaultdict(list)
    for p in made:
        by_channel[p["channel"]].append(p["latency_ms"])
    buckets = samples(latency, "payledger_payment_latency_ms_bucket")
    for channel, latencies in by_channel.items():
        label = (("channel", channel),)
        count = samples(latency, "payledger_payment_latency_ms_count")[label]
        assert count == len(latencies)
        assert samples(latency, "payledger_payment_latency_ms_sum")[label] == sum(latencies)
        for bound in LATENCY_BOUNDS_MS:
            key = (("channel", channel), ("le", f"{float(bound)}"))
            assert buckets[key] == sum(1 for ms in latencies if ms <= bound), (channel, bound)
        assert buckets[(("channel", channel), ("le", "+Inf"))] == len(latencies)

    head = families["payledger_event_log_head"].samples[0].value
    assert head == position
    positions = samples(families["payledger_projection_position"], "payledger_projection_position")
    lag = samples(families["payledger_projection_lag_events"], "payledger_projection_lag_events")
    for name in ("payments", "accounts"):
        assert positions[(("projection", name),)] == position
        assert lag[(("projection", name),)] == 0
