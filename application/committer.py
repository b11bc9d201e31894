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

Pipelined (the default): while one group is being saved, the next is decided. The committer
thread decides group N+1 from the state group N left (N's aggregates are in the cache from the
moment N is decided), and a saver thread writes N, answers N's callers, and only then takes N+1:
saves stay one at a time and in order, and nobody is answered before their group is durable. If
N's save fails, N+1 was decided on state that never existed: it is thrown away unanswered and
unsaved, N is redone as above, then N+1 is decided again. A group that wrote aggregates kept out
of the cache (a batch's items) is saved before the next is decided. The save is mostly a wait for
the database, so deciding during it takes the decisions off the critical path (docs/performance.md).
"""

from __future__ import annotations

import contextlib
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
_WAKE = object()  # the saver's save of a group failed: the committer thread must redo it


class _Tried(Enum):
    SAVED = "saved"  # every caller answered
    CONFLICT = "conflict"  # the save hit the store's uniqueness: redo from fresh state
    UNSAFE = "unsafe"  # a command raised after changing something: redo one by one
    FAILED = "failed"  # the store failed: every caller was told; a group decided after it is void


@dataclass
class _Decided:
    """A group decided over one unit of work, ready to save: its events, snapshots, answers."""

    group: list[_Job]
    uow: UnitOfWork
    outcomes: list[tuple[_Job, bool, Any]]
    events: list[Any]
    snapshots: list[Any]

    @property
    def isolated(self) -> bool:
        """It wrote aggregates kept out of the cache: the next group cannot see them until saved."""
        return bool(self.uow.uncached or self.uow.new_events)


@dataclass
class _Flight:
    """A decided group handed to the saver thread."""

    decided: _Decided
    done: threading.Event = field(default_factory=threading.Event)
    tried: _Tried = _Tried.SAVED


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
        after_group: Callable[[], None] | None = None,
        pipeline: bool = True,
    ) -> None:
        self.app = app
        # Called once every caller of a group has its answer, on the thread that answered them
        # (the committer process sends the group's answers in one message from there).
        self.after_group = after_group
        self.clock = clock or SystemClock()
        self.cache = cache or AggregateCache()
        self.group_max = group_max
        self.conflict_retries = conflict_retries
        self.pipeline = pipeline
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_max)
        self._thread = threading.Thread(target=self._run, name="payledger-committer", daemon=True)
        self._stopped = False
        self.stats: dict[str, float] = {
            "groups": 0, "commands": 0, "group_retries": 0, "single_saves": 0,
            "decide_s": 0.0, "save_s": 0.0, "pipelined": 0, "voided": 0,
        }  # fmt: skip
        self._stats_lock = threading.Lock()  # the saver thread counts too
        self._flight: _Flight | None = None  # the group being saved; only the committer sets it
        self._flights: queue.Queue[_Flight | None] = queue.Queue()
        self._saver: threading.Thread | None = None
        if pipeline:
            self._saver = threading.Thread(
                target=self._save_flights, name="payledger-committer-saver", daemon=True
            )
            self._saver.start()
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

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._saver is not None:
            self._flights.put(None)
            self._saver.join(timeout_s)

    # --- the committer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._land_guarded()
                return
            if first is _WAKE:
                if self._flight is not None and self._flight.done.is_set():
                    self._land_guarded()
                continue
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
                if item is _WAKE:
                    continue  # this group waits for the one being saved anyway
                if item.future.set_running_or_notify_cancel():  # skip callers that gave up
                    group.append(item)
            try:
                if self.pipeline:
                    self._pipelined(group)
                else:
                    self._commit_group(group)
                    self._after_group()
            except BaseException as e:  # never let the thread die with callers waiting
                log.exception("committer failed a group")
                self._fail(group, e)
            if stop_after:
                self._land_guarded()
                return

    def _fail(self, group: list[_Job], error: BaseException) -> None:
        for job in group:
            if not job.future.done():
                job.future.set_exception(error)
        self._after_group()

    def _after_group(self) -> None:
        if self.after_group is not None:
            try:
                self.after_group()
            except Exception:
                log.exception("committer's after_group hook failed")

    def _count(self, name: str, value: float = 1) -> None:
        with self._stats_lock:
            self.stats[name] += value

    # --- pipelined: decide the next group while the saver thread writes this one --------------

    def _pipelined(self, group: list[_Job]) -> None:
        if self._flight is not None and self._flight.decided.isolated:
            self._redo(self._wait())  # the next group could not see what that one wrote
        ahead = self._flight
        self._count("groups")
        self._count("commands", len(group))
        started = time.perf_counter()
        in_flight = frozenset(ahead.decided.uow.aggregates) if ahead is not None else frozenset()
        decided = self._decide(group, optimistic=True, in_flight=in_flight)
        self._count("decide_s", time.perf_counter() - started)
        failed = self._wait()
        if failed is not None or decided is None:
            # Decided on the state of a group whose save failed (or a command broke halfway):
            # nothing of it was saved or answered. Redo that group first, then this one.
            if decided is not None:
                self._count("voided")
                self.cache.evict(decided.uow.ids())
            self._redo(failed)
            self._commit_group(group, counted=True)
            self._after_group()
            return
        if ahead is not None:
            self._count("pipelined")
        self._flight = _Flight(decided)
        self._flights.put(self._flight)

    def _wait(self) -> _Flight | None:
        """Wait for the group being saved; it if its save did not succeed."""
        flight, self._flight = self._flight, None
        if flight is None:
            return None
        flight.done.wait()
        return None if flight.tried is _Tried.SAVED else flight

    def _redo(self, flight: _Flight | None) -> None:
        """A group whose save conflicted, from fresh state (its callers were told nothing); one
        whose save failed was answered with the error already."""
        if flight is not None and flight.tried is _Tried.CONFLICT:
            self._count("group_retries")
            self._commit_group(flight.decided.group, first_attempt=1, counted=True)
            self._after_group()

    def _land_guarded(self) -> None:
        """At a stop: the group being saved, and its redo if needed."""
        flight = self._flight
        try:
            self._redo(self._wait())
        except BaseException as e:
            log.exception("committer failed a group")
            if flight is not None:
                self._fail(flight.decided.group, e)

    def _save_flights(self) -> None:
        """The saver thread: write each decided group in turn, then answer its callers."""
        while (flight := self._flights.get()) is not None:
            try:
                flight.tried = self._store(flight.decided)
            except BaseException as e:  # never leave the committer thread waiting
                log.exception("committer's saver failed a group")
                self.cache.evict(flight.decided.uow.ids())
                for job in flight.decided.group:
                    if not job.future.done():
                        job.future.set_exception(e)
                flight.tried = _Tried.FAILED
            finally:
                flight.done.set()
            if flight.tried is _Tried.CONFLICT:
                with contextlib.suppress(queue.Full):  # full: the committer thread is busy
                    self._queue.put_nowait(_WAKE)
            else:
                self._after_group()

    # --- one group at a time -------------------------------------------------------------------

    def _commit_group(
        self, group: list[_Job], *, first_attempt: int = 0, counted: bool = False
    ) -> None:
        if not counted:
            self._count("groups")
            self._count("commands", len(group))
        # First optimistically; then from fresh state, reading every id (a key seen before).
        # Another process writing the same hot account wins some windows: back off with jitter
        # so the two stop colliding, and keep the whole group together while retrying.
        for attempt in range(first_attempt, GROUP_ATTEMPTS):
            tried = self._try_group(group, optimistic=attempt == 0)
            if tried is _Tried.SAVED or tried is _Tried.FAILED:
                return
            self._count("group_retries")
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
        decided = self._decide(group, optimistic=optimistic)
        self._count("decide_s", time.perf_counter() - started)
        if decided is None:
            return _Tried.UNSAFE
        return self._store(decided)

    def _decide(
        self, group: list[_Job], *, optimistic: bool, in_flight: frozenset[Any] = frozenset()
    ) -> _Decided | None:
        """Run every waiting job over one unit of work, and take what it changed out of it:
        its events and the snapshots due. None if a command raised after changing something."""
        uow = UnitOfWork(
            self.app, self.cache, optimistic=optimistic, clock=self.clock, in_flight=in_flight
        )
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
                    return None
                outcomes.append((job, False, e))
        return self._take(group, uow, outcomes)

    def _take(
        self, group: list[_Job], uow: UnitOfWork, outcomes: list[tuple[_Job, bool, Any]]
    ) -> _Decided:
        dirty = uow.dirty()
        versions_before = [agg.version - len(agg.pending_events) for agg in dirty]
        # Straight to the event store: Application.save() would spend a fifth of its time in
        # runtime Protocol checks of each object, and its snapshotting is replaced below.
        events = [event for aggregate in dirty for event in aggregate.collect_events()]
        events += uow.new_events
        snapshots_due = getattr(self.app, "snapshots_due", None)
        snapshots = snapshots_due(zip(dirty, versions_before, strict=True)) if snapshots_due else []
        # In the cache now, so a group decided while this one is saved sees it; evicted if
        # the save fails.
        for aggregate in uow.aggregates.values():
            if aggregate.id not in uow.uncached:
                self.cache.put(aggregate)
        return _Decided(group, uow, outcomes, events, snapshots)

    def _store(self, decided: _Decided) -> _Tried:
        """Save a decided group and answer its callers (on the committer or the saver thread)."""
        started = time.perf_counter()
        try:
            position = self._save(decided)
        except IntegrityError:
            self.cache.evict(decided.uow.ids())
            return _Tried.CONFLICT
        except Exception as e:
            self.cache.evict(decided.uow.ids())
            for job, _ok, _value in decided.outcomes:
                job.future.set_exception(e)
            return _Tried.FAILED  # answered: the store failed, every caller is told
        self._count("save_s", time.perf_counter() - started)
        for job, ok, value in decided.outcomes:
            if ok:
                job.future.set_result(Committed(value, position))
            else:
                job.future.set_exception(value)
        return _Tried.SAVED

    def _commit_alone(self, job: _Job) -> None:
        for attempt in range(self.conflict_retries):
            if attempt:
                backoff(attempt)
            self._count("single_saves")
            uow = UnitOfWork(self.app, self.cache, optimistic=False, clock=self.clock)
            uow.begin_unit()
            try:
                value = job.decide(uow)
            except Exception as e:
                self.cache.evict(uow.ids())
                job.future.set_exception(e)
                return
            if self._store(self._take([job], uow, [(job, True, value)])) is not _Tried.CONFLICT:
                return
        job.future.set_exception(
            ConcurrencyConflict(f"gave up after {self.conflict_retries} conflicting attempts")
        )

    def _save(self, decided: _Decided) -> int | None:
        if not decided.events:
            return None
        recordings = self.app.events.put(decided.events)
        if decided.snapshots and self.app.snapshots is not None:
            self.app.snapshots.put(decided.snapshots)
        return recordings[-1].notification.id if recordings else None
