"""The dashboard (``GET /dashboard``), on SQLite and PostgreSQL.

The browser test opens the page in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium), after payments of every outcome made over the HTTP API,
and checks that every figure on the page equals ``GET /v1/metrics``'s for the same period. It
saves a screenshot to ``$PAYLEDGER_TEST_ARTIFACTS`` (default ``test-artifacts/``). Without the
browser it skips loudly locally, and fails under CI=true (as PostgreSQL does).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.interfaces.conftest import Api, LiveServer, card

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PAYLEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PAYLEDGER_CHROMEDRIVER", "/usr/bin/chromedriver")
SUCCEEDS, DECLINED, EXCEPTION = "4242424242424242", "4000000000000002", "4000000000000119"
OUTCOMES = ("succeeded", "failed", "exception", "processing")
SUMMARY = ("total", *OUTCOMES, "success_rate", "latency_ms.p50", "latency_ms.p95",
           "latency_ms.p99")  # fmt: skip

# Every figure of the page, with where it sits (its channel row, its series bucket).
FIGURES_JS = """
return Array.from(document.querySelectorAll('[data-metric]')).map(e => {
  const row = e.closest('[data-channel]'), point = e.closest('[data-bucket]');
  return {metric: e.dataset.metric, value: e.dataset.value, text: e.textContent.trim(),
          channel: row ? row.dataset.channel : null, bucket: point ? point.dataset.bucket : null};
});
"""


def artifacts_dir() -> Path:
    path = Path(os.environ.get("PAYLEDGER_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def browser_problem() -> str | None:
    """Why the browser cannot be driven here, or None."""
    missing = [
        p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))
    ]
    if missing:
        return f"{' and '.join(missing)} not found (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def require_browser() -> None:
    problem = browser_problem()
    if problem is None:
        return
    message = f"BROWSER UNAVAILABLE: {problem}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true requires the browser tests)", pytrace=False)
    pytest.skip(f"!!! {message} -- browser tests SKIPPED; CI will fail without it")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--force-device-scale-factor=1",
                     "--disable-extensions", "--no-first-run"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def card_payment(number: str, payee: str) -> dict[str, Any]:
    return {"amount": "3.00", "currency": "CNY", "channel": "card",
            "payment_method": card(number), "payee_account_id": payee}  # fmt: skip


def internal(payer: str, payee: str, amount: str) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY", "channel": "internal",
            "payer_account_id": payer, "payee_account_id": payee}  # fmt: skip


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def value_in(body: dict[str, Any], figure: dict[str, Any]) -> Any:
    """The value at a figure's ``data-metric`` path in the /v1/metrics answer."""
    first, *rest = figure["metric"].split(".")
    if first == "channels":
        node: Any = next(c for c in body["channels"] if c["channel"] == figure["channel"])
    elif first == "series":
        node = next(p for p in body["series"] if p["bucket_start"] == figure["bucket"])
    else:
        node, rest = body, [first, *rest]
    for key in rest:
        node = node[key]
    return node


