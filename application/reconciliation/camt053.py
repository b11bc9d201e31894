"""ISO 20022 camt.053 (BankToCustomerStatement): a streaming reader and a streaming writer.

Reading (``read_camt053``) goes through ``lxml.etree.iterparse`` and clears each entry once
mapped, so memory stays flat however many entries a file has. The parser takes no entities, no
network and no DTD (any DOCTYPE is refused), like the pain.001 reader. Element names are matched
in the document's own namespace, so .001.02, .001.08 and the other versions of the same shape
read alike. Each ``Ntry`` becomes one ``StatementLine``:

- amount ``Amt`` (in ``Amt/@Ccy``'s minor units), ``booked_on`` from ``BookgDt`` (``Dt`` or the
  date of ``DtTm``; ``ValDt`` when there is no booking date);
- ``Sts`` ``BOOK`` (.02: text, .08: ``Sts/Cd``) gives a line; any other status (``PDNG``,
  ``INFO``, ``FUTR``) and zero amounts are skipped and counted in ``Statement.skipped``;
- ``RvslInd`` true: status ``reversed``, and the direction is the original operation's, the
  opposite of the entry's ``CdtDbtInd`` (ISO's usage rule: a reversal of a credit is booked as a
  debit with ``RvslInd``); else ``settled``, direction ``CRDT`` credit, ``DBIT`` debit;
- ``payment_ids``: the ``EndToEndId`` of every ``TxDtls`` that is a UUID (with or without
  hyphens: ``EndToEndId`` holds 35 characters, so we write our ids as 32 hex digits), in
  canonical form; ``NOTPROVIDED`` and other ids are left out, never an error;
- ``reference``: with one ``TxDtls``, its ``Refs/AcctSvcrRef``, else the entry's ``AcctSvcrRef``,
  else its ``Refs/TxId``, else its ``EndToEndId`` if that is not a UUID; with several (a batched
  entry, 1:N), the entry's ``AcctSvcrRef``;
- ``entry_ref``: ``NtryRef``, else the entry's ``AcctSvcrRef`` unless that is the reference.

Balances: ``OPBD`` (else ``PRCD``) opening and ``CLBD`` closing, signed by their ``CdtDbtInd``.
XSD validation (``validate=True``) needs the whole tree: it is refused above
``MAX_VALIDATED_BYTES``.

Writing (``write_camt053``) produces camt.053.001.02 through ``lxml.etree.xmlfile``, entry by
entry; the balances and totals come before the entries in the document, so lines that are not
a list are first spooled to a temporary file.
"""

from __future__ import annotations

import datetime
import functools
import io
import pickle
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from lxml import etree

from application.reconciliation.statements import (
    Statement,
    StatementFormatError,
    StatementLine,
    StatementPart,
    check_line,
)
from application.xsd import SchemaIntegrityError as SchemaIntegrityError  # raised by schema_bytes
from application.xsd import compiled, shipped_bytes
from domain.errors import UnknownCurrency
from domain.money import MAX_AMOUNT_MINOR, currency_exponent, format_amount

NAMESPACE_PREFIX = "urn:iso:std:iso:20022:tech:xsd:"
SCHEMA_SHA256: dict[str, str] = {
    "camt.053.001.02": "05ec472590dda5e433fd646e9cf3849fa1ba01c033052aaca3089cec6862692d",
    "camt.053.001.08": "ca0b135cc8e2dde5b2f99af6b6c514a8f29d6e7c6cf98e9ea84d247189868ff5",
}
SUPPORTED_VERSIONS = tuple(SCHEMA_SHA256)
WRITTEN_VERSION = "camt.053.001.02"
#: Largest file ``validate=True`` accepts: validation holds the whole tree in memory.
MAX_VALIDATED_BYTES = 64 * 2**20
#: Most ``Stmt`` blocks one file may hold (each leaves a small summary in memory).
MAX_STATEMENTS = 10_000
MAX_SCHEMA_ERRORS = 5
MAX35 = 35
_SPOOL_CHUNK = 10_000
_NOT_PROVIDED = "NOTPROVIDED"
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HYPHENATED = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_XS_DECIMAL = re.compile(r"\s*\+?([0-9]*)(?:\.([0-9]*))?\s*")
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[a-zA-Z0-9]{1,30}")
_OPENING = ("OPBD", "PRCD")
_CLOSING = "CLBD"


