"""Speed of the batch-file layer at 100,000 items (not a test: timings vary with the machine).

    .venv/bin/python -m bench.batch_files [items]

Prints wall and CPU seconds for: pain.001 parse + XSD validation + mapping (.03 and .09, one
block; and .09 with one block per transaction), CSV parsing, and pain.002 writing
(.03 and .10, with XSD validation of the output).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from application.batch_files import schemas
from application.batch_files.csv_format import parse_csv
from application.batch_files.model import StatusReport, TransactionStatus
from application.batch_files.pain001 import parse_pain001
from application.batch_files.pain002 import write_pain002
from tests.application.batch_files.files import generated_pain001


def measure(label: str, run: Callable[[], Any], size: int) -> tuple[float, float]:
    """Best of two runs: prints and returns (wall, cpu) seconds."""
    best_wall = best_cpu = float("inf")
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        del result
    print(f"{label:<52} {size:>8} items  wall {best_wall:5.2f} s  cpu {best_cpu:5.2f} s")
    return best_wall, best_cpu


def status_report(n: int) -> StatusReport:
    transactions = [
        TransactionStatus(
            end_to_end_id=f"E2E-{i}",
            status="RJCT" if i % 10 == 0 else "ACSC",
            reason_code="AC04" if i % 10 == 0 else None,
            additional_info="Creditor account closed" if i % 10 == 0 else None,
            instruction_id=f"I-{i}",
            amount=f"{i % 1000 + 1}.50",
            currency="EUR",
            payment_block_id=f"BLOCK-{i % 4}",
        )
        for i in range(n)
    ]
    return StatusReport(
        message_id="STS-BENCH",
        created_at=datetime.now(UTC),
        original_message_id="GEN",
        original_message_name="pain.001.001.09",
        original_created_at=datetime(2026, 9, 25, 10, 0),
        original_count=n,
        original_control_sum=None,
        group_status="PART",
        transactions=transactions,
    )


def main(n: int) -> None:
    for name in schemas.SCHEMA_NAMES:
        schemas.schema(name)  # compiled once per thread: not part of a request's cost
    for version in ("pain.001.001.03", "pain.001.001.09"):
        data = generated_pain001(n, version)
        print(f"{version}: {len(data) / 1e6:.1f} MB")
        measure(f"parse_pain001 {version}, 1 block", functools.partial(parse_pain001, data), n)
    data = generated_pain001(n, "pain.001.001.09", blocks=n)
    measure("parse_pain001 pain.001.001.09, 1 block per item", lambda: parse_pain001(data), n)
    header = "end_to_end_id,amount,currency,name,iban,bic,value_date,priority,remittance\n"
    rows = "".join(
        f"E2E-{i},{i % 1000 + 1}.50,CNY,张伟 {i},CN12345678,ICBKCNBJ,2026-09-30,{i % 3},工资\n"
        for i in range(n)
    )
    measure("parse_csv", lambda: parse_csv((header + rows).encode()), n)
    report = status_report(n)
    for version in ("pain.002.001.03", "pain.002.001.10"):
        measure(f"write_pain002 {version}", functools.partial(write_pain002, report, version), n)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
