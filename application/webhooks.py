"""Webhook endpoints: register, list, rotate the signing secret, disable, enable, delete.

Endpoints are aggregates (``domain/webhooks.py``) decided through the committer like accounts
and keys (``service.commit("webhooks", "decide_...")``). Notifications are not sent from here:
the ``webhooks`` projection (``projections/webhooks.py``) turns payment outcomes into outbox
rows in the same transaction as its tracking position, and the deliverer
(``projections/webhook_delivery.py``) posts them, signed, with retries.

A signing secret is ``whsec_`` followed by 256 random bits (URL-safe base64). It is shown to the
caller once, when created or rotated; events and views keep it only sealed with AES-GCM under a
key derived from ``PAYLEDGER_SECRET_KEY`` (the endpoint id as associated data), so that the
deliverer can sign with it and nobody reading the database can. Changing
``PAYLEDGER_SECRET_KEY`` therefore makes the existing secrets unusable: rotate every endpoint's
secret afterwards (deliveries fail with ``signing secret cannot be opened`` until then).
"""

from __future__ import annotations

import ipaddress
import secrets as random_secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from application.commands import Principal
from application.sealing import Sealer
from application.sealing import SealError as SealError  # re-exported for callers
from application.unit_of_work import UnitOfWork
from domain.errors import FieldError, ValidationError
from domain.webhooks import (
    EVENT_TYPES,
    MAX_DESCRIPTION,
    MAX_ROTATION_OVERLAP_S,
    MAX_URL_LENGTH,
    EndpointNotFound,
    WebhookEndpoint,
    WebhookRegistry,
    registry_id,
)

if TYPE_CHECKING:
    from application.service import Payledger

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SEAL_VERSION = "s1"
SEAL_CONTEXT = b"payledger webhook signing secret v1"
DEFAULT_ROTATION_OVERLAP_S = 86_400


