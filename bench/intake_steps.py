"""Where a 100,000-item pain.001's intake spends its time, step by step, in one process.

    .venv/bin/python -m bench.intake_steps [--items 100000] [--out bench/results/intake-steps.json]

The file is bench/batch.py's (``bench.pain001_gen.write_pain001``). Steps, each best of two:
what the intake does, ``parse_pain001`` (one streaming pass: parse, XSD validation and mapping to
items, with the peak RSS it adds), the item checks (``check_batch``), and pickling the checked
batch to the committer process and back (what ``payledger serve`` does with it); for comparison,
parsing the whole tree and validating it (what the intake did before the streaming pass) and
python-stdnum's IBAN check against schwifty's (the one the intake uses).
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import tempfile
import timeit
from datetime import date
from pathlib import Path

from schwifty import IBAN
from stdnum import iban as stdnum_iban

from application.batch_files import schemas
from application.batch_files.pain001 import message_version, parse_pain001, parse_xml
from application.batches import intake
from application.batches.intake import check_batch
from bench.batch_files import measure
from bench.pain001_gen import write_pain001
from bench.replay import RESULTS, git_info, machine_info
from domain.batch_rules import parse_rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--out", default=str(RESULTS / "intake-steps.json"))
    args = parser.parse_args()
    n = args.items
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "payroll.xml"
        write_pain001(path, n)
        data = path.read_bytes()
    print(f"pain.001.001.09: {n:,} items, {len(data) / 1e6:.1f} MB")
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    parsed = parse_pain001(data)
    streamed_peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) / 1024
    print(f"parse_pain001 raised the peak RSS by {streamed_peak_mib:.0f} MiB")
    root = parse_xml(data)
    version = message_version(root)
    rules = parse_rules(None, "EUR")

    def check():  # type: ignore[no-untyped-def]
        intake._iban.cache_clear()  # each run checks every IBAN, as a new file's intake does
        return check_batch(parsed, currency=None, rules=rules, today=date.today(),
                           execution_date=None)  # fmt: skip

    checked = check()
    blob = pickle.dumps(checked, protocol=pickle.HIGHEST_PROTOCOL)

    steps = {
        "parse_pain001_streamed": measure(
            "parse_pain001 (streamed parse, XSD and mapping)", lambda: parse_pain001(data), n
        ),
        "whole_tree_xml_parse": measure(
            "for comparison: whole-tree XML parse", lambda: parse_xml(data), n
        ),
        "whole_tree_xsd": measure(
            "for comparison: XSD validation of that tree",
            lambda: schemas.schema_errors(root, version, 1),
            n,
        ),
        "item_checks": measure("item checks (check_batch)", check, n),
        "pickle": measure(
            f"pickle the checked batch ({len(blob) / 1e6:.1f} MB)",
            lambda: pickle.dumps(checked, protocol=5),
            n,
        ),
        "unpickle": measure("unpickle it", lambda: pickle.loads(blob), n),
    }
    ibans = [item.payee["iban"] for item in checked.items[:2000] if item.payee]
    iban_us = {
        "schwifty": timeit.timeit(lambda: [IBAN(x) for x in ibans], number=3) / 3 / len(ibans),
        "stdnum": timeit.timeit(lambda: [stdnum_iban.validate(x) for x in ibans], number=3)
        / 3
        / len(ibans),
    }
    for name, seconds in iban_us.items():
        print(f"IBAN check, {name:<9} {seconds * 1e6:6.1f} us per IBAN")
    document = {
        "command": "python -m bench.intake_steps", "items": n, "file_bytes": len(data),
        "machine": machine_info(), "git": git_info(),
        "parse_pain001_peak_rss_added_mib": round(streamed_peak_mib),
        "steps_s": {k: {"wall": round(w, 3), "cpu": round(c, 3)} for k, (w, c) in steps.items()},
        "iban_check_us": {k: round(v * 1e6, 2) for k, v in iban_us.items()},
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
