"""Logging: plain text or one JSON object per line, and never a secret in either.

``PAYLEDGER_LOG_FORMAT=text`` (default) or ``json``. Every line, whatever logger wrote it (ours,
uvicorn's, a library's traceback), passes through :func:`redact` at the end of formatting: card
numbers (any Luhn-valid 13-19 digit run, also grouped by spaces or dashes), API keys
(``pl_live_...``), ``Authorization`` credentials and TOTP codes given as ``X-Payledger-OTP``
become ``[REDACTED...]``. The HTTP request log (``interfaces/http/security.py``, on with
``PAYLEDGER_ACCESS_LOG=true`` or ``payledger serve --access-log``) writes method, path (never
the query string), status, duration and principal id, and never a header or a body.

A JSON line::

    {"ts": "2026-01-31T12:00:00.123456Z", "level": "INFO", "logger": "payledger.access",
     "message": "POST /v1/payments 201", "request_id": "7f0c...", "method": "POST",
     "path": "/v1/payments", "status": 201, "duration_ms": 3.2, "principal": "key:..."}

Errors add ``"exc"`` (the traceback, redacted too).
"""

from __future__ import annotations

import logging
import logging.config
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from domain.cards import redact_pan

# The current HTTP request's id, set by the request log middleware, added to every line logged
# while the request is handled.
REQUEST_ID: ContextVar[str | None] = ContextVar("payledger_request_id", default=None)

# Fields a record may carry (``log.info(..., extra={...})``) that JSON lines show as their own.
FIELDS = ("request_id", "method", "path", "status", "duration_ms", "principal")

_SECRETS = (
    # API keys, whole or in part (domain/keys.py: pl_live_<id>_<secret>).
    (re.compile(r"pl_live_[A-Za-z0-9_-]+"), "pl_live_[REDACTED]"),
    # Credentials of an Authorization header or any "bearer"/"basic" token in text.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [REDACTED]"),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',}\s]+"), r"\1[REDACTED]"),
    # A one-time code next to its header name.
    (re.compile(r"(?i)(x-payledger-otp[\"']?\s*[:=]\s*[\"']?)[0-9]+"), r"\1[REDACTED]"),
)


def redact(text: str) -> str:
    """``text`` without card numbers, API keys, credentials or one-time codes."""
    if not text:
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return redact_pan(text)


class TextFormatter(logging.Formatter):
    """``2026-01-31 12:00:00,123 INFO payledger.http: message``, redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id and record.name != ACCESS_LOGGER:
            line += f" [request {request_id}]"
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if "request_id" not in data and (request_id := REQUEST_ID.get()) is not None:
            data["request_id"] = request_id
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        return redact(orjson.dumps(data, default=str).decode())


ACCESS_LOGGER = "payledger.access"
FORMATTERS = {"text": TextFormatter, "json": JsonFormatter}


def logging_config(log_format: str = "text", level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for a serving process (also given to uvicorn as its
    ``log_config``): one handler on stderr, on the root logger, with the chosen formatter;
    uvicorn's loggers propagate to it."""
    if log_format not in FORMATTERS:
        raise ValueError(f"unknown log format {log_format!r}")
    level_name = "DEBUG" if level.lower() == "trace" else level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"payledger": {"()": f"{__name__}.{FORMATTERS[log_format].__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "payledger",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level_name},
        "loggers": {
            # uvicorn's own handlers would bypass the redaction: everything goes through root.
            name: {"handlers": [], "propagate": True, "level": level_name}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(log_format: str = "text", level: str = "info") -> None:
    """Apply :func:`logging_config` to this process (the committer process, CLI tools)."""
    logging.config.dictConfig(logging_config(log_format, level))
