"""Where a 100,000-item pain.001's intake spends its time, step by step, in one process.

    .venv/bin/python -m bench.intake_steps [--items 100000] [--out bench/results/intake-steps.json]

The file is bench/batch.py's (``bench.pain001_gen.write_pain001``). Steps, each best of two:
XML parse, XSD validation, mapping to items, the item checks (``check_batch``), and pickling the
checked batch to the committer process and back (what ``payledger serve`` does with it). Then
two alternatives that were considered: validating in a thread while mapping, and
python-stdnum's IBAN check against schwifty's (the one the intake uses).
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import threading
import timeit
from datetime import date
from pathlib import Path

from schwifty import IBAN
from stdnum import iban as stdnum_iban

from application.batch_files import schemas
from application.batch_files.pain001 import _Mapper, message_version, parse_xml
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
    root = parse_xml(data)
    version = message_version(root)
    schemas.schema_errors(root, version, limit=1)  # the schema compiled once, as in a server
    parsed = _Mapper(root, version).parsed_file()
    rules = parse_rules(None, "EUR")

    def check():  # type: ignore[no-untyped-def]
        intake._iban.cache_clear()  # each run checks every IBAN, as a new file's intake does
        return check_batch(parsed, currency=None, rules=rules, today=date.today(),
                           execution_date=None)  # fmt: skip

    checked = check()
    blob = pickle.dumps(checked, protocol=pickle.HIGHEST_PROTOCOL)

    def validate_while_mapping() -> None:
        thread = threading.Thread(target=schemas.schema_errors, args=(root, version, 1))
        thread.start()
        _Mapper(root, version).parsed_file()
        thread.join()

    steps = {
        "xml_parse": measure("XML parse", lambda: parse_xml(data), n),
        "xsd": measure("XSD validation", lambda: schemas.schema_errors(root, version, 1), n),
        "mapping": measure("mapping to items", lambda: _Mapper(root, version).parsed_file(), n),
        "item_checks": measure("item checks (check_batch)", check, n),
        "pickle": measure(
            f"pickle the checked batch ({len(blob) / 1e6:.1f} MB)",
            lambda: pickle.dumps(checked, protocol=5),
            n,
        ),
        "unpickle": measure("unpickle it", lambda: pickle.loads(blob), n),
        "xsd_in_a_thread_while_mapping": measure(
            "XSD in a thread while mapping", validate_while_mapping, n
        ),
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
        "steps_s": {k: {"wall": round(w, 3), "cpu": round(c, 3)} for k, (w, c) in steps.items()},
        "iban_check_us": {k: round(v * 1e6, 2) for k, v in iban_us.items()},
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
