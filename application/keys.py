"""API keys: issue, revoke and list them; second-factor step-up.

Keys are aggregates (``domain/keys.py``) saved through the committer like accounts. A token is
``pl_live_<id>_<secret>`` with a 256-bit secret from ``secrets``; only a per-key salt and
``HMAC-SHA256(salt, secret)`` are stored.

Presented keys are verified by ``KeyDirectory`` (application/key_directory.py).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError

from application import totp
from application.commands import Principal
from application.unit_of_work import UnitOfWork
from domain.errors import FieldError, ValidationError
from domain.keys import (
    REGISTRY_ID,
    SECOND_FACTOR_ROLES,
    ApiKey,
    InvalidApiKey,
    KeyNotFound,
    KeyRegistry,
    OtpInvalid,
    OtpNotEnrolled,
    OtpRequired,
    OtpThrottled,
    Role,
    format_token,
    hash_secret,
)
from domain.money import currency_exponent

if TYPE_CHECKING:
    from application.service import Payledger


TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_NAME = 100
SECRET_BYTES = 32  # 256 bits
SALT_BYTES = 16
ROLES = tuple(role.value for role in Role)


@dataclass(frozen=True)
class CreateKey:
    tenant: str
    role: str
    name: str = ""
    totp: bool = False  # enrol a second factor (always done for approver and admin keys)


@dataclass(frozen=True)
class KeyInfo:
    id: UUID
    tenant: str
    role: str
    name: str
    second_factor: bool
    revoked: bool
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyInfo:
        return cls(
            id=key.id, tenant=key.tenant, role=key.role, name=key.name,
            second_factor=key.has_second_factor, revoked=key.revoked,
            created_at=key.created_on, revoked_at=key.revoked_at,
        )  # fmt: skip


@dataclass(frozen=True)
class IssuedKey:
    """A new key, as shown to its holder once: the token and the TOTP URI are never stored."""

    info: KeyInfo
    token: str
    totp_uri: str | None

    def __repr__(self) -> str:  # never the token in a log
        return f"IssuedKey({self.info.id}, {self.info.tenant}, {self.info.role})"


class OtpStatus(Enum):
    ACCEPTED = "accepted"
    INVALID = "invalid"
    THROTTLED = "throttled"
    NOT_ENROLLED = "not_enrolled"
    REVOKED = "revoked"


@dataclass(frozen=True)
class OtpOutcome:
    status: OtpStatus
    retry_after_s: float = 0.0


def principal_of(key: ApiKey) -> Principal:
    """The principal a key acts as. Its client (the idempotency namespace) and actor are
    ``key:<id>``: stable for the key's life, and every event it causes names it."""
    return Principal(
        tenant=key.tenant, client=f"key:{key.id}", role=key.role, key_id=key.id,
        second_factor=key.has_second_factor,
    )  # fmt: skip


