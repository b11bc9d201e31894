"""Group commit: one thread decides commands in arrival order and saves each group in one call.

PostgreSQL serialises every save on the events table (``LOCK TABLE ... EXCLUSIVE``), so
throughput comes from events per transaction, not from more writers. Callers hand the committer a
``decide(uow)`` function; the committer runs as many as are waiting (up to ``group_max``) over one
shared unit of work, saves once, and answers every caller. Inside a group, commands see each other's
effects, so a hot account costs nothing extra.

If the group's save fails on a conflict (another process wrote an aggregate we cached, or an
idempotency key that was not new), the committer redoes the group from fresh state, then falls back
to one command per save, each retried a bounded number of times. A command that raises before
changing anything fails alone; one that raises after changing something has its group redone one
by one, so no command ever sees another's half-applied effects.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError

from application.clock import Clock, SystemClock
from application.unit_of_work import AggregateCache, UnitOfWork
from domain.errors import PayledgerError

log = logging.getLogger(__name__)

T = TypeVar("T")
Decide = Callable[[UnitOfWork], T]


class Overloaded(PayledgerError):
    code = "overloaded"


class ConcurrencyConflict(PayledgerError):
    code = "concurrency_conflict"


class CommitterStopped(PayledgerError):
    code = "service_stopping"


@dataclass(frozen=True)
class Committed(Generic[T]):
    """A command's result and the notification position its events reached (read-your-writes)."""

    value: T
    position: int | None


@dataclass
class _Job:
    decide: Decide[Any]
    future: Future[Committed[Any]] = field(default_factory=Future)


_STOP = object()


class _Tried(Enum):
    SAVED = "saved"  # every caller answered
    CONFLICT = "conflict"  # the save hit the store's uniqueness: redo from fresh state
    UNSAFE = "unsafe"  # a command raised after changing something: redo one by one


GROUP_ATTEMPTS = 4
BACKOFF_BASE_S = 0.002
BACKOFF_CAP_S = 0.1


def backoff(attempt: int) -> None:
    """Full-jitter exponential back-off: two writers that collided pick different moments."""
    time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))


