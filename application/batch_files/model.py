"""The neutral shape every batch format is parsed into, and the status report pain.002 is
written from.

Parsers check *syntax and structure* only (well-formed, XSD-valid, header counts readable) and
raise ``BatchFileError`` naming the line or element. Business rules (amounts for the currency,
IBAN checksums, limits, duplicates, control sums) are applied by the batch intake to these
values, so every format gets exactly the same checks and reason codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from domain.errors import FieldError, ValidationError


class BatchFileError(ValidationError):
    """The file cannot be read as a batch: each error's ``field`` names where (``line 7``,
    ``/Document/CstmrCdtTrfInitn/PmtInf[1]/CdtTrfTxInf[3]/Amt``, ``items[2].amount``), its
    ``code`` is an ISO 20022 status reason code where one fits (FF01 for format errors)."""

    code = "invalid_batch_file"


@dataclass(frozen=True, slots=True)
class RawItem:
    """One credit transfer as the file gave it: text, not yet checked against any rule."""

    location: str  # where it is in the file: "line 7", "items[2]", or an XPath-like path
    end_to_end_id: str | None
    amount: str | None  # decimal text exactly as in the file ("1500.00")
    currency: str | None  # the item's own currency (pain.001 InstdAmt@Ccy, CSV column), if any
    iban: str | None = None
    bic: str | None = None
    name: str | None = None  # the beneficiary (creditor) name
    payee_account_id: str | None = None  # JSON/CSV only: a ledger account of the same tenant
    channel: str | None = None  # None: bank_transfer for an IBAN, internal for an account
    instruction_id: str | None = None
    value_date: date | None = None  # pain.001: the PmtInf's ReqdExctnDt
    priority: int | None = None  # higher first when the batch orders by priority
    depends_on: str | None = None  # the end_to_end_id of an item that must succeed first
    remittance: str | None = None  # pain.001 RmtInf/Ustrd (or the Strd reference)
    payment_block_id: str | None = None  # pain.001 PmtInfId


@dataclass(frozen=True, slots=True)
class PaymentBlock:
    """A pain.001 ``PmtInf``: one debtor account, one execution date, its own control values."""

    id: str
    declared_count: int | None
    declared_control_sum: str | None
    execution_date: date | None
    debtor_iban: str | None
    debtor_name: str | None
    category_purpose: str | None  # e.g. SALA for payroll
    item_count: int  # transactions actually present


@dataclass(frozen=True)
class ParsedFile:
    format: str  # "json" | "csv" | "pain.001.001.03" | "pain.001.001.09"
    items: list[RawItem]
    message_id: str | None = None  # GrpHdr/MsgId (pain.001), or the client's for JSON/CSV
    created_at: datetime | None = None
    declared_count: int | None = None  # GrpHdr/NbOfTxs
    declared_control_sum: str | None = None  # GrpHdr/CtrlSum, decimal text
    initiating_party: str | None = None
    debtor_iban: str | None = None  # the first PmtInf's DbtrAcct IBAN
    debtor_name: str | None = None
    execution_date: date | None = None  # the earliest ReqdExctnDt
    currency: str | None = None  # the one currency of every item, when they agree
    payment_blocks: list[PaymentBlock] = field(default_factory=list)


# --- pain.002 -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransactionStatus:
    end_to_end_id: str
    status: str  # ACSC (settled), RJCT (rejected), PDNG (pending: in flight or outcome unknown)
    reason_code: str | None = None  # ExternalStatusReason1Code, e.g. AC04, AM04, NARR
    additional_info: str | None = None  # at most 105 characters each in the XSD
    instruction_id: str | None = None
    amount: str | None = None  # decimal text, echoed in OrgnlTxRef
    currency: str | None = None
    payment_block_id: str | None = None  # groups the transaction under its OrgnlPmtInfAndSts


@dataclass(frozen=True)
class StatusReport:
    """Everything a pain.002 customer payment status report says about one batch."""

    message_id: str  # our report's MsgId (at most 35 characters)
    created_at: datetime
    original_message_id: str
    original_message_name: str  # "pain.001.001.03", "pain.001.001.09"; JSON/CSV: "pain.001.001.09"
    original_created_at: datetime | None
    original_count: int
    original_control_sum: str | None
    group_status: str  # ACSC | PART | RJCT | PDNG | ACCP
    group_reason_code: str | None = None
    group_additional_info: str | None = None
    transactions: list[TransactionStatus] = field(default_factory=list)
    payment_blocks: list[tuple[str, str]] = field(default_factory=list)  # (PmtInfId, status)


def location_error(location: str, reason: str, code: str = "FF01") -> BatchFileError:
    return BatchFileError([FieldError(location, reason, code)])
