"""Reconciliation: import a channel statement (CSV or camt.053) and match it against the ledger;
read runs and their items (by category, or all as CSV); decide discrepancies: annotate,
resolve the linked exception payment, or accept with a correcting entry a second person
approves."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import IO, Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from application.commands import Principal
from application.reconciliation.runs import (
    CHANNELS_RECONCILED,
    ReconciliationNotFound,
    ReconciliationResult,
    StartReconciliation,
    period_of,
)
from application.reconciliation.statements import read_statement, sniff_format
from domain.errors import FieldError, ValidationError
from interfaces.http.authz import Allow, Permission
from interfaces.http.deps import service
from interfaces.http.reconciliation_schemas import (
    AcceptIn,
    AnnotateIn,
    Category,
    ReconciliationItemOut,
    ReconciliationItemsOut,
    ReconciliationListOut,
    ReconciliationOut,
    ResolveExceptionIn,
)
from interfaces.http.routes._responses import auth_problems, mark_position
from interfaces.http.routes.queries import Cursor, read_side
from projections.queries import BadCursor
from projections.read_side import ReadSide
from projections.reconciliation_matching import matcher_factory
from projections.reconciliation_queries import csv_export

router = APIRouter(prefix="/v1/reconciliations", tags=["reconciliations"])

VIEWS_CATCH_UP_S = 60.0  # how long an import waits for the views to reach the log's end
HASH_BLOCK = 1 << 20
RunId = Annotated[UUID, Path(description="The reconciliation run's id")]
ItemIndex = Annotated[int, Path(ge=0, le=10**9, description="The item's index in the run")]


@router.post(
    "",
    status_code=201,
    summary="Reconcile a channel statement (CSV or camt.053) against the ledger",
    response_model=ReconciliationOut,
    responses={
        200: {
            "model": ReconciliationOut,
            "description": "This statement (same file hash) was imported before: its run",
        },
        **auth_problems(400, 409, 413, 415, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["channel", "file"],
                        "properties": {
                            "channel": {"type": "string", "enum": list(CHANNELS_RECONCILED)},
                            "period_start": {
                                "type": "string",
                                "format": "date",
                                "description": "Default: the statement's first booking date",
                            },
                            "period_end": {
                                "type": "string",
                                "format": "date",
                                "description": "Inclusive. Default: its last booking date",
                            },
                            "file": {"type": "string", "format": "binary"},
                            "tolerance_days": {"type": "integer", "minimum": 0, "maximum": 31},
                            "timing_window_minutes": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 1440,
                            },
                        },
                    }
                }
            },
        }
    },
)
async def start_reconciliation(
    request: Request,
    response: Response,
    principal: Principal = Allow(Permission.RECONCILIATION_DECIDE),
) -> ReconciliationOut:
    """Matches every statement line with the ledger's payments of that channel: by the
    channel's reference, then by our payment id (amount, currency and booking date within
    `tolerance_days`). The same file imported again answers its earlier run (200)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ValidationError.single(
            "Content-Type", "send multipart/form-data with the statement as 'file'", "unsupported"
        )
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ValidationError.single("file", "attach the statement as the field 'file'", "missing")
    errors: list[FieldError] = []
    channel = _text(form.get("channel"), "channel", errors)
    tolerance = _int(form.get("tolerance_days"), "tolerance_days", 1, errors)
    window = _int(form.get("timing_window_minutes"), "timing_window_minutes", 10, errors)
    if errors:
        raise ValidationError(errors)
    assert channel is not None
    stream: IO[bytes] = upload.file
    sha256, size, head = await asyncio.to_thread(_digest, stream)
    file_format = sniff_format(head)

    def lines() -> Any:
        stream.seek(0)
        return read_statement(stream, format=file_format)

    start, end = await asyncio.to_thread(
        period_of, _optional(form.get("period_start")), _optional(form.get("period_end")), lines
    )
    cmd = StartReconciliation(
        channel=channel, period_start=start, period_end=end, file_sha256=sha256,
        file_name=(upload.filename or "")[:255] or None, file_format=file_format,
        file_size=size, tolerance_days=tolerance, timing_window_minutes=window,
    )  # fmt: skip
    result = await run_reconciliation(request, cmd, principal, stream)
    if result.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    mark_position(response, request)
    return ReconciliationOut.of_result(result)


