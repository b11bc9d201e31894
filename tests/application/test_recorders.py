"""The faster recorders and the orjson transcoder keep the library's contract."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from application.app import PayledgerApp
from application.store import parse_database_url
from domain.accounts import Account, AccountKind
from domain.ledger import transfer
from domain.payments import Payment, PaymentKind


def make_app(database_url: str) -> PayledgerApp:
    store = parse_database_url(database_url)
    store.prepare()
    return PayledgerApp(env=store.eventsourcing_env())


def open_account(n: int) -> Account:
    return Account.open(
        account_id=uuid.uuid4(), tenant="t", owner=f"owner-{n}", currency="KWD",
        kind=AccountKind.CUSTOMER, overdraft_limit_minor=0,
        at=datetime(2026, 1, 1, tzinfo=UTC), actor="tester",
    )  # fmt: skip


def test_a_batch_gets_increasing_ids_that_point_at_its_own_events(database_url: str) -> None:
    app = make_app(database_url)
    accounts = [open_account(n) for n in range(450)]  # more than one multi-row statement
    for account in accounts[::3]:
        account.credit(uuid.uuid4(), uuid.uuid4(), 7, at=datetime.now(UTC), actor="tester")
    events = [e for a in accounts for e in a.collect_events()]

    recordings = app.events.put(events)

    ids = [r.notification.id for r in recordings]
    assert ids == sorted(ids) and len(set(ids)) == len(events)
    stored = app.recorder.select_notifications(start=ids[0], limit=len(ids))
    by_id = {n.id: (n.originator_id, n.originator_version, n.topic) for n in stored}
    for recording, event in zip(recordings, events, strict=True):
        originator_id, version, topic = by_id[recording.notification.id]
        assert (uuid.UUID(str(originator_id)), version) == (
            event.originator_id,
            event.originator_version,
        )
        assert topic.endswith(type(event).__qualname__)
    app.close()


def test_every_event_type_round_trips_through_the_store(database_url: str) -> None:
    app = make_app(database_url)
    at = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
    payer, payee = open_account(1), open_account(2)
    payment = Payment.request(
        payment_id=uuid.uuid4(), tenant="t", kind=PaymentKind.PAYMENT, client="c",
        idempotency_key="k", request_fingerprint="f", amount_minor=1500, currency="KWD",
        channel="internal", payer={"type": "account", "account_id": str(payer.id)},
        payee={"type": "account", "account_id": str(payee.id)}, description="数据 ✓",
        metadata={"order": "42"}, at=at, actor="alice",
    )  # fmt: skip
    payer.credit(uuid.uuid4(), uuid.uuid4(), 5000, at=at, actor="alice")
    payer.reserve(payment.id, 1500, at=at, actor="alice")
    payment.mark_reserved(payer.id, at=at, actor="alice")
    payment.mark_submitted(at=at, actor="alice")
    entry = transfer(uuid.uuid4(), "KWD", payer.id, payee.id, 1500)
    payer.debit(payment.id, entry.entry_id, 1500, at=at, actor="alice")
    payee.credit(payment.id, entry.entry_id, 1500, at=at, actor="alice")
    payment.mark_succeeded("ref-1", entry, at=at, actor="alice")
    expected = {a.id: a for a in (payer, payee, payment)}
    events = [e for a in (payer, payee, payment) for e in a.collect_events()]

    app.events.put(events)

    for aggregate_id, original in expected.items():
        stored = list(app.events.get(aggregate_id))
        wanted = [e for e in events if e.originator_id == aggregate_id]
        assert [vars(e) for e in stored] == [vars(e) for e in wanted]
        assert vars(app.repository.get(aggregate_id)) | {"_pending_events": []} == (
            vars(original) | {"_pending_events": []}
        )
    app.close()
