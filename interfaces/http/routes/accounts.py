"""Ledger accounts: open, read, deposit into, close."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from application.commands import CloseAccount, Principal
from application.history import MAX_AS_OF_LENGTH
from interfaces.http.authz import Allow, OwnedAccount, Permission
from interfaces.http.deps import IdempotencyKey, OptionalIdempotencyKey, required, service
from interfaces.http.routes._responses import auth_problems, mark_position, mark_replay, replay
from interfaces.http.routes.queries import Timeout, WaitFor, current_account
from interfaces.http.schemas import AccountIn, AccountOut, DepositIn, DepositOut

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.post(
    "",
    status_code=201,
    summary="Open an account",
    responses={**replay(AccountOut), **auth_problems(400, 422, 503)},
)
async def open_account(
    body: AccountIn,
    request: Request,
    response: Response,
    principal: Annotated[Principal, Allow(Permission.ACCOUNTS_OPEN)],
    key: OptionalIdempotencyKey = None,
) -> AccountOut:
    """With an `Idempotency-Key`, retrying opens no second account (and answers 200)."""
    result = await service(request).accounts.open(body.to_command(key), principal)
    mark_replay(response, result.replayed)
    mark_position(response, request)
    return AccountOut.of(result)


AS_OF_HELP = (
    "Time travel: the account as it was at this ISO 8601 instant (e.g. `2026-01-31T12:00:00Z`; "
    "without an offset, UTC; send `+` as `%2B`), rebuilt from its events. The answer then has "
    "`as_of` and `as_of_version`. Before the account was opened: 404."
)


@router.get("/{account_id}", summary="Get an account", responses=auth_problems(404, 422, 503))
def get_account(
    account_id: UUID,
    request: Request,
    principal: Annotated[Principal, OwnedAccount(Permission.ACCOUNTS_READ)],
    response: Response,
    as_of: Annotated[str | None, Query(max_length=MAX_AS_OF_LENGTH, description=AS_OF_HELP)] = None,
    wait_for_position: WaitFor = None,
    timeout_s: Timeout = 5.0,
) -> AccountOut:
    """From the accounts view (after it has caught up with this request's arrival, or with
    `wait_for_position`); with `as_of`, rebuilt from the account's events."""
    if as_of is None:
        return AccountOut.of(
            current_account(request, response, account_id, principal, wait_for_position, timeout_s)
        )
    return AccountOut.of(service(request).get_account_as_of(account_id, as_of, principal))


@router.post(
    "/{account_id}/deposits",
    status_code=201,
    summary="Deposit into an account",
    responses=replay(DepositOut) | auth_problems(400, 404, 409, 422, 503),
)
async def deposit(
    account_id: UUID,
    body: DepositIn,
    request: Request,
    response: Response,
    principal: Annotated[Principal, OwnedAccount(Permission.DEPOSITS_CREATE)],
    key: IdempotencyKey = None,
) -> DepositOut:
    """Credits the account from the tenant's external funding source through a ledger entry."""
    command = body.to_command(account_id, required(key))
    result = await service(request).accounts.deposit(command, principal)
    mark_replay(response, result.payment.replayed)
    mark_position(response, request)
    return DepositOut.of_deposit(result)


@router.post(
    "/{account_id}/close",
    summary="Close an account",
    responses=auth_problems(404, 409, 422, 503),
)
async def close_account(
    account_id: UUID,
    request: Request,
    response: Response,
    principal: Annotated[Principal, OwnedAccount(Permission.ACCOUNTS_CLOSE)],
) -> AccountOut:
    """Only an account with a zero balance and no holds can close."""
    result = await service(request).accounts.close(CloseAccount(account_id), principal)
    mark_position(response, request)
    return AccountOut.of(result)