class KeyHandlers:
    """Commands and reads on keys; decisions run in the committer (``decide_*``)."""

    def __init__(self, service: Payledger) -> None:
        self.service = service
        self._step_up_minor: dict[str, int] = {}  # currency -> step-up amount in minor units

    # --- issue ---------------------------------------------------------------------------------

    async def create(self, cmd: CreateKey, principal: Principal) -> IssuedKey:
        role = _validate_create(cmd)
        key_id = uuid4()
        secret = secrets.token_urlsafe(SECRET_BYTES)
        salt = secrets.token_bytes(SALT_BYTES)
        seed = totp.new_seed() if cmd.totp or role in SECOND_FACTOR_ROLES else None
        sealed = None if seed is None else totp.seal(seed, key_id, self.service.settings.secret_key)
        info = await self.service.commit(
            "keys", "decide_issue", key_id, cmd.tenant, str(role), cmd.name.strip(),
            salt, hash_secret(salt, secret), sealed, principal,
        )  # fmt: skip
        uri = None if seed is None else totp.provisioning_uri(seed, key_id, cmd.tenant, role)
        return IssuedKey(info, format_token(key_id, secret), uri)

    def decide_issue(
        self, key_id: UUID, tenant: str, role: str, name: str, salt: bytes, secret_hash: bytes,
        sealed: str | None, principal: Principal, uow: UnitOfWork,
    ) -> KeyInfo:  # fmt: skip
        registry = uow.get(REGISTRY_ID, KeyRegistry)
        if registry is None:
            registry = KeyRegistry.start(at=uow.now, actor=principal.actor)
            uow.add(registry)
        registry.list_key(key_id, tenant, at=uow.now, actor=principal.actor)
        key = ApiKey.issue(
            key_id=key_id, tenant=tenant, role=Role(role), name=name, salt=salt,
            secret_hash=secret_hash, at=uow.now, actor=principal.actor,
        )  # fmt: skip
        if sealed is not None:
            key.enrol_totp(sealed, at=uow.now, actor=principal.actor)
        uow.add(key)
        return KeyInfo.of(key)

    # --- revoke --------------------------------------------------------------------------------

    async def revoke(self, key_id: UUID, principal: Principal) -> KeyInfo:
        return await self.service.commit("keys", "decide_revoke", key_id, principal)  # type: ignore[no-any-return]

    def decide_revoke(self, key_id: UUID, principal: Principal, uow: UnitOfWork) -> KeyInfo:
        key = uow.get(key_id, ApiKey)
        if key is None or key.tenant != principal.tenant:
            raise KeyNotFound(f"key {key_id} does not exist")
        if not key.revoked:  # revoking twice is not an error: the key is revoked either way
            key.revoke(at=uow.now, actor=principal.actor)
        return KeyInfo.of(key)

    # --- reads (from the event store: keys are few) --------------------------------------------

    def load(self, key_id: UUID) -> ApiKey | None:
        try:
            found: Any = self.service.app.repository.get(key_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, ApiKey) else None

    def get(self, key_id: UUID, principal: Principal) -> KeyInfo:
        key = self.load(key_id)
        if key is None or key.tenant != principal.tenant:
            raise KeyNotFound(f"key {key_id} does not exist")
        return KeyInfo.of(key)

    def list(self, tenant: str | None) -> list[KeyInfo]:
        """A tenant's keys (every tenant's with None), oldest first, revoked ones included."""
        registry = self._registry()
        if registry is None:
            return []
        tenants = sorted(registry.keys) if tenant is None else [tenant]
        keys = (self.load(key_id) for t in tenants for key_id in registry.key_ids(t))
        return [KeyInfo.of(key) for key in keys if key is not None]

    def any_exist(self) -> bool:
        """Whether a key was ever issued (one read by id)."""
        return bool(list(self.service.app.events.get(REGISTRY_ID, limit=1)))

    def totp_uri(self, key_id: UUID) -> str:
        """The provisioning URI of a key's second factor again (the CLI, with the secret key)."""
        key = self.load(key_id)
        if key is None:
            raise KeyNotFound(f"key {key_id} does not exist")
        if key.totp_sealed is None:
            raise OtpNotEnrolled(f"key {key_id} has no second factor")
        seed = totp.unseal(key.totp_sealed, key.id, self.service.settings.secret_key)
        return totp.provisioning_uri(seed, key.id, key.tenant, key.role)

    def _registry(self) -> KeyRegistry | None:
        try:
            found: Any = self.service.app.repository.get(REGISTRY_ID)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, KeyRegistry) else None

    # --- step-up: a fresh TOTP code ------------------------------------------------------------

    def payment_needs_step_up(self, principal: Principal, amount_minor: int, currency: str) -> bool:
        """Whether a payment this large needs a code from this principal (keys only: the
        development sandbox and the CLI have no second factor)."""
        threshold = self.service.settings.step_up_amount
        if principal.key_id is None or threshold is None:
            return False
        threshold_minor = self._step_up_minor.get(currency)
        if threshold_minor is None:  # amount > t  <=>  amount_minor > floor(t in minor units)
            scaled = threshold.scaleb(currency_exponent(currency))
            threshold_minor = int(scaled.to_integral_value(rounding=ROUND_FLOOR))
            self._step_up_minor[currency] = threshold_minor
        return amount_minor > threshold_minor

    async def step_up(
        self, principal: Principal, code: str | None, *, unless_exists: UUID | None = None
    ) -> None:
        """Check a fresh TOTP code for ``principal``'s key, or raise. A code is accepted once
        (its time step is recorded on the key), failures are counted and the fifth locks the
        second factor for a while; every worker sees both. ``unless_exists``: an id whose
        existence waives the check (an idempotent replay of a request that passed it)."""
        if principal.key_id is None:
            return
        if not principal.second_factor:
            raise OtpNotEnrolled(
                "this operation needs a second factor and this key has none: use a key "
                "created with TOTP (approver and admin keys always have one)"
            )
        if unless_exists is not None and await asyncio.to_thread(self._exists, unless_exists):
            return
        if not code:
            raise OtpRequired(
                "this operation needs a fresh code from the key's authenticator app in the "
                "X-Payledger-OTP header"
            )
        outcome: OtpOutcome = await self.service.commit(
            "keys", "decide_check_otp", principal.key_id, code[:16], principal
        )
        _raise_for(outcome)

    def decide_check_otp(
        self, key_id: UUID, code: str, principal: Principal, uow: UnitOfWork
    ) -> OtpOutcome:
        settings = self.service.settings
        key = uow.get(key_id, ApiKey)
        if key is None or key.revoked:
            return OtpOutcome(OtpStatus.REVOKED)
        if key.totp_sealed is None:
            return OtpOutcome(OtpStatus.NOT_ENROLLED)
        now = uow.now
        if key.otp_locked(now):
            assert key.otp_locked_until is not None
            return OtpOutcome(OtpStatus.THROTTLED, (key.otp_locked_until - now).total_seconds())
        seed = totp.unseal(key.totp_sealed, key.id, settings.secret_key)
        step = totp.matching_step(seed, code, now)
        if step is not None and key.can_accept_otp_step(step):
            key.accept_otp(step, at=now, actor=principal.actor)
            return OtpOutcome(OtpStatus.ACCEPTED)
        lockout = timedelta(seconds=settings.otp_lockout_s)
        locked = key.fail_otp(
            at=now, actor=principal.actor, max_failures=settings.otp_max_failures, lockout=lockout
        )
        # The code that reaches the limit is still answered as wrong (it is); the lock
        # throttles what comes after it.
        return OtpOutcome(OtpStatus.INVALID, lockout.total_seconds() if locked else 0.0)

    def _exists(self, aggregate_id: UUID) -> bool:
        return bool(list(self.service.app.events.get(aggregate_id, limit=1)))


