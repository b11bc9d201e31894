"""The ``webhooks`` projection: the outbox of notifications, and the endpoints it matches against.

Tables (views, rebuilt by ``payledger replay`` like the others and compared by ``--verify``):

* ``view_webhook_endpoints``: one row per live endpoint (url, subscribed types, state, the
  *sealed* signing secrets with their expiry), mirrored from ``WebhookEndpoint`` events, so the
  projection and the deliverer match and sign without loading aggregates;
* ``view_webhook_payments``: the payments still in flight of tenants that had an enabled
  endpoint for payment events when the payment was requested (what a notification shows of
  them), deleted once final; a batch item's payment only while its outcome is unknown;
* ``view_webhook_batches``: every batch (tenant, currency, sizes, counts and amounts by
  outcome), from ``Batch.Submitted`` and its ``Batch.GroupRecorded`` progress: what
  ``batch.completed`` shows. Kept after ``Batch.Finished`` (a retry may finish it again),
  deleted when the batch is rejected or cancelled (it never finishes then). Every batch, not
  only those of tenants listening when it was submitted: a batch may wait days for its approval
  or execution date, and an endpoint registered meanwhile gets its completion;
* ``view_webhook_outbox``: one row per (endpoint, outcome event): the event id, type,
  per-entity sequence number (the payment's or the batch's version) and the JSON body, exactly
  as sent.

And, outside the views (operational state, never rebuilt nor dropped):

* ``webhook_deliveries``: one row per outbox row, inserted *in the same transaction* as the
  outbox row and the tracking position (``INSERT ... ON CONFLICT DO NOTHING``), then updated by
  the deliverer (status, attempts, next attempt);
* ``webhook_attempts``: every attempt (time, status code, error, duration, next retry).

So a crash never loses a notification (the row commits with the position that produced it)
nor invents one (no position, no row); a rebuild produces the same event ids and finds their
delivery state where it was, so it re-sends nothing.

Payment outcomes notified (``domain/webhooks.py``): ``Payment.Succeeded`` -> ``payment.succeeded``;
``Payment.Failed`` and ``Payment.Rejected`` (refused by the rules) -> ``payment.failed``;
``Payment.OutcomeUnknown`` -> ``payment.exception``. A payment in ``exception`` resolved later
notifies again, with a higher sequence number. A batch item's payment is created in its outcome
by one event, ``Payment.BatchItemProcessed``: it notifies that outcome (sequence 1, with the
batch id and item), and is tracked only if the outcome is ``exception`` (for its resolution).

Batches: every ``Batch.Finished`` (completed, completed_with_failures or failed; again after a
retry) -> ``batch.completed``, with the batch's version as the sequence number.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple
from uuid import UUID

import orjson

from domain.ids import name_id
from domain.money import format_amount
from domain.reconciliations import CATEGORIES, DISCREPANCIES
from domain.webhooks import (
    BATCH_COMPLETED,
    MAX_SECRETS,
    PAYMENT_TYPES,
    RECONCILIATION_DISCREPANCY,
    WEBHOOK_NAMESPACE,
)
from projections.base import RawEvent, ViewProjection, timestamp_us
from projections.batches import count_unsent_as_failed
from projections.db import ViewDB, table_columns

ENDPOINT_COLUMNS = (
    "endpoint_id", "tenant", "url", "events", "state", "secrets", "created_us", "updated_us",
    "version",
)  # fmt: skip
PAYMENT_COLUMNS = (
    "payment_id", "tenant", "kind", "state", "amount_minor", "currency", "channel", "payer",
    "payee", "description", "metadata", "failure_code", "failure_message", "channel_reference",
    "created_us", "completed_us", "latency_ms", "batch",
)  # fmt: skip
BATCH_COLUMNS = (
    "batch_id", "tenant", "currency", "funding_account_id", "format", "message_id",
    "item_count", "valid_item_count", "invalid_item_count", "control_sum_minor",
    "succeeded_count", "failed_count", "exception_count", "succeeded_minor", "failed_minor",
    "exception_minor", "created_us",
)  # fmt: skip
OUTCOMES = ("succeeded", "failed", "exception")
OUTBOX_COLUMNS = (
    "event_id", "endpoint_id", "tenant", "type", "entity_id", "sequence", "created_us",
    "position", "body",
)  # fmt: skip
DELIVERIES = "webhook_deliveries"
ATTEMPTS = "webhook_attempts"

TYPE_OF_EVENT = {
    "Payment.Succeeded": "payment.succeeded",
    "Payment.Failed": "payment.failed",
    "Payment.Rejected": "payment.failed",
    "Payment.OutcomeUnknown": "payment.exception",
}
STATE_OF_EVENT = {
    "Payment.Succeeded": "succeeded", "Payment.Failed": "failed", "Payment.Rejected": "rejected",
    "Payment.OutcomeUnknown": "exception",
}  # fmt: skip
STATUS_OF_STATE = {"succeeded": "succeeded", "failed": "failed", "rejected": "failed",
                   "exception": "exception"}  # fmt: skip
FINAL_STATES = frozenset({"succeeded", "failed", "rejected"})
BATCH_ITEM = "Payment.BatchItemProcessed"
CREATED_PAYMENTS = frozenset({"Payment.Requested", BATCH_ITEM})
BATCH_EVENTS = frozenset(
    f"Batch.{n}"
    for n in ("Submitted", "GroupRecorded", "ItemResolved", "Finished", "Rejected", "Cancelled")
)
RECONCILED = "Reconciliation.Completed"
ENDPOINT_EVENTS = frozenset(
    f"WebhookEndpoint.{n}"
    for n in ("Registered", "SecretRotated", "Disabled", "Enabled", "Deleted")
)


class _Tracked(NamedTuple):
    row: dict[str, Any]
    new: bool  # not in the table yet


def event_id_for(endpoint_id: str, entity: str, entity_id: str, sequence: int) -> str:
    """Stable: the same endpoint and entity version give the same id, in a rebuild too."""
    return str(name_id(WEBHOOK_NAMESPACE, f"{endpoint_id}/{entity}/{entity_id}/{sequence}"))


_EPOCH = datetime(1970, 1, 1)  # naive: isoformat() then has no offset, and "Z" is added


def iso(us: int | None) -> str | None:
    """As the API writes times (pydantic): ISO 8601 in UTC with ``Z``."""
    if us is None:
        return None
    return (_EPOCH + timedelta(microseconds=us)).isoformat() + "Z"


def delivery_tables(db: ViewDB) -> None:
    """The deliverer's tables (idempotent). Not views: a rebuild neither drops nor refills
    them, and they keep every delivery's state across rebuilds."""
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {DELIVERIES} ("
        "event_id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, tenant TEXT NOT NULL, "
        "type TEXT NOT NULL, entity_id TEXT NOT NULL, sequence BIGINT NOT NULL, "
        "created_us BIGINT NOT NULL, position BIGINT NOT NULL, body TEXT NOT NULL, "
        "status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_us BIGINT, "
        "last_attempt_us BIGINT, last_status_code INTEGER, last_error TEXT, completed_us BIGINT)"
    )
    db.execute(
        f"CREATE INDEX IF NOT EXISTS ix_{DELIVERIES}_due ON {DELIVERIES} (status, next_attempt_us)"
    )
    db.execute(
        f"CREATE INDEX IF NOT EXISTS ix_{DELIVERIES}_endpoint "
        f"ON {DELIVERIES} (endpoint_id, created_us, event_id)"
    )
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {ATTEMPTS} ("
        "event_id TEXT NOT NULL, attempt INTEGER NOT NULL, endpoint_id TEXT NOT NULL, "
        "at_us BIGINT NOT NULL, duration_ms BIGINT, status_code INTEGER, error TEXT, "
        "next_retry_us BIGINT, PRIMARY KEY (event_id, attempt))"
    )


