"""API keys: the ``ApiKey`` aggregate, its roles, the token format and its salted hash.

A key is shown to its holder once, as ``pl_live_<id>_<secret>``; the store keeps only a per-key
salt and ``HMAC-SHA256(salt, secret)``. Keys of roles that approve or administer carry a TOTP
second factor (its seed sealed by the application, never in clear). The last accepted TOTP time
step and the failures since are events, so every worker refuses a code used once, and a key
that failed too often is throttled everywhere.

``KeyRegistry`` is a single aggregate listing every key ever issued, per tenant: "does any key
exist?" is then one read by id, and listing a tenant's keys needs no view.
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import Conflict, NotFound, PayledgerError
from domain.ids import name_id

KEY_NAMESPACE = UUID("5d0f6c1e-3b8a-4f7e-9c2d-7a1b4e6f8d20")
REGISTRY_ID = name_id(KEY_NAMESPACE, "/keys/registry")
TOKEN_PREFIX = "pl_live_"
_TOKEN = re.compile(r"pl_live_([0-9a-f]{32})_([A-Za-z0-9_-]{20,128})")
MAX_KEYS_PER_TENANT = 1_000


class Role(StrEnum):
    SUBMITTER = "submitter"  # creates payments and batches for its tenant; reads them
    APPROVER = "approver"  # approves batches
    AUDITOR = "auditor"  # reads everything: events, views, metrics
    OPERATOR = "operator"  # exceptions, reconciliation, deposits; reads
    ADMIN = "admin"  # accounts, keys: everything in its tenant


# Roles whose keys must have a second factor (TOTP) from the moment they are issued.
SECOND_FACTOR_ROLES = frozenset({Role.APPROVER, Role.ADMIN})


# --- errors ----------------------------------------------------------------------------------


class AuthError(PayledgerError):
    """Authentication or authorization refused a request."""


class Unauthenticated(AuthError):
    """No key, or one that is not valid (unknown, revoked, malformed): 401."""

    code = "unauthenticated"


class InvalidApiKey(Unauthenticated):
    code = "invalid_api_key"


class Forbidden(AuthError):
    """A valid key whose role lacks the permission: 403."""

    code = "forbidden"


class OtpRequired(AuthError):
    code = "otp_required"


class OtpInvalid(AuthError):
    code = "otp_invalid"


class OtpNotEnrolled(AuthError):
    code = "otp_not_enrolled"


class OtpThrottled(AuthError):
    code = "otp_throttled"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class KeyNotFound(NotFound):
    code = "key_not_found"


class KeyRevoked(Conflict):
    code = "key_revoked"


# --- the token -------------------------------------------------------------------------------


def format_token(key_id: UUID, secret: str) -> str:
    return f"{TOKEN_PREFIX}{key_id.hex}_{secret}"


def parse_token(token: str) -> tuple[UUID, str] | None:
    """The key id and secret of a well-formed token, else None (never says why)."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    return UUID(hex=match.group(1)), match.group(2)


def hash_secret(salt: bytes, secret: str) -> bytes:
    return hmac.digest(salt, secret.encode(), "sha256")


def secret_matches(salt: bytes, expected_hash: bytes, secret: str) -> bool:
    return hmac.compare_digest(hash_secret(salt, secret), expected_hash)


# --- the aggregates --------------------------------------------------------------------------


