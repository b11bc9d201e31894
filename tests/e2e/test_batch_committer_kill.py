"""A server whose committer process is SIGKILLed while it runs a batch starts another
committer, and its scheduler resumes the batch: every item is paid exactly once.

The batch is submitted with the CLI, approved over HTTP with ``execute_now`` (the server runs it
in the background) and its committer child is killed once a group or two are saved. The engine's
next save fails (``CommitterStopped``); the scheduler's next round (every second here) resumes
the batch from what the store holds."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from domain.accounts import clearing_account_id
from tests.e2e.batch_cli_helpers import (
    BatchCli,
    BatchProbe,
    cents,
    check_final_batch,
    payroll_lines,
    write_csv,
)
from tests.e2e.processes import child_named

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TENANT = "ckill"
ENV = {
    "PAYLEDGER_SANDBOX_LATENCY_MS": '{"bank_transfer": 20}',
    "PAYLEDGER_BATCH_SCHEDULER_INTERVAL_S": "1",
}


def test_a_batch_survives_its_servers_committer_being_killed(
    database_url, cli_for, start_server, tmp_path: Path
):
    cli = cli_for(database_url)
    cli.extra_env.update(ENV)
    bc = BatchCli(cli, TENANT)
    funding = bc.open_funding("1000000.00")
    lines = payroll_lines(random.Random(3), 5_000, "K", triggers=3, invalid=1)
    submitted = bc.submit(write_csv(tmp_path / "payroll.csv", lines), funding)
    approver = bc.approver()
    server = start_server(database_url, "--log-level", "warning", env=ENV)
    committer = child_named(server.process.pid, "pl-committer")
    assert committer is not None
    probe = BatchProbe(database_url)
    try:
        with server.client() as http:
            approved = http.post(
                f"/v1/batches/{submitted['id']}/approve", json={"execute_now": True},
                headers={"Authorization": f"Bearer {approver.key}",
                         "X-Payledger-OTP": approver.code()},
            )  # fmt: skip
            assert approved.status_code == 200, approved.text
            deadline = time.monotonic() + 60
            while probe.batch(submitted["id"]).next_seq < 1_500:
                assert time.monotonic() < deadline, "the batch did not get going"
                time.sleep(0.01)
            os.kill(committer, signal.SIGKILL)
            killed_at = probe.batch(submitted["id"]).next_seq
            deadline = time.monotonic() + 120
            while (batch := probe.batch(submitted["id"])).status in ("approved", "processing"):
                assert time.monotonic() < deadline, f"stuck at item {batch.next_seq}"
                time.sleep(0.1)
    finally:
        probe.close()
    assert killed_at < len(lines), "the kill came after the end: it tested nothing"
    assert child_named(server.process.pid, "pl-committer") not in (None, committer)
    assert "exited with code -9; starting another" in server.log_path.read_text()
    check_final_batch(bc, bc.status(submitted["id"]), lines)
    paid = sum(x.amount_minor for x in lines if x.expected == "succeeded")
    held = sum(x.amount_minor for x in lines if x.expected == "exception")
    account = bc.account(funding)
    assert (account["balance"], account["reserved"]) == (
        cents(1_000_000_00 - paid), cents(held)
    )  # fmt: skip
    assert bc.account(clearing_account_id(TENANT, "bank_transfer", "EUR"))["balance"] == cents(paid)
