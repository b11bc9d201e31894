"""Which tenant owns an aggregate: read from its first event in the store, then remembered.

A tenant never changes once an aggregate is created, so an answer is cached for good (LRU);
the store is exact at once, where a view could still lag behind a just-created id. Unknown ids
are not cached (they may be created a moment later).
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

MAX_REMEMBERED = 200_000


class Owners:
    def __init__(self, app: Application[Any], maxsize: int = MAX_REMEMBERED) -> None:
        self.app = app
        self.maxsize = maxsize
        self._known: OrderedDict[UUID, tuple[type, str]] = OrderedDict()
        self._lock = Lock()

    def cached(self, aggregate_id: UUID, created: type | tuple[type, ...]) -> str | bool | None:
        """The owner if known here; ``False`` when it must be read from the store."""
        with self._lock:
            known = self._known.get(aggregate_id)
        if known is None:
            return False
        return known[1] if known[0] in _kinds(created) else None

    def tenant_of(self, aggregate_id: UUID, created: type | tuple[type, ...]) -> str | None:
        """The tenant of the aggregate whose first event is a ``created`` (e.g.
        ``Account.Opened``), or None when there is no such aggregate."""
        cached = self.cached(aggregate_id, created)
        if cached is not False:
            return cached  # type: ignore[return-value]
        first = next(iter(self.app.events.get(aggregate_id, lte=1)), None)
        if first is None:
            return None
        tenant = getattr(first, "tenant", None)
        if not isinstance(tenant, str):
            return None
        with self._lock:
            self._known[aggregate_id] = (type(first), tenant)
            while len(self._known) > self.maxsize:
                self._known.popitem(last=False)
        return tenant if type(first) in _kinds(created) else None


def _kinds(created: type | tuple[type, ...]) -> tuple[type, ...]:
    """One created-event class, or several (a payment is requested, or a batch item)."""
    return created if isinstance(created, tuple) else (created,)
