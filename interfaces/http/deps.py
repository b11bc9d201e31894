"""What a route needs besides its body: the service, the principal, the idempotency key.

Only the principal is a FastAPI dependency (authentication will live there). Each dependency
costs a route tens of microseconds in FastAPI's solver, so the service is read straight from
the application state and the idempotency key is a plain header parameter.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from application.commands import ANONYMOUS, Principal
from application.drafts import MAX_KEY_LENGTH
from application.service import Payledger
from interfaces.http.problems import IdempotencyKeyRequired

KEY_HELP = (
    "Unique per operation (e.g. a UUID). Retrying with the same key and body replays the "
    "original result; the same key with a different body answers 422."
)
REQUIRED_KEY_HELP = "**Required** (400 `idempotency_key_required` without it). " + KEY_HELP


async def get_principal() -> Principal:
    """Who is calling. The one place authentication will go (API keys come in a later issue)."""
    return ANONYMOUS


def service(request: Request) -> Payledger:
    """The process's one service, created by the app's lifespan."""
    return request.app.state.service  # type: ignore[no-any-return]


def required(key: str | None) -> str:
    """The idempotency key of a money-moving request, which cannot go without one."""
    if not key:
        raise IdempotencyKeyRequired(
            "this request moves money: send an Idempotency-Key header (e.g. a UUID)"
        )
    return key


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
# Optional in the schema so that a missing key answers our 400, not a generic 422.
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=MAX_KEY_LENGTH, description=REQUIRED_KEY_HELP),
]
OptionalIdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=MAX_KEY_LENGTH, description=KEY_HELP),
]
