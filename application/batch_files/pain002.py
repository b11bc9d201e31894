"""ISO 20022 pain.002 (customer payment status report), versions .03 and .10, out.

``write_pain002`` builds the report with lxml, validates it against the shipped XSD and returns
UTF-8 bytes. Element order follows the XSDs' sequences:

- ``GrpHdr``: ``MsgId``, ``CreDtTm``.
- ``OrgnlGrpInfAndSts``: ``OrgnlMsgId``, ``OrgnlMsgNmId``, ``OrgnlCreDtTm``, ``OrgnlNbOfTxs``,
  ``OrgnlCtrlSum``, ``GrpSts``, ``StsRsnInf``, ``NbOfTxsPerSts`` (one per transaction status,
  with its count and the sum of its amounts).
- ``OrgnlPmtInfAndSts``, one per payment block (transactions grouped by ``payment_block_id``;
  those without one go into a block named by the original message id): ``OrgnlPmtInfId``,
  ``OrgnlNbOfTxs``, ``OrgnlCtrlSum``, ``PmtInfSts`` (the report's, else derived from its
  transactions: their common status, or PART), ``NbOfTxsPerSts``, then ``TxInfAndSts`` per
  transaction: ``StsId``, ``OrgnlInstrId``, ``OrgnlEndToEndId``, ``TxSts``,
  ``StsRsnInf/Rsn/Cd`` (``Prtry`` for a code longer than 4) and ``AddtlInf``, and
  ``OrgnlTxRef/Amt/InstdAmt@Ccy``.

What the XSD cannot hold is left out or shortened, never written invalid: identifiers are cut to
35 characters, ``AddtlInf`` to 105; an amount that is not a valid ISO amount (negative, more than
5 decimals, not a number) is not echoed, nor is a control sum that is not a valid decimal. In
.03 statuses are closed lists (a transaction cannot be PART or RCVD): any other status is a
``ValueError`` from the caller, as is an unknown version.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from decimal import Decimal

from lxml import etree

from application.batch_files import schemas
from application.batch_files.model import StatusReport, TransactionStatus

SUPPORTED_VERSIONS = ("pain.002.001.03", "pain.002.001.10")
GROUP_STATUSES_03 = frozenset(
    {"ACTC", "RCVD", "PART", "RJCT", "PDNG", "ACCP", "ACSP", "ACSC", "ACWC"}
)
TRANSACTION_STATUSES_03 = frozenset({"ACTC", "RJCT", "PDNG", "ACCP", "ACSP", "ACSC", "ACWC"})
MAX_ID = 35
MAX_ADDITIONAL_INFO = 105
_AMOUNT = re.compile(r"\d+(?:\.\d{1,5})?|\.\d{1,5}")  # xs:decimal >= 0, 5 decimals
_DECIMAL = re.compile(r"[+-]?(\d*)(?:\.(\d*))?")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CURRENCY = re.compile(r"[A-Z]{3}")


class InvalidReport(RuntimeError):
    """What we wrote does not validate against the XSD: a bug in this module."""


def write_pain002(report: StatusReport, version: str = "pain.002.001.10") -> bytes:
    """The report as a pain.002 document of ``version`` (``pain.002.001.10`` or ``.03``)."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported version {version!r}; supported: {SUPPORTED_VERSIONS}")
    if version == "pain.002.001.03":
        _check_statuses_03(report)
    root = _Writer(version).document(report)
    errors = schemas.schema_errors(root, version, limit=5)
    if errors:
        raise InvalidReport("; ".join(str(e) for e in errors))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _check_statuses_03(report: StatusReport) -> None:
    group = [report.group_status, *(status for _, status in report.payment_blocks)]
    for status in group:
        if status not in GROUP_STATUSES_03:
            raise ValueError(f"group status {status!r} does not exist in pain.002.001.03")
    for tx in report.transactions:
        if tx.status not in TRANSACTION_STATUSES_03:
            raise ValueError(
                f"transaction status {tx.status!r} ({tx.end_to_end_id}) does not exist in "
                "pain.002.001.03"
            )


