"""HTTP hardening over real HTTP: security headers on every response (errors and 500s too), CORS
closed by default and open only to configured origins, no stack traces, and redacted, structured
logs (interfaces/http/security.py, application/logs.py)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from application.logs import JsonFormatter, TextFormatter, logging_config, redact
from application.service import Payledger
from interfaces.http.app import create_app
from interfaces.http.security import API_CSP, DASHBOARD_CSP, RequestLog, SecurityHeaders
from projections.queries import ReadModel
from tests.conftest import make_settings
from tests.interfaces.conftest import Api, LiveServer, card, new_key, serving
from tests.interfaces.test_dashboard_browser import CHROMEDRIVER, CHROMIUM, require_browser

BASE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
PAN = "4242424242424242"


@pytest.fixture
def live_server(shared_live_server: LiveServer) -> LiveServer:
    return shared_live_server


def assert_hardened(response: httpx.Response, *, api: bool) -> None:
    for name, value in BASE.items():
        assert response.headers.get_list(name) == [value], (name, response.request.url)
    assert len(response.headers.get_list("content-security-policy")) == 1
    assert "strict-transport-security" not in response.headers  # only when configured
    assert "access-control-allow-origin" not in response.headers  # CORS closed by default
    if api:
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-security-policy"] == API_CSP.decode()


def test_every_kind_of_api_answer_has_the_headers(api: Api, client: httpx.Client) -> None:
    payer, shop = api.funded_account("50.00"), api.merchant()
    body = {"amount": "1.00", "currency": "CNY", "channel": "internal",
            "payer_account_id": payer, "payee_account_id": shop}  # fmt: skip
    key = new_key()
    answers = [
        api.pay(body, key=key),  # 201 through the hot route
        api.pay(body, key=key),  # 200 replay
        api.pay(body | {"amount": "x"}),  # 422 from the application
        api.pay(body | {"extra": 1}),  # 422 from validation
        client.post("/v1/payments", json=body),  # 400: no key
        client.get(f"/v1/accounts/{payer}"),
        client.get("/v1/payments?limit=2"),
        client.get(f"/v1/payments/{new_key()[5:]}"),  # 404
        client.get("/v1/nope"),  # 404 from the router
        client.delete("/v1/payments"),  # 405
        client.post("/v1/payments", content=b"x" * 70_000,  # 413 from the body limit
                    headers={"Idempotency-Key": new_key(), "content-type": "application/json"}),
        client.get("/v1/metrics"),
    ]  # fmt: skip
    assert [a.status_code for a in answers][:5] == [201, 200, 422, 422, 400]
    for answer in answers:
        assert_hardened(answer, api=True)


def test_other_pages_have_headers_and_policies_of_their_own(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/metrics"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_hardened(response, api=False)
        assert response.headers["content-security-policy"] == API_CSP.decode()
    docs = client.get("/docs")
    assert_hardened(docs, api=False)
    assert "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


def test_the_dashboard_policy_fits_the_page(api: Api, client: httpx.Client) -> None:
    shop = api.merchant()
    api.pay({"amount": "2.00", "currency": "CNY", "channel": "card", "payee_account_id": shop,
             "payment_method": card()})  # fmt: skip
    page = client.get("/dashboard?refresh=0")
    assert page.status_code == 200
    assert_hardened(page, api=False)
    assert page.headers["cache-control"] == "no-store"
    policy = page.headers["content-security-policy"]
    assert policy == DASHBOARD_CSP.decode()
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"  # so no script at all, no fetch, no font
    assert "script-src" not in directives and "unsafe-eval" not in policy
    assert directives["frame-ancestors"] == "'none'"
    # What the page holds needs nothing more: inline CSS and SVG, links, no script or file.
    html = page.text
    assert "<style>" in html and "<svg" in html
    assert "<script" not in html.lower()
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", html)  # no inline event handler either
    assert not re.search(r"\s(src|srcset|action)=", html)
    assert not re.search(r"""href=["'](https?:)?//""", html)


def test_a_500_has_the_headers_and_no_stack_trace(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"boom at /secret/path.py line 42 card {PAN}")

    monkeypatch.setattr(ReadModel, "payments", explode)
    with Payledger(make_settings(sqlite_url)) as svc, serving(create_app(service=svc)) as live:
        response = httpx.get(f"{live.base_url}/v1/payments")
    assert response.status_code == 500
    assert_hardened(response, api=True)
    assert response.headers["content-type"] == "application/problem+json"
    for leak in ("Traceback", "RuntimeError", "boom", "/secret/path.py", PAN, 'File "'):
        assert leak not in response.text
    assert response.json()["code"] == "internal_error"


