"""OpenAPI response declarations and small rendering helpers shared by the routes."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from application.service import LAST_POSITION
from interfaces.http.schemas import Problem

_DESCRIPTIONS = {
    400: "Missing Idempotency-Key on a money-moving POST (`idempotency_key_required`), or a "
    "body that cannot be decoded (`http_error`)",
    401: "No valid API key (`WWW-Authenticate: Bearer`)",
    403: "The key's role lacks the permission (`forbidden`), or the operation needs a fresh "
    "second-factor code in `X-Payledger-OTP` (`otp_required`, `otp_invalid`, `otp_not_enrolled`)",
    404: "Not found (also another tenant's id)",
    409: "Conflict (a request with this key is still in flight, or an account rule)",
    413: "The request body is larger than the route accepts (`payload_too_large`)",
    415: "A content type the route does not read",
    422: "Malformed input (nothing was recorded) or an idempotency key reused with another body",
    429: "Rate limited (`rate_limited`) or second factor locked after failures "
    "(`otp_throttled`); retry after `Retry-After` seconds",
    503: "Overloaded, the database is unreachable, or the views have not reached "
    "`wait_for_position` (`position_not_reached`); retry after `Retry-After` seconds",
}


AUTH_STATUSES = (401, 403, 429)  # every authenticated route can answer these


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:  # FastAPI's `responses` type
    """The problem responses a route can give, for the OpenAPI document."""
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}


def auth_problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``problems`` of an authenticated route: 401, 403 and 429 besides ``statuses``."""
    return problems(*sorted({*statuses, *AUTH_STATUSES}))


def replay(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    """The 200 a money-moving POST answers when it replays an idempotent request."""
    return {200: {"model": model, "description": "Idempotent replay (`Idempotent-Replayed: true`)"}}


def mark_replay(response: Response, replayed: bool) -> None:
    """An idempotent replay answers 200 (not 201) and says so in a header."""
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"


POSITION_HEADER = "Payledger-Position"


def mark_position(response: Response, request: Request) -> None:
    """The log position a command's answer reached: pass it to a query as `wait_for_position`
    to read this write. A replay saved nothing now; its events lie at or before the log's end."""
    position = LAST_POSITION.get()
    if position is None:
        position = request.app.state.service.app.recorder.max_notification_id() or 0
    response.headers[POSITION_HEADER] = str(position)
