"""The ``payledger`` command line: the server, and the application's commands run in-process on
the database the server uses (``PAYLEDGER_DATABASE_URL``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from domain.errors import ValidationError
from domain.money import format_amount
from interfaces.cli import (
    accounts,
    audit,
    batches,
    keys,
    output,
    payments,
    principal,
    reconcile,
    views,
)
from interfaces.cli import exceptions as exception_commands
from interfaces.cli import webhooks as webhook_commands
from interfaces.cli.channel_sim import channel_sim
from interfaces.cli.errors import EXIT_CODES_HELP, ErrorMappingGroup
from interfaces.cli.runtime import init_store, load_settings, run, service
from interfaces.cli.serve import LogLevel
from interfaces.cli.serve import serve as run_server


class PayledgerGroup(ErrorMappingGroup, TyperGroup):
    """The root group: every command's errors are mapped in interfaces/cli/errors.py."""


app = typer.Typer(
    name="payledger",
    cls=PayledgerGroup,
    help="Payledger: real-time payments on an event-sourced double-entry ledger.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Database set-up.", no_args_is_help=True)
ledger_app = typer.Typer(help="Ledger checks.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(accounts.app, name="accounts")
app.add_typer(payments.app, name="payments")
app.add_typer(batches.app, name="batches")
app.add_typer(ledger_app, name="ledger")
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(webhook_commands.app, name="webhooks")
app.add_typer(exception_commands.app, name="exceptions")
app.add_typer(reconcile.app, name="reconciliations")
app.command("reconcile")(reconcile.reconcile)
app.command("pay", help=payments.PAY_HELP)(payments.pay)
payments.app.command("list")(views.list_payments)
accounts.app.command("statement")(views.statement)
app.command("metrics")(views.metrics)
app.command("project")(views.project)
app.command("replay")(views.replay)
app.command("channel-sim")(channel_sim)

Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]


@app.callback()
def root(
    tenant: Annotated[
        str,
        typer.Option(
            "--tenant",
            envvar="PAYLEDGER_TENANT",
            help="The tenant the commands act for (as cli:<os user>).",
        ),
    ] = principal.DEFAULT_TENANT,
) -> None:
    principal.use_tenant(tenant)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes.")] = 1,
    log_level: Annotated[LogLevel, typer.Option(help="uvicorn log level.")] = LogLevel.info,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (costs ~15% of the request path).")
    ] = False,
) -> None:
    """Check the configuration and the database, create the tables, and serve the HTTP API.

    A bad setting or an unreachable database prints one line on stderr and exits with 2."""
    run_server(host, port, workers, log_level.value, access_log=access_log)


@db_app.command("init")
def db_init() -> None:
    """Create the schema and the event store's tables (serve does this too)."""
    store = init_store(load_settings())
    output.note(f"store ready: {store.describe()}")


@db_app.command("new-encryption-key")
def db_new_encryption_key() -> None:
    """Print a fresh key for PAYLEDGER_ENCRYPTION_KEY (32 random bytes, base64): keep it in
    your secret store; losing every copy of a key loses the events written under it."""
    from application.encryption import new_key

    typer.echo(new_key())


@ledger_app.command("check")
def ledger_check(as_json: Json = False) -> None:
    """Sum every posting per currency from the event log; exit 1 unless each sums to zero."""
    with service() as svc:
        trial = svc.trial_balance()
    rows = _trial_rows(trial)
    if as_json:
        output.print_json(rows)
    else:
        output.print_trial_balance(rows)
    if not all(row["balanced"] for row in rows):
        raise typer.Exit(1)


def _trial_rows(trial: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for currency, total_minor in sorted(trial["totals"].items()):
        try:
            total = format_amount(total_minor, currency)
        except ValidationError:  # an account that could not be loaded shows as currency "???"
            total = str(total_minor)
        rows.append({"currency": currency, "total": total, "balanced": total_minor == 0})
    return rows


@app.command()
def demo(as_json: Json = False) -> None:
    """Open accounts, fund them, and make one payment of every outcome (sandbox triggers)."""
    from interfaces.cli.demo import run_demo

    with service() as svc:
        rows = run(run_demo(svc))
    if as_json:
        output.print_json([{"scenario": s, **output.payment_json(p)} for s, p in rows])
    else:
        output.print_payments(rows, "Payledger demo: one payment of every outcome")


def main() -> None:
    app(prog_name="payledger")


if __name__ == "__main__":
    main()