async def run_reconciliation(
    request: Request, cmd: StartReconciliation, principal: Principal, stream: IO[bytes]
) -> ReconciliationResult:
    read = read_side(request)
    # Match against everything recorded before the import: let the views catch up first.
    for projection in ("payments", "accounts"):
        await asyncio.to_thread(read.consistent, projection, VIEWS_CATCH_UP_S)

    def lines() -> Any:
        stream.seek(0)
        return read_statement(stream, format=cmd.file_format)

    return await service(request).reconciliations.run(
        cmd, principal, lines, matcher_factory(read.model.db.store)
    )


@router.get(
    "", summary="List the tenant's reconciliation runs", response_model=ReconciliationListOut,
    responses=auth_problems(422, 503),
)  # fmt: skip
async def list_reconciliations(
    request: Request,
    principal: Principal = Allow(Permission.RECONCILIATION_READ),
    channel: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> ReconciliationListOut:
    read = read_side(request)
    await asyncio.to_thread(read.consistent, "reconciliations")
    try:
        page = await asyncio.to_thread(
            read.reconciliations.runs, principal.tenant, channel=channel, limit=limit,
            cursor=cursor,
        )  # fmt: skip
    except BadCursor as e:
        raise ValidationError.single("cursor", str(e), "invalid_cursor") from e
    return ReconciliationListOut(
        items=[ReconciliationOut.of_row(r) for r in page.items],
        next_cursor=page.next_cursor, as_of_position=page.as_of_position,
    )  # fmt: skip


@router.get(
    "/{reconciliation_id}", summary="One reconciliation run: summary and balances",
    response_model=ReconciliationOut, responses=auth_problems(404, 422, 503),
)  # fmt: skip
async def get_reconciliation(
    request: Request,
    reconciliation_id: RunId,
    principal: Principal = Allow(Permission.RECONCILIATION_READ),
) -> ReconciliationOut:
    read = read_side(request)
    await asyncio.to_thread(read.consistent, "reconciliations")
    row = await asyncio.to_thread(read.reconciliations.run, principal.tenant, reconciliation_id)
    if row is None:
        raise ReconciliationNotFound(f"reconciliation {reconciliation_id} does not exist")
    return ReconciliationOut.of_row(row)


@router.get(
    "/{reconciliation_id}/items", summary="A run's result items, by category",
    response_model=ReconciliationItemsOut, responses=auth_problems(404, 422, 503),
)  # fmt: skip
async def list_items(
    request: Request,
    reconciliation_id: RunId,
    principal: Principal = Allow(Permission.RECONCILIATION_READ),
    category: Annotated[Category | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
) -> ReconciliationItemsOut:
    read = await _existing_run(request, principal, reconciliation_id)
    try:
        page = await asyncio.to_thread(
            read.reconciliations.items, principal.tenant, reconciliation_id, category=category,
            limit=limit, cursor=cursor,
        )  # fmt: skip
    except BadCursor as e:
        raise ValidationError.single("cursor", str(e), "invalid_cursor") from e
    return ReconciliationItemsOut(
        items=[ReconciliationItemOut.of_row(r) for r in page.items],
        next_cursor=page.next_cursor, as_of_position=page.as_of_position,
    )  # fmt: skip


@router.get(
    "/{reconciliation_id}/export",
    summary="A run's result items as CSV",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "Every item (or one category's), one row each",
        },
        **auth_problems(404, 422, 503),
    },
)
async def export_items(
    request: Request,
    reconciliation_id: RunId,
    principal: Principal = Allow(Permission.RECONCILIATION_READ),
    category: Annotated[Category | None, Query()] = None,
) -> StreamingResponse:
    read = await _existing_run(request, principal, reconciliation_id)
    rows = csv_export(read.reconciliations.all_items(reconciliation_id, category))
    name = f"reconciliation-{reconciliation_id}{'-' + category if category else ''}.csv"
    return StreamingResponse(
        _in_thread(rows), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )  # fmt: skip


async def _in_thread(chunks: Iterator[bytes]) -> Any:
    while True:
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            return
        yield chunk


# --- decisions on discrepancies ------------------------------------------------------------------


@router.post(
    "/{reconciliation_id}/items/{index}/annotate",
    summary="Note something on an item", response_model=ReconciliationItemOut,
    responses=auth_problems(400, 404, 409, 422, 503),
)  # fmt: skip
async def annotate_item(
    request: Request,
    reconciliation_id: RunId,
    index: ItemIndex,
    body: AnnotateIn,
    principal: Principal = Allow(Permission.RECONCILIATION_DECIDE),
) -> ReconciliationItemOut:
    await _item(request, principal, reconciliation_id, index)
    await service(request).commit(
        "reconciliations", "decide_annotate", reconciliation_id, index, body.note, principal
    )
    return await _item_after(request, principal, reconciliation_id, index)