class WebhookSettings(BaseSettings):
    """Delivery settings (``PAYLEDGER_WEBHOOK_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="PAYLEDGER_WEBHOOK_", extra="ignore", hide_input_in_errors=True
    )

    # "inline": every API process runs a deliverer thread (one per store works at a time, the
    # others stand by); "off": `payledger webhooks deliver --follow` runs elsewhere.
    delivery: Literal["inline", "off"] = "inline"
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    read_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Retries: exponential backoff from `retry_base_s`, doubling up to `retry_max_s`, each delay
    # jittered down to half; a notification not delivered `max_age_s` after it was created
    # (24 h) is marked failed.
    retry_base_s: float = Field(default=10.0, gt=0, le=3_600)
    retry_max_s: float = Field(default=3_600.0, gt=0, le=86_400)
    max_age_s: float = Field(default=86_400.0, gt=0, le=7 * 86_400)
    concurrency: int = Field(default=4, ge=1, le=64)  # requests in flight per deliverer
    poll_s: float = Field(default=0.2, gt=0, le=60)  # how often an idle deliverer looks

    @property
    def lease_s(self) -> float:
        """How long a claimed notification is hidden from other claims while its request
        runs: longer than any request can take. A deliverer that dies meanwhile leaves it to be
        claimed again once this has passed (at-least-once)."""
        return 2 * (self.connect_timeout_s + self.read_timeout_s) + 5


# --- secrets -------------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + random_secrets.token_urlsafe(SECRET_BYTES)


_SEALER = Sealer(SEAL_CONTEXT, SEAL_VERSION, "the signing secret")


def seal_secret(secret: str, endpoint_id: UUID, secret_key: str | bytes) -> str:
    return _SEALER.seal(secret, endpoint_id, secret_key)


def unseal_secret(sealed: str, endpoint_id: UUID, secret_key: str | bytes) -> str:
    return _SEALER.unseal(sealed, endpoint_id, secret_key)


# --- validation ----------------------------------------------------------------------------------


def validate_url(url: Any, *, production: bool) -> str:
    """An absolute http(s) URL of at most ``MAX_URL_LENGTH`` characters, with a host, without
    credentials or fragment. In production: https only, and not a loopback, private,
    link-local or otherwise reserved IP literal nor ``localhost``."""

    def bad(reason: str, code: str = "invalid_url") -> ValidationError:
        return ValidationError.single("url", reason, code)

    if not isinstance(url, str) or not url:
        raise bad("must be an absolute http or https URL")
    if len(url) > MAX_URL_LENGTH:
        raise bad(f"must be at most {MAX_URL_LENGTH} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise bad("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a bad port raises here
    except ValueError as e:
        raise bad(f"is not a valid URL ({e})") from e
    schemes = ("https",) if production else ("http", "https")
    if parts.scheme.lower() not in schemes:
        raise bad(
            "must use https" if production else "must be an http or https URL",
            "url_scheme_not_allowed",
        )
    host = parts.hostname
    if not host:
        raise bad("must name a host")
    if parts.username is not None or parts.password is not None:
        raise bad("must not contain credentials (user:password@)")
    if parts.fragment:
        raise bad("must not contain a fragment (#...)")
    if production and _internal_host(host):
        raise bad("must not point at a local, private or reserved address", "url_host_not_allowed")
    return url


def _internal_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:  # the legacy IPv4 spellings resolvers also accept: 2130706433, 127.1, 0x7f.0.0.1
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False  # a name: resolved when delivering (see docs: DNS is not checked)
    return not address.is_global or address.is_multicast


def validate_events(events: Any) -> list[str]:
    if not isinstance(events, list | tuple) or not events:
        raise ValidationError.single(
            "events", "must list at least one event type", "invalid_events"
        )
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise ValidationError.single(
            "events", f"unknown event types {unknown[:5]}: choose from {', '.join(EVENT_TYPES)}",
            "invalid_events",
        )  # fmt: skip
    return list(dict.fromkeys(events))  # in order, without repeats


def validate_description(description: Any) -> str:
    if (
        not isinstance(description, str)
        or len(description) > MAX_DESCRIPTION
        or (description and not description.isprintable())
    ):
        raise ValidationError.single(
            "description", f"must be at most {MAX_DESCRIPTION} printable characters"
        )
    return description.strip()


# --- commands and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterEndpoint:
    url: str
    events: list[str]
    description: str = ""


@dataclass(frozen=True)
class EndpointInfo:
    id: UUID
    tenant: str
    url: str
    events: list[str]
    description: str
    status: str  # enabled | disabled | deleted
    signing_secrets: int  # how many secrets sign each delivery now (2+ during a rotation)
    previous_secret_expires_at: datetime | None  # when the last previous secret stops signing
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of(cls, endpoint: WebhookEndpoint, now: datetime) -> EndpointInfo:
        live = endpoint.signing_secrets(now)
        expiries = [s["expires_at"] for s in live if s["expires_at"] is not None]
        return cls(
            id=endpoint.id, tenant=endpoint.tenant, url=endpoint.url, events=list(endpoint.events),
            description=endpoint.description, status=endpoint.status, signing_secrets=len(live),
            previous_secret_expires_at=max(expiries) if expiries else None,
            created_at=endpoint.created_on, updated_at=endpoint.modified_on,
            version=endpoint.version,
        )  # fmt: skip


@dataclass(frozen=True)
class EndpointWithSecret:
    """An endpoint just registered or rotated, with its new secret: shown to the caller once,
    never stored in clear, never logged."""

    info: EndpointInfo
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"EndpointWithSecret({self.info.id}, {self.info.tenant})"


Action = Literal["disable", "enable", "delete"]


class WebhookHandlers:
    """Commands and reads on webhook endpoints; decisions run in the committer."""

    def __init__(self, service: Payledger) -> None:
        self.service = service
        self.settings = WebhookSettings()

    @property
    def production(self) -> bool:
        return self.service.settings.env == "production"

    def _seal(self, secret: str, endpoint_id: UUID) -> str:
        return seal_secret(secret, endpoint_id, self.service.settings.secret_key)

    # --- register ------------------------------------------------------------------------------

    async def register(self, cmd: RegisterEndpoint, principal: Principal) -> EndpointWithSecret:
        errors: list[FieldError] = []

        def checked(check: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return check(*args, **kwargs)
            except ValidationError as e:
                errors.extend(e.errors)
                return None

        url = checked(validate_url, cmd.url, production=self.production)
        events = checked(validate_events, cmd.events)
        description = checked(validate_description, cmd.description)
        if errors:
            raise ValidationError(errors)
        endpoint_id = uuid4()
        secret = new_secret()
        info = await self.service.commit(
            "webhooks", "decide_register", endpoint_id, url, events, description,
            self._seal(secret, endpoint_id), principal,
        )  # fmt: skip
        return EndpointWithSecret(info, secret)

    def decide_register(
        self, endpoint_id: UUID, url: str, events: list[str], description: str, sealed: str,
        principal: Principal, uow: UnitOfWork,
    ) -> EndpointInfo:  # fmt: skip
        registry = uow.get(registry_id(principal.tenant), WebhookRegistry)
        if registry is None:
            registry = WebhookRegistry.start(principal.tenant, at=uow.now, actor=principal.actor)
            uow.add(registry)
        registry.add(endpoint_id, at=uow.now, actor=principal.actor)
        endpoint = WebhookEndpoint.register(
            endpoint_id=endpoint_id, tenant=principal.tenant, url=url, events=events,
            description=description, secret_sealed=sealed, at=uow.now, actor=principal.actor,
        )  # fmt: skip
        uow.add(endpoint)
        return EndpointInfo.of(endpoint, uow.now)

    # --- rotate the secret ---------------------------------------------------------------------

    async def rotate_secret(
        self,
        endpoint_id: UUID,
        principal: Principal,
        previous_expires_in_s: int = DEFAULT_ROTATION_OVERLAP_S,
    ) -> EndpointWithSecret:
        """A new secret; the current one keeps signing for ``previous_expires_in_s`` seconds
        (0: it stops at once), so receivers can switch without dropping a notification."""
        if not isinstance(previous_expires_in_s, int) or not (
            0 <= previous_expires_in_s <= MAX_ROTATION_OVERLAP_S
        ):
            raise ValidationError.single(
                "previous_secret_expires_in_s",
                f"must be an integer from 0 to {MAX_ROTATION_OVERLAP_S} seconds",
            )
        secret = new_secret()
        info = await self.service.commit(
            "webhooks", "decide_rotate", endpoint_id, self._seal(secret, endpoint_id),
            previous_expires_in_s, principal,
        )  # fmt: skip
        return EndpointWithSecret(info, secret)

    def decide_rotate(
        self, endpoint_id: UUID, sealed: str, overlap_s: int, principal: Principal, uow: UnitOfWork
    ) -> EndpointInfo:
        endpoint = self._owned(uow.get(endpoint_id, WebhookEndpoint), endpoint_id, principal)
        expires = uow.now + timedelta(seconds=overlap_s) if overlap_s > 0 else None
        endpoint.rotate_secret(
            sealed, previous_expires_at=expires, at=uow.now, actor=principal.actor
        )
        return EndpointInfo.of(endpoint, uow.now)

    # --- disable, enable, delete ---------------------------------------------------------------

    async def change(self, endpoint_id: UUID, action: Action, principal: Principal) -> EndpointInfo:
        return await self.service.commit(  # type: ignore[no-any-return]
            "webhooks", "decide_change", endpoint_id, action, principal
        )

    def decide_change(
        self, endpoint_id: UUID, action: Action, principal: Principal, uow: UnitOfWork
    ) -> EndpointInfo:
        endpoint = self._owned(uow.get(endpoint_id, WebhookEndpoint), endpoint_id, principal)
        if action == "disable":
            endpoint.disable(at=uow.now, actor=principal.actor)
        elif action == "enable":
            endpoint.enable(at=uow.now, actor=principal.actor)
        elif action == "delete":
            endpoint.delete(at=uow.now, actor=principal.actor)
            registry = uow.get(registry_id(principal.tenant), WebhookRegistry)
            if registry is not None:
                registry.remove(endpoint_id, at=uow.now, actor=principal.actor)
        else:
            raise ValueError(f"unknown action {action!r}")
        return EndpointInfo.of(endpoint, uow.now)

    # --- reads (from the event store: endpoints are few) ---------------------------------------

    def load(self, endpoint_id: UUID) -> WebhookEndpoint | None:
        try:
            found: Any = self.service.app.repository.get(endpoint_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, WebhookEndpoint) else None

    def get(self, endpoint_id: UUID, principal: Principal) -> EndpointInfo:
        endpoint = self._owned(self.load(endpoint_id), endpoint_id, principal)
        return EndpointInfo.of(endpoint, self.service.clock.now())

    def list(self, principal: Principal) -> list[EndpointInfo]:
        """The tenant's endpoints (not deleted), in registration order."""
        try:
            registry: Any = self.service.app.repository.get(registry_id(principal.tenant))
        except AggregateNotFoundError:
            return []
        now = self.service.clock.now()
        endpoints = (self.load(i) for i in registry.endpoint_ids())
        return [
            EndpointInfo.of(e, now)
            for e in endpoints
            if e is not None and e.tenant == principal.tenant and not e.deleted
        ]

    @staticmethod
    def _owned(
        endpoint: WebhookEndpoint | None, endpoint_id: UUID, principal: Principal
    ) -> WebhookEndpoint:
        """Another tenant's endpoint, a deleted one and none at all look the same: 404."""
        if endpoint is None or endpoint.tenant != principal.tenant or endpoint.deleted:
            raise EndpointNotFound(f"webhook endpoint {endpoint_id} does not exist")
        return endpoint


def signing_secrets(
    sealed: list[tuple[str, int | None]], endpoint_id: UUID, secret_key: str, now_us: int
) -> list[str]:
    """The secrets (opened) that sign a delivery at ``now_us``, current first, from an
    endpoint view row's ``[(sealed, expires_us or None), ...]``."""
    return [
        unseal_secret(s, endpoint_id, secret_key)
        for s, expires_us in sealed
        if expires_us is None or expires_us > now_us
    ]
