"""The FastAPI application: ``create_app()``, also a uvicorn factory.

    uvicorn interfaces.http.app:create_app --factory

One ``Payledger`` service per process, created in the lifespan and closed on shutdown. Workers
started by ``payledger serve --workers N`` set ``PAYLEDGER_CREATE_TABLES=n``: the tables were
created once before they started, and creating them from many processes at once fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI

from application.service import Payledger
from application.settings import Settings
from application.store import StoreConfigError
from application.tuning import tune_process
from interfaces.http import authn, problems, security
from interfaces.http.limits import BodySizeLimit
from interfaces.http.routes import (
    accounts,
    batches,
    dashboard,
    health,
    payments,
    prometheus,
    queries,
    reconciliations,
)
from interfaces.http.routes import exceptions as exception_routes
from interfaces.http.routes import keys as key_routes
from interfaces.http.routes import webhooks as webhook_routes
from projections.projector_process import ProjectorProcess
from projections.read_side import ReadSide
from projections.webhook_delivery import start_deliverer

log = logging.getLogger("payledger.http")

DESCRIPTION = """\
Real-time payments on an event-sourced double-entry ledger.

* Amounts are **decimal strings** (`"12.34"`) in the currency's minor units; JSON numbers are
  refused.
* Every POST that moves money needs an `Idempotency-Key` header: the same key and body replay
  the original result (200, `Idempotent-Replayed: true`); the same key with another body is 422.
* Authenticate with an API key: `Authorization: Bearer pl_live_...` (`payledger keys create`).
  Without one: 401. A role without the permission: 403 `forbidden`; another tenant's id: 404.
  Payments above the step-up amount need a fresh TOTP code in `X-Payledger-OTP`.
* Errors are `application/problem+json` (RFC 9457) with a stable `code` and the offending
  `errors[].field`s. Malformed input records nothing.
* Outcomes are `succeeded`, `failed` (with `failure_code`) or `exception` (outcome unknown,
  resolved later). See each payment's audit history at `/v1/payments/{id}/events`.
"""
# The largest valid payment is a few KiB (500-char description, 20 metadata pairs of 540).
MAX_BODY_BYTES = 64 * 1024
# A batch of 100,000 items: a pain.001 of 60-110 MB, or a JSON body of about 25 MB.
MAX_BATCH_BODY_BYTES = 160 * 1024 * 1024
# A channel statement of a million lines: a CSV of about 120 MB (camt.053 is larger per line).
MAX_STATEMENT_BODY_BYTES = 1024 * 1024 * 1024
TAGS = [
    {"name": "payments", "description": "Real-time payments and their audit history"},
    {"name": "batches", "description": "Batch payments: files, approval, items, reports"},
    {"name": "exceptions", "description": "Payments with an unknown outcome, and resolving them"},
    {
        "name": "reconciliations",
        "description": "Channel statements matched against the ledger; discrepancies decided",
    },
    {"name": "accounts", "description": "Ledger accounts, deposits"},
    {"name": "metrics", "description": "Success rate, volumes and latency from the views"},
    {"name": "keys", "description": "API keys of the caller's tenant (role admin)"},
    {"name": "webhooks", "description": "Signed notifications of payment outcomes (role admin)"},
    {"name": "health", "description": "Liveness and readiness probes"},
]


def create_app(settings: Settings | None = None, service: Payledger | None = None) -> FastAPI:
    """The HTTP API. A ``service`` passed in belongs to the caller, who closes it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = service is None
        app.state.service = svc = service or _start_service(settings)
        mode = svc.settings.projections
        app.state.read = ReadSide(
            svc.app,
            svc.settings.store,
            follow=mode == "inline",
            create_tables=create_tables_allowed(),
            projector=partial(ProjectorProcess, svc.settings) if mode == "process" else None,
        )
        svc.on_commit = app.state.read.nudge
        # Webhooks: a deliverer thread (one per store works; projections/webhook_delivery.py).
        hooks = svc.webhooks.settings
        app.state.webhooks = (
            start_deliverer(svc.settings.store, svc.settings.secret_key, hooks)
            if hooks.delivery == "inline"
            else None
        )
        authn.install(app, svc)  # API keys: app.state.auth (interfaces/http/authn.py)
        # Batches: approved ones run in tasks; the scheduler resumes unfinished ones at start
        # and runs scheduled ones when due (application/batches/runner.py).
        svc.batch_runner.background = True
        scheduler = asyncio.create_task(
            svc.batch_runner.schedule(svc.settings.batch_scheduler_interval_s)
        )
        # Exceptions: a resolver asks the channels about unknown outcomes (routes/exceptions.py).
        resolver = exception_routes.start_resolver(app, svc)
        if owned:
            tune_process()  # a serving process, not a test embedding the app
        try:
            yield
        finally:
            scheduler.cancel()
            await exception_routes.stop_resolver(resolver)
            await svc.batch_runner.stop()
            if app.state.webhooks is not None:
                app.state.webhooks.stop()
            app.state.read.close()
            if owned:
                app.state.service.close()

    app = FastAPI(
        title="Payledger",
        summary="Event-sourced payments ledger",
        description=DESCRIPTION,
        version=_version(),
        openapi_tags=TAGS,
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry probes the global providers on every request; we
        # export our own metrics (Prometheus) and switch it off until tracing is wanted.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    problems.install(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=MAX_BODY_BYTES,
        larger={
            "/v1/batches": MAX_BATCH_BODY_BYTES,
            "/v1/reconciliations": MAX_STATEMENT_BODY_BYTES,
        },
    )
    # Security headers, CORS and the request log (after every other middleware: outermost).
    security.install(app, settings or (service.settings if service else Settings()))
    for module in (
        queries, payments, batches, accounts, key_routes, health, prometheus, dashboard,
        reconciliations,
    ):  # fmt: skip
        app.include_router(module.router)
    app.include_router(webhook_routes.router)
    app.include_router(exception_routes.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _start_service(settings: Settings | None) -> Payledger:
    try:
        return Payledger(settings or Settings(), create_tables=create_tables_allowed())
    except StoreConfigError as e:
        log.error("cannot start: %s", e)  # one clear line; uvicorn then exits non-zero
        raise


def create_tables_allowed() -> bool:
    value = os.environ.get("PAYLEDGER_CREATE_TABLES", "y").strip().lower()
    return value not in ("n", "no", "0", "false")


def _version() -> str:
    try:
        return version("payledger")
    except PackageNotFoundError:
        return "0.0.0"


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with problems served as ``application/problem+json``."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in batches.EXTRA_SCHEMAS.items():
            extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(extra.pop("$defs", {}))
            components[name] = extra
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status[0] in "45" and "application/json" in content:
                        content[problems.PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = schema
    return app.openapi_schema
