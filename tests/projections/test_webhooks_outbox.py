"""The webhooks outbox projection and the deliverer, on both stores, without HTTP in front.

* a page's outbox and delivery rows commit with its tracking position, or not at all;
* a rebuild (``payledger replay``) and its verification re-send nothing;
* a deliverer killed mid-request leaves its claim to be taken again after the lease, with the
  same event id (at-least-once); only one deliverer per store works;
* disabled endpoints hold their deliveries, deleted ones cancel them; the view of endpoints
  mirrors the aggregate (sealed secrets and their expiry included).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import orjson
import pytest

from application.commands import ANONYMOUS, Principal
from application.service import Payledger
from application.webhooks import RegisterEndpoint, WebhookSettings, unseal_secret
from domain.payments import Payment
from domain.webhooks import WebhookEndpoint
from projections.db import to_us
from projections.read_side import ReadSide
from projections.replay import rebuild, verify
from projections.webhook_delivery import Deliverer, backoff_s
from tests.application.helpers import CARD_DECLINED, CARD_OK, CARD_TIMEOUT
from tests.webhook_receiver import Receiver

EVENTS = ["payment.succeeded", "payment.failed", "payment.exception"]
FAST = WebhookSettings(retry_base_s=0.01, retry_max_s=0.05, connect_timeout_s=2, read_timeout_s=2)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def register(service: Payledger, url: str, events: list[str] = EVENTS) -> Any:
    return asyncio.run(service.webhooks.register(RegisterEndpoint(url, events), ANONYMOUS))


def deliveries(read: ReadSide) -> list[tuple[Any, ...]]:
    return read.runner.db.query(
        "SELECT event_id, type, status, attempts FROM webhook_deliveries ORDER BY position"
    )


def outbox(read: ReadSide) -> list[tuple[Any, ...]]:
    return read.runner.db.query("SELECT * FROM view_webhook_outbox ORDER BY position, event_id")


def deliverer(service: Payledger, settings: WebhookSettings = FAST, **kwargs: Any) -> Deliverer:
    return Deliverer(service.settings.store, service.settings.secret_key, settings, **kwargs)


def test_outbox_rows_commit_with_the_position_or_not_at_all(service, driver, read, receiver):
    register(service, receiver.url)
    shop = driver.open("shop", kind="merchant")
    driver.pay("10", channel="card", card_number=CARD_OK, payee=shop)
    (webhooks,) = [p for p in read.runner.projections if p.name == "webhooks"]
    write = webhooks.write_changes

    def write_then_crash(changes: Any) -> None:
        write(changes)
        raise RuntimeError("the process died before the commit")

    webhooks.write_changes = write_then_crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        read.catch_up()
    assert deliveries(read) == [] and outbox(read) == []  # nothing invented
    webhooks.write_changes = write  # type: ignore[method-assign]
    read.runner.positions = {}
    read.catch_up()
    read.catch_up()
    (row,) = deliveries(read)  # nothing lost, nothing twice
    assert row[1:] == ("payment.succeeded", "pending", 0)
    assert [r[0] for r in outbox(read)] == [row[0]]


def test_a_rebuild_and_its_verification_resend_nothing(service, driver, read, receiver):
    endpoint = register(service, receiver.url)
    shop = driver.open("shop", kind="merchant")
    for number in (CARD_OK, CARD_DECLINED, CARD_TIMEOUT):
        driver.pay("10", channel="card", card_number=number, payee=shop)
    read.catch_up()
    sender = deliverer(service)
    try:
        assert sender.drain() == 3
        before_rows, before_outbox = deliveries(read), outbox(read)
        assert {r[2] for r in before_rows} == {"delivered"}

        report = rebuild(service.app, service.settings.store)
        assert report.position == driver.position()
        assert deliveries(read) == before_rows  # the delivery state is where it was
        assert outbox(read) == before_outbox  # the same rows, the same event ids
        assert sender.drain() == 0  # nothing to send again
        assert verify(service.app, service.settings.store).ok

        driver.pay("10", channel="card", card_number=CARD_OK, payee=shop)
        read.catch_up()
        assert sender.drain() == 1
    finally:
        sender.close()
    assert len(receiver.all()) == 4
    assert len({r.event_id for r in receiver.all()}) == 4
    view = read.runner.db.query("SELECT url, state FROM view_webhook_endpoints")
    assert view == [(receiver.url, "enabled")]
    assert endpoint.secret not in str(read.runner.db.query("SELECT * FROM view_webhook_endpoints"))


def test_a_deliverer_killed_mid_request_is_relieved_after_its_lease(
    service, driver, read, receiver
):
    register(service, receiver.url)
    driver.pay("10", channel="card", card_number=CARD_OK, payee=driver.open("s", kind="merchant"))
    read.catch_up()
    crashed = deliverer(service)
    assert crashed.lock.try_acquire()
    (claimed,) = crashed.claim(10)  # ...and it dies before posting or recording anything
    crashed.close()  # its lock goes with it (a killed process's would)

    now = deliverer(service)
    try:
        assert now.drain() == 0  # still leased to the dead one
    finally:
        now.close()
    later = deliverer(service, clock=lambda: time.time() + FAST.lease_s + 1)
    try:
        assert later.drain() == 1
        assert later.drain() == 0
    finally:
        later.close()
    (request,) = receiver.all()
    assert request.event_id == claimed.event_id  # the same notification, the same id
    assert deliveries(read)[0][2:] == ("delivered", 1)


def test_a_receiver_that_answered_before_a_crash_sees_the_same_id_twice(
    service, driver, read, receiver
):
    """At least once: a crash between the receiver's answer and the attempt's record sends the
    notification again, with the same event id and body, for the receiver to deduplicate."""
    register(service, receiver.url)
    driver.pay("10", channel="card", card_number=CARD_OK, payee=driver.open("s", kind="merchant"))
    read.catch_up()
    first = deliverer(service)
    (claimed,) = first.claim(10)
    first._post(receiver.url, claimed, ["whsec_x"])  # answered; the record never happens
    first.close()
    second = deliverer(service, clock=lambda: time.time() + FAST.lease_s + 1)
    try:
        assert second.drain() == 1
    finally:
        second.close()
    one, two = receiver.all()
    assert one.event_id == two.event_id and one.body == two.body


def test_only_one_deliverer_works_per_store(service):
    a, b = deliverer(service), deliverer(service)
    try:
        assert a.lock.try_acquire()
        assert not b.lock.try_acquire()
        assert b.run_once() == 0
        a.close()
        assert b.lock.try_acquire()
    finally:
        a.close()
        b.close()


def test_a_disabled_endpoint_holds_its_deliveries_and_a_deleted_one_cancels_them(
    service, driver, read, receiver
):
    held = register(service, receiver.url, ["payment.succeeded"])
    gone = register(service, receiver.url, ["payment.succeeded"])
    driver.pay("10", channel="card", card_number=CARD_OK, payee=driver.open("s", kind="merchant"))
    asyncio.run(service.webhooks.change(held.info.id, "disable", ANONYMOUS))
    asyncio.run(service.webhooks.change(gone.info.id, "delete", ANONYMOUS))
    read.catch_up()
    assert [r[2] for r in deliveries(read)] == ["pending", "pending"]  # queued before
    sender = deliverer(service)
    try:
        sender.drain()
        statuses = dict(read.runner.db.query("SELECT endpoint_id, status FROM webhook_deliveries"))
        assert statuses == {str(held.info.id): "pending", str(gone.info.id): "cancelled"}
        assert receiver.all() == []
        expired = deliverer(service, clock=lambda: time.time() + FAST.max_age_s + 1)
        try:
            expired.lock.release()
            sender.lock.release()
            assert expired.drain() == 1
        finally:
            expired.close()
    finally:
        sender.close()
    (failed,) = read.runner.db.query(
        "SELECT status, attempts, last_error FROM webhook_deliveries WHERE endpoint_id = ?",
        (str(held.info.id),),
    )
    assert failed[:2] == ("failed", 0) and "disabled" in failed[2]
    # While disabled, new outcomes are not queued for it at all.
    driver.pay("10", channel="card", card_number=CARD_OK, payee=driver.open("t", kind="merchant"))
    read.catch_up()
    assert len(deliveries(read)) == 2


def test_the_endpoints_view_mirrors_the_aggregate(service, read, receiver):
    created = register(service, receiver.url)
    eid = created.info.id
    asyncio.run(service.webhooks.rotate_secret(eid, ANONYMOUS, 3600))
    asyncio.run(service.webhooks.rotate_secret(eid, ANONYMOUS, 60))
    last = asyncio.run(service.webhooks.rotate_secret(eid, ANONYMOUS, 0))
    asyncio.run(service.webhooks.change(eid, "disable", ANONYMOUS))
    read.catch_up()
    endpoint = service.app.repository.get(eid)
    assert isinstance(endpoint, WebhookEndpoint)
    ((state, secrets, version),) = read.runner.db.query(
        "SELECT state, secrets, version FROM view_webhook_endpoints"
    )
    assert (state, version) == ("disabled", endpoint.version)
    expected = [
        [s["sealed"], None if s["expires_at"] is None else to_us(s["expires_at"])]
        for s in endpoint.secrets
    ]
    assert orjson.loads(secrets) == expected
    assert len(expected) == 3  # the newest, and the two earlier ones still overlapping
    key = service.settings.secret_key
    assert unseal_secret(expected[0][0], eid, key) == last.secret
    assert unseal_secret(expected[-1][0], eid, key) == created.secret
    assert created.secret not in secrets


def test_backoff_doubles_is_capped_and_jittered_down_to_half():
    s = WebhookSettings(retry_base_s=10, retry_max_s=3600)
    assert backoff_s(1, s, lambda: 1.0) == 10
    assert backoff_s(1, s, lambda: 0.0) == 5
    assert backoff_s(4, s, lambda: 1.0) == 80
    assert backoff_s(30, s, lambda: 1.0) == 3600
    assert backoff_s(10_000, s, lambda: 0.0) == 1800


def test_payments_of_tenants_without_endpoints_leave_no_rows(service, driver, read):
    shop = driver.open("shop", kind="merchant")
    for number in (CARD_OK, CARD_TIMEOUT):
        driver.pay("10", channel="card", card_number=number, payee=shop)
    read.catch_up()
    for table in ("view_webhook_payments", "view_webhook_outbox", "webhook_deliveries"):
        assert read.runner.db.query(f"SELECT COUNT(*) FROM {table}") == [(0,)]


def test_rotation_keeps_at_most_three_live_secrets(service, read, receiver):
    created = register(service, receiver.url)
    for _ in range(5):
        asyncio.run(service.webhooks.rotate_secret(created.info.id, ANONYMOUS, 3600))
    info = service.webhooks.get(created.info.id, ANONYMOUS)
    assert info.signing_secrets == 3
    assert info.previous_secret_expires_at is not None
    assert info.previous_secret_expires_at - info.updated_at <= timedelta(seconds=3600)


def test_small_pages_rebuild_the_same_views_as_the_live_follower(service, driver, read, receiver):
    """A rebuild keeps endpoints and tracked payments in memory across pages (no reads of the
    tables it writes); compared row by row with the views built page by page by the live
    runner, through registrations, rotations, disabling, deleting and a resolved exception."""
    other = Principal(tenant="globex", client="cli:test")
    shop = driver.open("shop", kind="merchant")
    first = register(service, receiver.url)
    driver.pay("1", channel="card", card_number=CARD_OK, payee=shop)
    read.catch_up()
    timeout = driver.pay("2", channel="card", card_number=CARD_TIMEOUT, payee=shop)
    second = register(service, receiver.url, ["payment.failed"])
    asyncio.run(service.webhooks.register(RegisterEndpoint(receiver.url, EVENTS), other))
    read.catch_up()
    asyncio.run(service.webhooks.rotate_secret(first.info.id, ANONYMOUS, 600))
    driver.pay("3", channel="card", card_number=CARD_DECLINED, payee=shop)
    asyncio.run(service.webhooks.change(second.info.id, "disable", ANONYMOUS))

    def resolve(uow: Any) -> None:
        payment = uow.get(UUID(str(timeout.id)), Payment)
        payment.mark_failed("declined_on_inquiry", "declined", at=uow.now, actor="op:test")

    service.committer.run(resolve)
    read.catch_up()
    asyncio.run(service.webhooks.change(first.info.id, "delete", ANONYMOUS))
    driver.pay("4", channel="card", card_number=CARD_OK, payee=shop)
    read.catch_up()
    live = outbox(read)
    assert [r[3] for r in live] == [
        "payment.succeeded", "payment.exception", "payment.failed", "payment.failed",
        "payment.failed",
    ]  # fmt: skip
    assert verify(service.app, service.settings.store, page_size=3).ok
    rebuild(service.app, service.settings.store, page_size=2)
    assert outbox(read) == live
    assert verify(service.app, service.settings.store, page_size=5).ok
