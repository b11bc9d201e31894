"""``payledger reconcile --channel alipay FILE``: match a channel statement against the ledger and
print the summary table; ``payledger reconciliations ...``: list runs, show one, its items (by
category) and CSV export, and decide discrepancies."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.table import Table

from application.commands import Principal
from application.reconciliation.runs import (
    CHANNELS_RECONCILED,
    ReconciliationNotFound,
    StartReconciliation,
    period_of,
)
from application.reconciliation.statements import read_statement, sniff_format
from domain.errors import ValidationError
from domain.reconciliations import CATEGORIES
from interfaces.cli import output
from interfaces.cli.batches import ApiKey, Json
from interfaces.cli.principal import acting_as
from interfaces.cli.runtime import run, service
from interfaces.cli.views import read_side
from interfaces.http.reconciliation_schemas import ReconciliationItemOut, ReconciliationOut
from projections.read_side import ReadSide
from projections.reconciliation_matching import matcher_factory
from projections.reconciliation_queries import csv_export

app = typer.Typer(help="Reconciliation runs: summaries, items, CSV export, decisions.",
                  no_args_is_help=True)  # fmt: skip

RunId = Annotated[UUID, typer.Argument(help="The reconciliation run's id.")]
Index = Annotated[int, typer.Argument(min=0, help="The item's index in the run.")]
EXIT_DISCREPANCIES = 6  # --fail-on-discrepancy: the run found something to look at


def reconcile(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or camt.053")],
    channel: Annotated[
        str, typer.Option("--channel", help=f"One of {', '.join(CHANNELS_RECONCILED)}")
    ],
    period_start: Annotated[
        str | None, typer.Option(help="YYYY-MM-DD; default: the statement's first booking date")
    ] = None,
    period_end: Annotated[
        str | None, typer.Option(help="YYYY-MM-DD (inclusive); default: its last booking date")
    ] = None,
    tolerance_days: Annotated[
        int, typer.Option(min=0, max=31, help="Booking date vs completion, matching by our id")
    ] = 1,
    timing_window_minutes: Annotated[
        int,
        typer.Option(
            min=0,
            max=1440,
            help="Payments this close to the period's end are "
            "expected in the next statement (timing)",
        ),
    ] = 10,
    fail_on_discrepancy: Annotated[
        bool, typer.Option("--fail-on-discrepancy", help=f"Exit {EXIT_DISCREPANCIES} if any")
    ] = False,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Match a channel's settlement statement with the ledger and print the summary per
    category (the same file again shows its earlier run)."""
    sha256, size, head = _digest(file)
    file_format = sniff_format(head)

    def scan() -> Any:
        with file.open("rb") as f:
            yield from read_statement(f, format=file_format)

    start, end = period_of(period_start, period_end, scan)
    cmd = StartReconciliation(
        channel=channel, period_start=start, period_end=end, file_sha256=sha256,
        file_name=file.name[:255], file_format=file_format, file_size=size,
        tolerance_days=tolerance_days, timing_window_minutes=timing_window_minutes,
    )  # fmt: skip
    with service() as svc, read_side() as read, file.open("rb") as stream:
        who = acting_as(svc, api_key)

        def lines() -> Any:
            stream.seek(0)
            return read_statement(stream, format=file_format)

        result = run(svc.reconciliations.run(cmd, who, lines, matcher_factory(read.model.db.store)))
        out = _run_out(read, who, result.id)
    if as_json:
        output.print_json({**out.model_dump(mode="json"), "replayed": result.replayed})
    else:
        if result.replayed:
            output.note("This statement was reconciled before: its earlier run.")
        _print_run(out)
    if fail_on_discrepancy and out.discrepancy_count:
        raise typer.Exit(EXIT_DISCREPANCIES)


