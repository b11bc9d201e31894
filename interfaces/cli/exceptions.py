"""``payledger exceptions``: payments whose outcome is unknown (application/exceptions.py).

    payledger exceptions list [--json]                       the tenant's open exceptions
    payledger exceptions resolve [--until-done --timeout S]  a resolver pass (every tenant)
    payledger exceptions resolve PAYMENT_ID --outcome succeeded|failed --reason TEXT

A pass asks each payment's channel from this process: a sandbox channel knows only the charges
this process made, so it says "never seen" of the server's (they then fail
``not_received_by_channel`` once old enough). Point the channels at a provider or at
``payledger channel-sim`` (``PAYLEDGER_CHANNEL_<NAME>_URL``), or leave it to the server's resolver.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.table import Table

from application.channels.sandbox import SandboxChannel
from application.exceptions import ResolverPass
from domain.errors import FieldError, ValidationError
from domain.money import format_amount
from interfaces.cli import output, views
from interfaces.cli.errors import EXIT_PAYMENT_EXCEPTION
from interfaces.cli.principal import cli_principal
from interfaces.cli.runtime import run, service
from projections.exception_queries import ExceptionQueries, OpenException
from projections.queries import BadCursor
from projections.read_side import ReadSide

app = typer.Typer(
    help="Payments whose outcome is unknown: list them, have the channels asked, or resolve "
    "one by hand.",
    no_args_is_help=True,
)

Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]
OUTCOMES = ("succeeded", "failed")


def queries(read: ReadSide) -> ExceptionQueries:
    return ExceptionQueries(read.model.db, lambda: read.model.position("payments"))


def exception_json(x: OpenException, now: datetime) -> dict[str, Any]:
    """The fields of ``GET /v1/exceptions``."""
    return {
        "payment_id": str(x.payment_id), "kind": x.kind, "channel": x.channel,
        "amount": format_amount(x.amount_minor, x.currency), "currency": x.currency,
        "batch_id": x.batch_id, "code": x.code, "message": x.message,
        "created_at": x.created_at.isoformat(), "exception_since": x.since.isoformat(),
        "age_seconds": x.age_seconds(now), "flagged": x.flagged_at is not None,
        "flagged_at": x.flagged_at.isoformat() if x.flagged_at else None,
    }  # fmt: skip


@app.command("list")
def list_exceptions(
    channel: Annotated[str | None, typer.Option(help="card, alipay, wechat_pay, ...")] = None,
    flagged: Annotated[
        bool | None,
        typer.Option(
            "--flagged/--not-flagged",
            help="Only flagged, or only unflagged ones.",
            show_default=False,
        ),
    ] = None,
    limit: views.Limit = 50,
    cursor: views.Cursor = None,
    as_json: Json = False,
) -> None:
    """The tenant's payments in exception, oldest first, with their age."""
    with views.read_side() as read:
        try:
            page = queries(read).open_exceptions(
                cli_principal().tenant, channel=channel, flagged=flagged, limit=limit,
                cursor=cursor,
            )  # fmt: skip
        except BadCursor as e:
            raise ValidationError.single("cursor", str(e)) from e
    now = datetime.now(UTC)
    items = [exception_json(x, now) for x in page.items]
    if as_json:
        output.print_json(
            {"items": items, "next_cursor": page.next_cursor, "as_of_position": page.as_of_position}
        )
        return
    table = Table(title=f"Open exceptions (views at position {page.as_of_position})")
    for column in ("payment", "channel", "amount", "code", "age", "flagged", "batch"):
        table.add_column(column, no_wrap=column in ("payment", "amount"))
    for x in items:
        table.add_row(
            x["payment_id"], x["channel"], f"{x['amount']} {x['currency']}", x["code"] or "",
            _age(x["age_seconds"]), "yes" if x["flagged"] else "", x["batch_id"] or "",
        )  # fmt: skip
    output.console().print(table)
    if page.next_cursor:
        output.note(f"more: --cursor {page.next_cursor}")


def _age(seconds: int) -> str:
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s" if m else f"{s}s"


@app.command("resolve")
def resolve(
    payment_id: Annotated[
        UUID | None,
        typer.Argument(
            help="Resolve this payment by hand (with --outcome and --reason); "
            "without it, ask the channels about every open exception.",
            show_default=False,
        ),
    ] = None,
    outcome: Annotated[
        str | None, typer.Option(help="succeeded or failed (by hand).", show_default=False)
    ] = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (by hand): kept in the payment's history.")
    ] = None,
    channel_reference: Annotated[
        str | None, typer.Option(help="The channel's reference for the charge (by hand).")
    ] = None,
    until_done: Annotated[
        bool,
        typer.Option("--until-done", help="Keep asking, with back-off, until none is open."),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=0,
            max=86_400,
            help="With --until-done: give up after this "
            "many seconds (exit 7 if some are still open).",
        ),
    ] = 300.0,
    as_json: Json = False,
) -> None:
    """Resolve exceptions: one resolver pass over every tenant's open exceptions (printing
    what it found out), or one payment by hand with a reason (recorded with your user)."""
    if payment_id is not None:
        _resolve_by_hand(payment_id, outcome, reason, channel_reference, as_json)
        return
    given = [name for name, value in (("--outcome", outcome), ("--reason", reason),
             ("--channel-reference", channel_reference)) if value is not None]  # fmt: skip
    if given:
        raise ValidationError(
            [FieldError(name, "needs a PAYMENT_ID (a resolution by hand)") for name in given]
        )
    done = _passes(until_done, timeout, as_json)
    if as_json:
        output.print_json(done.counts())
    if until_done and done.open:
        raise typer.Exit(EXIT_PAYMENT_EXCEPTION)


def _resolve_by_hand(
    payment_id: UUID,
    outcome: str | None,
    reason: str | None,
    channel_reference: str | None,
    as_json: bool,
) -> None:
    errors = []
    if outcome not in OUTCOMES:
        errors.append(FieldError("--outcome", "give succeeded or failed", "required"))
    if reason is None:
        errors.append(FieldError("--reason", "is required: say why", "required"))
    if errors:
        raise ValidationError(errors)
    assert outcome is not None and reason is not None
    principal = cli_principal()
    with service() as svc:
        result = run(
            svc.exceptions.resolve_manually(
                principal.tenant,
                payment_id,
                outcome,
                reason,
                principal.actor,
                channel_reference=channel_reference,
            )
        )
    if as_json:
        output.print_json(output.payment_json(result))
    else:
        output.print_payment(result)


def _passes(until_done: bool, timeout_s: float, as_json: bool) -> ResolverPass:
    with service() as svc, views.read_side() as read:
        svc.exceptions.view = queries(read)
        sandboxed = sorted(n for n, c in svc.channels.items() if isinstance(c, SandboxChannel))
        if sandboxed:
            typer.echo(
                f"note: sandbox channels ({', '.join(sandboxed)}) know only the charges this "
                "process made", err=True,
            )  # fmt: skip

        def report(one: ResolverPass) -> None:
            if not as_json:
                output.note(_summary(one))

        if until_done:
            return run(
                svc.exceptions.run_until_done(
                    timeout_s, before_pass=read.catch_up, after_pass=report
                )
            )
        done = run(svc.exceptions.run_once())
        report(done)
        return done


def _summary(one: ResolverPass) -> str:
    return (
        f"resolved {one.succeeded} succeeded, {one.failed} failed; {one.open} still open, "
        f"{one.flagged} flagged for reconciliation ({one.asked} asked)"
    )
