"""What the committer process's pipe costs in pickling: one group's decisions and answers.

The API process sends a group of decisions ``(request id, handler, method, (draft,))`` to the
committer process as one message, and gets the answers ``(request id, ok, Committed(Begun(...)))``
back as one (application/committer_process.py). ``multiprocessing.Connection.send`` pickles with
``ForkingPickler.dumps``; this times that against plain ``pickle.dumps`` and ``pickle.loads``,
for a group of 16 internal payments, in the same run.

    .venv/bin/python bench/pickle_cost.py [--group 16] [--rounds 3000]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from application.committer import Committed  # noqa: E402
from application.drafts import PaymentDraft  # noqa: E402
from application.payments import Begun, Next  # noqa: E402
from application.results import PaymentResult  # noqa: E402
from domain.payments import PaymentKind  # noqa: E402

NOW = datetime.now(UTC)


def draft() -> PaymentDraft:
    return PaymentDraft(
        payment_id=uuid.uuid4(), tenant="default", client="anonymous", kind=PaymentKind.PAYMENT,
        idempotency_key="bench-1234567", fingerprint="f" * 64, amount_minor=100, currency="CNY",
        channel="internal", payer={"account_id": str(uuid.uuid4())},
        payee={"account_id": str(uuid.uuid4())}, description=None, metadata={}, received_at=NOW,
    )  # fmt: skip


def answer() -> Committed[Begun]:
    result = PaymentResult(
        id=uuid.uuid4(), tenant="default", kind="payment", state="succeeded", status="succeeded",
        amount_minor=100, currency="CNY", channel="internal", payer={"account_id": "a"},
        payee={"account_id": "b"}, description=None, metadata={}, failure_code=None,
        failure_message=None, channel_reference="ref", created_at=NOW, completed_at=NOW,
        latency_ms=3, version=4,
    )  # fmt: skip
    return Committed(Begun(Next.DONE, result), 123)


def per_call_us(fn: Callable[[Any], Any], obj: Any, rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        fn(obj)
    return (time.perf_counter() - started) / rounds * 1e6


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--group", type=int, default=16, help="payments per message")
    p.add_argument("--rounds", type=int, default=3000)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "pickle-cost.json"))
    args = p.parse_args(argv)
    messages = {
        "decisions": [(i, "payments", "decide_intent", (draft(),)) for i in range(args.group)],
        "answers": [(i, True, answer()) for i in range(args.group)],
    }
    out: dict[str, Any] = {"group": args.group, "rounds": args.rounds, "us_per_message": {}}
    for name, message in messages.items():
        pickled = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        figures = {
            "ForkingPickler.dumps": per_call_us(ForkingPickler.dumps, message, args.rounds),
            "pickle.dumps": per_call_us(
                lambda m: pickle.dumps(m, pickle.HIGHEST_PROTOCOL), message, args.rounds
            ),
            "pickle.loads": per_call_us(pickle.loads, pickled, args.rounds),
        }
        out["us_per_message"][name] = {k: round(v, 1) for k, v in figures.items()}
        out.setdefault("bytes", {})[name] = len(pickled)
        for label, us in figures.items():
            print(
                f"{name:9} {label:21} {us:7.1f} us per message of {args.group} "
                f"({us / args.group:5.1f} us each, {len(pickled)} bytes)"
            )
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
