"""``payledger serve`` keeps the views with a projector process of its own (the default,
``PAYLEDGER_PROJECTIONS=process``): queries see each command's writes, and the projector never
outlives its server, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e]


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_views_follow_commands_and_the_projector_dies_with_its_server(database_url, start_server):
    server = start_server(database_url, "--log-level", "warning")
    spawned = {
        pid: cmd for pid, cmd in _children(server.process.pid).items() if "multiprocessing" in cmd
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
    while time.monotonic() < deadline and any(_alive(pid) for pid in spawned):
        time.sleep(0.2)
    assert not [pid for pid in spawned if _alive(pid)], "a child outlived its killed server"
