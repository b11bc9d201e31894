"""A page of large events is decoded a part at a time (``projections.runner._within_bytes``)."""

from __future__ import annotations

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
    assert len(_within_bytes(page)) == 10_000 and 1_000 * 10_000 < PAGE_BYTES_MAX
