"""ISO 20022 pain.001 (customer credit transfer initiation), versions .03 and .09, in.

The file is parsed with lxml without entities, network or DTDs (any DOCTYPE is refused), its
version is read from the root namespace, it is validated against the shipped official XSD, and
only then mapped onto ``ParsedFile``. Every refusal is a ``BatchFileError`` with code FF01.

Mapping goes field by field rather than transaction by transaction (see ``columns``), which
keeps 100,000 transactions to about a second. Values are text as written (decimal values without
the surrounding spaces the XSD allows): checking them is the batch rules' job.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from lxml import etree

from application.batch_files import schemas
from application.batch_files.columns import Field, elements, texts
from application.batch_files.model import (
    BatchFileError,
    FieldError,
    ParsedFile,
    PaymentBlock,
    RawItem,
    location_error,
)

SUPPORTED_VERSIONS = ("pain.001.001.03", "pain.001.001.09")
MAX_SCHEMA_ERRORS = 20
_NAMESPACES = {schemas.namespace(v): v for v in SUPPORTED_VERSIONS}
_MESSAGE_NAME = re.compile(r"pain\.\d{3}\.\d{3}\.\d{2}(?:\.[a-z]{2}\.\d{2})?")
_XS_DATE = re.compile(r"\s*(\d{4})-(\d\d)-(\d\d)(?:Z|[+-]\d\d:\d\d)?\s*")


# Below a CdtTrfTxInf. The BIC element is BIC in .03 and BICFI in .09.
END_TO_END_ID = Field(("PmtId", "EndToEndId"), sole=True)
INSTRUCTION_ID = Field(("PmtId", "InstrId"), sole=True)
INSTRUCTED_AMOUNT = Field(("Amt", "InstdAmt"), sole=True)
EQUIVALENT_AMOUNT = Field(("Amt", "EqvtAmt", "Amt"), check_top=True)
CREDITOR_NAME = Field(("Cdtr", "Nm"), check_top=True)
CREDITOR_IBAN = Field(("CdtrAcct", "Id", "IBAN"), check_top=True)
CREDITOR_BIC = {
    "pain.001.001.03": Field(("CdtrAgt", "FinInstnId", "BIC"), check_top=True),
    "pain.001.001.09": Field(("CdtrAgt", "FinInstnId", "BICFI"), check_top=True),
}
UNSTRUCTURED = Field(("RmtInf", "Ustrd"), multiple=True)
CREDITOR_REFERENCE = Field(("RmtInf", "Strd", "CdtrRefInf", "Ref"), multiple=True)
TRANSACTION_FIELDS = (
    END_TO_END_ID,
    INSTRUCTION_ID,
    INSTRUCTED_AMOUNT,
    EQUIVALENT_AMOUNT,
    CREDITOR_NAME,
    CREDITOR_IBAN,
    *CREDITOR_BIC.values(),
    UNSTRUCTURED,
    CREDITOR_REFERENCE,
)

# Below a PmtInf (followed child by child: no flags needed). ReqdExctnDt is an ISODate in .03
# and a Dt/DtTm choice in .09.
BLOCK_ID = Field(("PmtInfId",))
BLOCK_COUNT = Field(("NbOfTxs",))
BLOCK_SUM = Field(("CtrlSum",))
EXECUTION_DATE = {
    "pain.001.001.03": (Field(("ReqdExctnDt",)),),
    "pain.001.001.09": (Field(("ReqdExctnDt", "Dt")), Field(("ReqdExctnDt", "DtTm"))),
}
DEBTOR_NAME = Field(("Dbtr", "Nm"))
DEBTOR_IBAN = Field(("DbtrAcct", "Id", "IBAN"))
CATEGORY_PURPOSE = Field(("PmtTpInf", "CtgyPurp", "Cd"))
BLOCK_FIELDS = (
    BLOCK_ID,
    BLOCK_COUNT,
    BLOCK_SUM,
    DEBTOR_NAME,
    DEBTOR_IBAN,
    CATEGORY_PURPOSE,
)


def parse_pain001(data: bytes) -> ParsedFile:
    """Parse and XSD-validate a pain.001.001.03/.09 file; raise ``BatchFileError`` (FF01)."""
    root = parse_xml(data)
    version = message_version(root)
    errors = schemas.schema_errors(root, version, limit=MAX_SCHEMA_ERRORS)
    if errors:
        raise BatchFileError([FieldError(f"line {e.line}", e.message, "FF01") for e in errors])
    return _Mapper(root, version).parsed_file()


def parse_xml(data: bytes) -> etree._Element:
    """Well-formed XML without any DOCTYPE, entity or network access, or FF01."""
    if not data.strip():
        raise location_error("file", "the file is empty")
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        remove_comments=True,  # a comment inside a value would otherwise cut its .text short
        remove_pis=True,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise location_error(f"line {e.lineno}", f"not well-formed XML: {e.msg}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise location_error(
            "DOCTYPE", "a DTD (DOCTYPE, entities) is not allowed in a payment file"
        )
    return root


def message_version(root: etree._Element) -> str:
    """``pain.001.001.03`` or ``.09`` from the root's namespace; anything else is FF01."""
    qname = etree.QName(root)
    version = _NAMESPACES.get(qname.namespace or "")
    if version is None:
        found = _MESSAGE_NAME.search(qname.namespace or "")
        named = f" ({found.group(0)})" if found else ""
        raise location_error(
            "Document",
            f"unsupported message namespace {qname.namespace!r}{named}; "
            f"this reads {' and '.join(_NAMESPACES)}",
        )
    if qname.localname != "Document":
        raise location_error("Document", f"the root element is {qname.localname}, not Document")
    return version