@router.post(
    "/{reconciliation_id}/items/{index}/resolve-exception",
    summary="Resolve the exception payment an item is about",
    response_model=ReconciliationItemOut, responses=auth_problems(400, 404, 409, 422, 503),
)  # fmt: skip
async def resolve_item_exception(
    request: Request,
    reconciliation_id: RunId,
    index: ItemIndex,
    body: ResolveExceptionIn,
    principal: Principal = Allow(Permission.EXCEPTIONS_RESOLVE),
) -> ReconciliationItemOut:
    """For an item whose payment is an open exception: the statement tells what happened.
    The payment moves to succeeded (posted once) or failed (its hold released), with an event
    saying it was resolved by reconciliation, and the item records the decision."""
    item = await _item(request, principal, reconciliation_id, index)
    await service(request).reconciliations.resolve_item_exception(
        reconciliation_id, index, item, body.outcome, body.reason, principal
    )
    return await _item_after(request, principal, reconciliation_id, index)


@router.post(
    "/{reconciliation_id}/items/{index}/accept",
    summary="Propose a correcting ledger entry for a discrepancy (a second person approves)",
    response_model=ReconciliationItemOut, responses=auth_problems(400, 404, 409, 422, 503),
)  # fmt: skip
async def accept_item(
    request: Request,
    reconciliation_id: RunId,
    index: ItemIndex,
    body: AcceptIn,
    principal: Principal = Allow(Permission.RECONCILIATION_DECIDE),
) -> ReconciliationItemOut:
    """The entry moves the difference between the channel's clearing account and its
    reconciliation suspense account, so the ledger agrees with the statement. Nothing is posted
    until someone else approves it."""
    item = await _item(request, principal, reconciliation_id, index)
    run = await asyncio.to_thread(
        read_side(request).reconciliations.run, principal.tenant, reconciliation_id
    )
    assert run is not None
    await service(request).reconciliations.propose_correction(
        reconciliation_id, index, item, run["channel"], body.reason, principal
    )
    return await _item_after(request, principal, reconciliation_id, index)


@router.post(
    "/{reconciliation_id}/items/{index}/approve",
    summary="Approve a proposed correcting entry (not its proposer): posts it",
    response_model=ReconciliationItemOut, responses=auth_problems(404, 409, 422, 503),
)  # fmt: skip
async def approve_item(
    request: Request,
    reconciliation_id: RunId,
    index: ItemIndex,
    principal: Principal = Allow(Permission.RECONCILIATION_DECIDE),
) -> ReconciliationItemOut:
    await _item(request, principal, reconciliation_id, index)
    await service(request).commit(
        "reconciliations", "decide_approve", reconciliation_id, index, principal
    )
    return await _item_after(request, principal, reconciliation_id, index)


# --- helpers -------------------------------------------------------------------------------------


async def _existing_run(request: Request, principal: Principal, run_id: UUID) -> ReadSide:
    read = read_side(request)
    await asyncio.to_thread(read.consistent, "reconciliations")
    if await asyncio.to_thread(read.reconciliations.run, principal.tenant, run_id) is None:
        raise ReconciliationNotFound(f"reconciliation {run_id} does not exist")
    return read


async def _item(request: Request, principal: Principal, run_id: UUID, index: int) -> Any:
    read = await _existing_run(request, principal, run_id)
    item = await asyncio.to_thread(read.reconciliations.item, principal.tenant, run_id, index)
    if item is None:
        raise ReconciliationNotFound(f"reconciliation {run_id} has no item {index}")
    return item


async def _item_after(
    request: Request, principal: Principal, run_id: UUID, index: int
) -> ReconciliationItemOut:
    return ReconciliationItemOut.of_row(await _item(request, principal, run_id, index))


def _digest(stream: IO[bytes]) -> tuple[str, int, bytes]:
    stream.seek(0)
    digest, size, head = hashlib.sha256(), 0, b""
    while block := stream.read(HASH_BLOCK):
        if not head:
            head = block[:1024]
        digest.update(block)
        size += len(block)
    if size == 0:
        raise ValidationError.single("file", "the statement file is empty", "empty")
    return digest.hexdigest(), size, head


def _text(value: Any, name: str, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError(name, "is required", "missing"))
        return None
    return value.strip()


def _optional(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _int(value: Any, name: str, default: int, errors: list[FieldError]) -> int:
    if value is None or value == "":
        return default
    try:
        return int(str(value))
    except ValueError:
        errors.append(FieldError(name, "must be a whole number", "invalid"))
        return default
