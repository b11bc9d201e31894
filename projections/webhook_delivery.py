"""The webhook deliverer: claims due notifications, posts them signed, records every attempt.

The ``webhooks`` projection (projections/webhooks.py) fills ``webhook_deliveries`` in the same
transaction as its outbox rows and tracking position; this module only sends them. It runs as a
thread of each API process (``PAYLEDGER_WEBHOOK_DELIVERY=inline``, the default) or as
``payledger webhooks deliver --follow``. Only one deliverer per store works at a time (a
PostgreSQL advisory lock per schema, or an ``flock`` beside the SQLite file); the others stand
by and take over when it stops.

* **Claims.** A due row (``pending``, ``next_attempt_us <= now``) is claimed in a transaction
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) by moving its next
  attempt a lease ahead, so no other claim sees it while its request runs. A deliverer killed
  mid-request leaves the row to be claimed again once the lease has passed.
* **Requests.** ``POST`` of the stored body (the same bytes every attempt) with
  ``Content-Type: application/json``, ``Payledger-Signature: t=<unix>,v1=<hex>[,v1=<hex>]``
  (HMAC-SHA256 with each live secret over ``f"{t}.{body}"``), ``Payledger-Event-Id``,
  ``Payledger-Event-Type`` and ``Payledger-Delivery-Attempt``; connect and read time-outs;
  redirects are not followed. A 2xx answer delivers it.
* **Retries.** Anything else (another status, a time-out, a refused connection) is retried
  after ``retry_base_s * 2**(attempt-1)`` seconds (at most ``retry_max_s``), each delay
  jittered down to half, until ``max_age_s`` (24 h) after the notification was created; the
  last attempt is made at that time, and then the delivery is marked ``failed``.
* **At least once.** A receiver may see a notification twice (a crash after the receiver
  answered but before the attempt was recorded): it has the same event id both times, and
  receivers deduplicate on it. The per-entity ``sequence`` lets them ignore stale events.
* Endpoint state is read from ``view_webhook_endpoints``: a deleted endpoint's pending
  deliveries are ``cancelled``; a disabled one's wait (without attempts) until it is enabled
  again or they expire.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any, NamedTuple
from uuid import UUID

import httpx
import orjson

from application.store import StoreConfig
from application.webhooks import SealError, WebhookSettings, signing_secrets
from projections.db import ViewDB
from projections.runner import Leadership
from projections.webhooks import ATTEMPTS, DELIVERIES

log = logging.getLogger("payledger.webhooks")

SIGNATURE_HEADER = "Payledger-Signature"
USER_AGENT = "Payledger-Webhooks/1"
ADVISORY_LOCK_KEY = 0x5057484B  # "PWHK"; the second key is the schema's hash
ENDPOINTS_VIEW = "view_webhook_endpoints"
DISABLED_RECHECK_S = 60.0
MAX_ERROR = 300


def sign(body: bytes, secrets: list[str], timestamp: int) -> str:
    """The ``Payledger-Signature`` value: ``t=<timestamp>`` and one ``v1=`` per secret."""
    signed = str(timestamp).encode() + b"." + body
    parts = [f"t={timestamp}"]
    parts += ["v1=" + hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join(parts)


def backoff_s(attempt: int, settings: WebhookSettings, rand: Callable[[], float]) -> float:
    """The delay after failed attempt number ``attempt`` (1, 2, ...): exponential, capped,
    jittered to between half and all of it."""
    delay = min(settings.retry_base_s * 2.0 ** min(attempt - 1, 62), settings.retry_max_s)
    return delay * (0.5 + 0.5 * rand())


class Claimed(NamedTuple):
    event_id: str
    endpoint_id: str
    type: str
    body: str
    attempts: int  # before this one
    created_us: int


class Outcome(NamedTuple):
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class DeliveryLock(Leadership):
    """Only one working deliverer per store: a PostgreSQL advisory lock per schema, or an
    ``flock`` on ``<sqlite file>.webhooks.lock`` (as the projections' leadership)."""

    def __init__(self, db: ViewDB) -> None:
        super().__init__(db, key=ADVISORY_LOCK_KEY, lock_suffix=".webhooks.lock")


class Deliverer:
    """Delivers due notifications of one store. ``start()`` runs it on a thread (``stop()``
    ends it); ``run_once()`` / ``drain()`` deliver on the calling thread (CLI, tests)."""

    def __init__(
        self,
        store: StoreConfig,
        secret_key: str,
        settings: WebhookSettings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        standby_s: float = 1.0,
    ) -> None:
        self.settings = settings or WebhookSettings()
        self.db = ViewDB(store)
        self.lock = DeliveryLock(self.db)
        self._secret_key = secret_key
        self._transport = transport
        self._clock, self._rand = clock, rand
        self.standby_s = standby_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(self.settings.concurrency, "payledger-webhook")
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._clients_lock = threading.Lock()
        self._inflight: set[Future[Any]] = set()
        self.errors = 0

    # --- life ----------------------------------------------------------------------------------

    def start(self) -> Deliverer:
        self._thread = threading.Thread(
            target=self._run, name="payledger-webhook-deliverer", daemon=True
        )
        self._thread.start()
        return self

    def nudge(self) -> None:
        self._wake.set()

    @property
    def stop_event(self) -> threading.Event:
        """Set it to stop ``run_forever`` (a signal handler may)."""
        return self._stop

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop claiming; wait up to ``timeout_s`` for requests in flight (those still running
        then are claimed again after their lease: at-least-once)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.close(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        wait_futures(list(self._inflight), timeout_s)
        with self._clients_lock:
            for client in self._clients:
                with contextlib.suppress(Exception):
                    client.close()
            self._clients.clear()
        with contextlib.suppress(Exception):
            self.lock.release()
        with contextlib.suppress(Exception):
            self.db.close()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def is_leader(self) -> bool:
        return self.lock.held

    def run_forever(self) -> None:
        """For ``payledger webhooks deliver --follow``: the loop on the calling thread."""
        self._run()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.lock.try_acquire():
                    self._stop.wait(self.standby_s)
                    continue
                self._inflight = {f for f in self._inflight if not f.done()}
                free = self.settings.concurrency - len(self._inflight)
                claimed = self.claim(free) if free > 0 else []
                for item in claimed:
                    self._inflight.add(self._pool.submit(self._deliver_and_wake, item))
                if len(claimed) < free or free <= 0:
                    self._wake.wait(self.settings.poll_s)
                    self._wake.clear()
            except Exception:
                self.errors += 1
                log.exception("webhook deliverer failed; retrying in 1 s")
                self._stop.wait(1.0)

    def _deliver_and_wake(self, item: Claimed) -> None:
        try:
            self.deliver(item)
        except Exception:
            self.errors += 1
            log.exception("webhook delivery %s failed to run; retried after its lease", item[0])
        finally:
            self._wake.set()

    # --- on the calling thread -----------------------------------------------------------------

    def run_once(self) -> int:
        """Claim what is due (up to ``concurrency``), deliver it, wait; returns how many
        attempts were made (0: nothing due, or another deliverer leads)."""
        if not self.lock.try_acquire():
            return 0
        claimed = self.claim(self.settings.concurrency)
        futures = [self._pool.submit(self.deliver, item) for item in claimed]
        wait_futures(futures)
        for future in futures:
            future.result()
        return len(claimed)

    def drain(self) -> int:
        """``run_once`` until nothing is due now; returns the attempts made."""
        total = 0
        while not self._stop.is_set():
            done = self.run_once()
            if done == 0:
                return total
            total += done
        return total

    # --- the work ------------------------------------------------------------------------------

    def now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    def claim(self, limit: int) -> list[Claimed]:
        """Up to ``limit`` due notifications, hidden from other claims for a lease."""
        now = self.now_us()
        due = (
            f"FROM {DELIVERIES} WHERE status = 'pending' AND next_attempt_us <= ? "
            "ORDER BY next_attempt_us"
        )
        # A plain read first: an idle deliverer never takes SQLite's write lock.
        if not self.db.query(f"SELECT 1 {due} LIMIT 1", (now,)):
            return []
        lock = " FOR UPDATE SKIP LOCKED" if self.db.is_postgres else ""
        lease = now + int(self.settings.lease_s * 1_000_000)
        with self.db.transaction():
            rows = self.db.query(
                "SELECT event_id, endpoint_id, type, body, attempts, created_us "
                f"{due} LIMIT ?{lock}",
                (now, limit),
            )
            self.db.executemany(
                f"UPDATE {DELIVERIES} SET next_attempt_us = ? WHERE event_id = ?",
                [(lease, r[0]) for r in rows],
            )
        return [Claimed(*r) for r in rows]

    def deliver(self, item: Claimed) -> str:
        """One attempt (or none, for an endpoint deleted or disabled); returns the delivery's
        status afterwards."""
        now = self.now_us()
        deadline = item.created_us + int(self.settings.max_age_s * 1_000_000)
        endpoint = self.db.query(
            f"SELECT url, state, secrets FROM {ENDPOINTS_VIEW} WHERE endpoint_id = ?",
            (item.endpoint_id,),
        )
        if not endpoint:
            self._close_without_attempt(item, "cancelled", "the endpoint was deleted")
            return "cancelled"
        url, state, sealed = endpoint[0]
        if state != "enabled":
            if now >= deadline:
                self._close_without_attempt(
                    item, "failed", "the endpoint stayed disabled until the notification expired"
                )
                return "failed"
            later = min(now + int(DISABLED_RECHECK_S * 1_000_000), deadline)
            self.db.execute(
                f"UPDATE {DELIVERIES} SET next_attempt_us = ? "
                "WHERE event_id = ? AND status = 'pending'",
                (later, item.event_id),
            )
            return "pending"
        try:
            secrets = signing_secrets(
                orjson.loads(sealed), UUID(item.endpoint_id), self._secret_key, now
            )
        except SealError as e:
            outcome = Outcome(None, f"{e} (rotate the endpoint's secret)", 0)
        else:
            outcome = self._post(url, item, secrets)
        return self._record(item, outcome, deadline)

    def _post(self, url: str, item: Claimed, secrets: list[str]) -> Outcome:
        body = item.body.encode()
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(body, secrets, timestamp),
            "Payledger-Event-Id": item.event_id,
            "Payledger-Event-Type": item.type,
            "Payledger-Delivery-Attempt": str(item.attempts + 1),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            # Streamed and never read: a receiver's answer body is not wanted, whatever its size.
            with self._client().stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
            if 300 <= status < 400:
                error = f"redirect ({status}) not followed"
            elif not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.TimeoutException as e:
            error = f"timeout ({type(e).__name__})"
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"[:MAX_ERROR]
        duration_ms = int((time.perf_counter() - started) * 1000)
        return Outcome(status, error, duration_ms)

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            s = self.settings
            client = httpx.Client(
                timeout=httpx.Timeout(
                    connect=s.connect_timeout_s, read=s.read_timeout_s,
                    write=s.read_timeout_s, pool=s.connect_timeout_s,
                ),
                follow_redirects=False,
                transport=self._transport,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            )  # fmt: skip
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _record(self, item: Claimed, outcome: Outcome, deadline: int) -> str:
        now = self.now_us()
        attempt = item.attempts + 1
        error = outcome.error
        next_us: int | None = None
        completed: int | None = now
        if outcome.ok:
            status = "delivered"
        elif now >= deadline:
            status = "failed"
            error = f"{error}; gave up {self.settings.max_age_s:g} s after it was created"
        else:
            status = "pending"
            completed = None
            next_us = now + int(backoff_s(attempt, self.settings, self._rand) * 1_000_000)
            next_us = min(next_us, deadline)  # the last attempt is made at the deadline
        with self.db.transaction():
            self.db.execute(
                f"INSERT INTO {ATTEMPTS} (event_id, attempt, endpoint_id, at_us, duration_ms, "
                "status_code, error, next_retry_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id, attempt) DO NOTHING",
                (item.event_id, attempt, item.endpoint_id, now, outcome.duration_ms,
                 outcome.status_code, error, next_us),
            )  # fmt: skip
            self.db.execute(
                f"UPDATE {DELIVERIES} SET status = ?, attempts = ?, next_attempt_us = ?, "
                "last_attempt_us = ?, last_status_code = ?, last_error = ?, completed_us = ? "
                "WHERE event_id = ? AND status = 'pending'",
                (status, attempt, next_us, now, outcome.status_code, error, completed,
                 item.event_id),
            )  # fmt: skip
        if status == "failed":
            log.warning(
                "webhook %s to endpoint %s failed for good after %d attempts",
                item.event_id, item.endpoint_id, attempt,
            )  # fmt: skip
        else:
            log.debug("webhook %s attempt %d: %s", item.event_id, attempt, error or "delivered")
        return status

    def _close_without_attempt(self, item: Claimed, status: str, reason: str) -> None:
        self.db.execute(
            f"UPDATE {DELIVERIES} SET status = ?, next_attempt_us = NULL, last_error = ?, "
            "completed_us = ? WHERE event_id = ? AND status = 'pending'",
            (status, reason, self.now_us(), item.event_id),
        )


def start_deliverer(store: StoreConfig, secret_key: str, settings: WebhookSettings) -> Deliverer:
    """The deliverer thread of an API process."""
    return Deliverer(store, secret_key, settings).start()
