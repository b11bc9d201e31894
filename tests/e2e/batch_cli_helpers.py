"""Batches through the real ``payledger`` CLI: payroll CSV files with valid IBANs (and a few that
hit the bank sandbox's triggers), approver keys with their TOTP codes, commands run as
subprocesses (or started in their own process group, to be killed), and a read-only probe on the
store to watch a batch's progress from the test process while another process runs it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import pyotp
from schwifty import IBAN

from application.app import PayledgerApp
from application.encryption import cipher_env
from domain.batches import Batch
from domain.payments import batch_item_payment_id
from tests.conftest import make_settings
from tests.e2e.conftest import CLI_TIMEOUT_S, Cli, CliResult, clean_env, payledger_cmd

CSV_HEADER = "end_to_end_id,amount,currency,name,iban"
# The bank sandbox's beneficiary account numbers: ...0004 closed (AC04), ...0001 wrong (AC01),
# ...0119 times out after sending (the item's outcome is unknown: an ``exception``).
TRIGGERS: dict[str, tuple[str, str | None]] = {
    "0004": ("failed", "AC04"),
    "0001": ("failed", "AC01"),
    "0119": ("exception", "channel_timeout"),
}


def iban(n: int, suffix: str = "") -> str:
    """A valid German IBAN; ``suffix`` sets the account number's last digits (TRIGGERS)."""
    account = f"{532000000 + n * 10 + 5:09d}"  # ends in 5: never a trigger
    if suffix:
        account = account[: -len(suffix)] + suffix
    return str(IBAN.generate("DE", bank_code="37040044", account_code=account))


