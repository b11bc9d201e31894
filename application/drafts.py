"""Validation of commands into drafts: every field checked, every problem reported at once.

A draft is what the handlers decide on: amounts in minor units, card numbers replaced by their
public details and a token, and a fingerprint of the request for idempotency checks (computed over
public data only, so no card number is ever hashed into a stored value).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException

from application.channels.base import CHANNELS, WALLET_CHANNELS
from application.commands import (
    BankBeneficiary,
    CardMethod,
    MakeDeposit,
    Principal,
    SubmitPayment,
    WalletMethod,
)
from domain.accounts import external_account_id
from domain.cards import contains_pan, pan_problem, validate_card
from domain.errors import FieldError, ValidationError
from domain.money import currency_exponent, parse_amount
from domain.payments import PaymentKind, payment_id_for

MAX_KEY_LENGTH = 255
# An Alipay user id (2088 and 12 more digits): a wallet account, no card network's number
# (about 1 in 10 is Luhn-valid, so the card-number check must not refuse it).
ALIPAY_USER_ID = re.compile(r"2088[0-9]{12}")
MAX_DESCRIPTION = 500
MAX_METADATA_KEYS = 20
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
MAX_NAME = 140


@dataclass(frozen=True)
class PaymentDraft:
    payment_id: UUID
    tenant: str
    client: str
    kind: PaymentKind
    idempotency_key: str
    fingerprint: str
    amount_minor: int
    currency: str
    channel: str
    payer: dict[str, Any]
    payee: dict[str, Any]
    description: str | None
    metadata: dict[str, str]
    received_at: datetime  # when the request arrived: the payment's "requested" time
    secret: dict[str, str] = field(default_factory=dict, repr=False)


def check_idempotency_key(key: object) -> list[FieldError]:
    if not isinstance(key, str) or not key:
        return [FieldError("Idempotency-Key", "is required", "idempotency_key_required")]
    if len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        return [
            FieldError(
                "Idempotency-Key",
                f"must be 1-{MAX_KEY_LENGTH} printable ASCII characters",
                "idempotency_key_invalid",
            )
        ]
    if contains_pan(key):  # the key is stored with the payment: never a card number
        return [pan_problem("Idempotency-Key")]
    return []


def validate_payment(
    cmd: SubmitPayment, principal: Principal, *, now: datetime, secret_key: bytes
) -> PaymentDraft:
    errors = check_idempotency_key(cmd.idempotency_key)
    amount_minor = _amount(cmd.amount, cmd.currency, errors)
    if cmd.channel not in CHANNELS:
        errors.append(
            FieldError("channel", f"must be one of {', '.join(CHANNELS)}", "unknown_channel")
        )
    payer, secret = _payer(cmd, now.date(), secret_key, errors)
    payee = _payee(cmd, errors)
    _check_channel_fits(cmd, errors)
    _check_text(cmd.description, cmd.metadata, errors)
    if errors:
        raise ValidationError(errors)
    assert amount_minor is not None and payer is not None and payee is not None
    return _draft(
        principal, PaymentKind.PAYMENT, cmd.idempotency_key, amount_minor, cmd.currency,
        cmd.channel, payer, payee, cmd.description, dict(cmd.metadata), secret, now,
    )  # fmt: skip


def validate_deposit(
    cmd: MakeDeposit, principal: Principal, currency: str, *, now: datetime
) -> PaymentDraft:
    """A deposit credits an account from the tenant's external funding source."""
    errors = check_idempotency_key(cmd.idempotency_key)
    if cmd.currency is not None and cmd.currency != currency:
        errors.append(FieldError("currency", f"the account is in {currency}", "currency_mismatch"))
    amount_minor = _amount(cmd.amount, currency, errors)
    if errors:
        raise ValidationError(errors)
    assert amount_minor is not None
    payer = {"type": "account", "account_id": str(external_account_id(principal.tenant, currency))}
    payee = {"type": "account", "account_id": str(cmd.account_id)}
    return _draft(
        principal, PaymentKind.DEPOSIT, cmd.idempotency_key, amount_minor, currency,
        "internal", payer, payee, "deposit", {}, {}, now,
    )  # fmt: skip