class _Writer:
    def __init__(self, version: str) -> None:
        self.ns = schemas.namespace(version)
        self.tags: dict[str, str] = {}
        self.templates: dict[tuple[object, ...], etree._Element] = {}
        leaves = ("StsId", "OrgnlInstrId", "OrgnlEndToEndId", "TxSts", "Cd", "Prtry", "AddtlInf")
        self.leaf_tags = [self.tag(local) for local in (*leaves, "InstdAmt")]  # texts' order

    def tag(self, local: str) -> str:
        """``{namespace}local``, made once per name."""
        tag = self.tags.get(local)
        if tag is None:
            tag = self.tags[local] = f"{{{self.ns}}}{local}"
        return tag

    def add(self, parent: etree._Element, local: str, text: str | None = None) -> etree._Element:
        element = etree.SubElement(parent, self.tag(local))
        if text is not None:
            _set_text(element, text)
        return element

    def document(self, report: StatusReport) -> etree._Element:
        root = etree.Element(self.tag("Document"), nsmap={None: self.ns})
        body = self.add(root, "CstmrPmtStsRpt")
        header = self.add(body, "GrpHdr")
        self.add(header, "MsgId", _id(report.message_id))
        self.add(header, "CreDtTm", report.created_at.isoformat())
        self.group(body, report)
        statuses = dict(report.payment_blocks)
        status_ids = _status_ids(report)
        for block_id, transactions in _blocks(report).items():
            self.block(body, block_id, transactions, statuses.get(block_id), status_ids)
        return root

    def group(self, body: etree._Element, report: StatusReport) -> None:
        group = self.add(body, "OrgnlGrpInfAndSts")
        self.add(group, "OrgnlMsgId", _id(report.original_message_id))
        self.add(group, "OrgnlMsgNmId", _id(report.original_message_name))
        if report.original_created_at is not None:
            self.add(group, "OrgnlCreDtTm", report.original_created_at.isoformat())
        self.add(group, "OrgnlNbOfTxs", str(report.original_count))
        control_sum = _decimal_number(report.original_control_sum)
        if control_sum is not None:
            self.add(group, "OrgnlCtrlSum", control_sum)
        self.add(group, "GrpSts", report.group_status)
        self.reason(group, report.group_reason_code, report.group_additional_info)
        self.counts(group, report.transactions)

    def block(
        self,
        body: etree._Element,
        block_id: str,
        transactions: list[TransactionStatus],
        status: str | None,
        status_ids: Iterator[str],
    ) -> None:
        block = self.add(body, "OrgnlPmtInfAndSts")
        self.add(block, "OrgnlPmtInfId", _id(block_id))
        if transactions:
            self.add(block, "OrgnlNbOfTxs", str(len(transactions)))
            total = _sum(tx.amount for tx in transactions)
            if total is not None:
                self.add(block, "OrgnlCtrlSum", total)
        self.add(block, "PmtInfSts", status or _common_status(transactions))
        self.counts(block, transactions)
        for tx, status_id in zip(transactions, status_ids, strict=False):  # ids: endless
            self.transaction(block, tx, status_id)

    def transaction(self, block: etree._Element, tx: TransactionStatus, status_id: str) -> None:
        """One ``TxInfAndSts``: a copy of the template for its shape (which optional elements
        it has), with the texts put in; copying is a third of the cost of building."""
        amount = _amount(tx.amount)
        currency = tx.currency if amount is not None and _is_currency(tx.currency) else None
        texts = (
            status_id,
            _id(tx.instruction_id) if tx.instruction_id else None,
            _id(tx.end_to_end_id) if tx.end_to_end_id else None,
            tx.status,
            _id(tx.reason_code) if tx.reason_code else None,
            tx.additional_info[:MAX_ADDITIONAL_INFO] if tx.additional_info else None,
            amount if currency is not None else None,
        )
        _, instruction_id, end_to_end_id, _, code, info, echoed = texts
        shape = (
            instruction_id is not None,
            end_to_end_id is not None,
            code is not None and len(code) <= 4,  # Cd, else Prtry
            code is not None,
            info is not None,
            echoed is not None,
        )
        template = self.templates.get(shape)
        if template is None:
            template = self.templates[shape] = self.transaction_template(texts)
        element = template.__copy__()  # lxml copies the whole subtree
        leaves = element.iter(*self.leaf_tags)
        for leaf, text in zip(leaves, [t for t in texts if t is not None], strict=True):
            _set_text(leaf, text)
        if currency is not None:
            leaf.set("Ccy", currency)
        block.append(element)

    def transaction_template(self, texts: tuple[str | None, ...]) -> etree._Element:
        """A ``TxInfAndSts`` with these elements present, in the XSD's order."""
        status_id, instruction_id, end_to_end_id, status, code, info, amount = texts
        element = etree.Element(self.tag("TxInfAndSts"), nsmap={None: self.ns})
        self.add(element, "StsId", status_id)
        if instruction_id is not None:
            self.add(element, "OrgnlInstrId", instruction_id)
        if end_to_end_id is not None:
            self.add(element, "OrgnlEndToEndId", end_to_end_id)
        self.add(element, "TxSts", status)
        self.reason(element, code, info)
        if amount is not None:
            reference = self.add(element, "OrgnlTxRef")
            self.add(self.add(reference, "Amt"), "InstdAmt", amount)
        return element

    def reason(self, parent: etree._Element, code: str | None, info: str | None) -> None:
        if not code and not info:
            return
        reason = self.add(parent, "StsRsnInf")
        if code:
            self.add(self.add(reason, "Rsn"), "Cd" if len(code) <= 4 else "Prtry", _id(code))
        if info:
            self.add(reason, "AddtlInf", info[:MAX_ADDITIONAL_INFO])

    def counts(self, parent: etree._Element, transactions: list[TransactionStatus]) -> None:
        """``NbOfTxsPerSts``: per status, how many transactions and the sum of their amounts."""
        by_status: dict[str, list[str | None]] = {}
        for tx in transactions:
            by_status.setdefault(tx.status, []).append(tx.amount)
        for status, amounts in by_status.items():
            counts = self.add(parent, "NbOfTxsPerSts")
            self.add(counts, "DtldNbOfTxs", str(len(amounts)))
            self.add(counts, "DtldSts", status)
            total = _sum(amounts)
            if total is not None:
                self.add(counts, "DtldCtrlSum", total)


