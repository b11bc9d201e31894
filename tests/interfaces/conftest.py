"""A real uvicorn server on a free local port, on SQLite and on PostgreSQL, and clients for it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from application.service import Payledger
from application.store import parse_database_url
from interfaces.http.app import create_app
from tests.conftest import idempotency_key, make_postgres_url, make_settings, require_postgres

START_TIMEOUT_S = 20


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    app: FastAPI

    @property
    def service(self) -> Payledger:
        return self.app.state.service  # type: ignore[no-any-return]

    def notification_position(self) -> int:
        """How far the event log reached: it does not move when nothing is recorded."""
        return self.service.app.recorder.max_notification_id() or 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: FastAPI) -> Iterator[LiveServer]:
    """Serve ``app`` with uvicorn in a background thread until the block ends."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the test server did not start", pytrace=False)
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_server(database_url: str) -> Iterator[LiveServer]:
    """``create_app(make_settings(url))`` over real HTTP, once per store."""
    with serving(create_app(make_settings(database_url))) as live:
        yield live


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def shared_live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server per store for a whole module, for tests that each make their own accounts
    and only need the store to be real (validation, problems): starting one costs ~0.4 s."""
    if request.param == "postgres":
        require_postgres()
        url = make_postgres_url()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'payledger.sqlite3'}"
    try:
        with serving(create_app(make_settings(url))) as live:
            yield live
    finally:
        if request.param == "postgres":
            parse_database_url(url).drop()


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=30) as c:
        yield c


def new_key() -> str:
    return idempotency_key()


def card(number: str = "4242424242424242", **fields: Any) -> dict[str, Any]:
    return {"type": "card", "number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"} | (
        fields
    )


class Api:
    """Set-up steps over HTTP, each asserting it worked (they are not what a test is about)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def open_account(self, currency: str = "CNY", **fields: Any) -> dict[str, Any]:
        body = {"owner": "alice", "currency": currency, **fields}
        response = self.client.post("/v1/accounts", json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def deposit(self, account_id: str, amount: str) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/accounts/{account_id}/deposits",
            json={"amount": amount},
            headers={"Idempotency-Key": new_key()},
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def funded_account(self, amount: str, currency: str = "CNY", **fields: Any) -> str:
        account_id: str = self.open_account(currency, **fields)["id"]
        self.deposit(account_id, amount)
        return account_id

    def merchant(self, currency: str = "CNY") -> str:
        return self.open_account(currency, owner="shop", kind="merchant")["id"]  # type: ignore[no-any-return]

    def account(self, account_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/accounts/{account_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def pay(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        return self.client.post(
            "/v1/payments", json=body, headers={"Idempotency-Key": key or new_key()}
        )


@pytest.fixture
def api(client: httpx.Client) -> Api:
    return Api(client)
