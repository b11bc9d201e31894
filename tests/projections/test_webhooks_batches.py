"""Batches in the webhooks outbox projection, on both stores, without HTTP in front.

* each batch item's payment (``Payment.BatchItemProcessed``, created in its outcome) notifies
  that outcome like any payment, with its batch and item, at sequence 1; only an item in
  ``exception`` stays tracked, and its resolution notifies again;
* every ``Batch.Finished`` notifies ``batch.completed`` (again after a retry, with a higher
  sequence), with the counts and amounts of its ``Batch.GroupRecorded`` progress;
* a rebuild and its verification find the same rows and event ids.

The batch and its item payments are recorded here straight through the aggregates (the engine's
own path is covered end to end in tests/interfaces/test_webhooks_batches.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson

from application.commands import ANONYMOUS, Principal
from application.service import Payledger
from application.webhooks import RegisterEndpoint
from domain.batches import Batch, BatchStatus
from domain.payments import Payment, batch_item_payment_id
from domain.webhooks import EMITTED_TYPES
from projections.read_side import ReadSide
from projections.replay import rebuild, verify
from projections.webhooks import WebhooksProjection, event_id_for

ALL = ["payment.succeeded", "payment.failed", "payment.exception", "batch.completed"]
TENANT = ANONYMOUS.tenant
SENT_TO_ANSWER = timedelta(milliseconds=250)


def register(service: Payledger, url: str, events: list[str], who: Principal = ANONYMOUS) -> Any:
    return asyncio.run(service.webhooks.register(RegisterEndpoint(url, events), who))


def outbox(read: ReadSide) -> list[dict[str, Any]]:
    rows = read.runner.db.query(
        "SELECT event_id, endpoint_id, type, entity_id, sequence, body FROM view_webhook_outbox "
        "ORDER BY position, event_id"
    )
    keys = ("event_id", "endpoint_id", "type", "entity_id", "sequence")
    return [{**dict(zip(keys, r[:5], strict=True)), "body": orjson.loads(r[5])} for r in rows]


def table(read: ReadSide, name: str, columns: str = "*") -> list[tuple[Any, ...]]:
    return read.runner.db.query(f"SELECT {columns} FROM view_{name}")


@dataclass
class FakeBatch:
    """A batch recorded through its aggregate, as the engine records one (domain/batches.py)."""

    service: Payledger
    amounts: list[int]  # valid items' amounts (minor units)
    invalid: int = 0
    tenant: str = TENANT
    id: UUID = field(default_factory=uuid4)
    # (item index, attempt) -> the item's payment id
    payments: dict[tuple[int, int], UUID] = field(default_factory=dict)

    def submit(self) -> FakeBatch:
        def decide(uow: Any) -> None:
            uow.add(Batch.submit(
                batch_id=self.id, at=uow.now, actor="key:maker", tenant=self.tenant,
                client="key:maker", idempotency_key=str(self.id), fingerprint="f",
                source={"format": "pain.001", "message_id": f"MSG-{self.id.hex[:8]}"},
                funding_account_id=str(uuid4()), currency="EUR", execution_date=None,
                rules={}, item_count=len(self.amounts) + self.invalid,
                valid_item_count=len(self.amounts), invalid_item_count=self.invalid,
                control_sum_minor=sum(self.amounts), chunk_count=1,
            ))  # fmt: skip

        committer: Any = self.service.committer
        committer.run(decide)
        return self

    def change(self, do: Any) -> None:
        def decide(uow: Any) -> None:
            do(uow.get(self.id, Batch), uow)

        committer: Any = self.service.committer
        committer.run(decide)

    def approve(self) -> None:
        self.change(lambda b, uow: b.approve(run_on=None, at=uow.now, actor="key:checker"))

    def process(self, outcomes: dict[int, str], *, attempt: int = 1) -> None:
        """One group: the items ``outcomes`` names (index -> outcome), saved with their
        payments (a retry's items count under their new outcome, no longer as failed)."""

        def do(batch: Batch, uow: Any) -> None:
            if batch.status != "processing":
                batch.start_processing(0, at=uow.now, actor="engine")
            counts = {"succeeded": 0, "failed": 0, "exception": 0}
            amounts = dict(counts)
            for index, outcome in outcomes.items():
                amount = self.amounts[index]
                counts[outcome] += 1
                amounts[outcome] += amount
                if attempt > 1:
                    counts["failed"] -= 1
                    amounts["failed"] -= amount
                uow.add_created([self._payment(index, attempt, outcome, uow.now)])
            retried = len(outcomes) if attempt > 1 else 0
            batch.record_group(
                next_seq=len(self.amounts), retry_done=batch.retry_done + retried,
                counts=counts, amounts=amounts, reserved_minor=0, released_minor=0,
                debited_minor=0, outcomes={}, at=uow.now, actor="engine",
            )  # fmt: skip

        self.change(do)

    def _payment(self, index: int, attempt: int, outcome: str, at: Any) -> Payment:
        pid = batch_item_payment_id(self.id, index, attempt)
        self.payments[index, attempt] = pid
        succeeded = outcome == "succeeded"
        funding = str(uuid4())
        return Payment.record_batch_item(
            payment_id=pid, outcome=outcome, sent_at=at, completed_at=at + SENT_TO_ANSWER,
            actor="engine", fields={
                "tenant": self.tenant, "kind": "payment", "client": "key:maker",
                "idempotency_key": f"batch:{self.id}:{index}:{attempt}",
                "request_fingerprint": "f", "amount_minor": self.amounts[index],
                "currency": "EUR", "channel": "bank_transfer",
                "payer": {"type": "account", "account_id": funding},
                "payee": {"type": "bank_account", "iban": "DE89370400440532013000"},
                "description": None, "metadata": {"end_to_end_id": f"E2E-{index}"},
                "batch_id": str(self.id),
                "batch_item": {"index": index, "seq": index, "end_to_end_id": f"E2E-{index}",
                               "attempt": attempt, "retry_of": None},
                "code": None if outcome == "succeeded" else "AC04",
                "message": None if outcome == "succeeded" else "closed account",
                "channel_reference": f"ref-{index}-{attempt}" if outcome != "exception" else None,
                "entry_id": str(uuid4()) if succeeded else None,
                "legs": [[funding, -self.amounts[index]], [str(uuid4()), self.amounts[index]]]
                if succeeded else None,
                "hold_account_id": funding if outcome == "exception" else None,
            },
        )  # fmt: skip

    def finish(self, status: BatchStatus, code: str | None = None) -> int:
        self.change(lambda b, uow: b.finish(status, code=code, message=code and f"{code}!",
                                            at=uow.now, actor="engine"))  # fmt: skip
        return self.version()

    def retry(self, indexes: list[int]) -> None:
        self.change(lambda b, uow: b.request_retry([[i, i] for i in indexes], 0, at=uow.now,
                                                   actor="key:checker"))  # fmt: skip

    def version(self) -> int:
        batch: Any = self.service.app.repository.get(self.id)
        assert isinstance(batch, Batch)
        return batch.version


def test_batch_items_notify_their_outcomes_and_the_batch_its_completion(service, read):
    endpoint = register(service, "http://127.0.0.1:9/hooks", ALL)
    eid = str(endpoint.info.id)
    batch = FakeBatch(service, [150, 2500, 99, 1000], invalid=1).submit()
    batch.approve()
    batch.process({0: "succeeded", 1: "failed"})
    batch.process({2: "exception", 3: "succeeded"})
    version = batch.finish(BatchStatus.COMPLETED_WITH_FAILURES, "PART")
    read.catch_up()

    rows = outbox(read)
    assert [r["type"] for r in rows] == [
        "payment.succeeded", "payment.failed", "payment.exception", "payment.succeeded",
        "batch.completed",
    ]  # fmt: skip
    for index, row in enumerate(rows[:4]):
        pid = str(batch.payments[index, 1])
        assert (row["entity_id"], row["sequence"]) == (pid, 1)  # created in its outcome
        assert row["event_id"] == event_id_for(eid, "payment", pid, 1) == row["body"]["id"]
        body = row["body"]
        assert (body["entity"], body["entity_id"], body["sequence"]) == ("payment", pid, 1)
        data = body["data"]
        assert data["id"] == pid and data["kind"] == "payment" and data["currency"] == "EUR"
        assert data["batch_id"] == str(batch.id)
        assert data["batch_item"] == {"index": index, "end_to_end_id": f"E2E-{index}",
                                      "attempt": 1}  # fmt: skip
        assert data["latency_ms"] == 250
        assert body["created_at"] == data["completed_at"]  # when the answer came
    amounts = [r["body"]["data"]["amount"] for r in rows[:4]]
    assert amounts == ["1.50", "25.00", "0.99", "10.00"]
    failed = rows[1]["body"]["data"]
    assert (failed["status"], failed["failure_code"], failed["channel_reference"]) == (
        "failed", "AC04", "ref-1-1",
    )  # fmt: skip
    exception = rows[2]["body"]["data"]
    assert (exception["status"], exception["state"], exception["failure_code"]) == (
        "exception", "exception", "AC04",
    )  # fmt: skip

    completed = rows[-1]
    assert (completed["entity_id"], completed["sequence"]) == (str(batch.id), version)
    assert completed["event_id"] == event_id_for(eid, "batch", str(batch.id), version)
    body = completed["body"]
    assert (body["id"], body["type"], body["entity"]) == (
        completed["event_id"], "batch.completed", "batch",
    )  # fmt: skip
    data = body["data"]
    assert data["status"] == "completed_with_failures" and data["id"] == str(batch.id)
    assert (data["item_count"], data["valid_item_count"], data["invalid_item_count"]) == (5, 4, 1)
    assert data["counts"] == {"succeeded": 2, "failed": 1, "exception": 1, "invalid": 1,
                              "pending": 0}  # fmt: skip
    assert data["amounts"] == {"succeeded": "11.50", "failed": "25.00", "exception": "0.99"}
    assert (data["control_sum"], data["currency"], data["format"]) == ("37.49", "EUR", "pain.001")
    assert data["message_id"] == f"MSG-{batch.id.hex[:8]}"
    assert (data["failure_code"], data["failure_message"]) == ("PART", "PART!")
    assert data["finished_at"] == body["created_at"] and data["created_at"] < data["finished_at"]
    assert data["processing_time_ms"] >= 0

    # Only the item in exception stays tracked: its resolution notifies again.
    tracked = table(read, "webhook_payments", "payment_id, state, batch")
    assert [(p, s) for p, s, _b in tracked] == [(str(batch.payments[2, 1]), "exception")]
    assert orjson.loads(tracked[0][2]) == {"batch_id": str(batch.id), "index": 2,
                                           "end_to_end_id": "E2E-2", "attempt": 1}  # fmt: skip

    def resolve(uow: Any) -> None:
        payment = uow.get(batch.payments[2, 1], Payment)
        payment.mark_failed("AC04", "closed, on inquiry", at=uow.now, actor="op:test")

    service.committer.run(resolve)
    read.catch_up()
    last = outbox(read)[-1]
    assert (last["type"], last["sequence"]) == ("payment.failed", 2)
    assert last["body"]["data"]["batch_item"]["index"] == 2
    assert last["body"]["data"]["batch_id"] == str(batch.id)
    assert last["body"]["data"]["failure_message"] == "closed, on inquiry"
    assert table(read, "webhook_payments") == []

    # A rebuild makes the same rows (the same event ids: nothing is sent again).
    before = outbox(read)
    assert verify(service.app, service.settings.store).ok
    rebuild(service.app, service.settings.store, page_size=2)
    assert outbox(read) == before
    assert verify(service.app, service.settings.store, page_size=3).ok


def test_a_retried_batch_completes_again_with_a_higher_sequence(service, read):
    register(service, "http://127.0.0.1:9/hooks", ["batch.completed"])
    batch = FakeBatch(service, [100, 200, 300]).submit()
    batch.approve()
    batch.process({0: "failed", 1: "failed", 2: "failed"})
    first = batch.finish(BatchStatus.FAILED, "NARR")
    batch.retry([0, 2])
    batch.process({0: "succeeded", 2: "exception"}, attempt=2)
    second = batch.finish(BatchStatus.COMPLETED_WITH_FAILURES, "PART")
    read.catch_up()

    rows = outbox(read)  # only batch.completed is subscribed: no payment notification
    assert [(r["type"], r["sequence"]) for r in rows] == [
        ("batch.completed", first), ("batch.completed", second),
    ]  # fmt: skip
    assert second > first and rows[0]["event_id"] != rows[1]["event_id"]
    one, two = (r["body"]["data"] for r in rows)
    assert (one["status"], one["failure_code"]) == ("failed", "NARR")
    assert one["counts"] == {"succeeded": 0, "failed": 3, "exception": 0, "invalid": 0,
                             "pending": 0}  # fmt: skip
    assert one["amounts"] == {"succeeded": "0.00", "failed": "6.00", "exception": "0.00"}
    assert two["status"] == "completed_with_failures"
    assert two["counts"] == {"succeeded": 1, "failed": 1, "exception": 1, "invalid": 0,
                             "pending": 0}  # fmt: skip
    assert two["amounts"] == {"succeeded": "1.00", "failed": "2.00", "exception": "3.00"}
    # Nobody listens to payments: none is tracked, not even the one in exception.
    assert table(read, "webhook_payments") == []
    assert verify(service.app, service.settings.store).ok


def test_a_batch_that_fails_without_sending_anything_completes_failed(service, read):
    register(service, "http://127.0.0.1:9/hooks", ALL)
    batch = FakeBatch(service, [100, 200], invalid=1).submit()
    version = batch.finish(BatchStatus.FAILED, "NARR")  # all-or-nothing with an invalid item
    read.catch_up()
    (row,) = outbox(read)
    assert (row["type"], row["sequence"]) == ("batch.completed", version)
    data = row["body"]["data"]
    assert (data["status"], data["failure_code"]) == ("failed", "NARR")
    # Nothing was sent, so nothing is pending: both valid items failed with the batch, as
    # GET /v1/batches/{id} counts them.
    assert data["counts"] == {"succeeded": 0, "failed": 2, "exception": 0, "invalid": 1,
                              "pending": 0}  # fmt: skip


def test_who_gets_what(service, read):
    """Outcomes go only to enabled endpoints of the batch's tenant subscribed to their type,
    as of when they happen: an endpoint registered while a batch waits for its approval gets
    its completion; a tenant without endpoints gets nothing (a batch costs one small row,
    dropped if it is rejected or cancelled)."""
    other = Principal(tenant="globex", client="cli:test")
    register(service, "http://127.0.0.1:9/globex", ALL, other)  # another tenant's
    quiet = FakeBatch(service, [100, 200]).submit()
    quiet.approve()
    quiet.process({0: "succeeded", 1: "exception"})
    waiting = FakeBatch(service, [100]).submit()
    rejected = FakeBatch(service, [100]).submit()
    rejected.change(lambda b, uow: b.reject("no", at=uow.now, actor="key:checker"))
    cancelled = FakeBatch(service, [100]).submit()
    read.catch_up()
    assert outbox(read) == [] and table(read, "webhook_payments") == []
    assert sorted(r[0] for r in table(read, "webhook_batches", "batch_id")) == sorted(
        [str(quiet.id), str(waiting.id), str(cancelled.id)]
    )

    payments_only = register(service, "http://127.0.0.1:9/payments", ["payment.failed"])
    batches_only = register(service, "http://127.0.0.1:9/batches", ["batch.completed"])
    cancelled.change(lambda b, uow: b.cancel(None, at=uow.now, actor="key:maker"))
    quiet.finish(BatchStatus.COMPLETED_WITH_FAILURES, "PART")  # its items went unnoticed
    waiting.approve()
    waiting.process({0: "failed"})
    waiting.finish(BatchStatus.FAILED, "NARR")
    read.catch_up()
    got = [(r["endpoint_id"], r["type"], r["entity_id"]) for r in outbox(read)]
    assert got == [
        (str(batches_only.info.id), "batch.completed", str(quiet.id)),
        (str(payments_only.info.id), "payment.failed", str(waiting.payments[0, 1])),
        (str(batches_only.info.id), "batch.completed", str(waiting.id)),
    ]
    assert sorted(r[0] for r in table(read, "webhook_batches", "batch_id")) == sorted(
        [str(quiet.id), str(waiting.id)]
    )
    assert verify(service.app, service.settings.store).ok


def test_views_made_before_batches_get_the_batch_column(service, read):
    """A store whose webhooks views predate batches: ``create_tables`` adds the column."""
    db = read.runner.db
    db.execute("ALTER TABLE view_webhook_payments DROP COLUMN batch")
    read.runner.create_tables()
    register(service, "http://127.0.0.1:9/hooks", ALL)
    batch = FakeBatch(service, [100]).submit()
    batch.approve()
    batch.process({0: "exception"})
    read.catch_up()
    (row,) = table(read, "webhook_payments", "batch")
    assert orjson.loads(row[0])["batch_id"] == str(batch.id)
    assert verify(service.app, service.settings.store).ok


def test_batch_completed_is_emitted():
    assert "batch.completed" in EMITTED_TYPES
    assert {"Batch.Finished", "Payment.BatchItemProcessed"} <= WebhooksProjection.HANDLED
