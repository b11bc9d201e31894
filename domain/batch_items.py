"""Batch items as the batch engine sees them, their processing order, and the chunks they are
stored in.

Items are checked and put in processing order once, at intake, then stored in ``BatchChunk``
aggregates of up to ``CHUNK_SIZE`` items in that order. The engine streams the chunks, so memory
stays bounded whatever the batch's size, and a resumed batch continues at the first position in
the order that no recorded group covers.

The order is: value date first (nothing is paid before its date), then the batch's rule (file
order, priority, amount, value date), then file order; an item that depends on another always
comes after it.
"""

from __future__ import annotations

import heapq
from datetime import date, datetime
from functools import partial
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import FieldError, ValidationError
from domain.ids import name_id

CHUNK_SIZE = 1_000
CHUNK_NAMESPACE = UUID("3c1f5a0e-7b2d-4e8f-9a61-5d4c3b2a1f09")


class BatchItem(NamedTuple):
    """Immutable; a named tuple because the engine makes one per item and per run, and a
    frozen dataclass costs several times more to construct."""

    index: int  # type: ignore[assignment]  # position in the file (0-based); shadows tuple.index
    seq: int  # position in the processing order (0-based)
    end_to_end_id: str
    amount_minor: int  # 0 when the amount could not be read (then the item is invalid)
    currency: str
    channel: str
    payee: dict[str, Any] | None  # {"type": "bank_account", "iban", "name", "bic"} | account
    value_date: date | None
    priority: int
    depends_on: int | None  # the index of the item that must succeed first
    location: str
    reason_code: str | None = None  # None: valid
    reason: str | None = None
    remittance: str | None = None
    instruction_id: str | None = None
    payment_block_id: str | None = None
    has_dependents: bool = False  # another item depends on this one

    @property
    def valid(self) -> bool:
        return self.reason_code is None

    def to_record(self) -> list[Any]:
        return [
            self.index, self.seq, self.end_to_end_id, self.amount_minor, self.currency,
            self.channel, self.payee, self.value_date and self.value_date.isoformat(),
            self.priority, self.depends_on, self.location, self.reason_code, self.reason,
            self.remittance, self.instruction_id, self.payment_block_id, self.has_dependents,
        ]  # fmt: skip

    @classmethod
    def from_record(cls, r: list[Any]) -> BatchItem:
        day = r[7]
        if day is not None:
            if len(_DAYS) > 10_000:
                _DAYS.clear()
            day = _DAYS.get(day) or _DAYS.setdefault(day, date.fromisoformat(day))
        return _new_item(cls, (*r[:7], day, *r[8:17]))


_new_item = tuple.__new__
_DAYS: dict[str, date] = {}  # the few value dates of a batch, parsed once


def _order_key(item: BatchItem, *, order: str) -> tuple[Any, ...]:
    day = item.value_date or date.min
    if order == "priority":
        return (day, -item.priority, item.index)
    if order == "amount_asc":
        return (day, item.amount_minor, item.index)
    if order == "amount_desc":
        return (day, -item.amount_minor, item.index)
    return (day, item.index)  # "file" and "value_date" (the date always comes first)


def find_cycle(depends_on: dict[int, int]) -> list[int] | None:
    """A dependency cycle as the list of item indexes on it, or None."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for start in depends_on:
        path: list[int] = []
        node: int | None = start
        while node is not None and state.get(node) is None:
            state[node] = 1
            path.append(node)
            node = depends_on.get(node)
        if node is not None and state.get(node) == 1:
            return [*path[path.index(node) :], node]
        for visited in path:
            state[visited] = 2
    return None


def check_no_cycles(items: list[BatchItem]) -> None:
    depends_on = {i.index: i.depends_on for i in items if i.depends_on is not None}
    cycle = find_cycle(depends_on)
    if cycle is not None:
        chain = " -> ".join(str(i) for i in cycle)
        raise ValidationError(
            FieldError(
                f"items[{cycle[0]}].depends_on",
                f"dependency cycle between items {chain}: none of them could ever be paid",
                "dependency_cycle",
            )
        )


def processing_order(items: list[BatchItem], order: str) -> list[BatchItem]:
    """``items`` (acyclic) in processing order: dependencies first, and a dependent never before
    its dependency's value date. An item's ``seq`` is its position here, set when stored."""
    key = partial(_order_key, order=order)
    if all(i.depends_on is None for i in items):
        return sorted(items, key=key)  # stable: file order breaks ties
    by_index = {i.index: i for i in items}
    dependents: dict[int, list[int]] = {}
    waiting: dict[int, int] = {}
    for item in items:
        if item.depends_on is not None and item.depends_on in by_index:
            dependents.setdefault(item.depends_on, []).append(item.index)
            waiting[item.index] = 1
    ready = [(key(i), i.index) for i in items if i.index not in waiting]
    heapq.heapify(ready)
    ordered: list[BatchItem] = []
    earliest: dict[int, date] = {}  # a dependent's value date: at least its dependency's
    while ready:
        _key, index = heapq.heappop(ready)
        item = by_index[index]
        day = max(filter(None, (item.value_date, earliest.get(index))), default=None)
        if day != item.value_date or index in dependents:
            item = item._replace(value_date=day, has_dependents=index in dependents)
        ordered.append(item)
        for child in dependents.get(index, ()):
            if day is not None:
                earliest[child] = max(day, earliest.get(child, day))
            waiting[child] -= 1
            if not waiting[child]:
                child_item = by_index[child]
                later = earliest.get(child)
                if later and (child_item.value_date is None or child_item.value_date < later):
                    child_item = child_item._replace(value_date=later)  # for its sort key
                heapq.heappush(ready, (key(child_item), child))
    return ordered


def chunk_id(batch_id: UUID, number: int) -> UUID:
    return name_id(CHUNK_NAMESPACE, f"/batches/{batch_id}/chunks/{number}")


class BatchChunk(Aggregate):
    """Up to ``CHUNK_SIZE`` items of a batch, in processing order. Written once, at intake."""

    class Recorded(Aggregate.Created):
        actor: str
        tenant: str
        batch_id: str
        number: int
        items: list[list[Any]]  # BatchItem.to_record() each

        def apply(self, aggregate: Any) -> None:
            aggregate.tenant = self.tenant
            aggregate.batch_id = self.batch_id
            aggregate.number = self.number
            aggregate.records = self.items

    @classmethod
    def record(
        cls,
        *,
        batch_id: UUID,
        tenant: str,
        number: int,
        items: list[BatchItem],
        at: datetime,
        actor: str,
    ) -> BatchChunk:
        """``items``: positions ``number * CHUNK_SIZE`` on of the processing order."""
        first = number * CHUNK_SIZE
        records = []
        for offset, item in enumerate(items):
            record = item.to_record()
            record[1] = first + offset  # seq: the position in the processing order
            records.append(record)
        return cls._create(
            cls.Recorded,
            id=chunk_id(batch_id, number),
            timestamp=at,
            actor=actor,
            tenant=tenant,
            batch_id=str(batch_id),
            number=number,
            items=records,
        )

    def batch_items(self) -> list[BatchItem]:
        return [BatchItem.from_record(r) for r in self.records]  # type: ignore[attr-defined]
