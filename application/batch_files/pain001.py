"""ISO 20022 pain.001 (customer credit transfer initiation), versions .03 and .09, in.

The file is parsed with lxml without entities, network or DTDs (any DOCTYPE is refused), its
version is read from the root namespace, and it is validated against the shipped official XSD
while it is parsed; nothing mapped is used unless the whole file passed. Every refusal is a
``BatchFileError`` with code FF01.

Each transaction is mapped as its element ends, following each field's path child by child,
and is then dropped from the tree: a 100,000-transaction file needs memory for its items, not
for a document tree of about eight times its size. Values are text as written (decimal values
without the surrounding spaces the XSD allows): checking them is the batch rules' job.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from lxml import etree

from application.batch_files import schemas
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


@dataclass(frozen=True, slots=True)
class Field:
    """A value at ``path`` (local names, followed child by child) below its owner."""

    path: tuple[str, ...]
    multiple: bool = False  # may repeat within one owner; the texts are joined by a space


# Below a CdtTrfTxInf. The BIC element is BIC in .03 and BICFI in .09.
END_TO_END_ID = Field(("PmtId", "EndToEndId"))
INSTRUCTION_ID = Field(("PmtId", "InstrId"))
INSTRUCTED_AMOUNT = Field(("Amt", "InstdAmt"))
EQUIVALENT_AMOUNT = Field(("Amt", "EqvtAmt", "Amt"))
CREDITOR_NAME = Field(("Cdtr", "Nm"))
CREDITOR_IBAN = Field(("CdtrAcct", "Id", "IBAN"))
CREDITOR_BIC = {
    "pain.001.001.03": Field(("CdtrAgt", "FinInstnId", "BIC")),
    "pain.001.001.09": Field(("CdtrAgt", "FinInstnId", "BICFI")),
}
UNSTRUCTURED = Field(("RmtInf", "Ustrd"), multiple=True)
CREDITOR_REFERENCE = Field(("RmtInf", "Strd", "CdtrRefInf", "Ref"), multiple=True)
# In the order ``_Mapper.transaction`` unpacks them.
TRANSACTION_FIELDS = {
    version: (
        END_TO_END_ID,
        INSTRUCTION_ID,
        INSTRUCTED_AMOUNT,
        EQUIVALENT_AMOUNT,
        CREDITOR_NAME,
        CREDITOR_IBAN,
        bic,
        UNSTRUCTURED,
        CREDITOR_REFERENCE,
    )
    for version, bic in CREDITOR_BIC.items()
}

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
    """Parse and XSD-validate a pain.001.001.03/.09 file; raise ``BatchFileError`` (FF01).

    A valid file is read in one streaming pass (``_stream``): validated as it is parsed, each
    transaction mapped and then dropped from the tree, so memory holds the items and not a
    document tree about eight times the file's size. Anything else is parsed whole
    (``_refuse``) for the same errors, in the same order, as always: not well-formed, DOCTYPE,
    namespace, then up to ``MAX_SCHEMA_ERRORS`` schema errors with their lines.
    """
    version = _sniff_version(data)
    if version is not None:
        try:
            return _stream(data, version)
        except etree.XMLSyntaxError as e:  # not well-formed or not schema-valid
            _refuse(data)
            raise location_error("file", f"not a readable pain.001: {e.msg}") from None
    _refuse(data)
    raise location_error("file", "not a readable pain.001")  # _refuse found a fault: unreachable


def _refuse(data: bytes) -> None:
    """Raise the file's first faults as ``BatchFileError``; return if it has none."""
    root = parse_xml(data)
    version = message_version(root)
    errors = schemas.schema_errors(root, version, limit=MAX_SCHEMA_ERRORS)
    if errors:
        raise BatchFileError([FieldError(f"line {e.line}", e.message, "FF01") for e in errors])


_PARSER_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "remove_comments": True,  # a comment inside a value would otherwise cut its .text short
    "remove_pis": True,
}


def parse_xml(data: bytes) -> etree._Element:
    """Well-formed XML without any DOCTYPE, entity or network access, or FF01."""
    if not data.strip():
        raise location_error("file", "the file is empty")
    try:
        root = etree.fromstring(data, etree.XMLParser(**_PARSER_OPTIONS))
    except etree.XMLSyntaxError as e:
        raise location_error(f"line {e.lineno}", f"not well-formed XML: {e.msg}") from None
    _refuse_doctype(root)
    return root


