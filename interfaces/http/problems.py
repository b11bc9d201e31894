"""The one place where errors become HTTP problems (RFC 9457, ``application/problem+json``).

Every body has ``type``, ``title``, ``status``, ``detail``, a stable ``code`` and ``errors``
(one entry per offending field). A problem never echoes the input value (it may be a card
number), and an unexpected error answers 500 without its stack trace, which goes to the log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from application.committer import CommitterStopped, ConcurrencyConflict, Overloaded
from application.store import StoreConfigError
from domain.cards import redact_pan
from domain.errors import (
    AccountRuleViolation,
    Conflict,
    FieldError,
    IdempotencyKeyReused,
    IllegalTransition,
    NotFound,
    PayledgerError,
    ValidationError,
)
from domain.keys import (
    Forbidden,
    InvalidApiKey,
    OtpInvalid,
    OtpNotEnrolled,
    OtpRequired,
    OtpThrottled,
    Unauthenticated,
)
from interfaces.http.ratelimit import RateLimited
from interfaces.http.schemas import AMOUNT_FIELDS, NO_NUL, TAGGED_UNIONS
from projections.queries import PositionNotReached

log = logging.getLogger("payledger.http")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:payledger:problem:"
RETRY_AFTER_S = "1"
# Locations pydantic prefixes to a field's path; clients know where they put it.
_LOCATION_PARTS = frozenset({"body", "header", "query", "path", "cookie"})


class IdempotencyKeyRequired(Exception):
    """A money-moving POST without an ``Idempotency-Key`` header."""

    code = "idempotency_key_required"
    errors = (FieldError("Idempotency-Key", "is required", code),)


def _store_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning "the database is not answering", whichever layer noticed."""
    errors: tuple[type[BaseException], ...] = (
        StoreConfigError,
        StoreOperationalError,
        StoreInterfaceError,
    )
    try:
        import psycopg  # PostgreSQL support is an optional extra
    except ImportError:
        return errors
    return (*errors, psycopg.OperationalError)  # includes psycopg_pool.PoolTimeout


STORE_ERRORS = _store_errors()


@dataclass(frozen=True)
class Rule:
    status: int
    title: str
    code: str | None = None  # None: the error's own ``code``
    retry: bool = False  # Retry-After: the error's ``retry_after_s``, else RETRY_AFTER_S
    challenge: bool = False  # WWW-Authenticate: Bearer (RFC 6750)


