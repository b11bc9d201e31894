"""Account handlers: open, deposit into, close."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from application.commands import CloseAccount, MakeDeposit, OpenAccount, Principal
from application.drafts import check_idempotency_key, validate_deposit
from application.results import AccountResult, DepositResult
from application.unit_of_work import UnitOfWork
from domain.accounts import ACCOUNT_NAMESPACE, Account, AccountKind, IbanClaim, iban_claim_id
from domain.cards import contains_pan, pan_problem
from domain.errors import (
    AccountNotFound,
    AccountRuleViolation,
    Conflict,
    FieldError,
    IdempotencyKeyReused,
    ValidationError,
)
from domain.ids import name_id
from domain.money import currency_exponent, parse_non_negative_amount

if TYPE_CHECKING:
    from application.service import Payledger

MAX_OWNER = 200
KINDS = tuple(kind.value for kind in AccountKind)


class AccountHandlers:
    def __init__(self, service: Payledger) -> None:
        self.service = service

    async def open(self, cmd: OpenAccount, principal: Principal) -> AccountResult:
        limit_minor, iban = _validate_open(cmd)
        cmd = replace(cmd, iban=iban)
        account_id = (
            name_id(ACCOUNT_NAMESPACE, f"/tenants/{principal.tenant}/clients/{principal.client}"
                  f"/accounts/{cmd.idempotency_key}")
            if cmd.idempotency_key
            else uuid4()
        )  # fmt: skip
        return await self.service.commit(
            "accounts", "decide_open", cmd, principal, account_id, limit_minor
        )

    def decide_open(
        self, cmd: OpenAccount, principal: Principal, account_id: UUID, limit: int, uow: UnitOfWork
    ) -> AccountResult:
        existing = uow.get(account_id, Account)
        if existing is not None:
            same = (existing.owner, existing.currency, existing.kind, existing.iban) == (
                cmd.owner, cmd.currency, cmd.kind, cmd.iban,
            )  # fmt: skip
            if not same:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {cmd.idempotency_key!r} already opened a different account"
                )
            return AccountResult.of(existing, replayed=True)
        account = Account.open(
            account_id=account_id, tenant=principal.tenant, owner=cmd.owner,
            currency=cmd.currency, kind=AccountKind(cmd.kind), overdraft_limit_minor=limit,
            at=uow.now, actor=principal.actor, iban=cmd.iban,
        )  # fmt: skip
        if cmd.iban is not None:
            self._claim_iban(uow, principal, cmd.iban, account_id)
        uow.add(account)
        return AccountResult.of(account)

    def _claim_iban(
        self, uow: UnitOfWork, principal: Principal, iban: str, account_id: UUID
    ) -> None:
        claim_id = iban_claim_id(principal.tenant, iban)
        if uow.get(claim_id, IbanClaim) is not None:
            raise Conflict(f"IBAN {iban} already belongs to another account of this tenant")
        claim = IbanClaim._create(
            IbanClaim.Claimed, id=claim_id, timestamp=uow.now, actor=principal.actor,
            tenant=principal.tenant, iban=iban, account_id=str(account_id),
        )  # fmt: skip
        uow.add(claim)

    def account_for_iban(self, tenant: str, iban: str) -> UUID | None:
        """The tenant's account standing for ``iban`` (compact form), if one was opened."""
        found = self.service._load(iban_claim_id(tenant, iban), IbanClaim)
        return None if found is None else UUID(found.account_id)

    async def deposit(self, cmd: MakeDeposit, principal: Principal) -> DepositResult:
        # Reads go to a thread: an async handler must never block the event loop on the store.
        get_account = partial(self.service.get_account, cmd.account_id, principal)
        account = await asyncio.to_thread(get_account)
        draft = validate_deposit(cmd, principal, account.currency, now=self.service.clock.now())
        payment = await self.service.payments.execute(draft)
        return DepositResult(payment, await asyncio.to_thread(get_account))

    async def close(self, cmd: CloseAccount, principal: Principal) -> AccountResult:
        return await self.service.commit("accounts", "decide_close", cmd, principal)

    def decide_close(
        self, cmd: CloseAccount, principal: Principal, uow: UnitOfWork
    ) -> AccountResult:
        account = uow.get(cmd.account_id, Account)
        if account is None or account.tenant != principal.tenant:
            raise AccountNotFound(f"account {cmd.account_id} does not exist")
        if account.closed:
            raise AccountRuleViolation(f"account {cmd.account_id} is already closed")
        account.close(at=uow.now, actor=principal.actor)
        return AccountResult.of(account)


def _validate_open(cmd: OpenAccount) -> tuple[int, str | None]:
    """Check every field; return the overdraft limit in minor units and the compact IBAN."""
    errors: list[FieldError] = []
    iban = None
    if cmd.iban is not None:
        try:
            iban = str(IBAN(cmd.iban).compact)
        except SchwiftyException as e:
            errors.append(FieldError("iban", f"not a valid IBAN: {e}", "invalid_iban"))
    if cmd.idempotency_key is not None:
        errors += check_idempotency_key(cmd.idempotency_key)
    owner = cmd.owner.strip() if isinstance(cmd.owner, str) else ""
    if not owner or len(cmd.owner) > MAX_OWNER:
        errors.append(FieldError("owner", f"must be 1-{MAX_OWNER} characters", "invalid_owner"))
    elif contains_pan(owner):  # stored with the account and shown in its views
        errors.append(pan_problem("owner"))
    if cmd.kind not in KINDS:
        errors.append(FieldError("kind", f"must be one of {', '.join(KINDS)}", "invalid_kind"))
    limit = 0
    try:
        currency_exponent(cmd.currency)
        limit = parse_non_negative_amount(
            cmd.overdraft_limit, cmd.currency, field="overdraft_limit"
        )
    except ValidationError as e:
        errors.extend(e.errors)
    if errors:
        raise ValidationError(errors)
    return limit, iban