def test_hsts_only_when_configured(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, hsts_max_age=31_536_000)
    with serving(create_app(settings)) as live:
        for path in ("/healthz", "/v1/payments", "/dashboard"):
            response = httpx.get(live.base_url + path)
            assert response.headers["strict-transport-security"] == (
                "max-age=31536000; includeSubDomains"
            )


# --- CORS ----------------------------------------------------------------------------------


def preflight(base_url: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{base_url}/v1/payments",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


def test_cors_is_closed_by_default(live_server: LiveServer) -> None:
    origin = "https://evil.example"
    simple = httpx.get(f"{live_server.base_url}/v1/payments", headers={"Origin": origin})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    answer = preflight(live_server.base_url, origin)
    assert answer.status_code == 405
    assert not any(name.startswith("access-control-") for name in answer.headers)


def test_cors_allows_exactly_the_configured_origins(sqlite_url: str) -> None:
    allowed = "https://app.example"
    settings = make_settings(sqlite_url, cors_origins=f"{allowed}, https://ops.example")
    with serving(create_app(settings)) as live:
        ok = preflight(live.base_url, allowed)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        assert "idempotency-key" in ok.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in ok.headers
        assert_hardened_base(ok)
        refused = preflight(live.base_url, "https://evil.example")
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        simple = httpx.get(f"{live.base_url}/v1/payments", headers={"Origin": allowed})
        assert simple.headers["access-control-allow-origin"] == allowed
        assert "payledger-as-of-position" in simple.headers["access-control-expose-headers"].lower()
        other = httpx.get(f"{live.base_url}/v1/payments", headers={"Origin": "https://x.example"})
        assert "access-control-allow-origin" not in other.headers


def assert_hardened_base(response: httpx.Response) -> None:
    for name, value in BASE.items():
        assert response.headers.get(name) == value


# --- the middleware itself -----------------------------------------------------------------


def bare_app() -> Starlette:
    async def plain(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def own(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok", headers={"Cache-Control": "max-age=60",
                                                "X-Frame-Options": "SAMEORIGIN"})  # fmt: skip

    return Starlette(routes=[Route("/v1/plain", plain), Route("/v1/own", own)])


def test_a_header_the_route_set_is_kept_and_never_doubled() -> None:
    transport = httpx.ASGITransport(app=SecurityHeaders(bare_app()))

    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get("/v1/own"), await c.get("/v1/plain"), await c.get("/v1/plain")

    import asyncio

    own, first, second = asyncio.run(run())
    assert own.headers.get_list("cache-control") == ["max-age=60"]
    assert own.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert own.headers["x-content-type-options"] == "nosniff"
    # The precomputed list is never mutated: the second answer is the same as the first.
    assert first.headers.multi_items() == second.headers.multi_items()
    assert first.headers.get_list("cache-control") == ["no-store"]


# --- logs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"card {PAN} declined", PAN),
        ("card 4242 4242 4242 4242 declined", "4242 4242 4242 4242"),
        (
            "Authorization: Bearer pl_live_0123456789abcdef0123456789abcdef_s3cr3tS3cr3tS3cr3t",
            "s3cr3tS3cr3tS3cr3t",
        ),
        ("key pl_live_0123456789abcdef0123456789abcdef_zzzzzzzzzzzzzzzzzzzzzzz", "zzzzzzzz"),
        ("headers {'authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
        ('{"x-payledger-otp": "123456"}', "123456"),
    ],
)
def test_redaction_removes_secrets(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "REDACTED" in redact(text)


def test_redaction_keeps_ordinary_text() -> None:
    for text in ("POST /v1/payments 201", "payment 4d2c0b6e-1b3f-5a7e-9c1d-2b3a4c5d6e7f",
                 "amount 12.50 CNY, card ending 4242", "order 1234567890123"):  # fmt: skip
        assert redact(text) == text


def record(msg: str, *args: object, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("payledger.http", logging.ERROR, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_request_fields_and_are_redacted() -> None:
    try:
        raise ValueError(f"bad card {PAN}")
    except ValueError:
        import sys

        fields = {"request_id": "r-1", "method": "GET", "path": "/v1/payments", "status": 500,
                  "duration_ms": 1.5, "principal": "key:abc"}  # fmt: skip
        rec = record("failed on %s", f"/v1/payments/{PAN}", **fields)
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line and PAN not in line
    data = json.loads(line)
    assert data["message"] == "failed on /v1/payments/[REDACTED-PAN]"
    assert (data["request_id"], data["method"], data["status"], data["principal"]) == (
        "r-1", "GET", 500, "key:abc",
    )  # fmt: skip
    assert data["level"] == "ERROR" and data["ts"].endswith("Z")
    assert "ValueError: bad card [REDACTED-PAN]" in data["exc"]
    text = TextFormatter().format(record("card %s", PAN))
    assert PAN not in text and "[REDACTED-PAN]" in text


def test_the_log_config_sends_uvicorn_through_the_redacting_handler() -> None:
    config = logging_config("json", "info")
    assert config["formatters"]["payledger"]["()"] == "application.logs.JsonFormatter"
    assert config["root"]["handlers"] == ["stderr"]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name] == {"handlers": [], "propagate": True, "level": "INFO"}
    with pytest.raises(ValueError):
        logging_config("xml")


@pytest.fixture
def logged_server(sqlite_url: str) -> Iterator[LiveServer]:
    with serving(create_app(make_settings(sqlite_url, access_log=True))) as live:
        yield live


def test_the_request_log_has_one_line_per_request_without_secrets(
    logged_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="payledger.access")
    base = logged_server.base_url
    headers = {"Authorization": "Bearer pl_live_0123456789abcdef0123456789abcdef_s3cr3tS3cr3tS3c",
               "X-Payledger-OTP": "123456", "X-Request-ID": "client-req-1"}  # fmt: skip
    answer = httpx.get(f"{base}/v1/payments/{PAN}?card={PAN}&otp=654321", headers=headers)
    plain = httpx.get(f"{base}/healthz")
    assert answer.headers["x-request-id"] == "client-req-1"
    assert len(plain.headers["x-request-id"]) >= 16
    # A line is written once its answer has gone: wait for both.
    deadline = time.monotonic() + 5
    while True:
        lines = [r for r in caplog.records if r.name == "payledger.access"]
        paths = {getattr(r, "path", None) for r in lines}
        if {"/healthz", "/v1/payments/[REDACTED-PAN]"} <= paths or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    first = next(r for r in lines if getattr(r, "request_id", None) == "client-req-1")
    assert (first.method, first.status) == ("GET", answer.status_code)  # type: ignore[attr-defined]
    assert first.path == "/v1/payments/[REDACTED-PAN]"  # type: ignore[attr-defined]
    assert first.duration_ms >= 0  # type: ignore[attr-defined]
    formatted = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    for secret in (PAN, "s3cr3tS3cr3t", "654321", "123456", "card="):
        assert secret not in formatted
    assert any(getattr(r, "path", None) == "/healthz" for r in lines)


def test_a_request_id_that_is_not_a_short_token_is_replaced(logged_server: LiveServer) -> None:
    for bad in ("x" * 65, "a b", PAN):
        answer = httpx.get(f"{logged_server.base_url}/healthz", headers={"X-Request-ID": bad})
        assert answer.headers["x-request-id"] != bad


def test_no_request_log_unless_asked(live_server: LiveServer) -> None:
    assert "x-request-id" not in httpx.get(f"{live_server.base_url}/healthz").headers


def test_request_log_names_the_principal_the_route_left() -> None:
    async def endpoint(request: Any) -> PlainTextResponse:
        class P:
            client = "key:0123"

        request.state.principal = P()
        return PlainTextResponse("ok")

    app = RequestLog(Starlette(routes=[Route("/v1/x", endpoint)]))
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    access = logging.getLogger("payledger.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    try:
        import asyncio

        async def run() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                await c.get("/v1/x")

        asyncio.run(run())
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    assert [getattr(r, "principal", None) for r in seen] == ["key:0123"]


# --- the dashboard in a real browser: no policy violation --------------------------------------


@pytest.mark.browser
def test_the_dashboard_renders_under_its_policy_without_violations(
    api: Api, live_server: LiveServer
) -> None:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    shop = api.merchant()
    api.pay({"amount": "2.00", "currency": "CNY", "channel": "card", "payee_account_id": shop,
             "payment_method": card()})  # fmt: skip
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"{live_server.base_url}/dashboard?refresh=0")
        styled = driver.execute_script(
            "return getComputedStyle(document.body).fontFamily + '|' + "
            "document.querySelectorAll('svg').length"
        )
        console = driver.get_log("browser")
    finally:
        driver.quit()
    violations = [e["message"] for e in console if "Content Security Policy" in e["message"]]
    assert violations == []
    font, svgs = styled.split("|")
    assert int(svgs) >= 1
    assert "Times" not in font  # the page's own inline CSS applied (not the browser default)
