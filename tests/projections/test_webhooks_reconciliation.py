"""``reconciliation.discrepancy``: a completed run with anything but matches and timing notifies
the tenant's endpoints subscribed to it, once, with the run's summary; a clean run notifies
nothing. Runs recorded straight through the aggregate (the whole path is in
tests/e2e/test_reconcile_with_simulator.py and tests/interfaces/test_reconciliations_http.py)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import orjson

from application.commands import ANONYMOUS
from application.service import Payledger
from application.webhooks import RegisterEndpoint
from domain.reconciliations import CATEGORIES, Reconciliation
from domain.webhooks import EMITTED_TYPES
from projections.read_side import ReadSide
from projections.replay import verify


def record_run(service: Payledger, counts: dict[str, int]) -> str:
    run_id = uuid4()
    summary = {c: {"count": counts.get(c, 0), "amount_minor": 150 * counts.get(c, 0)}
               for c in CATEGORIES}  # fmt: skip

    def decide(uow: Any) -> None:
        run = Reconciliation.start(
            reconciliation_id=run_id, tenant=ANONYMOUS.tenant, channel="card",
            period_start="2026-11-25", period_end="2026-11-25", file_sha256="0" * 64,
            file_name="card.csv", file_format="csv", file_size=100, tolerance_days=1,
            at=uow.now, actor="key:ops",
        )  # fmt: skip
        run.complete(
            summary=summary, balances={"currency": "EUR", "difference_minor": -150},
            line_count=sum(counts.values()), item_count=sum(counts.values()), chunk_count=1,
            at=uow.now, actor="key:ops",
        )  # fmt: skip
        uow.add(run)

    committer: Any = service.committer
    committer.run(decide)
    return str(run_id)


def test_a_run_with_discrepancies_notifies_once_and_a_clean_run_never(
    service: Payledger, read: ReadSide
) -> None:
    assert "reconciliation.discrepancy" in EMITTED_TYPES
    asyncio.run(service.webhooks.register(
        RegisterEndpoint("http://127.0.0.1:9/hooks", ["reconciliation.discrepancy"]), ANONYMOUS
    ))  # fmt: skip
    record_run(service, {"matched": 10, "timing": 2})
    flawed = record_run(service, {"matched": 8, "amount_mismatch": 1, "missing_in_ledger": 2})
    read.catch_up()

    rows = read.runner.db.query(
        "SELECT type, entity_id, sequence, body FROM view_webhook_outbox ORDER BY position"
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [("reconciliation.discrepancy", flawed, 2)]
    body = orjson.loads(rows[0][3])
    assert body["type"] == "reconciliation.discrepancy" and body["entity"] == "reconciliation"
    data = body["data"]
    assert data["discrepancy_count"] == 3 and data["channel"] == "card"
    assert data["summary"]["amount_mismatch"] == {"count": 1, "amount": "1.50"}
    assert data["summary"]["missing_in_ledger"] == {"count": 2, "amount": "3.00"}
    assert data["difference"] == "-1.50"
    assert data["items_url"] == f"/v1/reconciliations/{flawed}/items"
    assert verify(service.app, service.settings.store).ok