def namespace(version: str) -> str:
    return NAMESPACE_PREFIX + version


@functools.cache
def schema_bytes(version: str) -> bytes:
    """The XSD's bytes, after checking them against ``SCHEMA_SHA256``."""
    expected = SCHEMA_SHA256.get(version)
    if expected is None:
        raise KeyError(f"no schema shipped for {version!r}; shipped: {', '.join(SCHEMA_SHA256)}")
    return shipped_bytes("application.reconciliation", version, expected)


def schema(version: str) -> etree.XMLSchema:
    """The compiled schema, one per thread (an ``XMLSchema`` keeps its error log on itself)."""
    return compiled(version, schema_bytes)


def schema_errors(tree: etree._Element | etree._ElementTree, version: str) -> list[str]:
    """Validation errors (``line N: message``) of ``tree`` against ``version``; none: valid."""
    compiled = schema(version)
    if compiled.validate(tree):
        return []
    own = f"{{{namespace(version)}}}"
    return [f"line {e.line}: {e.message.replace(own, '')}" for e in compiled.error_log]


# --- reading -----------------------------------------------------------------------------------


def read_camt053(stream: BinaryIO, *, validate: bool = False) -> Statement:
    """Start reading a camt.053 statement; iterate the result for its lines."""
    source: IO[bytes] = _validated(stream) if validate else stream
    return Statement("camt053", lambda statement: _Reader(statement).lines(source))


def _validated(stream: BinaryIO) -> IO[bytes]:
    data = stream.read(MAX_VALIDATED_BYTES + 1)
    if len(data) > MAX_VALIDATED_BYTES:
        raise StatementFormatError(
            "file",
            "size",
            f"XSD validation reads the whole file: at most {MAX_VALIDATED_BYTES} bytes",
        )
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise StatementFormatError(f"line {e.lineno}", "xml", f"not well-formed: {e.msg}") from None
    _refuse_doctype(root)
    found = etree.QName(root).namespace or ""
    version = found.removeprefix(NAMESPACE_PREFIX)
    if version not in SCHEMA_SHA256:
        raise StatementFormatError(
            "Document",
            "namespace",
            f"no schema shipped for {found!r}; shipped: {SUPPORTED_VERSIONS}",
        )
    errors = schema_errors(root, version)
    if errors:
        raise StatementFormatError("schema", version, "; ".join(errors[:MAX_SCHEMA_ERRORS]))
    return io.BytesIO(data)


def _refuse_doctype(element: etree._Element) -> None:
    docinfo = element.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise StatementFormatError(
            "DOCTYPE", "xml", "a DTD (DOCTYPE, entities) is not allowed in a statement"
        )


_TAGS = ("Document", "BkToCstmrStmt", "Stmt", "Acct", "Bal", "Ntry")
_MESSAGE_NAME = re.compile(r"[a-z]{4}\.\d{3}\.\d{3}\.\d{2}")
_STATEMENT_MESSAGES = ("camt.053",)


@dataclass(slots=True)
class _Part:
    """What we learn about one ``Stmt`` while reading it."""

    id: str | None = None
    account: str | None = None
    currency: str | None = None
    opening: int | None = None
    closing: int | None = None
    lines: int = 0


