"""A generated payroll pain.001 (credit transfer initiation, category purpose SALA) for the batch
benchmark: N transactions in one payment block, written incrementally with lxml.

    .venv/bin/python bench/pain001_gen.py OUT.xml [--items 100000] [--version 09|03]
                                          [--reject-every K] [--seed 1] [--no-validate]

* Creditors: valid German IBANs (bank code 37040044), account number
  ``532000000 + n * 10 + 5``: it ends in 5, which never hits the bank sandbox's triggers
  (``...0004`` AC04, ``...0001`` AC01, ``...0119`` timeout). With ``--reject-every K`` every
  K-th item's account number ends in ``0004`` instead: a closed account (AC04) at the bank.
  The check digits are computed here (ISO 13616, mod 97) and compared with
  ``schwifty.IBAN.generate`` for every 1,000th item and every reject: the same IBANs, without
  schwifty's 30 us per call.
* Amounts: salaries from 1,800.00 to 7,500.00 EUR (seeded), NbOfTxs and CtrlSum right in the
  group header and the payment block; ``ReqdExctnDt`` today (UTC), a debtor IBAN of the same
  bank (the funding account's).
* ``validate()`` checks a file against the shipped XSD (application/batch_files/xsd/).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
XSD_DIR = ROOT / "application" / "batch_files" / "xsd"
VERSIONS = {"09": "pain.001.001.09", "03": "pain.001.001.03"}
BANK_CODE = "37040044"
DEBTOR_BIC = "COBADEFFXXX"  # the bank of bank code 37040044
CURRENCY = "EUR"
DEBTOR_N = 999_999  # the debtor's account number comes from the creditors' formula, beyond them
SALARY_MINOR = (180_000, 750_000)
SCHWIFTY_SAMPLE = 1_000  # every so many items, the IBAN is compared with schwifty's


def account_number(n: int, reject: bool = False) -> str:
    """The account number of creditor ``n``: ends in 5, or in 0004 (AC04) for a reject."""
    account = f"{532000000 + n * 10 + 5:09d}"
    return account[:-4] + "0004" if reject else account


def german_iban(account: str, bank_code: str = BANK_CODE) -> str:
    """DE + check digits + bank code (8) + account number (10, zero-padded)."""
    bban = f"{bank_code}{int(account):010d}"
    check = 98 - int(bban + "131400") % 97  # D=13, E=14, then "00"
    return f"DE{check:02d}{bban}"


def schwifty_iban(account: str) -> str:
    from schwifty import IBAN

    return str(IBAN.generate("DE", bank_code=BANK_CODE, account_code=account))


def creditor_iban(n: int, reject: bool = False, check: bool = False) -> str:
    account = account_number(n, reject)
    iban = german_iban(account)
    if check and iban != schwifty_iban(account):
        raise AssertionError(f"IBAN of item {n}: {iban} != schwifty's {schwifty_iban(account)}")
    return iban


def debtor_iban() -> str:
    return creditor_iban(DEBTOR_N, check=True)


def is_reject(n: int, reject_every: int) -> bool:
    """Item ``n`` (0-based) is a reject when ``n + 1`` is a multiple of ``reject_every``."""
    return reject_every > 0 and (n + 1) % reject_every == 0


def fmt_minor(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


@dataclass(frozen=True)
class Payroll:
    path: str
    version: str
    items: int
    control_sum: str
    control_sum_minor: int
    currency: str
    debtor_iban: str
    message_id: str
    payment_block_id: str
    execution_date: str
    reject_every: int
    rejects: int
    rejected_minor: int
    bytes: int
    seconds: float
    schwifty_checked: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_pain001(
    path: Path,
    items: int,
    version: str = "09",
    *,
    reject_every: int = 0,
    seed: int = 1,
    message_id: str | None = None,
    execution_date: dt.date | None = None,
) -> Payroll:
    """Write the payroll file; return what it holds."""
    if items < 1:
        raise ValueError("items must be at least 1")
    name = VERSIONS[version]
    ns = f"urn:iso:std:iso:20022:tech:xsd:{name}"
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    day = execution_date or now.date()
    rng = random.Random(seed)
    amounts = [rng.randint(*SALARY_MINOR) for _ in range(items)]
    total = sum(amounts)
    rejected = sum(a for n, a in enumerate(amounts) if is_reject(n, reject_every))
    msg_id = message_id or f"PAYROLL-{day:%Y%m%d}-{secrets.token_hex(6).upper()}"
    block_id = f"{msg_id}-1"[:35]
    debtor = debtor_iban()
    month = f"{day:%B %Y}"
    checked = 0

    def tag(local: str) -> str:
        return f"{{{ns}}}{local}"

    with etree.xmlfile(str(path), encoding="UTF-8", buffered=True) as xf:
        xf.write_declaration()
        el = xf.element
        write = xf.write
        with el(tag("Document"), nsmap={None: ns}), el(tag("CstmrCdtTrfInitn")):
            with el(tag("GrpHdr")):
                with el(tag("MsgId")):
                    write(msg_id)
                with el(tag("CreDtTm")):
                    write(now.strftime("%Y-%m-%dT%H:%M:%S"))
                with el(tag("NbOfTxs")):
                    write(str(items))
                with el(tag("CtrlSum")):
                    write(fmt_minor(total))
                with el(tag("InitgPty")), el(tag("Nm")):
                    write("ACME Payroll Services GmbH")
            with el(tag("PmtInf")):
                with el(tag("PmtInfId")):
                    write(block_id)
                with el(tag("PmtMtd")):
                    write("TRF")
                with el(tag("BtchBookg")):
                    write("true")
                with el(tag("NbOfTxs")):
                    write(str(items))
                with el(tag("CtrlSum")):
                    write(fmt_minor(total))
                with el(tag("PmtTpInf")):
                    with el(tag("SvcLvl")), el(tag("Cd")):
                        write("SEPA")
                    with el(tag("CtgyPurp")), el(tag("Cd")):
                        write("SALA")
                if version == "09":
                    with el(tag("ReqdExctnDt")), el(tag("Dt")):
                        write(day.isoformat())
                else:
                    with el(tag("ReqdExctnDt")):
                        write(day.isoformat())
                with el(tag("Dbtr")), el(tag("Nm")):
                    write("ACME Manufacturing GmbH")
                with el(tag("DbtrAcct")), el(tag("Id")), el(tag("IBAN")):
                    write(debtor)
                bic = "BICFI" if version == "09" else "BIC"
                with el(tag("DbtrAgt")), el(tag("FinInstnId")), el(tag(bic)):
                    write(DEBTOR_BIC)
                with el(tag("ChrgBr")):
                    write("SLEV")
                t_tx, t_pmtid, t_instr, t_e2e = (
                    tag("CdtTrfTxInf"), tag("PmtId"), tag("InstrId"), tag("EndToEndId"),
                )  # fmt: skip
                t_amt, t_instd, t_cdtr, t_nm = tag("Amt"), tag("InstdAmt"), tag("Cdtr"), tag("Nm")
                t_acct, t_id, t_iban = tag("CdtrAcct"), tag("Id"), tag("IBAN")
                t_rmt, t_ustrd = tag("RmtInf"), tag("Ustrd")
                for n, minor in enumerate(amounts):
                    reject = is_reject(n, reject_every)
                    check = reject or n % SCHWIFTY_SAMPLE == 0 or n == items - 1
                    checked += check
                    with el(t_tx):
                        with el(t_pmtid):
                            with el(t_instr):
                                write(f"I-{n + 1:07d}")
                            with el(t_e2e):
                                write(f"SAL-{n + 1:07d}")
                        with el(t_amt), el(t_instd, Ccy=CURRENCY):
                            write(fmt_minor(minor))
                        with el(t_cdtr), el(t_nm):
                            write(f"Employee {n + 1:07d}")
                        with el(t_acct), el(t_id), el(t_iban):
                            write(creditor_iban(n, reject, check))
                        with el(t_rmt), el(t_ustrd):
                            write(f"Salary {month} employee {n + 1:07d}")
    return Payroll(
        path=str(path), version=name, items=items, control_sum=fmt_minor(total),
        control_sum_minor=total, currency=CURRENCY, debtor_iban=debtor, message_id=msg_id,
        payment_block_id=block_id, execution_date=day.isoformat(), reject_every=reject_every,
        rejects=sum(is_reject(n, reject_every) for n in range(items)), rejected_minor=rejected,
        bytes=path.stat().st_size, seconds=round(time.perf_counter() - started, 3),
        schwifty_checked=checked,
    )  # fmt: skip


def schema(name: str) -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(XSD_DIR / f"{name}.xsd"), parser))


def validate(data: bytes | Path, name: str, limit: int = 10) -> list[str]:
    """The first ``limit`` XSD errors of a document against ``xsd/<name>.xsd`` (none: valid)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=True)  # fmt: skip
    raw = data.read_bytes() if isinstance(data, Path) else data
    root = etree.fromstring(raw, parser)
    compiled = schema(name)
    if compiled.validate(root):
        return []
    return [f"line {e.line}: {e.message}" for e in compiled.error_log[:limit]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--version", choices=sorted(VERSIONS), default="09")
    p.add_argument("--reject-every", type=int, default=0, help="every K-th item is AC04")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-validate", action="store_true")
    args = p.parse_args(argv)
    payroll = write_pain001(args.out, args.items, args.version, reject_every=args.reject_every,
                            seed=args.seed)  # fmt: skip
    print(f"{payroll.path}: {payroll.version}, {payroll.items:,} items, CtrlSum "
          f"{payroll.control_sum} {payroll.currency}, {payroll.rejects} AC04 rejects, "
          f"{payroll.bytes:,} bytes in {payroll.seconds:.2f} s")  # fmt: skip
    if not args.no_validate:
        started = time.perf_counter()
        errors = validate(args.out, payroll.version)
        took = time.perf_counter() - started
        print(f"XSD {payroll.version}: {errors or 'valid'} ({took:.2f} s)")
        return 1 if errors else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
