"""Reconciliation runs: import a channel statement, match it against the ledger, record results.

    run = await service.reconciliations.run(cmd, principal, lines, matcher_factory)

0. The statement is read and staged by the matcher before anything is recorded.
1. ``decide_start`` names the run by the statement's SHA-256: a statement imported before
   answers with the earlier run; one whose process died mid-way is run again as a new attempt.
2. The matcher (``projections.reconciliation_matching``: it reads the views, so the interface
   hands it in) streams the results; they are saved as ``ReconciliationChunk``s straight to the
   event store, a few thousand items per event, so memory stays bounded.
3. ``decide_complete`` records the totals and balances: the run is ``completed``.

Discrepancies are then decided item by item (``decide_annotate``, ``propose_correction`` then
``decide_approve`` by another person, and ``resolve_item_exception`` through the exception
workflow).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from application.commands import Principal
from application.unit_of_work import UnitOfWork
from domain.accounts import Account, AccountKind, clearing_account_id
from domain.errors import Conflict, NotFound, ValidationError
from domain.ledger import transfer
from domain.posting import post_entry
from domain.reconciliations import (
    CATEGORIES,
    PAYOUT_CHANNELS,
    RESULT_CHUNK,
    ItemNotDecidable,
    Reconciliation,
    ReconciliationChunk,
    reconciliation_id_for,
    suspense_account_id,
)

if TYPE_CHECKING:
    from application.service import Payledger

STALE_AFTER = timedelta(minutes=10)  # a run still "running" this long after it began has died
SAVE_CHUNKS = 4  # result chunks per write transaction (20,000 items)
SYSTEM_ACTOR = "system"
CHANNELS_RECONCILED = ("card", "alipay", "wechat_pay", "bank_transfer")


class ReconciliationNotFound(NotFound):
    code = "reconciliation_not_found"


class ReconciliationInProgress(Conflict):
    code = "reconciliation_in_progress"


@dataclass(frozen=True)
class StartReconciliation:
    channel: str
    period_start: date
    period_end: date
    file_sha256: str
    file_name: str | None
    file_format: str
    file_size: int
    tolerance_days: int = 1
    timing_window_minutes: int = 10

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS_RECONCILED:
            raise ValidationError.single(
                "channel", f"must be one of {', '.join(CHANNELS_RECONCILED)}", "unknown_channel"
            )
        if self.period_end < self.period_start:
            raise ValidationError.single(
                "period_end", "must not be before period_start", "invalid_period"
            )
        if (self.period_end - self.period_start).days > 366:
            raise ValidationError.single("period_end", "a period is at most 366 days", "too_long")
        if not 0 <= self.tolerance_days <= 31:
            raise ValidationError.single("tolerance_days", "must be 0 to 31", "out_of_range")
        if not 0 <= self.timing_window_minutes <= 1440:
            raise ValidationError.single(
                "timing_window_minutes", "must be 0 to 1440", "out_of_range"
            )


CORRECTABLE = frozenset(
    {"missing_in_ledger", "missing_in_statement", "amount_mismatch", "duplicate_in_statement"}
)


def correction_amount(item: dict[str, Any], channel: str) -> int:
    """The correcting entry that makes the ledger agree with the statement for one item,
    signed as the clearing account sees it: > 0 debits clearing (the channel owes us more than
    we recorded), < 0 credits it. 0: nothing to correct."""
    category = item["category"]
    if category not in CORRECTABLE:
        return 0
    statement = item["statement_amount_minor"] or 0
    ledger = item["ledger_amount_minor"] or 0
    if category == "missing_in_ledger" or category == "duplicate_in_statement":
        ledger = 0
    elif category == "missing_in_statement":
        statement = 0
    direction = item.get("direction") or ("debit" if channel in PAYOUT_CHANNELS else "credit")
    difference = statement - ledger
    return difference if direction == "credit" else -difference


def period_of(
    start: str | None, end: str | None, lines: Callable[[], Iterable[Any]]
) -> tuple[date, date]:
    """The period a statement covers: the dates given (``YYYY-MM-DD``, or an ISO time whose
    date is taken), else the statement's own first and last booking dates (one pass over
    ``lines()``)."""
    first, last = _day(start, "period_start"), _day(end, "period_end")
    if first is None or last is None:
        low: date | None = None
        high: date | None = None
        for line in lines():
            day = line.booked_on
            low = day if low is None or day < low else low
            high = day if high is None or day > high else high
        if low is None or high is None:
            raise ValidationError.single(
                "period_start",
                "the statement has no lines: give period_start and period_end",
                "missing",
            )
        first = first or low
        last = last or (high if first <= high else first)
    return first, last


def _day(text: str | None, field_name: str) -> date | None:
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        raise ValidationError.single(
            field_name, "must be a date, YYYY-MM-DD (or an ISO 8601 time)", "invalid_date"
        ) from None


class Matcher(Protocol):
    """What the read side's matcher offers (projections.reconciliation_matching.Matcher)."""

    totals: Any

    def stage(self, lines: Iterable[Any]) -> None: ...
    def resolve(self) -> None: ...
    def items(self) -> Iterator[list[Any]]: ...
    def ledger_balances(self, clearing_account_id: Callable[[str], str]) -> dict[str, Any]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ReconciliationResult:
    id: UUID
    tenant: str
    channel: str
    status: str
    period_start: str
    period_end: str
    file_sha256: str
    file_name: str | None
    file_format: str
    started_by: str
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, dict[str, int]]
    balances: dict[str, Any]
    line_count: int
    item_count: int
    attempt: int
    replayed: bool = False
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Reconciliation, *, replayed: bool = False) -> ReconciliationResult:
        summary = {c: {"count": 0, "amount_minor": 0} for c in CATEGORIES}
        summary.update(run.summary)
        return cls(
            id=run.id, tenant=run.tenant, channel=run.channel, status=run.status,
            period_start=run.period_start, period_end=run.period_end,
            file_sha256=run.file_sha256, file_name=run.file_name, file_format=run.file_format,
            started_by=run.started_by, started_at=run.created_on, finished_at=run.finished_at,
            summary=summary, balances=run.balances, line_count=run.line_count,
            item_count=run.item_count, attempt=run.attempt, replayed=replayed,
            decisions=dict(run.decisions),
        )  # fmt: skip


