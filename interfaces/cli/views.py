"""Read-side commands: search payments, statements, metrics, and running or rebuilding the views.

Each query first brings the views up to the log's end on this process (a server's follower may
be doing the same: the tracking rows keep them from counting anything twice)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.table import Table

from application.app import PayledgerApp
from application.encryption import EncryptionKeyError, check_readable, cipher_env
from application.results import AccountResult, PaymentResult
from application.service import Payledger
from domain.errors import AccountNotFound, FieldError, PaymentNotFound, ValidationError
from domain.money import format_amount, parse_amount
from interfaces.cli import output
from interfaces.cli.errors import ConfigError
from interfaces.cli.principal import cli_principal
from interfaces.cli.runtime import check_store, create_tables_allowed, load_settings
from projections.queries import BadCursor, Page, PaymentFilter
from projections.read_side import ReadSide
from projections.replay import rebuild, verify
from projections.runner import PROJECTIONS, Follower

Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]
Limit = Annotated[int, typer.Option(min=1, max=500, help="Items per page.")]
Cursor = Annotated[str | None, typer.Option(help="`next_cursor` of the previous page.")]
EXIT_DIFFERENT = 1


@contextmanager
def read_side(*, catch_up: bool = True) -> Iterator[ReadSide]:
    settings = load_settings()
    store = settings.store
    check_store(store)
    create = create_tables_allowed()
    if create:
        store.prepare()
    # The views decode the events: with encryption at rest they need the keys.
    app = PayledgerApp(env=store.eventsourcing_env(create_table=create) | cipher_env(settings))
    try:
        check_readable(app)
    except EncryptionKeyError as e:
        app.close()
        raise ConfigError(str(e)) from e
    read = ReadSide(app, store, follow=False, create_tables=create)
    try:
        if catch_up:
            read.catch_up()
        yield read
    finally:
        read.close()
        app.close()


def _when(text: str | None, field: str) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError as e:
        raise ValidationError.single(field, "is not an ISO 8601 date-time") from e
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def list_payments(
    status: Annotated[
        str | None, typer.Option(help="processing|succeeded|failed|exception")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="internal, card, alipay, ...")] = None,
    payer: Annotated[UUID | None, typer.Option(help="Payer account id.")] = None,
    payee: Annotated[UUID | None, typer.Option(help="Payee account id.")] = None,
    batch: Annotated[str | None, typer.Option(help="Batch id.")] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code.")] = None,
    created_from: Annotated[str | None, typer.Option("--from", help="ISO 8601, inclusive.")] = None,
    created_to: Annotated[str | None, typer.Option("--to", help="ISO 8601, exclusive.")] = None,
    amount_min: Annotated[
        str | None, typer.Option(help="Decimal string; needs --currency.")
    ] = None,
    amount_max: Annotated[
        str | None, typer.Option(help="Decimal string; needs --currency.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    as_json: Json = False,
) -> None:
    """Search payments in the payments view, newest first."""
    if status is not None and status not in ("processing", "succeeded", "failed", "exception"):
        raise ValidationError.single("status", "must be processing, succeeded, failed or exception")
    bounds: list[int | None] = [None, None]
    for i, (name, text) in enumerate((("amount_min", amount_min), ("amount_max", amount_max))):
        if text is not None:
            if currency is None:
                raise ValidationError(FieldError("currency", "is required with --amount-min/max"))
            bounds[i] = parse_amount(text, currency.upper(), field=name)
    filters = PaymentFilter(
        status=status,
        channel=channel,
        payer=payer and str(payer),
        payee=payee and str(payee),
        batch=batch,
        currency=currency and currency.upper(),
        created_from=_when(created_from, "from"),
        created_to=_when(created_to, "to"),
        amount_min_minor=bounds[0],
        amount_max_minor=bounds[1],
    )
    with read_side() as read:
        try:
            page = read.model.payments(cli_principal().tenant, filters, limit=limit, cursor=cursor)
        except BadCursor as e:
            raise ValidationError.single("cursor", str(e)) from e
    if as_json:
        output.print_json(_page_json(page, [output.payment_json(p) for p in page.items]))
        return
    table = Table(title=f"Payments (as of position {page.as_of_position})")
    for column in ("id", "status", "amount", "currency", "channel", "failure", "created_at"):
        table.add_column(column)
    for p in page.items:
        table.add_row(
            str(p.id),
            p.status,
            format_amount(p.amount_minor, p.currency),
            p.currency,
            p.channel,
            p.failure_code or "",
            p.created_at.isoformat(),
        )
    output.console().print(table)
    if page.next_cursor:
        output.note(f"next page: --cursor {page.next_cursor}")


def statement(
    account_id: Annotated[UUID, typer.Argument(help="Account id.")],
    limit: Limit = 100,
    cursor: Cursor = None,
    as_json: Json = False,
) -> None:
    """An account's statement: every posting with the balance after it, oldest first."""
    with read_side() as read:
        account = read.model.account(cli_principal().tenant, account_id)
        try:
            tenant = cli_principal().tenant
            page = read.model.entries(tenant, account_id, limit=limit, cursor=cursor)
        except BadCursor as e:
            raise ValidationError.single("cursor", str(e)) from e
    if account is None or page is None:
        raise AccountNotFound(f"account {account_id} does not exist")
    cur = account.currency
    lines = [
        {
            "version": e["version"],
            "entry_id": e["entry_id"],
            "payment_id": e["payment_id"],
            "amount": _signed(e["amount_minor"], cur),
            "balance_after": _signed(e["balance_after_minor"], cur),
            "at": e["at"].isoformat(),
            "position": e["position"],
        }
        for e in page.items
    ]
    if as_json:
        body = {
            "account_id": str(account_id),
            "currency": cur,
            "balance": _signed(account.balance_minor, cur),
        }
        output.print_json(body | _page_json(page, lines))
        return
    table = Table(title=f"Statement of {account_id} ({cur})")
    for column in ("version", "at", "payment", "amount", "balance after"):
        table.add_column(
            column, justify="right" if column in ("amount", "balance after") else "left"
        )
    for line in lines:
        table.add_row(
            str(line["version"]),
            line["at"],
            line["payment_id"],
            line["amount"],
            line["balance_after"],
        )
    output.console().print(table)
    if page.next_cursor:
        output.note(f"next page: --cursor {page.next_cursor}")


