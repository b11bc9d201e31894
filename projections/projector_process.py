"""The views kept current by a child process of the API process (``PAYLEDGER_PROJECTIONS=process``).

With the follower as a thread of the API process (``inline``), decoding and projecting every
event competes with HTTP and the batch engine for one interpreter lock; measured on a
100,000-item batch, the follower's thread cost the API process 16.5 CPU-s where the same work in
a process of its own took 8.9 (docs/performance.md). Here the API process spawns one child that
runs the follower (``Follower.run_forever``, leadership and all), and wakes it after each commit
by writing a byte down a pipe instead of letting it wait for its next poll.

The bell is a pipe, not a ``multiprocessing.Event``, because a child killed while it held that
event's lock leaves the lock held for good: the API process's next ``set()`` after a commit then
blocks forever, and so does its shutdown. A write to a non-blocking pipe never waits: a full pipe
already means "look now", and a closed one means the child is gone. A watcher thread restarts a
child that died (``restarts`` counts them); the new one takes the leadership and resumes from the
positions its views committed, so nothing is projected twice.

The child decodes events, so it gets the same settings (keys for encryption at rest included).
It ignores SIGINT: the API process stops it (``stop``), and it also stops when that process is
gone (end of file on the pipe, or a new parent), so it never outlives its server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import select
import signal
import threading
import weakref
from multiprocessing.connection import Connection
from typing import Any

from application.child_processes import name_process, start_again
from application.settings import Settings

log = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
PARENT_CHECK_S = 1.0  # how often the child looks whether its API process is still there
RESTART_AFTER_S = 1.0  # how often the API process looks whether its projector is still there
RESTART_BACKOFF_MAX_S = 30.0  # a projector that cannot start (database down) is retried less often
# With a core of its own the projector would wake for every commit and write pages of a few
# events, each page a transaction over every view: let events gather for a moment instead. At
# 40 ms rather than 10 a page holds four times the events, and the projector and PostgreSQL
# spend 0.6x the CPU per payment (docs/performance.md, session 9). A reader that waits for a
# position (read-your-writes) hurries the projector, so it never waits for the gathering.
GATHER_S = 0.04
NUDGE, STOP, HURRY = b"n", b"s", b"h"


class ProjectorStartError(RuntimeError):
    pass


class ProjectorProcess:
    """The API process's handle: ``nudge`` after a commit, ``stop`` at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or locks
        self._values = settings.model_dump(mode="json") | {"committer": "thread"}
        self._bell_lock = threading.Lock()  # a closed bell's fd number may be reused at once
        self._stopping = threading.Event()
        # The event loops with a ring scheduled (each loop rings for its own commits).
        self._nudge_due: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self.restarts = 0
        self._process, self._bell = self._start()
        self._watcher = threading.Thread(
            target=self._watch, name="payledger-projector-watch", daemon=True
        )
        self._watcher.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def nudge(self) -> None:
        """New events were just saved: look now rather than at the next poll. On an event
        loop, the commits answered in one turn (a group's payments) ring once, at its end."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._ring(NUDGE)
            return
        if loop not in self._nudge_due:
            self._nudge_due.add(loop)
            loop.call_soon(self._ring_due, loop)

    def _ring_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._nudge_due.discard(loop)
        self._ring(NUDGE)

    def hurry(self) -> None:
        """A reader waits for the views: look now, without letting events gather first."""
        self._ring(HURRY)

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self._stopping.set()
        self._watcher.join(START_TIMEOUT_S)  # it may be starting a child: let it finish
        self._ring(STOP)
        self._process.join(timeout_s)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout_s)
        with self._bell_lock:
            self._bell.close()

    def _ring(self, byte: bytes) -> None:
        with self._bell_lock, contextlib.suppress(OSError, ValueError):
            # BlockingIOError: the pipe is full of nudges already; BrokenPipeError: the child
            # is gone (the watcher starts another); ValueError/OSError: the bell is closed.
            os.write(self._bell.fileno(), byte)

    def _start(self) -> tuple[Any, Connection]:
        door, bell = self._context.Pipe(duplex=False)
        ready = self._context.Queue(maxsize=1)
        process = self._context.Process(
            target=run_projector,
            args=(self._values, door, ready, os.getpid()),
            name="payledger-projector",
            daemon=True,
        )
        process.start()
        door.close()
        os.set_blocking(bell.fileno(), False)
        try:
            status, detail = ready.get(timeout=START_TIMEOUT_S)
        except Exception as e:
            process.terminate()
            bell.close()
            raise ProjectorStartError("the projector process did not start in time") from e
        if status != "ready":
            process.join(STOP_TIMEOUT_S)
            bell.close()
            raise ProjectorStartError(f"the projector process could not start: {detail}")
        return process, bell

    def _watch(self) -> None:
        """Start another projector when this one died (killed, out of memory, a bug)."""
        while not self._stopping.wait(RESTART_AFTER_S):
            if self._process.is_alive():
                continue
            started = start_again(
                self._process, self._start, self._stopping, ProjectorStartError,
                "projector process",
                first_wait_s=2 * RESTART_AFTER_S, max_wait_s=RESTART_BACKOFF_MAX_S,
            )  # fmt: skip
            if started is None:
                return
            process, bell = started
            with self._bell_lock:
                old, self._bell, self._process = self._bell, bell, process
                old.close()
            self.restarts += 1
            self.nudge()  # what was committed while no projector ran


def run_projector(values: dict[str, Any], door: Connection, ready: Any, parent_pid: int) -> None:
    """The child: follow the event log into the views until told to stop."""
    from application.app import PayledgerApp  # in the child, after spawn
    from application.encryption import check_readable, cipher_env
    from application.logs import configure_logging
    from application.tuning import tune_process
    from projections.read_side import ReadSide
    from projections.runner import Follower

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the API process decides when this one stops
    try:
        settings = Settings(**values)
        configure_logging(settings.log_format)
        store = settings.store
        app = PayledgerApp(env=store.eventsourcing_env(create_table=False) | cipher_env(settings))
        check_readable(app)
        read = ReadSide(app, store, follow=False, create_tables=False)
    except Exception as e:
        ready.put(("error", str(e)))
        return
    name_process("pl-projector")
    tune_process()
    nudge, stop, hurry = threading.Event(), threading.Event(), threading.Event()
    follower = Follower(read.runner, nudge=nudge, stop=stop, hurry=hurry, gather_s=GATHER_S)
    doorman = threading.Thread(
        target=_answer_the_door, args=(door, parent_pid, nudge, stop, hurry), daemon=True
    )
    doorman.start()
    ready.put(("ready", None))
    try:
        follower.run_forever()
    finally:
        follower.leadership.release()
        read.close()
        app.close()


def _answer_the_door(
    door: Connection,
    parent_pid: int,
    nudge: threading.Event,
    stop: threading.Event,
    hurry: threading.Event,
) -> None:
    """Turn bytes from the API process into nudges (and HURRY into a hurry); stop on STOP, on
    end of file (the API process closed its end or died) or when the parent is gone (a
    SIGKILLed API process cannot stop its projector)."""
    fd = door.fileno()
    while not stop.is_set():
        readable, _, _ = select.select([fd], [], [], PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            log.info("the API process is gone; the projector stops")
            break
        if not readable:
            continue
        rung = os.read(fd, 4096)
        if not rung or STOP in rung:
            break
        if HURRY in rung:
            hurry.set()
        nudge.set()
    stop.set()
    hurry.set()
    nudge.set()
