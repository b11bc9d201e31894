"""Ledger accounts: open, read, deposit into, close."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request, Response

from application.commands import CloseAccount
from interfaces.http.deps import (
    CurrentPrincipal,
    IdempotencyKey,
    OptionalIdempotencyKey,
    required,
    service,
)
from interfaces.http.routes._responses import mark_replay, problems, replay
from interfaces.http.schemas import AccountIn, AccountOut, DepositIn, DepositOut

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.post(
    "",
    status_code=201,
    summary="Open an account",
    responses={**replay(AccountOut), **problems(422, 503)},
)
async def open_account(
    body: AccountIn,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    key: OptionalIdempotencyKey = None,
) -> AccountOut:
    """With an `Idempotency-Key`, retrying opens no second account (and answers 200)."""
    result = await service(request).accounts.open(body.to_command(key), principal)
    mark_replay(response, result.replayed)
    return AccountOut.of(result)


@router.get("/{account_id}", summary="Get an account", responses=problems(404, 422))
def get_account(account_id: UUID, request: Request, principal: CurrentPrincipal) -> AccountOut:
    return AccountOut.of(service(request).get_account(account_id, principal))


@router.post(
    "/{account_id}/deposits",
    status_code=201,
    summary="Deposit into an account",
    responses=replay(DepositOut) | problems(400, 404, 409, 422, 503),
)
async def deposit(
    account_id: UUID,
    body: DepositIn,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    key: IdempotencyKey = None,
) -> DepositOut:
    """Credits the account from the tenant's external funding source through a ledger entry."""
    command = body.to_command(account_id, required(key))
    result = await service(request).accounts.deposit(command, principal)
    mark_replay(response, result.payment.replayed)
    return DepositOut.of_deposit(result)


@router.post(
    "/{account_id}/close", summary="Close an account", responses=problems(404, 409, 422, 503)
)
async def close_account(
    account_id: UUID, request: Request, principal: CurrentPrincipal
) -> AccountOut:
    """Only an account with a zero balance and no holds can close."""
    result = await service(request).accounts.close(CloseAccount(account_id), principal)
    return AccountOut.of(result)
