"""``payledger batches ...``: submit a payroll file, approve it (with a TOTP code), run it with a
live progress bar, and read its items and report."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import orjson
import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from application.batch_files.model import ParsedFile
from application.batches.files import file_sha256, parse_batch_file
from application.batches.handlers import SubmitBatch
from application.batches.results import BatchResult, DryRunResult
from application.commands import Principal
from application.service import Payledger
from domain.errors import Conflict, FieldError, ValidationError
from interfaces.cli import output
from interfaces.cli.principal import acting_as
from interfaces.cli.runtime import run, service
from interfaces.cli.views import read_side
from interfaces.http.batch_schemas import BatchItemOut, BatchOut, DryRunOut
from projections.batch_reports import csv_report, pain002_report

app = typer.Typer(help="Batch payments: payroll files, approval, progress, reports.",
                  no_args_is_help=True)  # fmt: skip

Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="PAYLEDGER_API_KEY",
        help="Act as this API key (pl_live_...) instead of cli:<os user>: approvals need an "
        "approver key with a second factor.",
    ),
]  # fmt: skip
BatchId = Annotated[UUID, typer.Argument(help="The batch id.")]
EXIT_FAILURES = 6  # the batch finished with failed or unknown items
EXIT_BATCH_FAILED = 7


def _out(result: BatchResult) -> dict[str, Any]:
    return BatchOut.of(result, datetime.now(UTC)).model_dump(mode="json")


@app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or pain.001")],
    funding_account: Annotated[
        UUID | None, typer.Option("--funding-account", help="Funding account id")
    ] = None,
    currency: Annotated[str | None, typer.Option(help="The batch's currency (CSV)")] = None,
    rules: Annotated[
        str | None, typer.Option(help='Rules as JSON, e.g. \'{"order": "amount_desc"}\'')
    ] = None,
    execution_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Default: derived from the file's SHA-256")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Predict; store nothing")] = False,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Validate a payroll file and store it as a batch awaiting approval (or --dry-run)."""
    data = file.read_bytes()
    parsed: ParsedFile = parse_batch_file(data)
    errors: list[FieldError] = []
    rule_values = _json_option(rules, "rules", errors)
    day = _date_option(execution_date, "execution_date", errors)
    if errors:
        raise ValidationError(errors)
    digest = file_sha256(data)
    command = SubmitBatch(
        parsed, idempotency_key or f"file-sha256:{digest[:64]}", funding_account, currency,
        rule_values, day, digest, dry_run,
    )  # fmt: skip
    with service() as svc:
        result = run(svc.batches.submit(command, acting_as(svc, api_key)))
    if isinstance(result, DryRunResult):
        _print_dry_run(result, as_json)
        return
    if as_json:
        output.print_json(_out(result))
        return
    _print_batch(result)
    for item in result.invalid_items[:20]:
        output.note(f"  item {item.index} ({item.end_to_end_id}) {item.reason_code}: {item.reason}")


