"""How the simulated provider treats a charge: triggers, random faults, and the record it keeps.

Deterministic triggers are the sandbox's (application/channels/sandbox.py): card numbers,
wallet payer ids and IBAN suffixes that decline or time out. Random faults are drawn from the
seeded source, four draws per new request in a fixed order, so one seed replays one run.
A payment id seen before is answered from the record (never charged again): that is what makes
a retry after a timeout or a dropped answer safe. The call itself can still fail as any call
can (a 503, a timeout, a dropped answer, drawn again), and a charge whose trigger times out
never gets a timely answer to a charge request: only the status query tells what happened.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from uuid import UUID

from application.channels.sandbox import (
    BANK_TRIGGERS,
    CARD_TRIGGERS,
    DECLINED,
    TIMEOUT,
    WALLET_TRIGGERS,
)
from interfaces.channel_sim.book import FAILED, SUCCEEDED, Charge, ChargeBook
from interfaces.channel_sim.config import Knobs

# What a random decline says, per channel (the triggers have their own codes).
RANDOM_DECLINES = {
    "card": ("card_declined", "The card was declined."),
    "alipay": ("wallet_declined", "The wallet declined the payment."),
    "wechat_pay": ("wallet_declined", "The wallet declined the payment."),
    "bank_transfer": ("AC06", "Blocked account."),
}
NO_TRIGGER: tuple[str, str | None, str] = ("", None, "")


class Delivery(Enum):
    ANSWER = "answer"  # a normal 200
    TIMEOUT = "timeout"  # the answer waits ``timeout_s`` (the client gives up first)
    DROP = "drop"  # the connection breaks in the middle of the answer
    UNAVAILABLE = "unavailable"  # 503, nothing recorded


@dataclass(frozen=True, slots=True)
class ChargeOrder:
    """One charge as the provider received it (the card number is not kept)."""

    payment_id: str
    channel: str
    amount_minor: int
    currency: str
    payer: dict[str, Any]
    payee: dict[str, Any]
    card_number: str = ""


@dataclass(frozen=True, slots=True)
class Handled:
    delivery: Delivery
    charges: tuple[Charge, ...] = ()


@dataclass(frozen=True, slots=True)
class _Draws:
    error: bool
    decline: bool
    timeout: bool
    drop: bool


class Provider:
    def __init__(
        self, knobs: Knobs, book: ChargeBook, now: Callable[[], datetime] | None = None
    ) -> None:
        self.knobs = knobs
        self.book = book
        self.now = now or (lambda: datetime.now(UTC))
        # How the answers went out ({"answer": n, "timeout": n, ...}), for tests and operators.
        self.deliveries: Counter[str] = Counter()

    async def handle(self, orders: list[ChargeOrder]) -> Handled:
        """Charge each order once. A batch is one call: one latency, one draw of the call's
        faults (503, timeout, drop), a decline draw per new order."""
        config = self.knobs.config
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        first: dict[str, tuple[int, ChargeOrder]] = {}  # an id given twice is charged once
        for position, order in enumerate(orders):
            first.setdefault(order.payment_id, (position, order))
        known: dict[str, Charge] = {}
        claimed: list[ChargeOrder] = []
        try:
            # In id order: two calls waiting on each other's ids could otherwise deadlock.
            for payment_id in sorted(first):
                earlier = await self.book.claim(payment_id)
                if earlier is not None:
                    known[payment_id] = earlier
                else:
                    claimed.append(first[payment_id][1])
            claimed.sort(key=lambda o: first[o.payment_id][0])  # draws in the call's order
            handled = self._decide(orders, known, claimed)
            self.deliveries[handled.delivery.value] += 1
            return handled
        finally:
            for order in claimed:
                self.book.release(order.payment_id)

    def _decide(
        self, orders: list[ChargeOrder], known: dict[str, Charge], claimed: list[ChargeOrder]
    ) -> Handled:
        call = self._draw()
        # A charge whose trigger times out is never answered in time, even when asked again.
        stuck = any(trigger(o)[0] == TIMEOUT for o in orders)
        if not claimed:  # all seen before: the recorded answers, through this call's faults
            if call.error:
                return Handled(Delivery.UNAVAILABLE)
            delivery = (
                Delivery.TIMEOUT if stuck or call.timeout
                else Delivery.DROP if call.drop else Delivery.ANSWER
            )  # fmt: skip
            return Handled(delivery, tuple(known[o.payment_id] for o in orders))
        if call.error:
            return Handled(Delivery.UNAVAILABLE)
        timed_out = call.timeout or stuck
        for order in claimed:
            verdict, code, message = trigger(order)
            decline = self._draw().decline if len(claimed) > 1 else call.decline
            if verdict != DECLINED and decline:
                verdict, (code, message) = DECLINED, RANDOM_DECLINES[order.channel]
            timed_out = timed_out or verdict == TIMEOUT
            known[order.payment_id] = self.book.record(self._charge(order, verdict, code, message))
        delivery = (
            Delivery.TIMEOUT if timed_out else Delivery.DROP if call.drop else Delivery.ANSWER
        )
        return Handled(delivery, tuple(known[o.payment_id] for o in orders))

    def _draw(self) -> _Draws:
        config, draw = self.knobs.config, self.knobs.draw
        error, decline, timeout, drop = draw(), draw(), draw(), draw()
        return _Draws(
            error < config.error_rate,
            decline < config.decline_rate,
            timeout < config.timeout_rate,
            drop < config.drop_rate,
        )

    def _charge(self, order: ChargeOrder, verdict: str, code: str | None, message: str) -> Charge:
        declined = verdict == DECLINED
        return Charge(
            payment_id=order.payment_id,
            channel=order.channel,
            status=FAILED if declined else SUCCEEDED,
            reference=reference_of(order.channel, order.payment_id),
            amount_minor=order.amount_minor,
            currency=order.currency,
            created_at=self.now(),
            code=code if declined else None,
            message=message if declined else None,
        )


def trigger(order: ChargeOrder) -> tuple[str, str | None, str]:
    """The sandbox's deterministic outcome for this order, if it names one."""
    if order.channel == "card":
        return CARD_TRIGGERS.get(order.card_number, NO_TRIGGER)
    if order.channel in ("alipay", "wechat_pay"):
        return WALLET_TRIGGERS.get(str(order.payer.get("payer_id", "")), NO_TRIGGER)
    if order.channel == "bank_transfer":
        return BANK_TRIGGERS.get(str(order.payee.get("iban", ""))[-4:], NO_TRIGGER)
    return NO_TRIGGER


def reference_of(channel: str, payment_id: str) -> str:
    """The provider's reference for a charge: stable per payment id (as the sandbox's)."""
    return f"{channel[:4]}_{hashlib.sha256(UUID(payment_id).bytes).hexdigest()[:20]}"