class _Mapper:
    """Maps one XSD-valid document onto ``ParsedFile``."""

    def __init__(self, root: etree._Element, version: str) -> None:
        self.version = version
        self.ns = schemas.namespace(version)
        self.initiation = root[0]
        self.blocks = list(self.initiation.iterchildren(self._tag("PmtInf")))
        self._block_owners: dict[etree._Element | None, int] = {
            block: i for i, block in enumerate(self.blocks)
        }
        self.transactions = list(self.initiation.iter(self._tag("CdtTrfTxInf")))

    def _tag(self, local: str) -> str:
        return f"{{{self.ns}}}{local}"

    def _text(self, element: etree._Element, path: str) -> str | None:
        found = element.find("/".join(self._tag(step) for step in path.split("/")))
        return None if found is None else found.text

    def parsed_file(self) -> ParsedFile:
        header = self.initiation[0]
        block_col = {f: self._block_texts(f) for f in BLOCK_FIELDS}
        block_dates = self._execution_dates()
        items, block_ids = self._items(block_col, block_dates)
        blocks = self._blocks(block_col, block_dates, block_ids)
        currencies = {item.currency for item in items}
        dates = [b.execution_date for b in blocks if b.execution_date is not None]
        return ParsedFile(
            format=self.version,
            items=items,
            message_id=self._text(header, "MsgId"),
            created_at=_datetime(self._text(header, "CreDtTm"), "GrpHdr/CreDtTm"),
            declared_count=_count(self._text(header, "NbOfTxs")),
            declared_control_sum=_decimal(self._text(header, "CtrlSum")),
            initiating_party=self._text(header, "InitgPty/Nm"),
            debtor_iban=blocks[0].debtor_iban if blocks else None,
            debtor_name=blocks[0].debtor_name if blocks else None,
            execution_date=min(dates, default=None),
            currency=currencies.pop() if len(currencies) == 1 else None,
            payment_blocks=blocks,
        )

    def _block_texts(self, field: Field) -> list[str | None]:
        """For each block, the text at ``field.path`` below it: the path's first element is
        found under the blocks (lxml's C iterator), kept if its parent is a block, and followed
        child by child."""
        top, *steps = (self._tag(step) for step in field.path)
        values: list[str | None] = [None] * len(self.blocks)
        for element in self.initiation.iter(top):
            index = self._block_owners.get(element.getparent())
            for tag in steps:
                if element is None:
                    break
                element = next(element.iterchildren(tag), None)
            if index is not None and element is not None:
                values[index] = element.text
        return values

    def _blocks(
        self, col: dict[Field, list[str | None]], dates: list[date | None], block_ids: list[int]
    ) -> list[PaymentBlock]:
        sizes = [0] * len(self.blocks)
        for b in block_ids:
            sizes[b] += 1
        rows = zip(
            col[BLOCK_ID],
            col[BLOCK_COUNT],
            col[BLOCK_SUM],
            dates,
            col[DEBTOR_IBAN],
            col[DEBTOR_NAME],
            col[CATEGORY_PURPOSE],
            sizes,
            strict=True,
        )
        return [
            PaymentBlock(
                id=block_id or "",
                declared_count=_count(count),
                declared_control_sum=_decimal(control_sum),
                execution_date=execution_date,
                debtor_iban=iban,
                debtor_name=name,
                category_purpose=purpose,
                item_count=size,
            )
            for block_id, count, control_sum, execution_date, iban, name, purpose, size in rows
        ]

    def _execution_dates(self) -> list[date | None]:
        """Each block's ReqdExctnDt (.09: its Dt, or the date of its DtTm)."""
        parsed: dict[tuple[str, bool], date] = {}  # blocks mostly share a few dates
        dates: list[date | None] = []
        date_field, *datetime_field = EXECUTION_DATE[self.version]
        date_texts = self._block_texts(date_field)
        datetime_texts = (
            self._block_texts(datetime_field[0])
            if datetime_field and None in date_texts
            else [None] * len(date_texts)
        )
        for i, (text, datetime_text) in enumerate(zip(date_texts, datetime_texts, strict=True)):
            is_datetime = text is None and datetime_text is not None
            if is_datetime:
                text = datetime_text
            if text is None:
                dates.append(None)
                continue
            value = parsed.get((text, is_datetime))
            if value is None:
                where = f"PmtInf[{i + 1}]/ReqdExctnDt"
                value = _datetime_of(text, where).date() if is_datetime else _date(text, where)
                parsed[text, is_datetime] = value
            dates.append(value)
        return dates

    def _items(
        self, block_col: dict[Field, list[str | None]], block_dates: list[date | None]
    ) -> tuple[list[RawItem], list[int]]:
        """The items, and for each the index of its block."""
        owners = {tx: i for i, tx in enumerate(self.transactions)}
        block_ids = [self._block_owners[tx.getparent()] for tx in self.transactions]
        locations = [
            f"PmtInf[{b + 1}]/CdtTrfTxInf[{n}]"
            for b, n in zip(block_ids, _positions(block_ids), strict=True)
        ]

        def column(field: Field) -> list[str | None]:
            return texts(self.initiation, owners, field, self.ns)

        amounts = self._amount_elements(owners)
        remittances = [
            u if u is not None else r
            for u, r in zip(column(UNSTRUCTURED), column(CREDITOR_REFERENCE), strict=True)
        ]
        rows = zip(
            locations,
            column(END_TO_END_ID),
            amounts,
            column(CREDITOR_IBAN),
            column(CREDITOR_BIC[self.version]),
            column(CREDITOR_NAME),
            column(INSTRUCTION_ID),
            remittances,
            block_ids,
            strict=True,
        )
        block_names = block_col[BLOCK_ID]
        items = [
            RawItem(
                location=location,
                end_to_end_id=e2e,
                amount=None if amount is None else _decimal(amount.text),
                currency=None if amount is None else amount.get("Ccy"),
                iban=iban,
                bic=bic,
                name=name,
                instruction_id=instr,
                value_date=block_dates[block],
                remittance=remittance,
                payment_block_id=block_names[block],
            )
            for location, e2e, amount, iban, bic, name, instr, remittance, block in rows
        ]
        return items, block_ids

    def _amount_elements(self, owners: dict[etree._Element, int]) -> list[etree._Element | None]:
        instructed = elements(self.initiation, owners, INSTRUCTED_AMOUNT, self.ns)
        if all(a is not None for a in instructed):
            return instructed
        equivalent = elements(self.initiation, owners, EQUIVALENT_AMOUNT, self.ns)
        return [a if a is not None else e for a, e in zip(instructed, equivalent, strict=True)]


def _positions(block_ids: list[int]) -> list[int]:
    """1-based position of each transaction within its block."""
    positions: list[int] = []
    previous, n = -1, 0
    for b in block_ids:
        n = n + 1 if b == previous else 1
        previous = b
        positions.append(n)
    return positions


def _decimal(text: str | None) -> str | None:
    return None if text is None else text.strip()


def _count(text: str | None) -> int | None:
    return None if text is None else int(text)


def _date(text: str, where: str) -> date:
    match = _XS_DATE.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        year, month, day = (int(g) for g in match.groups())
        return date(year, month, day)
    except ValueError:
        raise location_error(where, f"unreadable date {text.strip()!r}") from None


def _datetime(text: str | None, where: str) -> datetime | None:
    return None if text is None else _datetime_of(text, where)


def _datetime_of(text: str, where: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise location_error(where, f"unreadable date and time {text.strip()!r}") from None
