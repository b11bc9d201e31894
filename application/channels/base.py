"""The ``Channel`` port: the external rail that moves the money (card, wallets, bank transfer).

Adapters answer with one of three honest outcomes. ``unknown`` means the request may have been
acted on (a timeout or an error after sending): the payment becomes ``exception`` and its funds
stay held until the outcome is found out. Only an adapter that knows nothing was sent may answer
``failed`` for a transport error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

CHANNELS = ("internal", "card", "alipay", "wechat_pay", "bank_transfer")
WALLET_CHANNELS = ("alipay", "wechat_pay")


class ChannelOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ChannelResult:
    outcome: ChannelOutcome
    reference: str | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class ChargeRequest:
    """What a channel needs for one payment. ``secret`` (a card number, say) lives only in
    memory for the length of the call and never reaches an event, a projection or a log."""

    payment_id: UUID
    channel: str
    amount_minor: int
    currency: str
    payer: dict[str, Any]
    payee: dict[str, Any]
    secret: dict[str, str] = field(default_factory=dict, repr=False)


class Channel(Protocol):
    name: str

    async def execute(self, request: ChargeRequest) -> ChannelResult:
        """Move the money; the payment id is the channel's idempotency key."""
        ...

    # Optional: ``async def execute_batch(self, requests) -> list[ChannelResult]`` sends many
    # payments in one call (the batch engine uses it when present), and
    # ``async def verify(self, request) -> ChannelResult`` checks a beneficiary without moving
    # money (all-or-nothing batches).

    async def status(self, payment_id: UUID) -> ChannelResult | None:
        """What the channel knows of an earlier request, or None if it never saw it."""
        ...