def _signed(amount_minor: int, currency: str) -> str:
    text = format_amount(abs(amount_minor), currency)
    return "-" + text if amount_minor < 0 else text


def _page_json(page: Page, items: list[Any]) -> dict[str, Any]:
    return {"items": items, "next_cursor": page.next_cursor, "as_of_position": page.as_of_position}


def metrics(
    start: Annotated[
        str | None, typer.Option("--from", help="ISO 8601 (default: --to - 1h).")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO 8601 (default: now).")] = None,
    channel: Annotated[str | None, typer.Option(help="One channel only.")] = None,
    bucket: Annotated[str, typer.Option(help="minute, hour or day (the series).")] = "minute",
    as_json: Json = False,
) -> None:
    """Success rate S, counts by outcome and latency percentiles, per channel (from the views)."""
    if bucket not in ("minute", "hour", "day"):
        raise ValidationError.single("bucket", "must be minute, hour or day")
    until = _when(end, "to") or datetime.now(UTC)
    since = _when(start, "from") or until - timedelta(hours=1)
    if since >= until:
        raise ValidationError.single("from", "must be before --to")
    with read_side() as read:
        tenant = cli_principal().tenant
        result = read.model.metrics(tenant, since, until, channel=channel, bucket=bucket)
    if as_json:
        output.print_json(result)
        return
    table = Table(title=f"Payments requested {since.isoformat()} .. {until.isoformat()}")
    for column in (
        "channel",
        "total",
        "succeeded",
        "failed",
        "exception",
        "processing",
        "S",
        "p50 ms",
        "p95 ms",
        "p99 ms",
    ):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for row in [*result["channels"], {"channel": "all", **result["totals"]}]:
        rate = row["success_rate"]
        lat = row["latency_ms"]
        table.add_row(
            row["channel"],
            *(str(row[k]) for k in ("total", "succeeded", "failed", "exception", "processing")),
            "-" if rate is None else f"{rate * 100:.2f}%",
            *("-" if lat[q] is None else str(lat[q]) for q in ("p50", "p95", "p99")),
        )
    output.console().print(table)
    output.note(f"as of log position {result['as_of_position']}")


def project(
    follow: Annotated[bool, typer.Option("--follow", help="Keep following new events.")] = False,
) -> None:
    """Bring the views up to date; with --follow keep them so (a projection process: run one
    beside API workers started with PAYLEDGER_PROJECTIONS=off). SIGTERM/SIGINT stop it."""
    with read_side(catch_up=False) as read:
        if not follow:
            processed = read.catch_up()
            output.note(f"processed {processed} events; views at position {read.runner.position}")
            return
        follower = Follower(read.runner)
        stop = follower.stop_event
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        output.note("following the event log (Ctrl-C to stop)")
        follower.run_forever()
        follower.leadership.release()


def replay(
    projection: Annotated[
        list[str] | None,
        typer.Option("--projection", help=f"One of {', '.join(PROJECTIONS)}; repeatable."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--verify", help="Rebuild into scratch space and compare instead.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Rebuild views from position 0 into fresh tables and swap them in (reports events/s);
    with --verify, compare a scratch rebuild with the live views row by row (exit 1 on any
    difference)."""
    names = projection or list(PROJECTIONS)
    unknown = [n for n in names if n not in PROJECTIONS]
    if unknown:
        raise ValidationError.single(
            "projection", f"unknown {unknown}: choose from {', '.join(PROJECTIONS)}"
        )
    with read_side(catch_up=check) as read:
        if check:
            report = verify(read.app, read.runner.db.store, names)
            body = {
                "ok": report.ok,
                "projections": names,
                "position": report.position,
                "rows_compared": report.rows_compared,
                "differences": report.differences,
            }
            if as_json:
                output.print_json(body)
            else:
                output.note(f"compared {report.rows_compared} rows at position {report.position}")
                for line in report.differences:
                    output.note(f"DIFFERENT {line}")
                output.note("views match the events" if report.ok else "views DIFFER")
            if not report.ok:
                raise typer.Exit(EXIT_DIFFERENT)
            return
        rebuilt = rebuild(read.app, read.runner.db.store, names)
    body = {
        "projections": names,
        "events": rebuilt.events,
        "seconds": round(rebuilt.seconds, 3),
        "events_per_s": round(rebuilt.events_per_s),
        "position": rebuilt.position,
    }
    if as_json:
        output.print_json(body)
    else:
        output.note(
            f"rebuilt {', '.join(names)} from {rebuilt.events} events in {rebuilt.seconds:.2f} s "
            f"({rebuilt.events_per_s:,.0f} events/s); swapped in at position {rebuilt.position}"
        )


def view_of_payment(svc: Payledger, payment_id: UUID) -> PaymentResult:
    """The payment from the payments view, brought up to date first."""
    read = ReadSide(svc.app, svc.settings.store, create_tables=create_tables_allowed())
    try:
        read.catch_up()
        found = read.model.payment(cli_principal().tenant, payment_id)
    finally:
        read.close()
    if found is None:
        raise PaymentNotFound(f"payment {payment_id} does not exist")
    return found


def view_of_account(svc: Payledger, account_id: UUID) -> AccountResult:
    """The account from the accounts view, brought up to date first."""
    read = ReadSide(svc.app, svc.settings.store, create_tables=create_tables_allowed())
    try:
        read.catch_up()
        found = read.model.account(cli_principal().tenant, account_id)
    finally:
        read.close()
    if found is None:
        raise AccountNotFound(f"account {account_id} does not exist")
    return found
