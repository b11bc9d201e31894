"""Authorization: the permission matrix, as data, and the one dependency each route declares.

Every route names what it needs with exactly one dependency:

* ``Allow(Permission.X)``: the caller's role has permission X (else 403 ``forbidden``);
* ``OwnedAccount(X)``, ``OwnedPayment(X)``, ``OwnedKey(X)``: the same, then the id in the path
  belongs to the caller's tenant. Another tenant's id answers 404, exactly as an id that does
  not exist, never 403: nothing tells a caller that someone else's object exists.

The permission is checked first (it says nothing about any object), then ownership. Ownership
is read from the aggregate's first event in the store (``application/ownership.py``, cached
for good, since a tenant never changes), so a just-created id is found at once. The services
still filter by ``principal.tenant`` behind this, as a second line.
"""

# No `from __future__ import annotations`: FastAPI must see the closures' real annotations.
import asyncio
from enum import StrEnum
from functools import cache
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request

from application.batches.handlers import BatchNotFound
from application.commands import Principal
from application.ownership import Owners
from domain.accounts import Account
from domain.batches import Batch
from domain.errors import AccountNotFound, NotFound, PaymentNotFound
from domain.keys import ApiKey, Forbidden, KeyNotFound, Role
from domain.payments import Payment
from interfaces.http.deps import get_principal, service

PAYMENT_CREATED = (Payment.Requested, Payment.BatchItemProcessed)  # a batch item is a payment


class Permission(StrEnum):
    ACCOUNTS_OPEN = "accounts:open"
    ACCOUNTS_CLOSE = "accounts:close"
    ACCOUNTS_READ = "accounts:read"  # balances and statements
    DEPOSITS_CREATE = "deposits:create"  # money in from the tenant's external funding source
    PAYMENTS_CREATE = "payments:create"
    PAYMENTS_READ = "payments:read"  # one payment, search
    PAYMENTS_AUDIT = "payments:audit"  # a payment's event history
    METRICS_READ = "metrics:read"  # /v1/metrics, /metrics, /dashboard
    KEYS_MANAGE = "keys:manage"
    WEBHOOKS_MANAGE = "webhooks:manage"  # endpoints, their secrets and delivery logs
    # For the routes to come (batches, exceptions, reconciliation): granted already.
    BATCHES_CREATE = "batches:create"
    BATCHES_APPROVE = "batches:approve"  # always with a fresh second-factor code
    EXCEPTIONS_RESOLVE = "exceptions:resolve"
    RECONCILIATION_READ = "reconciliation:read"
    RECONCILIATION_DECIDE = "reconciliation:decide"


P = Permission
READ = frozenset({P.ACCOUNTS_READ, P.PAYMENTS_READ})
OVERSIGHT = READ | {P.PAYMENTS_AUDIT, P.METRICS_READ, P.RECONCILIATION_READ}
ALL = frozenset(Permission)

#: The permission matrix: what each role may do, within its own tenant only.
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    Role.SUBMITTER: READ | {P.PAYMENTS_CREATE, P.BATCHES_CREATE},
    Role.APPROVER: READ | {P.BATCHES_APPROVE},
    Role.AUDITOR: OVERSIGHT,
    Role.OPERATOR: OVERSIGHT | {P.DEPOSITS_CREATE, P.EXCEPTIONS_RESOLVE, P.RECONCILIATION_DECIDE},
    Role.ADMIN: ALL,
}
#: The development sandbox (no key exists, not production): everything but key management,
#: so that the first key comes from someone with the database (`payledger keys create`).
SANDBOX_PERMISSIONS = ALL - {P.KEYS_MANAGE}


def permissions_of(principal: Principal) -> frozenset[Permission]:
    if principal.role is None:
        return SANDBOX_PERMISSIONS
    return ROLE_PERMISSIONS.get(principal.role, frozenset())


def check(principal: Principal, permission: Permission) -> Principal:
    """``principal`` if its role has ``permission``, else ``Forbidden`` (403)."""
    if permission not in permissions_of(principal):
        raise Forbidden(f"the {principal.role} role may not do this ({permission})")
    return principal


@cache
def allow(permission: Permission) -> Any:
    async def allowed(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return check(principal, permission)

    allowed.__name__ = f"allow_{permission.name.lower()}"
    return allowed


def Allow(permission: Permission) -> Any:
    """``principal: Annotated[Principal, Allow(Permission.X)]``."""
    return Depends(allow(permission))


# --- tenant isolation ---------------------------------------------------------------------------


async def check_owner(
    request: Request,
    principal: Principal,
    aggregate_id: UUID,
    created: type | tuple[type, ...],
    not_found: type[NotFound],
    noun: str,
) -> None:
    """404 unless ``aggregate_id`` is a ``created``-kind aggregate of ``principal``'s tenant."""
    owners: Owners = service(request).owners
    tenant = owners.cached(aggregate_id, created)
    if tenant is False:  # not known here yet: one read of its first event, in a thread
        tenant = await asyncio.to_thread(owners.tenant_of, aggregate_id, created)
    if tenant != principal.tenant:
        raise not_found(f"{noun} {aggregate_id} does not exist")


@cache
def _owned_account(permission: Permission) -> Any:
    async def owned_account(
        account_id: UUID,
        request: Request,
        principal: Annotated[Principal, Depends(allow(permission))],
    ) -> Principal:
        await check_owner(
            request, principal, account_id, Account.Opened, AccountNotFound, "account"
        )
        return principal

    return owned_account


@cache
def _owned_payment(permission: Permission) -> Any:
    async def owned_payment(
        payment_id: UUID,
        request: Request,
        principal: Annotated[Principal, Depends(allow(permission))],
    ) -> Principal:
        await check_owner(
            request, principal, payment_id, PAYMENT_CREATED, PaymentNotFound, "payment"
        )
        return principal

    return owned_payment


@cache
def _owned_batch(permission: Permission) -> Any:
    async def owned_batch(
        batch_id: UUID,
        request: Request,
        principal: Annotated[Principal, Depends(allow(permission))],
    ) -> Principal:
        await check_owner(request, principal, batch_id, Batch.Submitted, BatchNotFound, "batch")
        return principal

    return owned_batch


@cache
def _owned_key(permission: Permission) -> Any:
    async def owned_key(
        key_id: UUID,
        request: Request,
        principal: Annotated[Principal, Depends(allow(permission))],
    ) -> Principal:
        await check_owner(request, principal, key_id, ApiKey.Issued, KeyNotFound, "key")
        return principal

    return owned_key


def OwnedAccount(permission: Permission) -> Any:
    """``permission``, and ``{account_id}`` belongs to the caller's tenant."""
    return Depends(_owned_account(permission))


def OwnedPayment(permission: Permission) -> Any:
    """``permission``, and ``{payment_id}`` belongs to the caller's tenant."""
    return Depends(_owned_payment(permission))


def OwnedBatch(permission: Permission) -> Any:
    """``permission``, and ``{batch_id}`` belongs to the caller's tenant."""
    return Depends(_owned_batch(permission))


def OwnedKey(permission: Permission) -> Any:
    """``permission``, and ``{key_id}`` belongs to the caller's tenant."""
    return Depends(_owned_key(permission))