def _blocks(report: StatusReport) -> dict[str, list[TransactionStatus]]:
    """Transactions by payment block, blocks in the report's order then in order of appearance."""
    blocks: dict[str, list[TransactionStatus]] = {block: [] for block, _ in report.payment_blocks}
    for tx in report.transactions:
        blocks.setdefault(tx.payment_block_id or report.original_message_id, []).append(tx)
    return blocks


def _common_status(transactions: list[TransactionStatus]) -> str:
    statuses = Counter(tx.status for tx in transactions)
    if len(statuses) == 1:
        return next(iter(statuses))
    return "PART" if statuses else "RJCT"


def _status_ids(report: StatusReport) -> Iterator[str]:
    """``StsId``s unique in the report: our MsgId and a sequence number, within 35 characters."""
    width = len(str(len(report.transactions)))
    prefix = report.message_id[: MAX_ID - width - 1]
    return (f"{prefix}-{n}" for n in itertools.count(1))


@functools.lru_cache(maxsize=4096)  # a batch repeats its amounts
def _amount(text: str | None) -> str | None:
    """The text if it is an ISO amount (>= 0, at most 5 decimals and 18 digits), else None."""
    if text is None:
        return None
    text = text.strip()
    if not _AMOUNT.fullmatch(text) or len(text.replace(".", "").lstrip("0")) > 18:
        return None
    return text


@functools.lru_cache(maxsize=64)
def _is_currency(code: str | None) -> bool:
    return code is not None and _CURRENCY.fullmatch(code) is not None


def _decimal_number(text: str | None) -> str | None:
    """The text if it is a DecimalNumber (18 digits, at most 17 after the point), else None."""
    match = _DECIMAL.fullmatch(text.strip()) if text is not None else None
    if match is None or not any(match.groups()):
        return None
    whole, fraction = match.group(1), match.group(2) or ""
    if len(whole.lstrip("0") + fraction) > 18 or len(fraction) > 17:
        return None
    return match.group(0)


def _set_text(element: etree._Element, text: str) -> None:
    try:
        element.text = text
    except ValueError:  # a character XML cannot hold (a control character): replaced
        element.text = _NOT_XML.sub("\ufffd", text)


def _sum(amounts: Iterable[str | None]) -> str | None:
    """The sum as a DecimalNumber (18 digits), or None if an amount is missing or unreadable."""
    total = Decimal(0)
    for text in amounts:
        amount = _amount(text)
        if amount is None:
            return None
        total += Decimal(amount)
    return _decimal_number(format(total, "f"))


def _id(text: str) -> str:
    """Max35Text: at most 35 characters (and at least one)."""
    return text[:MAX_ID] or "NOTPROVIDED"
