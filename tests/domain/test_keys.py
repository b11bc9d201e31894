"""The ApiKey and KeyRegistry aggregates, the token format and its salted hash."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import Conflict
from domain.keys import (
    MAX_KEYS_PER_TENANT,
    REGISTRY_ID,
    ApiKey,
    KeyRegistry,
    KeyRevoked,
    Role,
    format_token,
    hash_secret,
    parse_token,
    secret_matches,
)

AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LOCKOUT = timedelta(minutes=5)


def a_key(**overrides: object) -> tuple[ApiKey, str]:
    secret, salt = "s" * 43, b"0123456789abcdef"
    values: dict[str, object] = {
        "key_id": uuid.uuid4(), "tenant": "acme", "role": Role.ADMIN, "name": "ops",
        "salt": salt, "secret_hash": hash_secret(salt, secret), "at": AT, "actor": "cli:root",
    } | overrides  # fmt: skip
    return ApiKey.issue(**values), secret  # type: ignore[arg-type]


def test_a_token_round_trips_and_malformed_ones_parse_to_none() -> None:
    key_id = uuid.uuid4()
    token = format_token(key_id, "AbC-_123" * 5)

    assert token.startswith("pl_live_") and parse_token(token) == (key_id, "AbC-_123" * 5)
    bad = ["", "pl_live_", token + " ", token.upper(), "pl_test_" + token[8:], token + "!"]
    bad += [token.replace("_", "-", 2), f"pl_live_{key_id.hex}_short"]
    for text in bad:
        assert parse_token(text) is None, text


def test_only_a_salted_hash_is_kept_and_the_secret_matches_it() -> None:
    key, secret = a_key()

    assert (
        secret not in repr(vars(key))
        and key.secret_hash == hash_secret(bytes.fromhex(key.salt), secret).hex()
    )
    assert key.matches(secret) and not key.matches(secret[:-1] + "t")
    assert not secret_matches(b"another salt....", bytes.fromhex(key.secret_hash), secret)
    assert hash_secret(b"a", secret) != hash_secret(b"b", secret)


def test_a_revoked_key_cannot_change_any_more() -> None:
    key, _ = a_key()
    key.enrol_totp("v1:sealed", at=AT, actor="cli:root")
    key.revoke(at=AT, actor="key:1")

    assert key.revoked and key.revoked_at == AT
    with pytest.raises(KeyRevoked):
        key.revoke(at=AT, actor="key:1")
    with pytest.raises(KeyRevoked):
        key.accept_otp(5, at=AT, actor="key:1")


def test_a_time_step_is_accepted_once_and_only_forwards() -> None:
    key, _ = a_key()
    key.enrol_totp("v1:sealed", at=AT, actor="cli:root")
    key.accept_otp(100, at=AT, actor="key:1")

    assert key.last_otp_step == 100
    assert not key.can_accept_otp_step(100) and not key.can_accept_otp_step(99)
    with pytest.raises(Conflict):
        key.accept_otp(100, at=AT, actor="key:1")
    key.accept_otp(101, at=AT, actor="key:1")
    assert [type(e).__name__ for e in key.collect_events()][-2:] == ["OtpAccepted", "OtpAccepted"]


def test_the_fifth_failure_locks_until_the_lockout_ends_and_then_counts_again() -> None:
    key, _ = a_key()
    fail = lambda at: key.fail_otp(at=at, actor="key:1", max_failures=5, lockout=LOCKOUT)  # noqa: E731

    assert [fail(AT) for _ in range(4)] == [False] * 4 and not key.otp_locked(AT)
    assert fail(AT) is True and key.otp_failures == 5
    assert key.otp_locked(AT + LOCKOUT - timedelta(seconds=1))
    assert not key.otp_locked(AT + LOCKOUT)
    assert fail(AT + LOCKOUT) is False and key.otp_failures == 1  # a fresh count


def test_an_accepted_code_resets_the_failures() -> None:
    key, _ = a_key()
    for _ in range(4):
        key.fail_otp(at=AT, actor="key:1", max_failures=5, lockout=LOCKOUT)
    key.accept_otp(7, at=AT, actor="key:1")

    assert key.otp_failures == 0
    assert key.fail_otp(at=AT, actor="key:1", max_failures=5, lockout=LOCKOUT) is False


def test_the_registry_lists_keys_per_tenant_up_to_a_bound() -> None:
    registry = KeyRegistry.start(at=AT, actor="cli:root")
    first, second = uuid.uuid4(), uuid.uuid4()
    registry.list_key(first, "acme", at=AT, actor="cli:root")
    registry.list_key(second, "globex", at=AT, actor="cli:root")

    assert registry.id == REGISTRY_ID
    assert registry.key_ids("acme") == [first] and registry.key_ids("nobody") == []
    registry.keys["acme"] = ["x"] * MAX_KEYS_PER_TENANT
    with pytest.raises(Conflict):
        registry.list_key(uuid.uuid4(), "acme", at=AT, actor="cli:root")
