"""The batch engine (批量处理引擎): runs an approved batch's items under its rules.

One engine per batch across processes (lock.py). The engine streams the batch's item chunks in
processing order and works in groups of up to ``GROUP_MAX`` items:

1. decide, from recorded state only, what happens to each item of the group: sent, or failed
   without sending (stopped by the batch's stop rules, a dependency that did not succeed, no
   funds when the batch has no upfront funds check);
2. send the items concurrently to their channel (the item's payment id is the idempotency key);
3. save in one transaction: one ``Payment`` per item (in its outcome), one journal entry for
   the group (funding account debited from the batch's hold, clearing and payee accounts
   credited), the hold released for failed items, and the batch's progress.

Because step 1 depends only on what is recorded, a batch resumed after a crash forms the same
group again, resends it (the channel answers a repeated payment id with its first answer) and
records it once: no item is paid twice or skipped. Items with an unknown outcome (``exception``)
keep their funds held until they are resolved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

from application.batches.calendar import booking_date
from application.batches.lock import BatchLock
from application.batches.prediction import stop_reached
from application.batches.results import BatchResult
from application.channels.base import ChannelOutcome, ChannelResult, ChargeRequest
from application.ledger_access import ensure_system_account
from application.unit_of_work import UnitOfWork
from domain.accounts import Account, clearing_account_id
from domain.batch_items import CHUNK_SIZE, BatchChunk, BatchItem, chunk_id
from domain.batch_rules import BatchRules
from domain.batches import Batch, BatchStatus
from domain.errors import Conflict
from domain.ids import name_id
from domain.ledger import ENTRY_NAMESPACE, JournalEntry, Leg
from domain.payments import Payment, PaymentKind, batch_item_payment_id

if TYPE_CHECKING:
    from application.service import Payledger

log = logging.getLogger(__name__)

ENGINE_ACTOR = "system:batch-engine"
GROUP_MAX = 1_000
RATIO_GROUP_MAX = 100  # a failure ratio is checked at least every so many items
Progress = Callable[[BatchResult], None]
OUTCOME_OF = {
    ChannelOutcome.SUCCEEDED: "succeeded",
    ChannelOutcome.FAILED: "failed",
    ChannelOutcome.UNKNOWN: "exception",
}


class ItemOutcome(NamedTuple):
    """A named tuple: a group's 1,000 cross the pipe to the committer process, and a tuple
    pickles in a third of a frozen dataclass's time."""

    item: BatchItem
    attempt: int
    outcome: str  # succeeded | failed | exception
    code: str | None
    message: str | None
    reference: str | None
    sent_at: datetime
    completed_at: datetime


@dataclass(frozen=True)
class Group:
    start_seq: int
    start_retry: int
    next_seq: int
    retry_done: int
    items: list[tuple[BatchItem, int]]  # (item, attempt)
    retry: bool