class WebhooksProjection(ViewProjection):
    name = "webhooks"
    TABLES: ClassVar[dict[str, str]] = {
        "webhook_endpoints": (
            "endpoint_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, url TEXT NOT NULL, "
            "events TEXT NOT NULL, state TEXT NOT NULL, secrets TEXT NOT NULL, "
            "created_us BIGINT NOT NULL, updated_us BIGINT NOT NULL, version BIGINT NOT NULL"
        ),
        "webhook_payments": (
            "payment_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL, "
            "state TEXT NOT NULL, amount_minor BIGINT NOT NULL, currency TEXT NOT NULL, "
            "channel TEXT NOT NULL, payer TEXT NOT NULL, payee TEXT NOT NULL, description TEXT, "
            "metadata TEXT NOT NULL, failure_code TEXT, failure_message TEXT, "
            "channel_reference TEXT, created_us BIGINT NOT NULL, completed_us BIGINT, "
            "latency_ms BIGINT, batch TEXT"
        ),
        "webhook_batches": (
            "batch_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, currency TEXT NOT NULL, "
            "funding_account_id TEXT NOT NULL, format TEXT NOT NULL, message_id TEXT, "
            "item_count BIGINT NOT NULL, valid_item_count BIGINT NOT NULL, "
            "invalid_item_count BIGINT NOT NULL, control_sum_minor BIGINT NOT NULL, "
            "succeeded_count BIGINT NOT NULL, failed_count BIGINT NOT NULL, "
            "exception_count BIGINT NOT NULL, succeeded_minor BIGINT NOT NULL, "
            "failed_minor BIGINT NOT NULL, exception_minor BIGINT NOT NULL, "
            "created_us BIGINT NOT NULL"
        ),
        "webhook_outbox": (
            "event_id TEXT NOT NULL, endpoint_id TEXT NOT NULL, tenant TEXT NOT NULL, "
            "type TEXT NOT NULL, entity_id TEXT NOT NULL, sequence BIGINT NOT NULL, "
            "created_us BIGINT NOT NULL, position BIGINT NOT NULL, body TEXT NOT NULL, "
            "PRIMARY KEY (event_id)"
        ),
    }
    INDEXES: ClassVar[dict[str, list[str]]] = {
        "webhook_endpoints": ["tenant"],
        "webhook_outbox": ["endpoint_id, created_us"],
    }
    HANDLED = frozenset(
        {*CREATED_PAYMENTS, *TYPE_OF_EVENT, *BATCH_EVENTS, *ENDPOINT_EVENTS, RECONCILED}
    )
    APPEND_ONLY = frozenset({"webhook_outbox"})
    # A rebuild reads the tables once (through ``before_read``) and then works from memory.
    PIPELINED = True

    def create_tables(self, *, indexes: bool = True) -> None:
        super().create_tables(indexes=indexes)
        # Views made before batches lack ``batch`` (NULL for every payment they hold).
        payments = self.table("webhook_payments")
        if "batch" not in table_columns(self.db, payments):
            self.db.execute(f"ALTER TABLE {payments} ADD COLUMN batch TEXT")
        delivery_tables(self.db)

    # --- a page --------------------------------------------------------------------------------

    def __init__(self, view: Any, *, suffix: str = "") -> None:
        super().__init__(view, suffix=suffix)
        # A rebuild (``keep_rows``: this runner alone writes the side tables, from position 0)
        # keeps every endpoint and tracked payment in memory, so that preparing a page never
        # waits for the previous one to be written. None: read the tables.
        self._memory: _Memory | None = None

    def prepare_page(self, events: list[RawEvent]) -> Any:
        handled = self.HANDLED
        mine = [e for e in events if e.name in handled]
        if not mine:
            return None
        if not self._anything_to_do(mine):
            return None
        page = _Page(self, mine)
        for event in mine:
            page.apply(event)
        if self._memory is not None:
            self._memory.remember(page)
        return page.changes()

    def _anything_to_do(self, events: list[RawEvent]) -> bool:
        """Whether this page can change anything: one cheap query for the common case of a
        store where nobody has an endpoint (and no payment is tracked). Batch events always
        can: every batch is tracked (they are few)."""
        if any(e.name in ENDPOINT_EVENTS or e.name in BATCH_EVENTS for e in events):
            return True
        memory = self._loaded()
        if memory is not None:
            return bool(memory.endpoints or memory.payments)
        found = self.db.query(
            f"SELECT EXISTS (SELECT 1 FROM {self.table('webhook_endpoints')}), "
            f"EXISTS (SELECT 1 FROM {self.table('webhook_payments')})"
        )
        return any(found[0])

    def forget_rows(self) -> None:
        super().forget_rows()
        self._memory = None  # a page was not committed: the tables are the truth again

    def write_changes(self, changes: Any) -> None:
        (
            endpoints_new, endpoints_updated, endpoints_deleted, payments_new, payments_updated,
            payments_deleted, batches_new, batches_updated, batches_deleted, outbox,
        ) = changes  # fmt: skip
        db = self.db
        endpoints, payments = self.table("webhook_endpoints"), self.table("webhook_payments")
        if endpoints_new:
            _insert(db, endpoints, ENDPOINT_COLUMNS, endpoints_new)
        if endpoints_updated:
            assignments = ", ".join(f"{c} = ?" for c in ENDPOINT_COLUMNS[1:])
            db.executemany(
                f"UPDATE {endpoints} SET {assignments} WHERE endpoint_id = ?",
                [(*row[1:], row[0]) for row in endpoints_updated],
            )
        if endpoints_deleted:
            db.executemany(f"DELETE FROM {endpoints} WHERE endpoint_id = ?", endpoints_deleted)
        if payments_new:
            _insert(db, payments, PAYMENT_COLUMNS, payments_new)
        if payments_updated:
            assignments = ", ".join(f"{c} = ?" for c in PAYMENT_COLUMNS[1:])
            db.executemany(
                f"UPDATE {payments} SET {assignments} WHERE payment_id = ?",
                [(*row[1:], row[0]) for row in payments_updated],
            )
        if payments_deleted:
            db.executemany(f"DELETE FROM {payments} WHERE payment_id = ?", payments_deleted)
        batches = self.table("webhook_batches")
        if batches_new:
            _insert(db, batches, BATCH_COLUMNS, batches_new)
        if batches_updated:
            assignments = ", ".join(f"{c} = ?" for c in BATCH_COLUMNS[1:])
            db.executemany(
                f"UPDATE {batches} SET {assignments} WHERE batch_id = ?",
                [(*row[1:], row[0]) for row in batches_updated],
            )
        if batches_deleted:
            db.executemany(f"DELETE FROM {batches} WHERE batch_id = ?", batches_deleted)
        if outbox:
            _insert(db, self.table("webhook_outbox"), OUTBOX_COLUMNS, outbox)
            # The delivery rows: in the same transaction as the outbox rows and the position.
            # A rebuild (which writes the outbox into side tables) finds them there already.
            columns = (*OUTBOX_COLUMNS, "status", "attempts", "next_attempt_us")
            db.executemany(
                f"INSERT INTO {DELIVERIES} ({', '.join(columns)}) "
                f"VALUES ({','.join('?' * len(columns))}) ON CONFLICT (event_id) DO NOTHING",
                [(*row, "pending", 0, row[6]) for row in outbox],
            )

    # --- reading rows --------------------------------------------------------------------------

    def tracked_payments(self, ids: set[str]) -> list[dict[str, Any]]:
        memory = self._loaded()
        if memory is not None:
            return [memory.payments[i] for i in ids if i in memory.payments]
        return self._read("webhook_payments", "payment_id", PAYMENT_COLUMNS, ids)

    def tracked_batches(self, ids: set[str]) -> list[dict[str, Any]]:
        memory = self._loaded()
        if memory is not None:
            return [memory.batches[i] for i in ids if i in memory.batches]
        return self._read("webhook_batches", "batch_id", BATCH_COLUMNS, ids)

    def endpoints(self, ids: set[str], tenants: set[str]) -> list[dict[str, Any]]:
        """The endpoints with these ids, and every endpoint of these tenants (decoded)."""
        memory = self._loaded()
        if memory is not None:
            return [r for r in memory.endpoints.values()
                    if r["endpoint_id"] in ids or r["tenant"] in tenants]  # fmt: skip
        rows = self._read("webhook_endpoints", "endpoint_id", ENDPOINT_COLUMNS, ids)
        rows += self._read("webhook_endpoints", "tenant", ENDPOINT_COLUMNS, tenants)
        return [_decode_endpoint(r) for r in rows]

    def _loaded(self) -> _Memory | None:
        if self.kept is None:
            return None
        if self._memory is None:
            everything = self._read_all
            self._memory = _Memory(
                {r["endpoint_id"]: _decode_endpoint(r)
                 for r in everything("webhook_endpoints", ENDPOINT_COLUMNS)},
                {r["payment_id"]: r for r in everything("webhook_payments", PAYMENT_COLUMNS)},
                {r["batch_id"]: r for r in everything("webhook_batches", BATCH_COLUMNS)},
            )  # fmt: skip
        return self._memory

    def _read_all(self, table: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
        if self.before_read is not None:
            self.before_read()
        found = self.db.query(f"SELECT {', '.join(columns)} FROM {self.table(table)}")
        return [dict(zip(columns, r, strict=True)) for r in found]

    def _read(
        self, table: str, key: str, columns: tuple[str, ...], values: set[str]
    ) -> list[dict[str, Any]]:
        if not values:
            return []
        if self.before_read is not None:
            self.before_read()  # a pipelined rebuild: the pages handed over have committed
        found = self.db.select_in(columns, self.table(table), key, sorted(values), "text")
        return [dict(zip(columns, r, strict=True)) for r in found]


class _Memory(NamedTuple):
    endpoints: dict[str, dict[str, Any]]  # endpoint id -> row (decoded)
    payments: dict[str, dict[str, Any]]  # payment id -> row
    batches: dict[str, dict[str, Any]]  # batch id -> row

    def remember(self, page: _Page) -> None:
        """After a page is prepared: its rows as they will be once it is written."""
        for eid, tracked in page.endpoints.items():
            if eid in page.deleted_endpoints:
                self.endpoints.pop(eid, None)
            else:
                self.endpoints[eid] = tracked.row
        for pid, tracked in page.payments.items():
            if pid in page.deleted_payments:
                self.payments.pop(pid, None)
            else:
                self.payments[pid] = tracked.row
        for bid, tracked in page.batches.items():
            if bid in page.deleted_batches:
                self.batches.pop(bid, None)
            else:
                self.batches[bid] = tracked.row


def _insert(db: ViewDB, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    db.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})",
        rows,
    )


