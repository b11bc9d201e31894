"""A payment's latency runs from when its request arrived to when its outcome was recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from application.service import Payledger
from tests.application.helpers import Driver, fresh_key, payment_command
from tests.conftest import make_settings


class SteppingClock:
    """Every reading is 40 ms after the previous one."""

    def __init__(self) -> None:
        self.t = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.t += timedelta(milliseconds=40)
        return self.t


def test_latency_counts_from_the_request_not_from_the_commit(sqlite_url: str) -> None:
    with Payledger(make_settings(sqlite_url), clock=SteppingClock()) as svc:
        d = Driver(svc)
        payer, payee = d.open("payer", "CNY"), d.open("payee", "CNY")
        d.deposit(payer, "10.00")

        paid = d.submit(payment_command("1.00", key=fresh_key(), payer=payer, payee=payee))

    assert paid.status == "succeeded"
    assert paid.completed_at is not None and paid.completed_at > paid.created_at
    assert paid.latency_ms == int((paid.completed_at - paid.created_at).total_seconds() * 1000)
    assert paid.latency_ms >= 40
