"""Shared fixtures: every store-backed test runs on SQLite and on PostgreSQL.

PostgreSQL tests create and drop their own schema. Locally they skip loudly when no server
answers; under CI=true an unreachable PostgreSQL fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from application.settings import Settings
from application.store import StoreConfigError, parse_database_url

POSTGRES_URL = os.environ.get(
    "PAYLEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ZERO_LATENCY = {"card": 0, "alipay": 0, "wechat_pay": 0, "bank_transfer": 0}
_pg_problem: list[str | None] = []


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers (checked once per run)."""
    if not _pg_problem:
        try:
            parse_database_url(POSTGRES_URL).check_reachable(timeout_s=3)
            _pg_problem.append(None)
        except StoreConfigError as e:
            _pg_problem.append(str(e))
    return _pg_problem[0]


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    message = f"PostgreSQL UNAVAILABLE: {problem}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true requires PostgreSQL)", pytrace=False)
    pytest.skip(f"!!! {message} -- PostgreSQL tests SKIPPED; CI will fail without it")


def make_postgres_url() -> str:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}schema={schema}"


_NO_DIGITS = str.maketrans("0123456789", "ghijklmnop")


def idempotency_key(prefix: str = "test") -> str:
    """A fresh key with no digits: a random UUID's groups are sometimes 4-4-4-4 digits that
    pass the Luhn check, and the API refuses a key that looks like a card number."""
    return f"{prefix}-{uuid.uuid4().hex.translate(_NO_DIGITS)}"


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "env": "test",
        "sandbox_latency_ms": ZERO_LATENCY,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'payledger.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_postgres()
    url = make_postgres_url()
    yield url
    parse_database_url(url).drop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The same test on both stores."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
    else:
        yield request.getfixturevalue("postgres_url")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgres":
            item.add_marker(pytest.mark.postgres)
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
