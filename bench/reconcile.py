"""Reconciling a channel statement of N lines against N payments: lines/s and peak memory.

    .venv/bin/python bench/reconcile.py [--payments 1000000] [--stores postgres,sqlite]
                                        [--label NAME] [--keep]

For each store, in a fresh PostgreSQL schema ``bench_recon_<random>`` (dropped at the end) or a
temporary SQLite file:

1. **Ledger**: ``--payments`` bank transfers paid as payroll batches of 100,000 items through
   the application's own handlers (intake of a CSV file, approval by a second person, the batch
   engine with the bank_transfer sandbox, no latency), all today; then the views are built
   (``projections.replay.rebuild``). This is set-up, timed but not the figure.
2. **Statement**: the bank channel's settlement file for the day, written from the payments
   view (reference, our id, amount) with ``write_csv_statement``, then doctored so that every
   category occurs a known number of times: lines dropped (missing_in_statement), amounts
   changed (amount_mismatch), lines added (missing_in_ledger), lines marked failed
   (status_mismatch), lines repeated (duplicate_in_statement).
3. **Baseline**, same run, same database: reading the statement (``read_statement``, every line
   parsed) and COPYing its rows into a table (PostgreSQL) / inserting them (SQLite): the least
   any reconciliation must do with the file.
4. **Reconcile**: ``payledger reconcile --channel bank_transfer FILE --json`` as a separate process,
   exactly as an operator runs it: hash, parse and stage the file, match in the database,
   record the results (events), bring the views up to date (result items projected), print the
   summary. Wall time and the process's peak RSS (``getrusage(RUSAGE_CHILDREN)``).
5. **Check**: every category's count equals what was doctored.

Results: ``bench/results/reconcile[-LABEL].json``. The machine is shared: compare the ratio
reconcile / baseline across runs, not the seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schwifty import IBAN  # noqa: E402

import bench.replay as replay  # noqa: E402  (machine and git information)
from application.batches.files import parse_batch_file  # noqa: E402
from application.batches.handlers import SubmitBatch  # noqa: E402
from application.commands import MakeDeposit, OpenAccount, Principal  # noqa: E402
from application.reconciliation.statements import (  # noqa: E402
    StatementLine,
    read_statement,
    write_csv_statement,
)
from application.service import Payledger  # noqa: E402
from application.settings import Settings  # noqa: E402
from projections import replay as replay_mod  # noqa: E402
from projections.db import ViewDB  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
GOAL_SECONDS = 60.0  # issue 6: 1,000,000 lines against 1,000,000 payments on PostgreSQL
BATCH_ITEMS = 100_000  # a batch's largest size
CHANNEL = "bank_transfer"
DOCTORED_SHARE = 0.001  # of the lines, per category


def seed_ledger(svc: Payledger, payments: int, seed: int) -> dict[str, Any]:
    """``payments`` bank transfers as payroll batches of up to 100,000 items, through the
    application's own handlers: intake, approval by a second person, the batch engine."""
    rng = random.Random(seed)
    maker, checker = Principal("default", "cli:maker"), Principal("default", "key:checker")
    started = time.perf_counter()
    funding = run_sync(svc.accounts.open(OpenAccount("payroll", "EUR", "funding"), maker))
    made = 0
    batches = 0
    while made < payments:
        size = min(BATCH_ITEMS, payments - made)
        rows = ["end_to_end_id,amount,currency,name,iban"]
        total = 0
        for i in range(made, made + size):
            cents = rng.randint(1_000, 500_000)
            total += cents
            rows.append(f"E{i:08d},{cents // 100}.{cents % 100:02d},EUR,Employee {i},{iban(i)}")
        run_sync(svc.accounts.deposit(
            MakeDeposit(funding.id, f"{total // 100}.{total % 100:02d}", f"dep-{batches}"), maker
        ))  # fmt: skip
        parsed = parse_batch_file("\n".join(rows).encode())
        batch = run_sync(svc.batches.submit(
            SubmitBatch(parsed, f"payroll-{batches}", funding.id, None, None), maker
        ))  # fmt: skip
        svc.committer.run(svc.decision("batches", "decide_approve", batch.id, checker, True))
        done = run_sync(svc.batch_runner.run(batch.id))
        assert done is not None and done.status == "completed", done
        made += size
        batches += 1
        print(f"    ... {made:,} payments ({time.perf_counter() - started:.0f} s)", flush=True)
    return {
        "payments": made,
        "batches": batches,
        "seconds": round(time.perf_counter() - started, 1),
    }


