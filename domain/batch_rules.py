"""A batch's rules (支付规则): the order its items are processed in and the conditions they run
under. Parsed once at intake from what the client sent, stored with the batch, never changed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.errors import FieldError, ValidationError
from domain.money import currency_exponent, parse_amount

ORDERS = ("file", "priority", "amount_asc", "amount_desc", "value_date")
MODES = ("independent", "all_or_nothing")
KNOWN_CHANNELS = ("internal", "card", "alipay", "wechat_pay", "bank_transfer")
BATCH_CHANNELS = ("internal", "bank_transfer")  # what a batch item can be paid through
CUTOFF = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
RULE_KEYS = frozenset(
    {
        "order", "mode", "stop_after_failures", "max_failure_ratio", "max_item_amount",
        "max_total_amount", "allowed_channels", "allowed_currencies", "cutoff_time",
        "funds_check",
    }
)  # fmt: skip


@dataclass(frozen=True)
class BatchRules:
    order: str = "file"
    mode: str = "independent"  # all_or_nothing: every item is paid, or none is
    stop_after_failures: int | None = None  # stop once this many items have failed
    max_failure_ratio: str | None = None  # stop once failed / processed exceeds it ("0.2")
    max_item_amount_minor: int | None = None  # items above it are refused (AM02)
    max_total_amount_minor: int | None = None  # a batch above it is refused as a whole
    allowed_channels: tuple[str, ...] | None = None
    allowed_currencies: tuple[str, ...] | None = None
    cutoff_time: str | None = None  # "HH:MM" UTC: released later, items roll to the next day
    funds_check: bool = True  # reserve the whole total before release, else fail (AM04)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def all_or_nothing(self) -> bool:
        return self.mode == "all_or_nothing"

    def ratio(self) -> Decimal | None:
        return None if self.max_failure_ratio is None else Decimal(self.max_failure_ratio)

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("extra")
        for name in ("allowed_channels", "allowed_currencies"):
            if record[name] is not None:
                record[name] = list(record[name])
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BatchRules:
        values = dict(record)
        for name in ("allowed_channels", "allowed_currencies"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


def parse_rules(raw: dict[str, Any] | None, currency: str) -> BatchRules:
    """The rules from a client's JSON object; every problem reported at once (``rules.x``)."""
    raw = raw or {}
    errors: list[FieldError] = []
    if not isinstance(raw, dict):
        raise ValidationError.single("rules", "must be an object", "invalid_rules")
    for key in sorted(set(raw) - RULE_KEYS):
        errors.append(FieldError(f"rules.{key}", "unknown rule", "unknown_rule"))
    order = raw.get("order", "file")
    if order not in ORDERS:
        errors.append(FieldError("rules.order", f"must be one of {', '.join(ORDERS)}", "invalid"))
    mode = raw.get("mode", "independent")
    if mode not in MODES:
        errors.append(FieldError("rules.mode", f"must be one of {', '.join(MODES)}", "invalid"))
    stop_after = _positive_int(raw.get("stop_after_failures"), "rules.stop_after_failures", errors)
    ratio = _ratio(raw.get("max_failure_ratio"), errors)
    item_limit = _amount(raw.get("max_item_amount"), currency, "rules.max_item_amount", errors)
    total_limit = _amount(raw.get("max_total_amount"), currency, "rules.max_total_amount", errors)
    channels = _names(raw.get("allowed_channels"), KNOWN_CHANNELS, "allowed_channels", errors)
    currencies = _currencies(raw.get("allowed_currencies"), errors)
    cutoff = raw.get("cutoff_time")
    if cutoff is not None and (not isinstance(cutoff, str) or not CUTOFF.fullmatch(cutoff)):
        errors.append(FieldError("rules.cutoff_time", "must be HH:MM (24 h, UTC)", "invalid"))
    funds_check = raw.get("funds_check", True)
    if not isinstance(funds_check, bool):
        errors.append(FieldError("rules.funds_check", "must be true or false", "invalid"))
    if errors:
        raise ValidationError(errors)
    return BatchRules(
        order=order, mode=mode, stop_after_failures=stop_after, max_failure_ratio=ratio,
        max_item_amount_minor=item_limit, max_total_amount_minor=total_limit,
        allowed_channels=channels, allowed_currencies=currencies, cutoff_time=cutoff,
        funds_check=funds_check,
    )  # fmt: skip


def _positive_int(value: Any, where: str, errors: list[FieldError]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        errors.append(FieldError(where, "must be an integer from 1 to 1000000", "invalid"))
        return None
    return value


def _ratio(value: Any, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    try:
        ratio = Decimal(str(value)) if isinstance(value, str | int) else None
    except InvalidOperation:
        ratio = None
    if ratio is None or not ratio.is_finite() or not 0 <= ratio <= 1:
        errors.append(
            FieldError("rules.max_failure_ratio", "must be a decimal string from 0 to 1", "invalid")
        )
        return None
    return str(ratio)


def _amount(value: Any, currency: str, where: str, errors: list[FieldError]) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError(where, "must be a decimal string", "invalid_amount"))
        return None
    try:
        currency_exponent(currency)
        return parse_amount(value, currency)
    except ValidationError as e:
        errors.extend(FieldError(where, err.reason, err.code) for err in e.errors)
        return None


def _names(
    value: Any, allowed: tuple[str, ...], name: str, errors: list[FieldError]
) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or any(v not in allowed for v in value):
        errors.append(
            FieldError(f"rules.{name}", f"must be a list of {', '.join(allowed)}", "invalid")
        )
        return None
    return tuple(dict.fromkeys(value))


def _currencies(value: Any, errors: list[FieldError]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > 50:
        errors.append(FieldError("rules.allowed_currencies", "must be a list of 1-50", "invalid"))
        return None
    for code in value:
        try:
            currency_exponent(code if isinstance(code, str) else "")
        except ValidationError:
            reason = f"{code!r} is not an ISO 4217 code"
            errors.append(FieldError("rules.allowed_currencies", reason, "invalid"))
            return None
    return tuple(dict.fromkeys(value))
