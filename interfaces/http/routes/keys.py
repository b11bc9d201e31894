"""API keys of the caller's tenant: issue (with a fresh second-factor code), list, revoke.

Role ``admin`` only, and only in its own tenant: the tenant comes from the caller's key, never
from the body. Issuing a key needs the admin's own fresh TOTP code (`X-Payledger-OTP`):
otherwise a stolen admin key could mint a new admin key with a second factor of its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, StringConstraints

from application.commands import Principal
from application.keys import MAX_NAME, CreateKey, IssuedKey, KeyInfo
from domain.keys import MAX_KEYS_PER_TENANT
from interfaces.http.authz import Allow, OwnedKey, Permission
from interfaces.http.deps import service
from interfaces.http.routes._responses import auth_problems, mark_position

router = APIRouter(prefix="/v1/keys", tags=["keys"])

OTP_HEADER = "X-Payledger-OTP"
RoleName = Literal["submitter", "approver", "auditor", "operator", "admin"]


class KeyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"role": "submitter", "name": "checkout service"}]},
    )

    role: RoleName
    name: Annotated[StrictStr, StringConstraints(max_length=MAX_NAME)] = ""
    totp: StrictBool = Field(
        default=False,
        description="Enrol a TOTP second factor (always done for approver and admin keys)",
    )


class KeyOut(BaseModel):
    id: UUID
    tenant: str
    role: str
    name: str
    second_factor: bool
    revoked: bool
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, info: KeyInfo) -> KeyOut:
        return cls(**vars(info))


class KeyCreatedOut(KeyOut):
    key: str = Field(description="The API key: shown this once, stored only as a salted hash")
    totp_uri: str | None = Field(
        description="`otpauth://` provisioning URI of the second factor (scan it into an "
        "authenticator app): shown this once"
    )

    @classmethod
    def of_issued(cls, issued: IssuedKey) -> KeyCreatedOut:
        return cls(**vars(issued.info), key=issued.token, totp_uri=issued.totp_uri)


class KeyListOut(BaseModel):
    items: list[KeyOut] = Field(max_length=MAX_KEYS_PER_TENANT)


Admin = Annotated[Principal, Allow(Permission.KEYS_MANAGE)]
AdminOfKey = Annotated[Principal, OwnedKey(Permission.KEYS_MANAGE)]


@router.post(
    "",
    status_code=201,
    summary="Issue an API key in the caller's tenant",
    responses=auth_problems(400, 409, 422, 503),
)
async def create_key(
    body: KeyIn,
    request: Request,
    response: Response,
    principal: Admin,
    otp: Annotated[
        str | None,
        Header(alias=OTP_HEADER, max_length=16, description="A fresh code of the caller's TOTP"),
    ] = None,
) -> KeyCreatedOut:
    """The key and the TOTP URI are in this answer only. Needs a fresh second-factor code."""
    svc = service(request)
    await svc.keys.step_up(principal, otp)
    command = CreateKey(principal.tenant, body.role, body.name, body.totp)
    issued = await svc.keys.create(command, principal)
    mark_position(response, request)
    response.headers["Cache-Control"] = "no-store"
    return KeyCreatedOut.of_issued(issued)


@router.get("", summary="The caller's tenant's keys", responses=auth_problems())
def list_keys(request: Request, principal: Admin) -> KeyListOut:
    """Oldest first, revoked keys included; never a secret."""
    keys = service(request).keys.list(principal.tenant)
    return KeyListOut(items=[KeyOut.of(k) for k in keys])


@router.get("/{key_id}", summary="One key", responses=auth_problems(404, 422))
def get_key(key_id: UUID, request: Request, principal: AdminOfKey) -> KeyOut:
    return KeyOut.of(service(request).keys.get(key_id, principal))


async def _revoke(
    key_id: UUID, request: Request, response: Response, principal: Principal
) -> KeyOut:
    info = await service(request).keys.revoke(key_id, principal)
    request.app.state.auth.directory.forget(key_id)  # here at once; elsewhere within the TTL
    mark_position(response, request)
    return KeyOut.of(info)


@router.post("/{key_id}/revoke", summary="Revoke a key", responses=auth_problems(404, 422, 503))
async def revoke_key(
    key_id: UUID, request: Request, response: Response, principal: AdminOfKey
) -> KeyOut:
    """Every worker refuses the key within `PAYLEDGER_AUTH_CACHE_TTL_S` (1 s by default).
    Revoking a revoked key answers the same."""
    return await _revoke(key_id, request, response, principal)


@router.delete(
    "/{key_id}",
    summary="Revoke a key (same as POST .../revoke)",
    responses=auth_problems(404, 422, 503),
)
async def delete_key(
    key_id: UUID, request: Request, response: Response, principal: AdminOfKey
) -> KeyOut:
    return await _revoke(key_id, request, response, principal)
