"""Card validation that keeps only what we may store: brand, last 4, expiry, keyed fingerprint.

The full card number (PAN) and the CVC never leave :func:`validate_card`; no error echoes them.
"""

from __future__ import annotations

import datetime
import hmac
import re
from dataclasses import dataclass
from typing import TypeGuard, cast

from stdnum import luhn

from domain.errors import FieldError, InvalidCard

REDACTED_PAN = "[REDACTED-PAN]"

_PAN = re.compile(r"[0-9]{13,19}")
_CVC = re.compile(r"[0-9]{3,4}")
# Bare digit runs, plus the common printed groupings (4-4-4-4 and Amex 4-6-5) so that
# "4242 4242 4242 4242" in a log line is scrubbed too.
_PAN_IN_TEXT = re.compile(
    r"(?<![0-9])(?:[0-9]{13,19}"
    r"|[0-9]{4}(?:[ -][0-9]{4}){3}"
    r"|[0-9]{4}[ -][0-9]{6}[ -][0-9]{5})(?![0-9])"
)
# A UUID in its canonical form (8-4-4-4-12 hex digits): its digits are never a card number, so
# that idempotency keys and references made with uuid4() (1 in ~13,000 holds a Luhn-valid run of
# the 4-4-4-4 shape across its dashes) are not refused.
_UUID_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z-])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}(?![0-9A-Za-z-])"
)

# (brand, inclusive prefix ranges); the first match wins, so narrower ranges come first.
_BRAND_PREFIXES: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("amex", ((34, 34), (37, 37))),
    ("jcb", ((3528, 3589),)),
    ("discover", ((6011, 6011), (644, 649), (65, 65))),
    ("unionpay", ((62, 62),)),
    ("mastercard", ((51, 55), (2221, 2720))),
    ("visa", ((4, 4),)),
)


@dataclass(frozen=True, slots=True)
class CardDetails:
    """What we may keep about a card (never the full number nor the CVC)."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str


def card_brand(number: str) -> str:
    """Card network from the number's leading digits, or "unknown"."""
    for brand, ranges in _BRAND_PREFIXES:
        for low, high in ranges:
            prefix = number[: len(str(low))]
            if prefix.isascii() and prefix.isdigit() and low <= int(prefix) <= high:
                return brand
    return "unknown"


# (field name without prefix, reason, code)
_Problem = tuple[str, str, str]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_valid_number(number: object) -> TypeGuard[str]:
    return isinstance(number, str) and bool(_PAN.fullmatch(number)) and luhn.is_valid(number)


def _number_problems(number: object) -> list[_Problem]:
    if not isinstance(number, str) or not _PAN.fullmatch(number):
        return [
            ("number", "must be 13 to 19 digits without spaces or dashes", "card_number_invalid")
        ]
    if not luhn.is_valid(number):
        return [("number", "is not a valid card number (checksum failed)", "card_number_luhn")]
    return []


def _expiry_problems(exp_month: object, exp_year: object, today: datetime.date) -> list[_Problem]:
    month = exp_month if _is_int(exp_month) and 1 <= exp_month <= 12 else None
    year = exp_year if _is_int(exp_year) and 1000 <= exp_year <= 9999 else None
    problems: list[_Problem] = []
    if month is None:
        problems.append(("exp_month", "must be an integer from 1 to 12", "exp_month_invalid"))
    if year is None:
        problems.append(("exp_year", "must be a 4-digit year such as 2030", "exp_year_invalid"))
    # A card is valid through the last day of its expiry month.
    if month and year and (year, month) < (today.year, today.month):
        problems.append(("exp_year", "the card has expired", "card_expired"))
    return problems


def _cvc_problems(cvc: object, number: object) -> list[_Problem]:
    if not _is_valid_number(number):
        lengths: tuple[int, ...] = (3, 4)  # the brand, hence the expected length, is unknown
    else:
        lengths = (4,) if card_brand(number) == "amex" else (3,)
    if isinstance(cvc, str) and _CVC.fullmatch(cvc) and len(cvc) in lengths:
        return []
    digits = " or ".join(map(str, lengths))
    return [("cvc", f"must be a string of {digits} digits", "cvc_invalid")]


def validate_card(
    number: object,
    exp_month: object,
    exp_year: object,
    cvc: object,
    *,
    today: datetime.date,
    fingerprint_key: bytes,
    field_prefix: str = "payment_method",
) -> CardDetails:
    """Check a card and return what may be stored; raise one InvalidCard listing every problem.

    ``fingerprint_key`` is a secret: the fingerprint is an HMAC so that the stored value cannot
    be reversed by hashing every possible card number (an unsalted PAN hash can).
    """
    if not isinstance(fingerprint_key, bytes) or not fingerprint_key:
        raise ValueError("fingerprint_key must be non-empty bytes")
    problems = [
        *_number_problems(number),
        *_expiry_problems(exp_month, exp_year, today),
        *_cvc_problems(cvc, number),
    ]
    if problems:
        raise InvalidCard([FieldError(f"{field_prefix}.{f}", r, c) for f, r, c in problems])
    # The checks above guarantee these types.
    pan, month, year = cast(str, number), cast(int, exp_month), cast(int, exp_year)
    return CardDetails(
        brand=card_brand(pan),
        last4=pan[-4:],
        exp_month=month,
        exp_year=year,
        fingerprint=hmac.new(fingerprint_key, pan.encode(), "sha256").hexdigest()[:24],
    )


def _pans(text: str) -> list[tuple[int, int]]:
    """The spans of the card numbers in ``text``: Luhn-valid runs of 13-19 digits not touching
    another digit, bare or grouped 4-4-4-4 / 4-6-5 by spaces or dashes, and not inside a UUID."""
    uuids = [m.span() for m in _UUID_IN_TEXT.finditer(text)] if "-" in text else []
    return [
        m.span()
        for m in _PAN_IN_TEXT.finditer(text)
        if luhn.is_valid(re.sub(r"[ -]", "", m.group()))
        and not any(start < m.end() and m.start() < end for start, end in uuids)
    ]


def redact_pan(text: str) -> str:
    """Replace every card number in ``text`` (as :func:`contains_pan` finds them) with
    ``[REDACTED-PAN]``."""
    out, last = [], 0
    for start, end in _pans(text):
        out += [text[last:start], REDACTED_PAN]
        last = end
    return "".join(out) + text[last:] if out else text


def contains_pan(text: str) -> bool:
    """Whether ``text`` holds a card number: a Luhn-valid run of 13-19 digits not touching
    another digit, bare or grouped 4-4-4-4 / 4-6-5 by spaces or dashes; the digits of a UUID
    (8-4-4-4-12 hex) are not one."""
    return bool(_pans(text))


PAN_IN_FREE_TEXT = "pan_in_free_text"


def pan_problem(field: str) -> FieldError:
    """The problem for a card number where free text goes (never stored, never echoed)."""
    return FieldError(
        field,
        "must not contain a card number (a Luhn-valid 13-19 digit number); card numbers go "
        "only in payment_method.number",
        PAN_IN_FREE_TEXT,
    )
