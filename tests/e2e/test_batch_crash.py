"""SIGKILL a batch run at random points, then resume it: every item is paid exactly once and the
ledger stays balanced.

For each seed (``SEEDS``, or ``PAYLEDGER_CRASH_SEEDS=7,8`` to replay others) a payroll file is
submitted through the CLI and ``payledger batches approve --execute-now`` runs it in the
foreground; the test watches the batch's progress in the store and kills that process (SIGKILL,
its whole process group) at a point drawn from the seed: right after the approval, or once the
batch has got past a random item, plus a random delay into the next group (while it is at the
channel, or while its save is in flight). Then ``payledger batches resume`` is started and
killed the same way, as many times as the seed says, and a last ``resume`` finishes the batch.

Two kinds of batches alternate with the seeds: the default rules (the whole amount held up
front, groups of 1,000 items, each saved in one transaction) and group-by-group funds
(``funds_check: false``, ``max_failure_ratio: 1`` for groups of 100: each group's funds are held
and recorded before it is sent, so a kill between that and the group's save is visible as an
open reservation: "mid-group").

Then: the batch is final with exactly the expected counts; every valid item has the one payment
of its attempt (``batch_item_payment_id(batch, index, 1)``: the channel's idempotency key) in its
expected outcome, invalid items have none; the funding account's balance went down by exactly the
succeeded amounts (a group recorded twice would debit it twice), the clearing account went up by
as much, the unknown outcomes are still held, and ``payledger ledger check`` sums to zero.
Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from domain.accounts import clearing_account_id
from domain.batches import Batch
from tests.e2e.batch_cli_helpers import (
    BatchCli,
    BatchProbe,
    Line,
    cents,
    check_final_batch,
    payroll_lines,
    sigkill,
    wait_exit,
    write_csv,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEEDS = [int(s) for s in os.environ.get("PAYLEDGER_CRASH_SEEDS", "5,9,12").split(",")]
TENANT = "crash"
DEPOSIT_MINOR = 10_000_000_00  # 10 million EUR: enough for every seed's batch
# Each channel call takes 20 ms (one call per group: the bank takes a file of transfers).
CLI_ENV = {"PAYLEDGER_SANDBOX_LATENCY_MS": '{"bank_transfer": 20}'}


@dataclass(frozen=True)
class Variant:
    name: str
    rules: dict[str, Any] | None
    items: int
    group: int  # items per group
    group_s: float  # about how long one group takes (send + save), for the kill's delay
    open_group_seen: bool  # a group's funds are held (and seen) before it is sent


UPFRONT = Variant("upfront hold, groups of 1000", None, 5_000, 1_000, 0.25, False)
# A failure ratio is checked every 100 items: groups of 100 (more kill points).
BY_GROUP_RULES = {"funds_check": False, "max_failure_ratio": "1"}
BY_GROUP = Variant("group-by-group funds, groups of 100", BY_GROUP_RULES, 3_000, 100, 0.06, True)
VARIANTS = [UPFRONT, BY_GROUP]


@dataclass
class Kill:
    process: str  # approve | resume
    after_seq: int  # killed once this process had saved something and the batch was past it
    delay_s: float  # ... plus this delay
    seq_at_kill: int = -1
    status: str = ""  # the batch's status after the kill
    # approved | mid-group (the group's funds held, its save not done) | between groups |
    # processing (upfront hold: a group's send or save, not visible from outside) | too late
    where: str = ""

    def __str__(self) -> str:
        return (
            f"{self.process}: past item {self.after_seq} +{self.delay_s * 1000:.0f} ms -> "
            f"{self.where} (next_seq {self.seq_at_kill}, {self.status})"
        )


def test_sigkill_mid_batch_then_resume_pays_every_item_exactly_once(
    database_url, cli_for, tmp_path: Path
):
    cli = cli_for(database_url)
    cli.extra_env.update(CLI_ENV)
    bc = BatchCli(cli, TENANT)
    funding = bc.open_funding(cents(DEPOSIT_MINOR))
    clearing = clearing_account_id(TENANT, "bank_transfer", "EUR")
    probe = BatchProbe(database_url)
    paid = held = 0  # over all seeds
    kills: list[Kill] = []
    started = time.monotonic()
    try:
        for seed in SEEDS:
            variant = VARIANTS[seed % len(VARIANTS)]
            try:
                seed_kills, lines = _crash_and_resume(bc, probe, tmp_path, funding, seed, variant)
            except BaseException as e:
                e.add_note(f"seed {seed} ({variant.name}); replay: PAYLEDGER_CRASH_SEEDS={seed}")
                raise
            kills += seed_kills
            paid += sum(x.amount_minor for x in lines if x.expected == "succeeded")
            held += sum(x.amount_minor for x in lines if x.expected == "exception")
    finally:
        probe.close()
    # A group recorded twice would debit the funding account (and credit the clearing account)
    # twice; a group lost would leave its funds held.
    replay = f"seeds {SEEDS}: replay one with PAYLEDGER_CRASH_SEEDS=N"
    account = bc.account(funding)
    assert (account["balance"], account["reserved"]) == (
        cents(DEPOSIT_MINOR - paid), cents(held)
    ), f"the funding account did not pay exactly the succeeded items ({replay})"  # fmt: skip
    assert bc.account(clearing)["balance"] == cents(paid), replay
    check = bc.cli("ledger", "check", "--json")
    assert check.code == 0, check.stdout + check.stderr
    assert all(row["balanced"] for row in check.json()), check.stdout
    where = Counter(k.where for k in kills)
    print(f"\n{len(SEEDS)} seeds, {len(kills)} kills {dict(where)} in "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    # The kills wait for the run's progress, not for a clock: they land inside the run.
    assert len(kills) - where["too late"] >= len(kills) // 2, kills


def _crash_and_resume(
    bc: BatchCli, probe: BatchProbe, tmp_path: Path, funding: str, seed: int, variant: Variant
) -> tuple[list[Kill], list[Line]]:
    rng = random.Random(seed)
    lines = payroll_lines(rng, variant.items, f"S{seed}", triggers=3, invalid=1)
    path = write_csv(tmp_path / f"payroll-{seed}.csv", lines)
    submitted = bc.submit(path, funding, variant.rules)
    batch_id = submitted["id"]
    assert (submitted["status"], submitted["item_count"]) == ("awaiting_approval", len(lines))
    key = bc.approver()
    # The kill points, from the seed only: once the process has saved something and the batch
    # is past a random item (0: right after the approval), then a random time into the next
    # group (two groups before the end at the latest: a kill after the end tests nothing).
    last = (variant.items - 2 * variant.group) / variant.items
    fractions = sorted(
        0.0 if rng.random() < 0.2 else rng.uniform(0.02, last) for _ in range(rng.randint(2, 3))
    )
    kills = [
        Kill("resume" if n else "approve", int(f * variant.items), rng.uniform(0, variant.group_s))
        for n, f in enumerate(fractions)
    ]
    print(f"\nseed {seed}: batch {batch_id} ({variant.name}, {len(lines)} items)")
    for n, kill in enumerate(kills):
        args = bc.approve_args(batch_id, key) if n == 0 else ["batches", "resume", "--json"]
        _kill_run(bc, probe, batch_id, args, kill, tmp_path / f"seed-{seed}-{n}.log")
        if kill.where == "processing" and variant.open_group_seen:
            kill.where = "between groups"
        print(f"  kill {n + 1}: {kill}")
    resumed = {r["id"]: r for r in bc.json("batches", "resume")}
    print(f"  resume: {[(r['id'], r['status']) for r in resumed.values()]}")
    # The batch as resume printed it, or (a kill that came after the end) as it is.
    check_final_batch(bc, resumed.get(batch_id) or bc.status(batch_id), lines)
    return kills, lines


def _kill_run(
    bc: BatchCli, probe: BatchProbe, batch_id: str, args: list[str], kill: Kill, log_path: Path
) -> None:
    """Start ``payledger ...`` on the batch and SIGKILL it at ``kill``'s point."""
    version = probe.batch(batch_id).version

    def reached(batch: Batch) -> bool:  # this process saved something, and got that far
        return batch.version > version and batch.next_seq >= kill.after_seq

    with log_path.open("w") as log:
        process = bc.start(*args, log=log)
        try:
            at = probe.wait_until(batch_id, reached, process)
            if at is not None:
                time.sleep(kill.delay_s)
            killed = sigkill(process)
        finally:
            if process.poll() is None:
                sigkill(process)
    after = probe.batch(batch_id)
    kill.seq_at_kill, kill.status = after.next_seq, after.status
    if not killed or after.status not in ("approved", "processing"):
        kill.where = "too late"
        assert killed or wait_exit(process) in (0, 6), log_path.read_text()[-3000:]
    elif after.status == "approved":
        kill.where = "approved"
    elif after.reservation is not None:
        kill.where = "mid-group"
    else:
        kill.where = "processing"
