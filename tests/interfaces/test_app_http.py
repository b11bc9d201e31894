"""The application as a whole: probes, OpenAPI, error mapping for failures, the uvicorn factory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from application.committer import Overloaded
from application.service import Payledger
from interfaces.http.app import create_app
from projections.queries import ReadModel
from tests.conftest import make_settings
from tests.interfaces.conftest import Api, LiveServer, card, free_port, new_key, serving
from tests.interfaces.test_validation_http import assert_problem

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def live_server(shared_live_server: LiveServer) -> LiveServer:
    return shared_live_server


def test_healthz_and_readyz(client: httpx.Client, live_server: LiveServer) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "store": live_server.service.settings.store.kind}


def test_unknown_route_and_method_are_problems(client: httpx.Client) -> None:
    assert_problem(client.get("/v1/nope"), 404, "not_found")
    assert_problem(client.delete("/v1/payments"), 405, "method_not_allowed")


def test_oversize_body_is_413_problem(live_server: LiveServer, client: httpx.Client) -> None:
    position = live_server.notification_position()
    body = {"amount": "1.00", "currency": "CNY", "channel": "internal", "pad": "x" * 100_000}

    response = client.post("/v1/payments", json=body, headers={"Idempotency-Key": new_key()})

    chunked = client.post(
        "/v1/payments",
        content=iter([b'{"amount": "1.00", "pad": "', b"x" * 100_000, b'"}']),
        headers={"Idempotency-Key": new_key(), "content-type": "application/json"},
    )

    assert_problem(response, 413, "payload_too_large")
    assert "content-length" not in chunked.request.headers
    assert_problem(chunked, 413, "payload_too_large")
    assert live_server.notification_position() == position


def test_openapi_documents_bodies_with_examples_and_problems(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()

    assert schema["info"]["title"] == "Payledger" and schema["info"]["version"]
    tags = {t["name"] for t in schema["tags"]}
    assert tags == {
        "payments", "batches", "accounts", "metrics", "keys", "webhooks", "health", "exceptions",
        "reconciliations",
    }  # fmt: skip
    components = schema["components"]["schemas"]
    for name in ("PaymentIn", "AccountIn", "DepositIn", "PaymentOut", "AccountOut", "Problem"):
        assert components[name].get("examples"), name
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                content = operation["requestBody"]["content"]["application/json"]
                ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
                assert content.get("examples") or components[ref].get("examples"), (method, path)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], path
    payment = schema["paths"]["/v1/payments"]["post"]
    assert set(payment["requestBody"]["content"]["application/json"]["examples"]) >= {
        "card",
        "internal",
        "payout",
    }
    assert {"200", "201", "400", "409", "422", "503"} <= set(payment["responses"])
    assert "HTTPValidationError" not in components


def test_the_problem_example_is_what_the_api_answers(client: httpx.Client) -> None:
    [example] = client.get("/openapi.json").json()["components"]["schemas"]["Problem"]["examples"]
    api = Api(client)
    payer, payee = api.funded_account("5.00"), api.merchant()
    body = {"amount": "1.001", "currency": "CNY", "channel": "internal",
            "payer_account_id": payer, "payee_account_id": payee}  # fmt: skip
    answer = client.post("/v1/payments", json=body, headers={"Idempotency-Key": new_key()})
    assert answer.status_code == 422
    assert answer.json() == example


# --- failures of the service, mapped once ------------------------------------------------------


@pytest.fixture
def owned_service(sqlite_url: str) -> Iterator[Payledger]:
    with Payledger(make_settings(sqlite_url)) as svc:
        yield svc


def test_unexpected_error_is_500_without_details(
    owned_service: Payledger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail 4242424242424242")

    monkeypatch.setattr(ReadModel, "payments", explode)
    with serving(create_app(service=owned_service)) as live:
        response = httpx.get(f"{live.base_url}/v1/payments")

    problem = assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "4242424242424242" not in response.text
    assert problem["errors"] == []
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)


def test_overload_is_503_with_retry_after(
    owned_service: Payledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def overloaded(*args: object) -> None:
        raise Overloaded("too many commands waiting; retry shortly")

    monkeypatch.setattr(owned_service, "submit_payment", overloaded)
    body = {"amount": "1.00", "currency": "CNY", "channel": "card", "payment_method": card()}
    with serving(create_app(service=owned_service)) as live:
        response = httpx.post(
            f"{live.base_url}/v1/payments", json=body, headers={"Idempotency-Key": new_key()}
        )

    assert_problem(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"


def test_a_service_passed_in_is_left_open(owned_service: Payledger) -> None:
    with serving(create_app(service=owned_service)):
        pass
    assert owned_service.committer.run(lambda uow: "still open").value == "still open"


def test_readyz_is_503_when_the_store_has_no_tables(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYLEDGER_CREATE_TABLES", "n")  # workers of a multi-process serve

    with serving(create_app(make_settings(sqlite_url))) as live:
        health = httpx.get(f"{live.base_url}/healthz")
        ready = httpx.get(f"{live.base_url}/readyz")

    assert health.status_code == 200
    assert_problem(ready, 503, "store_unavailable")
    assert ready.headers["Retry-After"] == "1"


def test_uvicorn_factory_serves_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env = os.environ | {
        "PAYLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'factory.sqlite3'}",
        "PAYLEDGER_SANDBOX_LATENCY_MS": '{"card": 0}',
    }
    command = [sys.executable, "-m", "uvicorn", "interfaces.http.app:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        ready = _wait_ready(f"http://127.0.0.1:{port}/readyz", process)
        assert ready.json()["store"] == "sqlite"
        account = httpx.post(
            f"http://127.0.0.1:{port}/v1/accounts", json={"owner": "f", "currency": "EUR"}
        )
        assert account.status_code == 201
    finally:
        process.terminate()
        process.wait(10)
    assert (tmp_path / "factory.sqlite3").exists()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "uvicorn exited"
        try:
            return httpx.get(url, timeout=1)
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail("uvicorn --factory did not answer")
