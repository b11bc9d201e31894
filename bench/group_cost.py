"""What a save costs whatever its size: CPU per payment in groups of one against groups of 32,
and what one PostgreSQL round trip costs the client.

    .venv/bin/python -m bench.group_cost [--payments 2000] [--out bench/results/group-cost.json]

One process, a ``Payledger`` with its committer as a thread on a fresh PostgreSQL schema (no
HTTP, no projector): 100 accounts, then ``--payments`` internal payments one after another
(each its own group) and the same number 32 at a time (groups of up to 32), each twice,
alternately, with the process's CPU time per payment. Then ``SELECT 1`` and
``BEGIN; SELECT 1; COMMIT`` on one connection, CPU and wall time per call.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID

import psycopg

from application.commands import ANONYMOUS, MakeDeposit, OpenAccount, SubmitPayment
from application.service import Payledger
from application.settings import Settings
from bench.replay import RESULTS, git_info, machine_info

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
WIDTH = 32
_keys = itertools.count()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(run: Callable[[], object], calls: int) -> dict[str, float]:
    c0, t0 = cpu_s(), time.perf_counter()
    run()
    c1, t1 = cpu_s(), time.perf_counter()
    return {
        "cpu_us": round(1e6 * (c1 - c0) / calls, 1),
        "wall_us": round(1e6 * (t1 - t0) / calls, 1),
    }


def group_costs(n: int) -> dict[str, list[dict[str, float]]]:
    schema = f"bench_group_{secrets.token_hex(4)}"
    settings = Settings(
        database_url=f"{PG_BASE}?schema={schema}", committer="thread", projections="off"
    )  # type: ignore[call-arg]
    try:
        with Payledger(settings) as svc:
            payers, payees = open_accounts(svc)

            async def pay(i: int) -> None:
                cmd = SubmitPayment(
                    amount="1.00", currency="CNY", channel="internal",
                    idempotency_key=f"g-{next(_keys)}",
                    payer_account_id=payers[i % len(payers)],
                    payee_account_id=payees[(i * 7) % len(payees)],
                )  # fmt: skip
                await svc.submit_payment(cmd)

            async def one_by_one() -> None:
                for i in range(n):
                    await pay(i)

            async def concurrently() -> None:
                async def worker(w: int) -> None:
                    for i in range(w, n, WIDTH):
                        await pay(i)

                await asyncio.gather(*(worker(w) for w in range(WIDTH)))

            runs: dict[str, Callable[[], Awaitable[None]]] = {
                "groups_of_1": one_by_one,
                f"up_to_{WIDTH}_at_a_time": concurrently,
            }
            asyncio.run(one_by_one())  # warm-up: caches, prepared statements
            out: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
            for _ in range(2):
                for name, run in runs.items():
                    out[name].append(measure(lambda run=run: asyncio.run(run()), n))
                    print(f"{name:<22} {out[name][-1]}", flush=True)
            return out
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def open_accounts(svc: Payledger) -> tuple[list[UUID], list[UUID]]:
    async def setup() -> tuple[list[UUID], list[UUID]]:
        payers, payees = [], []
        for i in range(50):
            payer = await svc.accounts.open(OpenAccount(owner=f"p{i}", currency="CNY"), ANONYMOUS)
            await svc.accounts.deposit(MakeDeposit(payer.id, "100000.00", f"dep-{i}"), ANONYMOUS)
            payers.append(payer.id)
            payee = await svc.accounts.open(OpenAccount(owner=f"q{i}", currency="CNY"), ANONYMOUS)
            payees.append(payee.id)
        return payers, payees

    return asyncio.run(setup())


def round_trips(calls: int = 3000) -> dict[str, dict[str, float]]:
    with psycopg.connect(PG_BASE, autocommit=True) as conn:

        def select() -> None:
            for _ in range(calls):
                conn.execute("SELECT 1")

        def transaction() -> None:
            for _ in range(calls):
                with conn.transaction():
                    conn.execute("SELECT 1")

        out = {
            "select_1": measure(select, calls),
            "begin_select_commit": measure(transaction, calls),
        }
    for name, figures in out.items():
        print(f"{name:<22} {figures}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--out", default=str(RESULTS / "group-cost.json"))
    args = parser.parse_args()
    document = {
        "command": "python -m bench.group_cost", "payments": args.payments,
        "machine": machine_info(), "git": git_info(),
        "per_payment": group_costs(args.payments), "round_trip": round_trips(),
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
