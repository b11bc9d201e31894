"""The read side as operators run it, on SQLite and PostgreSQL, with real processes:

- API workers with PAYLEDGER_PROJECTIONS=off and one `payledger project --follow` process;
  that process is SIGKILLed mid-way and restarted: every payment counted exactly once;
- `payledger replay` and `payledger replay --verify` (exit 0 when healthy, 1 after a stored
  event is altered behind the application's back);
- `payledger payments list`, `accounts statement`, `metrics` with --json.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from typing import Any

import httpx
import pytest

from application.store import parse_database_url
from tests.e2e.conftest import clean_env, payledger_cmd, stop

pytestmark = pytest.mark.e2e

PAYMENTS = 60


def open_funded(client: httpx.Client, owner: str, amount: str | None = None) -> str:
    account = client.post("/v1/accounts", json={"owner": owner, "currency": "CNY"}).json()
    if amount:
        deposit = client.post(
            f"/v1/accounts/{account['id']}/deposits", json={"amount": amount},
            headers={"Idempotency-Key": f"dep-{owner}"},
        )  # fmt: skip
        assert deposit.status_code == 201, deposit.text
    return str(account["id"])


def pay_many(client: httpx.Client, payer: str, payee: str, n: int) -> list[dict[str, Any]]:
    made = []
    for i in range(n):
        response = client.post(
            "/v1/payments",
            json={"amount": "1.00", "currency": "CNY", "channel": "internal",
                  "payer_account_id": payer, "payee_account_id": payee},
            headers={"Idempotency-Key": f"pay-{i}"},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made


def views_position(client: httpx.Client) -> int:
    return int(client.get("/v1/payments", params={"limit": 1}).json()["as_of_position"])


def start_projector(database_url: str, tmp_path: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        payledger_cmd("project", "--follow"), cwd=tmp_path, env=clean_env(database_url),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def test_a_projection_process_killed_mid_way_resumes_where_it_committed(
    database_url: str, start_server: Any, cli_for: Any, tmp_path: Any
) -> None:
    workers = "2" if database_url.startswith("postgresql") else "1"
    server = start_server(database_url, "--workers", workers, env={"PAYLEDGER_PROJECTIONS": "off"})
    with server.client() as client:
        payer, payee = open_funded(client, "payer", "1000.00"), open_funded(client, "payee")
        made = pay_many(client, payer, payee, PAYMENTS)
        assert views_position(client) == 0  # nothing follows the log yet

        projector = start_projector(database_url, tmp_path)
        try:
            deadline = time.monotonic() + 30
            while views_position(client) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            projector.kill()  # SIGKILL, whatever it was doing
            projector.wait(10)
        finally:
            stop(projector)
        assert views_position(client) > 0

        projector = start_projector(database_url, tmp_path)
        try:
            deadline = time.monotonic() + 30
            listed: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                listed = client.get("/v1/payments", params={"payee": payee, "limit": 500}).json()[
                    "items"
                ]
                if len(listed) == PAYMENTS:
                    break
                time.sleep(0.05)
            assert sorted(p["id"] for p in listed) == sorted(p["id"] for p in made)
            statement = client.get(f"/v1/accounts/{payee}/entries", params={"limit": 500}).json()
            assert len(statement["items"]) == PAYMENTS
            assert statement["items"][-1]["balance_after"] == f"{PAYMENTS}.00"
            metrics = client.get("/v1/metrics", params={"channel": "internal"}).json()
            assert metrics["totals"]["succeeded"] == PAYMENTS  # counted once, not twice
        finally:
            stop(projector)
    verified = cli_for(database_url)("replay", "--verify", "--json")
    assert verified.code == 0, verified.stdout + verified.stderr
    assert verified.json()["ok"] is True


def tamper_with_a_credit(database_url: str, account_id: str) -> None:
    """Change the amount of one stored Credited event, keeping it valid JSON."""
    store = parse_database_url(database_url)
    old, new = b'"amount_minor":500', b'"amount_minor":900'
    if store.kind == "sqlite":
        with sqlite3.connect(store.sqlite_path) as conn:
            oid = account_id.replace("-", "")
            rows = conn.execute(
                "SELECT originator_version, state FROM stored_events WHERE originator_id = ? "
                "AND topic LIKE '%Credited'", (oid,),
            ).fetchall()  # fmt: skip
            version, state = rows[0]
            assert old in state
            conn.execute(
                "UPDATE stored_events SET state = ? WHERE originator_id = ? "
                "AND originator_version = ?", (state.replace(old, new), oid, version),
            )  # fmt: skip
        return
    import psycopg

    with psycopg.connect(host=store.host, port=store.port, user=store.user,
                         dbname=store.dbname) as conn:  # fmt: skip
        table = f'"{store.schema}".payledger_events'
        rows = conn.execute(
            f"SELECT originator_version, state FROM {table} WHERE originator_id = %s "
            "AND topic LIKE '%%Credited'", (account_id,),
        ).fetchall()  # fmt: skip
        version, state = rows[0]
        assert old in bytes(state)
        conn.execute(
            f"UPDATE {table} SET state = %s WHERE originator_id = %s AND originator_version = %s",
            (bytes(state).replace(old, new), account_id, version),
        )


def test_replay_verify_passes_when_healthy_and_fails_on_a_tampered_store(
    database_url: str, cli_for: Any
) -> None:
    cli = cli_for(database_url)
    alice = cli("accounts", "open", "--owner", "alice", "--currency", "CNY", "--json").json()["id"]
    shop = cli("accounts", "open", "--owner", "shop", "--currency", "CNY", "--json").json()["id"]
    assert cli("accounts", "deposit", alice, "100.00").code == 0
    for key in ("a", "b"):
        paid = cli("pay", "--amount", "5.00", "--currency", "CNY", "--channel", "internal",
                   "--from", alice, "--to", shop, "--key", key)  # fmt: skip
        assert paid.code == 0, paid.stderr

    rebuilt = cli("replay", "--json")
    assert rebuilt.code == 0, rebuilt.stderr
    assert rebuilt.json()["events"] > 0 and rebuilt.json()["events_per_s"] > 0
    healthy = cli("replay", "--verify")
    assert healthy.code == 0, healthy.stdout + healthy.stderr
    assert "views match" in healthy.stdout

    listed = cli("payments", "list", "--payee", shop, "--json").json()
    assert [p["amount"] for p in listed["items"]] == ["5.00", "5.00"]
    statement = cli("accounts", "statement", shop, "--json").json()
    assert [line["balance_after"] for line in statement["items"]] == ["5.00", "10.00"]
    metrics = cli("metrics", "--channel", "internal", "--json").json()
    assert metrics["totals"]["succeeded"] == 2

    tamper_with_a_credit(database_url, shop)
    tampered = cli("replay", "--verify")
    assert tampered.code == 1, tampered.stdout + tampered.stderr
    assert "DIFFERENT" in tampered.stdout and shop in tampered.stdout
