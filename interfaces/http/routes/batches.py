"""Batch payments: submit (file or JSON, or a dry run), approve, reject, cancel, retry, and read
status, items and the report (CSV or pain.002)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError as PydanticValidationError

from application.batch_files.model import ParsedFile
from application.batches.files import file_sha256, parse_batch_file
from application.batches.handlers import SubmitBatch
from application.batches.results import BatchResult, DryRunResult
from application.commands import Principal
from domain.errors import Conflict, FieldError, ValidationError
from domain.money import format_amount
from interfaces.http.authz import Allow, OwnedBatch, Permission
from interfaces.http.batch_schemas import (
    ApproveIn,
    BatchIn,
    BatchItemOut,
    BatchItemsOut,
    BatchListItemOut,
    BatchListOut,
    BatchOut,
    DecisionIn,
    DryRunOut,
    RetryIn,
)
from interfaces.http.deps import OptionalIdempotencyKey, required, service
from interfaces.http.routes._responses import auth_problems, mark_position, mark_replay, replay
from interfaces.http.routes.queries import Cursor, read_side
from projections.batch_reports import PAIN002_VERSIONS, csv_report, pain002_report
from projections.db import from_us
from projections.queries import BadCursor, PositionNotReached

router = APIRouter(prefix="/v1/batches", tags=["batches"])

OTP_HEADER = Header(
    alias="X-Payledger-OTP", max_length=16, description="A fresh code from the approver's app"
)
MULTIPART_HELP = (
    "A file (`multipart/form-data`, field `file`: CSV or ISO 20022 pain.001.001.03/.09; "
    "optional fields `rules` (JSON), `currency`, `execution_date`) or a JSON `BatchIn` body."
)
DRY_RUN_HELP = "Predict each item's outcome from the ledger and the rules; store nothing"
ItemStatus = Literal["pending", "succeeded", "failed", "exception", "invalid", "cancelled"]


def _batch_out(result: BatchResult) -> BatchOut:
    return BatchOut.of(result, datetime.now(UTC))


@router.post(
    "",
    status_code=201,
    summary="Submit a batch (file or JSON), or dry-run it",
    response_model=BatchOut | DryRunOut,
    responses={**replay(BatchOut), **auth_problems(400, 404, 409, 413, 415, 422, 503)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": MULTIPART_HELP,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "rules": {"type": "string", "description": "JSON object"},
                            "currency": {"type": "string"},
                            "execution_date": {"type": "string", "format": "date"},
                        },
                    }
                },
            },
        }
    },
)
async def submit_batch(
    request: Request,
    response: Response,
    principal: Principal = Allow(Permission.BATCHES_CREATE),
    idempotency_key: OptionalIdempotencyKey = None,
    funding_account_id: Annotated[UUID | None, Query()] = None,
    dry_run: Annotated[bool, Query(description=DRY_RUN_HELP)] = False,
) -> Any:
    """Validates the whole file, then each item (invalid items are listed with ISO 20022
    reason codes). The batch then waits for a second person's approval. Needs an
    `Idempotency-Key` for JSON and CSV batches; a pain.001's `MsgId` identifies it instead
    (the same file twice answers the first batch)."""
    command = await _submit_command(request, idempotency_key, funding_account_id, dry_run)
    if command.parsed.message_id is None and not dry_run:
        required(idempotency_key)  # a file's own message id identifies it; else the key must
    result = await service(request).batches.submit(command, principal)
    if isinstance(result, DryRunResult):
        response.status_code = 200
        return DryRunOut.of(result)
    mark_replay(response, result.replayed)
    mark_position(response, request)
    return _batch_out(result)


async def _submit_command(
    request: Request, key: str | None, funding_account_id: UUID | None, dry_run: bool
) -> SubmitBatch:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _file_command(request, key, funding_account_id, dry_run)
    if content_type in ("application/json", ""):
        body = await request.body()
        try:
            batch = BatchIn.model_validate_json(body or b"null")
        except PydanticValidationError as e:
            raise RequestValidationError(
                [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
            ) from e
        parsed = ParsedFile(
            format="json", items=[item.to_raw(n) for n, item in enumerate(batch.items)],
            message_id=batch.message_id, currency=batch.currency,
        )  # fmt: skip
        return SubmitBatch(
            parsed, key, batch.funding_account_id or funding_account_id, batch.currency,
            batch.rules, batch.execution_date, None, dry_run,
        )  # fmt: skip
    raise ValidationError.single(
        "Content-Type", "send multipart/form-data (a file) or application/json", "unsupported"
    )


async def _file_command(
    request: Request, key: str | None, funding_account_id: UUID | None, dry_run: bool
) -> SubmitBatch:
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ValidationError.single("file", "attach the batch file as the field 'file'", "FF01")
    data = await upload.read()
    parsed = await asyncio.to_thread(parse_batch_file, data)
    errors: list[FieldError] = []
    rules = _form_json(form.get("rules"), errors)
    currency = form.get("currency")
    execution = _form_date(form.get("execution_date"), errors)
    if errors:
        raise ValidationError(errors)
    return SubmitBatch(
        parsed, key, funding_account_id, currency if isinstance(currency, str) else None,
        rules, execution, file_sha256(data), dry_run,
    )  # fmt: skip


def _form_json(value: Any, errors: list[FieldError]) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    try:
        parsed = orjson.loads(value if isinstance(value, str) else b"")
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        errors.append(FieldError("rules", "must be a JSON object", "invalid_rules"))
        return None
    return parsed


def _form_date(value: Any, errors: list[FieldError]) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        errors.append(FieldError("execution_date", "must be a date, YYYY-MM-DD", "invalid"))
        return None


@router.get(
    "", summary="List the tenant's batches", response_model=BatchListOut,
    responses=auth_problems(422, 503),
)  # fmt: skip
async def list_batches(
    request: Request,
    principal: Principal = Allow(Permission.PAYMENTS_READ),
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> BatchListOut:
    read = read_side(request)
    await asyncio.to_thread(read.consistent, "batches")
    try:
        page = await asyncio.to_thread(
            read.batches.batches, principal.tenant, status=status, limit=limit, cursor=cursor
        )
    except BadCursor as e:
        raise ValidationError.single("cursor", str(e), "invalid_cursor") from e
    return BatchListOut(
        items=[
            BatchListItemOut(
                id=r["batch_id"],
                status=r["status"],
                item_count=r["item_count"],
                control_sum=format_amount(r["control_sum_minor"], r["currency"]),
                currency=r["currency"],
                succeeded=r["succeeded_count"],
                failed=r["failed_count"],
                exception=r["exception_count"],
                format=r["format"],
                message_id=r["message_id"],
                created_at=from_us(r["created_us"]),
                finished_at=from_us(r["finished_us"]),
            )
            for r in page.items
        ],
        next_cursor=page.next_cursor,
        as_of_position=page.as_of_position,
    )


@router.get(
    "/{batch_id}", summary="A batch: status, counts, amounts, progress and ETA",
    response_model=BatchOut, responses=auth_problems(404, 422),
)  # fmt: skip
async def get_batch(
    batch_id: UUID, request: Request, principal: Principal = OwnedBatch(Permission.PAYMENTS_READ)
) -> BatchOut:
    result = await asyncio.to_thread(service(request).batches.get, batch_id, principal)
    return _batch_out(result)


@router.post(
    "/{batch_id}/approve",
    summary="Approve a batch (a second person, with a fresh TOTP code)",
    response_model=BatchOut,
    responses=auth_problems(400, 404, 409, 422, 503),
)
async def approve_batch(
    batch_id: UUID,
    request: Request,
    response: Response,
    principal: Principal = OwnedBatch(Permission.BATCHES_APPROVE),
    otp: Annotated[str | None, OTP_HEADER] = None,
    body: Annotated[ApproveIn, Body()] = ApproveIn(),  # frozen: one default is safe
) -> BatchOut:
    """The maker can never approve their own batch (403 `maker_cannot_approve`). A batch whose
    execution date is ahead becomes `scheduled`; otherwise (or with `execute_now`) it runs at
    once. A code is accepted once; 5 wrong codes lock approval for 15 minutes (429)."""
    result = await service(request).batches.approve(
        batch_id, principal, otp, execute_now=body.execute_now
    )
    mark_position(response, request)
    return _batch_out(result)


@router.post(
    "/{batch_id}/reject", summary="Reject a batch awaiting approval", response_model=BatchOut,
    responses=auth_problems(400, 404, 409, 422, 503),
)  # fmt: skip
async def reject_batch(
    batch_id: UUID,
    request: Request,
    response: Response,
    principal: Principal = OwnedBatch(Permission.BATCHES_APPROVE),
    body: Annotated[DecisionIn, Body()] = DecisionIn(),  # frozen: one default is safe
) -> BatchOut:
    result = await service(request).batches.reject(batch_id, principal, body.reason)
    mark_position(response, request)
    return _batch_out(result)


@router.post(
    "/{batch_id}/cancel", summary="Cancel a batch before it is released",
    response_model=BatchOut, responses=auth_problems(400, 404, 409, 422, 503),
)  # fmt: skip
async def cancel_batch(
    batch_id: UUID,
    request: Request,
    response: Response,
    principal: Principal = OwnedBatch(Permission.BATCHES_CREATE),
    body: Annotated[DecisionIn, Body()] = DecisionIn(),  # frozen: one default is safe
) -> BatchOut:
    result = await service(request).batches.cancel(batch_id, principal, body.reason)
    mark_position(response, request)
    return _batch_out(result)


@router.post(
    "/{batch_id}/retry",
    summary="Retry failed items (new attempts, linked to the originals)",
    response_model=BatchOut,
    responses=auth_problems(400, 404, 409, 422, 503),
)
async def retry_batch(
    batch_id: UUID,
    body: RetryIn,
    request: Request,
    response: Response,
    principal: Principal = OwnedBatch(Permission.BATCHES_CREATE),
) -> BatchOut:
    read = read_side(request)
    await asyncio.to_thread(read.consistent, "batches")
    chosen = await asyncio.to_thread(_failed_items, read, batch_id, body)
    result = await service(request).batches.retry(batch_id, principal, chosen)
    mark_position(response, request)
    return _batch_out(result)


def _failed_items(read: Any, batch_id: UUID, body: RetryIn) -> list[tuple[int, int]]:
    if not body.all_failed and not body.items:
        raise ValidationError.single("items", "name the items to retry, or all_failed", "invalid")
    failed = {i.index: i for i in read.batches.all_items(batch_id) if i.status == "failed"}
    if body.all_failed:
        return [(i.index, i.seq) for i in failed.values()]
    by_e2e = {i.end_to_end_id: i for i in failed.values()}
    chosen = []
    for wanted in body.items or []:
        item = failed.get(wanted) if isinstance(wanted, int) else by_e2e.get(wanted)
        if item is None:
            raise Conflict(f"item {wanted!r} is not a failed item of batch {batch_id}")
        chosen.append((item.index, item.seq))
    return chosen


@router.get(
    "/{batch_id}/items", summary="A batch's items with their outcome (file order, paginated)",
    response_model=BatchItemsOut, responses=auth_problems(404, 422, 503),
)  # fmt: skip
async def batch_items(
    batch_id: UUID,
    request: Request,
    principal: Principal = OwnedBatch(Permission.PAYMENTS_READ),
    status: Annotated[ItemStatus | None, Query()] = None,
    outcome: Annotated[ItemStatus | None, Query(description="Same as status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
) -> BatchItemsOut:
    read = read_side(request)
    if not await asyncio.to_thread(read.consistent, "batches"):
        raise PositionNotReached("the batches view is behind the log; retry shortly")
    try:
        page = await asyncio.to_thread(
            read.batches.items, principal.tenant, batch_id, status=status or outcome,
            limit=limit, cursor=cursor,
        )  # fmt: skip
    except BadCursor as e:
        raise ValidationError.single("cursor", str(e), "invalid_cursor") from e
    return BatchItemsOut(
        items=[BatchItemOut.of(i) for i in page.items],
        next_cursor=page.next_cursor,
        as_of_position=page.as_of_position,
    )


@router.get(
    "/{batch_id}/report",
    summary="The batch's report: CSV, or an ISO 20022 pain.002 status report",
    responses={
        200: {
            "content": {"text/csv": {}, "application/xml": {}},
            "description": "CSV (one line per item) or pain.002 XML",
        },
        **auth_problems(404, 422, 503),
    },
    response_class=Response,
)
async def batch_report(
    batch_id: UUID,
    request: Request,
    principal: Principal = OwnedBatch(Permission.PAYMENTS_READ),
    format: Annotated[Literal["csv", "pain002"], Query()] = "csv",
    version: Annotated[
        Literal["pain.002.001.10", "pain.002.001.03"], Query(description="pain.002 version")
    ] = "pain.002.001.10",
) -> Response:
    read = read_side(request)
    batch = await asyncio.to_thread(service(request).batches.get, batch_id, principal)
    if not await asyncio.to_thread(read.consistent, "batches"):
        raise PositionNotReached("the batches view is behind the log; retry shortly")
    name = f"batch-{batch_id}"
    if format == "csv":
        lines = csv_report(batch, read.batches.all_items(batch_id))
        return StreamingResponse(
            _in_thread(lines), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )  # fmt: skip
    assert version in PAIN002_VERSIONS
    xml = await asyncio.to_thread(pain002_report, batch, read.batches.all_items(batch_id), version)
    return Response(
        xml, media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{name}.pain002.xml"'},
    )  # fmt: skip


async def _in_thread(lines: Any) -> Any:
    """Iterate a blocking generator (database pages) without blocking the event loop."""
    done = object()
    while True:
        chunk = await asyncio.to_thread(next, lines, done)
        if chunk is done:
            return
        yield chunk


# Documented in components for the request body above (it is read by hand: JSON or a file).
EXTRA_SCHEMAS = {"BatchIn": BatchIn}
