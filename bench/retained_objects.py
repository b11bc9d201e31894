"""How many objects the garbage collector tracks per payment once it is done: what survives in
the committer's aggregate cache and makes its young-generation passes long (docs/performance.md,
session 9).

    .venv/bin/python -m bench.retained_objects [--payments 2000]

One process, SQLite in a temporary directory, the committer as a thread: 200 payments to warm
up, then ``--payments`` more, counting ``gc.get_objects()`` after a full collection before and
after.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
from collections import Counter

from application.commands import ANONYMOUS, MakeDeposit, OpenAccount, SubmitPayment
from application.service import Payledger
from application.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            database_url=f"sqlite:///{folder}/retained.sqlite3",
            committer="thread",
            projections="off",
        )  # type: ignore[call-arg]
        with Payledger(settings) as svc:
            keys = iter(range(10**9))

            async def setup() -> tuple[object, object]:
                payer = await svc.accounts.open(OpenAccount(owner="p", currency="CNY"), ANONYMOUS)
                payee = await svc.accounts.open(OpenAccount(owner="q", currency="CNY"), ANONYMOUS)
                await svc.accounts.deposit(MakeDeposit(payer.id, "1000000.00", "dep"), ANONYMOUS)
                return payer.id, payee.id

            payer, payee = asyncio.run(setup())

            async def pay(n: int) -> None:
                for _ in range(n):
                    cmd = SubmitPayment(
                        amount="1.00", currency="CNY", channel="internal",
                        idempotency_key=f"r-{next(keys)}",
                        payer_account_id=payer, payee_account_id=payee,
                    )  # fmt: skip
                    await svc.submit_payment(cmd)

            asyncio.run(pay(200))
            gc.collect()
            before = Counter(type(o).__name__ for o in gc.get_objects())
            asyncio.run(pay(args.payments))
            gc.collect()
            after = Counter(type(o).__name__ for o in gc.get_objects())
    grown = after - before
    print(f"tracked objects retained per payment: {grown.total() / args.payments:.2f}")
    for name, count in grown.most_common(8):
        print(f"  {name:<24} {count / args.payments:.2f} per payment")


if __name__ == "__main__":
    main()
