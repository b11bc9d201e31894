"""Batch commands: submit (or dry-run), approve, reject, cancel, retry.

Checks that need no ledger run in a worker thread (intake.py); the decision that stores the
batch, its item chunks and its funding account's check runs in the committer, in one save.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Any
from uuid import UUID

from application.batch_files.model import ParsedFile
from application.batches.calendar import booking_date
from application.batches.intake import CheckedBatch, check_batch
from application.batches.prediction import predict
from application.batches.results import (
    MAX_LISTED_INVALID,
    BatchResult,
    DryRunResult,
    InvalidItem,
)
from application.commands import Principal
from application.drafts import check_idempotency_key
from application.unit_of_work import AggregateCache, UnitOfWork
from domain.accounts import SYSTEM_KINDS, Account, IbanClaim, iban_claim_id
from domain.batch_items import CHUNK_SIZE, BatchChunk, BatchItem
from domain.batch_rules import BatchRules, parse_rules
from domain.batches import (
    Batch,
    BatchStatus,
    batch_id_for,
    batch_id_for_file,
    batch_id_for_message,
)
from domain.errors import (
    Conflict,
    FieldError,
    IdempotencyKeyReused,
    IllegalTransition,
    NotFound,
    ValidationError,
)
from domain.keys import OtpNotEnrolled
from domain.payments import Payment, batch_item_payment_id

if TYPE_CHECKING:
    from application.service import Payledger


class BatchNotFound(NotFound):
    code = "batch_not_found"


class DuplicateMessage(Conflict):
    code = "DU01"


@dataclass(frozen=True)
class SubmitBatch:
    parsed: ParsedFile
    idempotency_key: str | None = None
    funding_account_id: UUID | None = None
    currency: str | None = None
    rules: dict[str, Any] | None = None
    execution_date: date | None = None
    file_sha256: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class BatchPlan:
    """A checked batch, ready to be decided and stored."""

    batch_id: UUID
    checked: CheckedBatch
    rules: BatchRules
    source: dict[str, Any]
    funding_account_id: UUID | None
    debtor_iban: str | None
    idempotency_key: str | None


class BatchHandlers:
    def __init__(self, service: Payledger) -> None:
        self.service = service

    # --- submit --------------------------------------------------------------------------------

    async def submit(self, cmd: SubmitBatch, principal: Principal) -> BatchResult | DryRunResult:
        plan = await asyncio.to_thread(self._plan, cmd, principal)
        if cmd.dry_run:
            return await asyncio.to_thread(self._dry_run, plan, principal)
        result: BatchResult = await self.service.commit("batches", "decide_submit", plan, principal)
        return result

    def _plan(self, cmd: SubmitBatch, principal: Principal) -> BatchPlan:
        parsed = cmd.parsed
        errors: list[FieldError] = []
        if parsed.message_id is None and not cmd.dry_run:
            errors += check_idempotency_key(cmd.idempotency_key)
        if errors:
            raise ValidationError(errors)
        currency, found = cmd.currency, parsed.currency or _only_currency(parsed)
        if currency is None and found is None:
            # The items do not agree on one: the batch is in its funding account's currency,
            # and an item in another is refused on its own (AM03), not the whole file.
            currency = self._funding_currency(cmd.funding_account_id, principal)
        currency_hint = currency or found
        rules = parse_rules(cmd.rules, currency_hint or "EUR")
        today = self.service.clock.now().date()
        checked = check_batch(
            parsed, currency=currency, rules=rules, today=today,
            execution_date=cmd.execution_date,
        )  # fmt: skip
        if currency_hint is None or currency_hint != checked.currency:
            rules = parse_rules(cmd.rules, checked.currency)
        checked = self._check_internal_payees(checked, principal)
        if parsed.message_id is not None:
            batch_id = batch_id_for_message(principal.tenant, parsed.message_id)
        elif cmd.file_sha256 is not None:  # an uploaded file without one (CSV): its bytes
            batch_id = batch_id_for_file(principal.tenant, cmd.file_sha256)
        else:
            batch_id = batch_id_for(principal.tenant, principal.client, cmd.idempotency_key or "")
        source = {
            "format": parsed.format, "message_id": parsed.message_id,
            "file_sha256": cmd.file_sha256,
            "created_at": parsed.created_at and parsed.created_at.isoformat(),
            "declared_count": parsed.declared_count,
            "declared_control_sum": parsed.declared_control_sum,
            "initiating_party": parsed.initiating_party, "debtor_iban": parsed.debtor_iban,
            "payment_blocks": [b.id for b in parsed.payment_blocks],
        }  # fmt: skip
        return BatchPlan(
            batch_id, checked, rules, source, cmd.funding_account_id, parsed.debtor_iban,
            cmd.idempotency_key,
        )  # fmt: skip

    def _check_internal_payees(self, checked: CheckedBatch, principal: Principal) -> CheckedBatch:
        """Items paying a ledger account: it must be the tenant's, open, in the currency."""
        changed = False
        items: list[BatchItem] = []
        for item in checked.items:
            if item.valid and item.payee is not None and item.payee["type"] == "account":
                problem = self._payee_problem(item, principal)
                if problem is not None:
                    item = item._replace(reason_code=problem[0], reason=problem[1])
                    changed = True
            items.append(item)
        if not changed:
            return checked
        valid = [i for i in items if i.valid]
        return replace(
            checked, items=items, valid_count=len(valid),
            invalid_count=len(items) - len(valid),
            control_sum_minor=sum(i.amount_minor for i in valid),
        )  # fmt: skip

    def _payee_problem(self, item: BatchItem, principal: Principal) -> tuple[str, str] | None:
        assert item.payee is not None
        account = self.service._load(UUID(item.payee["account_id"]), Account)
        if not isinstance(account, Account) or account.tenant != principal.tenant:
            return ("AC01", f"payee account {item.payee['account_id']} does not exist")
        if account.closed:
            return ("AC04", f"payee account {account.id} is closed")
        if account.currency != item.currency:
            return ("AM03", f"payee account {account.id} holds {account.currency}")
        if account.kind in SYSTEM_KINDS:
            return ("AG01", f"payee account {account.id} is a system account")
        return None

    def decide_submit(self, plan: BatchPlan, principal: Principal, uow: UnitOfWork) -> BatchResult:
        checked = plan.checked
        existing = uow.get(plan.batch_id, Batch)
        if existing is not None:
            return self._replay(existing, plan)
        funding = self._funding_account(plan, principal, uow)
        batch = Batch.submit(
            batch_id=plan.batch_id, at=uow.now, actor=principal.actor, tenant=principal.tenant,
            client=principal.client, idempotency_key=plan.idempotency_key,
            fingerprint=checked.fingerprint, source=plan.source,
            funding_account_id=str(funding.id), currency=checked.currency,
            execution_date=checked.execution_date, rules=plan.rules.to_record(),
            item_count=len(checked.items), valid_item_count=checked.valid_count,
            invalid_item_count=checked.invalid_count,
            control_sum_minor=checked.control_sum_minor,
            chunk_count=(len(checked.items) + CHUNK_SIZE - 1) // CHUNK_SIZE,
        )  # fmt: skip
        uow.add(batch)
        for number, start in enumerate(range(0, len(checked.items), CHUNK_SIZE)):
            chunk = BatchChunk.record(
                batch_id=batch.id, tenant=principal.tenant, number=number,
                items=checked.items[start : start + CHUNK_SIZE], at=uow.now,
                actor=principal.actor,
            )  # fmt: skip
            uow.add(chunk, cache=False)
        invalid = [i for i in checked.items if not i.valid]
        if plan.rules.all_or_nothing and invalid:
            first = min(invalid, key=lambda i: i.index)
            batch.finish(
                BatchStatus.FAILED, code=first.reason_code,
                message=f"all-or-nothing: {len(invalid)} invalid item(s), first item "
                f"{first.index} ({first.end_to_end_id}): {first.reason}",
                at=uow.now, actor=principal.actor,
            )  # fmt: skip
        elif not checked.valid_count:
            batch.finish(
                BatchStatus.FAILED, code="NARR", message="no item of the batch is valid",
                at=uow.now, actor=principal.actor,
            )  # fmt: skip
        listed = sorted(invalid, key=lambda i: i.index)[:MAX_LISTED_INVALID]
        return BatchResult.of(batch, invalid_items=[InvalidItem.of(i) for i in listed])

    def _replay(self, existing: Batch, plan: BatchPlan) -> BatchResult:
        if existing.fingerprint != plan.checked.fingerprint:
            if plan.source.get("message_id") is not None:
                raise DuplicateMessage(
                    f"message id {plan.source['message_id']!r} was already used by batch "
                    f"{existing.id} with different content: send a new MsgId"
                )
            if plan.source.get("file_sha256") is not None:
                raise DuplicateMessage(
                    f"this file was already submitted as batch {existing.id} with other rules "
                    "or settings: change the file to submit it again"
                )
            raise IdempotencyKeyReused(
                f"Idempotency-Key {plan.idempotency_key!r} was already used for a different "
                "batch; use a new key for a new batch"
            )
        invalid = [InvalidItem.of(i) for i in plan.checked.items if not i.valid]
        invalid.sort(key=lambda i: i.index)
        return BatchResult.of(existing, invalid_items=invalid[:MAX_LISTED_INVALID], replayed=True)

    def _funding_currency(self, account_id: UUID | None, principal: Principal) -> str | None:
        account = None if account_id is None else self.service._load(account_id, Account)
        if isinstance(account, Account) and account.tenant == principal.tenant:
            return str(account.currency)
        return None  # refused later, naming the funding account

    def _funding_account(self, plan: BatchPlan, principal: Principal, uow: UnitOfWork) -> Account:
        account_id = plan.funding_account_id
        field = "funding_account_id"
        if account_id is None and plan.debtor_iban:
            claim = uow.get(iban_claim_id(principal.tenant, plan.debtor_iban), IbanClaim)
            field = "DbtrAcct/Id/IBAN"
            if claim is None:
                raise ValidationError.single(
                    field, f"no account of this tenant has IBAN {plan.debtor_iban}: open one "
                    "with that iban, or give funding_account_id", "AC02",
                )  # fmt: skip
            account_id = UUID(claim.account_id)
        if account_id is None:
            raise ValidationError.single(field, "is required", "AC02")
        account = uow.get(account_id, Account)
        problems = [
            (account is None or account.tenant != principal.tenant, "AC02",
             f"funding account {account_id} does not exist"),
            (account is not None and account.closed, "AC04", "the funding account is closed"),
            (account is not None and account.kind in SYSTEM_KINDS, "AG01",
             "a system account cannot fund a batch"),
            (account is not None and account.currency != plan.checked.currency, "AM03",
             f"the funding account holds {account and account.currency}, the batch is "
             f"{plan.checked.currency}"),
        ]  # fmt: skip
        for bad, code, reason in problems:
            if bad:
                raise ValidationError.single(field, reason, code)
        assert account is not None
        return account

    def _dry_run(self, plan: BatchPlan, principal: Principal) -> DryRunResult:
        uow = UnitOfWork(self.service.app, AggregateCache(maxsize=64), optimistic=False)
        funding = self._funding_account(plan, principal, uow)
        booking = booking_date(
            self.service.clock.now(), plan.rules.cutoff_time, plan.checked.currency
        )
        return predict(plan.checked, plan.rules, funding, booking)

    # --- approve, reject, cancel ---------------------------------------------------------------

    async def approve(
        self, batch_id: UUID, principal: Principal, otp: str | None, *, execute_now: bool = False
    ) -> BatchResult:
        batch = await asyncio.to_thread(self.load, batch_id, principal)
        batch.check_approver(principal.actor)  # before the code: a refusal burns no code
        if principal.key_id is None:
            raise OtpNotEnrolled(
                "approving a batch needs an approver (or admin) API key with a second factor "
                "and a fresh code from it: create one with `payledger keys create --role approver`"
            )
        await self.service.keys.step_up(principal, otp)
        result: BatchResult = await self.service.commit(
            "batches", "decide_approve", batch_id, principal, execute_now
        )
        self.service.batch_runner.kick(batch_id)
        return result

    def decide_approve(
        self, batch_id: UUID, principal: Principal, execute_now: bool, uow: UnitOfWork
    ) -> BatchResult:
        batch = self._get(uow, batch_id, principal)
        today = uow.now.date()
        run_on = None
        if not execute_now and batch.execution_date is not None and batch.execution_date > today:
            run_on = batch.execution_date
        batch.approve(run_on=run_on, execute_now=execute_now, at=uow.now, actor=principal.actor)
        return BatchResult.of(batch)

    async def reject(self, batch_id: UUID, principal: Principal, reason: str | None) -> BatchResult:
        result: BatchResult = await self.service.commit(
            "batches", "decide_reject", batch_id, principal, reason
        )
        return result

    def decide_reject(
        self, batch_id: UUID, principal: Principal, reason: str | None, uow: UnitOfWork
    ) -> BatchResult:
        batch = self._get(uow, batch_id, principal)
        batch.reject(reason, at=uow.now, actor=principal.actor)
        return BatchResult.of(batch)

    async def cancel(self, batch_id: UUID, principal: Principal, reason: str | None) -> BatchResult:
        result: BatchResult = await self.service.commit(
            "batches", "decide_cancel", batch_id, principal, reason
        )
        return result

    def decide_cancel(
        self, batch_id: UUID, principal: Principal, reason: str | None, uow: UnitOfWork
    ) -> BatchResult:
        batch = self._get(uow, batch_id, principal)
        held = batch.cancel(reason, at=uow.now, actor=principal.actor)
        if held:  # it started, then rolled past its cut-off: give its funds back
            funding = uow.get(UUID(batch.funding_account_id), Account)
            assert funding is not None, "a batch's funding account exists from intake on"
            funding.release_part(batch.id, held, at=uow.now, actor=principal.actor)
        return BatchResult.of(batch)

    # --- retry ---------------------------------------------------------------------------------

    async def retry(
        self, batch_id: UUID, principal: Principal, items: list[tuple[int, int]]
    ) -> BatchResult:
        """Retry failed items, given as (index, seq); each gets a new attempt (a new payment)."""
        result: BatchResult = await self.service.commit(
            "batches", "decide_retry", batch_id, principal, items
        )
        self.service.batch_runner.kick(batch_id)
        return result

    def decide_retry(
        self,
        batch_id: UUID,
        principal: Principal,
        items: list[tuple[int, int]],
        uow: UnitOfWork,
    ) -> BatchResult:
        batch = self._get(uow, batch_id, principal)
        if not items:
            raise ValidationError.single("items", "no failed item to retry", "nothing_to_retry")
        attempts = latest_attempts(batch)
        chosen: list[list[int]] = []
        total = 0
        for index, seq in items:
            attempt = attempts.get(index, 1)
            payment = uow.get(batch_item_payment_id(batch.id, index, attempt), Payment)
            if payment is None or payment.state != "failed":
                state = "not processed" if payment is None else payment.state
                raise IllegalTransition(f"item {index} is {state}: only failed items are retried")
            chosen.append([index, seq])
            total += payment.amount_minor
        funding = uow.get(UUID(batch.funding_account_id), Account)
        assert funding is not None
        if not funding.has_sufficient_funds(total):
            raise Conflict(f"the funding account cannot cover the retried items ({total})")
        funding.add_to_hold(batch.id, total, at=uow.now, actor=principal.actor)
        batch.request_retry(chosen, total, at=uow.now, actor=principal.actor)
        return BatchResult.of(batch)

    # --- reads ---------------------------------------------------------------------------------

    def load(self, batch_id: UUID, principal: Principal) -> Batch:
        batch = self.service._load(batch_id, Batch)
        if not isinstance(batch, Batch) or batch.tenant != principal.tenant:
            raise BatchNotFound(f"batch {batch_id} does not exist")
        return batch

    def get(self, batch_id: UUID, principal: Principal) -> BatchResult:
        return BatchResult.of(self.load(batch_id, principal))

    def _get(self, uow: UnitOfWork, batch_id: UUID, principal: Principal) -> Batch:
        batch = uow.get(batch_id, Batch)
        if batch is None or batch.tenant != principal.tenant:
            raise BatchNotFound(f"batch {batch_id} does not exist")
        return batch


def latest_attempts(batch: Batch) -> dict[int, int]:
    """The attempt number of each retried item's latest attempt (1 for the others)."""
    latest: dict[int, int] = {}
    for retry in batch.retries:
        for index, _seq in retry["items"]:
            latest[index] = retry["attempt"]
    return latest


def _only_currency(parsed: ParsedFile) -> str | None:
    found = {i.currency for i in parsed.items[:1000] if i.currency}
    return found.pop() if len(found) == 1 else None