def iban(n: int) -> str:
    """A valid German IBAN whose account number ends in 5: never a sandbox trigger."""
    return str(
        IBAN.generate("DE", bank_code="37040044", account_code=f"{532000000 + n * 10 + 5:09d}")
    )


def run_sync(coro: Any) -> Any:
    return asyncio.run(coro)


def write_statement(store: Any, path: Path, seed: int, day: dt.date) -> dict[str, Any]:
    """The day's statement from the payments view, doctored; returns the expected counts."""
    rng = random.Random(seed)
    db = ViewDB(store)
    rows = db.query(
        "SELECT payment_id, channel_reference, amount_minor, currency, status FROM view_payments "
        f"WHERE channel = '{CHANNEL}' AND status = 'succeeded' ORDER BY created_us, payment_id"
    )
    db.close()
    n = len(rows)
    k = max(1, int(n * DOCTORED_SHARE))
    picked = rng.sample(range(n), 4 * k)
    dropped, changed, flipped, repeated = (set(picked[i * k : (i + 1) * k]) for i in range(4))
    # The first copy of a repeated line matches; the second is the duplicate.
    expected = {
        "matched": n - 3 * k, "missing_in_statement": k, "amount_mismatch": k,
        "status_mismatch": k, "duplicate_in_statement": k, "missing_in_ledger": k, "timing": 0,
    }  # fmt: skip

    def lines() -> Any:
        line_no = 0
        for i, (pid, reference, amount, currency, _status) in enumerate(rows):
            if i in dropped:
                continue
            copies = 2 if i in repeated else 1
            for _ in range(copies):
                line_no += 1
                yield StatementLine(
                    line_no=line_no, reference=reference, payment_ids=(pid,),
                    amount_minor=amount + (7 if i in changed else 0), currency=currency,
                    direction="debit", status="failed" if i in flipped else "settled",
                    booked_on=day, entry_ref=f"E{line_no:09d}",
                )  # fmt: skip
        for j in range(k):  # charges the ledger never saw
            line_no += 1
            yield StatementLine(
                line_no=line_no, reference=f"bank_unknown_{j:08d}", payment_ids=(),
                amount_minor=1000 + j, currency="EUR", direction="debit", status="settled",
                booked_on=day, entry_ref=f"X{j:09d}",
            )  # fmt: skip

    with path.open("w", encoding="utf-8", newline="") as out:
        written = write_csv_statement(lines(), out)
    return {"payments": n, "lines": written, "expected": expected, "doctored_per_category": k}


def baseline(store: Any, path: Path) -> dict[str, Any]:
    """Parse the whole statement, and bulk-insert its rows into a scratch table."""
    started = time.perf_counter()
    with path.open("rb") as f:
        parsed = [
            (ln.line_no, ln.reference, ln.amount_minor, ln.currency, ln.status)
            for ln in read_statement(f)
        ]
    parse_s = time.perf_counter() - started
    db = ViewDB(store)
    table = f"bench_baseline_{secrets.token_hex(3)}"
    db.execute(
        f"CREATE TABLE {table} (line_no BIGINT, reference TEXT, amount_minor BIGINT, "
        "currency TEXT, status TEXT)"
    )
    types = {"line_no": "bigint", "reference": "text", "amount_minor": "bigint",
             "currency": "text", "status": "text"}  # fmt: skip
    started = time.perf_counter()
    with db.transaction():
        for i in range(0, len(parsed), 50_000):
            db.copy_rows(table, tuple(types), parsed[i : i + 50_000], types)
    insert_s = time.perf_counter() - started
    db.execute(f"DROP TABLE {table}")
    db.close()
    n = len(parsed)
    del parsed
    gc.collect()
    return {
        "lines": n, "parse_s": round(parse_s, 3), "insert_s": round(insert_s, 3),
        "seconds": round(parse_s + insert_s, 3),
        "lines_per_s": round(n / (parse_s + insert_s)),
    }  # fmt: skip


# Runs ``payledger reconcile`` and reports the process's own peak RSS (VmHWM of its memory
# after exec: ``getrusage`` of a child would count the bench process it was forked from).
WRAPPER = """
import atexit, re, runpy, sys
def peak():
    status = open("/proc/self/status").read()
    print("VMHWM_KB", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
atexit.register(peak)
sys.argv = ["payledger", *sys.argv[1:]]
runpy.run_module("interfaces.cli", run_name="__main__")
"""


