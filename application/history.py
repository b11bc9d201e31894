"""Time travel: a payment or an account as it was, rebuilt from its events in the event store.

Reads go to the aggregate's own events (never to a projection), so a past state is exactly what
the ledger recorded then. The tenant rule is the one of ``Payledger.get_payment``/``get_account``:
another tenant's id answers "not found", like an unknown one, and is checked before anything
that could tell them apart (a version count, an opening time).

Times: ISO 8601. A time without an offset is read as UTC. An aggregate's events are recorded in
time order (one clock stamps every command), so "the state at T" is its events up to the first
one stamped after T.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application

from application.commands import Principal
from application.results import AccountResult, PaymentResult
from domain.accounts import Account
from domain.errors import AccountNotFound, PaymentNotFound, ValidationError
from domain.payments import Payment

VERSION_FIELD = "as_of_version"
AS_OF_FIELD = "as_of"
MAX_AS_OF_LENGTH = 64
EVENT_PAGE = 500  # events read per query while looking for the first one after the time
SNAPSHOT_PAGE = 20
# An unencoded "+" in a query string arrives as a space: "...T12:00:00 08:00" means "+08:00".
_PLUS_AS_SPACE = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}(?::?\d{2})?)$")


def parse_as_of(text: str) -> datetime:
    """An ISO 8601 date-time (``2026-01-31T12:00:00Z``, ``...+08:00``); without an offset, UTC.

    Raises a ValidationError on the field ``as_of`` that never repeats the input."""
    value = text.strip()
    if not value or len(value) > MAX_AS_OF_LENGTH:
        raise _bad_as_of()
    value = _PLUS_AS_SPACE.sub(r"\1+\2", value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _bad_as_of() from None
    try:
        return as_utc(parsed)
    except OverflowError:  # e.g. 0001-01-01T00:30:00+05:00: before the first UTC instant
        raise _bad_as_of() from None


def as_utc(at: datetime) -> datetime:
    """``at`` in UTC; a naive time is taken to be UTC already."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def payment_as_of_version(
    app: Application, payment_id: UUID, version: int, principal: Principal
) -> PaymentResult:
    """The payment as it was once its ``version``-th event was recorded (1 = as requested).

    ``as_of`` in the result is when that event was recorded."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValidationError.single(VERSION_FIELD, "must be a whole number, 1 or more", "invalid")
    latest = _load(app, payment_id)
    if not isinstance(latest, Payment) or latest.tenant != principal.tenant:
        raise PaymentNotFound(f"payment {payment_id} does not exist")
    if version > latest.version:
        raise ValidationError.single(
            VERSION_FIELD, f"payment has only {latest.version} versions", "version_not_reached"
        )
    payment = latest
    if version < latest.version:
        payment = app.repository.get(payment_id, version=version)
    return replace(PaymentResult.of(payment), as_of_version=version, as_of=payment.modified_on)


def account_as_of(
    app: Application, account_id: UUID, at: datetime, principal: Principal
) -> AccountResult:
    """The account as it was at ``at``: every event recorded at or before it, none after.

    ``as_of`` in the result is ``at`` in UTC; ``as_of_version`` the account's version then."""
    at = as_utc(at)
    opened = next(iter(app.repository.event_store.get(account_id, limit=1)), None)
    if not isinstance(opened, Account.Opened) or opened.tenant != principal.tenant:
        raise AccountNotFound(f"account {account_id} does not exist")
    if as_utc(opened.timestamp) > at:
        raise AccountNotFound(
            f"account {account_id} did not exist yet at {at.isoformat()}: "
            f"it was opened at {as_utc(opened.timestamp).isoformat()}"
        )
    account: Any = _latest_snapshot_by(app, account_id, at)
    version = account.version if account is not None else 0
    while True:
        page = list(app.repository.event_store.get(account_id, gt=version, limit=EVENT_PAGE))
        event: Any
        for event in page:
            if as_utc(event.timestamp) > at:
                return _account_result(account, at)
            account = event.mutate(account)
            version = event.originator_version
        if len(page) < EVENT_PAGE:
            return _account_result(account, at)


def _account_result(account: Any, at: datetime) -> AccountResult:
    assert isinstance(account, Account)  # the opening event is at or before ``at``
    return replace(AccountResult.of(account), as_of_version=account.version, as_of=at)


def _latest_snapshot_by(app: Application, account_id: UUID, at: datetime) -> Account | None:
    """The newest snapshot of the account as it was at or before ``at``, if one was taken: a
    hot account then replays at most one snapshot interval of events instead of its history."""
    if app.snapshots is None:
        return None
    below: int | None = None
    while True:
        page = list(app.snapshots.get(account_id, lte=below, desc=True, limit=SNAPSHOT_PAGE))
        snapshot: Any
        for snapshot in page:
            account = snapshot.mutate(None)
            if isinstance(account, Account) and as_utc(account.modified_on) <= at:
                return account
        if len(page) < SNAPSHOT_PAGE:
            return None
        below = page[-1].originator_version - 1


def _load(app: Application, aggregate_id: UUID) -> Any:
    try:
        return app.repository.get(aggregate_id)
    except AggregateNotFoundError:
        return None


def _bad_as_of() -> ValidationError:
    return ValidationError.single(
        AS_OF_FIELD,
        "must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z (no offset: UTC)",
        "invalid_datetime",
    )
