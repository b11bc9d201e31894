"""A page of large events is decoded a part at a time (``projections.runner._within_bytes``)."""

from __future__ import annotations

from uuid import uuid4

import pytest

from application.service import Payledger
from domain.reconciliations import ReconciliationChunk
from projections import runner
from projections.runner import PAGE_BYTES_MAX, _within_bytes


def rows(*sizes: int) -> list[tuple[int, str, int, str, bytes]]:
    return [(n, "id", 1, "topic", b"x" * size) for n, size in enumerate(sizes, 1)]


def test_a_page_stops_before_the_event_that_would_pass_the_cap() -> None:
    page = rows(400, 400, 400, 400)
    assert [r[0] for r in _within_bytes(page, cap=1000)] == [1, 2]


def test_an_event_larger_than_the_cap_is_a_page_of_its_own() -> None:
    assert [r[0] for r in _within_bytes(rows(5000, 10), cap=1000)] == [1]


def test_pages_of_ordinary_events_are_untouched() -> None:
    # A rebuild page of 10,000 events of 1 KB (a payment's largest event, Requested, is ~700 B).
    page = rows(*([1_000] * 10_000))
    assert len(_within_bytes(page)) == 10_000 and PAGE_BYTES_MAX > 1_000 * 10_000


def test_the_log_reader_reads_large_events_a_part_at_a_time(
    service: Payledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On both stores the cap applies where the rows are read (PostgreSQL in its query)."""
    run = uuid4()
    chunks = [
        ReconciliationChunk.record(
            reconciliation_id=run, tenant="default", attempt=1, number=n,
            items=[[i, "matched", "x" * 100] for i in range(100)], at=service.clock.now(),
            actor="test",
        )
        for n in range(6)
    ]  # fmt: skip
    service.app.events.put([e for chunk in chunks for e in chunk.collect_events()])
    size = len(service.app.mapper.to_stored_event(chunks[0].Recorded(
        originator_id=run, originator_version=1, timestamp=service.clock.now(),
        originator_topic="t", actor="test", tenant="default", reconciliation_id=str(run),
        attempt=1, number=0, items=[[i, "matched", "x" * 100] for i in range(100)],
    )).state)  # fmt: skip
    monkeypatch.setattr(runner, "PAGE_BYTES_MAX", int(size * 2.5))
    log = runner.LogReader(service.app)
    first = log.read(0, 1_000)
    assert [e.data["number"] for e in first] == [0, 1]
    rest = log.read(first[-1].id, 1_000)
    assert [e.data["number"] for e in rest] == [2, 3]
    monkeypatch.setattr(runner, "PAGE_BYTES_MAX", 10)  # smaller than any event: one per page
    assert len(log.read(0, 1_000)) == 1
