"""Batches end to end over real HTTP, on SQLite and PostgreSQL: intake with reason codes,
maker-checker approval with TOTP, the engine's per-item outcomes, the ledger, items and reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.interfaces.batch_helpers import FINAL, Payroll, item, payroll
from tests.interfaces.conftest import LiveServer
from tests.interfaces.keys_helpers import problem_code


@pytest.fixture
def pr(live_server: LiveServer) -> Payroll:
    return payroll(live_server)


def body(pr: Payroll, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"funding_account_id": pr.funding, "currency": "EUR", "items": items, **extra}


def test_a_payroll_batch_from_submission_to_report(pr: Payroll) -> None:
    items = [item(1, "1500.00"), item(2, "2500.50"), item(3, "99.99", suffix="0004"),
             item(4, "10.00", iban="DE00370400440532013000"), item(5, "20.00")]  # fmt: skip
    submitted = pr.submit(body(pr, items))
    assert submitted.status_code == 201, submitted.text
    batch = submitted.json()
    assert batch["status"] == "awaiting_approval"
    assert (batch["item_count"], batch["valid_item_count"], batch["invalid_item_count"]) == (
        5,
        4,
        1,
    )
    assert batch["control_sum"] == "4120.49"  # the valid items
    assert [(i["index"], i["reason_code"]) for i in batch["invalid_items"]] == [(3, "AC01")]

    approved = pr.approve(batch["id"])
    assert approved.status_code == 200, approved.text
    done = pr.wait(batch["id"])
    assert done["status"] == "completed_with_failures"
    assert done["counts"]["succeeded"] == 3 and done["counts"]["failed"] == 1
    assert done["amounts"]["succeeded"] == "4020.50"
    assert done["approved_by"].startswith("key:") and done["maker"] != done["approved_by"]
    assert done["processing_time_ms"] is not None and done["progress"]["percent"] == 100.0

    funding = pr.account(pr.funding)
    assert (funding["balance"], funding["reserved"]) == ("5979.50", "0.00")
    by_index = {i["index"]: i for i in pr.items(batch["id"])}
    assert [by_index[n]["status"] for n in range(5)] == [
        "succeeded", "succeeded", "failed", "invalid", "succeeded",
    ]  # fmt: skip
    assert by_index[2]["reason_code"] == "AC04"
    assert by_index[0]["payment_id"] and by_index[0]["channel_reference"]
    failed = pr.items(batch["id"], status="failed")
    assert [i["index"] for i in failed] == [2]

    # Each item is a payment like any other: readable, searchable, in the metrics.
    with pr.as_(pr.submitter) as http:
        payment = http.get(f"/v1/payments/{by_index[0]['payment_id']}").json()
        listed = http.get("/v1/payments", params={"batch": batch["id"]}).json()["items"]
    with pr.as_(pr.admin) as http:  # T_b in the metrics: the batch's processing time
        times = http.get("/v1/metrics").json()["batch_time_ms"]
    assert times["count"] == 1 and times["p50"] == done["processing_time_ms"]
    assert (payment["status"], payment["amount"], payment["channel"]) == (
        "succeeded", "1500.00", "bank_transfer",
    )  # fmt: skip
    assert len(listed) == 4
    assert payment["batch_id"] == batch["id"]  # the view's batch id, in every answer
    assert {p["batch_id"] for p in listed} == {batch["id"]}


def test_the_maker_never_approves_and_a_code_is_needed(
    pr: Payroll, live_server: LiveServer
) -> None:
    from tests.interfaces.keys_helpers import issue

    both = issue(live_server.service, pr.tenant, "admin", totp=True)
    with both.client(live_server.base_url) as http:
        made = http.post("/v1/batches", json=body(pr, [item(1)]),
                         headers={"Idempotency-Key": "maker-checker"})  # fmt: skip
        assert made.status_code == 201, made.text
        batch_id = made.json()["id"]
        own = http.post(f"/v1/batches/{batch_id}/approve", json={},
                        headers={"X-Payledger-OTP": both.code()})  # fmt: skip
    assert own.status_code == 403 and problem_code(own) == "maker_cannot_approve"
    with pr.as_(pr.approver) as http:
        no_code = http.post(f"/v1/batches/{batch_id}/approve", json={})
    assert no_code.status_code == 403 and problem_code(no_code) == "otp_required"
    with pr.as_(pr.submitter) as http:
        wrong_role = http.post(f"/v1/batches/{batch_id}/approve", json={})
    assert wrong_role.status_code == 403 and problem_code(wrong_role) == "forbidden"
    code = pr.approver.code()
    assert pr.approve(batch_id, code=code).status_code == 200
    assert pr.wait(batch_id)["status"] == "completed"
    # The same code never works twice, even on another batch.
    other = pr.submit(body(pr, [item(7)])).json()["id"]
    reused = pr.approve(other, code=code)
    assert reused.status_code == 403 and problem_code(reused) == "otp_invalid"
    assert pr.get(other)["status"] == "awaiting_approval"


def test_whole_file_checks_refuse_and_store_nothing(pr: Payroll, live_server: LiveServer) -> None:
    before = live_server.notification_position()
    overdrawn = pr.submit(body(pr, [item(1, "0.001")]))
    assert overdrawn.status_code == 201  # one bad item is listed, not the whole batch
    assert overdrawn.json()["invalid_items"][0]["reason_code"] == "CH20"
    position = live_server.notification_position()
    assert position > before
    cycle = pr.submit(body(pr, [item(1, depends_on="E2E-2"), item(2, depends_on="E2E-1")]))
    assert cycle.status_code == 422 and cycle.json()["errors"][0]["code"] == "dependency_cycle"
    past = pr.submit(body(pr, [item(1)], execution_date="2020-01-01"))
    assert past.status_code == 422 and past.json()["errors"][0]["code"] == "DT01"
    unknown = pr.submit({**body(pr, [item(1)]), "surprise": 1})
    assert unknown.status_code == 422
    assert live_server.notification_position() == position


def test_all_or_nothing_sinks_on_one_refused_item_and_moves_nothing(pr: Payroll) -> None:
    rules = {"mode": "all_or_nothing"}
    items = [item(1, "100.00"), item(2, "200.00", suffix="0004"), item(3, "300.00")]
    batch = pr.submit(body(pr, items, rules=rules)).json()
    assert batch["status"] == "awaiting_approval"
    assert pr.approve(batch["id"]).status_code == 200
    done = pr.wait(batch["id"])
    assert done["status"] == "failed" and done["failure_code"] == "AC04"
    assert {i["status"] for i in pr.items(batch["id"])} == {"failed"}
    # Nothing was sent, and nothing is left pending: every item failed with the batch.
    assert (done["counts"]["failed"], done["counts"]["pending"]) == (3, 0)
    assert done["amounts"]["failed"] == "600.00"
    funding = pr.account(pr.funding)
    assert (funding["balance"], funding["reserved"]) == ("10000.00", "0.00")


def test_an_invalid_item_sinks_an_all_or_nothing_batch_at_intake(pr: Payroll) -> None:
    items = [item(1), item(2, iban="DE00370400440532013000")]
    batch = pr.submit(body(pr, items, rules={"mode": "all_or_nothing"})).json()
    assert batch["status"] == "failed" and batch["failure_code"] == "AC01"


def test_insufficient_funds_fail_the_batch_before_anything_is_sent(pr: Payroll) -> None:
    batch = pr.submit(body(pr, [item(1, "6000.00"), item(2, "6000.00")])).json()
    assert pr.approve(batch["id"]).status_code == 200
    done = pr.wait(batch["id"])
    assert done["status"] == "failed" and done["failure_code"] == "AM04"
    assert (done["counts"]["failed"], done["counts"]["pending"]) == (2, 0)
    assert pr.account(pr.funding)["balance"] == "10000.00"


def test_stop_after_failures_and_dependencies(pr: Payroll) -> None:
    items = [
        item(1, suffix="0004"), item(2, depends_on="E2E-1"), item(3, suffix="0001"),
        item(4), item(5),
    ]  # fmt: skip
    batch = pr.submit(body(pr, items, rules={"stop_after_failures": 2})).json()
    assert pr.approve(batch["id"]).status_code == 200
    done = pr.wait(batch["id"])
    got = {i["index"]: (i["status"], i["reason_code"]) for i in pr.items(batch["id"])}
    assert got[0] == ("failed", "AC04")
    assert got[1][0] == "failed" and got[1][1] == "NARR"  # its dependency failed: never sent
    # Two failures (item 0, and item 1 which was not sent) stop the batch: nothing after is paid.
    assert {got[n][0] for n in (2, 3, 4)} == {"failed"}
    assert done["counts"]["succeeded"] == 0 and done["status"] == "failed"
    assert pr.account(pr.funding)["balance"] == "10000.00"


def test_a_failure_ratio_stops_a_small_batch_too(pr: Payroll) -> None:
    items = [item(1, suffix="0004"), item(2, suffix="0004"), item(3, suffix="0004"), item(4)]
    batch = pr.submit(body(pr, items, rules={"max_failure_ratio": "0.5"})).json()
    assert pr.approve(batch["id"]).status_code == 200
    done = pr.wait(batch["id"])
    got = {i["index"]: (i["status"], i["reason_code"]) for i in pr.items(batch["id"])}
    assert got[0] == ("failed", "AC04")  # 1 failed of 1 processed: above 0.5, so it stops
    assert got[3] == ("failed", "NARR")  # never sent
    assert done["counts"]["succeeded"] == 0
    assert pr.account(pr.funding)["balance"] == "10000.00"


def test_processing_order_by_amount(pr: Payroll) -> None:
    items = [item(1, "1.00"), item(2, "3.00"), item(3, "2.00")]
    batch = pr.submit(body(pr, items, rules={"order": "amount_desc"})).json()
    assert pr.approve(batch["id"]).status_code == 200
    pr.wait(batch["id"])
    with pr.as_(pr.admin) as http:  # the audit history: an oversight role
        seq = {
            i["index"]: http.get(f"/v1/payments/{i['payment_id']}/events").json()["events"][0][
                "data"]["batch_item"]["seq"]
            for i in pr.items(batch["id"])
        }  # fmt: skip
    assert sorted(seq, key=seq.__getitem__) == [1, 2, 0]


def test_a_future_batch_is_scheduled_and_can_be_cancelled(pr: Payroll) -> None:
    batch = pr.submit(body(pr, [item(1)], execution_date="2099-01-04")).json()
    approved = pr.approve(batch["id"], execute_now=False)
    assert approved.status_code == 200 and approved.json()["status"] == "scheduled"
    assert approved.json()["run_on"] == "2099-01-04"
    with pr.as_(pr.submitter) as http:
        cancelled = http.post(f"/v1/batches/{batch['id']}/cancel", json={"reason": "wrong month"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert pr.account(pr.funding)["reserved"] == "0.00"


def test_a_batch_rolled_past_its_cut_off_gives_its_funds_back_when_cancelled(
    pr: Payroll,
) -> None:
    # Released now, after a 00:00 cut-off: it holds its funds, then waits for the next day.
    batch = pr.submit(body(pr, [item(1, "40.00")], rules={"cutoff_time": "00:00"})).json()
    assert pr.approve(batch["id"], execute_now=True).status_code == 200
    waiting = pr.wait(batch["id"])
    assert waiting["status"] == "scheduled" and waiting["held"] == "40.00", waiting
    assert pr.account(pr.funding)["reserved"] == "40.00"
    with pr.as_(pr.submitter) as http:
        cancelled = http.post(f"/v1/batches/{batch['id']}/cancel", json={"reason": "not now"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["held"] == "0.00"
    funding = pr.account(pr.funding)
    assert (funding["reserved"], funding["balance"]) == ("0.00", "10000.00")


def test_an_item_dated_in_the_past_is_invalid_dt01_and_the_rest_goes_on(pr: Payroll) -> None:
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    items = [item(1), item(2, value_date=yesterday)]
    answer = pr.submit(body(pr, items))
    assert answer.status_code == 201, answer.text
    got = {i["index"]: (i["status"], i["reason_code"]) for i in pr.items(answer.json()["id"])}
    assert got == {0: ("pending", None), 1: ("invalid", "DT01")}


def test_retry_failed_items_makes_new_attempts(pr: Payroll) -> None:
    batch = pr.submit(body(pr, [item(1), item(2, suffix="0004")])).json()
    assert pr.approve(batch["id"]).status_code == 200
    assert pr.wait(batch["id"])["status"] == "completed_with_failures"
    first = {i["index"]: i for i in pr.items(batch["id"])}[1]
    with pr.as_(pr.submitter) as http:
        retried = http.post(f"/v1/batches/{batch['id']}/retry", json={"all_failed": True})
    assert retried.status_code == 200, retried.text
    done = pr.wait(batch["id"])
    assert done["status"] in FINAL
    again = {i["index"]: i for i in pr.items(batch["id"])}[1]
    assert again["attempt"] == 2 and again["payment_id"] != first["payment_id"]
    assert again["status"] == "failed"  # the account is still closed
    assert Decimal(pr.account(pr.funding)["balance"]) == Decimal("9900.00")
    assert pr.account(pr.funding)["reserved"] == "0.00"


def test_dry_run_predicts_and_changes_nothing(pr: Payroll, live_server: LiveServer) -> None:
    before = live_server.notification_position()
    items = [item(1, "6000.00"), item(2, "6000.00"), item(3, iban="XX")]
    answer = pr.submit(body(pr, items, rules={"funds_check": False}), dry_run="true")
    assert answer.status_code == 200, answer.text
    predicted = {p["index"]: (p["predicted"], p["reason_code"]) for p in answer.json()["items"]}
    assert predicted == {0: ("succeeded", None), 1: ("failed", "AM04"), 2: ("failed", "AC01")}
    assert live_server.notification_position() == before