def _raise_for(outcome: OtpOutcome) -> None:
    status = outcome.status
    if status is OtpStatus.ACCEPTED:
        return
    if status is OtpStatus.THROTTLED:
        raise OtpThrottled(
            "too many wrong codes: the second factor of this key is locked for a while",
            outcome.retry_after_s,
        )
    if status is OtpStatus.NOT_ENROLLED:
        raise OtpNotEnrolled("this key has no second factor")
    if status is OtpStatus.REVOKED:
        raise InvalidApiKey("the API key is not valid")
    if outcome.retry_after_s:
        raise OtpInvalid(
            "the code is wrong, expired or was already used, and that was one too many: the "
            f"second factor of this key is locked for {outcome.retry_after_s:.0f} s"
        )
    raise OtpInvalid("the code is wrong, expired or was already used: send the next one")


def _validate_create(cmd: CreateKey) -> Role:
    errors: list[FieldError] = []
    if not isinstance(cmd.tenant, str) or not TENANT_PATTERN.fullmatch(cmd.tenant):
        errors.append(FieldError(
            "tenant", "must be 1-63 characters: a-z, 0-9, '_' or '-', starting with a letter "
            "or digit", "invalid_tenant",
        ))  # fmt: skip
    if cmd.role not in ROLES:
        errors.append(FieldError("role", f"must be one of {', '.join(ROLES)}", "invalid_role"))
    if not isinstance(cmd.name, str) or len(cmd.name) > MAX_NAME or not cmd.name.isprintable():
        errors.append(FieldError("name", f"must be at most {MAX_NAME} printable characters"))
    if errors:
        raise ValidationError(errors)
    return Role(cmd.role)
