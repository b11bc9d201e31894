"""Batch intake: the checks a bank applies to a payment file, in the order banks apply them
(../shared/notes/iso20022-batches.md section 2), each with a stable ISO 20022 reason code.

1. Whole file (refused as a whole, nothing stored): transaction count (AM18) and control sum
   (AM10) against the header and against each payment block, currency (AM03), execution date
   not in the past (DT01), batch total within the rules' limit (AM14), dependency cycles.
2. Each item (an invalid item is listed and never paid; it sinks the batch only under the
   all-or-nothing rule): end-to-end id present (FF01) and unique (AM05), amount (AM12 unreadable,
   AM01 zero, CH20 too many decimals for the currency), currency (AM03), IBAN checksum and
   structure (AC01, schwifty), BIC format (RC01), beneficiary name (BE22), channel allowed
   (AG03), per-item limit (AM02), dependency on an unknown item (NARR).

Funding-account checks need the ledger and happen when the batch is decided (handlers.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from uuid import UUID

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException

from application.batch_files.model import ParsedFile, RawItem
from domain.batch_items import BatchItem, check_no_cycles, processing_order
from domain.batch_rules import BATCH_CHANNELS, BatchRules
from domain.cards import contains_pan
from domain.errors import FieldError, ValidationError
from domain.money import currency_exponent, format_amount, parse_amount

MAX_ITEMS = 100_000
MAX_ID = 35  # ISO 20022 Max35Text: EndToEndId, MsgId
MAX_NAME = 140
AMOUNT_CODES = {
    "too_many_decimals": "CH20",
    "amount_not_positive": "AM01",
    "amount_too_large": "AM02",
}


@dataclass(frozen=True)
class CheckedBatch:
    items: list[BatchItem]  # every item, in processing order (invalid ones too)
    currency: str
    valid_count: int
    invalid_count: int
    control_sum_minor: int  # of the valid items
    execution_date: date | None
    fingerprint: str


def check_batch(
    parsed: ParsedFile,
    *,
    currency: str | None,
    rules: BatchRules,
    today: date,
    execution_date: date | None = None,
) -> CheckedBatch:
    """Every check that needs no ledger: whole-file ones raise, item ones mark the item."""
    currency = _batch_currency(parsed, currency)
    _check_file(parsed, currency, today, execution_date)
    if rules.allowed_currencies is not None and currency not in rules.allowed_currencies:
        raise ValidationError.single(
            "currency", f"{currency} is not among the batch's allowed currencies", "AM03"
        )
    default_date = execution_date or parsed.execution_date
    items = _check_items(parsed.items, currency, rules, default_date, today)
    check_no_cycles(items)
    valid = [i for i in items if i.valid]
    total = sum(i.amount_minor for i in valid)
    limit = rules.max_total_amount_minor
    if limit is not None and total > limit:
        raise ValidationError.single(
            "items",
            f"the batch pays {format_amount(total, currency)} {currency}, above its limit of "
            f"{format_amount(limit, currency)}",
            "AM14",
        )
    ordered = processing_order(items, rules.order)
    # The batch's date: its earliest item's, or none if an item has none (as soon as possible).
    dates = [i.value_date for i in valid if i.value_date is not None]
    undated = len(dates) < len(valid)
    return CheckedBatch(
        items=ordered,
        currency=currency,
        valid_count=len(valid),
        invalid_count=len(items) - len(valid),
        control_sum_minor=total,
        execution_date=min(dates) if dates and not undated else default_date,
        fingerprint=_fingerprint(ordered, rules, currency),
    )


def _batch_currency(parsed: ParsedFile, currency: str | None) -> str:
    chosen = currency or parsed.currency
    if chosen is None:
        found = {i.currency for i in parsed.items if i.currency}
        chosen = found.pop() if len(found) == 1 else None
    if chosen is None:
        raise ValidationError.single(
            "currency", "give the batch's currency (the items do not agree on one)", "AM03"
        )
    try:
        currency_exponent(chosen)
    except ValidationError as e:
        raise ValidationError.single("currency", e.errors[0].reason, "AM03") from e
    return chosen


def _check_file(
    parsed: ParsedFile, currency: str, today: date, execution_date: date | None
) -> None:
    errors: list[FieldError] = []
    if not parsed.items:
        errors.append(FieldError("items", "the batch has no transactions", "FF01"))
    if len(parsed.items) > MAX_ITEMS:
        errors.append(FieldError("items", f"at most {MAX_ITEMS} transactions", "FF01"))
    if parsed.message_id is not None and not 1 <= len(parsed.message_id) <= MAX_ID:
        errors.append(FieldError("message_id", f"must be 1-{MAX_ID} characters", "FF01"))
    where = "GrpHdr" if parsed.format.startswith("pain") else "header"
    _check_controls(where, parsed.declared_count, parsed.declared_control_sum, parsed.items, errors)
    for n, block in enumerate(parsed.payment_blocks, 1):
        in_block = [i for i in parsed.items if i.payment_block_id == block.id]
        _check_controls(
            f"PmtInf[{n}]", block.declared_count, block.declared_control_sum, in_block, errors
        )
    for n, block in enumerate(parsed.payment_blocks, 1):
        if block.execution_date is not None and block.execution_date < today:
            errors.append(FieldError(
                f"PmtInf[{n}]/ReqdExctnDt",
                f"execution date {block.execution_date} is in the past", "DT01",
            ))  # fmt: skip
    if execution_date is not None and execution_date < today:
        errors.append(FieldError("execution_date", f"{execution_date} is in the past", "DT01"))
    if errors:
        raise ValidationError(errors)


def _check_controls(
    where: str,
    declared_count: int | None,
    declared_sum: str | None,
    items: list[RawItem],
    errors: list[FieldError],
) -> None:
    if declared_count is not None and declared_count != len(items):
        errors.append(FieldError(
            f"{where}/NbOfTxs",
            f"declares {declared_count} transactions, the file holds {len(items)}", "AM18",
        ))  # fmt: skip
    if declared_sum is None:
        return
    try:
        # CtrlSum is the plain sum of the amounts as written, whatever their currency.
        actual = sum((Decimal(i.amount or "0") for i in items), Decimal(0))
        declared = Decimal(declared_sum)
    except InvalidOperation:
        errors.append(FieldError(f"{where}/CtrlSum", "is not a decimal number", "AM10"))
        return
    if actual != declared:
        errors.append(FieldError(
            f"{where}/CtrlSum",
            f"declares {declared_sum}, the amounts sum to {actual}", "AM10",
        ))  # fmt: skip


def _check_items(
    raws: list[RawItem],
    currency: str,
    rules: BatchRules,
    default_date: date | None,
    today: date | None = None,
) -> list[BatchItem]:
    index_of: dict[str, int] = {}
    duplicates: set[int] = set()
    for n, raw in enumerate(raws):
        if raw.end_to_end_id:
            if raw.end_to_end_id in index_of:
                duplicates.add(n)
            else:
                index_of[raw.end_to_end_id] = n
    return [
        _check_item(n, raw, currency, rules, default_date, index_of, n in duplicates, today)
        for n, raw in enumerate(raws)
    ]


def _check_item(
    index: int,
    raw: RawItem,
    currency: str,
    rules: BatchRules,
    default_date: date | None,
    index_of: dict[str, int],
    duplicate: bool,
    today: date | None = None,
) -> BatchItem:
    has_nul = _has_nul(raw)
    if has_nul:  # kept visible in the item's report, but never stored as NUL
        cleaned: dict[str, Any] = {
            n: (getattr(raw, n) or "").replace("\x00", "\ufffd") or None for n in TEXT_FIELDS
        }
        raw = replace(raw, **cleaned)
    amount_minor, amount_problem = _amount(raw, currency)
    payee, channel, payee_problem = _payee(raw)
    depends_on = index_of.get(raw.depends_on) if raw.depends_on else None
    problem = (
        _format_problem(raw, has_nul, duplicate, currency)
        or _date_problem(raw, today)
        or amount_problem
        or payee_problem
        or _rule_problem(raw, rules, channel, amount_minor, currency)
        or _dependency_problem(raw, depends_on, index)
    )
    return BatchItem(
        index=index, seq=index, end_to_end_id=raw.end_to_end_id or f"#{index + 1}",
        amount_minor=amount_minor, currency=currency, channel=channel, payee=payee,
        value_date=raw.value_date or default_date, priority=raw.priority or 0,
        depends_on=depends_on if depends_on != index else None, location=raw.location,
        reason_code=problem and problem[0], reason=problem and problem[1],
        remittance=_text(raw.remittance), instruction_id=raw.instruction_id,
        payment_block_id=raw.payment_block_id,
    )  # fmt: skip


# Each check below answers None, or (reason code, reason); the first problem found is kept.
Problem = tuple[str, str] | None


def _format_problem(raw: RawItem, has_nul: bool, duplicate: bool, currency: str) -> Problem:
    e2e = raw.end_to_end_id
    if not e2e:
        return ("FF01", "end_to_end_id is missing")
    if has_nul:
        return ("FF01", "a text field holds a NUL (U+0000) character")
    if len(e2e) > MAX_ID or len(raw.instruction_id or "") > MAX_ID:
        return ("FF01", f"end_to_end_id and instruction_id are at most {MAX_ID} characters")
    if duplicate:
        return ("AM05", f"end_to_end_id {e2e!r} appears earlier in the batch")
    if raw.currency and raw.currency != currency:
        return ("AM03", f"item is in {raw.currency}, the batch in {currency}")
    return None


def _date_problem(raw: RawItem, today: date | None) -> Problem:
    """An item's own value date (CSV ``value_date``, JSON items) must not be in the past, as
    the file's execution date must not (DT01)."""
    if today is not None and raw.value_date is not None and raw.value_date < today:
        return ("DT01", f"value date {raw.value_date.isoformat()} is in the past")
    return None