def _refuse_doctype(root: etree._Element) -> None:
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise location_error(
            "DOCTYPE", "a DTD (DOCTYPE, entities) is not allowed in a payment file"
        )


def _sniff_version(data: bytes) -> str | None:
    """The version named by the root element's namespace, read from the file's first bytes;
    None when that cannot be read or is not one we take (``_refuse`` says why)."""
    try:
        for _, root in etree.iterparse(io.BytesIO(data), events=("start",), **_PARSER_OPTIONS):
            return message_version(root)
    except (etree.XMLSyntaxError, BatchFileError):
        return None
    return None


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


def _stream(data: bytes, version: str) -> ParsedFile:
    """One pass over the file, validated against the XSD as lxml parses it (any fault raises
    ``XMLSyntaxError``, and nothing mapped so far is used). Each transaction is mapped when its
    element ends and then cleared and unlinked, as is each block, so the tree never holds more
    than the element being read."""
    ns = schemas.namespace(version)
    tx_tag, block_tag, header_tag = (f"{{{ns}}}{t}" for t in ("CdtTrfTxInf", "PmtInf", "GrpHdr"))
    mapper = _Mapper(version)
    events = etree.iterparse(
        io.BytesIO(data),
        events=("end",),
        tag=(tx_tag, block_tag, header_tag),
        schema=schemas.schema(version),
        **_PARSER_OPTIONS,
    )
    for _, element in events:
        tag = element.tag
        if tag == tx_tag:
            mapper.transaction(element)
        elif tag == block_tag:
            mapper.block_ended(element)
        else:
            mapper.header(element)
        element.clear()
        while element.getprevious() is not None:  # what came before is read: let it go
            del element.getparent()[0]
    _refuse_doctype(events.root)
    return mapper.parsed_file()


def _paths(ns: str, fields: tuple[Field, ...]) -> dict[str, Any]:
    """The fields' paths as a tree of qualified tags; a leaf holds its field's index."""
    tree: dict[str, Any] = {}
    for index, field in enumerate(fields):
        node = tree
        *steps, leaf = (f"{{{ns}}}{step}" for step in field.path)
        for step in steps:
            node = node.setdefault(step, {})
        node[leaf] = index
    return tree


def _collect(
    element: etree._Element, paths: dict[str, Any], found: list[Any], until: str = ""
) -> None:
    """The elements at ``paths`` below ``element``, child by child: ``found[i]`` is field i's
    element, or a list of them when it repeats. Children off the paths are skipped whole; the
    walk stops at the first child tagged ``until``."""
    for child in element:
        tag = child.tag
        if tag == until:
            break
        step = paths.get(tag)
        if step is None:
            continue
        if step.__class__ is int:
            previous = found[step]
            if previous is None:
                found[step] = child
            elif previous.__class__ is list:
                previous.append(child)
            else:
                found[step] = [previous, child]
        else:
            _collect(child, step, found)


def _text_of(found: Any) -> str | None:
    """A field's text ("" for an empty element); repeats joined by a space."""
    if found is None:
        return None
    if found.__class__ is list:
        return " ".join(e.text or "" for e in found)
    return found.text or ""