class Committer:
    def __init__(
        self,
        app: Application,
        *,
        group_max: int = 200,
        queue_max: int = 20_000,
        conflict_retries: int = 8,
        cache: AggregateCache | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.app = app
        self.clock = clock or SystemClock()
        self.cache = cache or AggregateCache()
        self.group_max = group_max
        self.conflict_retries = conflict_retries
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_max)
        self._thread = threading.Thread(target=self._run, name="payledger-committer", daemon=True)
        self._stopped = False
        self.stats: dict[str, float] = {
            "groups": 0, "commands": 0, "group_retries": 0, "single_saves": 0,
            "decide_s": 0.0, "save_s": 0.0,
        }  # fmt: skip
        self._thread.start()

    # --- callers -------------------------------------------------------------------------------

    def submit(self, decide: Decide[T]) -> Future[Committed[T]]:
        if self._stopped:
            raise CommitterStopped("the service is shutting down")
        job = _Job(decide)
        try:
            self._queue.put_nowait(job)
        except queue.Full as e:
            raise Overloaded("too many commands waiting; retry shortly") from e
        return job.future

    def run(self, decide: Decide[T], timeout_s: float = 30.0) -> Committed[T]:
        """Submit and wait (for synchronous callers: CLI, tests)."""
        return self.submit(decide).result(timeout=timeout_s)

    def commit_here(self, decides: list[Decide[Any]]) -> list[Future[Committed[Any]]]:
        """Decide and save one group in the calling thread; each decision's future, settled.

        For a caller that is the only one committing through this committer: the committer
        process's main thread, which reads the group off its pipe and answers it itself, with
        no hand-off to the committer thread (which then never runs a group)."""
        jobs = [_Job(decide) for decide in decides]
        for job in jobs:
            job.future.set_running_or_notify_cancel()
        for start in range(0, len(jobs), self.group_max):
            self._commit_or_fail(jobs[start : start + self.group_max])
        return [job.future for job in jobs]

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    # --- the committer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first] if first.future.set_running_or_notify_cancel() else []
            stop_after = False
            while len(group) < self.group_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop_after = True
                    break
                if item.future.set_running_or_notify_cancel():  # skip callers that gave up
                    group.append(item)
            self._commit_or_fail(group)
            if stop_after:
                return

    def _commit_or_fail(self, group: list[_Job]) -> None:
        """Commit a group; whatever goes wrong, every caller is answered (and the committer
        thread never dies with callers waiting)."""
        try:
            self._commit_group(group)
        except BaseException as e:
            log.exception("committer failed a group")
            for job in group:
                if not job.future.done():
                    job.future.set_exception(e)

    def _commit_group(self, group: list[_Job]) -> None:
        self.stats["groups"] += 1
        self.stats["commands"] += len(group)
        # First optimistically; then from fresh state, reading every id (a key seen before).
        # Another process writing the same hot account wins some windows: back off with jitter
        # so the two stop colliding, and keep the whole group together while retrying.
        for attempt in range(GROUP_ATTEMPTS):
            tried = self._try_group(group, optimistic=attempt == 0)
            if tried is _Tried.SAVED:
                return
            self.stats["group_retries"] += 1
            if tried is _Tried.UNSAFE:
                break  # a command broke after changing something: isolate it, one by one
            if attempt:
                backoff(attempt)
        for job in group:
            if not job.future.done():
                self._commit_alone(job)

    def _try_group(self, group: list[_Job], *, optimistic: bool) -> _Tried:
        """Decide every waiting job over one unit of work and save once."""
        started = time.perf_counter()
        uow = UnitOfWork(self.app, self.cache, optimistic=optimistic, clock=self.clock)
        outcomes: list[tuple[_Job, bool, Any]] = []
        for job in group:
            if job.future.done():
                continue
            uow.begin_unit()
            try:
                outcomes.append((job, True, job.decide(uow)))
            except Exception as e:
                if uow.unit_changed_anything():
                    self.cache.evict(uow.ids())
                    return _Tried.UNSAFE
                outcomes.append((job, False, e))
        decided = time.perf_counter()
        self.stats["decide_s"] += decided - started
        try:
            position = self._save(uow)
        except IntegrityError:
            self.cache.evict(uow.ids())
            return _Tried.CONFLICT
        except Exception as e:
            self.cache.evict(uow.ids())
            for job, _ok, _value in outcomes:
                job.future.set_exception(e)
            return _Tried.SAVED  # answered: the store failed, every caller is told
        self.stats["save_s"] += time.perf_counter() - decided
        for job, ok, value in outcomes:
            if ok:
                job.future.set_result(Committed(value, position))
            else:
                job.future.set_exception(value)
        return _Tried.SAVED

    def _commit_alone(self, job: _Job) -> None:
        for attempt in range(self.conflict_retries):
            if attempt:
                backoff(attempt)
            self.stats["single_saves"] += 1
            uow = UnitOfWork(self.app, self.cache, optimistic=False, clock=self.clock)
            uow.begin_unit()
            try:
                value = job.decide(uow)
                position = self._save(uow)
            except IntegrityError:
                self.cache.evict(uow.ids())
                continue
            except Exception as e:
                self.cache.evict(uow.ids())
                job.future.set_exception(e)
                return
            job.future.set_result(Committed(value, position))
            return
        job.future.set_exception(
            ConcurrencyConflict(f"gave up after {self.conflict_retries} conflicting attempts")
        )

    def _save(self, uow: UnitOfWork) -> int | None:
        dirty = uow.dirty()
        if not dirty and not uow.new_events:
            return None
        versions_before = [agg.version - len(agg.pending_events) for agg in dirty]
        # Straight to the event store: Application.save() would spend a fifth of its time in
        # runtime Protocol checks of each object, and its snapshotting is replaced below.
        events = [event for aggregate in dirty for event in aggregate.collect_events()]
        events += uow.new_events
        recordings = self.app.events.put(events)
        for aggregate in uow.aggregates.values():
            if aggregate.id not in uow.uncached:
                self.cache.put(aggregate)
        take_snapshots = getattr(self.app, "take_snapshots_of", None)
        if take_snapshots is not None:
            take_snapshots(zip(dirty, versions_before, strict=True))
        return recordings[-1].notification.id if recordings else None
