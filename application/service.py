"""``Payledger``: the platform service the interfaces talk to (commands and queries)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.utils import get_topic

from application.accounts import AccountHandlers
from application.app import PayledgerApp
from application.audit import derive_key
from application.batches.decisions import BatchEngineDecisions
from application.batches.handlers import BatchHandlers
from application.batches.runner import BatchRunner
from application.channels.base import Channel
from application.channels.http import close_channels, configured_channels
from application.clock import Clock, SystemClock
from application.commands import ANONYMOUS, Principal, SubmitPayment
from application.committer import Committer, Decide
from application.committer_process import RemoteCommitter
from application.drafts import validate_payment
from application.encryption import check_readable, cipher_env
from application.exceptions import ExceptionHandlers
from application.history import account_as_of, parse_as_of, payment_as_of_version
from application.keys import KeyHandlers
from application.ownership import Owners
from application.payments import PaymentHandlers
from application.reconciliation.runs import ReconciliationHandlers
from application.results import AccountResult, EventRecord, PaymentResult
from application.settings import Settings
from application.webhooks import WebhookHandlers
from domain.accounts import Account
from domain.errors import AccountNotFound, PaymentNotFound
from domain.payments import Payment

T = TypeVar("T")
# The log position of the current request's last save, for read-your-writes: each asyncio
# task (one per HTTP request) has its own copy.
LAST_POSITION: ContextVar[int | None] = ContextVar("payledger_last_position", default=None)
DECISION_HANDLERS = frozenset(
    {"accounts", "payments", "keys", "webhooks", "batches", "batch_engine", "reconciliations",
     "exceptions"}
)  # fmt: skip

# Event attributes shown as the audit envelope rather than as data.
ENVELOPE = ("originator_id", "originator_version", "timestamp", "originator_topic", "actor")
LEDGER_TOPICS = [get_topic(Account.Opened), get_topic(Account.Debited), get_topic(Account.Credited)]
SCAN_PAGE = 1_000


class Payledger:
    """One per process: owns the event-sourced application, the committer and the channels."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        channels: dict[str, Channel] | None = None,
        create_tables: bool = True,
    ) -> None:
        self.settings = settings or Settings()
        store = self.settings.store
        store.check_reachable()
        if create_tables:
            store.prepare()
        self.app = PayledgerApp(
            env=store.eventsourcing_env(
                create_table=create_tables, audit_key=derive_key(self.settings.secret_key)
            )
            | cipher_env(self.settings)  # encryption at rest (application/encryption.py)
        )
        try:
            check_readable(self.app)  # keys that cannot open the stored events: refuse now
        except Exception:
            self.app.close()
            raise
        self.clock = clock or SystemClock()
        self.committer: Committer | RemoteCommitter
        if self.settings.committer == "process":
            self.committer = RemoteCommitter(self.settings)
        else:
            self.committer = Committer(
                self.app,
                group_max=self.settings.commit_group_max,
                queue_max=self.settings.commit_queue_max,
                conflict_retries=self.settings.conflict_retries,
                clock=self.clock,
            )
        # Sandbox channels, or HttpChannel where PAYLEDGER_CHANNEL_<NAME>_URL is set. Channels
        # passed in belong to the caller, who closes them.
        self._own_channels = channels is None
        self.channels: dict[str, Channel] = channels or configured_channels(self.settings)
        self.secret_key = self.settings.secret_key.encode()
        self.accounts = AccountHandlers(self)
        self.payments = PaymentHandlers(self)
        self.keys = KeyHandlers(self)  # API keys and second factors (application/keys.py)
        self.webhooks = WebhookHandlers(self)  # webhook endpoints (application/webhooks.py)
        self.batches = BatchHandlers(self)  # batch payments (application/batches/)
        self.batch_engine = BatchEngineDecisions(self)  # the engine's saves
        self.batch_runner = BatchRunner(self)  # runs approved batches
        self.exceptions = ExceptionHandlers(self)  # unknown outcomes (application/exceptions.py)
        # Channel statements against the ledger (application/reconciliation/).
        self.reconciliations = ReconciliationHandlers(self)
        self.owners = Owners(self.app)  # which tenant owns an id (tenant isolation)
        # Called after each save (the read side follows the log sooner than its next poll).
        self.on_commit: Callable[[], None] | None = None

    def close(self) -> None:
        self.committer.stop()
        if self._own_channels:
            close_channels(self.channels.values())  # pooled HTTP connections
        self.app.close()

    def __enter__(self) -> Payledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def commit(self, handler: str, method: str, *args: Any) -> Any:
        """Have the committer run ``self.<handler>.<method>(*args, uow)`` and save its group.

        Decisions are named, not passed as closures, so that the committer can also live in
        another process (``PAYLEDGER_COMMITTER=process``), which resolves the name on its own
        service."""
        if isinstance(self.committer, RemoteCommitter):
            waiter = self.committer.submit_named(handler, method, args)
        else:
            waiter = self.committer.submit(self.decision(handler, method, *args))
        if not isinstance(waiter, asyncio.Future):
            waiter = asyncio.wrap_future(waiter)
        async with asyncio.timeout(self.settings.command_timeout_s):
            committed = await waiter
        if committed.position is not None:
            LAST_POSITION.set(committed.position)
            if self.on_commit is not None:
                self.on_commit()
        return committed.value

    def decision(self, handler: str, method: str, *args: Any) -> Decide[Any]:
        if handler not in DECISION_HANDLERS or not method.startswith("decide_"):
            raise LookupError(f"no decision {handler}.{method}")
        return partial(getattr(getattr(self, handler), method), *args)

    # --- commands ------------------------------------------------------------------------------

    async def submit_payment(
        self, cmd: SubmitPayment, principal: Principal = ANONYMOUS
    ) -> PaymentResult:
        draft = validate_payment(cmd, principal, now=self.clock.now(), secret_key=self.secret_key)
        return await self.payments.execute(draft)

    # --- queries (from the event store until the read side exists) -----------------------------

    def load_payment(self, payment_id: UUID) -> Payment | None:
        return self._load(payment_id, Payment)  # type: ignore[return-value]

    def get_payment(self, payment_id: UUID, principal: Principal = ANONYMOUS) -> PaymentResult:
        payment = self.load_payment(payment_id)
        if payment is None or payment.tenant != principal.tenant:
            raise PaymentNotFound(f"payment {payment_id} does not exist")
        return PaymentResult.of(payment)

    def get_account(self, account_id: UUID, principal: Principal = ANONYMOUS) -> AccountResult:
        account = self._load(account_id, Account)
        if not isinstance(account, Account) or account.tenant != principal.tenant:
            raise AccountNotFound(f"account {account_id} does not exist")
        return AccountResult.of(account)

    # --- time travel (application/history.py: rebuilt from the aggregate's own events) ---------

    def get_payment_as_of_version(
        self, payment_id: UUID, version: int, principal: Principal = ANONYMOUS
    ) -> PaymentResult:
        """The payment as it was once its ``version``-th event was recorded (1 = requested)."""
        return payment_as_of_version(self.app, payment_id, version, principal)

    def get_account_as_of(
        self, account_id: UUID, at: datetime | str, principal: Principal = ANONYMOUS
    ) -> AccountResult:
        """The account as it was at ``at``; text is ISO 8601, and a time without an offset
        is UTC."""
        when = parse_as_of(at) if isinstance(at, str) else at
        return account_as_of(self.app, account_id, when, principal)

    def payment_events(
        self, payment_id: UUID, principal: Principal = ANONYMOUS
    ) -> list[EventRecord]:
        self.get_payment(payment_id, principal)  # ownership and existence
        return [
            EventRecord(
                type=type(event).__name__,
                version=event.originator_version,
                timestamp=getattr(event, "timestamp"),  # noqa: B009 (not on the protocol)
                actor=getattr(event, "actor", None),
                data={k: v for k, v in vars(event).items() if k not in ENVELOPE},
            )
            for event in self.app.repository.event_store.get(payment_id)
        ]

    def trial_balance(self) -> dict[str, Any]:
        """Every posting ever made, summed per currency and per account, from the event log.

        The double-entry invariant says each currency's total is zero."""
        balances: dict[UUID, int] = defaultdict(int)
        currency_of: dict[UUID, str] = {}
        start = 0
        while True:
            page = self.app.recorder.select_notifications(
                start=start, limit=SCAN_PAGE, topics=LEDGER_TOPICS, inclusive_of_start=False
            )
            for notification in page:
                event: Any = self.app.mapper.to_domain_event(notification)
                if isinstance(event, Account.Opened):
                    currency_of[event.originator_id] = event.currency
                    balances[event.originator_id] += 0
                else:
                    sign = 1 if isinstance(event, Account.Credited) else -1
                    balances[event.originator_id] += sign * event.amount_minor
            if len(page) < SCAN_PAGE:
                break
            start = page[-1].id
        totals: dict[str, int] = defaultdict(int)
        accounts: dict[str, int] = defaultdict(int)
        for account_id, balance in balances.items():
            totals[currency_of[account_id]] += balance
            accounts[currency_of[account_id]] += 1
        return {"totals": dict(totals), "accounts": dict(accounts), "balances": dict(balances)}

    def _load(self, aggregate_id: UUID, cls: type) -> Any:
        try:
            found: Any = self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, cls) else None