class ApiKey(Aggregate):
    class Issued(Aggregate.Created):
        actor: str
        tenant: str
        role: str
        name: str
        salt: str  # hex
        secret_hash: str  # hex of HMAC-SHA256(salt, secret)

        def apply(self, aggregate: Any) -> None:
            aggregate.tenant = self.tenant
            aggregate.role = self.role
            aggregate.name = self.name
            aggregate.salt = self.salt
            aggregate.secret_hash = self.secret_hash
            aggregate.revoked = False
            aggregate.revoked_at = None
            aggregate.totp_sealed = None
            aggregate.last_otp_step = -1
            aggregate.otp_failures = 0
            aggregate.otp_locked_until = None

    class Event(Aggregate.Event):
        actor: str

    class TotpEnrolled(Event):
        totp_sealed: str  # the TOTP seed, sealed by the application

        def apply(self, aggregate: Any) -> None:
            aggregate.totp_sealed = self.totp_sealed
            aggregate.last_otp_step = -1
            aggregate.otp_failures = 0
            aggregate.otp_locked_until = None

    class Revoked(Event):
        def apply(self, aggregate: Any) -> None:
            aggregate.revoked = True
            aggregate.revoked_at = self.timestamp

    class OtpAccepted(Event):
        time_step: int

        def apply(self, aggregate: Any) -> None:
            aggregate.last_otp_step = self.time_step
            aggregate.otp_failures = 0
            aggregate.otp_locked_until = None

    class OtpFailed(Event):
        failures: int  # consecutive failures, this one included
        locked_until: datetime | None  # set by the failure that reached the limit

        def apply(self, aggregate: Any) -> None:
            aggregate.otp_failures = self.failures
            aggregate.otp_locked_until = self.locked_until

    if TYPE_CHECKING:  # set by the events; annotations here would become __init__ args
        tenant: str
        role: str
        name: str
        salt: str
        secret_hash: str
        revoked: bool
        revoked_at: datetime | None
        totp_sealed: str | None
        last_otp_step: int
        otp_failures: int
        otp_locked_until: datetime | None

    @classmethod
    def issue(
        cls,
        *,
        key_id: UUID,
        tenant: str,
        role: Role,
        name: str,
        salt: bytes,
        secret_hash: bytes,
        at: datetime,
        actor: str,
    ) -> ApiKey:
        return cls._create(
            cls.Issued, id=key_id, timestamp=at, actor=actor, tenant=tenant, role=str(role),
            name=name, salt=salt.hex(), secret_hash=secret_hash.hex(),
        )  # fmt: skip

    # --- queries -------------------------------------------------------------------------------

    @property
    def has_second_factor(self) -> bool:
        return self.totp_sealed is not None

    def otp_locked(self, now: datetime) -> bool:
        return self.otp_locked_until is not None and now < self.otp_locked_until

    def matches(self, secret: str) -> bool:
        return secret_matches(bytes.fromhex(self.salt), bytes.fromhex(self.secret_hash), secret)

    # --- commands ------------------------------------------------------------------------------

    def enrol_totp(self, sealed: str, *, at: datetime, actor: str) -> None:
        self._check_active()
        self.trigger_event(self.TotpEnrolled, timestamp=at, actor=actor, totp_sealed=sealed)

    def revoke(self, *, at: datetime, actor: str) -> None:
        self._check_active()
        self.trigger_event(self.Revoked, timestamp=at, actor=actor)

    def can_accept_otp_step(self, time_step: int) -> bool:
        """A code is accepted once: only a time step after the last accepted one."""
        return time_step > self.last_otp_step

    def accept_otp(self, time_step: int, *, at: datetime, actor: str) -> None:
        self._check_active()
        if not self.can_accept_otp_step(time_step):
            raise Conflict(f"time step {time_step} was already used on key {self.id}")
        self.trigger_event(self.OtpAccepted, timestamp=at, actor=actor, time_step=time_step)

    def fail_otp(self, *, at: datetime, actor: str, max_failures: int, lockout: timedelta) -> bool:
        """Count a wrong (or reused) code; the one that reaches ``max_failures`` locks the
        second factor for ``lockout``. Returns whether it is now locked."""
        expired = self.otp_locked_until is not None and at >= self.otp_locked_until
        failures = 1 if expired else self.otp_failures + 1
        locked_until = at + lockout if failures >= max_failures else None
        self.trigger_event(
            self.OtpFailed, timestamp=at, actor=actor, failures=failures,
            locked_until=locked_until,
        )  # fmt: skip
        return locked_until is not None

    def _check_active(self) -> None:
        if self.revoked:
            raise KeyRevoked(f"key {self.id} is revoked")


class KeyRegistry(Aggregate):
    """Every key ever issued, by tenant (one aggregate: keys are few and issued rarely)."""

    class Started(Aggregate.Created):
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.keys = {}  # tenant -> [key id (str)], in issue order

    class Event(Aggregate.Event):
        actor: str

    class KeyListed(Event):
        key_id: str
        tenant: str

        def apply(self, aggregate: Any) -> None:
            aggregate.keys.setdefault(self.tenant, []).append(self.key_id)

    if TYPE_CHECKING:
        keys: dict[str, list[str]]

    @classmethod
    def start(cls, *, at: datetime, actor: str) -> KeyRegistry:
        return cls._create(cls.Started, id=REGISTRY_ID, timestamp=at, actor=actor)

    def list_key(self, key_id: UUID, tenant: str, *, at: datetime, actor: str) -> None:
        if len(self.keys.get(tenant, [])) >= MAX_KEYS_PER_TENANT:
            raise Conflict(f"tenant {tenant!r} already has {MAX_KEYS_PER_TENANT} keys")
        self.trigger_event(
            self.KeyListed, timestamp=at, actor=actor, key_id=str(key_id), tenant=tenant
        )

    def key_ids(self, tenant: str) -> list[UUID]:
        return [UUID(k) for k in self.keys.get(tenant, [])]