@dataclass(frozen=True)
class Begun:
    run: ReconciliationResult
    fresh: bool  # True: this caller runs it (attempt ``run.attempt``)


class ReconciliationHandlers:
    def __init__(self, service: Payledger) -> None:
        self.service = service

    # --- a run ---------------------------------------------------------------------------------

    async def run(
        self,
        cmd: StartReconciliation,
        principal: Principal,
        lines: Callable[[], Iterable[Any]],
        matcher_factory: Callable[[StartReconciliation, str], Matcher],
    ) -> ReconciliationResult:
        """``lines()`` opens the statement afresh and yields its lines. The file is read and
        staged before anything is recorded: a malformed one raises ``ValidationError`` and
        changes nothing."""
        run_id = reconciliation_id_for(principal.tenant, cmd.channel, cmd.file_sha256)
        earlier = await asyncio.to_thread(self.service._load, run_id, Reconciliation)
        if earlier is not None and earlier.status == "completed":
            return ReconciliationResult.of(earlier, replayed=True)
        matcher = matcher_factory(cmd, principal.tenant)
        try:
            await asyncio.to_thread(matcher.stage, lines())
            begun: Begun = await self.service.commit(
                "reconciliations", "decide_start", cmd, principal
            )
            if not begun.fresh:
                return begun.run
            totals, balances, item_count, chunk_count = await asyncio.to_thread(
                self._record, matcher, principal, begun.run, cmd.channel
            )
        finally:
            await asyncio.to_thread(matcher.close)
        result: ReconciliationResult = await self.service.commit(
            "reconciliations", "decide_complete", begun.run.id, begun.run.attempt,
            totals.summary, balances, totals.line_count, item_count, chunk_count, principal,
        )  # fmt: skip
        return result

    def _record(
        self, matcher: Matcher, principal: Principal, run: ReconciliationResult, channel: str
    ) -> tuple[Any, dict[str, Any], int, int]:
        """Match, and save the results chunk by chunk, straight to the event store (they are
        new aggregates no other command touches): memory holds a few chunks at most."""
        matcher.resolve()
        item_count = chunk_count = 0
        pending: list[ReconciliationChunk] = []
        chunk: list[list[Any]] = []
        now = self.service.clock.now()
        for item in matcher.items():
            item.insert(0, item_count)
            item_count += 1
            chunk.append(item)
            if len(chunk) >= RESULT_CHUNK:
                pending.append(self._chunk(run, principal, chunk_count, chunk, now))
                chunk_count += 1
                chunk = []
                if len(pending) >= SAVE_CHUNKS:
                    self._save(pending)
                    pending = []
        if chunk:
            pending.append(self._chunk(run, principal, chunk_count, chunk, now))
            chunk_count += 1
        self._save(pending)
        balances = self._balances(matcher, run.tenant, channel)
        return matcher.totals, balances, item_count, chunk_count

    def _chunk(
        self, run: ReconciliationResult, principal: Principal, number: int,
        items: list[list[Any]], now: datetime,
    ) -> ReconciliationChunk:  # fmt: skip
        return ReconciliationChunk.record(
            reconciliation_id=run.id, tenant=run.tenant, attempt=run.attempt, number=number,
            items=items, at=now, actor=principal.actor,
        )  # fmt: skip

    def _save(self, chunks: list[ReconciliationChunk]) -> None:
        if not chunks:
            return
        events = [event for chunk in chunks for event in chunk.collect_events()]
        self.service.app.events.put(events)

    def _balances(self, matcher: Matcher, tenant: str, channel: str) -> dict[str, Any]:
        ledger = matcher.ledger_balances(
            lambda currency: str(clearing_account_id(tenant, channel, currency))
        )
        totals = matcher.totals
        balances: dict[str, Any] = {
            "currency": totals.currency,
            "statement_net_settled_minor": totals.settled_net_minor,
        }
        for extra in ("opening_balance_minor", "closing_balance_minor", "account"):
            value = getattr(totals, extra, None)
            if value is not None:
                balances[f"statement_{extra}"] = value
        # Pay-ins debit the clearing account, payouts credit it: what the channel should have
        # settled, seen from the ledger, is minus the clearing account's movement.
        expected = -sum(entry["movement_minor"] for entry in ledger.values())
        balances["ledger"] = ledger
        balances["ledger_expected_net_minor"] = expected
        balances["difference_minor"] = totals.settled_net_minor - expected
        return balances

    # --- decisions on an item (``item``: its row in the results view) -------------------------

    async def resolve_item_exception(
        self, run_id: UUID, index: int, item: dict[str, Any], outcome: str | None, reason: str,
        principal: Principal,
    ) -> None:  # fmt: skip
        """The item's payment is an open exception: resolve it as the statement says (or as
        ``outcome`` says), through the exception workflow, and record the decision on the run."""
        payment_ids = item["payment_ids"].split(";") if item["payment_ids"] else []
        if len(payment_ids) != 1 or item["ledger_status"] != "exception":
            raise ItemNotDecidable(f"item {index} is not about one payment in exception")
        chosen = outcome or ("succeeded" if item["statement_status"] == "settled" else "failed")
        payment_id = UUID(payment_ids[0])
        await self.service.exceptions.resolve_manually(
            principal.tenant, payment_id, chosen, reason, principal.actor, how="reconciliation",
            channel_reference=item["reference"],
        )  # fmt: skip
        await self.service.commit(
            "reconciliations", "decide_record_resolution", run_id, index, payment_id, chosen,
            reason, principal,
        )  # fmt: skip

    async def propose_correction(
        self, run_id: UUID, index: int, item: dict[str, Any], channel: str, reason: str,
        principal: Principal,
    ) -> None:  # fmt: skip
        """The correcting entry that makes the ledger agree with the statement for this item,
        waiting for a second person's approval."""
        amount = correction_amount(item, channel)
        if amount == 0 or not item["currency"]:
            raise ItemNotDecidable(
                f"item {index} ({item['category']}) has no difference to correct"
            )
        await self.service.commit(
            "reconciliations", "decide_propose", run_id, index, amount, item["currency"], reason,
            principal,
        )  # fmt: skip

    # --- decisions (run by the committer) ------------------------------------------------------

    def decide_start(
        self, cmd: StartReconciliation, principal: Principal, uow: UnitOfWork
    ) -> Begun:
        run_id = reconciliation_id_for(principal.tenant, cmd.channel, cmd.file_sha256)
        existing = uow.get(run_id, Reconciliation)
        if existing is not None:
            if existing.status == "completed":
                return Begun(ReconciliationResult.of(existing, replayed=True), False)
            if uow.now - existing.modified_on < STALE_AFTER:
                raise ReconciliationInProgress(
                    f"reconciliation {run_id} of this statement is still running; "
                    "ask for it again later"
                )
            existing.restart(at=uow.now, actor=principal.actor)
            return Begun(ReconciliationResult.of(existing), True)
        run = Reconciliation.start(
            reconciliation_id=run_id, tenant=principal.tenant, channel=cmd.channel,
            period_start=cmd.period_start.isoformat(), period_end=cmd.period_end.isoformat(),
            file_sha256=cmd.file_sha256, file_name=cmd.file_name, file_format=cmd.file_format,
            file_size=cmd.file_size, tolerance_days=cmd.tolerance_days, at=uow.now,
            actor=principal.actor,
        )  # fmt: skip
        uow.add(run)
        return Begun(ReconciliationResult.of(run), True)

    def decide_complete(
        self, run_id: UUID, attempt: int, summary: dict[str, dict[str, int]],
        balances: dict[str, Any], line_count: int, item_count: int, chunk_count: int,
        principal: Principal, uow: UnitOfWork,
    ) -> ReconciliationResult:  # fmt: skip
        run = self._get(uow, run_id, principal)
        if run.attempt != attempt:
            raise ReconciliationInProgress(f"reconciliation {run_id} was restarted meanwhile")
        run.complete(
            summary=summary, balances=balances, line_count=line_count, item_count=item_count,
            chunk_count=chunk_count, at=uow.now, actor=principal.actor,
        )  # fmt: skip
        return ReconciliationResult.of(run)

    def decide_annotate(
        self, run_id: UUID, item_index: int, note: str, principal: Principal, uow: UnitOfWork
    ) -> ReconciliationResult:
        run = self._get(uow, run_id, principal)
        self._check_index(run, item_index)
        run.annotate(item_index, note, at=uow.now, actor=principal.actor)
        return ReconciliationResult.of(run)

    def decide_propose(
        self, run_id: UUID, item_index: int, amount_minor: int, currency: str, reason: str,
        principal: Principal, uow: UnitOfWork,
    ) -> ReconciliationResult:  # fmt: skip
        run = self._get(uow, run_id, principal)
        self._check_index(run, item_index)
        run.propose_correction(
            item_index, amount_minor, currency, reason, at=uow.now, actor=principal.actor
        )
        return ReconciliationResult.of(run)

    def decide_approve(
        self, run_id: UUID, item_index: int, principal: Principal, uow: UnitOfWork
    ) -> ReconciliationResult:
        """The second person's approval posts the correcting entry, in the same save: the
        difference moves between the channel's clearing account and its suspense account."""
        run = self._get(uow, run_id, principal)
        entry_id = run.approve_correction(item_index, at=uow.now, actor=principal.actor)
        proposal = run.proposals[str(item_index)]
        amount, currency = proposal["amount_minor"], proposal["currency"]
        clearing = self._system_account(
            uow, clearing_account_id(run.tenant, run.channel, currency), run, currency,
            f"{run.channel} clearing ({currency})",
        )  # fmt: skip
        suspense = self._system_account(
            uow, suspense_account_id(run.tenant, run.channel, currency), run, currency,
            f"{run.channel} reconciliation suspense ({currency})",
        )  # fmt: skip
        debit, credit = (clearing, suspense) if amount > 0 else (suspense, clearing)
        entry = transfer(
            entry_id, currency, debit_account=debit.id, credit_account=credit.id,
            amount_minor=abs(amount),
        )  # fmt: skip
        post_entry(entry, {clearing.id: clearing, suspense.id: suspense}, entry_id,
                   at=uow.now, actor=principal.actor)  # fmt: skip
        return ReconciliationResult.of(run)

    def decide_record_resolution(
        self, run_id: UUID, item_index: int, payment_id: UUID, outcome: str, reason: str,
        principal: Principal, uow: UnitOfWork,
    ) -> ReconciliationResult:  # fmt: skip
        run = self._get(uow, run_id, principal)
        self._check_index(run, item_index)
        run.record_exception_resolved(
            item_index, payment_id, outcome, reason, at=uow.now, actor=principal.actor
        )
        return ReconciliationResult.of(run)

    # --- helpers -------------------------------------------------------------------------------

    def _get(self, uow: UnitOfWork, run_id: UUID, principal: Principal) -> Reconciliation:
        run = uow.get(run_id, Reconciliation)
        if run is None or run.tenant != principal.tenant:
            raise ReconciliationNotFound(f"reconciliation {run_id} does not exist")
        return run

    def _check_index(self, run: Reconciliation, item_index: int) -> None:
        if not 0 <= item_index < run.item_count:
            raise ItemNotDecidable(f"reconciliation {run.id} has no item {item_index}")

    def _system_account(
        self, uow: UnitOfWork, account_id: UUID, run: Reconciliation, currency: str, owner: str
    ) -> Account:
        account = uow.get(account_id, Account)
        if account is None:
            account = Account.open(
                account_id=account_id, tenant=run.tenant, owner=owner, currency=currency,
                kind=AccountKind.CLEARING, overdraft_limit_minor=0, at=uow.now,
                actor=SYSTEM_ACTOR,
            )  # fmt: skip
            uow.add(account)
        return account

    def load(self, run_id: UUID, principal: Principal) -> ReconciliationResult:
        found = self.service._load(run_id, Reconciliation)
        if found is None or found.tenant != principal.tenant:
            raise ReconciliationNotFound(f"reconciliation {run_id} does not exist")
        return ReconciliationResult.of(found)
