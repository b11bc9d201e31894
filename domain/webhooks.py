"""Webhook endpoints: where a tenant wants its notifications delivered, and the secrets that sign
them.

A ``WebhookEndpoint`` belongs to one tenant and subscribes to event types (``EVENT_TYPES``). Its
signing secrets are kept *sealed* (the application encrypts them with a key derived from
``PAYLEDGER_SECRET_KEY`` before they reach an event: ``application/webhooks.py``), so neither
the event store nor the views hold one in clear. Rotating the secret keeps the previous one for
an overlap period: every delivery meanwhile carries one signature per live secret.

``WebhookRegistry`` (one per tenant) lists the tenant's endpoints, so that listing them needs no
view and the per-tenant limit is decided atomically with the registration.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import Conflict, NotFound
from domain.ids import name_id

WEBHOOK_NAMESPACE = UUID("6b1f0e52-8d3c-4a7e-b5f4-2c9d1e7a3f80")

#: Every event type an endpoint may subscribe to.
EVENT_TYPES = (
    "payment.succeeded",  # a payment's final outcome: the money moved
    "payment.failed",  # a final outcome: refused by the rules (rejected) or by the channel
    "payment.exception",  # the channel's answer is unknown (funds stay held until resolved)
    "batch.completed",  # a batch finished: completed, completed_with_failures or failed
    "reconciliation.discrepancy",  # a reconciliation run found discrepancies
)
#: The payment outcomes: a tenant's payments are followed only while it listens to one of them.
PAYMENT_TYPES = frozenset({"payment.succeeded", "payment.failed", "payment.exception"})
BATCH_COMPLETED = "batch.completed"
RECONCILIATION_DISCREPANCY = "reconciliation.discrepancy"
#: The types something emits (every type an endpoint may subscribe to).
EMITTED_TYPES = PAYMENT_TYPES | {BATCH_COMPLETED, RECONCILIATION_DISCREPANCY}

MAX_ENDPOINTS_PER_TENANT = 16
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION = 200
#: Live signing secrets at most (the current one and the previous ones still overlapping).
MAX_SECRETS = 3
MAX_ROTATION_OVERLAP_S = 7 * 86_400


class EndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"


class EndpointDeleted(Conflict):
    code = "webhook_endpoint_deleted"


def registry_id(tenant: str) -> UUID:
    return name_id(WEBHOOK_NAMESPACE, f"/tenants/{tenant}/webhook-endpoints")


def live_secrets(secrets: list[dict[str, Any]], at: datetime) -> list[dict[str, Any]]:
    """The secrets that still sign at ``at``: the current one (no expiry) first, then the
    previous ones until their expiry, newest first, at most ``MAX_SECRETS``."""
    live = [s for s in secrets if s["expires_at"] is None or s["expires_at"] > at]
    return live[:MAX_SECRETS]


class WebhookEndpoint(Aggregate):
    class Registered(Aggregate.Created):
        actor: str
        tenant: str
        url: str
        events: list[str]
        description: str
        secret_sealed: str

        def apply(self, aggregate: Any) -> None:
            aggregate.tenant = self.tenant
            aggregate.url = self.url
            aggregate.events = list(self.events)
            aggregate.description = self.description
            aggregate.secrets = [{"sealed": self.secret_sealed, "expires_at": None}]
            aggregate.enabled = True
            aggregate.deleted = False

    class Event(Aggregate.Event):
        actor: str

    class SecretRotated(Event):
        secret_sealed: str
        # Until when the secret it replaces still signs (None: it stops at once).
        previous_expires_at: datetime | None

        def apply(self, aggregate: Any) -> None:
            current, *older = aggregate.secrets
            kept = []
            if self.previous_expires_at is not None and self.previous_expires_at > self.timestamp:
                kept.append({"sealed": current["sealed"], "expires_at": self.previous_expires_at})
            kept += older
            aggregate.secrets = live_secrets(
                [{"sealed": self.secret_sealed, "expires_at": None}, *kept], self.timestamp
            )

    class Disabled(Event):
        def apply(self, aggregate: Any) -> None:
            aggregate.enabled = False

    class Enabled(Event):
        def apply(self, aggregate: Any) -> None:
            aggregate.enabled = True

    class Deleted(Event):
        def apply(self, aggregate: Any) -> None:
            aggregate.enabled = False
            aggregate.deleted = True

    if TYPE_CHECKING:  # set by the events; annotations here would become __init__ args
        tenant: str
        url: str
        events: list[str]
        description: str
        secrets: list[dict[str, Any]]  # [{"sealed", "expires_at"}], current first
        enabled: bool
        deleted: bool

    @classmethod
    def register(
        cls,
        *,
        endpoint_id: UUID,
        tenant: str,
        url: str,
        events: list[str],
        description: str,
        secret_sealed: str,
        at: datetime,
        actor: str,
    ) -> WebhookEndpoint:
        unknown = [e for e in events if e not in EVENT_TYPES]
        if unknown or not events:
            raise ValueError(f"unknown or no event types: {unknown}")
        return cls._create(
            cls.Registered, id=endpoint_id, timestamp=at, actor=actor, tenant=tenant, url=url,
            events=list(events), description=description, secret_sealed=secret_sealed,
        )  # fmt: skip

    # --- queries -------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return "deleted" if self.deleted else "enabled" if self.enabled else "disabled"

    def signing_secrets(self, at: datetime) -> list[dict[str, Any]]:
        return live_secrets(self.secrets, at)

    # --- commands ------------------------------------------------------------------------------

    def rotate_secret(
        self, secret_sealed: str, *, previous_expires_at: datetime | None, at: datetime, actor: str
    ) -> None:
        self._check_not_deleted()
        self.trigger_event(
            self.SecretRotated, timestamp=at, actor=actor, secret_sealed=secret_sealed,
            previous_expires_at=previous_expires_at,
        )  # fmt: skip

    def disable(self, *, at: datetime, actor: str) -> None:
        self._check_not_deleted()
        if self.enabled:
            self.trigger_event(self.Disabled, timestamp=at, actor=actor)

    def enable(self, *, at: datetime, actor: str) -> None:
        self._check_not_deleted()
        if not self.enabled:
            self.trigger_event(self.Enabled, timestamp=at, actor=actor)

    def delete(self, *, at: datetime, actor: str) -> None:
        if not self.deleted:
            self.trigger_event(self.Deleted, timestamp=at, actor=actor)

    def _check_not_deleted(self) -> None:
        if self.deleted:
            raise EndpointDeleted(f"webhook endpoint {self.id} is deleted")


class WebhookRegistry(Aggregate):
    """A tenant's endpoints (ids, in registration order; deleted ones leave the list)."""

    class Started(Aggregate.Created):
        actor: str
        tenant: str

        def apply(self, aggregate: Any) -> None:
            aggregate.tenant = self.tenant
            aggregate.endpoints = []

    class Event(Aggregate.Event):
        actor: str

    class EndpointAdded(Event):
        endpoint_id: str

        def apply(self, aggregate: Any) -> None:
            aggregate.endpoints.append(self.endpoint_id)

    class EndpointRemoved(Event):
        endpoint_id: str

        def apply(self, aggregate: Any) -> None:
            aggregate.endpoints.remove(self.endpoint_id)

    if TYPE_CHECKING:
        tenant: str
        endpoints: list[str]

    @classmethod
    def start(cls, tenant: str, *, at: datetime, actor: str) -> WebhookRegistry:
        return cls._create(
            cls.Started, id=registry_id(tenant), timestamp=at, actor=actor, tenant=tenant
        )

    def add(self, endpoint_id: UUID, *, at: datetime, actor: str) -> None:
        if len(self.endpoints) >= MAX_ENDPOINTS_PER_TENANT:
            raise Conflict(
                f"tenant {self.tenant!r} already has {MAX_ENDPOINTS_PER_TENANT} webhook "
                "endpoints: delete one first"
            )
        self.trigger_event(self.EndpointAdded, timestamp=at, actor=actor,
                           endpoint_id=str(endpoint_id))  # fmt: skip

    def remove(self, endpoint_id: UUID, *, at: datetime, actor: str) -> None:
        if str(endpoint_id) in self.endpoints:
            self.trigger_event(self.EndpointRemoved, timestamp=at, actor=actor,
                               endpoint_id=str(endpoint_id))  # fmt: skip

    def endpoint_ids(self) -> list[UUID]:
        return [UUID(e) for e in self.endpoints]
