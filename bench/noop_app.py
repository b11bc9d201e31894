"""The baseline: a FastAPI no-op ``POST`` with a small pydantic body, nothing else.

Served by uvicorn exactly as ``payledger serve`` serves the real API (one worker, no access log),
so the ratio ``payments/s / no-op requests/s`` measures what the ledger costs on top of the
framework. It reads the ``Idempotency-Key`` header like the payment endpoint does, so both carry
the same request shape.

    uvicorn bench.noop_app:create_app --factory --host 127.0.0.1 --port 8001 --no-access-log
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Header
from pydantic import BaseModel, ConfigDict, Field

from application.tuning import tune_process


class NoopBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: str = Field(max_length=32)
    currency: str = Field(min_length=3, max_length=3)
    channel: str = Field(max_length=32)
    payer_account_id: str = Field(max_length=64)
    payee_account_id: str = Field(max_length=64)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    tune_process()  # the same process tuning as the real API, so the ratio compares like with like
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        title="payledger no-op baseline",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},  # as the real API
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/noop", status_code=201)
    async def noop(
        body: NoopBody, idempotency_key: Annotated[str, Header(max_length=255)]
    ) -> dict[str, str]:
        return {"status": "succeeded", "amount": body.amount, "currency": body.currency}

    return app


app = create_app()
