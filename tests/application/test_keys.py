"""API keys in the application: what the store keeps, the directory's cache and TTL, the
sandbox's end, step-up codes across two services on one store (two workers), on both stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from application.commands import ANONYMOUS, Principal
from application.key_directory import KeyDirectory
from application.keys import CreateKey, IssuedKey, principal_of
from application.service import Payledger
from application.totp import SealError, code_at, seal, seed_of_uri, unseal
from domain.errors import ValidationError
from domain.keys import (
    InvalidApiKey,
    KeyNotFound,
    OtpInvalid,
    OtpNotEnrolled,
    OtpRequired,
    OtpThrottled,
    Unauthenticated,
)
from tests.conftest import make_settings

CLI = Principal(tenant="acme", client="cli:tests")


def create(
    svc: Payledger, role: str = "submitter", *, tenant: str = "acme", totp: bool = False
) -> IssuedKey:
    return asyncio.run(svc.keys.create(CreateKey(tenant, role, "test", totp), CLI))


def authenticate(directory: KeyDirectory, token: str | None) -> Principal:
    header = None if token is None else f"Bearer {token}"
    return asyncio.run(directory.principal(header))


@pytest.fixture
def two_services(database_url: str) -> Iterator[tuple[Payledger, Payledger]]:
    """Two processes' worth of service (each its own committer and caches) on one store."""
    settings = make_settings(database_url, otp_lockout_s=60)
    with Payledger(settings) as first, Payledger(settings, create_tables=False) as second:
        yield first, second


def test_the_store_keeps_neither_the_secret_nor_the_totp_seed(service: Payledger) -> None:
    issued = create(service, "admin")
    secret = issued.token[41:]  # pl_live_ + 32 hex + _
    seed = seed_of_uri(issued.totp_uri or "")
    stored = b"".join(
        n.state for n in service.app.recorder.select_notifications(start=1, limit=1000)
    )

    assert secret.encode() not in stored and seed.encode() not in stored
    key = service.keys.load(issued.info.id)
    assert key is not None and key.matches(secret) and key.totp_sealed
    assert unseal(key.totp_sealed, key.id, service.settings.secret_key) == seed
    assert "pl_live_" not in repr(issued)


def test_a_seed_sealed_under_another_secret_key_or_key_id_does_not_open() -> None:
    key_id = UUID(int=1)
    sealed = seal("JBSWY3DPEHPK3PXP", key_id, "one secret")

    assert unseal(sealed, key_id, "one secret") == "JBSWY3DPEHPK3PXP"
    with pytest.raises(SealError):
        unseal(sealed, key_id, "another secret")
    with pytest.raises(SealError):
        unseal(sealed, UUID(int=2), "one secret")


def test_roles_and_tenants_are_validated(service: Payledger) -> None:
    with pytest.raises(ValidationError) as refused:
        asyncio.run(service.keys.create(CreateKey("Acme Corp", "root", "x" * 101), CLI))
    assert {e.field for e in refused.value.errors} == {"tenant", "role", "name"}
    assert not service.keys.any_exist()


def test_approvers_and_admins_always_get_a_second_factor(service: Payledger) -> None:
    kinds = {
        role: create(service, role).totp_uri is not None
        for role in ("submitter", "approver", "auditor", "operator", "admin")
    }
    assert kinds == {
        "submitter": False,
        "approver": True,
        "auditor": False,
        "operator": False,
        "admin": True,
    }
    assert create(service, "submitter", totp=True).totp_uri is not None


