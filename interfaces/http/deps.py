"""What a route needs besides its body: the service, the principal, the idempotency key.

Only the principal is a FastAPI dependency: ``authenticate`` is the one implementation of
authentication (the ``Authorization: Bearer pl_live_...`` key, checked by the app's
``Authenticator``, interfaces/http/authn.py), and routes ask for it through the permission and
ownership dependencies of interfaces/http/authz.py. Each dependency costs a route tens of
microseconds in FastAPI's solver, so the service is read straight from the application state
and the idempotency key is a plain header parameter.

A hot route can skip FastAPI's per-request machinery altogether (``served_by``): it then reads
its JSON body, principal and idempotency key with ``json_body``, ``current_principal`` and
``idempotency_key``, which answer exactly as the body parameter, ``CurrentPrincipal`` and
``IdempotencyKey`` do (same values, same errors, in the same order).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from email.message import Message
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from application.commands import Principal
from application.drafts import MAX_KEY_LENGTH
from application.service import Payledger
from interfaces.http.problems import IdempotencyKeyRequired

if TYPE_CHECKING:
    from interfaces.http.authn import Authenticator

KEY_HELP = (
    "Unique per operation (e.g. a UUID). Retrying with the same key and body replays the "
    "original result; the same key with a different body answers 422."
)
REQUIRED_KEY_HELP = "**Required** (400 `idempotency_key_required` without it). " + KEY_HELP


async def authenticate(request: Request) -> Principal:
    """Who is calling: the principal of the request's API key (or the development sandbox's
    anonymous principal while no key exists), after the key's rate limit. Raises
    ``Unauthenticated`` (401), or ``RateLimited`` (429)."""
    auth: Authenticator = request.app.state.auth
    principal = await auth.authenticate(request.headers.get("authorization"))
    request.state.principal = principal  # for the request log (interfaces/http/security.py)
    return principal


_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer pl_live_<id>_<secret>` "
    "(`payledger keys create`). Not needed while no key exists outside production.",
)


async def get_principal(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
) -> Principal:
    """``authenticate`` as a FastAPI dependency (documented as the ``ApiKey`` scheme)."""
    return await authenticate(request)


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


# --- the same, without FastAPI's solver (for ``served_by`` routes) ----------------------------

T = TypeVar("T")
Errors = list[dict[str, Any]]  # pydantic-style errors, as ``RequestValidationError`` holds them
Parsed = tuple[T, Errors] | tuple[None, Errors]  # the value, or None and why

_KEY = TypeAdapter(IdempotencyKey)
_KEY_LOC = ("header", "Idempotency-Key")
_BODY_LOC = ("body",)
_BODY_MISSING = {"type": "missing", "loc": _BODY_LOC, "msg": "Field required", "input": None}
_UNPARSED = "There was an error parsing the body"  # FastAPI's 400 for an undecodable body


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def served_by(handler: Handler) -> type[APIRoute]:
    """A route class (``add_api_route(..., route_class_override=served_by(handler))``): FastAPI
    documents the route from its endpoint's signature as usual (body, parameters, response
    model, OpenAPI), but every request goes to ``handler(request) -> Response``, without the
    dependency solver, the body parameter nor the response model. The endpoint is then never
    called; ``handler`` reads what it needs with the helpers below."""

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            return handler

    return DirectRoute


async def current_principal(request: Request) -> Principal:
    """``CurrentPrincipal`` for a ``served_by`` route."""
    return await authenticate(request)


def idempotency_key(request: Request) -> tuple[str | None, Errors]:
    """``IdempotencyKey`` for a ``served_by`` route: the header's value (``None`` without
    one), or the errors FastAPI reports for it, located at ``header.Idempotency-Key``."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None, []
    try:
        return _KEY.validate_python(value), []
    except PydanticValidationError as e:
        return None, _located(_KEY_LOC, e)


async def json_body(request: Request, adapter: TypeAdapter[T]) -> Parsed[T]:
    """A JSON body parameter of ``adapter``'s type for a ``served_by`` route: the value, or
    the errors FastAPI reports for it (located at ``body``), to raise with the other
    parameters' in one ``RequestValidationError``.

    Like FastAPI, raises ``RequestValidationError`` (``json_invalid``) at once for JSON that does
    not parse, and a 400 for a body that cannot be read or decoded. A valid JSON body is parsed
    and validated in one pass (``validate_json``); any other one takes FastAPI's own way
    (``json.loads``, then the Python-mode validation of the parsed value), so that its errors,
    and the bodies only that way accepts (a UTF-8 BOM, UTF-16), stay exactly as they were."""
    try:
        raw = await request.body()
    except StarletteHTTPException:  # e.g. the body size limit's 413
        raise
    except Exception as e:
        raise HTTPException(400, _UNPARSED) from e
    content_type = request.headers.get("content-type")
    if raw and content_type and _is_json(content_type):
        try:
            return adapter.validate_json(raw), []
        except PydanticValidationError:
            pass  # FastAPI's way below tells what is wrong, in its own words
    return _validate_as_fastapi(raw, content_type, adapter)


def _validate_as_fastapi(
    raw: bytes, content_type: str | None, adapter: TypeAdapter[T]
) -> Parsed[T]:
    """What FastAPI does with a body parameter (``fastapi.routing.get_request_handler`` with
    ``strict_content_type``, its default): JSON only when the content type says so."""
    if not raw:
        return None, [dict(_BODY_MISSING)]
    value: Any = raw  # not JSON: validated as bytes, which a model refuses
    if content_type and _is_json(content_type):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            error = {
                "type": "json_invalid",
                "loc": ("body", e.pos),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": e.msg},
            }
            raise RequestValidationError([error], body=e.doc) from e
        except Exception as e:  # not UTF-8, too deep, a number too long
            raise HTTPException(400, _UNPARSED) from e
    try:
        return adapter.validate_python(value, from_attributes=True), []
    except PydanticValidationError as e:
        return None, _located(_BODY_LOC, e)


@lru_cache(maxsize=64)
def _is_json(content_type: str) -> bool:
    """FastAPI's test: ``application/json`` or ``application/*+json``, parameters aside."""
    message = Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _located(prefix: tuple[str, ...], error: PydanticValidationError) -> Errors:
    return [{**e, "loc": (*prefix, *e["loc"])} for e in error.errors(include_url=False)]
