"""Webhook endpoints of the caller's tenant: register, list, rotate the secret, disable, enable,
delete, and the delivery log.

Permission ``webhooks:manage`` (role ``admin``; the development sandbox too), in the caller's own
tenant only: the tenant comes from the key, never from the body, and another tenant's endpoint
answers 404 exactly as one that does not exist (or was deleted). The signing secret is in the
answers of ``POST /v1/webhook-endpoints`` and ``.../rotate-secret`` only (``Cache-Control:
no-store``); it is never shown again, stored only sealed, and never logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints

from application.commands import Principal
from application.webhooks import (
    DEFAULT_ROTATION_OVERLAP_S,
    EndpointInfo,
    EndpointWithSecret,
    RegisterEndpoint,
)
from domain.errors import ValidationError
from domain.webhooks import (
    EVENT_TYPES,
    MAX_DESCRIPTION,
    MAX_ENDPOINTS_PER_TENANT,
    MAX_ROTATION_OVERLAP_S,
    MAX_URL_LENGTH,
    EndpointNotFound,
    WebhookEndpoint,
)
from interfaces.http.authz import Allow, Permission, allow, check_owner
from interfaces.http.deps import service
from interfaces.http.routes._responses import auth_problems, mark_position
from projections.db import from_us
from projections.queries import BadCursor, decode_cursor, encode_cursor
from projections.webhooks import STATUSES, DeliveryLog, DeliveryRecord

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])

EventType = Literal[
    "payment.succeeded",
    "payment.failed",
    "payment.exception",
    "batch.completed",
    "reconciliation.discrepancy",
]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]
DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]
assert set(DeliveryStatus.__args__) == set(STATUSES)  # type: ignore[attr-defined]
MAX_PAGE = 100
EXAMPLE_URL = "https://example.com/payledger/webhooks"


class EndpointIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": EXAMPLE_URL,
                    "events": ["payment.succeeded", "payment.failed", "payment.exception"],
                    "description": "order service",
                }
            ]
        },
    )

    url: Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH)] = Field(
        description="Where notifications are POSTed: http(s) (https only in production), "
        f"at most {MAX_URL_LENGTH} characters, no credentials or fragment"
    )
    events: list[EventType] = Field(
        min_length=1,
        max_length=len(EVENT_TYPES),
        description="The event types to receive",
    )
    description: Annotated[StrictStr, StringConstraints(max_length=MAX_DESCRIPTION)] = ""


class RotateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"previous_secret_expires_in_s": 86400}]}
    )

    previous_secret_expires_in_s: StrictInt = Field(
        default=DEFAULT_ROTATION_OVERLAP_S,
        ge=0,
        le=MAX_ROTATION_OVERLAP_S,
        description="How long the current secret keeps signing beside the new one (seconds; "
        "0: it stops at once). Meanwhile every delivery carries one `v1` per live secret.",
    )


class EndpointOut(BaseModel):
    id: UUID
    url: str
    events: list[str]
    description: str
    status: Literal["enabled", "disabled"]
    signing_secrets: int = Field(description="Secrets signing each delivery now (2+ rotating)")
    previous_secret_expires_at: datetime | None = Field(
        description="When the last previous secret stops signing (null: none is live)"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: EndpointInfo) -> EndpointOut:
        return cls(**cls.fields_of(info))

    @staticmethod
    def fields_of(info: EndpointInfo) -> dict[str, Any]:
        return {
            "id": info.id,
            "url": info.url,
            "events": info.events,
            "description": info.description,
            "status": info.status,
            "signing_secrets": info.signing_secrets,
            "previous_secret_expires_at": info.previous_secret_expires_at,
            "created_at": info.created_at,
            "updated_at": info.updated_at,
        }


class EndpointSecretOut(EndpointOut):
    secret: str = Field(
        description="The signing secret (`whsec_...`): shown in this answer only. Verify "
        "`Payledger-Signature` with it (interfaces/webhooks/verify.py)."
    )

    @classmethod
    def of_secret(cls, created: EndpointWithSecret) -> EndpointSecretOut:
        return cls(**cls.fields_of(created.info), secret=created.secret)


class EndpointListOut(BaseModel):
    items: list[EndpointOut] = Field(max_length=MAX_ENDPOINTS_PER_TENANT)


class AttemptOut(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = Field(description="The receiver's status (null: no answer)")
    error: str | None = Field(description="Why it did not count as delivered")
    duration_ms: int | None
    next_retry_at: datetime | None = Field(description="When the next attempt is due")


class DeliveryOut(BaseModel):
    id: str = Field(description="The event id (the body's `id`, `Payledger-Event-Id`)")
    type: str
    entity_id: str
    sequence: int
    created_at: datetime
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    completed_at: datetime | None = Field(description="When it was delivered or given up")
    attempts: list[AttemptOut] = Field(description="Every attempt, oldest first (the last 50)")

    @classmethod
    def of(cls, d: DeliveryRecord) -> DeliveryOut:
        return cls(
            id=d.event_id, type=d.type, entity_id=d.entity_id, sequence=d.sequence,
            created_at=from_us(d.created_us), status=d.status, attempt_count=d.attempts,  # type: ignore[arg-type]
            next_attempt_at=from_us(d.next_attempt_us) if d.status == "pending" else None,
            last_status_code=d.last_status_code, last_error=d.last_error,
            completed_at=from_us(d.completed_us),
            attempts=[
                AttemptOut(
                    attempt=a.attempt, at=from_us(a.at_us), status_code=a.status_code,  # type: ignore[arg-type]
                    error=a.error, duration_ms=a.duration_ms,
                    next_retry_at=from_us(a.next_retry_us),
                )
                for a in d.attempt_log
            ],
        )  # fmt: skip


class DeliveryPageOut(BaseModel):
    items: list[DeliveryOut] = Field(max_length=MAX_PAGE)
    next_cursor: str | None = Field(description="Pass as `cursor` for older ones (null: none)")


async def _owner(
    endpoint_id: UUID,
    request: Request,
    principal: Annotated[Principal, Depends(allow(Permission.WEBHOOKS_MANAGE))],
) -> Principal:
    """``webhooks:manage``, and ``{endpoint_id}`` belongs to the caller's tenant (else 404)."""
    await check_owner(
        request, principal, endpoint_id, WebhookEndpoint.Registered, EndpointNotFound,
        "webhook endpoint",
    )  # fmt: skip
    return principal