class _Tags:
    """The Clark names (``{namespace}Local``) of the elements read, in one document's namespace:
    made once, so that the per-entry code compares whole tags."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.Sts, self.Amt, self.CdtDbtInd, self.RvslInd = self.tags("Sts Amt CdtDbtInd RvslInd")
        self.AcctSvcrRef, self.NtryRef, self.NtryDtls = self.tags("AcctSvcrRef NtryRef NtryDtls")
        self.TxDtls, self.Refs, self.EndToEndId, self.TxId = self.tags(
            "TxDtls Refs EndToEndId TxId"
        )
        self.Dt, self.Stmt = self.tags("Dt Stmt")

    def tags(self, names: str) -> list[str]:
        return [self.tag(name) for name in names.split()]

    def tag(self, local: str) -> str:
        return self.ns + local


class _Reader:
    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self.root: etree._Element | None = None
        self.ns = ""
        self.tags = _Tags("")
        self.body_seen = False
        self._exponents: dict[str, int] = {}
        self.entry_no = 0
        self.stmt_no = 0
        self.part = _Part()
        self._dates: dict[str, datetime.date] = {}

    def lines(self, source: IO[bytes]) -> Iterator[StatementLine]:
        events = etree.iterparse(
            source,
            events=("start", "end"),
            tag=[f"{{*}}{t}" for t in _TAGS],
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            remove_comments=True,
            remove_pis=True,
        )
        try:
            for event, element in events:
                if self.root is None:
                    self.check_root(element.getroottree().getroot())
                line = self.handle(event, element)
                if line is not None:
                    yield line
            if self.root is None:
                self.check_root(events.root)
        except etree.XMLSyntaxError as e:
            raise StatementFormatError(
                f"line {e.lineno}", "xml", f"not well-formed XML: {e.msg}"
            ) from None
        self.finish()

    def handle(self, event: str, element: etree._Element) -> StatementLine | None:
        tag = element.tag
        if not tag.startswith(self.ns):  # another namespace: not ours
            return None
        local = tag[len(self.ns) :]
        parent = element.getparent()
        in_statement = parent is not None and parent.tag == self.tags.Stmt
        if event == "start":
            if local == "BkToCstmrStmt" and parent is self.root:
                self.body_seen = True
            elif local == "Stmt" and self.body_seen:
                self.start_statement()
        elif local == "Ntry" and in_statement:
            self.entry_no += 1
            try:
                return self.entry(element)
            finally:
                _forget(element)
        elif local == "Bal" and in_statement:
            self.balance(element)
        elif local == "Acct" and in_statement:
            self.account(element)
        elif local == "Stmt" and self.body_seen:
            self.end_statement()
            _forget(element)
        return None

    def check_root(self, root: etree._Element | None) -> None:
        """The root as soon as it is known (its children are not read yet): a ``Document``
        without DTD, in a namespace that is not another ISO 20022 message's."""
        if root is None:
            raise StatementFormatError("file", "xml", "no XML document")
        _refuse_doctype(root)
        qname = etree.QName(root)
        namespace = qname.namespace or ""
        message = _MESSAGE_NAME.search(namespace)
        if qname.localname != "Document" or (
            message is not None and not message.group(0).startswith(_STATEMENT_MESSAGES)
        ):
            raise StatementFormatError(
                "Document",
                "xml",
                f"not a camt.053 statement (root {qname.localname}, namespace {namespace!r})",
            )
        self.root = root
        self.ns = f"{{{namespace}}}" if namespace else ""
        self.tags = _Tags(self.ns)

    # -- statements and balances

    def start_statement(self) -> None:
        self.stmt_no += 1
        if self.stmt_no > MAX_STATEMENTS:
            raise StatementFormatError(
                f"Stmt[{self.stmt_no}]", "Stmt", f"more than {MAX_STATEMENTS} statements"
            )
        self.part = _Part()

    def account(self, element: etree._Element) -> None:
        self.part.id = _text(element.getparent(), self.ns + "Id")  # type: ignore[arg-type]
        account_id = element.find(self.ns + "Id")
        if account_id is not None:
            self.part.account = _text(account_id, self.ns + "IBAN") or _text(
                account_id, f"{self.ns}Othr/{self.ns}Id"
            )
        self.part.currency = _text(element, self.ns + "Ccy")

    def balance(self, element: etree._Element) -> None:
        where = f"Stmt[{self.stmt_no}]/Bal"
        code = _text(element, f"{self.ns}Tp/{self.ns}CdOrPrtry/{self.ns}Cd")
        if code not in (*_OPENING, _CLOSING):
            return
        amount_element = element.find(self.ns + "Amt")
        if amount_element is None:
            raise StatementFormatError(where, "Amt", f"the {code} balance has no amount")
        currency = amount_element.get("Ccy") or ""
        amount = self.amount(amount_element.text, currency, lambda: where)
        sign = self.sign(_text(element, self.ns + "CdtDbtInd"), lambda: where)
        if self.part.currency is None:
            self.part.currency = currency
        elif currency != self.part.currency:
            self.statement.warn(
                f"{where}: the {code} balance is in {currency}, the statement in "
                f"{self.part.currency}; left out"
            )
            return
        if code == _CLOSING:
            self.part.closing = sign * amount
        elif self.part.opening is None or code == "OPBD":  # OPBD, else PRCD
            self.part.opening = sign * amount

    def end_statement(self) -> None:
        part = self.part
        self.statement.parts.append(
            StatementPart(
                id=part.id,
                account=part.account,
                currency=part.currency,
                opening_balance_minor=part.opening,
                closing_balance_minor=part.closing,
                line_count=part.lines,
            )
        )

    def finish(self) -> None:
        statement = self.statement
        parts = statement.parts
        if not self.body_seen:
            raise StatementFormatError(
                "Document", "BkToCstmrStmt", "not a camt.053 statement (no BkToCstmrStmt)"
            )
        if not parts:
            raise StatementFormatError("BkToCstmrStmt", "Stmt", "the file holds no statement")
        accounts = {(p.account, p.currency) for p in parts}
        if len(accounts) == 1:  # one account: several Stmt are consecutive periods
            statement.account, statement.currency = accounts.pop()
            statement.opening_balance_minor = parts[0].opening_balance_minor
            statement.closing_balance_minor = parts[-1].closing_balance_minor
        statement.complete = True

    # -- entries

    def where(self) -> str:
        return f"Stmt[{self.stmt_no}]/Ntry[{self.entry_no}]"

    def entry(self, ntry: etree._Element) -> StatementLine | None:
        t = self.tags
        fields = {child.tag: child for child in ntry}  # the children we read occur once
        status = self.entry_status(fields.get(t.Sts))
        if status != "BOOK":
            self.statement.skip(status)
            return None
        amount_element = fields.get(t.Amt)
        if amount_element is None:
            raise StatementFormatError(self.where(), "Amt", "missing")
        currency = amount_element.get("Ccy") or ""
        amount = self.amount(amount_element.text, currency, self.where)
        if amount == 0:
            self.statement.skip("zero_amount")
            return None
        booked_credit = self.sign(_element_text(fields.get(t.CdtDbtInd)), self.where) > 0
        reversed_ = (_element_text(fields.get(t.RvslInd)) or "") in ("true", "1")
        credit = booked_credit != reversed_  # a reversal is booked against the original
        booked_on = self.entry_date(fields)
        entry_servicer_ref = _element_text(fields.get(t.AcctSvcrRef))
        payment_ids, reference = self.details(ntry, entry_servicer_ref)
        self.statement.line_count += 1
        self.part.lines += 1
        return StatementLine(
            line_no=self.entry_no,
            reference=reference,
            payment_ids=payment_ids,
            amount_minor=amount,
            currency=currency,
            direction="credit" if credit else "debit",
            status="reversed" if reversed_ else "settled",
            booked_on=booked_on,
            entry_ref=_element_text(fields.get(t.NtryRef))
            or (entry_servicer_ref if entry_servicer_ref != reference else None),
        )

    def details(
        self, ntry: etree._Element, entry_servicer_ref: str | None
    ) -> tuple[tuple[str, ...], str | None]:
        t = self.tags
        payment_ids: list[str] = []
        other_ids: list[str] = []
        tx_servicer_ref = tx_id = None
        transactions = 0
        for details in ntry.iterchildren(t.NtryDtls):
            for tx in details.iterchildren(t.TxDtls):
                transactions += 1
                refs_element = next(tx.iterchildren(t.Refs), None)
                if refs_element is None:
                    continue
                refs = {child.tag: child.text for child in refs_element}
                end_to_end = (refs.get(t.EndToEndId) or "").strip()
                if end_to_end and end_to_end != _NOT_PROVIDED:
                    payment_id = as_payment_id(end_to_end)
                    if payment_id is None:
                        other_ids.append(end_to_end)
                    elif payment_id not in payment_ids:
                        payment_ids.append(payment_id)
                tx_servicer_ref = (refs.get(t.AcctSvcrRef) or "").strip() or None
                tx_id = (refs.get(t.TxId) or "").strip() or None
        if transactions == 1:
            other = other_ids[0] if other_ids else None
            reference = tx_servicer_ref or entry_servicer_ref or tx_id or other
        else:
            reference = entry_servicer_ref
        return tuple(payment_ids), reference

    def entry_status(self, element: etree._Element | None) -> str:
        if element is None:
            raise StatementFormatError(self.where(), "Sts", "missing")
        code = (element.text or "").strip()  # .02: <Sts>BOOK</Sts>
        if not code and len(element):  # .08 and later: <Sts><Cd>BOOK</Cd></Sts> (or Prtry)
            code = (element[0].text or "").strip()
        if not code:
            raise StatementFormatError(self.where(), "Sts", "empty")
        return code

    def entry_date(self, fields: dict[Any, etree._Element]) -> datetime.date:
        for name in ("BookgDt", "ValDt"):
            choice = fields.get(self.tags.tag(name))
            if choice is None or not len(choice):
                continue
            value = choice[0]  # Dt or DtTm
            text = (value.text or "").strip()
            if value.tag == self.tags.Dt:
                return self.date(text, name + "/Dt")
            return _datetime(text, self.where(), name + "/DtTm").date()
        raise StatementFormatError(self.where(), "BookgDt", "no booking (or value) date")

    def date(self, text: str, field: str) -> datetime.date:
        value = self._dates.get(text)
        if value is None:
            value = _date(text, self.where(), field)
            if len(self._dates) < 10_000:
                self._dates[text] = value
        return value

    def amount(
        self,
        text: str | None,
        currency: str,
        where: Callable[[], str],
    ) -> int:
        """Minor units of ``Amt`` (an ``xs:decimal``: a sign, leading zeros, fewer or more
        decimals than the currency's, with trailing zeros, are all valid)."""
        exponent = self._exponents.get(currency)
        if exponent is None:
            try:
                exponent = self._exponents[currency] = currency_exponent(currency)
            except UnknownCurrency:
                raise StatementFormatError(
                    where(), "Amt/@Ccy", f"{currency!r} is not an ISO 4217 code"
                ) from None
        text = text or ""
        whole, _, fraction = text.partition(".")
        if len(fraction) == exponent and whole.isdigit() and fraction.isdigit() and text.isascii():
            amount = int(whole + fraction)  # the usual form
        else:
            amount = _slow_amount(text, currency, exponent, where)
        if amount > MAX_AMOUNT_MINOR:
            raise StatementFormatError(where(), "Amt", f"{text.strip()!r} is too large")
        return amount

    @staticmethod
    def sign(indicator: str | None, where: Callable[[], str]) -> int:
        if indicator == "CRDT":
            return 1
        if indicator == "DBIT":
            return -1
        raise StatementFormatError(where(), "CdtDbtInd", f"{indicator!r} is not CRDT or DBIT")


