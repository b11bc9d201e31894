"""Verify a Payledger webhook: standalone (only the standard library), copy it into a receiver.

Every notification is a ``POST`` with a JSON body and the header::

    Payledger-Signature: t=1767225600,v1=5257a869e7...,v1=9f86d08188...

``t`` is when it was sent (Unix seconds); each ``v1`` is the lowercase hex
``HMAC-SHA256(secret, f"{t}.{body}")`` under one of the endpoint's live signing secrets (the whole
``whsec_...`` string, UTF-8, is the key), computed over the body's bytes *exactly as received*.
During a secret rotation there is one ``v1`` per live secret. A notification is genuine when any
``v1`` matches any secret you hold and ``t`` is within ``tolerance_s`` (300 s) of your clock, in
the past or the future: an older one may be a replay. Other schemes (``v0``, ...) are ignored.

    from interfaces.webhooks.verify import verify, WebhookVerificationError

    event = verify(raw_body, request.headers["Payledger-Signature"], ["whsec_..."])

``verify`` returns the decoded JSON body::

    {"id": "<event id: the same on every retry, deduplicate on it>",
     "type": "payment.succeeded" | "payment.failed" | "payment.exception" | ...,
     "created_at": "2026-01-01T00:00:00.123456Z", "entity": "payment",
     "entity_id": "<payment id>", "sequence": 4,   # the payment's version: ignore lower ones
     "data": {<the payment as GET /v1/payments/{id} shows it>}}

and raises a ``WebhookVerificationError`` (a ``ValueError``) otherwise:
``MalformedSignatureHeader``, ``SignatureMismatch`` (altered body, wrong secret),
``TimestampOutOfTolerance`` (stale or from the future), ``InvalidPayload`` (not a JSON object).

Delivery is **at least once**: the same event may arrive twice (with the same ``id``) and
events of one payment may arrive out of order (keep the highest ``sequence`` per
``entity_id``). Answer 2xx quickly (within the read time-out, 10 s by default) and do the work
afterwards; anything else is retried with exponential backoff for 24 hours.

A receiver with FastAPI (read the raw body: re-serialised JSON would not match)::

    from fastapi import FastAPI, HTTPException, Request
    from interfaces.webhooks.verify import WebhookVerificationError, verify

    SECRETS = ["whsec_current...", "whsec_previous..."]  # while you rotate: both
    app = FastAPI()
    seen: set[str] = set()  # use your database: a unique constraint on the event id

    @app.post("/payledger/webhooks")
    async def receive(request: Request) -> dict[str, bool]:
        try:
            event = verify(
                await request.body(), request.headers.get("payledger-signature", ""), SECRETS
            )
        except WebhookVerificationError as e:
            raise HTTPException(400, str(e)) from e
        if event["id"] not in seen:
            seen.add(event["id"])
            ...  # handle event["type"], event["data"]
        return {"received": True}

Or plain WSGI (``wsgiref``, gunicorn, ...)::

    def app(environ, start_response):
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size)
        try:
            event = verify(body, environ.get("HTTP_PAYLEDGER_SIGNATURE", ""), SECRETS)
        except WebhookVerificationError:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"bad signature"]
        ...  # deduplicate on event["id"], then handle it
        start_response("204 No Content", [])
        return []
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Any

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "HEADER",
    "InvalidPayload",
    "MalformedSignatureHeader",
    "SignatureMismatch",
    "TimestampOutOfTolerance",
    "WebhookVerificationError",
    "verify",
]

HEADER = "Payledger-Signature"
DEFAULT_TOLERANCE_S = 300
MAX_HEADER_LENGTH = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")


class WebhookVerificationError(ValueError):
    """The notification is not to be trusted: answer 400 and do nothing with it."""


class MalformedSignatureHeader(WebhookVerificationError):
    """No header, or not ``t=<unix seconds>,v1=<64 hex>[,v1=...]``."""


class SignatureMismatch(WebhookVerificationError):
    """No ``v1`` matches any secret: the body was altered, or the secret is not this
    endpoint's."""


class TimestampOutOfTolerance(WebhookVerificationError):
    """Signed too long ago (a replay?) or too far in the future (a skewed clock)."""


class InvalidPayload(WebhookVerificationError):
    """Correctly signed, but the body is not a JSON object."""


def verify(
    payload: bytes,
    header: str,
    secrets: list[str],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The notification's JSON body if ``header`` proves it was signed with one of
    ``secrets`` over exactly ``payload`` within ``tolerance_s`` of ``now`` (default: this
    clock); else raises a ``WebhookVerificationError``."""
    if isinstance(payload, str):
        raise TypeError("payload must be the raw body as bytes, exactly as received")
    if isinstance(secrets, str):
        secrets = [secrets]
    keys = [s.encode() for s in secrets if s]
    if not keys:
        raise ValueError("no secret to verify with")
    timestamp, signatures = _parse(header)
    signed = str(timestamp).encode() + b"." + bytes(payload)
    expected = [hmac.new(key, signed, hashlib.sha256).hexdigest() for key in keys]
    # Every comparison is made (no early exit), each in constant time.
    matched = False
    for signature in signatures:
        for candidate in expected:
            matched |= hmac.compare_digest(signature, candidate)
    if not matched:
        raise SignatureMismatch("no signature matches: altered body or wrong secret")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise TimestampOutOfTolerance(
            f"signed at {timestamp}, {timestamp - current:+.0f} s from now "
            f"(tolerance {tolerance_s:g} s)"
        )
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidPayload("the body is not JSON") from e
    if not isinstance(event, dict):
        raise InvalidPayload("the body is not a JSON object")
    return event


def _parse(header: str) -> tuple[int, list[str]]:
    if not isinstance(header, str) or not header.strip():
        raise MalformedSignatureHeader(f"no {HEADER} header")
    if len(header) > MAX_HEADER_LENGTH:
        raise MalformedSignatureHeader(f"the {HEADER} header is too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise MalformedSignatureHeader(f"not key=value: {part.strip()[:20]!r}")
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise MalformedSignatureHeader("t must appear once, as Unix seconds")
            timestamp = int(value)
        elif key == "v1":
            if not _HEX64.fullmatch(value):
                raise MalformedSignatureHeader("v1 must be 64 lowercase hex digits")
            signatures.append(value)
    if timestamp is None:
        raise MalformedSignatureHeader("no t= timestamp")
    if not signatures:
        raise MalformedSignatureHeader("no v1= signature")
    return timestamp, signatures