def _draft(
    principal: Principal,
    kind: PaymentKind,
    key: str,
    amount_minor: int,
    currency: str,
    channel: str,
    payer: dict[str, Any],
    payee: dict[str, Any],
    description: str | None,
    metadata: dict[str, str],
    secret: dict[str, str],
    received_at: datetime,
) -> PaymentDraft:
    public_payer = {k: v for k, v in payer.items() if k != "token"}  # tokens are random per call
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                str(kind),
                amount_minor,
                currency,
                channel,
                public_payer,
                payee,
                description,
                metadata,
            ],
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    return PaymentDraft(
        payment_id=payment_id_for(principal.tenant, principal.client, key),
        tenant=principal.tenant,
        client=principal.client,
        kind=kind,
        idempotency_key=key,
        fingerprint=fingerprint,
        amount_minor=amount_minor,
        currency=currency,
        channel=channel,
        payer=payer,
        payee=payee,
        description=description,
        metadata=metadata,
        received_at=received_at,
        secret=secret,
    )


def _amount(amount: str, currency: str, errors: list[FieldError]) -> int | None:
    try:
        currency_exponent(currency)
    except ValidationError as e:
        errors.extend(e.errors)
        return None
    try:
        return parse_amount(amount, currency)
    except ValidationError as e:
        errors.extend(e.errors)
        return None