def _amount(raw: RawItem, currency: str) -> tuple[int, Problem]:
    if raw.amount is None or not str(raw.amount).strip():
        return 0, ("AM12", "amount is missing")
    try:
        return parse_amount(raw.amount, currency), None
    except ValidationError as e:
        error = e.errors[0]
        return 0, (AMOUNT_CODES.get(error.code, "AM12"), f"amount {raw.amount!r}: {error.reason}")


def _rule_problem(
    raw: RawItem, rules: BatchRules, channel: str, amount_minor: int, currency: str
) -> Problem:
    if rules.allowed_channels is not None and channel not in rules.allowed_channels:
        return ("AG03", f"channel {channel} is not allowed by the batch's rules")
    limit = rules.max_item_amount_minor
    if limit is not None and amount_minor > limit:
        return ("AM02", f"amount is above the per-item limit of "
                        f"{format_amount(limit, currency)} {currency}")  # fmt: skip
    return None


def _dependency_problem(raw: RawItem, depends_on: int | None, index: int) -> Problem:
    if raw.depends_on and depends_on is None:
        return ("NARR", f"depends_on {raw.depends_on!r}: no item has that end_to_end_id")
    if depends_on == index:
        return ("NARR", "an item cannot depend on itself")
    return None


def _payee(raw: RawItem) -> tuple[dict[str, Any] | None, str, tuple[str, str] | None]:
    channel = raw.channel or ("internal" if raw.payee_account_id else "bank_transfer")
    if channel not in BATCH_CHANNELS:
        return None, channel, ("AG03", f"a batch item cannot be paid through {channel}")
    if channel == "internal":
        account = (raw.payee_account_id or "").strip()
        if not _is_uuid(account):
            return None, channel, ("AC01", "payee_account_id is missing or not an account id")
        return {"type": "account", "account_id": account.lower()}, channel, None
    if raw.payee_account_id:
        return None, channel, ("AG03", "bank_transfer items pay an IBAN, not a ledger account")
    iban = _iban(raw.iban or "")
    if iban is None:
        return None, channel, ("AC01", f"creditor account {raw.iban!r} is not a valid IBAN")
    bic = None
    if raw.bic:
        bic = _bic(raw.bic)
        if bic is None:
            return None, channel, ("RC01", f"creditor agent BIC {raw.bic!r} is not valid")
    name = (raw.name or "").strip()
    if not name:
        return None, channel, ("BE22", "creditor name is missing")
    if len(name) > MAX_NAME or contains_pan(name):
        return None, channel, ("FF01", f"creditor name must be 1-{MAX_NAME} characters")
    return {"type": "bank_account", "iban": iban, "name": name, "bic": bic}, channel, None


@lru_cache(maxsize=200_000)
def _iban(text: str) -> str | None:
    try:
        return str(IBAN(text).compact)
    except SchwiftyException:
        return None


@lru_cache(maxsize=10_000)
def _bic(text: str) -> str | None:
    try:
        return str(BIC(text))
    except SchwiftyException:
        return None


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value[:140]
    return None if contains_pan(value) else value


TEXT_FIELDS = ("end_to_end_id", "name", "remittance", "instruction_id", "depends_on", "iban")


def _has_nul(raw: RawItem) -> bool:
    """NUL cannot be stored in PostgreSQL text, and no bank file legitimately holds one."""
    text = (raw.end_to_end_id, raw.name, raw.remittance, raw.instruction_id, raw.depends_on,
            raw.iban)  # fmt: skip
    return "\x00" in "".join(filter(None, text))


def _fingerprint(items: list[BatchItem], rules: BatchRules, currency: str) -> str:
    digest = hashlib.sha256(repr((rules.to_record(), currency)).encode())
    for item in items:
        digest.update(repr(item.to_record()).encode())
    return digest.hexdigest()
