"""The simulator's records: one answer per payment id (idempotency), and the day's charges.

Written from the event loop, read by statement downloads from worker threads: mutations take a
lock, and a day's list of charges only ever grows, so a reader walks it by index without one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from domain.money import format_amount

SUCCEEDED = "succeeded"
PAYOUT_CHANNELS = frozenset({"bank_transfer"})  # money out: debits on the statement
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Charge:
    """What the provider did with one payment id (a decline is remembered too, uncharged)."""

    payment_id: str
    channel: str
    status: str  # succeeded | failed
    reference: str
    amount_minor: int
    currency: str
    created_at: datetime  # UTC
    code: str | None = None
    message: str | None = None
    entry_ref: str | None = None  # the statement's id of a charge that was made

    def as_json(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "status": self.status,
            "reference": self.reference,
            "code": self.code,
            "message": self.message,
            "created_at": self.created_at.isoformat(),
            "channel": self.channel,
            "amount": format_amount(self.amount_minor, self.currency),
            "currency": self.currency,
        }


class ChargeBook:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_payment: dict[str, Charge] = {}
        self._by_day: dict[date, list[Charge]] = {}
        # Net settled per (day, channel, currency), signed as the statement account sees it:
        # the opening balance of a day's camt.053 statement.
        self._net: dict[tuple[date, str, str], int] = {}
        self._sequence = 0
        # Payment ids whose first request is being processed, so that a concurrent duplicate
        # waits for its answer instead of charging again (event-loop only).
        self._in_flight: dict[str, asyncio.Event] = {}

    def get(self, payment_id: str) -> Charge | None:
        return self._by_payment.get(payment_id)

    def __len__(self) -> int:
        return len(self._by_payment)

    async def claim(self, payment_id: str) -> Charge | None:
        """The earlier answer for ``payment_id``, or None once this caller owns its first
        processing (it must then call :meth:`release`)."""
        while True:
            known = self._by_payment.get(payment_id)
            if known is not None:
                return known
            busy = self._in_flight.get(payment_id)
            if busy is None:
                self._in_flight[payment_id] = asyncio.Event()
                return None
            await busy.wait()

    def release(self, payment_id: str) -> None:
        event = self._in_flight.pop(payment_id, None)
        if event is not None:
            event.set()

    def record(self, charge: Charge) -> Charge:
        """Remember the answer; a charge that was made gets the next statement entry id."""
        with self._lock:
            known = self._by_payment.get(charge.payment_id)
            if known is not None:
                return known
            if charge.status == SUCCEEDED:
                self._sequence += 1
                charge = replace(charge, entry_ref=f"E{self._sequence:06d}")
                day = charge.created_at.date()
                self._by_day.setdefault(day, []).append(charge)
                key = (day, charge.channel, charge.currency)
                sign = -1 if charge.channel in PAYOUT_CHANNELS else 1
                self._net[key] = self._net.get(key, 0) + sign * charge.amount_minor
            self._by_payment[charge.payment_id] = charge
            return charge

    def charges_on(
        self, day: date, channel: str | None = None, currency: str | None = None
    ) -> Iterator[Charge]:
        """The charges made on ``day`` (UTC), in the order they were made; those made while
        this is read are left out."""
        charges = self._by_day.get(day, [])
        for i in range(len(charges)):
            charge = charges[i]
            if (channel is None or charge.channel == channel) and (
                currency is None or charge.currency == currency
            ):
                yield charge

    def currencies_on(self, day: date, channel: str | None = None) -> set[str]:
        with self._lock:
            return {c for (d, ch, c) in self._net if d == day and channel in (None, ch)}

    def balance_before(self, day: date, channel: str | None, currency: str) -> int:
        """The settlement account's balance at the start of ``day``: credits (pay-ins) less
        debits (payouts) of every earlier day."""
        with self._lock:
            return sum(
                net
                for (d, ch, c), net in self._net.items()
                if d < day and c == currency and channel in (None, ch)
            )
