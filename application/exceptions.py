"""The exception workflow: payments whose outcome is unknown are found out, never left unknown.

A payment is ``exception`` when its channel call timed out or broke after sending, and stays
``submitted`` when its process died between the intent and the outcome (an abandoned intent).
Either way its funds stay held. The resolver asks the channel (``status``, outside any
transaction) and records what it says through the committer, in one atomic save with the
postings or the release of the hold; each decision re-reads the payment and acts only while the
outcome is still unknown, so two resolvers racing (or a resolver and an operator) post once.

* ``succeeded``: postings as the payment would have made them (a batch item's debit comes from
  its batch's hold on the funding account, as the batch engine's do), and the hold consumed;
* ``failed``: the hold released (the payment's own, or its part of the batch's);
* never seen by the channel: an exception older than the channel time-out plus the grace fails
  ``not_received_by_channel`` (nothing was charged); an abandoned ``submitted`` one becomes
  ``exception`` first, so that a client retry taking it over meanwhile cannot be contradicted;
* no answer, an error, or an answer the channel does not know yet: still open, asked again
  with back-off (in memory, per payment: 1 s doubling to 5 minutes);
* still open ``PAYLEDGER_EXCEPTION_DEADLINE_S`` after it became unknown: flagged once
  (``ExceptionFlagged``), no longer asked about, and left to reconciliation.

An operator (or reconciliation) resolves one by hand with a reason: ``resolve_manually``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from application.channels.base import ChannelOutcome, ChannelResult
from application.ledger_access import ensure_entry_accounts
from application.payments import ABANDON_GRACE
from application.results import PaymentResult
from application.unit_of_work import UnitOfWork
from domain.accounts import Account
from domain.batches import Batch
from domain.errors import LedgerInvariantBroken, PaymentNotFound, ValidationError
from domain.ledger import JournalEntry
from domain.payments import (
    RESOLUTION_HOWS,
    RESOLVED_OUTCOMES,
    Payment,
    PaymentState,
    check_reason,
)
from domain.posting import post_entry, settlement_entry

if TYPE_CHECKING:
    from application.service import Payledger

log = logging.getLogger(__name__)

RESOLVER_ACTOR = "system:exception-resolver"
BACKOFF_FIRST = timedelta(seconds=1)
BACKOFF_MAX = timedelta(minutes=5)
PAGE = 500  # candidates read from the view per query
PASS_MAX = 10_000  # candidates looked at per pass; the next pass takes the rest
CONCURRENCY = 16  # channel status queries in flight at once
REFERENCE_MAX_LENGTH = 100
NOT_RECEIVED = "not_received_by_channel"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A payment whose outcome is unknown, as the payments view has it (it may lag: every
    decision re-reads the payment)."""

    payment_id: UUID
    tenant: str
    state: str  # exception | submitted
    channel: str
    since: datetime  # when its outcome became unknown (a submitted one: its last step)


class OpenPayments(Protocol):
    """Where the resolver finds its candidates (projections/exception_queries.py)."""

    def open_payments(
        self, *, tenant: str | None, after: UUID | None, limit: int
    ) -> list[Candidate]:
        """Unflagged payments in ``exception`` or ``submitted``, by id after ``after``."""
        ...


@dataclass(frozen=True)
class Resolution:
    """What one resolution did: ``succeeded``/``failed`` (resolved now), ``open`` (still
    unknown), ``flagged``, or ``final`` (resolved already: nothing done)."""

    result: str
    payment: PaymentResult


@dataclass
class ResolverPass:
    """The counts of one pass (or of several, with ``--until-done``)."""

    succeeded: int = 0
    failed: int = 0
    open: int = 0  # still unknown: asked without an answer, or not due yet
    flagged: int = 0  # past the deadline this pass: left to reconciliation
    asked: int = 0  # channel status queries made
    next_due: datetime | None = field(default=None, compare=False)  # the earliest open one

    def counts(self) -> dict[str, int]:
        return {
            "succeeded": self.succeeded, "failed": self.failed, "open": self.open,
            "flagged": self.flagged, "asked": self.asked,
        }  # fmt: skip

    def _due_at(self, when: datetime) -> None:
        if self.next_due is None or when < self.next_due:
            self.next_due = when