def _slow_amount(text: str, currency: str, exponent: int, where: Callable[[], str]) -> int:
    match = _XS_DECIMAL.fullmatch(text)
    if match is None or not (match.group(1) or match.group(2)):
        raise StatementFormatError(where(), "Amt", f"{text!r} is not an amount")
    whole, fraction = match.group(1) or "0", (match.group(2) or "").rstrip("0")
    if len(fraction) > exponent:
        raise StatementFormatError(
            where(), "Amt", f"{text.strip()!r} has more decimals than {currency} has ({exponent})"
        )
    return int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")


def as_payment_id(text: str) -> str | None:
    """The canonical UUID (lowercase, hyphenated) written as 32 hex digits or hyphenated."""
    text = text.strip()
    if _HEX32.fullmatch(text) or _HYPHENATED.fullmatch(text):
        return str(uuid.UUID(text))
    return None


def _forget(element: etree._Element) -> None:
    """Free a mapped element and the siblings before it (iterparse keeps the tree growing)."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def _text(element: etree._Element, path: str) -> str | None:
    found = element.find(path)
    return _element_text(found)


def _element_text(element: etree._Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _date(text: str, where: str, field: str) -> datetime.date:
    """An ``xs:date`` (a time zone suffix is allowed and ignored)."""
    value = text.strip()
    try:
        if len(value) < 10 or value[4] != "-" or value[7] != "-":
            raise ValueError(value)
        rest = value[10:]
        if rest and not (rest == "Z" or re.fullmatch(r"[+-]\d\d:\d\d", rest)):
            raise ValueError(value)
        return datetime.date.fromisoformat(value[:10])
    except ValueError:
        raise StatementFormatError(where, field, f"{value!r} is not a date") from None


def _datetime(text: str, where: str, field: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise StatementFormatError(where, field, f"{text.strip()!r} is not a date-time") from None


# --- writing -----------------------------------------------------------------------------------


def write_camt053(
    lines: Iterable[StatementLine],
    *,
    account_iban: str,
    currency: str,
    statement_date: datetime.date,
    opening_balance_minor: int,
    out: BinaryIO,
    message_id: str | None = None,
    created_at: datetime.datetime | None = None,
) -> None:
    """Write ``lines`` as one camt.053.001.02 statement of ``account_iban`` for a day.

    Every line is a booked entry except ``failed`` ones, which a bank statement does not carry.
    A ``reversed`` line is booked against its direction with ``RvslInd``. The closing balance is
    the opening plus the booked credits minus the booked debits. Payment ids are written as 32
    hex digits (``EndToEndId`` holds 35 characters); references must fit in 35 characters.
    ``created_at`` defaults to the end of ``statement_date``, so the same input gives the same
    bytes (and the same file hash)."""
    exponent = currency_exponent(currency)
    if not _IBAN.fullmatch(account_iban):
        raise ValueError(f"account_iban {account_iban!r} is not an IBAN")
    if message_id is not None and not 0 < len(message_id) <= MAX35:
        raise ValueError(f"message_id must have 1 to {MAX35} characters")
    if isinstance(opening_balance_minor, bool) or not isinstance(opening_balance_minor, int):
        raise TypeError("opening_balance_minor must be an int")
    with _Replayable(lines) as entries:
        totals = _Totals()
        for line in entries:
            _check_writable(line, currency)
            totals.add(line)
        header = _Header(
            message_id=message_id or f"STMT-{statement_date:%Y%m%d}-{account_iban}"[:MAX35],
            created_at=created_at
            or datetime.datetime.combine(statement_date, datetime.time(23, 59, 59)),
            account_iban=account_iban,
            currency=currency,
            statement_date=statement_date,
            opening=opening_balance_minor,
            closing=opening_balance_minor + totals.net,
        )
        _Writer(out, header, exponent).write(totals, entries)


@dataclass(frozen=True, slots=True)
class _Header:
    message_id: str
    created_at: datetime.datetime
    account_iban: str
    currency: str
    statement_date: datetime.date
    opening: int
    closing: int


class _Totals:
    def __init__(self) -> None:
        self.credits = self.debits = 0
        self.credit_count = self.debit_count = 0

    def add(self, line: StatementLine) -> None:
        if line.status == "failed":
            return
        if _booked_credit(line):
            self.credits += line.amount_minor
            self.credit_count += 1
        else:
            self.debits += line.amount_minor
            self.debit_count += 1

    @property
    def net(self) -> int:
        return self.credits - self.debits


def _booked_credit(line: StatementLine) -> bool:
    """The side the entry is booked on: a reversal goes against the line's direction."""
    return (line.direction == "credit") != (line.status == "reversed")


