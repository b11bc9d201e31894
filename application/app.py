"""The event-sourced application: one ``eventsourcing`` Application holding every aggregate.

One application (one events table) is what makes a command's save atomic across the payment and
the accounts it touches. On PostgreSQL the tables are ``payledger_events`` and
``payledger_snapshots`` in the schema named by the database URL.
"""

from __future__ import annotations

from collections.abc import Iterable

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import Transcoder

from application.transcoder import OrjsonTranscoder
from domain.accounts import Account
from domain.keys import ApiKey

# Hot accounts collect many events; a snapshot every so many keeps a cold load short.
# A key records each accepted second-factor code, and is read again every second or so.
SNAPSHOT_INTERVAL: dict[type[Aggregate], int] = {Account: 500, ApiKey: 100}


class PayledgerApp(Application):
    name = "Payledger"
    # Snapshots are enabled, but taken by take_snapshots_of() from the aggregate just saved,
    # not by the library, which would re-read the aggregate's events from the store to do it.
    is_snapshotting_enabled = True

    def construct_transcoder(self) -> Transcoder:
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def take_snapshots_of(self, saved: Iterable[tuple[Aggregate, int]]) -> None:
        """Snapshot each saved aggregate whose versions since ``version_before`` crossed an
        interval boundary. Call only after its save succeeded."""
        snapshots = []
        for aggregate, version_before in saved:
            interval = SNAPSHOT_INTERVAL.get(type(aggregate))
            if interval and aggregate.version // interval > version_before // interval:
                snapshots.append(Snapshot.take(aggregate))
        if snapshots and self.snapshots is not None:
            self.snapshots.put(snapshots)
