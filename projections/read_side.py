"""The read side of one process: the views' tables, an optional in-process follower that keeps
them current, and the read model the interfaces query.

    read = ReadSide(app, store, follow=True)   # the API process (PAYLEDGER_PROJECTIONS=inline)
    read.model.payments(...)                   # queries
    read.close()

With ``follow=False`` (``PAYLEDGER_PROJECTIONS=off``) another process keeps the views current:
``payledger project --follow``. With ``projector`` (``PAYLEDGER_PROJECTIONS=process``, what
``payledger serve`` runs) that other process is the API process's own child
(projections/projector_process.py), woken after each commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsourcing.application import Application

from application.store import StoreConfig
from projections.batch_queries import BatchQueries
from projections.db import ViewDB
from projections.projector_process import ProjectorProcess
from projections.queries import ReadModel
from projections.reconciliation_queries import ReconciliationQueries
from projections.runner import Follower, ProjectionRunner

# How long a read of one payment or account waits for the views to reach the log's end as it
# was when the request arrived (read-your-writes); after that it answers with what it has.
CONSISTENT_READ_TIMEOUT_S = 2.0


class ReadSide:
    def __init__(
        self,
        app: Application[Any],
        store: StoreConfig,
        *,
        follow: bool = False,
        create_tables: bool = True,
        projector: Callable[[], ProjectorProcess] | None = None,
    ) -> None:
        """``projector``: starts the process that keeps the views current, once the tables
        exist (it never creates them)."""
        self.app = app
        self.runner = ProjectionRunner(app, ViewDB(store))
        if create_tables:
            self.runner.create_tables()
        # What keeps the views current from this process: nudged after commits, stopped at close.
        self.follower: Follower | ProjectorProcess | None = (
            Follower(self.runner).start() if follow else projector() if projector else None
        )
        self.model = ReadModel(ViewDB(store), head=self.head, local=self.follower)
        self.batches = BatchQueries(self.model.db, lambda: self.model.position("batches"))
        self.reconciliations = ReconciliationQueries(
            self.model.db, lambda: self.model.position("reconciliations")
        )

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def nudge(self) -> None:
        if self.follower is not None:
            self.follower.nudge()

    def catch_up(self) -> int:
        """Bring the views up to the log's end on this thread (CLI commands, tests)."""
        return self.runner.catch_up()

    def consistent(self, projection: str, timeout_s: float = CONSISTENT_READ_TIMEOUT_S) -> bool:
        """Wait until ``projection`` has processed everything saved before this call."""
        return self.model.wait_for(projection, self.head(), timeout_s)

    def lag(self) -> dict[str, int]:
        head = self.head()
        return {name: max(0, head - self.model.position(name)) for name in ("payments", "accounts")}

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        self.runner.db.close()
        self.model.db.close()