def test_the_directory_authenticates_caches_and_forgets_within_the_ttl(service: Payledger) -> None:
    issued = create(service, "auditor")
    directory = KeyDirectory(service.keys, ttl_s=0.2, production=False)

    principal = authenticate(directory, issued.token)
    assert principal == principal_of(service.keys.load(issued.info.id))  # type: ignore[arg-type]
    assert principal.client == principal.actor == f"key:{issued.info.id}"
    assert (principal.tenant, principal.role, principal.key_id) == (
        "acme",
        "auditor",
        issued.info.id,
    )
    with pytest.raises(InvalidApiKey):
        authenticate(directory, issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B"))
    with pytest.raises(InvalidApiKey):  # a cached id does not excuse a malformed token
        authenticate(directory, "pl_test_" + issued.token[8:])
    with pytest.raises(InvalidApiKey):
        asyncio.run(directory.principal(f"Basic {issued.token}"))

    asyncio.run(service.keys.revoke(issued.info.id, CLI))
    assert authenticate(directory, issued.token) == principal  # still cached
    time.sleep(0.25)
    with pytest.raises(InvalidApiKey):
        authenticate(directory, issued.token)


def test_the_sandbox_ends_with_the_first_key_for_good(service: Payledger) -> None:
    directory = KeyDirectory(service.keys, ttl_s=0.0, production=False)
    assert authenticate(directory, None) == ANONYMOUS

    issued = create(service)
    with pytest.raises(Unauthenticated):
        authenticate(directory, None)
    asyncio.run(service.keys.revoke(issued.info.id, CLI))
    with pytest.raises(Unauthenticated):
        authenticate(directory, None)
    production = KeyDirectory(service.keys, ttl_s=1.0, production=True)
    with pytest.raises(Unauthenticated):
        authenticate(production, None)


def test_keys_are_listed_per_tenant_and_revoked_only_in_their_tenant(service: Payledger) -> None:
    acme, globex = create(service), create(service, tenant="globex")

    assert [k.id for k in service.keys.list("acme")] == [acme.info.id]
    assert {k.id for k in service.keys.list(None)} == {acme.info.id, globex.info.id}
    with pytest.raises(KeyNotFound):
        asyncio.run(service.keys.revoke(globex.info.id, CLI))
    with pytest.raises(KeyNotFound):
        service.keys.get(globex.info.id, CLI)
    events = list(service.app.events.get(acme.info.id))
    assert {e.actor for e in events} == {"cli:tests"}  # type: ignore[attr-defined]


def test_step_up_accepts_a_code_once_across_two_services(
    two_services: tuple[Payledger, Payledger],
) -> None:
    first, second = two_services
    issued = create(first, "approver")
    principal = principal_of(first.keys.load(issued.info.id))  # type: ignore[arg-type]
    seed = seed_of_uri(issued.totp_uri or "")
    code = code_at(seed, datetime.now(UTC))

    with pytest.raises(OtpRequired):
        asyncio.run(first.keys.step_up(principal, None))
    asyncio.run(first.keys.step_up(principal, code))
    with pytest.raises(OtpInvalid):
        asyncio.run(second.keys.step_up(principal, code))  # its committer never saw the key
    with pytest.raises(OtpInvalid):
        asyncio.run(first.keys.step_up(principal, code))
    with pytest.raises(OtpNotEnrolled):
        asyncio.run(first.keys.step_up(principal_of(first.keys.load(create(first).info.id)), code))  # type: ignore[arg-type]


def test_failures_on_two_services_add_up_to_the_lock(
    two_services: tuple[Payledger, Payledger],
) -> None:
    first, second = two_services
    issued = create(first, "admin")
    principal = principal_of(first.keys.load(issued.info.id))  # type: ignore[arg-type]
    right = code_at(seed_of_uri(issued.totp_uri or ""), datetime.now(UTC))
    wrong = "12345a"  # malformed codes count as failures too

    for svc in (first, second, first, second, first):
        with pytest.raises(OtpInvalid):
            asyncio.run(svc.keys.step_up(principal, wrong))
    with pytest.raises(OtpThrottled) as locked:  # after the fifth, even the right code
        asyncio.run(second.keys.step_up(principal, right))
    with pytest.raises(OtpThrottled):
        asyncio.run(first.keys.step_up(principal, wrong))
    assert 0 < locked.value.retry_after_s <= 60


def test_the_step_up_amount_is_in_the_payments_own_currency(service: Payledger) -> None:
    key = Principal(tenant="acme", client="key:x", role="submitter", key_id=UUID(int=3))
    needs = service.keys.payment_needs_step_up
    assert service.settings.step_up_amount == Decimal("10000")

    assert not needs(key, 1_000_000, "CNY") and needs(key, 1_000_001, "CNY")  # 10000.01
    assert not needs(key, 10_000, "JPY") and needs(key, 10_001, "JPY")
    assert needs(key, 10_000_001, "KWD") and not needs(key, 10_000_000, "KWD")
    assert not needs(ANONYMOUS, 10**12, "CNY")  # the sandbox has no second factor


def test_key_decisions_run_in_the_committer_process(sqlite_url: str) -> None:
    """``PAYLEDGER_COMMITTER=process`` (what ``payledger serve`` uses): issue, step up, revoke."""
    with Payledger(make_settings(sqlite_url, committer="process")) as svc:
        issued = create(svc, "admin")
        principal = principal_of(svc.keys.load(issued.info.id))  # type: ignore[arg-type]
        code = code_at(seed_of_uri(issued.totp_uri or ""), datetime.now(UTC))
        asyncio.run(svc.keys.step_up(principal, code))
        with pytest.raises(OtpInvalid):
            asyncio.run(svc.keys.step_up(principal, code))
        revoked = asyncio.run(svc.keys.revoke(issued.info.id, CLI))

    assert revoked.revoked and revoked.second_factor


def test_a_step_up_amount_finer_than_the_currency_rounds_the_right_way() -> None:
    from types import SimpleNamespace

    from application.keys import KeyHandlers
    from application.settings import Settings

    fake: Any = SimpleNamespace(settings=Settings(step_up_amount="10000.005", env="test"))
    needs = KeyHandlers(fake).payment_needs_step_up
    key = Principal(tenant="acme", client="key:x", role="submitter", key_id=UUID(int=4))

    assert not needs(key, 1_000_000, "CNY") and needs(key, 1_000_001, "CNY")
    assert not needs(key, 10_000, "JPY") and needs(key, 10_001, "JPY")
    assert not needs(key, 10_000_005, "KWD") and needs(key, 10_000_006, "KWD")


def test_the_default_lockout_is_fifteen_minutes() -> None:
    """Issue 5: five wrong codes lock approval for that principal for 15 minutes."""
    from application.settings import Settings

    assert (Settings().otp_max_failures, Settings().otp_lockout_s) == (5, 15 * 60)