Manager = Annotated[Principal, Allow(Permission.WEBHOOKS_MANAGE)]
Owner = Annotated[Principal, Depends(_owner)]


@router.post(
    "",
    status_code=201,
    summary="Register a webhook endpoint (its signing secret is in this answer only)",
    responses=auth_problems(400, 409, 422, 503),
)
async def register_endpoint(
    body: EndpointIn, request: Request, response: Response, principal: Manager
) -> EndpointSecretOut:
    """At most 16 endpoints per tenant (409 beyond). Notifications of payments requested from
    now on are delivered to it, signed with the secret in this answer."""
    command = RegisterEndpoint(body.url, list(body.events), body.description)
    created = await service(request).webhooks.register(command, principal)
    mark_position(response, request)
    response.headers["Cache-Control"] = "no-store"
    return EndpointSecretOut.of_secret(created)


@router.get("", summary="The caller's tenant's webhook endpoints", responses=auth_problems())
def list_endpoints(request: Request, principal: Manager) -> EndpointListOut:
    """In registration order; deleted ones are gone; never a secret."""
    endpoints = service(request).webhooks.list(principal)
    return EndpointListOut(items=[EndpointOut.of(e) for e in endpoints])


@router.get("/{endpoint_id}", summary="One webhook endpoint", responses=auth_problems(404, 422))
def get_endpoint(endpoint_id: UUID, request: Request, principal: Owner) -> EndpointOut:
    return EndpointOut.of(service(request).webhooks.get(endpoint_id, principal))


