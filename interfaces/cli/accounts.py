"""``payledger accounts open|show|deposit|close``."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID, uuid4

import typer

from application.commands import CloseAccount, MakeDeposit, OpenAccount
from application.results import DepositResult
from interfaces.cli import output, views
from interfaces.cli.errors import EXIT_CODES_HELP, EXIT_PAYMENT_EXCEPTION
from interfaces.cli.payments import EXIT_OF_STATUS, time_travel_json
from interfaces.cli.principal import cli_principal
from interfaces.cli.runtime import run, service

app = typer.Typer(help="Open, inspect, fund and close ledger accounts.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]
AccountId = Annotated[UUID, typer.Argument(help="Account id (UUID).", show_default=False)]


@app.command("open")
def open_account(
    owner: Annotated[str, typer.Option(help="Owner name (1-200 characters).")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, e.g. CNY.")],
    kind: Annotated[
        str, typer.Option(help="customer, merchant, funding, clearing or external.")
    ] = "customer",
    overdraft_limit: Annotated[
        str, typer.Option(help="Decimal string in the currency, e.g. 100.00.")
    ] = "0",
    iban: Annotated[
        str | None,
        typer.Option(help="The bank account it stands for (a payroll file's debtor IBAN)."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Open an account."""
    cmd = OpenAccount(
        owner=owner, currency=currency, kind=kind, overdraft_limit=overdraft_limit, iban=iban
    )
    with service() as svc:
        account = run(svc.accounts.open(cmd, cli_principal()))
    if as_json:
        output.print_json(output.account_json(account))
    else:
        output.print_account(account)


@app.command("show")
def show_account(
    account_id: AccountId,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Time travel: the account as it was at this ISO 8601 time, e.g. "
            "2026-01-31T12:00:00Z (no offset: UTC), rebuilt from its events.",
            show_default=False,
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Show an account's balance, reservations and what is available."""
    with service() as svc:
        if as_of is None:
            account = views.view_of_account(svc, account_id)
        else:
            account = svc.get_account_as_of(account_id, as_of, cli_principal())
    if as_json:
        output.print_json(output.account_json(account) | time_travel_json(account))
        return
    if account.as_of is not None:
        output.note(f"as of {account.as_of.isoformat()} (version {account.as_of_version})")
    output.print_account(account)


DEPOSIT_HELP = f"""Credit an account from the external funding source (a ledger entry).

\b
Exit status: 0 succeeded, 6 failed (e.g. the account is closed).
{EXIT_CODES_HELP}
"""


@app.command("deposit", help=DEPOSIT_HELP)
def deposit(
    account_id: AccountId,
    amount: Annotated[str, typer.Argument(help="Decimal string, e.g. 1000.00.")],
    key: Annotated[
        str | None,
        typer.Option(help="Idempotency key; a fresh UUID when omitted (printed)."),
    ] = None,
    as_json: Json = False,
) -> None:
    key = key or str(uuid4())
    with service() as svc:
        result = run(svc.accounts.deposit(MakeDeposit(account_id, amount, key), cli_principal()))
    _print_deposit(result, key, as_json)
    if result.payment.status != "succeeded":  # refused (a closed account): exits as `pay` does
        raise typer.Exit(EXIT_OF_STATUS.get(result.payment.status, EXIT_PAYMENT_EXCEPTION))


def _print_deposit(result: DepositResult, key: str, as_json: bool) -> None:
    if as_json:
        # The HTTP API's deposit shape: the payment, then the account it credited.
        output.print_json(
            {
                **output.payment_json(result.payment),
                "account_id": str(result.account.id),
                "balance": output.account_json(result.account)["balance"],
                "account": output.account_json(result.account),
                "idempotency_key": key,
            }
        )
        return
    output.note(f"idempotency key: {key}")
    output.print_payment(result.payment)
    output.print_account(result.account)


@app.command("close")
def close_account(account_id: AccountId, as_json: Json = False) -> None:
    """Close an account (refused while it holds money or reservations)."""
    with service() as svc:
        account = run(svc.accounts.close(CloseAccount(account_id), cli_principal()))
    if as_json:
        output.print_json(output.account_json(account))
    else:
        output.print_account(account)