def cents(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


@dataclass(frozen=True)
class Line:
    """One row of a payroll file and what the bank sandbox will make of it."""

    index: int
    end_to_end_id: str
    amount_minor: int
    iban: str
    expected: str  # succeeded | failed | exception | invalid
    code: str | None = None


def payroll_lines(
    rng: random.Random, count: int, prefix: str, *, triggers: int = 0, invalid: int = 0
) -> list[Line]:
    """``count`` items of 1.00 to 250.00 EUR; ``triggers`` of them (at random places) hit the
    sandbox's triggers in turn, ``invalid`` more have an IBAN with a broken checksum."""
    special = rng.sample(range(count), triggers + invalid)
    hits = dict(zip(special[:triggers], [*TRIGGERS] * triggers, strict=False))
    broken = set(special[triggers:])
    lines = []
    for i in range(count):
        amount = rng.randint(100, 25_000)
        e2e = f"{prefix}-{i}"
        if i in broken:
            good = iban(i)
            bad = good[:2] + f"{(int(good[2:4]) + 1) % 100:02d}" + good[4:]
            lines.append(Line(i, e2e, amount, bad, "invalid", "AC01"))
        elif i in hits:
            outcome, code = TRIGGERS[hits[i]]
            lines.append(Line(i, e2e, amount, iban(i, hits[i]), outcome, code))
        else:
            lines.append(Line(i, e2e, amount, iban(i), "succeeded"))
    return lines


def write_csv(path: Path, lines: list[Line], currency: str = "EUR") -> Path:
    rows = [CSV_HEADER]
    rows += [
        f"{x.end_to_end_id},{cents(x.amount_minor)},{currency},Employee {x.index},{x.iban}"
        for x in lines
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@dataclass(frozen=True)
class ApproverKey:
    key: str
    seed: str

    def code(self, steps_ahead: int = 0) -> str:
        """The code of the current 30-second step (or of a later one: the server takes the next
        step's code too, and each step only once)."""
        when = datetime.now(UTC) + timedelta(seconds=30 * steps_ahead)
        return str(pyotp.TOTP(self.seed).at(when))


class BatchCli:
    """``payledger --tenant T ...`` as subprocesses on one database; ``--json`` answers parsed,
    exit codes checked."""

    def __init__(self, cli: Cli, tenant: str) -> None:
        self.cli, self.tenant = cli, tenant

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> CliResult:
        result = self.cli("--tenant", self.tenant, *args)
        assert result.code in ok, (
            f"payledger {' '.join(args)} exited {result.code}\n"
            f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
        )
        return result

    def json(self, *args: str, ok: tuple[int, ...] = (0,)) -> Any:
        return self.run(*args, "--json", ok=ok).json()

    def open_funding(self, amount: str, currency: str = "EUR") -> str:
        opened = self.json(
            "accounts", "open", "--owner", "payroll", "--currency", currency, "--kind", "funding"
        )
        self.json("accounts", "deposit", opened["id"], amount)
        return str(opened["id"])

    def approver(self) -> ApproverKey:
        issued = self.json("keys", "create", "--tenant", self.tenant, "--role", "approver")
        totp = pyotp.parse_uri(issued["totp_uri"])
        assert isinstance(totp, pyotp.TOTP)
        return ApproverKey(issued["key"], totp.secret)

    def submit(self, path: Path, funding: str, rules: dict[str, Any] | None = None) -> Any:
        args = ["batches", "submit", str(path), "--funding-account", funding]
        if rules is not None:
            args += ["--rules", json.dumps(rules)]
        return self.json(*args)

    def approve_args(self, batch_id: str, key: ApproverKey, steps_ahead: int = 0) -> list[str]:
        return [
            "batches", "approve", batch_id, "--otp", key.code(steps_ahead), "--api-key", key.key,
            "--execute-now", "--json",
        ]  # fmt: skip

    def status(self, batch_id: str) -> Any:
        return self.json("batches", "status", batch_id)

    def items(self, batch_id: str, limit: int = 100_000) -> list[dict[str, Any]]:
        return list(self.json("batches", "items", batch_id, "--limit", str(limit))["items"])

    def account(self, account_id: str | UUID) -> Any:
        return self.json("accounts", "show", str(account_id))

    def start(self, *args: str, log: IO[str]) -> subprocess.Popen[str]:
        """``payledger --tenant T ...`` started in its own process group (see ``sigkill``)."""
        return subprocess.Popen(
            payledger_cmd("--tenant", self.tenant, *args),
            cwd=self.cli.cwd,
            env=clean_env(self.cli.database_url, **self.cli.extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def sigkill(process: subprocess.Popen[str]) -> bool:
    """SIGKILL the process and whatever it started (its process group): no shutdown, no flush.
    False when it had already exited."""
    if process.poll() is not None:
        return False
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    process.wait(timeout=CLI_TIMEOUT_S)
    return True


def wait_exit(process: subprocess.Popen[str], timeout_s: float = CLI_TIMEOUT_S) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        sigkill(process)
        raise


class BatchProbe:
    """Reads a batch's state straight from the event store (read-only: no tables created, no
    command run), cheaply enough to watch another process's progress every few milliseconds."""

    def __init__(self, database_url: str) -> None:
        settings = make_settings(database_url)
        env = settings.store.eventsourcing_env(create_table=False) | cipher_env(settings)
        self.app = PayledgerApp(env=env)

    def batch(self, batch_id: str | UUID) -> Batch:
        found: Any = self.app.repository.get(UUID(str(batch_id)))
        assert isinstance(found, Batch)
        return found

    def wait_until(
        self, batch_id: str, done: Any, process: subprocess.Popen[str], timeout_s: float = 60
    ) -> Batch | None:
        """Poll until ``done(batch)``; None if the process exits first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return None
            batch = self.batch(batch_id)
            if done(batch):
                return batch
            time.sleep(0.01)
        raise AssertionError(f"batch {batch_id} did not get there within {timeout_s} s")

    def close(self) -> None:
        self.app.close()


def check_final_batch(bc: BatchCli, status: dict[str, Any], lines: list[Line]) -> None:
    """The batch is final with the counts and amounts its lines should give, and every valid
    item has the one payment of its first attempt in its expected outcome."""
    batch_id = status["id"]
    expected = Counter(x.expected for x in lines)
    amounts = {
        outcome: cents(sum(x.amount_minor for x in lines if x.expected == outcome))
        for outcome in ("succeeded", "failed", "exception")
    }
    final = "completed" if expected["succeeded"] == len(lines) else "completed_with_failures"
    assert status["status"] == final, status
    assert status["counts"] == {
        "succeeded": expected["succeeded"], "failed": expected["failed"],
        "exception": expected["exception"], "invalid": expected["invalid"], "pending": 0,
    }, status  # fmt: skip
    assert status["amounts"] == amounts, status
    assert status["held"] == amounts["exception"], status

    items = bc.items(batch_id)
    assert [i["index"] for i in items] == [x.index for x in lines]
    wrong = []
    for item, line in zip(items, lines, strict=True):
        payment = None
        if line.expected != "invalid":
            payment = str(batch_item_payment_id(UUID(batch_id), line.index, 1))
        got = (item["end_to_end_id"], item["status"], item["payment_id"], item["attempt"])
        want = (line.end_to_end_id, line.expected, payment, 1 if payment else item["attempt"])
        if got != want or (line.code and item["reason_code"] != line.code):
            wrong.append(f"item {line.index}: {got} {item['reason_code']}, expected {want}")
    assert not wrong, "\n".join(wrong[:20])
    payment_ids = [i["payment_id"] for i in items if i["payment_id"] is not None]
    assert len(set(payment_ids)) == len(payment_ids) == len(lines) - expected["invalid"]
