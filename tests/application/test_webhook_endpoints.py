"""Webhook endpoints in the application: URL rules (https only in production), sealed secrets,
rotation overlap, the per-tenant limit, tenant isolation of the handlers; both stores for the
decisions (they run in the committer)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from application.commands import ANONYMOUS, Principal
from application.webhooks import (
    RegisterEndpoint,
    SealError,
    new_secret,
    seal_secret,
    unseal_secret,
    validate_url,
)
from domain.errors import Conflict, ValidationError
from domain.webhooks import MAX_ENDPOINTS_PER_TENANT, EndpointNotFound, WebhookEndpoint

URL = "https://hooks.example.com/payledger"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/p?x=1",
        "https://hooks.example.com:8443/p",
        "https://93.184.216.34/p",
        "https://[2606:2800:220:1::1]/p",
        "https://1572395042/p",  # 93.184.216.34 as one number: public, so allowed
    ],
)
def test_production_accepts_public_https_urls(url):
    assert validate_url(url, production=True) == url


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.example.com/p", "url_scheme_not_allowed"),
        ("https://localhost/p", "url_host_not_allowed"),
        ("https://api.localhost/p", "url_host_not_allowed"),
        ("https://127.0.0.1/p", "url_host_not_allowed"),
        ("https://10.1.2.3/p", "url_host_not_allowed"),
        ("https://192.168.0.10/p", "url_host_not_allowed"),
        ("https://169.254.169.254/latest/meta-data", "url_host_not_allowed"),  # cloud metadata
        ("https://[::1]/p", "url_host_not_allowed"),
        ("https://0.0.0.0/p", "url_host_not_allowed"),
        # 127.0.0.1 and 10.0.0.1 in the legacy spellings resolvers accept too
        ("https://2130706433/p", "url_host_not_allowed"),
        ("https://0x7f.0.0.1/p", "url_host_not_allowed"),
        ("https://127.1/p", "url_host_not_allowed"),
        ("https://017700000001/p", "url_host_not_allowed"),
        ("https://10.1/p", "url_host_not_allowed"),
        ("https://[::ffff:127.0.0.1]/p", "url_host_not_allowed"),
    ],
)
def test_production_refuses_plain_http_and_internal_hosts(url, code):
    with pytest.raises(ValidationError) as e:
        validate_url(url, production=True)
    assert e.value.errors[0].field == "url" and e.value.errors[0].code == code


def test_outside_production_http_and_local_receivers_are_allowed():
    assert validate_url("http://127.0.0.1:9000/hooks", production=False)
    with pytest.raises(ValidationError):
        validate_url("ftp://example.com/", production=False)
    with pytest.raises(ValidationError):
        validate_url("https://example.com:99999/", production=False)


def test_secrets_are_sealed_to_their_endpoint_and_key():
    secret, endpoint = new_secret(), uuid4()
    sealed = seal_secret(secret, endpoint, "key-1")
    assert secret not in sealed and sealed.startswith("s1:")
    assert seal_secret(secret, endpoint, "key-1") != sealed  # a fresh nonce every time
    assert unseal_secret(sealed, endpoint, "key-1") == secret
    with pytest.raises(SealError):
        unseal_secret(sealed, endpoint, "key-2")  # PAYLEDGER_SECRET_KEY changed
    with pytest.raises(SealError):
        unseal_secret(sealed, uuid4(), "key-1")  # copied onto another endpoint


def test_rotation_keeps_the_previous_secret_until_its_expiry():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    endpoint = WebhookEndpoint.register(
        endpoint_id=uuid4(), tenant="t", url=URL, events=["payment.failed"], description="",
        secret_sealed="s0", at=at, actor="test",
    )  # fmt: skip
    endpoint.rotate_secret("s1", previous_expires_at=at + timedelta(hours=1), at=at, actor="t")
    assert [s["sealed"] for s in endpoint.signing_secrets(at)] == ["s1", "s0"]
    assert [s["sealed"] for s in endpoint.signing_secrets(at + timedelta(hours=2))] == ["s1"]
    endpoint.rotate_secret("s2", previous_expires_at=None, at=at, actor="t")
    assert [s["sealed"] for s in endpoint.signing_secrets(at)] == ["s2", "s0"]


def test_registration_seals_the_secret_in_the_event(service):
    created = asyncio.run(service.webhooks.register(RegisterEndpoint(URL, ["payment.failed"]),
                                                   ANONYMOUS))  # fmt: skip
    stored = list(service.app.events.get(created.info.id))
    assert created.secret not in repr(vars(stored[0]))
    assert created.secret not in repr(created)  # never in a log line either
    sealed = stored[0].secret_sealed
    assert unseal_secret(sealed, created.info.id, service.settings.secret_key) == created.secret


def test_a_tenant_has_at_most_so_many_endpoints(service):
    for _ in range(MAX_ENDPOINTS_PER_TENANT):
        asyncio.run(service.webhooks.register(RegisterEndpoint(URL, ["payment.failed"]),
                                              ANONYMOUS))  # fmt: skip
    with pytest.raises(Conflict):
        asyncio.run(service.webhooks.register(RegisterEndpoint(URL, ["payment.failed"]),
                                              ANONYMOUS))  # fmt: skip
    other = Principal(tenant="globex", client="cli:test")
    asyncio.run(service.webhooks.register(RegisterEndpoint(URL, ["payment.failed"]), other))
    first = service.webhooks.list(ANONYMOUS)[0]
    asyncio.run(service.webhooks.change(first.id, "delete", ANONYMOUS))
    asyncio.run(service.webhooks.register(RegisterEndpoint(URL, ["payment.failed"]), ANONYMOUS))
    assert len(service.webhooks.list(ANONYMOUS)) == MAX_ENDPOINTS_PER_TENANT


def test_another_tenants_endpoint_is_not_found_by_any_handler(service):
    created = asyncio.run(service.webhooks.register(RegisterEndpoint(URL, ["payment.failed"]),
                                                   ANONYMOUS))  # fmt: skip
    other = Principal(tenant="globex", client="cli:test")
    eid = created.info.id
    with pytest.raises(EndpointNotFound):
        service.webhooks.get(eid, other)
    with pytest.raises(EndpointNotFound):
        asyncio.run(service.webhooks.rotate_secret(eid, other))
    for action in ("disable", "enable", "delete"):
        with pytest.raises(EndpointNotFound):
            asyncio.run(service.webhooks.change(eid, action, other))  # type: ignore[arg-type]
    assert service.webhooks.list(other) == []
    assert service.webhooks.get(eid, ANONYMOUS).status == "enabled"


def test_bad_input_names_every_field_at_once(service):
    with pytest.raises(ValidationError) as e:
        asyncio.run(service.webhooks.register(RegisterEndpoint("nope", [], "x" * 500), ANONYMOUS))
    assert {err.field for err in e.value.errors} == {"url", "events", "description"}
    with pytest.raises(ValidationError):
        asyncio.run(service.webhooks.rotate_secret(uuid4(), ANONYMOUS, -1))
