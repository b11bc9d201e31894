"""Sandbox channels: realistic latency and deterministic triggers, no network.

Triggers (also in the README):
- card: 4242424242424242 succeeds; 4000000000000002 is declined (``card_declined``);
  4000000000009995 fails with ``insufficient_funds``; 4000000000000119 times out after sending
  (``exception``). Any other valid card succeeds.
- alipay / wechat_pay: payer id ``sandbox_declined`` is declined (``wallet_declined``);
  ``sandbox_timeout`` times out after sending; any other payer id succeeds.
- bank_transfer payouts: a beneficiary account number ending in 0004 is a closed account
  (``AC04``), ending in 0001 an incorrect account number (``AC01``), ending in 0119 times out;
  any other valid IBAN (e.g. DE89370400440532013000) succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
from uuid import UUID

from application.channels.base import ChannelOutcome, ChannelResult, ChargeRequest

DECLINED = "declined"
TIMEOUT = "timeout"

CARD_TRIGGERS: dict[str, tuple[str, str | None, str]] = {
    "4000000000000002": (DECLINED, "card_declined", "The card was declined."),
    "4000000000009995": (DECLINED, "insufficient_funds", "The card has insufficient funds."),
    "4000000000000119": (TIMEOUT, "channel_timeout", "The card network did not answer in time."),
}
WALLET_TRIGGERS: dict[str, tuple[str, str | None, str]] = {
    "sandbox_declined": (DECLINED, "wallet_declined", "The wallet declined the payment."),
    "sandbox_timeout": (TIMEOUT, "channel_timeout", "The wallet did not answer in time."),
}
# ISO 20022 external status reason codes for rejected credit transfers.
BANK_TRIGGERS: dict[str, tuple[str, str | None, str]] = {
    "0004": (DECLINED, "AC04", "Closed account number."),
    "0001": (DECLINED, "AC01", "Incorrect account number."),
    "0119": (TIMEOUT, "channel_timeout", "The bank did not answer in time."),
}


class SandboxChannel:
    """One sandbox rail; remembers what it did per payment id, as a provider would."""

    def __init__(self, name: str, latency_ms: int = 0) -> None:
        self.name = name
        self.latency_s = latency_ms / 1000
        self._seen: dict[UUID, ChannelResult] = {}

    async def execute(self, request: ChargeRequest) -> ChannelResult:
        if request.payment_id in self._seen:  # idempotent on our payment id
            return self._seen[request.payment_id]
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._answer(request)

    async def execute_batch(self, requests: list[ChargeRequest]) -> list[ChannelResult]:
        """Many payments in one call (a bank takes a file of transfers): one round trip."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return [self._seen.get(r.payment_id) or self._answer(r) for r in requests]

    def _answer(self, request: ChargeRequest) -> ChannelResult:
        reference = f"{self.name[:4]}_{hashlib.sha256(request.payment_id.bytes).hexdigest()[:20]}"
        verdict, code, message = self._trigger(request)
        if verdict == DECLINED:
            result = ChannelResult(ChannelOutcome.FAILED, reference, code, message)
        else:
            result = ChannelResult(ChannelOutcome.SUCCEEDED, reference)
        self._seen[request.payment_id] = result  # it happened, even if we answer "timeout"
        if verdict == TIMEOUT:
            return ChannelResult(ChannelOutcome.UNKNOWN, None, code, message)
        return result

    async def verify(self, request: ChargeRequest) -> ChannelResult:
        """Check a beneficiary before sending (account verification, for all-or-nothing
        batches): a closed or unknown account is refused, nothing is moved or remembered."""
        verdict, code, message = self._trigger(request)
        if verdict == DECLINED:
            return ChannelResult(ChannelOutcome.FAILED, None, code, message)
        return ChannelResult(ChannelOutcome.SUCCEEDED)

    async def status(self, payment_id: UUID) -> ChannelResult | None:
        return self._seen.get(payment_id)

    def _trigger(self, request: ChargeRequest) -> tuple[str, str | None, str]:
        if self.name == "card":
            return CARD_TRIGGERS.get(request.secret.get("card_number", ""), ("", None, ""))
        if self.name in ("alipay", "wechat_pay"):
            return WALLET_TRIGGERS.get(str(request.payer.get("payer_id", "")), ("", None, ""))
        if self.name == "bank_transfer":
            account_suffix = str(request.payee.get("iban", ""))[-4:]
            return BANK_TRIGGERS.get(account_suffix, ("", None, ""))
        return ("", None, "")
