"""Money as integer minor units of an ISO 4217 currency.

Amounts cross our boundary as decimal strings ("1234.50") and live inside as ``int`` minor units.
Floats are never used: binary fractions cannot represent most decimal amounts exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from iso4217 import Currency

from domain.errors import FieldError, InvalidAmount, UnknownCurrency

#: Largest amount we accept, in minor units. It refuses absurd magnitudes (typos, overflow probes)
#: long before they could hurt downstream systems with fixed-width integers.
MAX_AMOUNT_MINOR = 10**15
#: Inputs longer than this are refused before any parsing: no valid amount comes close
#: (10**15 minor units is at most 17 characters), and it bounds the work done on hostile input.
MAX_AMOUNT_TEXT_LENGTH = 32

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")
# Canonical decimal: no sign other than "-", no leading zeros, digits on both sides of a dot.
# [0-9] rather than \d so that non-ASCII digits ("١٢٣") never match.
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


def currency_exponent(code: str, *, field: str = "currency") -> int:
    """Number of decimal places of an ISO 4217 currency (JPY 0, USD 2, KWD 3)."""
    # Check the shape first: it keeps lowercase codes out and unhashable values out of the cache.
    exponent = _exponent(code) if isinstance(code, str) and _CURRENCY_CODE.fullmatch(code) else None
    if exponent is None:
        raise UnknownCurrency(
            FieldError(
                field,
                "must be an ISO 4217 currency code with minor units, e.g. USD",
                "unknown_currency",
            )
        )
    return exponent


@lru_cache(maxsize=512)
def _exponent(code: str) -> int | None:
    try:
        return Currency(code).exponent
    except ValueError:
        return None  # not an ISO 4217 code


def _invalid(field: str, reason: str, code: str) -> InvalidAmount:
    return InvalidAmount(FieldError(field, reason, code))


def _why_not_decimal(text: str) -> str:
    """A human explanation of why ``text`` is not a canonical decimal string."""
    stripped = text.strip()
    if not stripped:
        return "must not be empty"
    if stripped != text:
        return "must not have leading or trailing spaces"
    if text.startswith("+"):
        return "must not have a '+' sign"
    if not text.isascii():
        return "must use ASCII digits 0-9 only"
    if any(sep in text for sep in ",_ '"):
        return "must not contain thousands separators"
    if text.count(".") > 1:
        return "must contain at most one decimal point"
    if text.startswith((".", "-.")) or text.endswith("."):
        return "must have digits on both sides of the decimal point"
    if re.fullmatch(r"-?0[0-9]+(\.[0-9]+)?", text):
        return "must not have leading zeros"
    return "must be a plain decimal string such as '12.34' (no exponent, NaN or Infinity)"


def parse_amount(
    text: object, currency: str, *, field: str = "amount", allow_zero: bool = False
) -> int:
    """Parse a positive decimal string ("12.34") into minor units of ``currency``.

    With ``allow_zero`` zero is accepted too. Negative amounts are always refused.
    """
    exponent = currency_exponent(currency)
    if not isinstance(text, str):
        # JSON numbers are floats in most clients: "0.1" survives, 0.1 may not.
        raise _invalid(
            field,
            'must be a decimal string such as "12.34" (JSON numbers are refused)',
            "amount_must_be_string",
        )
    if len(text) > MAX_AMOUNT_TEXT_LENGTH:
        raise _invalid(
            field, f"must be at most {MAX_AMOUNT_TEXT_LENGTH} characters", "amount_too_large"
        )
    if not _DECIMAL.fullmatch(text):
        raise _invalid(field, _why_not_decimal(text), "invalid_decimal")
    if text.startswith("-"):
        raise _invalid(field, "must not be negative", "amount_not_positive")
    whole, _, fraction = text.partition(".")
    if len(fraction) > exponent:
        places = f"{exponent} decimal places" if exponent else "no decimal places"
        raise _invalid(
            field, f"has too many decimals: {currency} has {places}", "too_many_decimals"
        )
    amount = int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    if amount == 0 and not allow_zero:
        raise _invalid(field, "must be greater than zero", "amount_not_positive")
    if amount > MAX_AMOUNT_MINOR:
        raise _invalid(
            field,
            f"must not exceed {format_amount(MAX_AMOUNT_MINOR, currency)}",
            "amount_too_large",
        )
    return amount


def parse_non_negative_amount(text: object, currency: str, *, field: str = "amount") -> int:
    """Like :func:`parse_amount` but zero is allowed (limits, thresholds)."""
    return parse_amount(text, currency, field=field, allow_zero=True)


def format_amount(amount_minor: int, currency: str) -> str:
    """Minor units to a decimal string with exactly the currency's decimals ("-1.00", "500")."""
    _require_int(amount_minor)
    exponent = currency_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**exponent)
    if exponent == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{exponent}d}"


def _require_int(value: object) -> None:
    # bool is an int subclass; True as "1 cent" is always a bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"amount_minor must be an int, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units of one currency. Arithmetic never mixes currencies."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        _require_int(self.amount_minor)
        currency_exponent(self.currency)

    @classmethod
    def parse(
        cls, text: object, currency: str, *, field: str = "amount", allow_zero: bool = False
    ) -> Money:
        return cls(parse_amount(text, currency, field=field, allow_zero=allow_zero), currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def is_zero(self) -> bool:
        return self.amount_minor == 0

    def to_decimal_string(self) -> str:
        return format_amount(self.amount_minor, self.currency)
