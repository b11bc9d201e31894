"""Two-factor step-up over real HTTP: payments above ``PAYLEDGER_STEP_UP_AMOUNT`` need a fresh
TOTP code in ``X-Payledger-OTP``; a code is accepted once, on every worker; five wrong codes
lock the key's second factor for ``PAYLEDGER_OTP_LOCKOUT_S``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from interfaces.http.app import create_app
from tests.conftest import make_settings
from tests.interfaces.conftest import Api, LiveServer, new_key, serving
from tests.interfaces.keys_helpers import HttpKey, issue, new_tenant, problem_code

STEP_UP = "1000"  # CNY: payments above this need a code
LOCKOUT_S = 2


@pytest.fixture
def workers(database_url: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two API processes' worth (each its own service and committer) on one database."""
    settings = make_settings(
        database_url, step_up_amount=STEP_UP, otp_lockout_s=LOCKOUT_S, auth_cache_ttl_s=0.2
    )
    with ExitStack() as stack:
        first = stack.enter_context(serving(create_app(settings)))
        second = stack.enter_context(serving(create_app(settings)))
        yield first, second


@dataclass
class Tenant:
    submitter: HttpKey  # with a second factor
    plain: HttpKey  # a submitter without one
    payer: str
    payee: str

    def body(self, amount: str) -> dict[str, Any]:
        return {
            "amount": amount, "currency": "CNY", "channel": "internal",
            "payer_account_id": self.payer, "payee_account_id": self.payee,
        }  # fmt: skip


def set_up(live: LiveServer) -> Tenant:
    tenant = new_tenant()
    admin = issue(live.service, tenant, "admin")
    with admin.client(live.base_url) as a:
        payer = Api(a).funded_account("100000.00")
        payee = Api(a).merchant()
    submitter = issue(live.service, tenant, "submitter", totp=True)
    plain = issue(live.service, tenant, "submitter")
    return Tenant(submitter, plain, payer, payee)


def wrong_code(key: HttpKey) -> str:
    """A well-formed code that no step near now has."""
    near = {key.code(steps) for steps in (-1, 0, 1, 2)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in near)


def pay(
    client: httpx.Client, body: dict[str, Any], otp: str | None = None, key: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": key or new_key()}
    if otp is not None:
        headers["X-Payledger-OTP"] = otp
    return client.post("/v1/payments", json=body, headers=headers)


def test_a_large_payment_needs_a_fresh_code_once(workers: tuple[LiveServer, LiveServer]) -> None:
    live = workers[0]
    t = set_up(live)
    with t.submitter.client(live.base_url) as s, t.plain.client(live.base_url) as p:
        small = pay(s, t.body("1000.00"))  # at the threshold: no code
        missing = pay(s, t.body("1000.01"))
        wrong = pay(s, t.body("1000.01"), otp=wrong_code(t.submitter))
        key = new_key()
        code = t.submitter.code()
        ok = pay(s, t.body("2500.00"), otp=code, key=key)
        reused = pay(s, t.body("2500.00"), otp=code)
        replay = pay(s, t.body("2500.00"), key=key)  # the same request again: no code needed
        no_factor = pay(p, t.body("5000.00"), otp=code)

    assert small.status_code == 201 and small.json()["status"] == "succeeded"
    assert missing.status_code == 403 and problem_code(missing) == "otp_required"
    assert wrong.status_code == 403 and problem_code(wrong) == "otp_invalid"
    assert ok.status_code == 201 and ok.json()["status"] == "succeeded", ok.text
    assert reused.status_code == 403 and problem_code(reused) == "otp_invalid"
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == ok.json()["id"]
    assert no_factor.status_code == 403 and problem_code(no_factor) == "otp_not_enrolled"
    # Refused requests recorded no payment.
    for refused in (missing, wrong, reused):
        assert refused.json()["errors"] == []
    events = [type(e).__name__ for e in live.service.app.events.get(uuid.UUID(t.submitter.id))]
    assert events.count("OtpAccepted") == 1 and events.count("OtpFailed") == 2


def test_a_code_used_on_one_worker_is_refused_on_the_other(
    workers: tuple[LiveServer, LiveServer],
) -> None:
    first, second = workers
    t = set_up(first)
    code = t.submitter.code()
    with t.submitter.client(first.base_url) as a, t.submitter.client(second.base_url) as b:
        on_first = pay(a, t.body("3000.00"), otp=code)
        on_second = pay(b, t.body("3000.00"), otp=code)
        next_code = pay(b, t.body("3000.00"), otp=t.submitter.code(1))

    assert on_first.status_code == 201, on_first.text
    assert on_second.status_code == 403 and problem_code(on_second) == "otp_invalid"
    assert next_code.status_code == 201, next_code.text


def test_five_wrong_codes_lock_the_second_factor_on_every_worker(
    workers: tuple[LiveServer, LiveServer],
) -> None:
    first, second = workers
    t = set_up(first)
    right, wrong = t.submitter.code(), wrong_code(t.submitter)
    with t.submitter.client(first.base_url) as a, t.submitter.client(second.base_url) as b:
        failures = [pay(c, t.body("2000.00"), otp=wrong) for c in (a, b, a, b, a)]
        locked = pay(b, t.body("2000.00"), otp=right)  # even the right code, elsewhere too
        small = pay(b, t.body("10.00"))  # the key itself still works below the threshold
        time.sleep(LOCKOUT_S + 0.2)
        unlocked = pay(a, t.body("2000.00"), otp=right)

    # Five wrong codes are five wrong answers; what comes after them is throttled.
    assert [r.status_code for r in failures] == [403] * 5
    assert [problem_code(r) for r in failures] == ["otp_invalid"] * 5
    assert "locked" in failures[4].json()["detail"]
    assert locked.status_code == 429 and problem_code(locked) == "otp_throttled"
    assert 1 <= int(locked.headers["retry-after"]) <= LOCKOUT_S
    assert small.status_code == 201
    assert unlocked.status_code == 201, unlocked.text


def test_the_sandbox_and_keys_below_the_threshold_need_no_code(
    workers: tuple[LiveServer, LiveServer],
) -> None:
    """Anonymous (no key exists yet in a fresh store) has no second factor to ask for."""
    live = workers[0]
    api = Api(httpx.Client(base_url=live.base_url, timeout=30))
    if live.service.keys.any_exist():
        pytest.skip("keys exist in this store already")
    payer, payee = api.funded_account("5000.00"), api.merchant()
    body = {
        "amount": "4000.00", "currency": "CNY", "channel": "internal",
        "payer_account_id": payer, "payee_account_id": payee,
    }  # fmt: skip
    response = pay(api.client, body)
    assert response.status_code == 201 and response.json()["status"] == "succeeded"