class ExceptionHandlers:
    def __init__(self, service: Payledger) -> None:
        self.service = service
        # Set by the interface that runs passes (the server's lifespan, the CLI).
        self.view: OpenPayments | None = None
        self._tries: dict[UUID, tuple[int, datetime]] = {}  # payment -> (asked, next due)

    # --- thresholds ----------------------------------------------------------------------------

    @property
    def settle_after(self) -> timedelta:
        """How long an exception is left before the channel is asked (and the least age at
        which "never seen" means "never sent"): the channel time-out plus the grace."""
        return timedelta(milliseconds=self.service.settings.channel_timeout_ms) + ABANDON_GRACE

    @property
    def abandoned_after(self) -> timedelta:
        """How long a ``submitted`` payment is left to its sender (or to its client's retry,
        which can send it again: the resolver can only ask) before the resolver takes it."""
        configured = timedelta(seconds=self.service.settings.exception_abandoned_after_s)
        return max(configured, self.settle_after)

    @property
    def deadline(self) -> timedelta:
        return timedelta(seconds=self.service.settings.exception_deadline_s)

    # --- commands ------------------------------------------------------------------------------

    async def resolve_from_channel(self, payment_id: UUID) -> Resolution:
        """Ask the payment's channel what became of it and record the answer (if any)."""
        payment = await asyncio.to_thread(self.service.load_payment, payment_id)
        if payment is None:
            raise PaymentNotFound(f"payment {payment_id} does not exist")
        if not payment.outcome_unknown:
            return Resolution("final", PaymentResult.of(payment))
        known, answer = await self._ask(payment)
        if not known or (answer is not None and answer.outcome is ChannelOutcome.UNKNOWN):
            return Resolution("open", PaymentResult.of(payment))
        resolution: Resolution = await self.service.commit(
            "exceptions", "decide_channel_answer", payment_id, answer
        )
        return resolution

    async def resolve_manually(
        self,
        tenant: str,
        payment_id: UUID,
        outcome: str,
        reason: str,
        actor: str,
        how: str = "manual",
        channel_reference: str | None = None,
    ) -> PaymentResult:
        """An operator (``how="manual"``) or reconciliation (``how="reconciliation"``) says
        what the outcome was, and why. Raises ``PaymentNotFound`` (unknown, or another
        tenant's), ``NotAnException`` (409: not in exception), ``ValidationError``."""
        channel_reference = channel_reference or None  # an empty reference is none
        _check_manual(outcome, how, reason, channel_reference)
        result: PaymentResult = await self.service.commit(
            "exceptions", "decide_manual", tenant, payment_id, outcome, reason, actor, how,
            channel_reference,
        )  # fmt: skip
        return result

    async def run_once(
        self, now: datetime | None = None, *, tenant: str | None = None
    ) -> ResolverPass:
        """One pass over the open exceptions (of ``tenant``, or all): ask the channel for
        those due, flag those past the deadline. Returns its counts."""
        now = now or self.service.clock.now()
        done = ResolverPass()
        candidates = await asyncio.to_thread(self._candidates, tenant)
        if tenant is None:  # forget what was resolved elsewhere (here, on the loop's thread)
            seen = {c.payment_id for c in candidates}
            for payment_id in [p for p in self._tries if p not in seen]:
                del self._tries[payment_id]
        due = self._due(candidates, now, done)
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(candidate: Candidate) -> None:
            async with limit:
                await self._resolve_one(candidate, now, done)

        await asyncio.gather(*(one(c) for c in due))
        return done

    async def run_until_done(
        self,
        timeout_s: float,
        *,
        tenant: str | None = None,
        before_pass: Callable[[], object] | None = None,
        after_pass: Callable[[ResolverPass], object] | None = None,
    ) -> ResolverPass:
        """Passes until nothing is left open (or ``timeout_s``), each when the next one is
        due. ``before_pass`` brings the view up to date (the CLI's, which no server follows)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        total = ResolverPass()
        while True:
            if before_pass is not None:
                await asyncio.to_thread(before_pass)
            one = await self.run_once(tenant=tenant)
            if after_pass is not None:
                after_pass(one)
            for name in ("succeeded", "failed", "flagged", "asked"):
                setattr(total, name, getattr(total, name) + getattr(one, name))
            total.open, total.next_due = one.open, one.next_due
            left = until - loop.time()
            if one.open == 0 or left <= 0:
                return total
            wait_s = 1.0
            if one.next_due is not None:
                wait_s = (one.next_due - self.service.clock.now()).total_seconds()
            await asyncio.sleep(min(max(wait_s, 0.05), left))

    async def run_forever(self, interval_s: float) -> None:
        """The server's resolver: a pass at once (what a restart left), then every
        ``interval_s``."""
        while True:
            try:
                done = await self.run_once()
                if done.succeeded or done.failed or done.flagged:
                    log.info("exception resolver: %s", done.counts())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the exception resolver failed a pass; it tries again")
            await asyncio.sleep(interval_s)

    # --- a pass --------------------------------------------------------------------------------

    def _candidates(self, tenant: str | None) -> list[Candidate]:
        if self.view is None:
            raise RuntimeError("no view of open payments: set service.exceptions.view")
        found: list[Candidate] = []
        after = None
        while len(found) < PASS_MAX:
            page = self.view.open_payments(tenant=tenant, after=after, limit=PAGE)
            found += page
            if len(page) < PAGE:
                break
            after = page[-1].payment_id
        return found

    def _due(
        self, candidates: list[Candidate], now: datetime, done: ResolverPass
    ) -> list[Candidate]:
        due = []
        for c in candidates:
            age = now - c.since
            if c.state == PaymentState.SUBMITTED:
                if age > self.abandoned_after:
                    due.append(c)  # not an exception yet: not counted as open until asked
                continue
            if age >= self.deadline:
                due.append(c)  # asked once more, then flagged if still unknown
                continue
            first = c.since + self.settle_after
            asked = self._tries.get(c.payment_id)
            when = max(first, asked[1]) if asked else first
            if when <= now:
                due.append(c)
            else:
                done.open += 1
                done._due_at(when)
        return due

    async def _resolve_one(self, c: Candidate, now: datetime, done: ResolverPass) -> None:
        done.asked += 1
        try:
            resolution = await self.resolve_from_channel(c.payment_id)
            if resolution.result == "open" and now - c.since >= self.deadline:
                resolution = await self.service.commit(
                    "exceptions", "decide_flag", c.payment_id, int(self.deadline.total_seconds())
                )
        except Exception:
            log.exception("resolving payment %s failed; it is asked again later", c.payment_id)
            resolution = None
        if resolution is not None and resolution.result in ("succeeded", "failed", "flagged"):
            setattr(done, resolution.result, getattr(done, resolution.result) + 1)
            self._tries.pop(c.payment_id, None)
        elif resolution is not None and resolution.result == "final":
            self._tries.pop(c.payment_id, None)
        else:
            asked = self._tries.get(c.payment_id, (0, now))[0] + 1
            when = now + min(BACKOFF_FIRST * 2 ** (asked - 1), BACKOFF_MAX)
            self._tries[c.payment_id] = (asked, when)
            done.open += 1
            done._due_at(when)

    async def _ask(self, payment: Payment) -> tuple[bool, ChannelResult | None]:
        """(True, the channel's answer or None if it never saw the payment), or (False, None)
        when it could not tell (no such channel, a time-out, an error)."""
        channel = self.service.channels.get(payment.channel)
        if channel is None:
            return False, None
        timeout_s = self.service.settings.channel_timeout_ms / 1000
        try:
            return True, await asyncio.wait_for(channel.status(payment.id), timeout_s)
        except Exception as e:  # the channel could not tell us: ask again later
            log.warning("status of payment %s at %s: %s", payment.id, payment.channel,
                        type(e).__name__)  # fmt: skip
            return False, None

    # --- decisions (run by the committer, one atomic save each) --------------------------------

    def decide_channel_answer(
        self, payment_id: UUID, answer: ChannelResult | None, uow: UnitOfWork
    ) -> Resolution:
        payment = uow.get(payment_id, Payment)
        if payment is None:
            raise PaymentNotFound(f"payment {payment_id} vanished")
        if not payment.outcome_unknown:
            return Resolution("final", PaymentResult.of(payment))  # resolved by someone else
        now, actor = uow.now, RESOLVER_ACTOR
        submitted = payment.current_state is PaymentState.SUBMITTED
        if submitted and not payment.is_abandoned(now, self.abandoned_after):
            return Resolution("open", PaymentResult.of(payment))  # its sender is at work
        if answer is None and submitted:
            payment.mark_exception(
                "intent_abandoned", "its process stopped before recording the outcome, and "
                "the channel has no record of it yet", at=now, actor=actor,
            )  # fmt: skip
            return Resolution("open", PaymentResult.of(payment))
        if answer is None:
            if now - payment.unknown_since <= self.settle_after:
                return Resolution("open", PaymentResult.of(payment))  # it may still arrive
            self._fail(
                uow, payment, "channel_status", f"{payment.channel} has no record of it",
                actor, code=NOT_RECEIVED,
                message="the channel never received the payment: nothing was charged",
            )  # fmt: skip
        elif answer.outcome is ChannelOutcome.SUCCEEDED:
            reason = f"{payment.channel} status: succeeded"
            self._succeed(uow, payment, "channel_status", reason, actor, answer.reference)
        elif answer.outcome is ChannelOutcome.FAILED:
            self._fail(
                uow, payment, "channel_status", f"{payment.channel} status: failed", actor,
                code=answer.code or "channel_failed",
                message=answer.message or "the channel refused it",
                reference=answer.reference,
            )  # fmt: skip
        else:
            return Resolution("open", PaymentResult.of(payment))
        return Resolution(payment.state, PaymentResult.of(payment))

    def decide_manual(
        self,
        tenant: str,
        payment_id: UUID,
        outcome: str,
        reason: str,
        actor: str,
        how: str,
        channel_reference: str | None,
        uow: UnitOfWork,
    ) -> PaymentResult:
        _check_manual(outcome, how, reason, channel_reference)
        payment = uow.get(payment_id, Payment)
        if payment is None or payment.tenant != tenant:
            raise PaymentNotFound(f"payment {payment_id} does not exist")
        payment.check_resolvable(uow.now, self.abandoned_after)
        if outcome == "succeeded":
            self._succeed(uow, payment, how, reason, actor, channel_reference)
        else:
            code = "resolved_by_reconciliation" if how == "reconciliation" else "resolved_manually"
            message = f"resolved as failed ({how}): {reason}"
            self._fail(uow, payment, how, reason, actor, code, message, channel_reference)
        return PaymentResult.of(payment)

    def decide_flag(self, payment_id: UUID, deadline_s: int, uow: UnitOfWork) -> Resolution:
        payment = uow.get(payment_id, Payment)
        if payment is None:
            raise PaymentNotFound(f"payment {payment_id} vanished")
        if not payment.outcome_unknown or payment.is_flagged:
            return Resolution("final", PaymentResult.of(payment))
        if uow.now - payment.unknown_since < timedelta(seconds=deadline_s):
            return Resolution("open", PaymentResult.of(payment))  # became unknown again lately
        payment.flag_exception(deadline_s, at=uow.now, actor=RESOLVER_ACTOR)
        return Resolution("flagged", PaymentResult.of(payment))

    # --- recording an outcome ------------------------------------------------------------------

    def _succeed(
        self,
        uow: UnitOfWork,
        payment: Payment,
        how: str,
        reason: str,
        actor: str,
        reference: str | None,
    ) -> None:
        """The postings the payment would have made, its hold consumed, then the outcome."""
        payment.check_resolvable(uow.now, self.abandoned_after)
        entry = settlement_entry(payment)
        accounts = ensure_entry_accounts(uow, payment, entry)
        if payment.batch_item is not None:
            _post_from_batch_hold(entry, accounts, payment, at=uow.now, actor=actor)
            _batch_item_resolved(uow, payment, "succeeded", actor, None, reference)
        else:
            post_entry(entry, accounts, payment.id, at=uow.now, actor=actor)
        payment.resolve_exception(
            "succeeded", how=how, reason=reason, at=uow.now, actor=actor,
            abandoned_after=self.abandoned_after, entry=entry, channel_reference=reference,
        )  # fmt: skip

    def _fail(
        self,
        uow: UnitOfWork,
        payment: Payment,
        how: str,
        reason: str,
        actor: str,
        code: str,
        message: str,
        reference: str | None = None,
    ) -> None:
        """The hold released (the payment's own, or its part of its batch's), then the
        outcome."""
        payment.check_resolvable(uow.now, self.abandoned_after)
        if payment.hold_account_id is not None:
            holder = uow.get(UUID(payment.hold_account_id), Account)
            if holder is None:
                raise LedgerInvariantBroken(f"account {payment.hold_account_id} is missing")
            if payment.batch_item is not None:
                assert payment.batch_id is not None
                holder.release_part(
                    UUID(payment.batch_id), payment.amount_minor, at=uow.now, actor=actor
                )
                _batch_item_resolved(uow, payment, "failed", actor, code, reference)
            else:
                holder.release(payment.id, at=uow.now, actor=actor)
        payment.resolve_exception(
            "failed", how=how, reason=reason, at=uow.now, actor=actor,
            abandoned_after=self.abandoned_after, channel_reference=reference, code=code,
            message=message,
        )  # fmt: skip


def _batch_item_resolved(
    uow: UnitOfWork, payment: Payment, outcome: str, actor: str, code: str | None,
    reference: str | None,
) -> None:  # fmt: skip
    """The item's batch counts it under its outcome now, in the same save."""
    assert payment.batch_id is not None and payment.batch_item is not None
    batch = uow.get(UUID(payment.batch_id), Batch)
    if batch is None:
        raise LedgerInvariantBroken(f"batch {payment.batch_id} of {payment.id} is missing")
    item = payment.batch_item
    batch.record_item_resolved(
        item["index"], item["attempt"], outcome, payment.amount_minor, at=uow.now, actor=actor,
        code=code, channel_reference=reference,
    )  # fmt: skip


def _post_from_batch_hold(
    entry: JournalEntry,
    accounts: Mapping[UUID, Account],
    payment: Payment,
    *,
    at: datetime,
    actor: str,
) -> None:
    """A batch item's postings: the funding account pays from the batch's one hold (its key is
    the batch id), as the batch engine's group entries do; the payee side is credited."""
    assert payment.batch_id is not None and payment.hold_account_id is not None
    for leg in entry.legs:
        if accounts[leg.account_id].currency != entry.currency:
            raise LedgerInvariantBroken(f"account {leg.account_id} is not {entry.currency}")
        if leg.is_debit and str(leg.account_id) != payment.hold_account_id:
            raise LedgerInvariantBroken(f"batch item {payment.id} pays from another account")
    for leg in entry.legs:
        account = accounts[leg.account_id]
        if leg.is_debit:
            account.debit_from_hold(
                UUID(payment.batch_id), entry.entry_id, -leg.amount_minor, at=at, actor=actor
            )
        else:
            account.credit(payment.id, entry.entry_id, leg.amount_minor, at=at, actor=actor)


def _check_manual(outcome: str, how: str, reason: str, reference: str | None) -> None:
    if outcome not in RESOLVED_OUTCOMES:
        raise ValidationError.single("outcome", "must be succeeded or failed")
    if how not in RESOLUTION_HOWS or how == "channel_status":
        raise ValidationError.single("how", "must be manual or reconciliation")
    check_reason(reason)
    if reference is not None and not 0 < len(reference) <= REFERENCE_MAX_LENGTH:
        raise ValidationError.single(
            "channel_reference", f"must be 1 to {REFERENCE_MAX_LENGTH} characters"
        )
