"""Batch webhooks over real HTTP, on SQLite and PostgreSQL: a payroll batch submitted and approved
through the API is paid by the engine; a real receiver (tests/webhook_receiver.py) gets one
signed notification per item outcome and one ``batch.completed`` with the batch's counts,
each verified with interfaces/webhooks/verify.py; a rebuild's verification still holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from domain.batches import Batch
from interfaces.http.app import create_app
from interfaces.webhooks.verify import verify
from projections.replay import verify as verify_views
from tests.conftest import make_settings
from tests.interfaces.batch_helpers import Payroll, item, payroll
from tests.interfaces.conftest import LiveServer, serving
from tests.webhook_receiver import Receiver

EVENTS = ["payment.succeeded", "payment.failed", "batch.completed"]
FAST_DELIVERY = {
    "PAYLEDGER_WEBHOOK_RETRY_BASE_S": "0.2",
    "PAYLEDGER_WEBHOOK_RETRY_MAX_S": "1",
    "PAYLEDGER_WEBHOOK_POLL_S": "0.05",
}


@pytest.fixture
def live(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    for name, value in FAST_DELIVERY.items():
        monkeypatch.setenv(name, value)
    with serving(create_app(make_settings(database_url))) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def register(pr: Payroll, url: str, events: list[str]) -> dict[str, Any]:
    with pr.as_(pr.admin) as http:
        answer = http.post("/v1/webhook-endpoints", json={"url": url, "events": events})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_batch_notifies_each_item_outcome_and_its_completion_signed(
    live: LiveServer, receiver: Receiver
) -> None:
    pr = payroll(live)
    endpoint = register(pr, receiver.url, EVENTS)
    items = [item(1, "1500.00"), item(2, "2500.50"), item(3, "99.99", suffix="0004"),
             item(4, "10.00", iban="DE00370400440532013000"), item(5, "20.00")]  # fmt: skip
    submitted = pr.submit({"funding_account_id": pr.funding, "currency": "EUR", "items": items})
    assert submitted.status_code == 201, submitted.text
    batch_id = submitted.json()["id"]
    approved = pr.approve(batch_id)
    assert approved.status_code == 200, approved.text
    done = pr.wait(batch_id)
    assert done["status"] == "completed_with_failures"

    # Three items paid, one refused by the bank (AC04), one invalid (never sent): four item
    # outcomes, then the batch's completion.
    receiver.wait_for(lambda r: len(r.delivered()) >= 5)
    time.sleep(0.5)  # anything extra would arrive now
    got = receiver.all()
    events = [verify(r.body, r.headers["payledger-signature"], [endpoint["secret"]]) for r in got]
    assert len({e["id"] for e in events}) == len(events) == 5, [e["type"] for e in events]
    for request, event in zip(got, events, strict=True):
        assert request.headers["payledger-event-id"] == event["id"]
        assert request.headers["payledger-event-type"] == event["type"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    assert {t: len(v) for t, v in by_type.items()} == {
        "payment.succeeded": 3, "payment.failed": 1, "batch.completed": 1,
    }  # fmt: skip

    # Each item's notification: its payment as the API shows it, plus its batch and item.
    by_index = {i["index"]: i for i in pr.items(batch_id)}
    notified = {
        e["data"]["batch_item"]["index"]: e for e in events if e["type"].startswith("payment.")
    }
    assert sorted(notified) == [0, 1, 2, 4]  # not the invalid item (index 3)
    with pr.as_(pr.submitter) as http:
        for index, event in notified.items():
            row = by_index[index]
            data = dict(event["data"])
            assert data["batch_id"] == batch_id
            assert data.pop("batch_item") == {
                "index": index, "end_to_end_id": items[index]["end_to_end_id"], "attempt": 1,
            }  # fmt: skip
            assert event["entity"] == "payment" and event["entity_id"] == row["payment_id"]
            assert data == http.get(f"/v1/payments/{row['payment_id']}").json()
            assert data["status"] == row["status"] and data["amount"] == items[index]["amount"]
            assert event["sequence"] == 1  # created in its outcome: one event
    failed = notified[2]
    assert failed["type"] == "payment.failed" and failed["data"]["failure_code"] == "AC04"

    # The batch's completion: what GET /v1/batches/{id} shows of it, with the batch's version.
    (completed,) = by_type["batch.completed"]
    assert (completed["entity"], completed["entity_id"]) == ("batch", batch_id)
    data = completed["data"]
    assert data["status"] == "completed_with_failures" and data["failure_code"] == "PART"
    assert data["counts"] == {"succeeded": 3, "failed": 1, "exception": 0, "invalid": 1,
                              "pending": 0}  # fmt: skip
    assert data["amounts"] == {"succeeded": "4020.50", "failed": "99.99", "exception": "0.00"}
    assert data["currency"] == "EUR" and data["control_sum"] == "4120.49"
    for key, value in data.items():
        assert done[key] == value, key
    batch: Any = live.service.app.repository.get(UUID(batch_id))
    assert isinstance(batch, Batch)
    assert completed["sequence"] == batch.version
    assert completed["created_at"] == data["finished_at"]

    # The delivery log shows them delivered; a rebuild of the views matches the live ones.
    with pr.as_(pr.admin) as http:
        deadline = time.monotonic() + 20
        while True:
            log = http.get(
                f"/v1/webhook-endpoints/{endpoint['id']}/deliveries",
                params={"status": "delivered"},
            ).json()["items"]
            if len(log) == 5 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert {d["id"] for d in log} == {e["id"] for e in events}
    assert verify_views(live.service.app, live.service.settings.store).ok
