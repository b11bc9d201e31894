"""Authentication for the HTTP API: API keys checked by ``KeyDirectory`` (application/keys.py),
then the key's rate limit (interfaces/http/ratelimit.py).

``install(app, service)`` runs in the app's lifespan. Without any key, outside production, the
API serves the anonymous sandbox principal (the quick start) and says so loudly in the log; in
production it never does (``payledger serve`` refuses to start there without a key, and an app
started otherwise answers 401 to every request).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI

from application.commands import Principal
from application.key_directory import KeyDirectory
from application.service import Payledger
from interfaces.http.ratelimit import TokenBuckets

log = logging.getLogger("payledger.http")

NO_KEYS_WARNING = (
    "no API key exists: every request acts as the anonymous sandbox principal (tenant "
    "'default'). Create a key with `payledger keys create --tenant T --role admin` to require "
    "keys; PAYLEDGER_ENV=production never allows anonymous requests"
)
PRODUCTION_NO_KEYS = (
    "PAYLEDGER_ENV=production and no API key exists: every request will be refused (401). "
    "Create one with `payledger keys create --tenant T --role admin`"
)


@dataclass
class Authenticator:
    directory: KeyDirectory
    limits: TokenBuckets

    async def authenticate(self, authorization: str | None) -> Principal:
        principal = await self.directory.principal(authorization)
        if principal.key_id is not None:
            self.limits.take(principal.key_id)
        return principal


def install(app: FastAPI, service: Payledger) -> Authenticator:
    settings = service.settings
    production = settings.env == "production"
    auth = Authenticator(
        KeyDirectory(service.keys, ttl_s=settings.auth_cache_ttl_s, production=production),
        TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst),
    )
    app.state.auth = auth
    try:
        exist = service.keys.any_exist()
    except Exception as e:  # e.g. no tables yet: /readyz reports the store, not the start-up
        log.warning("cannot tell whether API keys exist yet: %s", type(e).__name__)
        return auth
    if not exist and production:
        log.error(PRODUCTION_NO_KEYS)
    elif not exist:
        log.warning(NO_KEYS_WARNING)
    return auth
