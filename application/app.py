"""The event-sourced application: one ``eventsourcing`` Application holding every aggregate.

One application (one events table) is what makes a command's save atomic across the payment and
the accounts it touches. On PostgreSQL the tables are ``payledger_events`` and
``payledger_snapshots`` in the schema named by the database URL.
"""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.application import Application
from eventsourcing.domain import MutableOrImmutableAggregate

from domain.accounts import Account


class PayledgerApp(Application):
    name = "Payledger"
    # Hot accounts collect many events; a snapshot every 500 keeps a cold load short.
    snapshotting_intervals: ClassVar[dict[type[MutableOrImmutableAggregate[Any]], int]] = {
        Account: 500
    }
