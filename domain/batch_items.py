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
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import FieldError, ValidationError

CHUNK_SIZE = 1_000
CHUNK_NAMESPACE = UUID("3c1f5a0e-7b2d-4e8f-9a61-5d4c3b2a1f09")


@dataclass(frozen=True, slots=True)
class BatchItem:
    index: int  # position in the file (0-based)
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
        return cls(
            index=r[0], seq=r[1], end_to_end_id=r[2], amount_minor=r[3], currency=r[4],
            channel=r[5], payee=r[6], value_date=r[7] and date.fromisoformat(r[7]),
            priority=r[8], depends_on=r[9], location=r[10], reason_code=r[11], reason=r[12],
            remittance=r[13], instruction_id=r[14], payment_block_id=r[15],
            has_dependents=r[16],
        )  # fmt: skip


def _order_key(item: BatchItem, order: str) -> tuple[Any, ...]:
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
    """``items`` (acyclic) in processing order, with ``seq`` set; dependencies first, and a
    dependent never before its dependency's value date."""
    by_index = {i.index: i for i in items}
    dependents: dict[int, list[int]] = {}
    waiting: dict[int, int] = {}
    for item in items:
        if item.depends_on is not None and item.depends_on in by_index:
            dependents.setdefault(item.depends_on, []).append(item.index)
            waiting[item.index] = 1
    ready = [(_order_key(i, order), i.index) for i in items if i.index not in waiting]
    heapq.heapify(ready)
    ordered: list[BatchItem] = []
    earliest: dict[int, date] = {}
    while ready:
        _key, index = heapq.heappop(ready)
        item = by_index[index]
        day = max(filter(None, (item.value_date, earliest.get(index))), default=None)
        ordered.append(
            _with(item, seq=len(ordered), value_date=day, has_dependents=index in dependents)
        )
        for child in dependents.get(index, ()):
            if day is not None:
                earliest[child] = max(day, earliest.get(child, day))
            waiting[child] -= 1
            if not waiting[child]:
                child_item = by_index[child]
                later = earliest.get(child)
                key_item = child_item
                if later and (child_item.value_date is None or child_item.value_date < later):
                    key_item = _with(child_item, seq=child_item.seq, value_date=later)
                    # (only its sort key: the item itself is rebuilt when it is popped)
                heapq.heappush(ready, (_order_key(key_item, order), child))
    return ordered


def _with(
    item: BatchItem, *, seq: int, value_date: date | None, has_dependents: bool = False
) -> BatchItem:
    return replace(item, seq=seq, value_date=value_date, has_dependents=has_dependents)


def chunk_id(batch_id: UUID, number: int) -> UUID:
    return uuid5(CHUNK_NAMESPACE, f"/batches/{batch_id}/chunks/{number}")


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
        return cls._create(
            cls.Recorded,
            id=chunk_id(batch_id, number),
            timestamp=at,
            actor=actor,
            tenant=tenant,
            batch_id=str(batch_id),
            number=number,
            items=[i.to_record() for i in items],
        )

    def batch_items(self) -> list[BatchItem]:
        return [BatchItem.from_record(r) for r in self.records]  # type: ignore[attr-defined]
