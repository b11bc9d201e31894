"""HTTP hardening: security headers on every response, CORS closed by default, a request log.

Pure ASGI middleware (no ``BaseHTTPMiddleware``): ``POST /v1/payments`` is the hot route
(docs/performance.md), so the headers are precomputed as bytes once and appended to each
response's start message; choosing the set is one prefix test on the path.

Every response gets

* ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``;
* a ``Content-Security-Policy``: ``default-src 'none'; frame-ancestors 'none'`` for the API (JSON
  is never a document), a policy for ``/dashboard`` that allows only its own inline CSS and
  inline SVG (it has no script), and one for the API docs (``/docs``, ``/redoc``) that allows
  the Swagger UI / ReDoc assets FastAPI loads from cdn.jsdelivr.net;
* ``Cache-Control: no-store`` on ``/v1/...`` answers and the dashboard (tenant data);
* ``Strict-Transport-Security: max-age=N; includeSubDomains`` only when
  ``PAYLEDGER_HSTS_MAX_AGE`` is set (behind TLS; a plain-HTTP development server must not
  send it).

A header the route set itself is left as it is. The headers wrap the whole application,
outside Starlette's error middleware, so a 500 has them too.

CORS: no ``Access-Control-Allow-Origin`` at all unless ``PAYLEDGER_CORS_ORIGINS`` lists origins;
then Starlette's ``CORSMiddleware`` allows exactly those, without credentials.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from application.logs import ACCESS_LOGGER, REQUEST_ID, redact

if TYPE_CHECKING:
    from fastapi import FastAPI

    from application.settings import Settings

Headers = list[tuple[bytes, bytes]]

BASE_HEADERS: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
NO_STORE = (b"cache-control", b"no-store")
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
# dashboard.html: inline <style> and style="" attributes, inline SVG, links to the API; no
# script, no image or font files, no forms. (It reloads itself with <meta http-equiv=refresh>.)
DASHBOARD_CSP = (
    b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# FastAPI's Swagger UI and ReDoc pages: an inline script, assets from cdn.jsdelivr.net, ReDoc's
# fonts and worker.
DOCS_CSP = (
    b"default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    b"font-src https://fonts.gstatic.com; img-src 'self' data: https:; connect-src 'self'; "
    b"worker-src blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")

CORS_METHODS = ["GET", "POST"]
CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Payledger-OTP"]
CORS_EXPOSE = [
    "Payledger-Position",
    "Payledger-As-Of-Position",
    "Idempotent-Replayed",
    "Retry-After",
    "X-Request-ID",
]


class SecurityHeaders:
    """Appends the precomputed headers for the request's path to every HTTP response."""

    def __init__(self, app: ASGIApp, *, hsts_max_age: int = 0) -> None:
        self.app = app
        base = list(BASE_HEADERS)
        if hsts_max_age > 0:
            base.append(
                (b"strict-transport-security", b"max-age=%d; includeSubDomains" % hsts_max_age)
            )
        self.api = [*base, (b"content-security-policy", API_CSP), NO_STORE]
        self.dashboard = [*base, (b"content-security-policy", DASHBOARD_CSP), NO_STORE]
        self.docs = [*base, (b"content-security-policy", DOCS_CSP)]
        self.other = [*base, (b"content-security-policy", API_CSP)]
        self.names = frozenset(name for name, _ in self.api + self.dashboard + self.docs)

    def headers_for(self, path: str) -> Headers:
        if path.startswith("/v1/"):
            return self.api
        if path.startswith("/dashboard"):
            return self.dashboard
        if path.startswith(DOCS_PATHS):
            return self.docs
        return self.other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra = self.api if path.startswith("/v1/") else self.headers_for(path)
        names = self.names

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers") or ()
                for name, _ in headers:
                    if name in names:  # the route set one of ours itself: keep its own
                        have = {name for name, _ in headers}
                        message["headers"] = [*headers, *(h for h in extra if h[0] not in have)]
                        break
                else:
                    # A new list: neither the response's own list nor ours is changed.
                    message["headers"] = [*headers, *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
access_log = logging.getLogger(ACCESS_LOGGER)


class RequestLog:
    """One log line per request: request id, method, path (redacted, never the query string),
    status, duration and principal id; never a header nor a body. The request id is the
    client's ``X-Request-ID`` when it is a short token, else a new one; it is answered in
    ``X-Request-ID`` and added to every line logged while the request is handled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        status = 500  # unless a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = redact(scope["path"])
            access_log.info(
                "%s %s %d",
                scope["method"],
                path,
                status,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "principal": _principal_id(scope),
                },
            )
            REQUEST_ID.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text) and redact(text) == text:
                return text
            break
    return str(uuid.uuid4())  # dashed: never a 13-19 digit run a log scanner takes for a card


def _principal_id(scope: Scope) -> str | None:
    """The principal the route authenticated, if it left one in ``request.state.principal``:
    its client id (``key:<key id>``, ``anonymous``), never a credential."""
    state = scope.get("state")
    principal: Any = state.get("principal") if isinstance(state, dict) else None
    if principal is None:
        return None
    return str(getattr(principal, "client", None) or getattr(principal, "key_id", None) or "")


def install(app: FastAPI, settings: Settings) -> None:
    """Add CORS (only when origins are configured), the request log (when on) and the
    security headers (outermost, around Starlette's error middleware) to ``app``. Call it after
    every other ``add_middleware``."""
    origins = settings.cors_origin_list
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSE,
            allow_credentials=False,
            max_age=600,
        )
    build_stack = app.build_middleware_stack
    hsts = settings.hsts_max_age
    logged = settings.access_log

    def build_middleware_stack() -> ASGIApp:
        stack = build_stack()
        if logged:
            stack = RequestLog(stack)
        return SecurityHeaders(stack, hsts_max_age=hsts)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