@router.post(
    "/{endpoint_id}/rotate-secret",
    summary="Rotate the signing secret (the new one is in this answer only)",
    responses=auth_problems(400, 404, 422, 503),
)
async def rotate_secret(
    endpoint_id: UUID,
    request: Request,
    response: Response,
    principal: Owner,
    body: RotateIn = RotateIn(),  # optional: without a body, the defaults
) -> EndpointSecretOut:
    """The previous secret keeps signing beside the new one for
    `previous_secret_expires_in_s` (default 24 h): deliveries carry a `v1` for each, so a
    receiver can switch secrets without losing one. Up to 3 secrets are live at once."""
    overlap = body.previous_secret_expires_in_s
    rotated = await service(request).webhooks.rotate_secret(endpoint_id, principal, overlap)
    mark_position(response, request)
    response.headers["Cache-Control"] = "no-store"
    return EndpointSecretOut.of_secret(rotated)


@router.post(
    "/{endpoint_id}/disable",
    summary="Stop sending to an endpoint (pending deliveries wait, up to their 24 h)",
    responses=auth_problems(404, 422, 503),
)
async def disable_endpoint(
    endpoint_id: UUID, request: Request, response: Response, principal: Owner
) -> EndpointOut:
    """Outcomes meanwhile are not queued for it; deliveries already queued resume if it is
    enabled again within their 24 h."""
    info = await service(request).webhooks.change(endpoint_id, "disable", principal)
    mark_position(response, request)
    return EndpointOut.of(info)


@router.post(
    "/{endpoint_id}/enable",
    summary="Send to an endpoint again",
    responses=auth_problems(404, 422, 503),
)
async def enable_endpoint(
    endpoint_id: UUID, request: Request, response: Response, principal: Owner
) -> EndpointOut:
    info = await service(request).webhooks.change(endpoint_id, "enable", principal)
    mark_position(response, request)
    return EndpointOut.of(info)


@router.delete(
    "/{endpoint_id}",
    status_code=204,
    summary="Delete an endpoint (its pending deliveries are cancelled)",
    responses=auth_problems(404, 422, 503),
)
async def delete_endpoint(
    endpoint_id: UUID, request: Request, response: Response, principal: Owner
) -> Response:
    await service(request).webhooks.change(endpoint_id, "delete", principal)
    mark_position(response, request)
    return Response(status_code=204, headers=dict(response.headers))


@router.get(
    "/{endpoint_id}/deliveries",
    summary="The delivery log: notifications sent to an endpoint and every attempt",
    responses=auth_problems(404, 422),
)
def list_deliveries(
    endpoint_id: UUID,
    request: Request,
    principal: Owner,
    status: Annotated[DeliveryStatus | None, Query(description="Only these")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DeliveryPageOut:
    """Newest first. `pending` ones show `next_attempt_at`; `failed` ones were not delivered
    within 24 h; `cancelled` ones belonged to a deleted endpoint."""
    service(request).webhooks.get(endpoint_id, principal)  # 404 once deleted
    before = None
    if cursor is not None:
        try:
            created_us, event_id = decode_cursor(cursor, 2)
            if not isinstance(created_us, int) or not isinstance(event_id, str):
                raise BadCursor("not a cursor from this API")
        except BadCursor as e:
            raise ValidationError.single("cursor", str(e), "invalid_cursor") from e
        before = (created_us, event_id)
    log = DeliveryLog(request.app.state.read.model.db)
    found = log.deliveries(
        endpoint_id, principal.tenant, status=status, limit=limit + 1, before=before
    )
    items, more = found[:limit], len(found) > limit
    last = items[-1] if items else None
    return DeliveryPageOut(
        items=[DeliveryOut.of(d) for d in items],
        next_cursor=encode_cursor(last.created_us, last.event_id) if more and last else None,
    )