def _check_writable(line: StatementLine, currency: str) -> None:
    check_line(line)
    if line.currency != currency:
        raise ValueError(f"statement line {line.line_no}: {line.currency}, not {currency}")
    for name, value in (("reference", line.reference), ("entry_ref", line.entry_ref)):
        if value is not None and not 0 < len(value) <= MAX35:
            raise ValueError(
                f"statement line {line.line_no}: {name} must have 1 to {MAX35} characters"
            )
    for payment_id in line.payment_ids:
        if as_payment_id(payment_id) is None:
            raise ValueError(f"statement line {line.line_no}: payment id {payment_id!r}")


class _Replayable:
    """Lines that can be iterated twice: a sequence as it is, anything else spooled to a
    temporary file in chunks (memory stays bounded for a million lines)."""

    def __init__(self, lines: Iterable[StatementLine]) -> None:
        self._lines = lines
        self._spool: IO[bytes] | None = None

    def __enter__(self) -> Iterable[StatementLine]:
        if isinstance(self._lines, Sequence):
            return self._lines
        self._spool = tempfile.TemporaryFile()
        return _Spooled(self._lines, self._spool)

    def __exit__(self, *exc: object) -> None:
        if self._spool is not None:
            self._spool.close()


class _Spooled:
    def __init__(self, lines: Iterable[StatementLine], spool: IO[bytes]) -> None:
        self._source: Iterable[StatementLine] | None = lines
        self._spool = spool

    def __iter__(self) -> Iterator[StatementLine]:
        if self._source is not None:
            source, self._source = self._source, None
            return self._record(source)
        return self._replay()

    def _record(self, source: Iterable[StatementLine]) -> Iterator[StatementLine]:
        chunk: list[tuple[Any, ...]] = []
        for line in source:
            chunk.append(_as_tuple(line))
            if len(chunk) >= _SPOOL_CHUNK:
                pickle.dump(chunk, self._spool, protocol=pickle.HIGHEST_PROTOCOL)
                chunk = []
            yield line
        if chunk:
            pickle.dump(chunk, self._spool, protocol=pickle.HIGHEST_PROTOCOL)
        self._spool.seek(0)

    def _replay(self) -> Iterator[StatementLine]:
        while True:
            try:
                chunk = pickle.load(self._spool)  # our own temporary file
            except EOFError:
                return
            for values in chunk:
                yield StatementLine(*values)