def _payer(
    cmd: SubmitPayment, today: date, secret_key: bytes, errors: list[FieldError]
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    if (cmd.payer_account_id is None) == (cmd.payment_method is None):
        errors.append(
            FieldError(
                "payer", "give exactly one of payer_account_id or payment_method", "payer_required"
            )
        )
        return None, {}
    if cmd.payer_account_id is not None:
        return {"type": "account", "account_id": str(cmd.payer_account_id)}, {}
    method = cmd.payment_method
    if isinstance(method, CardMethod):
        try:
            card = validate_card(
                method.number, method.exp_month, method.exp_year, method.cvc,
                today=today, fingerprint_key=secret_key,
            )  # fmt: skip
        except ValidationError as e:
            errors.extend(e.errors)
            return None, {}
        payer = {
            "type": "card",
            "token": f"tok_{secrets.token_hex(12)}",
            "brand": card.brand,
            "last4": card.last4,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "fingerprint": card.fingerprint,
        }
        return payer, {"card_number": method.number}
    if isinstance(method, WalletMethod):
        if method.type not in WALLET_CHANNELS:
            errors.append(
                FieldError("payment_method.type", "must be card, alipay or wechat_pay", "invalid")
            )
            return None, {}
        if not (1 <= len(method.payer_id) <= 64) or not method.payer_id.isprintable():
            errors.append(
                FieldError(
                    "payment_method.payer_id", "must be 1-64 printable characters", "invalid"
                )
            )
            return None, {}
        if contains_pan(method.payer_id) and not (
            method.type == "alipay" and ALIPAY_USER_ID.fullmatch(method.payer_id)
        ):
            errors.append(pan_problem("payment_method.payer_id"))
            return None, {}
        return {"type": method.type, "payer_id": method.payer_id}, {}
    errors.append(FieldError("payment_method", "unsupported payment method", "invalid"))
    return None, {}


def _payee(cmd: SubmitPayment, errors: list[FieldError]) -> dict[str, Any] | None:
    if (cmd.payee_account_id is None) == (cmd.beneficiary is None):
        errors.append(
            FieldError(
                "payee", "give exactly one of payee_account_id or beneficiary", "payee_required"
            )
        )
        return None
    if cmd.payee_account_id is not None:
        return {"type": "account", "account_id": str(cmd.payee_account_id)}
    return _bank_beneficiary(cmd.beneficiary, errors)  # type: ignore[arg-type]


def _bank_beneficiary(b: BankBeneficiary, errors: list[FieldError]) -> dict[str, Any] | None:
    before = len(errors)
    iban = bic = None
    try:
        iban = IBAN(b.iban)
    except SchwiftyException as e:
        errors.append(FieldError("beneficiary.iban", f"not a valid IBAN: {e}", "invalid_iban"))
    if b.bic:
        try:
            bic = BIC(b.bic)
        except SchwiftyException as e:
            errors.append(FieldError("beneficiary.bic", f"not a valid BIC: {e}", "invalid_bic"))
    name = b.name.strip()
    if not name or len(name) > MAX_NAME:
        errors.append(
            FieldError("beneficiary.name", f"must be 1-{MAX_NAME} characters", "invalid_name")
        )
    elif contains_pan(name):
        errors.append(pan_problem("beneficiary.name"))
    if len(errors) > before or iban is None:
        return None
    return {
        "type": "bank_account",
        "iban": str(iban.compact),
        "name": name,
        "bic": bic and str(bic),
    }


def _check_channel_fits(cmd: SubmitPayment, errors: list[FieldError]) -> None:
    """Which payer and payee shapes each channel can carry."""
    method = cmd.payment_method
    if cmd.channel == "internal":
        if cmd.payer_account_id is None or cmd.payee_account_id is None:
            errors.append(
                FieldError(
                    "channel",
                    "internal transfers need payer_account_id and payee_account_id",
                    "channel_mismatch",
                )
            )
    elif cmd.channel == "card":
        if not isinstance(method, CardMethod) or cmd.payee_account_id is None:
            errors.append(
                FieldError(
                    "channel",
                    "card payments need a card payment_method and payee_account_id",
                    "channel_mismatch",
                )
            )
    elif cmd.channel in WALLET_CHANNELS:
        if (
            not isinstance(method, WalletMethod)
            or method.type != cmd.channel
            or cmd.payee_account_id is None
        ):
            errors.append(
                FieldError(
                    "channel",
                    f"{cmd.channel} payments need a payment_method of type {cmd.channel}"
                    " and payee_account_id",
                    "channel_mismatch",
                )
            )
    elif cmd.channel == "bank_transfer" and (
        cmd.payer_account_id is None or cmd.beneficiary is None
    ):
        errors.append(
            FieldError(
                "channel",
                "bank transfers need payer_account_id and a bank_account beneficiary",
                "channel_mismatch",
            )
        )


def _check_text(
    description: str | None, metadata: dict[str, str], errors: list[FieldError]
) -> None:
    """Free text is stored as given, so it must not hold a card number: one is refused (422
    ``pan_in_free_text``), never redacted, so that what is stored is what the client sent."""
    if description is not None and len(description) > MAX_DESCRIPTION:
        errors.append(
            FieldError("description", f"at most {MAX_DESCRIPTION} characters", "too_long")
        )
    elif isinstance(description, str) and contains_pan(description):
        errors.append(pan_problem("description"))
    if len(metadata) > MAX_METADATA_KEYS:
        errors.append(FieldError("metadata", f"at most {MAX_METADATA_KEYS} keys", "too_many_keys"))
    for key, value in metadata.items():
        if not isinstance(key, str) or not (1 <= len(key) <= MAX_METADATA_KEY):
            errors.append(
                FieldError(
                    f"metadata.{key}", f"keys are 1-{MAX_METADATA_KEY} characters", "invalid"
                )
            )
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            errors.append(
                FieldError(
                    f"metadata.{key}",
                    f"values are strings of at most {MAX_METADATA_VALUE} characters",
                    "invalid",
                )
            )
        elif isinstance(key, str) and (contains_pan(key) or contains_pan(value)):
            # The field names the key: a card number as the key is named by its position.
            where = f"metadata.{key}" if not contains_pan(key) else "metadata"
            errors.append(pan_problem(where))
