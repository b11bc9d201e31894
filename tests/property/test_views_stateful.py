"""The views equal a from-scratch recomputation after random workloads.

The ledger machine of test_ledger_stateful.py drives random opens, deposits, payments of every
channel and outcome, closes and replays; after every step the read side catches up in pages of
three events (so pages split saves at every possible point) and each account and payment in the
views must equal its aggregate, loaded from its events. At the end a scratch rebuild from
position 0 must equal the incrementally built views row by row.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import settings
from hypothesis.stateful import invariant

from application.results import AccountResult, PaymentResult
from application.service import Payledger
from projections.read_side import ReadSide
from projections.replay import verify
from tests.conftest import require_postgres
from tests.property.test_ledger_stateful import COMMON, LedgerMachine, PostgresLedgerMachine

PAGE = 3


class ViewsMachine(LedgerMachine):
    def make_service(self) -> Payledger:
        svc = super().make_service()
        self.read = ReadSide(svc.app, svc.settings.store)
        self.read.runner.page_size = PAGE
        return svc

    def teardown(self) -> None:
        try:
            self.read.catch_up()
            report = verify(self.svc.app, self.svc.settings.store)
            assert report.ok, report.differences
        finally:
            self.read.close()
            super().teardown()

    @invariant()
    def views_equal_the_aggregates(self) -> None:
        self.read.catch_up()
        model = self.read.model
        for account_id in self.model:
            aggregate = self.svc.get_account(account_id)
            assert model.account("default", account_id) == AccountResult(
                **{**vars(aggregate), "replayed": False}
            )
        statuses: Counter[str] = Counter()
        for _cmd, (payment_id, _status, _code) in self.sent:
            aggregate = self.svc.get_payment(payment_id)
            statuses[aggregate.status] += 1
            assert model.payment("default", payment_id) == PaymentResult(
                **{**vars(aggregate), "replayed": False}
            )
        everything = model.metrics(
            "default", datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        )["totals"]
        assert {s: everything[s] for s in statuses} == dict(statuses)


class PostgresViewsMachine(ViewsMachine, PostgresLedgerMachine):
    pass


TestViewsOnSQLite = ViewsMachine.TestCase
TestViewsOnSQLite.settings = settings(max_examples=30, stateful_step_count=30, **COMMON)


@pytest.mark.postgres
class TestViewsOnPostgres(PostgresViewsMachine.TestCase):
    settings = settings(max_examples=5, stateful_step_count=15, **COMMON)

    def setUp(self) -> None:
        require_postgres()
        super().setUp()
