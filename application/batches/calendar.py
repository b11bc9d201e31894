"""Business days and the cut-off: when a released item is booked.

Weekends are never business days; for EUR the TARGET2 closing days are not either (``holidays``
``financial_holidays("XECB")``). A batch released after its cut-off time (UTC) books its items
on the next business day, as banks do with late files.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import cache

import holidays


@cache
def _closed_days(currency: str, year: int) -> frozenset[date]:
    if currency != "EUR":
        return frozenset()
    return frozenset(holidays.financial_holidays("XECB", years=year))


def is_business_day(day: date, currency: str) -> bool:
    return day.weekday() < 5 and day not in _closed_days(currency, day.year)


def next_business_day(day: date, currency: str) -> date:
    """The first business day strictly after ``day``."""
    day += timedelta(days=1)
    while not is_business_day(day, currency):
        day += timedelta(days=1)
    return day


def booking_date(now: datetime, cutoff: str | None, currency: str) -> date:
    """The day items released at ``now`` (UTC) can be processed: today, or, for a batch with
    a cut-off, the next business day once today's cut-off has passed (or today is not one)."""
    today = now.date()
    if cutoff is None:
        return today
    hours, minutes = (int(part) for part in cutoff.split(":"))
    if now.timetz().replace(tzinfo=None) > time(hours, minutes):
        return next_business_day(today, currency)
    if is_business_day(today, currency):
        return today
    return next_business_day(today, currency)
