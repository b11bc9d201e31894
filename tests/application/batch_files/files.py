"""Sample files for the batch-file tests: the shared third-party corpus, and generated pain.001.

The corpus is vendored in ``tests/data/iso20022`` (third-party files with their licences; their
origins and SHA-256s are in its SOURCES.md). Tests that need it skip when it is absent, except
under CI=true, where its absence fails them.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data" / "iso20022"


def sample(relative: str) -> bytes:
    """The bytes of a corpus file, e.g. ``apiome/01-minimal-pain001.xml``."""
    path = DATA / relative
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"sample file missing: {path}")
        pytest.skip(f"sample file missing (shared ISO 20022 corpus not present): {path}")
    return path.read_bytes()


def generated_pain001(n: int, version: str = "pain.001.001.09", blocks: int = 1) -> bytes:
    """A pretty-printed pain.001 of ``n`` transactions spread over ``blocks`` PmtInf blocks;
    transaction i: EndToEndId ``E2E-i``, InstrId ``I-i``, amount ``(i % 1000) + 1``.50 EUR,
    creditor ``Employee i Müller``, remittance ``Salary i``."""
    v09 = version == "pain.001.001.09"
    bic = "BICFI" if v09 else "BIC"
    per_block = [n // blocks + (1 if b < n % blocks else 0) for b in range(blocks)]
    total = sum(Decimal((i % 1000) + 1) + Decimal("0.50") for i in range(n))
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:{version}">\n  <CstmrCdtTrfInitn>\n',
        f"    <GrpHdr>\n      <MsgId>GEN-{n}</MsgId>\n",
        "      <CreDtTm>2026-09-25T10:00:00</CreDtTm>\n",
        f"      <NbOfTxs>{n}</NbOfTxs>\n      <CtrlSum>{total}</CtrlSum>\n",
        "      <InitgPty><Nm>Musterfirma GmbH</Nm></InitgPty>\n    </GrpHdr>\n",
    ]
    i = 0
    for b, size in enumerate(per_block):
        day = f"2026-09-{28 - b % 20:02d}"
        date = f"<Dt>{day}</Dt>" if v09 else day
        parts.append(
            f"    <PmtInf>\n      <PmtInfId>BLOCK-{b + 1}</PmtInfId>\n      <PmtMtd>TRF</PmtMtd>\n"
            f"      <NbOfTxs>{size}</NbOfTxs>\n"
            "      <PmtTpInf><SvcLvl><Cd>SEPA</Cd></SvcLvl><CtgyPurp><Cd>SALA</Cd></CtgyPurp>"
            "</PmtTpInf>\n"
            f"      <ReqdExctnDt>{date}</ReqdExctnDt>\n"
            "      <Dbtr><Nm>Musterfirma GmbH</Nm></Dbtr>\n"
            "      <DbtrAcct><Id><IBAN>DE89370400440532013000</IBAN></Id></DbtrAcct>\n"
            f"      <DbtrAgt><FinInstnId><{bic}>COBADEFFXXX</{bic}></FinInstnId></DbtrAgt>\n"
        )
        for _ in range(size):
            parts.append(_transaction(i, bic))
            i += 1
        parts.append("    </PmtInf>\n")
    parts.append("  </CstmrCdtTrfInitn>\n</Document>\n")
    return "".join(parts).encode()


def _transaction(i: int, bic: str) -> str:
    return f"""      <CdtTrfTxInf>
        <PmtId>
          <InstrId>I-{i}</InstrId>
          <EndToEndId>E2E-{i}</EndToEndId>
        </PmtId>
        <Amt>
          <InstdAmt Ccy="EUR">{(i % 1000) + 1}.50</InstdAmt>
        </Amt>
        <CdtrAgt>
          <FinInstnId>
            <{bic}>INGBNL2A</{bic}>
          </FinInstnId>
        </CdtrAgt>
        <Cdtr>
          <Nm>Employee {i} Müller</Nm>
        </Cdtr>
        <CdtrAcct>
          <Id>
            <IBAN>NL91ABNA0417164300</IBAN>
          </Id>
        </CdtrAcct>
        <RmtInf>
          <Ustrd>Salary {i}</Ustrd>
        </RmtInf>
      </CdtTrfTxInf>
"""