# Most specific first: the first class the error is an instance of decides.
RULES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Rule], ...] = (
    (Unauthenticated, Rule(401, "Unauthorized", challenge=True)),
    ((RateLimited, OtpThrottled), Rule(429, "Too many requests", retry=True)),
    ((Forbidden, OtpRequired, OtpInvalid, OtpNotEnrolled), Rule(403, "Forbidden")),
    (IdempotencyKeyRequired, Rule(400, "Idempotency-Key required")),
    (IdempotencyKeyReused, Rule(422, "Idempotency key reused")),
    (ValidationError, Rule(422, "Invalid request")),
    (NotFound, Rule(404, "Not found")),
    ((AccountRuleViolation, IllegalTransition, Conflict), Rule(409, "Conflict")),
    ((Overloaded, ConcurrencyConflict, CommitterStopped), Rule(503, "Try again", retry=True)),
    (PositionNotReached, Rule(503, "Views not caught up", retry=True)),
    # Before TimeoutError: the library's "no connection available" is both.
    (STORE_ERRORS, Rule(503, "Store unavailable", "store_unavailable", retry=True)),
    (TimeoutError, Rule(503, "Timed out", "command_timeout", retry=True)),
)
INTERNAL = Rule(500, "Internal error", "internal_error")
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def problem_response(
    status: int,
    title: str,
    code: str,
    detail: str,
    errors: Iterable[FieldError] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    body = {
        "type": TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": redact_pan(detail),
        "code": code,
        "errors": [
            {"field": redact_pan(e.field), "reason": redact_pan(e.reason), "code": e.code}
            for e in errors
        ],
    }
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


def rule_for(exc: BaseException) -> Rule:
    for classes, rule in RULES:
        if isinstance(exc, classes):
            return rule
    return INTERNAL


async def handle_error(request: Request, exc: Exception) -> Response:
    rule = rule_for(exc)
    if rule is INTERNAL:
        return await handle_unexpected(request, exc)
    code = str(rule.code or getattr(exc, "code", "error"))
    detail = getattr(exc, "message", None) or str(exc) or rule.title
    if rule.code == "store_unavailable":
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        detail = "the database is not reachable; retry shortly"
    errors: Iterable[FieldError] = ()
    if isinstance(exc, ValidationError | IdempotencyKeyRequired):
        errors = exc.errors
    return problem_response(rule.status, rule.title, code, detail, errors, _headers(rule, exc))


def _headers(rule: Rule, exc: BaseException) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    if rule.retry:
        retry_after_s = getattr(exc, "retry_after_s", None)
        headers["Retry-After"] = (
            RETRY_AFTER_S if retry_after_s is None else str(max(1, math.ceil(retry_after_s)))
        )
    if rule.challenge:
        invalid = isinstance(exc, InvalidApiKey)
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return headers or None


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error(
        "unhandled %s on %s %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return problem_response(
        500, INTERNAL.title, "internal_error", "an unexpected error occurred; it has been logged"
    )


async def handle_request_validation(request: Request, exc: RequestValidationError) -> Response:
    # Each problem once (FastAPI 0.165 reports a bad path parameter twice).
    errors = list(dict.fromkeys(_field_error(e) for e in exc.errors()))
    detail = "; ".join(f"{e.field}: {e.reason}" for e in errors) or "the request is malformed"
    return problem_response(422, "Invalid request", "validation_error", detail, errors)


async def handle_http(request: Request, exc: StarletteHTTPException) -> Response:
    code = HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, detail, code, detail, headers=headers)


def _field_error(error: dict[str, Any]) -> FieldError:
    """One pydantic error as a field problem: its path, message and type, never its input."""
    path = _field_path(error.get("loc", ()))
    kind = str(error.get("type", "invalid"))
    reason = str(error.get("msg", "is invalid"))
    if kind == "string_type" and path.rsplit(".", 1)[-1] in AMOUNT_FIELDS:
        kind = "amount_must_be_string"
        reason = 'must be a decimal string such as "12.34" (JSON numbers are refused)'
    elif kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NO_NUL:
        reason = "must not contain NUL (U+0000) characters"
    elif kind == "union_tag_invalid":  # pydantic's message quotes the tag the client sent
        reason = f"type must be one of {error.get('ctx', {}).get('expected_tags', '')}"
    elif kind == "json_invalid":
        path, reason = "body", "is not valid JSON"
    return FieldError(path or "body", reason, kind)


def _field_path(loc: Sequence[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in _LOCATION_PARTS:
        parts = parts[1:]
    kept: list[str] = []
    for i, part in enumerate(parts):
        previous = parts[i - 1] if i else None
        tags = TAGGED_UNIONS.get(previous) if isinstance(previous, str) else None
        if tags and part in tags and i + 1 < len(parts):
            continue  # the discriminator tag pydantic inserts: not part of the client's path
        kept.append(str(part))
    return ".".join(kept)


def install(app: FastAPI) -> None:
    """Register every handler on ``app``."""
    app.add_exception_handler(RequestValidationError, handle_request_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, handle_http)  # type: ignore[arg-type]
    for classes, _rule in RULES:
        for cls in classes if isinstance(classes, tuple) else (classes,):
            app.add_exception_handler(cls, handle_error)  # type: ignore[arg-type]
    app.add_exception_handler(PayledgerError, handle_error)  # unmapped domain errors: 500
    app.add_exception_handler(Exception, handle_unexpected)
