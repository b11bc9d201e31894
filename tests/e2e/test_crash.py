"""SIGKILL the server in the middle of a load of payments, restart it, retry everything:
no accepted payment is lost and none is applied twice.

Runs on SQLite and on PostgreSQL, with the server's default committer process. The kill comes
after the 100th answer, so some requests are answered, some in flight and some not yet sent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUESTS = 600
KILL_AFTER = 100
CARD = "4242424242424242"
IBAN = "DE89370400440532013000"
# A payment left submitted by the killed server is taken over by its retry once it is older than
# the channel time-out plus a grace of 5 s: keep the time-out short so the test does not wait long.
# Card and bank calls take 200 ms, so some payments are at the channel when the server dies:
# their intent is saved, their outcome is not.
SERVER_ENV = {
    "PAYLEDGER_CHANNEL_TIMEOUT_MS": "500",
    "PAYLEDGER_SANDBOX_LATENCY_MS": '{"card": 200, "bank_transfer": 200}',
}


def _open(http: httpx.Client, owner: str, kind: str = "customer") -> str:
    answer = http.post("/v1/accounts", json={"owner": owner, "currency": "CNY", "kind": kind})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _requests(payer: str, shop: str) -> list[tuple[str, dict[str, Any]]]:
    """Internal transfers, card payments to the shop and payouts, each 1.00 CNY."""
    bodies = []
    for i in range(REQUESTS):
        body: dict[str, Any] = {"amount": "1.00", "currency": "CNY"}
        if i % 3 == 0:
            body |= {"channel": "internal", "payer_account_id": payer, "payee_account_id": shop}
        elif i % 3 == 1:
            method = {"type": "card", "number": CARD, "exp_month": 12, "exp_year": 2099}
            body |= {"channel": "card", "payment_method": method | {"cvc": "123"}}
            body["payee_account_id"] = shop
        else:
            beneficiary = {"type": "bank_account", "iban": IBAN, "name": "Bob"}
            body |= {"channel": "bank_transfer", "payer_account_id": payer}
            body["beneficiary"] = beneficiary
        bodies.append((f"crash-{i}", body))
    return bodies


RETRIES_503 = 5


def _send(base_url: str, key: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """Send as a careful client does: a 503 says "retry after" and the key makes it safe."""
    for _ in range(RETRIES_503):
        try:
            answer = httpx.post(
                f"{base_url}/v1/payments", json=body, headers={"Idempotency-Key": key}, timeout=60
            )
        except httpx.TransportError:
            return None  # the server died under it
        if answer.status_code != 503:
            break
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def test_sigkill_mid_load_then_retry_loses_nothing_and_pays_nothing_twice(
    database_url, start_server, cli_for
):
    server = start_server(database_url, "--log-level", "warning", env=SERVER_ENV)
    with server.client() as http:
        payer, shop = _open(http, "payer"), _open(http, "shop", "merchant")
        funded = http.post(
            f"/v1/accounts/{payer}/deposits", json={"amount": "10000.00"},
            headers={"Idempotency-Key": "crash-funding"},
        )  # fmt: skip
        assert funded.status_code == 201, funded.text
    requests = _requests(payer, shop)
    answered = 0
    lock = threading.Lock()
    killed_at: list[datetime] = []

    def send_and_maybe_kill(item: tuple[str, dict[str, Any]]) -> dict[str, Any] | None:
        nonlocal answered
        result = _send(server.base_url, *item)
        with lock:
            answered += result is not None
            if answered == KILL_AFTER:
                server.process.kill()  # SIGKILL: no shutdown, no flush
                killed_at.append(datetime.now(UTC))
        return result

    with ThreadPoolExecutor(max_workers=16) as pool:
        before = list(pool.map(send_and_maybe_kill, requests))
    server.process.wait(timeout=10)
    print("at the kill:", Counter("no answer" if r is None else r["status"] for r in before))
    assert KILL_AFTER <= sum(r is not None for r in before) < REQUESTS

    restarted = start_server(database_url, "--log-level", "warning", env=SERVER_ENV)
    with ThreadPoolExecutor(max_workers=16) as pool:
        try:
            after = list(pool.map(lambda item: _send(restarted.base_url, *item), requests))
        except AssertionError as e:
            log_tail = restarted.log()[-4000:]
            raise AssertionError(f"{e}\nserver log (last 4000 chars):\n{log_tail}") from e

    assert all(r is not None for r in after)
    assert len({r["id"] for r in after}) == REQUESTS  # one payment per key, never two
    for first, final in zip(before, after, strict=True):
        if first is not None and first["status"] != "processing":
            assert (final["id"], final["status"]) == (first["id"], first["status"])
    outcomes = Counter(r["status"] for r in after)
    assert outcomes == {"succeeded": REQUESTS}, outcomes
    with restarted.client() as http:
        payer_now = http.get(f"/v1/accounts/{payer}").json()
        shop_now = http.get(f"/v1/accounts/{shop}").json()
    debited = sum(1 for _, body in requests if "payer_account_id" in body)
    credited = sum(1 for _, body in requests if "payee_account_id" in body)
    assert (payer_now["balance"], payer_now["reserved"]) == (f"{10000 - debited}.00", "0.00")
    assert shop_now["balance"] == f"{credited}.00"
    check = cli_for(database_url)("ledger", "check", "--json")
    assert check.code == 0, check.stdout + check.stderr
    # Some payments were at the channel when the server died and were finished by their retry.
    taken_over = [r for r in after if _requested_before_finished_after(restarted, r, killed_at[0])]
    assert taken_over, "no payment was interrupted between its intent and its outcome"


def _requested_before_finished_after(server, payment: dict[str, Any], moment: datetime) -> bool:  # type: ignore[no-untyped-def]
    if payment["channel"] == "internal":
        return False  # settles in one save: nothing to take over
    with server.client() as http:
        events = http.get(f"/v1/payments/{payment['id']}/events").json()["events"]
    stamp = [datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) for e in events]
    return stamp[0] < moment < stamp[-1]
