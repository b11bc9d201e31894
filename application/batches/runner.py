"""Who runs batches, and when: at once when approved (or retried), on their date when scheduled,
and again after a restart for any batch left ``processing``.

In the server, ``kick()`` starts the engine in a task and the scheduler (``schedule()``) looks
for due and unfinished batches every ``PAYLEDGER_BATCH_SCHEDULER_INTERVAL_S`` seconds, first
at start-up (that is the resume). The CLI runs them in the foreground (``run``, ``run_due``).
Several workers may all try: the engine's per-batch lock lets one run each batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.utils import get_topic

from application.batches.engine import BatchEngine, Progress
from application.batches.results import BatchResult
from domain.batches import RUNNABLE, Batch

if TYPE_CHECKING:
    from application.service import Payledger

log = logging.getLogger(__name__)
SCAN_PAGE = 1_000
# Events after which a batch may have work to do.
WAKING_TOPICS = [
    get_topic(cls)
    for cls in (
        Batch.Approved, Batch.ProcessingStarted, Batch.GroupReserved, Batch.GroupRecorded,
        Batch.Deferred, Batch.RetryRequested,
    )
]  # fmt: skip


class BatchRunner:
    def __init__(self, service: Payledger) -> None:
        self.service = service
        self.engine = BatchEngine(service)
        self.background = False  # the server sets it: kick() then runs batches in tasks
        self._tasks: dict[UUID, asyncio.Task[None]] = {}
        self._again: set[UUID] = set()
        self._scanned_to = 0
        self._open: set[UUID] = set()

    async def run(self, batch_id: UUID, progress: Progress | None = None) -> BatchResult | None:
        return await self.engine.run(batch_id, progress)

    def kick(self, batch_id: UUID) -> None:
        """Run the batch soon, in the background (server only)."""
        if not self.background:
            return
        task = self._tasks.get(batch_id)
        if task is not None and not task.done():
            self._again.add(batch_id)
            return
        self._tasks[batch_id] = asyncio.get_running_loop().create_task(self._background(batch_id))

    async def _background(self, batch_id: UUID) -> None:
        try:
            while True:
                self._again.discard(batch_id)
                await self.engine.run(batch_id)
                if batch_id not in self._again:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s stopped on an error; the scheduler will resume it", batch_id)
        finally:
            self._tasks.pop(batch_id, None)

    async def stop(self) -> None:
        """Stop the background runs (server shutdown): a batch stops between two groups'
        saves at worst, and the next start resumes it."""
        self.background = False
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run_due(self, progress: Progress | None = None) -> list[BatchResult]:
        """Run every batch that is due or unfinished, one after the other."""
        results = []
        for batch_id in await asyncio.to_thread(self.runnable):
            if batch_id in self._tasks:
                continue
            result = await self.engine.run(batch_id, progress)
            if result is not None:
                results.append(result)
        return results

    async def schedule(self, interval_s: float) -> None:
        """The server's scheduler: resume at once, then look again every ``interval_s``."""
        while True:
            try:
                for batch_id in await asyncio.to_thread(self.runnable):
                    self.kick(batch_id)
            except Exception:
                log.exception("the batch scheduler failed a round; it tries again")
            await asyncio.sleep(interval_s)

    def runnable(self) -> list[UUID]:
        """Batches approved, scheduled or processing, whose run date has come, from the log."""
        recorder = self.service.app.recorder
        while True:
            page = recorder.select_notifications(
                start=self._scanned_to, limit=SCAN_PAGE, topics=WAKING_TOPICS,
                inclusive_of_start=False,
            )  # fmt: skip
            self._open.update(n.originator_id for n in page)  # type: ignore[misc]
            if page:
                self._scanned_to = page[-1].id
            if len(page) < SCAN_PAGE:
                break
        today = self.service.clock.now().date()
        due = []
        for batch_id in sorted(self._open):
            batch = self.service._load(batch_id, Batch)
            if not isinstance(batch, Batch) or batch.current_status not in RUNNABLE:
                self._open.discard(batch_id)
                continue
            if batch.run_on is None or batch.run_on <= today:
                due.append(batch_id)
        return due