class _Page:
    """One page's work: the rows it touches, changed in memory in log order."""

    def __init__(self, projection: WebhooksProjection, events: list[RawEvent]) -> None:
        self.projection = projection
        created_payments = {e.originator_id for e in events if e.name in CREATED_PAYMENTS}
        created_endpoints = {
            e.originator_id for e in events if e.name == "WebhookEndpoint.Registered"
        }
        # Payments this page finishes that were requested before it, if they are tracked.
        finished = {e.originator_id for e in events if e.name in TYPE_OF_EVENT}
        self.payments: dict[str, _Tracked] = {
            row["payment_id"]: _Tracked(row, new=False)
            for row in projection.tracked_payments(finished - created_payments)
        }
        # Batches this page moves that were submitted before it (every batch is tracked, but
        # one submitted before this projection knew batches is not: it is left alone).
        created_batches = {e.originator_id for e in events if e.name == "Batch.Submitted"}
        moved = {e.originator_id for e in events if e.name in BATCH_EVENTS}
        self.batches: dict[str, _Tracked] = {
            row["batch_id"]: _Tracked(row, new=False)
            for row in projection.tracked_batches(moved - created_batches)
        }
        # Endpoints: those this page changes, and every endpoint of the tenants it concerns
        # (an endpoint's tenant never changes, so the page's own events name them all).
        touched = {e.originator_id for e in events if e.name in ENDPOINT_EVENTS}
        tenants = {
            e.data["tenant"]
            for e in events
            if e.name in CREATED_PAYMENTS or e.name == "Batch.Submitted"
        }
        tenants |= {t.row["tenant"] for t in self.payments.values()}
        tenants |= {t.row["tenant"] for t in self.batches.values()}
        self.endpoints: dict[str, _Tracked] = {
            row["endpoint_id"]: _Tracked(row, new=False)
            for row in projection.endpoints(touched - created_endpoints, tenants)
        }
        self.changed_endpoints: set[str] = set()
        self.deleted_endpoints: set[str] = set()
        self.changed_payments: set[str] = set()
        self.deleted_payments: set[str] = set()
        self.changed_batches: set[str] = set()
        self.deleted_batches: set[str] = set()
        self.outbox: list[tuple[Any, ...]] = []
        self._subscriptions: dict[str, list[dict[str, Any]]] = {}  # cleared by endpoint events

    # --- events, in log order ------------------------------------------------------------------

    def apply(self, e: RawEvent) -> None:
        name = e.name
        if name == "Payment.Requested":
            self._requested(e)
        elif name in TYPE_OF_EVENT:
            self._outcome(e)
        elif name == BATCH_ITEM:
            self._batch_item(e)
        elif name in BATCH_EVENTS:
            self._batch_event(e)
        elif name == RECONCILED:
            self._reconciled(e)
        else:
            self._endpoint_event(e)

    def _subscribed(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's enabled endpoints, oldest first (as of this point of the page)."""
        found = self._subscriptions.get(tenant)
        if found is None:
            found = self._subscriptions[tenant] = self._find_subscribed(tenant)
        return found

    def _find_subscribed(self, tenant: str) -> list[dict[str, Any]]:
        found = [
            t.row
            for eid, t in self.endpoints.items()
            if t.row["tenant"] == tenant
            and t.row["state"] == "enabled"
            and eid not in self.deleted_endpoints
        ]
        return sorted(found, key=lambda r: (r["created_us"], r["endpoint_id"]))

    def _listens_to_payments(self, tenant: str) -> bool:
        return any(PAYMENT_TYPES.intersection(r["events"]) for r in self._subscribed(tenant))

    def _requested(self, e: RawEvent) -> None:
        if not self._listens_to_payments(e.data["tenant"]):
            return  # nobody of this tenant listens to payments: not tracked
        self.payments[e.originator_id] = _Tracked(_payment_row(e), new=True)

    def _batch_item(self, e: RawEvent) -> None:
        """A batch item's payment, created in its outcome: notified at once. Tracked (like a
        payment requested then in ``exception``) only while its outcome is unknown, so that
        its resolution notifies again; a final one leaves no row."""
        d = e.data
        if not self._listens_to_payments(d["tenant"]):
            return
        row = _payment_row(e)
        state, at = d["outcome"], timestamp_us(d["completed_at"])
        row["state"] = state
        row["failure_code"], row["failure_message"] = d["code"], d["message"]
        row["channel_reference"] = d["channel_reference"]
        row["completed_us"] = at
        # Exactly as Payment.latency_ms computes it (float seconds, then truncated ms).
        row["latency_ms"] = int((at - row["created_us"]) / 1_000_000 * 1000)
        item = d["batch_item"]
        row["batch"] = orjson.dumps({
            "batch_id": d["batch_id"], "index": item["index"],
            "end_to_end_id": item["end_to_end_id"], "attempt": item["attempt"],
        }).decode()  # fmt: skip
        self.payments[e.originator_id] = _Tracked(row, new=True)
        if state in FINAL_STATES:
            self.deleted_payments.add(e.originator_id)  # new and final: never written
        self._notify_payment(row, e, at)

    def _outcome(self, e: RawEvent) -> None:
        """Mirror of the aggregate's ``apply`` (domain/payments.py), then the notifications."""
        tracked = self.payments.get(e.originator_id)
        if tracked is None:
            return
        row, d, name = tracked.row, e.data, e.name
        at = timestamp_us(d["timestamp"])
        row["state"] = STATE_OF_EVENT[name]
        if name != "Payment.Succeeded":
            row["failure_code"], row["failure_message"] = d["code"], d["message"]
        if name in ("Payment.Succeeded", "Payment.Failed"):
            row["channel_reference"] = d["channel_reference"]
        row["completed_us"] = at
        # Exactly as Payment.latency_ms computes it (float seconds, then truncated ms).
        row["latency_ms"] = int((at - row["created_us"]) / 1_000_000 * 1000)
        if row["state"] in FINAL_STATES:
            self.deleted_payments.add(e.originator_id)
        else:
            self.changed_payments.add(e.originator_id)
        self._notify_payment(row, e, at)

    def _notify_payment(self, row: dict[str, Any], e: RawEvent, at: int) -> None:
        kind = f"payment.{STATUS_OF_STATE[row['state']]}"
        self._notify(row["tenant"], kind, "payment", e, at,
                     lambda: _payment_body(row, kind, at, e.version))  # fmt: skip

    def _notify(
        self, tenant: str, kind: str, entity: str, e: RawEvent, at: int,
        render: Callable[[], str],
    ) -> None:  # fmt: skip
        """One outbox row per enabled endpoint of ``tenant`` subscribed to ``kind``, with the
        event's version as the sequence number; the body is rendered once, then given each
        endpoint's event id."""
        body = None
        for endpoint in self._subscribed(tenant):
            if kind not in endpoint["events"]:
                continue
            event_id = event_id_for(endpoint["endpoint_id"], entity, e.originator_id, e.version)
            body = body or render()
            self.outbox.append((
                event_id, endpoint["endpoint_id"], tenant, kind, e.originator_id, e.version, at,
                e.id, body.replace(_EVENT_ID_MARK, event_id, 1),
            ))  # fmt: skip

    def _batch_event(self, e: RawEvent) -> None:
        """Mirror of the Batch aggregate's counts and amounts (domain/batches.py), then
        ``batch.completed`` at each ``Batch.Finished``."""
        bid, d, name = e.originator_id, e.data, e.name
        if name == "Batch.Submitted":
            source = d["source"]
            self.batches[bid] = _Tracked(
                {
                    "batch_id": bid, "tenant": d["tenant"], "currency": d["currency"],
                    "funding_account_id": d["funding_account_id"],
                    "format": source.get("format", "json"),
                    "message_id": source.get("message_id"), "item_count": d["item_count"],
                    "valid_item_count": d["valid_item_count"],
                    "invalid_item_count": d["invalid_item_count"],
                    "control_sum_minor": d["control_sum_minor"],
                    **{f"{o}_count": 0 for o in OUTCOMES}, **{f"{o}_minor": 0 for o in OUTCOMES},
                    "created_us": timestamp_us(d["timestamp"]),
                },
                new=True,
            )  # fmt: skip
            return
        tracked = self.batches.get(bid)
        if tracked is None or bid in self.deleted_batches:
            return  # submitted before this projection knew batches
        row = tracked.row
        if name == "Batch.GroupRecorded":
            for outcome, n in d["counts"].items():
                row[f"{outcome}_count"] += n
            for outcome, n in d["amounts"].items():
                row[f"{outcome}_minor"] += n
            self.changed_batches.add(bid)
        elif name == "Batch.ItemResolved":
            outcome, amount = d["outcome"], d["amount_minor"]
            row["exception_count"] -= 1
            row[f"{outcome}_count"] += 1
            row["exception_minor"] -= amount
            row[f"{outcome}_minor"] += amount
            self.changed_batches.add(bid)
        elif name == "Batch.Finished":
            if d["status"] == "failed":
                count_unsent_as_failed(row)
                self.changed_batches.add(bid)
            at = timestamp_us(d["timestamp"])
            self._notify(row["tenant"], BATCH_COMPLETED, "batch", e, at,
                         lambda: _batch_body(row, d, at, e.version))  # fmt: skip
        else:  # rejected or cancelled: it will never finish
            self.deleted_batches.add(bid)

    def _reconciled(self, e: RawEvent) -> None:
        """``reconciliation.discrepancy`` when a run found anything but matches and timing."""
        d = e.data
        if sum(d["summary"].get(c, {}).get("count", 0) for c in DISCREPANCIES) == 0:
            return
        at = timestamp_us(d["timestamp"])
        self._notify(d["tenant"], RECONCILIATION_DISCREPANCY, "reconciliation", e, at,
                     lambda: _reconciliation_body(e, at))  # fmt: skip

    def _endpoint_event(self, e: RawEvent) -> None:
        self._subscriptions.clear()
        eid, d, name = e.originator_id, e.data, e.name
        at = timestamp_us(d["timestamp"])
        if name == "WebhookEndpoint.Registered":
            self.endpoints[eid] = _Tracked(
                {
                    "endpoint_id": eid, "tenant": d["tenant"], "url": d["url"],
                    "events": list(d["events"]), "state": "enabled",
                    "secrets": [[d["secret_sealed"], None]], "created_us": at,
                    "updated_us": at, "version": e.version,
                },
                new=True,
            )  # fmt: skip
            return
        tracked = self.endpoints.get(eid)
        if tracked is None:
            return  # an endpoint this projection never saw registered (cannot happen in order)
        row = tracked.row
        if name == "WebhookEndpoint.SecretRotated":
            # Mirror of WebhookEndpoint.SecretRotated.apply, with times in microseconds.
            current, *older = row["secrets"]
            expires = d["previous_expires_at"]
            expires_us = None if expires is None else timestamp_us(expires)
            kept = [[current[0], expires_us]] if expires_us is not None and expires_us > at else []
            kept += older
            secrets = [[d["secret_sealed"], None], *kept]
            row["secrets"] = [s for s in secrets if s[1] is None or s[1] > at][:MAX_SECRETS]
        elif name == "WebhookEndpoint.Disabled":
            row["state"] = "disabled"
        elif name == "WebhookEndpoint.Enabled":
            row["state"] = "enabled"
        elif name == "WebhookEndpoint.Deleted":
            self.deleted_endpoints.add(eid)
        row["updated_us"], row["version"] = at, e.version
        self.changed_endpoints.add(eid)

    # --- the changes ---------------------------------------------------------------------------

    def changes(self) -> Any:
        endpoints_new, endpoints_updated, endpoints_deleted = [], [], []
        for eid, tracked in self.endpoints.items():
            if eid in self.deleted_endpoints:
                if not tracked.new:
                    endpoints_deleted.append((eid,))
            elif tracked.new:
                endpoints_new.append(_encode_endpoint(tracked.row))
            elif eid in self.changed_endpoints:
                endpoints_updated.append(_encode_endpoint(tracked.row))
        payments_new, payments_updated, payments_deleted = [], [], []
        for pid, tracked in self.payments.items():
            if pid in self.deleted_payments:
                if not tracked.new:
                    payments_deleted.append((pid,))
            elif tracked.new:
                payments_new.append(tuple(tracked.row[c] for c in PAYMENT_COLUMNS))
            elif pid in self.changed_payments:
                payments_updated.append(tuple(tracked.row[c] for c in PAYMENT_COLUMNS))
        batches_new, batches_updated, batches_deleted = [], [], []
        for bid, tracked in self.batches.items():
            if bid in self.deleted_batches:
                if not tracked.new:
                    batches_deleted.append((bid,))
            elif tracked.new:
                batches_new.append(tuple(tracked.row[c] for c in BATCH_COLUMNS))
            elif bid in self.changed_batches:
                batches_updated.append(tuple(tracked.row[c] for c in BATCH_COLUMNS))
        if not (
            endpoints_new or endpoints_updated or endpoints_deleted or payments_new
            or payments_updated or payments_deleted or batches_new or batches_updated
            or batches_deleted or self.outbox
        ):  # fmt: skip
            return None
        return (
            endpoints_new, endpoints_updated, endpoints_deleted, payments_new, payments_updated,
            payments_deleted, batches_new, batches_updated, batches_deleted, self.outbox,
        )  # fmt: skip


def _payment_row(e: RawEvent) -> dict[str, Any]:
    """A tracked payment as requested (``Payment.Requested``, or the same fields of
    ``Payment.BatchItemProcessed``)."""
    d = e.data
    return {
        "payment_id": e.originator_id, "tenant": d["tenant"], "kind": d["kind"],
        "state": "requested", "amount_minor": d["amount_minor"], "currency": d["currency"],
        "channel": d["channel"], "payer": orjson.dumps(d["payer"]).decode(),
        "payee": orjson.dumps(d["payee"]).decode(), "description": d.get("description"),
        "metadata": orjson.dumps(d["metadata"]).decode(), "failure_code": None,
        "failure_message": None, "channel_reference": None,
        "created_us": timestamp_us(d["timestamp"]), "completed_us": None, "latency_ms": None,
        "batch": None,
    }  # fmt: skip


def _decode_endpoint(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "events": orjson.loads(row["events"]), "secrets": orjson.loads(row["secrets"])}


def _encode_endpoint(row: dict[str, Any]) -> tuple[Any, ...]:
    encoded = {
        **row,
        "events": orjson.dumps(row["events"]).decode(),
        "secrets": orjson.dumps(row["secrets"]).decode(),
    }
    return tuple(encoded[c] for c in ENDPOINT_COLUMNS)


# Replaced by each endpoint's event id: one rendering per outcome. The id is the body's first
# field, so the first occurrence is always it, whatever the payment's own data contains.
_EVENT_ID_MARK = "__payledger_event_id__"


def _payment_body(row: dict[str, Any], kind: str, at_us: int, sequence: int) -> str:
    """The notification's JSON: the payment as the API shows it (``PaymentOut``: amounts as
    decimal strings, times in UTC), never a card number (events never hold one)."""
    state = row["state"]
    payment = {
        "id": row["payment_id"],
        "status": STATUS_OF_STATE[state],
        "state": state,
        "kind": row["kind"],
        "amount": format_amount(row["amount_minor"], row["currency"]),
        "currency": row["currency"],
        "channel": row["channel"],
        "channel_reference": row["channel_reference"],
        "payer": orjson.Fragment(row["payer"]),  # stored as JSON already: copied as is
        "payee": orjson.Fragment(row["payee"]),
        "description": row["description"],
        "metadata": orjson.Fragment(row["metadata"]),
        "failure_code": row["failure_code"],
        "failure_message": row["failure_message"],
        "created_at": iso(row["created_us"]),
        "completed_at": iso(row["completed_us"]),
        "latency_ms": row["latency_ms"],
        "batch_id": None,
    }
    batch = row["batch"]
    if batch is not None:  # a batch item: its batch, and which item (and attempt) it is
        item = orjson.loads(batch)
        payment["batch_id"] = item.pop("batch_id")
        payment["batch_item"] = item
    body = {
        "id": _EVENT_ID_MARK,
        "type": kind,
        "created_at": iso(at_us),
        "entity": "payment",
        "entity_id": row["payment_id"],
        "sequence": sequence,
        "data": payment,
    }
    return orjson.dumps(body).decode()


def _batch_body(row: dict[str, Any], finished: dict[str, Any], at_us: int, sequence: int) -> str:
    """``batch.completed``: these fields of the batch as ``GET /v1/batches/{id}`` shows them
    once ``finished`` (the ``Batch.Finished`` event's fields) has finished it: counts by
    outcome, amounts as decimal strings in the currency's exponent, times in UTC."""
    currency = row["currency"]
    counts = {o: row[f"{o}_count"] for o in OUTCOMES}
    processed = sum(counts.values())
    counts["invalid"] = row["invalid_item_count"]
    counts["pending"] = max(0, row["valid_item_count"] - processed)  # valid, never sent
    batch = {
        "id": row["batch_id"],
        "status": finished["status"],
        "item_count": row["item_count"],
        "valid_item_count": row["valid_item_count"],
        "invalid_item_count": row["invalid_item_count"],
        "control_sum": format_amount(row["control_sum_minor"], currency),
        "currency": currency,
        "funding_account_id": row["funding_account_id"],
        "format": row["format"],
        "message_id": row["message_id"],
        "counts": counts,
        "amounts": {o: format_amount(row[f"{o}_minor"], currency) for o in OUTCOMES},
        "failure_code": finished["code"],
        "failure_message": finished["message"],
        "created_at": iso(row["created_us"]),
        "finished_at": iso(at_us),
        # T_b, as the API computes it (float seconds, then truncated ms).
        "processing_time_ms": int((at_us - row["created_us"]) / 1_000_000 * 1000),
    }
    body = {
        "id": _EVENT_ID_MARK,
        "type": BATCH_COMPLETED,
        "created_at": iso(at_us),
        "entity": "batch",
        "entity_id": row["batch_id"],
        "sequence": sequence,
        "data": batch,
    }
    return orjson.dumps(body).decode()


def _reconciliation_body(e: RawEvent, at_us: int) -> str:
    """``reconciliation.discrepancy``: the run's summary as ``GET /v1/reconciliations/{id}``
    shows it (counts, amounts as decimal strings), the balances' difference, and where to look."""
    d = e.data
    currency = d["balances"].get("currency")

    def amount(minor: int) -> str:
        return format_amount(minor, currency) if currency else str(minor)

    summary = {
        c: {"count": t.get("count", 0), "amount": amount(t.get("amount_minor", 0))}
        for c in CATEGORIES
        for t in [d["summary"].get(c, {})]
    }
    difference = d["balances"].get("difference_minor")
    run = {
        "id": e.originator_id,
        "channel": d["channel"],
        "currency": currency,
        "line_count": d["line_count"],
        "discrepancy_count": sum(summary.get(c, {}).get("count", 0) for c in DISCREPANCIES),
        "summary": summary,
        "difference": None if difference is None else amount(difference),
        "items_url": f"/v1/reconciliations/{e.originator_id}/items",
    }
    body = {
        "id": _EVENT_ID_MARK,
        "type": RECONCILIATION_DISCREPANCY,
        "created_at": iso(at_us),
        "entity": "reconciliation",
        "entity_id": e.originator_id,
        "sequence": e.version,
        "data": run,
    }
    return orjson.dumps(body).decode()


# --- reads: the delivery log ---------------------------------------------------------------------


class DeliveryRecord(NamedTuple):
    event_id: str
    endpoint_id: str
    type: str
    entity_id: str
    sequence: int
    created_us: int
    status: str  # pending | delivered | failed | cancelled
    attempts: int
    next_attempt_us: int | None
    last_attempt_us: int | None
    last_status_code: int | None
    last_error: str | None
    completed_us: int | None
    attempt_log: list[AttemptRecord]


class AttemptRecord(NamedTuple):
    attempt: int
    at_us: int
    duration_ms: int | None
    status_code: int | None
    error: str | None
    next_retry_us: int | None


DELIVERY_COLUMNS = (
    "event_id", "endpoint_id", "type", "entity_id", "sequence", "created_us", "status",
    "attempts", "next_attempt_us", "last_attempt_us", "last_status_code", "last_error",
    "completed_us",
)  # fmt: skip
STATUSES = ("pending", "delivered", "failed", "cancelled")


class DeliveryLog:
    """The delivery log of an endpoint, newest first (reads only; ``db`` may be shared)."""

    def __init__(self, db: ViewDB) -> None:
        self.db = db

    def deliveries(
        self,
        endpoint_id: UUID,
        tenant: str,
        *,
        status: str | None = None,
        limit: int = 50,
        before: tuple[int, str] | None = None,
        attempts_per_delivery: int = 50,
    ) -> list[DeliveryRecord]:
        """Up to ``limit`` deliveries of ``endpoint_id`` in ``tenant`` (both must match),
        created before ``before`` = (created_us, event_id), each with its attempts."""
        where = ["endpoint_id = ?", "tenant = ?"]
        params: list[Any] = [str(endpoint_id), tenant]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if before is not None:
            where.append("(created_us < ? OR (created_us = ? AND event_id < ?))")
            params += [before[0], before[0], before[1]]
        with self.db.snapshot():
            rows = self.db.query(
                f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM {DELIVERIES} "
                f"WHERE {' AND '.join(where)} ORDER BY created_us DESC, event_id DESC LIMIT ?",
                [*params, limit],
            )
            attempts: dict[str, list[AttemptRecord]] = {r[0]: [] for r in rows}
            if rows:
                found = self.db.select_in(
                    ("event_id", "attempt", "at_us", "duration_ms", "status_code", "error",
                     "next_retry_us"),
                    ATTEMPTS, "event_id", list(attempts), "text",
                )  # fmt: skip
                for event_id, *rest in sorted(found, key=lambda r: (r[0], r[1])):
                    attempts[event_id].append(AttemptRecord(*rest))
        return [
            DeliveryRecord(*row, attempts[row[0]][-attempts_per_delivery:])  # type: ignore[call-arg]
            for row in rows
        ]
