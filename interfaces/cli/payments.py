"""``payledger pay`` and ``payledger payments show``."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import typer

from application.commands import (
    BankBeneficiary,
    CardMethod,
    PaymentMethod,
    SubmitPayment,
    WalletMethod,
)
from application.drafts import validate_payment
from application.results import AccountResult, PaymentResult
from domain.errors import FieldError, ValidationError
from interfaces.cli import output, views
from interfaces.cli.errors import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_PAYMENT_EXCEPTION,
    EXIT_PAYMENT_FAILED,
    OPTION_OF_FIELD,
)
from interfaces.cli.principal import cli_principal
from interfaces.cli.runtime import run, service

app = typer.Typer(help="Inspect payments.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]
_EXPIRY = re.compile(r"(0?[1-9]|1[0-2])/([0-9]{4})")
# "processing" cannot be final after pay returns; treat it as unknown, like exception.
EXIT_OF_STATUS = {"succeeded": EXIT_OK, "failed": EXIT_PAYMENT_FAILED}

PAY_HELP = f"""Make a real-time payment and print its final result.

\b
Payer: --from ACCOUNT_ID (internal, bank_transfer), --card/--exp/--cvc (card),
       --wallet-payer ID (alipay, wechat_pay).
Payee: --to ACCOUNT_ID, or --iban/--name [--bic] for a bank_transfer payout.

\b
Exit status: 0 succeeded, 6 failed (declined, insufficient funds, ...),
7 exception (outcome unknown, to be resolved).
{EXIT_CODES_HELP}
"""


def _card(number: str, expiry: str | None, cvc: str | None, errors: list[FieldError]) -> CardMethod:
    month = year = 0
    match = _EXPIRY.fullmatch(expiry or "")
    if match is None:
        errors.append(FieldError("payment_method.exp_month", "give --exp as MM/YYYY", "invalid"))
    else:
        month, year = int(match.group(1)), int(match.group(2))
    if not cvc:
        errors.append(FieldError("payment_method.cvc", "is required with --card", "required"))
    return CardMethod(number=number, exp_month=month, exp_year=year, cvc=cvc or "")


def _method(
    channel: str,
    card: str | None,
    expiry: str | None,
    cvc: str | None,
    wallet: str | None,
    errors: list[FieldError],
) -> PaymentMethod | None:
    if card is not None and wallet is not None:
        errors.append(FieldError("payer", "give either --card or --wallet-payer, not both"))
        return None
    if card is not None:
        return _card(card, expiry, cvc, errors)
    if wallet is not None:
        return WalletMethod(type=channel, payer_id=wallet)
    return None


def _option(field: str) -> str:
    return OPTION_OF_FIELD.get(field, field)


def _refuse(cmd: SubmitPayment, errors: list[FieldError]) -> None:
    """Report the options' own problems together with every other problem of the request."""
    if not errors:
        return
    reported = {_option(e.field) for e in errors}
    try:
        validate_payment(cmd, cli_principal(), now=datetime.now(UTC), secret_key=b"cli-precheck")
    except ValidationError as e:
        errors += [other for other in e.errors if _option(other.field) not in reported]
    raise ValidationError(errors)


@app.command("show")
def show_payment(
    payment_id: Annotated[UUID, typer.Argument(help="Payment id (UUID).", show_default=False)],
    events: Annotated[bool, typer.Option("--events", help="Also show the audit history.")] = False,
    as_of_version: Annotated[
        int | None,
        typer.Option(
            "--as-of-version",
            help="Time travel: the payment as it was at this version (1 = as requested), "
            "rebuilt from its events; --events then lists the events up to it.",
            show_default=False,
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Show a payment (and, with --events, every event it recorded)."""
    with service() as svc:
        if as_of_version is None:
            payment = views.view_of_payment(svc, payment_id)
        else:
            payment = svc.get_payment_as_of_version(payment_id, as_of_version, cli_principal())
        history = svc.payment_events(payment_id, cli_principal()) if events else []
    if payment.as_of_version is not None:
        history = [e for e in history if e.version <= payment.as_of_version]
    if as_json:
        data = output.payment_json(payment) | time_travel_json(payment)
        if events:
            data["events"] = [output.event_json(e) for e in history]
        output.print_json(data)
        return
    if payment.as_of is not None:
        output.note(f"as of version {payment.as_of_version}, recorded {payment.as_of.isoformat()}")
    output.print_payment(payment)
    if events:
        output.print_events(history)


def time_travel_json(result: PaymentResult | AccountResult) -> dict[str, Any]:
    """``as_of_version`` and ``as_of`` as the HTTP API gives them: only on a past state."""
    if result.as_of_version is None or result.as_of is None:
        return {}
    return {"as_of_version": result.as_of_version, "as_of": result.as_of.isoformat()}


def pay(
    amount: Annotated[str, typer.Option(help="Decimal string, e.g. 12.34.", show_default=False)],
    currency: Annotated[str, typer.Option(help="ISO 4217 code.", show_default=False)],
    channel: Annotated[
        str,
        typer.Option(
            help="internal, card, alipay, wechat_pay or bank_transfer.", show_default=False
        ),
    ],
    payer_account: Annotated[
        UUID | None, typer.Option("--from", help="Payer account id.", show_default=False)
    ] = None,
    payee_account: Annotated[
        UUID | None, typer.Option("--to", help="Payee account id.", show_default=False)
    ] = None,
    card: Annotated[str | None, typer.Option(help="Card number (never printed).")] = None,
    expiry: Annotated[str | None, typer.Option("--exp", help="Card expiry MM/YYYY.")] = None,
    cvc: Annotated[str | None, typer.Option(help="Card security code.")] = None,
    wallet_payer: Annotated[str | None, typer.Option(help="Wallet payer id.")] = None,
    iban: Annotated[str | None, typer.Option(help="Payout beneficiary IBAN.")] = None,
    name: Annotated[str | None, typer.Option(help="Payout beneficiary name.")] = None,
    bic: Annotated[str | None, typer.Option(help="Payout beneficiary BIC.")] = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    key: Annotated[
        str | None, typer.Option(help="Idempotency key; a fresh UUID when omitted (printed).")
    ] = None,
    as_json: Json = False,
) -> None:
    key = key or str(uuid4())
    errors: list[FieldError] = []
    beneficiary = None
    if iban is not None or name is not None or bic is not None:
        beneficiary = BankBeneficiary(iban=iban or "", name=name or "", bic=bic)
    cmd = SubmitPayment(
        amount=amount,
        currency=currency,
        channel=channel,
        idempotency_key=key,
        payer_account_id=payer_account,
        payment_method=_method(channel, card, expiry, cvc, wallet_payer, errors),
        payee_account_id=payee_account,
        beneficiary=beneficiary,
        description=description,
    )
    _refuse(cmd, errors)
    with service() as svc:
        result = run(svc.submit_payment(cmd, cli_principal()))
    _print_result(result, key, as_json)
    raise typer.Exit(EXIT_OF_STATUS.get(result.status, EXIT_PAYMENT_EXCEPTION))


def _print_result(result: PaymentResult, key: str, as_json: bool) -> None:
    if as_json:
        output.print_json({**output.payment_json(result), "idempotency_key": key})
        return
    output.note(f"idempotency key: {key}")
    output.print_payment(result)
    sys.stdout.flush()