class BatchEngine:
    def __init__(self, service: Payledger) -> None:
        self.service = service
        self._chunks: dict[tuple[UUID, int], BatchChunk] = {}

    # --- driving -------------------------------------------------------------------------------

    async def run(self, batch_id: UUID, progress: Progress | None = None) -> BatchResult | None:
        """Run the batch as far as it can go now; None if another process is running it."""
        lock = BatchLock(self.service.settings.store, batch_id)
        if not await asyncio.to_thread(lock.try_acquire):
            return None
        try:
            return await self._run(batch_id, progress)
        finally:
            self._chunks.clear()
            await asyncio.to_thread(lock.release)

    async def _run(self, batch_id: UUID, progress: Progress | None) -> BatchResult:
        while True:
            batch = await asyncio.to_thread(self._fresh, batch_id)
            if progress is not None:
                progress(BatchResult.of(batch))
            status = batch.current_status
            if status in (BatchStatus.APPROVED, BatchStatus.SCHEDULED):
                if not self._due(batch):
                    return BatchResult.of(batch)
                await self._start(batch)
                continue
            if status is not BatchStatus.PROCESSING:
                return BatchResult.of(batch)
            if _pipelines(batch) and await self._pipeline(batch, progress):
                continue  # from the batch as the pipeline left it
            await self._step(batch)

    def _fresh(self, batch_id: UUID) -> Batch:
        batch: Any = self.service.app.repository.get(batch_id)
        assert isinstance(batch, Batch)
        return batch

    def _due(self, batch: Batch) -> bool:
        return batch.run_on is None or batch.run_on <= self.service.clock.now().date()

    async def _start(self, batch: Batch) -> None:
        rules = BatchRules.from_record(batch.rules)
        if rules.all_or_nothing and batch.started_at is None:
            failures = await self._verify_all(batch)
            if failures:
                await self._commit("decide_abort", batch.id, failures)
                return
        await self._commit("decide_start", batch.id)

    async def _commit(self, method: str, *args: Any) -> Any:
        return await self.service.commit("batch_engine", method, *args)

    # --- one group -----------------------------------------------------------------------------

    async def _step(self, batch: Batch) -> None:
        rules = BatchRules.from_record(batch.rules)
        now = self.service.clock.now()
        run_date = booking_date(now, rules.cutoff_time, batch.currency)
        if run_date > now.date() and not batch.pending_retry_items:
            await self._commit("decide_defer", batch.id, run_date.isoformat())
            return
        group = await asyncio.to_thread(
            self._next_group, batch, rules, now, None, _reserved_end(batch)
        )
        if group is None:
            await self._commit("decide_finish", batch.id)
            return
        if isinstance(group, str):  # the rest is due later
            await self._commit("decide_defer", batch.id, group)
            return
        refused: set[int] = set()
        if not (rules.funds_check or rules.all_or_nothing or group.retry):
            refused = await self._reserve(batch, group)  # (retries are held when asked)
        to_send, outcomes = self._decide_without_sending(batch, rules, group, refused, now)
        outcomes += await self._send(batch, to_send)
        await self._commit("decide_record_group", batch.id, group, outcomes)

    async def _pipeline(self, batch: Batch, progress: Progress | None) -> bool:
        """Send the next group while the last one is being saved, as long as no decision
        depends on an outcome not saved yet: no stop rule, no dependency, funds held upfront.
        Stops at the first group that does not qualify (or at the end), saying whether it
        recorded any; ``_step`` goes on from there."""
        rules = BatchRules.from_record(batch.rules)
        start, saving = batch.next_seq, None
        try:
            while True:
                now = self.service.clock.now()
                if booking_date(now, rules.cutoff_time, batch.currency) > now.date():
                    return start != batch.next_seq
                group = await asyncio.to_thread(self._next_group, batch, rules, now, start)
                if not isinstance(group, Group) or any(
                    i.depends_on is not None for i, _a in group.items
                ):
                    return start != batch.next_seq
                to_send, outcomes = self._decide_without_sending(batch, rules, group, set(), now)
                outcomes += await self._send(batch, to_send)
                if saving is not None:
                    _report(progress, await saving)
                saving = asyncio.ensure_future(
                    self._commit("decide_record_group", batch.id, group, outcomes)
                )
                start = group.next_seq
        finally:
            if saving is not None:
                _report(progress, await saving)

    def _next_group(
        self,
        batch: Batch,
        rules: BatchRules,
        now: datetime,
        start: int | None = None,
        end: int | None = None,
    ) -> Group | str | None:
        """The next group of items (from ``start``, by default where the batch is), a date
        (ISO) the rest is due on, or None when done. ``end``: the group whose funds are held
        already (``GroupReserved``), rebuilt exactly as it was, whatever the day."""
        pending = batch.pending_retry_items
        if pending:
            items = [
                (self._item_at(batch, seq), attempt) for attempt, _i, seq in pending[:GROUP_MAX]
            ]
            return Group(
                batch.next_seq, batch.retry_done, batch.next_seq,
                batch.retry_done + len(items), items, retry=True,
            )  # fmt: skip
        limit = GROUP_MAX
        if rules.stop_after_failures is not None:
            failed = batch.counts.get("failed", 0)
            limit = max(1, rules.stop_after_failures - failed)
        if rules.max_failure_ratio is not None:
            # Checked after each group: of a tenth of the batch at most (a small batch item by
            # item, nearly), and never more than RATIO_GROUP_MAX.
            limit = min(limit, RATIO_GROUP_MAX, max(1, batch.item_count // 10))
        first = batch.next_seq if start is None else start
        if end is not None:
            fixed = [(self._item_at(batch, seq), 1) for seq in range(first, end)]
            return Group(first, batch.retry_done, end, batch.retry_done, fixed, retry=False)
        seq, today = first, now.date()
        chosen: list[tuple[BatchItem, int]] = []
        in_group: set[int] = set()
        while seq < batch.item_count and len(chosen) < limit:
            item = self._item_at(batch, seq)
            day = item.value_date
            if item.valid and day is not None and day > today and not batch.execute_now:
                if chosen:
                    break
                if rules.cutoff_time is not None:
                    day = booking_date(
                        datetime.combine(day, datetime.min.time(), now.tzinfo),
                        rules.cutoff_time, batch.currency,
                    )  # fmt: skip
                return day.isoformat()
            if item.depends_on is not None and item.depends_on in in_group:
                break
            chosen.append((item, 1))
            in_group.add(item.index)
            seq += 1
        if not chosen:
            return None
        return Group(first, batch.retry_done, seq, batch.retry_done, chosen, retry=False)

    def _item_at(self, batch: Batch, seq: int) -> BatchItem:
        number, offset = divmod(seq, CHUNK_SIZE)
        chunk = self._chunks.get((batch.id, number))
        if chunk is None:
            self._chunks.clear()  # one chunk in memory at a time (retries may jump around)
            found: Any = self.service.app.repository.get(chunk_id(batch.id, number))
            assert isinstance(found, BatchChunk)
            chunk = self._chunks[(batch.id, number)] = found
        return BatchItem.from_record(chunk.records[offset])  # type: ignore[attr-defined]

    def _decide_without_sending(
        self,
        batch: Batch,
        rules: BatchRules,
        group: Group,
        refused: set[int],
        now: datetime,
    ) -> tuple[list[tuple[BatchItem, int]], list[ItemOutcome]]:
        failed, processed = batch.counts.get("failed", 0), sum(batch.counts.values())
        stopped = not group.retry and stop_reached(rules, failed, processed)
        to_send: list[tuple[BatchItem, int]] = []
        outcomes: list[ItemOutcome] = []

        def fail(item: BatchItem, attempt: int, code: str, message: str) -> None:
            outcomes.append(ItemOutcome(item, attempt, "failed", code, message, None, now, now))

        for item, attempt in group.items:
            if not item.valid:
                continue  # listed as invalid since intake; never a payment
            dependency = None if item.depends_on is None else str(item.depends_on)
            if stopped:
                fail(item, attempt, "NARR", "not sent: the batch stopped under its stop rule")
            elif dependency is not None and batch.outcomes.get(dependency) != "succeeded":
                state = batch.outcomes.get(dependency, "not paid")
                fail(item, attempt, "NARR", f"not sent: item {dependency} it depends on {state}")
            elif item.index in refused:
                fail(item, attempt, "AM04", "not sent: the funding account cannot cover it")
            else:
                to_send.append((item, attempt))
        return to_send, outcomes

    async def _reserve(self, batch: Batch, group: Group) -> set[int]:
        """Without the upfront funds check: hold this group's funds first (kept if resumed)."""
        reservation = batch.reservation
        if reservation is None or (reservation["next_seq"], reservation["retry_done"]) != (
            group.start_seq, group.start_retry,
        ):  # fmt: skip
            amounts = [(i.index, i.amount_minor) for i, _a in group.items if i.valid]
            reservation = await self._commit(
                "decide_reserve_group", batch.id, group.start_seq, group.start_retry,
                group.next_seq, amounts,
            )  # fmt: skip
        return set(reservation["refused"])

    async def _send(self, batch: Batch, items: list[tuple[BatchItem, int]]) -> list[ItemOutcome]:
        """Every item of the group at its channel at once: channels concurrently, and a
        channel that takes many payments per call (``execute_batch``) gets one call."""
        by_channel: dict[str, list[tuple[BatchItem, int]]] = {}
        for item, attempt in items:
            by_channel.setdefault(item.channel, []).append((item, attempt))
        answers = await asyncio.gather(
            *(self._send_to(batch, name, chosen) for name, chosen in by_channel.items())
        )
        return [outcome for answer in answers for outcome in answer]

    async def _send_to(
        self, batch: Batch, name: str, items: list[tuple[BatchItem, int]]
    ) -> list[ItemOutcome]:
        sent_at = self.service.clock.now()
        requests = [self._request(batch, item, attempt) for item, attempt in items]
        if name == "internal":  # a book transfer: the ledger is the rail
            results = [
                ChannelResult(ChannelOutcome.SUCCEEDED, f"book_{r.payment_id.hex[:20]}")
                for r in requests
            ]
        else:
            channel = self.service.channels[name]
            many = getattr(channel, "execute_batch", None)
            calls = (
                [self._guarded(name, many(requests), len(requests))]
                if many is not None
                else [self._guarded(name, channel.execute(r), 1) for r in requests]
            )
            answers = await asyncio.gather(*calls)
            results = [result for answer in answers for result in answer]
        completed_at = self.service.clock.now()
        at = (sent_at, completed_at)
        return [
            ItemOutcome(item, attempt, OUTCOME_OF[r.outcome], r.code, r.message, r.reference, *at)
            for (item, attempt), r in zip(items, results, strict=True)
        ]

    def _request(self, batch: Batch, item: BatchItem, attempt: int) -> ChargeRequest:
        return ChargeRequest(
            payment_id=batch_item_payment_id(batch.id, item.index, attempt),
            channel=item.channel, amount_minor=item.amount_minor, currency=item.currency,
            payer={"type": "account", "account_id": batch.funding_account_id},
            payee=item.payee or {},
        )  # fmt: skip

    async def _guarded(self, name: str, call: Any, count: int) -> list[ChannelResult]:
        """The channel's answers, or ``unknown`` for each payment of a call that timed out or
        broke after sending: we cannot know what the channel did."""
        timeout_s = self.service.settings.channel_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                answer = await call
        except TimeoutError:
            message = f"no answer from {name} within {timeout_s:g} s"
            return [ChannelResult(ChannelOutcome.UNKNOWN, None, "channel_timeout", message)] * count
        except Exception as e:
            log.warning("channel %s raised %s for a batch call", name, type(e).__name__)
            unknown = ChannelResult(ChannelOutcome.UNKNOWN, None, "channel_error", type(e).__name__)
            return [unknown] * count
        return answer if isinstance(answer, list) else [answer]

    async def _verify_all(self, batch: Batch) -> dict[str, list[str]]:
        """All-or-nothing: ask each channel that can check a beneficiary before anything is
        sent; the items it would refuse sink the batch."""
        failures: dict[str, list[str]] = {}
        for seq in range(batch.item_count):
            item = await asyncio.to_thread(self._item_at, batch, seq)
            channel = self.service.channels.get(item.channel)
            verify = getattr(channel, "verify", None)
            if verify is None or not item.valid:
                continue
            result: ChannelResult = await verify(self._request(batch, item, 1))
            if result.outcome is ChannelOutcome.FAILED:
                failures[str(item.index)] = [result.code or "NARR", result.message or "refused"]
        return failures


def _reserved_end(batch: Batch) -> int | None:
    """Where the group whose funds are held (and which may have been sent) ends."""
    held = batch.reservation
    if held and (held["next_seq"], held["retry_done"]) == (batch.next_seq, batch.retry_done):
        return int(held["end_seq"])
    return None


def _pipelines(batch: Batch) -> bool:
    """Whether groups may be sent ahead of the previous group's save (``_pipeline``)."""
    rules = BatchRules.from_record(batch.rules)
    return (
        not batch.pending_retry_items
        and (rules.funds_check or rules.all_or_nothing)
        and rules.stop_after_failures is None
        and rules.max_failure_ratio is None
    )


def _report(progress: Progress | None, result: BatchResult) -> None:
    if progress is not None:
        progress(result)


def group_entry_id(batch_id: UUID, group: Group) -> UUID:
    where = f"{group.start_seq}/{group.start_retry}"
    return name_id(ENTRY_NAMESPACE, f"/batches/{batch_id}/groups/{where}")


def group_legs(batch: Batch, outcomes: list[ItemOutcome]) -> tuple[int, dict[UUID, int]]:
    """The group's debit of the funding account and its credits per account."""
    credits: dict[UUID, int] = {}
    for o in outcomes:
        if o.outcome != "succeeded":
            continue
        payee = o.item.payee or {}
        if payee.get("type") == "account":
            account = UUID(payee["account_id"])
        else:
            account = clearing_account_id(batch.tenant, o.item.channel, batch.currency)
        credits[account] = credits.get(account, 0) + o.item.amount_minor
    return sum(credits.values()), credits


def journal_entry(
    entry_id: UUID, batch: Batch, debit_minor: int, credits: dict[UUID, int]
) -> JournalEntry:
    legs = [Leg(UUID(batch.funding_account_id), -debit_minor)]
    legs += [Leg(account, amount) for account, amount in credits.items()]
    return JournalEntry(entry_id, batch.currency, tuple(legs))


def ensure_credit_accounts(
    uow: UnitOfWork, batch: Batch, credits: dict[UUID, int], channels: set[str]
) -> dict[UUID, Account]:
    accounts: dict[UUID, Account] = {}
    for account_id in credits:
        account = uow.get(account_id, Account)
        if account is None:
            for channel in channels:
                account = ensure_system_account(
                    uow, account_id, batch.tenant, batch.currency, channel
                )
                if account is not None:
                    break
        if account is None:
            raise Conflict(f"account {account_id} to credit is missing")
        accounts[account_id] = account
    return accounts


def item_payments(batch: Batch, outcomes: list[ItemOutcome], entry_id: UUID | None) -> list[Any]:
    """Each outcome's payment event (``Payment.record_batch_item``); what the group's items
    share is worked out once."""
    batch_id, funding = str(batch.id), batch.funding_account_id
    entry = str(entry_id) if entry_id else None
    tenant, client, currency, fingerprint = (
        batch.tenant,
        batch.client,
        batch.currency,
        batch.fingerprint,
    )
    kind = str(PaymentKind.PAYMENT)
    key_prefix = f"batch:{batch_id}:"
    clearing: dict[str, str] = {}
    events = []
    for o in outcomes:
        item = o.item
        payee = item.payee or {}
        succeeded = o.outcome == "succeeded"
        if payee.get("type") == "account":
            credit = payee["account_id"]
        else:
            credit = clearing.get(item.channel) or clearing.setdefault(
                item.channel, str(clearing_account_id(tenant, item.channel, currency))
            )
        retry_of = (
            None if o.attempt == 1
            else str(batch_item_payment_id(batch.id, item.index, o.attempt - 1))
        )  # fmt: skip
        fields = {
            "tenant": tenant, "kind": kind, "client": client,
            "idempotency_key": f"{key_prefix}{item.index}:{o.attempt}",
            "request_fingerprint": fingerprint, "amount_minor": item.amount_minor,
            "currency": currency, "channel": item.channel,
            "payer": {"type": "account", "account_id": funding},
            "payee": payee, "description": item.remittance,
            "metadata": {"end_to_end_id": item.end_to_end_id}, "batch_id": batch_id,
            "batch_item": {
                "index": item.index, "seq": item.seq, "end_to_end_id": item.end_to_end_id,
                "attempt": o.attempt, "retry_of": retry_of,
            },
            "code": o.code, "message": o.message, "channel_reference": o.reference,
            "entry_id": entry if succeeded else None,
            "legs": [[funding, -item.amount_minor], [credit, item.amount_minor]]
            if succeeded else None,
            "hold_account_id": funding if o.outcome == "exception" else None,
        }  # fmt: skip
        payment_id = batch_item_payment_id(batch.id, item.index, o.attempt)
        event = Payment.record_batch_item(
            payment_id=payment_id, fields=fields, outcome=o.outcome, sent_at=o.sent_at,
            completed_at=o.completed_at, actor=ENGINE_ACTOR,
        )  # fmt: skip
        events.append(event)
    return events