@app.command("list")
def list_runs(
    channel: Annotated[str | None, typer.Option(help="Only this channel's runs")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """The tenant's runs, newest first."""
    with service() as svc:
        who = acting_as(svc, api_key)
    with read_side() as read:
        page = read.reconciliations.runs(who.tenant, channel=channel, limit=limit)
    runs = [ReconciliationOut.of_row(r) for r in page.items]
    if as_json:
        output.print_json({"items": [r.model_dump(mode="json") for r in runs],
                           "next_cursor": page.next_cursor})  # fmt: skip
        return
    table = Table(title="Reconciliations")
    for column in ("id", "channel", "period", "status", "lines", "matched", "discrepancies"):
        table.add_column(column)
    for r in runs:
        table.add_row(r.id, r.channel, f"{r.period_start}..{r.period_end}", r.status,
                      str(r.line_count or 0), str(r.summary["matched"].count),
                      str(r.discrepancy_count))  # fmt: skip
    output.console().print(table)


@app.command("show")
def show(run_id: RunId, api_key: ApiKey = None, as_json: Json = False) -> None:
    """One run: its summary per category and the balances."""
    with service() as svc:
        who = acting_as(svc, api_key)
    with read_side() as read:
        out = _run_out(read, who, run_id)
    if as_json:
        output.print_json(out.model_dump(mode="json"))
    else:
        _print_run(out)


@app.command("items")
def items(
    run_id: RunId,
    category: Annotated[str | None, typer.Option(help=" | ".join(CATEGORIES))] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """A run's items, in result order (--category to see one kind of discrepancy)."""
    if category is not None and category not in CATEGORIES:
        raise ValidationError.single("category", f"must be one of {', '.join(CATEGORIES)}")
    with service() as svc:
        who = acting_as(svc, api_key)
    with read_side() as read:
        _run_out(read, who, run_id)
        page = read.reconciliations.items(who.tenant, run_id, category=category, limit=limit)
    rows = [ReconciliationItemOut.of_row(i) for i in page.items]
    if as_json:
        output.print_json({"items": [r.model_dump(mode="json") for r in rows],
                           "next_cursor": page.next_cursor})  # fmt: skip
        return
    table = Table(title=f"Reconciliation {run_id}: items")
    for column in ("#", "category", "line", "payment", "statement", "ledger", "detail", "decision"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r.index), r.category, "" if r.line_no is None else str(r.line_no),
            ";".join(r.payment_ids)[:40], f"{r.statement_amount or ''} {r.statement_status or ''}",
            f"{r.ledger_amount or ''} {r.ledger_status or ''}", r.detail or "", r.decision or "",
        )  # fmt: skip
    output.console().print(table)


@app.command("export")
def export(
    run_id: RunId,
    out: Annotated[Path, typer.Option("-o", "--output", help="Where to write it")] = Path("-"),
    category: Annotated[str | None, typer.Option(help="Only this category")] = None,
    api_key: ApiKey = None,
) -> None:
    """Every item of a run as CSV."""
    with service() as svc:
        who = acting_as(svc, api_key)
    with read_side() as read:
        _run_out(read, who, run_id)
        chunks = csv_export(read.reconciliations.all_items(run_id, category))
        if str(out) == "-":
            for chunk in chunks:
                typer.echo(chunk.decode(), nl=False)
            return
        with out.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
    output.note(f"Wrote {out}")


@app.command("annotate")
def annotate(
    run_id: RunId, index: Index,
    note: Annotated[str, typer.Option("--note", help="What was found")],
    api_key: ApiKey = None, as_json: Json = False,
) -> None:  # fmt: skip
    """Note something on an item (an event with you as its actor)."""
    _decide(run_id, index, api_key, as_json, "annotate", note)


@app.command("accept")
def accept(
    run_id: RunId, index: Index,
    reason: Annotated[str, typer.Option("--reason", help="Why the statement is right")],
    api_key: ApiKey = None, as_json: Json = False,
) -> None:  # fmt: skip
    """Propose the correcting entry that makes the ledger agree (someone else approves)."""
    _decide(run_id, index, api_key, as_json, "accept", reason)


@app.command("approve")
def approve(run_id: RunId, index: Index, api_key: ApiKey = None, as_json: Json = False) -> None:
    """Approve another person's proposed correcting entry: it is posted."""
    _decide(run_id, index, api_key, as_json, "approve", None)


@app.command("resolve-exception")
def resolve_exception(
    run_id: RunId, index: Index,
    reason: Annotated[str, typer.Option("--reason", help="Why")],
    outcome: Annotated[
        str | None, typer.Option(help="succeeded | failed (default: what the statement says)")
    ] = None,
    api_key: ApiKey = None, as_json: Json = False,
) -> None:  # fmt: skip
    """Resolve the exception payment an item is about, from the statement."""
    if outcome is not None and outcome not in ("succeeded", "failed"):
        raise ValidationError.single("outcome", "must be succeeded or failed")
    _decide(run_id, index, api_key, as_json, "resolve", reason, outcome)


def _decide(
    run_id: UUID, index: int, api_key: str | None, as_json: bool, action: str,
    text: str | None, outcome: str | None = None,
) -> None:  # fmt: skip
    if text is not None and not 0 < len(text) <= 500:
        raise ValidationError.single("reason", "must be 1 to 500 characters")
    with service() as svc, read_side() as read:
        who = acting_as(svc, api_key)
        out = _run_out(read, who, run_id)
        item = read.reconciliations.item(who.tenant, run_id, index)
        if item is None:
            raise ReconciliationNotFound(f"reconciliation {run_id} has no item {index}")
        if action == "annotate":
            run(svc.commit("reconciliations", "decide_annotate", run_id, index, text, who))
        elif action == "accept":
            assert text is not None
            run(svc.reconciliations.propose_correction(run_id, index, item, out.channel, text, who))
        elif action == "approve":
            run(svc.commit("reconciliations", "decide_approve", run_id, index, who))
        else:
            assert text is not None
            run(svc.reconciliations.resolve_item_exception(run_id, index, item, outcome, text, who))
        read.catch_up()
        after = read.reconciliations.item(who.tenant, run_id, index)
    assert after is not None
    row = ReconciliationItemOut.of_row(after)
    if as_json:
        output.print_json(row.model_dump(mode="json"))
    else:
        output.note(f"Item {index}: {row.category}, decision {row.decision}")


# --- helpers -------------------------------------------------------------------------------------


def _run_out(read: ReadSide, who: Principal, run_id: UUID) -> ReconciliationOut:
    read.catch_up()
    row = read.reconciliations.run(who.tenant, run_id)
    if row is None:
        raise ReconciliationNotFound(f"reconciliation {run_id} does not exist")
    return ReconciliationOut.of_row(row)


def _print_run(out: ReconciliationOut) -> None:
    currency = out.currency or ""
    table = Table(title=f"Reconciliation {out.id} ({out.channel}, {out.period_start}.."
                  f"{out.period_end}, {out.line_count} lines)")  # fmt: skip
    table.add_column("category")
    table.add_column("count", justify="right")
    table.add_column(f"amount {currency}".strip(), justify="right")
    for category, total in out.summary.items():
        table.add_row(category, str(total.count), total.amount)
    output.console().print(table)
    balances = out.balances
    if "statement_net_settled" in balances:
        output.note(
            f"Statement net settled {balances['statement_net_settled']} {currency}; ledger "
            f"expected {balances.get('ledger_expected_net')}; difference "
            f"{balances.get('difference')}."
        )
    for key in ("statement_opening_balance", "statement_closing_balance"):
        if key in balances:
            output.note(f"{key.replace('_', ' ').capitalize()}: {balances[key]} {currency}")


def _digest(file: Path) -> tuple[str, int, bytes]:
    digest, size, head = hashlib.sha256(), 0, b""
    with file.open("rb") as f:
        while block := f.read(1 << 20):
            head = head or block[:1024]
            digest.update(block)
            size += len(block)
    if size == 0:
        raise ValidationError.single("file", "the statement file is empty", "empty")
    return digest.hexdigest(), size, head