class _Mapper:
    """Maps one pain.001's elements onto ``ParsedFile`` as the stream delivers them: the group
    header, each transaction (its block's fields are read from the block's first children,
    which precede every transaction in the XSD's sequence), and each block's end."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.ns = ns = schemas.namespace(version)
        self.tx_fields = TRANSACTION_FIELDS[version]
        self.tx_paths = _paths(ns, self.tx_fields)
        self.block_fields = (*BLOCK_FIELDS, *EXECUTION_DATE[version])
        self.block_paths = _paths(ns, self.block_fields)
        self.tx_tag = f"{{{ns}}}CdtTrfTxInf"
        self.header_values: dict[str, str | None] = {}
        self.items: list[RawItem] = []
        self.blocks: list[PaymentBlock] = []
        self._block: etree._Element | None = None  # the block whose transactions are read
        self._block_values: tuple[str | None, date | None] = (None, None)  # its id, its date
        self._position = 0
        self._dates: dict[tuple[str, bool], date] = {}  # blocks mostly share a few dates

    def header(self, element: etree._Element) -> None:
        def text(path: str) -> str | None:
            found = element.find("/".join(f"{{{self.ns}}}{step}" for step in path.split("/")))
            return None if found is None else found.text

        for path in ("MsgId", "CreDtTm", "NbOfTxs", "CtrlSum", "InitgPty/Nm"):
            self.header_values[path] = text(path)

    def transaction(self, tx: etree._Element) -> None:
        block = tx.getparent()
        if block is not self._block:
            self._start_block(block)
        self._position += 1
        found: list[Any] = [None] * len(self.tx_fields)
        _collect(tx, self.tx_paths, found)
        e2e, instr, instructed, equivalent, name, iban, bic, unstructured, reference = found
        amount = instructed if instructed is not None else equivalent
        remittance = _text_of(unstructured)
        block_id, value_date = self._block_values
        self.items.append(
            RawItem(
                location=f"PmtInf[{len(self.blocks)}]/CdtTrfTxInf[{self._position}]",
                end_to_end_id=_text_of(e2e),
                amount=None if amount is None else _decimal(amount.text),
                currency=None if amount is None else amount.get("Ccy"),
                iban=_text_of(iban),
                bic=_text_of(bic),
                name=_text_of(name),
                instruction_id=_text_of(instr),
                value_date=value_date,
                remittance=remittance if remittance is not None else _text_of(reference),
                payment_block_id=block_id,
            )
        )

    def block_ended(self, block: etree._Element) -> None:
        if block is not self._block:  # no transaction (the XSD requires one): still a block
            self._start_block(block)
        self.blocks[-1] = replace(self.blocks[-1], item_count=self._position)
        self._block = None

    def _start_block(self, block: etree._Element | None) -> None:
        """Read a block's own fields: its children before its first transaction."""
        assert block is not None
        self._block, self._position = block, 0
        found: list[Any] = [None] * len(self.block_fields)
        _collect(block, self.block_paths, found, until=self.tx_tag)  # complete, being first
        block_id, count, control_sum, debtor_name, debtor_iban, purpose, *date_found = (
            None if f is None else f.text
            for f in found  # single-valued, by the XSD
        )
        execution_date = self._execution_date(date_found, len(self.blocks) + 1)
        self.blocks.append(
            PaymentBlock(
                id=block_id or "",
                declared_count=_count(count),
                declared_control_sum=_decimal(control_sum),
                execution_date=execution_date,
                debtor_iban=debtor_iban,
                debtor_name=debtor_name,
                category_purpose=purpose,
                item_count=0,
            )
        )
        self._block_values = (block_id, execution_date)

    def _execution_date(self, texts: list[str | None], number: int) -> date | None:
        """The block's ReqdExctnDt (.09: its Dt, or the date of its DtTm)."""
        text, datetime_text = [*texts, None][:2]
        is_datetime = text is None and datetime_text is not None
        if is_datetime:
            text = datetime_text
        if text is None:
            return None
        value = self._dates.get((text, is_datetime))
        if value is None:
            where = f"PmtInf[{number}]/ReqdExctnDt"
            value = _datetime_of(text, where).date() if is_datetime else _date(text, where)
            self._dates[text, is_datetime] = value
        return value

    def parsed_file(self) -> ParsedFile:
        header = self.header_values
        items, blocks = self.items, self.blocks
        currencies = {item.currency for item in items}
        dates = [b.execution_date for b in blocks if b.execution_date is not None]
        return ParsedFile(
            format=self.version,
            items=items,
            message_id=header.get("MsgId"),
            created_at=_datetime(header.get("CreDtTm"), "GrpHdr/CreDtTm"),
            declared_count=_count(header.get("NbOfTxs")),
            declared_control_sum=_decimal(header.get("CtrlSum")),
            initiating_party=header.get("InitgPty/Nm"),
            debtor_iban=blocks[0].debtor_iban if blocks else None,
            debtor_name=blocks[0].debtor_name if blocks else None,
            execution_date=min(dates, default=None),
            currency=currencies.pop() if len(currencies) == 1 else None,
            payment_blocks=blocks,
        )


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