def _as_tuple(line: StatementLine) -> tuple[Any, ...]:
    return (
        line.line_no,
        line.reference,
        line.payment_ids,
        line.amount_minor,
        line.currency,
        line.direction,
        line.status,
        line.booked_on,
        line.entry_ref,
    )


class _Writer:
    """Streams the document: ``Document``, ``BkToCstmrStmt`` and ``Stmt`` are open elements of
    an ``xmlfile`` that declares the camt namespace as the default one; everything inside is
    built as small element trees without a namespace and written one by one. Unqualified
    elements written there inherit the default namespace when read, and the output carries one
    namespace declaration instead of one per entry (an element of the namespace written on its
    own would re-declare it). Each entry tree is dropped once written: memory stays flat."""

    def __init__(self, out: BinaryIO, header: _Header, exponent: int) -> None:
        self.out = out
        self.header = header
        self.exponent = exponent
        self.ns = namespace(WRITTEN_VERSION)

    def amount(self, amount_minor: int) -> str:
        return format_amount(amount_minor, self.header.currency)

    def write(self, totals: _Totals, entries: Iterable[StatementLine]) -> None:
        header = self.header
        ns = self.ns
        with etree.xmlfile(self.out, encoding="UTF-8") as xf:
            xf.write_declaration()
            with (
                xf.element(f"{{{ns}}}Document", nsmap={None: ns}),
                xf.element(f"{{{ns}}}BkToCstmrStmt"),
            ):
                group = etree.Element("GrpHdr")
                _leaf(group, "MsgId", header.message_id)
                _leaf(group, "CreDtTm", header.created_at.isoformat(timespec="seconds"))
                xf.write(group)
                with xf.element(f"{{{ns}}}Stmt"):
                    for element in self.statement_head(totals):
                        xf.write(element)
                    for line in entries:
                        if line.status != "failed":
                            xf.write(self.entry(line))

    def statement_head(self, totals: _Totals) -> Iterator[etree._Element]:
        header = self.header
        day = header.statement_date
        yield _element("Id", f"{header.account_iban}-{day:%Y%m%d}"[:MAX35])
        yield _element("CreDtTm", header.created_at.isoformat(timespec="seconds"))
        period = etree.Element("FrToDt")
        _leaf(period, "FrDtTm", f"{day.isoformat()}T00:00:00")
        _leaf(period, "ToDtTm", f"{day.isoformat()}T23:59:59")
        yield period
        account = etree.Element("Acct")
        _leaf(etree.SubElement(account, "Id"), "IBAN", header.account_iban)
        _leaf(account, "Ccy", header.currency)
        yield account
        yield self.balance("OPBD", header.opening)
        yield self.balance("CLBD", header.closing)
        summary = etree.Element("TxsSummry")
        all_entries = etree.SubElement(summary, "TtlNtries")
        _leaf(all_entries, "NbOfNtries", str(totals.credit_count + totals.debit_count))
        _leaf(all_entries, "Sum", self.amount(totals.credits + totals.debits))
        _leaf(all_entries, "TtlNetNtryAmt", self.amount(abs(totals.net)))
        _leaf(all_entries, "CdtDbtInd", "CRDT" if totals.net >= 0 else "DBIT")
        for name, count, total in (
            ("TtlCdtNtries", totals.credit_count, totals.credits),
            ("TtlDbtNtries", totals.debit_count, totals.debits),
        ):
            side = etree.SubElement(summary, name)
            _leaf(side, "NbOfNtries", str(count))
            _leaf(side, "Sum", self.amount(total))
        yield summary

    def balance(self, code: str, amount_minor: int) -> etree._Element:
        balance = etree.Element("Bal")
        kind = etree.SubElement(etree.SubElement(balance, "Tp"), "CdOrPrtry")
        _leaf(kind, "Cd", code)
        _leaf(balance, "Amt", self.amount(abs(amount_minor))).set("Ccy", self.header.currency)
        _leaf(balance, "CdtDbtInd", "CRDT" if amount_minor >= 0 else "DBIT")
        _leaf(etree.SubElement(balance, "Dt"), "Dt", self.header.statement_date.isoformat())
        return balance

    def entry(self, line: StatementLine) -> etree._Element:
        booked_on = line.booked_on.isoformat()
        reversed_ = line.status == "reversed"
        entry = etree.Element("Ntry")
        if line.entry_ref:
            _leaf(entry, "NtryRef", line.entry_ref)
        _leaf(entry, "Amt", self.amount(line.amount_minor)).set("Ccy", line.currency)
        _leaf(entry, "CdtDbtInd", "CRDT" if _booked_credit(line) else "DBIT")
        if reversed_:
            _leaf(entry, "RvslInd", "true")
        _leaf(entry, "Sts", "BOOK")
        _leaf(etree.SubElement(entry, "BookgDt"), "Dt", booked_on)
        _leaf(etree.SubElement(entry, "ValDt"), "Dt", booked_on)
        if line.reference:
            _leaf(entry, "AcctSvcrRef", line.reference)
        domain = etree.SubElement(etree.SubElement(entry, "BkTxCd"), "Domn")
        _leaf(domain, "Cd", "PMNT")
        family = etree.SubElement(domain, "Fmly")
        _leaf(family, "Cd", "RCDT" if line.direction == "credit" else "ICDT")
        _leaf(family, "SubFmlyCd", "RRTN" if reversed_ else "ESCT")
        if line.payment_ids:
            self.details(entry, line)
        return entry

    def details(self, entry: etree._Element, line: StatementLine) -> None:
        batched = len(line.payment_ids) > 1
        details = etree.SubElement(entry, "NtryDtls")
        if batched:
            _leaf(etree.SubElement(details, "Btch"), "NbOfTxs", str(len(line.payment_ids)))
        for payment_id in line.payment_ids:
            refs = etree.SubElement(etree.SubElement(details, "TxDtls"), "Refs")
            if line.reference and not batched:
                _leaf(refs, "AcctSvcrRef", line.reference)
            _leaf(refs, "EndToEndId", _hex32(payment_id))


def _element(tag: str, text: str) -> etree._Element:
    element = etree.Element(tag)
    element.text = text
    return element


def _leaf(parent: etree._Element, tag: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.text = text
    return element


def _hex32(payment_id: str) -> str:
    """Our id in the 32 hex digits that fit ``EndToEndId`` (Max35Text)."""
    return payment_id.replace("-", "").lower()
