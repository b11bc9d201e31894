"""A unit of work: the aggregates one or more commands read and changed, saved in one call.

Commands are plain functions ``decide(uow) -> result``. They load aggregates through the unit of
work, check every rule *before* changing anything, then record events. The committer runs many
such functions over one shared unit of work and saves it atomically (group commit).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from threading import Lock
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

from application.clock import Clock, SystemClock

TAgg = TypeVar("TAgg", bound=Aggregate)


class AggregateCache:
    """A bounded LRU of aggregates as last saved by this process's committer.

    Only the committer thread writes aggregates in this process, so an entry is exact unless
    another process wrote since; then the save conflicts, the entry is evicted and reloaded.
    """

    def __init__(self, maxsize: int = 50_000) -> None:
        self._items: OrderedDict[UUID, Aggregate] = OrderedDict()
        self._maxsize = maxsize
        self._lock = Lock()

    def get(self, aggregate_id: UUID) -> Aggregate | None:
        with self._lock:
            item = self._items.get(aggregate_id)
            if item is not None:
                self._items.move_to_end(aggregate_id)
            return item

    def put(self, aggregate: Aggregate) -> None:
        with self._lock:
            self._items[aggregate.id] = aggregate
            self._items.move_to_end(aggregate.id)
            while len(self._items) > self._maxsize:
                self._items.popitem(last=False)

    def evict(self, aggregate_ids: list[UUID]) -> None:
        with self._lock:
            for aggregate_id in aggregate_ids:
                self._items.pop(aggregate_id, None)


class UnitOfWork:
    """The working set of a group: every aggregate read or created, in first-touch order."""

    def __init__(
        self,
        app: Application,
        cache: AggregateCache,
        *,
        optimistic: bool,
        clock: Clock | None = None,
    ) -> None:
        self.app = app
        self.cache = cache
        self.clock = clock or SystemClock()
        self.now: datetime = self.clock.now()
        # Optimistic: assume an id derived from a fresh idempotency key is new instead of paying
        # a read per command; a duplicate then fails the group's save and is retried carefully.
        self.optimistic = optimistic
        self.aggregates: dict[UUID, Aggregate] = {}
        # Pending-event counts at first touch by the running command, to tell whether a command
        # that raised had already changed something (then the whole group must be redone).
        self.unit_marks: dict[UUID, int] = {}
        # New aggregates never read again by this process (a batch's item chunks and item
        # payments): saved, but kept out of the cache so a big batch does not flood it.
        self.uncached: set[UUID] = set()
        # Events of new aggregates saved without building them (a batch's item payments).
        self.new_events: list[Any] = []
        self.new_events_mark = 0

    def get(self, aggregate_id: UUID, cls: type[TAgg]) -> TAgg | None:
        """The aggregate as this group sees it, or None if it does not exist."""
        found = self.aggregates.get(aggregate_id) or self.cache.get(aggregate_id)
        if found is None:
            try:
                found = self.app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                return None
        if not isinstance(found, cls):
            return None
        self._touch(found)
        return found

    def get_if_known(self, aggregate_id: UUID, cls: type[TAgg]) -> TAgg | None:
        """Like get, but in optimistic mode skips the store read for ids not seen lately."""
        if self.optimistic and aggregate_id not in self.aggregates:
            cached = self.cache.get(aggregate_id)
            if cached is None:
                return None
            if isinstance(cached, cls):
                self._touch(cached)
                return cached
            return None
        return self.get(aggregate_id, cls)

    def reload(self, aggregate_id: UUID, cls: type[TAgg]) -> TAgg | None:
        """Fresh from the store, for decisions that must not rest on a cached copy (a refusal
        for insufficient funds writes nothing, so a stale balance would never conflict).
        Only valid for an aggregate this group has not changed."""
        current = self.aggregates.get(aggregate_id)
        if current is not None and current.pending_events:
            return current  # type: ignore[return-value]
        self.aggregates.pop(aggregate_id, None)
        self.cache.evict([aggregate_id])
        try:
            found: Aggregate = self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(found, cls):
            return None
        self._touch(found)
        return found

    def add_created(self, events: list[Any]) -> None:
        """Creation events of aggregates nobody here reads again: saved with the group."""
        self.new_events.extend(events)

    def add(self, aggregate: Aggregate, *, cache: bool = True) -> None:
        """A new aggregate: all its pending events belong to the running command."""
        self._touch(aggregate, new=True)
        if not cache:
            self.uncached.add(aggregate.id)

    def _touch(self, aggregate: Aggregate, *, new: bool = False) -> None:
        self.aggregates[aggregate.id] = aggregate
        if aggregate.id not in self.unit_marks:
            self.unit_marks[aggregate.id] = 0 if new else len(aggregate.pending_events)

    # --- used by the committer -----------------------------------------------------------------

    def begin_unit(self) -> None:
        """Start the next command: it gets one timestamp for all it records."""
        self.unit_marks = {}
        self.new_events_mark = len(self.new_events)
        self.now = self.clock.now()

    def unit_changed_anything(self) -> bool:
        return len(self.new_events) != self.new_events_mark or any(
            len(self.aggregates[agg_id].pending_events) != mark
            for agg_id, mark in self.unit_marks.items()
            if agg_id in self.aggregates
        )

    def dirty(self) -> list[Aggregate]:
        return [agg for agg in self.aggregates.values() if agg.pending_events]

    def ids(self) -> list[UUID]:
        return list(self.aggregates)
