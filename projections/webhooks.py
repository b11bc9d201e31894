"""The ``webhooks`` projection: the outbox of notifications, and the endpoints it matches against.

Tables (views, rebuilt by ``payledger replay`` like the others and compared by ``--verify``):

* ``view_webhook_endpoints``: one row per live endpoint (url, subscribed types, state, the
  *sealed* signing secrets with their expiry), mirrored from ``WebhookEndpoint`` events, so the
  projection and the deliverer match and sign without loading aggregates;
* ``view_webhook_payments``: the payments still in flight of tenants that had an enabled
  endpoint for payment events when the payment was requested (what a notification shows of
  them), deleted once final;
* ``view_webhook_outbox``: one row per (endpoint, payment outcome event): the event id, type,
  per-entity sequence number (the payment's version) and the JSON body, exactly as sent.

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
notifies again, with a higher sequence number.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple
from uuid import UUID, uuid5

import orjson

from domain.money import format_amount
from domain.webhooks import MAX_SECRETS, PAYMENT_TYPES, WEBHOOK_NAMESPACE
from projections.base import RawEvent, ViewProjection, timestamp_us
from projections.db import ViewDB

ENDPOINT_COLUMNS = (
    "endpoint_id", "tenant", "url", "events", "state", "secrets", "created_us", "updated_us",
    "version",
)  # fmt: skip
PAYMENT_COLUMNS = (
    "payment_id", "tenant", "kind", "state", "amount_minor", "currency", "channel", "payer",
    "payee", "description", "metadata", "failure_code", "failure_message", "channel_reference",
    "created_us", "completed_us", "latency_ms",
)  # fmt: skip
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
ENDPOINT_EVENTS = frozenset(
    f"WebhookEndpoint.{n}"
    for n in ("Registered", "SecretRotated", "Disabled", "Enabled", "Deleted")
)


class _Tracked(NamedTuple):
    row: dict[str, Any]
    new: bool  # not in the table yet


def event_id_for(endpoint_id: str, entity: str, entity_id: str, sequence: int) -> str:
    """Stable: the same endpoint and entity version give the same id, in a rebuild too."""
    return str(uuid5(WEBHOOK_NAMESPACE, f"{endpoint_id}/{entity}/{entity_id}/{sequence}"))


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
            "latency_ms BIGINT"
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
    HANDLED = frozenset({"Payment.Requested", *TYPE_OF_EVENT, *ENDPOINT_EVENTS})
    APPEND_ONLY = frozenset({"webhook_outbox"})
    # A rebuild reads the tables once (through ``before_read``) and then works from memory.
    PIPELINED = True

    def create_tables(self, *, indexes: bool = True) -> None:
        super().create_tables(indexes=indexes)
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
        store where nobody has an endpoint (and no payment is tracked)."""
        if any(e.name in ENDPOINT_EVENTS for e in events):
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
        endpoints_new, endpoints_updated, endpoints_deleted, payments_new, payments_updated, \
            payments_deleted, outbox = changes  # fmt: skip
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


def _insert(db: ViewDB, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    db.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})",
        rows,
    )


class _Page:
    """One page's work: the rows it touches, changed in memory in log order."""

    def __init__(self, projection: WebhooksProjection, events: list[RawEvent]) -> None:
        self.projection = projection
        created_payments = {e.originator_id for e in events if e.name == "Payment.Requested"}
        created_endpoints = {
            e.originator_id for e in events if e.name == "WebhookEndpoint.Registered"
        }
        # Payments this page finishes that were requested before it, if they are tracked.
        finished = {e.originator_id for e in events if e.name in TYPE_OF_EVENT}
        self.payments: dict[str, _Tracked] = {
            row["payment_id"]: _Tracked(row, new=False)
            for row in projection.tracked_payments(finished - created_payments)
        }
        # Endpoints: those this page changes, and every endpoint of the tenants it concerns
        # (an endpoint's tenant never changes, so the page's own events name them all).
        touched = {e.originator_id for e in events if e.name in ENDPOINT_EVENTS}
        tenants = {e.data["tenant"] for e in events if e.name == "Payment.Requested"}
        tenants |= {t.row["tenant"] for t in self.payments.values()}
        self.endpoints: dict[str, _Tracked] = {
            row["endpoint_id"]: _Tracked(row, new=False)
            for row in projection.endpoints(touched - created_endpoints, tenants)
        }
        self.changed_endpoints: set[str] = set()
        self.deleted_endpoints: set[str] = set()
        self.changed_payments: set[str] = set()
        self.deleted_payments: set[str] = set()
        self.outbox: list[tuple[Any, ...]] = []
        self._subscriptions: dict[str, list[dict[str, Any]]] = {}  # cleared by endpoint events

    # --- events, in log order ------------------------------------------------------------------

    def apply(self, e: RawEvent) -> None:
        name = e.name
        if name == "Payment.Requested":
            self._requested(e)
        elif name in TYPE_OF_EVENT:
            self._outcome(e)
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

    def _requested(self, e: RawEvent) -> None:
        d = e.data
        endpoints = self._subscribed(d["tenant"])
        if not any(PAYMENT_TYPES.intersection(r["events"]) for r in endpoints):
            return  # nobody of this tenant listens to payments: not tracked
        self.payments[e.originator_id] = _Tracked(
            {
                "payment_id": e.originator_id, "tenant": d["tenant"], "kind": d["kind"],
                "state": "requested", "amount_minor": d["amount_minor"],
                "currency": d["currency"], "channel": d["channel"],
                "payer": orjson.dumps(d["payer"]).decode(),
                "payee": orjson.dumps(d["payee"]).decode(),
                "description": d.get("description"),
                "metadata": orjson.dumps(d["metadata"]).decode(), "failure_code": None,
                "failure_message": None, "channel_reference": None,
                "created_us": timestamp_us(d["timestamp"]), "completed_us": None,
                "latency_ms": None,
            },
            new=True,
        )  # fmt: skip

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
        kind = TYPE_OF_EVENT[name]
        body = None
        for endpoint in self._subscribed(row["tenant"]):
            if kind not in endpoint["events"]:
                continue
            event_id = event_id_for(endpoint["endpoint_id"], "payment", e.originator_id, e.version)
            body = body or _payment_body(row, kind, at, e.version)
            self.outbox.append((
                event_id, endpoint["endpoint_id"], row["tenant"], kind, e.originator_id,
                e.version, at, e.id, body.replace(_EVENT_ID_MARK, event_id, 1),
            ))  # fmt: skip

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
        if not (
            endpoints_new or endpoints_updated or endpoints_deleted or payments_new
            or payments_updated or payments_deleted or self.outbox
        ):  # fmt: skip
            return None
        return (
            endpoints_new, endpoints_updated, endpoints_deleted, payments_new, payments_updated,
            payments_deleted, self.outbox,
        )  # fmt: skip


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
    }
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
