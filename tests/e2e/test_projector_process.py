"""``payledger serve`` keeps the views with a projector process of its own (the default,
``PAYLEDGER_PROJECTIONS=process``): queries see each command's writes, and the projector never
outlives its server, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.processes import alive, child_named, children_of
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e]


def test_views_follow_commands_and_the_projector_dies_with_its_server(database_url, start_server):
    server = start_server(database_url, "--log-level", "warning")
    spawned = {
        pid: cmd for pid, cmd in children_of(server.process.pid).items() if "multiprocessing" in cmd
    }
    # The committer and the projector (and multiprocessing's resource tracker).
    assert len(spawned) >= 2, spawned
    with server.client() as http:
        opened = http.post("/v1/accounts", json={"owner": "p", "currency": "CNY"})
        assert opened.status_code == 201, opened.text
        account = opened.json()["id"]
        deposit = http.post(
            f"/v1/accounts/{account}/deposits", json={"amount": "12.34"},
            headers={"Idempotency-Key": "proj-dep"},
        )  # fmt: skip
        assert deposit.status_code == 201, deposit.text
        # Read your writes through the projector: the statement comes from the entries view.
        position = int(deposit.headers["Payledger-Position"])
        entries = http.get(
            f"/v1/accounts/{account}/entries", params={"wait_for_position": position}
        )
        assert entries.status_code == 200, entries.text
        assert [(e["amount"], e["balance_after"]) for e in entries.json()["items"]] == [
            ("12.34", "12.34")
        ]
        listed = http.get("/v1/payments", params={"wait_for_position": position})
        assert [(p["amount"], p["status"]) for p in listed.json()["items"]] == [
            ("12.34", "succeeded")
        ]
        assert http.get("/readyz").status_code == 200
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(pid) for pid in spawned):
        time.sleep(0.2)
    assert not [pid for pid in spawned if alive(pid)], "a child outlived its killed server"


def test_a_server_whose_children_were_killed_starts_new_ones_and_still_shuts_down(
    database_url, start_server
):
    server = start_server(database_url, "--log-level", "info")
    pid = server.process.pid
    projector, committer = child_named(pid, "pl-projector"), child_named(pid, "pl-committer")
    assert projector and committer, children_of(pid)
    with server.client() as http:
        opened = http.post("/v1/accounts", json={"owner": "k", "currency": "CNY"})
        account = opened.json()["id"]

        def deposit(key: str) -> int | None:
            answer = http.post(
                f"/v1/accounts/{account}/deposits", json={"amount": "1.00"},
                headers={"Idempotency-Key": key},
            )  # fmt: skip
            assert answer.status_code in (200, 201, 503), answer.text
            return int(answer.headers["Payledger-Position"]) if answer.status_code < 300 else None

        assert deposit("kill-1") is not None
        os.kill(projector, signal.SIGKILL)
        assert deposit("kill-2") is not None  # commits go on; nudging the dead child never blocks
        os.kill(committer, signal.SIGKILL)
        # Commands answer 503 (retry) until a new committer runs, then go through.
        position = wait_until(lambda: deposit("kill-3"), 30)
        assert position is not None, "commands never went through after the committer died"
        assert deposit("kill-2") is not None  # a retry answers with what was saved
        new_projector = wait_until(lambda: child_named(pid, "pl-projector"), 30)
        assert new_projector not in (None, projector)
        assert child_named(pid, "pl-committer") not in (None, committer)
        entries = http.get(
            f"/v1/accounts/{account}/entries",
            params={"wait_for_position": position, "timeout_s": 20},
        )  # fmt: skip
        balances = [e["balance_after"] for e in entries.json()["items"]]
        assert balances == ["1.00", "2.00", "3.00"], entries.text  # each deposit once
        assert wait_until(lambda: http.get("/readyz").status_code == 200, 30)
        children = set(children_of(pid))
    server.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then dies of the signal it caught (-15).
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log_path.read_text()
    assert wait_until(lambda: not any(alive(c) for c in children), 15)
