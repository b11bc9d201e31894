"""API keys over real HTTP: the sandbox until the first key, 401 without a valid key, revocation
within the cache's TTL, the admin API, the actor on every event, per-key rate limits, and
production mode."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from application.settings import Settings
from interfaces.http.app import create_app
from tests.conftest import make_settings
from tests.interfaces.conftest import Api, LiveServer, new_key, serving
from tests.interfaces.keys_helpers import issue, new_tenant, problem_code, revoke

TTL_S = 0.2  # the servers here trust a verified key this long


@pytest.fixture
def keyed_server(database_url: str) -> Iterator[LiveServer]:
    with serving(create_app(make_settings(database_url, auth_cache_ttl_s=TTL_S))) as live:
        yield live


def wait_for_status(request: Any, status: int, within_s: float = 5.0) -> httpx.Response:
    deadline = time.monotonic() + within_s
    while True:
        response = request()
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def assert_unauthorized(response: httpx.Response, code: str = "unauthenticated") -> None:
    assert response.status_code == 401, response.text
    assert problem_code(response) == code
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["type"] == f"urn:payledger:problem:{code}" and body["status"] == 401


# --- the sandbox, then keys ------------------------------------------------------------------


def test_the_sandbox_works_until_the_first_key_then_every_request_needs_one(
    keyed_server: LiveServer,
) -> None:
    base = keyed_server.base_url
    anonymous = Api(httpx.Client(base_url=base, timeout=30))
    account = anonymous.open_account()  # no key exists: the quick start works

    admin = issue(keyed_server.service, "default", "admin")
    refused = wait_for_status(lambda: anonymous.client.get(f"/v1/accounts/{account['id']}"), 401)

    assert_unauthorized(refused)
    assert refused.headers["www-authenticate"] == "Bearer"
    with admin.client(base) as c:
        assert c.get(f"/v1/accounts/{account['id']}").status_code == 200
    # Revoking every key does not reopen the sandbox.
    revoke(keyed_server.service, admin)
    time.sleep(TTL_S * 2)
    assert_unauthorized(anonymous.client.get("/v1/payments"))


def test_bad_keys_are_401_invalid_api_key_and_probes_and_docs_stay_open(
    keyed_server: LiveServer,
) -> None:
    key = issue(keyed_server.service, new_tenant(), "auditor")
    wrong_secret = key.token[:-4] + ("AAAA" if not key.token.endswith("AAAA") else "BBBB")
    unknown = "pl_live_" + "0" * 32 + "_" + key.token[41:]
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as c:
        for authorization in (
            f"Bearer {wrong_secret}",
            f"Bearer {unknown}",
            "Bearer pl_live_nonsense",
            f"Basic {key.token}",
            "Bearer",
        ):
            response = c.get("/v1/payments", headers={"Authorization": authorization})
            assert_unauthorized(response, "invalid_api_key")
            assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert key.token[41:] not in response.text
        assert_unauthorized(c.get("/v1/payments"))
        for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
            assert c.get(path).status_code == 200, path
        assert c.get("/v1/payments", headers=key.auth).status_code == 200


def test_the_openapi_document_declares_the_api_key_scheme(keyed_server: LiveServer) -> None:
    schema = httpx.get(f"{keyed_server.base_url}/openapi.json").json()

    scheme = schema["components"]["securitySchemes"]["ApiKey"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            secured = operation.get("security") == [{"ApiKey": []}]
            assert secured == (path not in ("/healthz", "/readyz")), (method, path)
            if secured:
                assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)


# --- revocation ----------------------------------------------------------------------------------


def test_a_key_revoked_elsewhere_is_refused_within_the_ttl(keyed_server: LiveServer) -> None:
    key = issue(keyed_server.service, new_tenant(), "auditor")
    with key.client(keyed_server.base_url) as c:
        assert c.get("/v1/payments").status_code == 200  # now cached by the server

        revoke(keyed_server.service, key)  # as the CLI or another worker would: no message
        revoked_at = time.monotonic()
        refused = wait_for_status(lambda: c.get("/v1/payments"), 401)
        took_s = time.monotonic() - revoked_at

    assert_unauthorized(refused, "invalid_api_key")
    assert took_s < TTL_S + 1.0


def test_a_key_revoked_through_the_api_is_refused_at_once(keyed_server: LiveServer) -> None:
    tenant = new_tenant()
    admin = issue(keyed_server.service, tenant, "admin")
    victim = issue(keyed_server.service, tenant, "submitter")
    base = keyed_server.base_url
    with admin.client(base) as a, victim.client(base) as v:
        assert v.get("/v1/payments").status_code == 200
        revoked = a.post(f"/v1/keys/{victim.id}/revoke")
        refused = v.get("/v1/payments")
        again = a.delete(f"/v1/keys/{victim.id}")

    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert revoked.json()["revoked_at"]
    assert_unauthorized(refused, "invalid_api_key")
    assert again.status_code == 200 and again.json()["revoked"] is True


# --- the admin API ---------------------------------------------------------------------------


def test_an_admin_issues_lists_and_reads_keys_of_its_own_tenant(keyed_server: LiveServer) -> None:
    tenant = new_tenant()
    admin = issue(keyed_server.service, tenant, "admin")
    other_admin = issue(keyed_server.service, new_tenant(), "admin")
    base = keyed_server.base_url
    with admin.client(base) as a:
        no_code = a.post("/v1/keys", json={"role": "submitter"})
        created = a.post(
            "/v1/keys",
            json={"role": "approver", "name": "batch approver"},
            headers={"X-Payledger-OTP": admin.code()},
        )
        in_body = a.post(
            "/v1/keys",
            json={"role": "submitter", "tenant": "someone-else"},
            headers={"X-Payledger-OTP": admin.code(1)},
        )
        listed = a.get("/v1/keys")
        one = a.get(f"/v1/keys/{created.json()['id']}")
    with other_admin.client(base) as o:
        theirs = o.get("/v1/keys")
        not_theirs = o.get(f"/v1/keys/{admin.id}")

    assert no_code.status_code == 403 and problem_code(no_code) == "otp_required"
    assert created.status_code == 201, created.text
    new = created.json()
    assert new["tenant"] == tenant and new["role"] == "approver" and new["name"] == "batch approver"
    assert new["key"].startswith("pl_live_") and new["second_factor"] is True
    assert new["totp_uri"].startswith("otpauth://totp/")
    assert created.headers["cache-control"] == "no-store"
    assert in_body.status_code == 422
    assert [e["field"] for e in in_body.json()["errors"]] == ["tenant"]
    assert listed.status_code == 200
    assert [k["id"] for k in listed.json()["items"]] == [admin.id, new["id"]]
    assert new["key"] not in listed.text and "secret" not in listed.text
    assert "key" not in one.json() and one.json()["id"] == new["id"]
    assert [k["id"] for k in theirs.json()["items"]] == [other_admin.id]
    assert not_theirs.status_code == 404 and problem_code(not_theirs) == "key_not_found"
    with httpx.Client(
        base_url=base, timeout=30, headers={"Authorization": f"Bearer {new['key']}"}
    ) as c:
        assert c.get("/v1/payments").status_code == 200


# --- every event names its principal -----------------------------------------------------------


def test_events_record_the_key_that_caused_them(keyed_server: LiveServer) -> None:
    tenant = new_tenant()
    admin = issue(keyed_server.service, tenant, "admin")
    submitter = issue(keyed_server.service, tenant, "submitter")
    base = keyed_server.base_url
    with admin.client(base) as a, submitter.client(base) as s:
        payer = Api(a).funded_account("100.00")
        payee = Api(a).merchant()
        body = {
            "amount": "10.00", "currency": "CNY", "channel": "internal",
            "payer_account_id": payer, "payee_account_id": payee,
        }  # fmt: skip
        paid = s.post("/v1/payments", json=body, headers={"Idempotency-Key": new_key()})
        history = a.get(f"/v1/payments/{paid.json()['id']}/events")

    assert paid.status_code == 201 and paid.json()["status"] == "succeeded"
    events = history.json()["events"]
    assert events and {e["actor"] for e in events} == {f"key:{submitter.id}"}
    account = keyed_server.service.app.repository.get(uuid.UUID(payer))
    assert account.tenant == tenant


# --- rate limits ------------------------------------------------------------------------------


@pytest.fixture
def limited_server(sqlite_url: str) -> Iterator[LiveServer]:
    settings = make_settings(sqlite_url, rate_limit_per_s=2, rate_limit_burst=3)
    with serving(create_app(settings)) as live:
        yield live


def test_each_key_is_rate_limited_with_retry_after(limited_server: LiveServer) -> None:
    tenant = new_tenant()
    busy = issue(limited_server.service, tenant, "auditor")
    calm = issue(limited_server.service, tenant, "auditor")
    with busy.client(limited_server.base_url) as b, calm.client(limited_server.base_url) as c:
        answers = [b.get("/v1/payments") for _ in range(4)]
        other_key = c.get("/v1/payments")
        retry_after = int(answers[-1].headers["retry-after"])
        time.sleep(retry_after)
        later = b.get("/v1/payments")

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert problem_code(limited) == "rate_limited" and limited.json()["status"] == 429
    assert retry_after == 1  # half a second to the next token, rounded up
    assert other_key.status_code == 200
    assert later.status_code == 200


# --- production -------------------------------------------------------------------------------


def production_settings(database_url: str) -> Settings:
    extra: dict[str, Any] = {"env": "production", "secret_key": "a-production-secret-key"}
    if "encryption_key" in Settings.model_fields:  # encryption at rest: required there
        from application.encryption import new_key

        extra["encryption_key"] = new_key()
    return make_settings(database_url, **extra)


def test_production_without_keys_refuses_every_request(sqlite_url: str) -> None:
    with (
        serving(create_app(production_settings(sqlite_url))) as live,
        httpx.Client(base_url=live.base_url, timeout=30) as c,
    ):
        payments = c.get("/v1/payments")
        opened = c.post("/v1/accounts", json={"owner": "a", "currency": "CNY"})
        health = c.get("/healthz")

    assert_unauthorized(payments)
    assert_unauthorized(opened)
    assert health.status_code == 200