@pytest.mark.browser
def test_dashboard_figures_equal_the_metrics_api(
    browser: Any, live_server: LiveServer, api: Api, client: httpx.Client,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    started = datetime.now(UTC)
    alice, shop = api.funded_account("100.00"), api.merchant()
    bodies = [internal(alice, shop, "1.50"), internal(alice, shop, "500.00")]
    bodies += [card_payment(n, shop) for n in [SUCCEEDS] * 3 + [DECLINED] * 2 + [EXCEPTION] * 2]
    made = []
    for body in bodies:
        response = api.pay(body)
        assert response.status_code == 201, response.text
        made.append(response.json())
    assert Counter(p["status"] for p in made) == {"succeeded": 4, "failed": 3, "exception": 2}
    period = {"from": iso(started - timedelta(minutes=2)),
              "to": iso(datetime.now(UTC) + timedelta(minutes=2))}  # fmt: skip
    answer = client.get(
        "/v1/metrics", params={**period, "wait_for_position": live_server.notification_position()}
    )
    assert answer.status_code == 200, answer.text
    metrics = answer.json()
    assert metrics["totals"]["total"] == len(made)  # the API itself is right (test_queries_http)

    browser.set_window_size(1280, 1000)
    browser.get(f"{live_server.base_url}/dashboard?{urlencode({**period, 'refresh': 0})}")
    assert "Payledger" in browser.title
    figures = browser.execute_script(FIGURES_JS)
    exceptions = browser.execute_script(
        "return Array.from(document.querySelectorAll('#exceptions [data-payment-id]'))"
        ".map(e => e.dataset.paymentId)"
    )
    charts = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.chart'))"
        ".map(s => s.getBoundingClientRect().height)"
    )
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, height + 120)  # the whole page in one picture
    store = request.node.callspec.params["database_url"]
    screenshot = artifacts_dir() / f"dashboard-{store}.png"
    assert browser.save_screenshot(str(screenshot)), screenshot

    # Every figure on the page equals the API's, at the same path.
    assert figures, "no data-metric figure on the page"
    for figure in figures:
        assert json.loads(figure["value"]) == value_in(metrics, figure), figure
    shown = Counter((f["metric"], f["channel"], f["bucket"]) for f in figures)
    # ... and every figure of the API's totals, channels and batches is on the page.
    for path in SUMMARY:
        assert shown[(f"totals.{path}", None, None)] >= 1, path
    assert shown[("as_of_position", None, None)] == 1
    assert shown[("batch_time_ms.count", None, None)] == 1
    assert [c["channel"] for c in metrics["channels"]] == ["card", "internal"]
    for c in metrics["channels"]:
        for path in SUMMARY:
            assert shown[(f"channels.{path}", c["channel"], None)] == 1, (c["channel"], path)
    # The series: a bar per outcome that happened, a point per bucket with a value.
    assert metrics["series"]
    for point in metrics["series"]:
        at = point["bucket_start"]
        for outcome in OUTCOMES:
            assert shown[(f"series.{outcome}", None, at)] == (1 if point[outcome] else 0)
        for q in ("p50", "p95", "p99"):
            expected = 0 if point["latency_ms"][q] is None else 1
            assert shown[(f"series.latency_ms.{q}", None, at)] == expected
        assert shown[("series.success_rate", None, at)] == 1

    # Formats: S as a percentage with 2 decimals, latencies in ms.
    text = {(f["metric"], f["channel"]): f["text"] for f in figures if f["bucket"] is None}
    s = metrics["totals"]["success_rate"]
    assert text[("totals.success_rate", None)] == f"{s * 100:.2f}%" == "44.44%"
    card_s = next(c for c in metrics["channels"] if c["channel"] == "card")["success_rate"]
    assert text[("channels.success_rate", "card")] == f"{card_s * 100:.2f}%"
    for q in ("p50", "p95", "p99"):
        assert re.fullmatch(r"[0-9][0-9,]*(\.[0-9]+)? ms", text[(f"totals.latency_ms.{q}", None)])
    # Open exceptions: the payments with an unknown outcome; no batches yet.
    assert sorted(exceptions) == sorted(p["id"] for p in made if p["status"] == "exception")
    assert "No batches yet" in browser.find_element("id", "batches").text
    assert len(charts) == 3 and all(h > 100 for h in charts), charts
    assert screenshot.stat().st_size > 10_000

    # One channel's page: its figures are /v1/metrics?channel=card's.
    card_metrics = client.get("/v1/metrics", params={**period, "channel": "card"}).json()
    browser.get(
        f"{live_server.base_url}/dashboard?{urlencode({**period, 'channel': 'card', 'refresh': 0})}"
    )
    card_figures = browser.execute_script(FIGURES_JS)
    assert {f["channel"] for f in card_figures} == {None, "card"}
    for figure in card_figures:
        assert json.loads(figure["value"]) == value_in(card_metrics, figure), figure
    card_totals = {
        f["metric"]: f["value"] for f in card_figures if f["metric"].startswith("totals")
    }
    assert json.loads(card_totals["totals.total"]) == 7
    assert json.loads(card_totals["totals.exception"]) == 2


def test_dashboard_without_payments_and_bad_periods(client: httpx.Client) -> None:
    page = client.get("/dashboard", params={"period": "15m"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert '<meta http-equiv="refresh" content="15">' in page.text
    assert 'data-metric="totals.total" data-value="0"' in page.text
    assert 'data-metric="totals.success_rate" data-value="null">\N{EN DASH}<' in page.text
    assert "No batches yet" in page.text and "no payments in this period" in page.text
    six_hours = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T06:00:00Z", "refresh": 0}
    fixed = client.get("/dashboard", params=six_hours)
    assert fixed.status_code == 200 and "http-equiv" not in fixed.text
    assert 'href="/v1/metrics?from=2026-01-01T00%3A00%3A00Z&amp;to=2026-01-01T06%3A00%3A00Z' in (
        fixed.text
    )

    for params, field in (
        ({"period": "5x"}, "period"),
        ({"period": "32d"}, "period"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"channel": "pigeon"}, "channel"),
    ):
        response = client.get("/dashboard", params=params)
        assert response.status_code == 422, (params, response.text)
        assert any(field in e["field"] for e in response.json()["errors"]), response.text
