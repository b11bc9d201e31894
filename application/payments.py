"""Real-time payment handlers (GUIDE.md section 2).

1. Decide and save the intent: the payment, its rules check and the payer's reservation, in one
   atomic save. A book transfer (``internal``) has no network call, so it settles in that save.
2. Call the channel outside any transaction.
3. Decide and save the outcome: postings and ``succeeded``, or a release and ``failed``, or
   ``exception`` with the hold kept, in a second atomic save.
A crash between 1 and 3 leaves a ``submitted`` payment for the exception resolver: nothing is lost
and, because the payment id is the channel's idempotency key, nothing is paid twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING
from uuid import UUID

from application.channels.base import Channel, ChannelOutcome, ChannelResult, ChargeRequest
from application.drafts import PaymentDraft
from application.ledger_access import check_party, ensure_entry_accounts
from application.results import PaymentResult
from application.unit_of_work import UnitOfWork
from domain.accounts import Account
from domain.errors import IdempotencyKeyReused, PaymentNotFound
from domain.money import format_amount
from domain.payments import Payment, PaymentKind
from domain.posting import post_entry, settlement_entry

if TYPE_CHECKING:
    from application.service import Payledger

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.025
ABANDON_GRACE = timedelta(seconds=5)


class Next(Enum):
    DONE = "done"  # final (or replayed): answer now
    SEND = "send"  # intent saved: call the channel
    WAIT = "wait"  # the same request is in flight elsewhere: wait for it
    TAKE_OVER = "take_over"  # the same request was left submitted by a process that died


@dataclass(frozen=True)
class Begun:
    next: Next
    result: PaymentResult


class PaymentHandlers:
    def __init__(self, service: Payledger) -> None:
        self.service = service

    async def execute(self, draft: PaymentDraft) -> PaymentResult:
        # The decision never needs the card number: keep it out of the committer's hands.
        begun = await self.service.commit("payments", "decide_intent", replace(draft, secret={}))
        if begun.next is Next.DONE:
            return begun.result
        if begun.next is Next.WAIT:
            finished = await self._wait_until_done(draft.payment_id)
            if finished is not None:
                return finished
        # SEND, or TAKE_OVER: the same request found submitted and abandoned (its process died
        # after saving the intent). The channel deduplicates on our payment id, so sending again
        # never pays twice, and the outcome is recorded only if the payment is still submitted.
        outcome = await self._call_channel(draft)
        result = await self.service.commit("payments", "decide_outcome", draft.payment_id, outcome)
        return replace(result, replayed=begun.next is not Next.SEND)

    # --- step 1 --------------------------------------------------------------------------------

    def decide_intent(self, draft: PaymentDraft, uow: UnitOfWork) -> Begun:
        existing = uow.get_if_known(draft.payment_id, Payment)
        if existing is not None:
            return self._replay(existing, draft, uow)
        at, actor = uow.now, draft.client
        # Requested when the request arrived: time queued for the committer is latency too.
        payment = Payment.request(
            payment_id=draft.payment_id, tenant=draft.tenant, kind=draft.kind,
            client=draft.client, idempotency_key=draft.idempotency_key,
            request_fingerprint=draft.fingerprint, amount_minor=draft.amount_minor,
            currency=draft.currency, channel=draft.channel, payer=draft.payer, payee=draft.payee,
            description=draft.description, metadata=draft.metadata, at=draft.received_at,
            actor=actor,
        )  # fmt: skip
        uow.add(payment)
        payer, _payee, refusal = self._check_rules(uow, draft)
        if refusal is not None:
            payment.reject(*refusal, at=at, actor=actor)
            return Begun(Next.DONE, PaymentResult.of(payment))
        if draft.channel == "internal":
            # No network call: reserve and settle in this one save, so no separate hold.
            payment.mark_reserved(None, at=at, actor=actor)
            payment.mark_submitted(at=at, actor=actor)
            self._settle(uow, payment, payment.id.hex[:24], at, actor)
            return Begun(Next.DONE, PaymentResult.of(payment))
        if payer is not None:
            payer.reserve(payment.id, draft.amount_minor, at=at, actor=actor)
        payment.mark_reserved(payer.id if payer else None, at=at, actor=actor)
        payment.mark_submitted(at=at, actor=actor)
        return Begun(Next.SEND, PaymentResult.of(payment))

    def _replay(self, existing: Payment, draft: PaymentDraft, uow: UnitOfWork) -> Begun:
        if existing.request_fingerprint != draft.fingerprint:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {draft.idempotency_key!r} was already used for a different "
                "request; use a new key for a new payment"
            )
        if existing.is_in_flight:
            abandoned = uow.now - existing.modified_on > self._abandoned_after()
            step = Next.TAKE_OVER if abandoned else Next.WAIT
            return Begun(step, PaymentResult.of(existing, replayed=True))
        return Begun(Next.DONE, PaymentResult.of(existing, replayed=True))

    def _check_rules(
        self, uow: UnitOfWork, draft: PaymentDraft
    ) -> tuple[Account | None, Account | None, tuple[str, str] | None]:
        system_payer_ok = draft.kind is PaymentKind.DEPOSIT
        payer, refusal = check_party(uow, draft, draft.payer, "payer", system_ok=system_payer_ok)
        if refusal is not None:
            return None, None, refusal
        payee, refusal = check_party(uow, draft, draft.payee, "payee", system_ok=False)
        if refusal is not None:
            return None, None, refusal
        if payer is not None and payee is not None and payer.id == payee.id:
            return None, None, ("same_account", "payer and payee are the same account")
        if payer is not None and not payer.has_sufficient_funds(draft.amount_minor):
            # Refusing writes nothing, so a stale cached balance would never conflict: re-read.
            payer = uow.reload(payer.id, Account)
            assert payer is not None
            if not payer.has_sufficient_funds(draft.amount_minor):
                available = format_amount(payer.available_minor or 0, payer.currency)
                wanted = format_amount(draft.amount_minor, draft.currency)
                message = (
                    f"payer account has {available} {payer.currency} available, needs {wanted}"
                )
                return None, None, ("insufficient_funds", message)
        return payer, payee, None

    # --- step 2 --------------------------------------------------------------------------------

    async def _call_channel(self, draft: PaymentDraft) -> ChannelResult:
        channel: Channel = self.service.channels[draft.channel]
        request = ChargeRequest(
            payment_id=draft.payment_id, channel=draft.channel, amount_minor=draft.amount_minor,
            currency=draft.currency, payer=draft.payer, payee=draft.payee, secret=draft.secret,
        )  # fmt: skip
        timeout_s = self.service.settings.channel_timeout_ms / 1000
        try:
            return await asyncio.wait_for(channel.execute(request), timeout_s)
        except TimeoutError:
            message = f"no answer from {draft.channel} within {timeout_s:g} s"
            return ChannelResult(ChannelOutcome.UNKNOWN, code="channel_timeout", message=message)
        except Exception as e:  # after sending we cannot know: honest "exception", never "failed"
            log.warning(
                "channel %s raised %s for payment %s",
                draft.channel,
                type(e).__name__,
                draft.payment_id,
            )
            return ChannelResult(
                ChannelOutcome.UNKNOWN, code="channel_error", message=type(e).__name__
            )

    # --- step 3 --------------------------------------------------------------------------------

    def decide_outcome(
        self, payment_id: UUID, outcome: ChannelResult, uow: UnitOfWork
    ) -> PaymentResult:
        payment = uow.get(payment_id, Payment)
        if payment is None:
            raise PaymentNotFound(f"payment {payment_id} vanished")
        if payment.state != "submitted":
            return PaymentResult.of(payment)  # already resolved by someone else
        at, actor = uow.now, payment.client
        if outcome.outcome is ChannelOutcome.SUCCEEDED:
            self._settle(uow, payment, outcome.reference or "", at, actor)
        elif outcome.outcome is ChannelOutcome.FAILED:
            if payment.hold_account_id is not None:
                holder = uow.get(UUID(payment.hold_account_id), Account)
                assert holder is not None
                holder.release(payment.id, at=at, actor=actor)
            payment.mark_failed(
                outcome.code or "channel_failed", outcome.message or "the channel refused it",
                at=at, actor=actor, channel_reference=outcome.reference,
            )  # fmt: skip
        else:
            payment.mark_exception(
                outcome.code or "channel_unknown", outcome.message or "outcome unknown",
                at=at, actor=actor,
            )  # fmt: skip
        return PaymentResult.of(payment)

    def _settle(
        self, uow: UnitOfWork, payment: Payment, reference: str, at: datetime, actor: str
    ) -> None:
        entry = settlement_entry(payment)
        accounts = ensure_entry_accounts(uow, payment, entry)
        post_entry(entry, accounts, payment.id, at=at, actor=actor)
        payment.mark_succeeded(reference, entry, at=at, actor=actor)

    # --- duplicates in flight ------------------------------------------------------------------

    def _abandoned_after(self) -> timedelta:
        """A payment still submitted this long after its last event has lost its process:
        the sender would have recorded an outcome (at worst ``exception``) by then."""
        return timedelta(milliseconds=self.service.settings.channel_timeout_ms) + ABANDON_GRACE

    async def _wait_until_done(self, payment_id: UUID) -> PaymentResult | None:
        """The payment once its sender has finished it, or None if it never does."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self._abandoned_after().total_seconds()
        while loop.time() < until:
            await asyncio.sleep(POLL_INTERVAL_S)
            payment = await asyncio.to_thread(self.service.load_payment, payment_id)
            if payment is not None and not payment.is_in_flight:
                return replace(PaymentResult.of(payment), replayed=True)
        return None