def reconcile(url: str, path: Path, day: dt.date) -> dict[str, Any]:
    env = {**os.environ, "PAYLEDGER_DATABASE_URL": url, "PAYLEDGER_ENV": "test"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, "reconcile", "--channel", CHANNEL, str(path),
         "--period-start", day.isoformat(), "--period-end", day.isoformat(), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"payledger reconcile failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_kb = int(done.stderr.rsplit("VMHWM_KB", 1)[1].split()[0])
    summary = json.loads(done.stdout)
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "id": summary["id"],
        "line_count": summary["line_count"],
        "item_count": summary["item_count"],
        "summary": {c: t["count"] for c, t in summary["summary"].items()},
        "difference": summary["balances"].get("difference"),
    }


def bench_store(kind: str, payments: int, keep: bool) -> dict[str, Any]:
    tmpdir = tempfile.mkdtemp(prefix="payledger-bench-recon-")
    if kind == "postgres":
        url = f"{PG_BASE}?schema=bench_recon_{secrets.token_hex(4)}"
    else:
        url = f"sqlite:///{tmpdir}/payledger.sqlite3"
    settings = Settings(
        database_url=url, env="test", committer="thread", sandbox_latency_ms={CHANNEL: 0}
    )
    store = settings.store
    result: dict[str, Any] = {"store": kind, "url": store.describe(), "payments": payments}
    svc = Payledger(settings)
    statement = Path(tmpdir) / "bank-statement.csv"
    try:
        print(f"[{kind}] paying {payments:,} transfers in batches", flush=True)
        day = dt.datetime.now(dt.UTC).date()
        result["ledger"] = seed_ledger(svc, payments, seed=6)
        print(f"[{kind}] {result['ledger']['payments']:,} payments in "
              f"{result['ledger']['seconds']:.0f} s; building the views", flush=True)  # fmt: skip
        started = time.perf_counter()
        replay_mod.rebuild(svc.app, store)
        result["views_s"] = round(time.perf_counter() - started, 1)
        svc.close()
        made = write_statement(store, statement, seed=6, day=day)
        result["statement"] = {**made, "bytes": statement.stat().st_size}
        print(f"[{kind}] statement: {made['lines']:,} lines, "
              f"{statement.stat().st_size / 1e6:.0f} MB; doctored {made['doctored_per_category']} "
              "per category", flush=True)  # fmt: skip
        result["baseline"] = base = baseline(store, statement)
        print(f"[{kind}] baseline (parse + bulk insert): {base['seconds']:.2f} s, "
              f"{base['lines_per_s']:,} lines/s", flush=True)  # fmt: skip
        result["reconcile"] = rec = reconcile(url, statement, day)
        rec["lines_per_s"] = round(made["lines"] / rec["seconds"])
        result["ratio_reconcile_over_baseline"] = round(rec["seconds"] / base["seconds"], 2)
        ok = all(rec["summary"].get(c, 0) == n for c, n in made["expected"].items())
        result["check"] = {"ok": ok, "expected": made["expected"], "got": rec["summary"]}
        result["goal"] = {"seconds": GOAL_SECONDS, "met": kind != "postgres"
                          or rec["seconds"] <= GOAL_SECONDS}  # fmt: skip
        print(f"[{kind}] reconcile: {rec['seconds']:.1f} s, {rec['lines_per_s']:,} lines/s, "
              f"peak RSS {rec['peak_rss_mb']:.0f} MB, {result['ratio_reconcile_over_baseline']} x "
              f"the baseline; categories {'as doctored' if ok else 'WRONG'}: {rec['summary']}",
              flush=True)  # fmt: skip
    finally:
        if not keep:
            if kind == "postgres":
                store.drop()
            for f in Path(tmpdir).iterdir():
                f.unlink()
            os.rmdir(tmpdir)
        else:
            print(f"[{kind}] kept {url} and {statement}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--stores", default="postgres")
    parser.add_argument("--label", default="")
    parser.add_argument("--keep", action="store_true", help="keep the database and the file")
    args = parser.parse_args(argv)
    results = [bench_store(kind, args.payments, args.keep) for kind in args.stores.split(",")]
    out = {
        "bench": "reconcile", "machine": replay.machine_info(), "git": replay.git_info(),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "results": results,
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    name = f"reconcile{'-' + args.label if args.label else ''}.json"
    (RESULTS / name).write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote bench/results/{name}")
    return 0 if all(r["check"]["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