@app.command("approve")
def approve(
    batch_id: BatchId,
    otp: Annotated[str | None, typer.Option("--otp", "--code", help="A fresh TOTP code")] = None,
    execute_now: Annotated[bool, typer.Option("--execute-now", help="Run at once")] = False,
    wait: Annotated[
        bool, typer.Option(help="Run the batch here with a progress bar if it is due")
    ] = True,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Approve a batch as a second person, with a code from your authenticator app."""
    with service() as svc:
        who = acting_as(svc, api_key)
        result = run(svc.batches.approve(batch_id, who, otp, execute_now=execute_now))
        if wait and result.status == "approved":
            result = _run_with_progress(svc, batch_id, quiet=as_json) or result
    _finish(result, as_json)


@app.command("reject")
def reject(
    batch_id: BatchId,
    reason: Annotated[str | None, typer.Option(help="Why")] = None,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Reject a batch awaiting approval."""
    with service() as svc:
        result = run(svc.batches.reject(batch_id, acting_as(svc, api_key), reason))
    _finish(result, as_json, exit_on_failure=False)


@app.command("cancel")
def cancel(
    batch_id: BatchId,
    reason: Annotated[str | None, typer.Option(help="Why")] = None,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Cancel a batch before it is released."""
    with service() as svc:
        result = run(svc.batches.cancel(batch_id, acting_as(svc, api_key), reason))
    _finish(result, as_json, exit_on_failure=False)


@app.command("status")
def status(
    batch_id: BatchId,
    watch: Annotated[bool, typer.Option("--watch", help="Follow until it finishes")] = False,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """A batch's status, counts, amounts and progress (--watch: a live progress bar)."""
    with service() as svc:
        who = acting_as(svc, api_key)
        result = svc.batches.get(batch_id, who)
        if watch and result.status in ("approved", "processing"):
            result = _watch(svc, batch_id, who, quiet=as_json)
    _finish(result, as_json, exit_on_failure=False)


@app.command("items")
def items(
    batch_id: BatchId,
    status_filter: Annotated[
        str | None, typer.Option("--status", help="pending|succeeded|failed|exception|invalid")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """A batch's items with their outcome, in file order."""
    with service() as svc:
        who = acting_as(svc, api_key)
        svc.batches.get(batch_id, who)  # ownership
    with read_side() as read:
        page = read.batches.items(who.tenant, batch_id, status=status_filter, limit=limit)
    rows = [BatchItemOut.of(i).model_dump(mode="json") for i in page.items]
    if as_json:
        output.print_json({"items": rows, "next_cursor": page.next_cursor})
        return
    table = Table(title=f"Batch {batch_id}: items")
    for column in ("index", "end_to_end_id", "amount", "beneficiary", "status", "reason"):
        table.add_column(column)
    for r in rows:
        reason = f"{r['reason_code'] or ''} {r['reason'] or ''}".strip()
        table.add_row(str(r["index"]), r["end_to_end_id"], f"{r['amount']} {r['currency']}",
                      r["beneficiary_name"] or r["payee_account_id"] or "",
                      r["status"], reason)  # fmt: skip
    output.console().print(table)


@app.command("report")
def report(
    batch_id: BatchId,
    format: Annotated[str, typer.Option("--format", help="csv or pain002")] = "csv",
    out: Annotated[Path, typer.Option("-o", "--output", help="Where to write it")] = Path("-"),
    version: Annotated[str, typer.Option(help="pain.002.001.10 or pain.002.001.03")] = (
        "pain.002.001.10"
    ),
    api_key: ApiKey = None,
) -> None:
    """Write the batch's report: CSV, or an ISO 20022 pain.002 status report."""
    if format not in ("csv", "pain002"):
        raise ValidationError.single("format", "must be csv or pain002", "invalid")
    if version not in ("pain.002.001.10", "pain.002.001.03"):
        raise ValidationError.single("version", "pain.002.001.10 or pain.002.001.03", "invalid")
    with service() as svc:
        batch = svc.batches.get(batch_id, acting_as(svc, api_key))
    with read_side() as read:
        rows = read.batches.all_items(batch_id)
        if format == "csv":
            data = "".join(csv_report(batch, rows)).encode()
        else:
            data = pain002_report(batch, rows, version)
    if str(out) == "-":
        typer.echo(data.decode(), nl=False)
    else:
        out.write_bytes(data)
        output.note(f"wrote {out} ({len(data)} bytes)")


@app.command("retry")
def retry(
    batch_id: BatchId,
    item: Annotated[
        list[str] | None, typer.Option("--item", help="An item index or end_to_end_id")
    ] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed item")] = False,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Retry failed items: each gets a new attempt (a new payment) linked to the original."""
    if not item and not all_failed:
        raise ValidationError.single("item", "give --item (repeatable) or --all-failed")
    with read_side() as read:
        failed = {i.index: i for i in read.batches.all_items(batch_id) if i.status == "failed"}
    by_e2e = {i.end_to_end_id: i for i in failed.values()}
    chosen = list(failed.values()) if all_failed else []
    for wanted in item or []:
        found = failed.get(int(wanted)) if wanted.isdigit() else by_e2e.get(wanted)
        if found is None:
            raise Conflict(f"item {wanted!r} is not a failed item of batch {batch_id}")
        chosen.append(found)
    with service() as svc:
        who = acting_as(svc, api_key)
        result = run(svc.batches.retry(batch_id, who, [(i.index, i.seq) for i in chosen]))
        result = _run_with_progress(svc, batch_id, quiet=as_json) or result
    _finish(result, as_json)


@app.command("run-due")
def run_due(as_json: Json = False) -> None:
    """Run every batch that is due (scheduled for today or earlier) or unfinished."""
    with service() as svc:
        results = run(svc.batch_runner.run_due())
    if as_json:
        output.print_json([_out(r) for r in results])
        return
    if not results:
        output.note("no batch is due")
    for result in results:
        _print_batch(result)


app.command("resume", help="Continue every batch a stopped process left unfinished "
            "(the same as run-due).")(run_due)  # fmt: skip


@app.command("list")
def list_batches(as_json: Json = False, api_key: ApiKey = None) -> None:
    """The tenant's batches, newest first."""
    with service() as svc:
        tenant = acting_as(svc, api_key).tenant
    with read_side() as read:
        page = read.batches.batches(tenant, limit=200)
    if as_json:
        output.print_json(page.items)
        return
    table = Table(title="Batches")
    for column in ("id", "status", "items", "succeeded", "failed", "exception", "format"):
        table.add_column(column)
    for r in page.items:
        table.add_row(r["batch_id"], r["status"], str(r["item_count"]), str(r["succeeded_count"]),
                      str(r["failed_count"]), str(r["exception_count"]), r["format"])  # fmt: skip
    output.console().print(table)


# --- helpers ------------------------------------------------------------------------------------


def _run_with_progress(svc: Payledger, batch_id: UUID, *, quiet: bool) -> BatchResult | None:
    if quiet:
        return run(svc.batch_runner.run(batch_id))
    with _progress_bar() as bar:
        task: TaskID | None = None

        def show(result: BatchResult) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task("paying", total=max(1, result.valid_item_count))
            bar.update(task, completed=result.processed_count, description=result.status)

        return run(svc.batch_runner.run(batch_id, show))


def _watch(svc: Payledger, batch_id: UUID, who: Principal, *, quiet: bool) -> BatchResult:
    result = svc.batches.get(batch_id, who)
    with _progress_bar(disable=quiet) as bar:
        task = bar.add_task(result.status, total=max(1, result.valid_item_count))
        while result.status in ("approved", "processing"):
            bar.update(task, completed=result.processed_count, description=result.status)
            time.sleep(0.5)
            result = svc.batches.get(batch_id, who)
        bar.update(task, completed=result.processed_count, description=result.status)
    return result


def _progress_bar(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(), console=output.console(), disable=disable,
    )  # fmt: skip


def _finish(result: BatchResult, as_json: bool, *, exit_on_failure: bool = True) -> None:
    if as_json:
        output.print_json(_out(result))
    else:
        _print_batch(result)
    if exit_on_failure and result.status == "failed":
        raise typer.Exit(EXIT_BATCH_FAILED)
    if exit_on_failure and result.status == "completed_with_failures":
        raise typer.Exit(EXIT_FAILURES)


def _print_batch(result: BatchResult) -> None:
    o = _out(result)
    table = Table(title=f"Batch {o['id']}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    rows: list[tuple[str, Any]] = [
        ("status", o["status"]), ("items", f"{o['item_count']} ({o['valid_item_count']} valid, "
                                          f"{o['invalid_item_count']} invalid)"),
        ("total", f"{o['control_sum']} {o['currency']}"),
        ("funding account", o["funding_account_id"]),
        ("counts", ", ".join(f"{k} {v}" for k, v in o["counts"].items())),
        ("progress", f"{o['progress']['processed']}/{o['progress']['total']} "
                     f"({o['progress']['percent']}%)"),
        ("maker / approver", f"{o['maker']} / {o['approved_by'] or '-'}"),
        ("T_b", f"{o['processing_time_ms']} ms" if o["processing_time_ms"] is not None else "-"),
    ]  # fmt: skip
    if o["failure_code"]:
        rows.append(("failure", f"{o['failure_code']}: {o['failure_message']}"))
    for name, value in rows:
        table.add_row(name, str(value))
    output.console().print(table)


def _print_dry_run(result: DryRunResult, as_json: bool) -> None:
    data = DryRunOut.of(result).model_dump(mode="json")
    if as_json:
        output.print_json(data)
        return
    output.note(
        f"dry run: the batch would be {data['status']}; predicted {data['predicted_counts']}; "
        f"total {data['control_sum']} {data['currency']}, available {data['available']}"
    )
    for p in data["items"]:
        if p["predicted"] != "succeeded":
            output.note(f"  item {p['index']} ({p['end_to_end_id']}): {p['predicted']} "
                        f"{p['reason_code'] or ''} {p['reason'] or ''}")  # fmt: skip


def _json_option(text: str | None, name: str, errors: list[FieldError]) -> dict[str, Any] | None:
    if text is None:
        return None
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        errors.append(FieldError(name, "must be a JSON object", "invalid"))
        return None
    return value


def _date_option(text: str | None, name: str, errors: list[FieldError]) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(FieldError(name, "must be YYYY-MM-DD", "invalid"))
        return None
