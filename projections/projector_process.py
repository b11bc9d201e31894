"""The views kept current by a child process of the API process (``PAYLEDGER_PROJECTIONS=process``).

With the follower as a thread of the API process (``inline``), decoding and projecting every
event competes with HTTP and the batch engine for one interpreter lock; measured on a
100,000-item batch, the follower's thread cost the API process 16.5 CPU-s where the same work in
a process of its own took 8.9 (docs/performance.md). Here the API process spawns one child that
runs the follower (``Follower.run_forever``, leadership and all), and wakes it after each commit
through a shared event instead of letting it wait for its next poll.

The child decodes events, so it gets the same settings (keys for encryption at rest included).
It ignores SIGINT: the API process stops it (``stop``), and it also stops when that process is
gone, so it never outlives its server.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from typing import Any

from application.settings import Settings

log = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
PARENT_CHECK_S = 1.0  # how often the child looks whether its API process is still there
# With a core of its own the projector would wake for every commit and write pages of a few
# events, each page a transaction over every view: let events gather for a moment instead.
GATHER_S = 0.01


class ProjectorStartError(RuntimeError):
    pass


class ProjectorProcess:
    """The API process's handle: ``nudge`` after a commit, ``stop`` at shutdown."""

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited threads, pools or locks
        self._nudge = context.Event()
        self._stop = context.Event()
        ready = context.Queue(maxsize=1)
        values = settings.model_dump(mode="json") | {"committer": "thread"}
        self._process = context.Process(
            target=run_projector,
            args=(values, self._nudge, self._stop, ready, os.getpid()),
            name="payledger-projector",
            daemon=True,
        )
        self._process.start()
        try:
            status, detail = ready.get(timeout=START_TIMEOUT_S)
        except Exception as e:
            self._process.terminate()
            raise ProjectorStartError("the projector process did not start in time") from e
        if status != "ready":
            self._process.join(STOP_TIMEOUT_S)
            raise ProjectorStartError(f"the projector process could not start: {detail}")

    def nudge(self) -> None:
        """New events were just saved: look now rather than at the next poll."""
        self._nudge.set()

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self._stop.set()
        self._nudge.set()
        self._process.join(timeout_s)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout_s)


def run_projector(
    values: dict[str, Any], nudge: Any, stop: Any, ready: Any, parent_pid: int
) -> None:
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
    tune_process()
    follower = Follower(read.runner, nudge=nudge, stop=stop, gather_s=GATHER_S)
    watch = threading.Thread(
        target=_stop_with_parent, args=(parent_pid, stop, follower), daemon=True
    )
    watch.start()
    ready.put(("ready", None))
    try:
        follower.run_forever()
    finally:
        follower.leadership.release()
        read.close()
        app.close()


def _stop_with_parent(parent_pid: int, stop: Any, follower: Any) -> None:
    """A SIGKILLed API process cannot stop its projector: notice that it is gone."""
    while not stop.wait(PARENT_CHECK_S):
        if os.getppid() != parent_pid:
            log.info("the API process is gone; the projector stops")
            stop.set()
            follower.nudge()
            return
