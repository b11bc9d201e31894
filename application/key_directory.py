"""``KeyDirectory``: "who is this?" for every request, through a short-lived cache.

Verified keys are kept in memory for ``PAYLEDGER_AUTH_CACHE_TTL_S`` (1 s by default) and then
read again from the event store, so a revocation takes effect on every worker within that time;
within it, a request costs a dict lookup and one HMAC. Whether any key exists (the sandbox's
anonymous access ends with the first key, for good) is one read of the registry by id, refreshed
at most once per TTL while no key exists and never again once one does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from application.commands import ANONYMOUS, Principal
from application.keys import KeyHandlers, principal_of
from domain.keys import TOKEN_PREFIX, InvalidApiKey, Unauthenticated, parse_token, secret_matches

T = TypeVar("T")
MAX_CACHED_KEYS = 10_000  # unknown ids are cached too (as None): bound what a flood can grow


@dataclass(frozen=True)
class _Verified:
    """What the directory keeps of a key: enough to check a secret, never the secret."""

    principal: Principal
    salt: bytes
    secret_hash: bytes
    revoked: bool


class KeyDirectory:
    """Authenticates presented tokens against the store, through a short-lived cache."""

    def __init__(self, keys: KeyHandlers, *, ttl_s: float, production: bool) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self.production = production
        self._entries: dict[str, tuple[float, _Verified | None]] = {}  # by key id's hex
        self._loading: dict[Any, asyncio.Future[Any]] = {}
        self._keys_exist = production  # production: never anonymous, whatever the store holds
        self._keys_checked_at = float("-inf")

    async def principal(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header's value, or raise ``Unauthenticated``.
        Without a header: the anonymous sandbox principal while no key exists (and not in
        production)."""
        if authorization is None:
            if await self.anonymous_allowed():
                return ANONYMOUS
            raise Unauthenticated("send an API key: Authorization: Bearer pl_live_...")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        # The cache is keyed by the id's 32 hex digits as sent: a hit skips parsing the token
        # (a key id is only cached once a well-formed token named it).
        well_placed = token[40:41] == "_" and token.startswith(TOKEN_PREFIX)
        entry = self._entries.get(token[8:40]) if well_placed else None
        if entry is not None and entry[0] > time.monotonic() and scheme.lower() == "bearer":
            verified, secret = entry[1], token[41:]
        else:
            parsed = parse_token(token) if scheme.lower() == "bearer" else None
            if parsed is None:
                raise InvalidApiKey("the API key is not valid")
            key_id, secret = parsed
            verified = await self._single_flight(key_id, self._load, key_id)
        if (
            verified is None
            or verified.revoked
            or not secret_matches(verified.salt, verified.secret_hash, secret)
        ):
            raise InvalidApiKey("the API key is not valid")
        return verified.principal

    async def anonymous_allowed(self) -> bool:
        if self._keys_exist:
            return False
        if time.monotonic() - self._keys_checked_at >= self.ttl_s:
            exist = await self._single_flight("any", self.keys.any_exist)
            self._keys_checked_at = time.monotonic()
            self._keys_exist = self._keys_exist or exist
        return not self._keys_exist

    def forget(self, key_id: UUID) -> None:
        """Drop a cached key (this worker revoked it: no need to wait for the TTL here)."""
        self._entries.pop(key_id.hex, None)

    def _load(self, key_id: UUID) -> _Verified | None:
        key = self.keys.load(key_id)
        verified = None
        if key is not None:
            verified = _Verified(
                principal_of(key), bytes.fromhex(key.salt), bytes.fromhex(key.secret_hash),
                key.revoked,
            )  # fmt: skip
            self._keys_exist = True
        if len(self._entries) >= MAX_CACHED_KEYS:
            self._entries.clear()
        self._entries[key_id.hex] = (time.monotonic() + self.ttl_s, verified)
        return verified

    async def _single_flight(self, name: Any, load: Callable[..., T], *args: Any) -> T:
        """Run ``load`` in a thread; concurrent callers for the same name share one run."""
        pending = self._loading.get(name)
        if pending is not None:
            return await asyncio.shield(pending)  # type: ignore[no-any-return]
        task: Awaitable[T] = asyncio.ensure_future(asyncio.to_thread(load, *args))
        self._loading[name] = task  # type: ignore[assignment]
        try:
            return await asyncio.shield(task)
        finally:
            if self._loading.get(name) is task:
                del self._loading[name]
