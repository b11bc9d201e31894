"""The committer in a process of its own (``PAYLEDGER_COMMITTER=process``).

With the committer as a thread, the HTTP event loop and the committer share one GIL: each waits
for the other, and the committer's save is slowed by waiting to get the GIL back after every
database call (docs/performance.md). Here the API process sends named decisions
``(handler, method, args)`` over a pipe to a child process that runs its own ``Payledger``: its
main thread reads what has arrived, decides and saves it as one group (``Committer.commit_here``,
no hand-off to another thread) and answers each with its result or its error. Each process gets
its own GIL.

Both ends batch: the API process sends the decisions asked for in one turn of its event loop as
one message, and the child sends a group's answers as one message once the group is saved, so a
group of 30 payments costs one write and one read each way instead of 30. The reader thread hands
each message's answers to the event loop in one call, which settles the loop's own futures: one
wake-up of the loop per group, not one per payment.

A child that dies (killed, out of memory) fails the commands it was given with
``CommitterStopped`` (HTTP 503, retry) and the reader thread starts another: each of those
commands was saved or not, and a retry with the same idempotency key answers with what was saved.

Card numbers never cross the pipe: decisions do not need them (the channel is called by the API
process), and drafts are sent without their secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import pickle
import signal
import threading
from concurrent.futures import Future, InvalidStateError
from multiprocessing.connection import Connection
from typing import Any

from application.child_processes import name_process, start_again
from application.committer import Committed, Committer, CommitterStopped, Overloaded
from application.logs import configure_logging
from application.settings import Settings
from application.store import StoreConfigError
from application.tuning import tune_process
from domain.errors import PayledgerError

log = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
RESTART_AFTER_S = 1.0  # between attempts to start a committer process that died
RESTART_BACKOFF_MAX_S = 30.0  # ... doubling while it cannot start (database down)


class RemoteCommitterError(PayledgerError):
    """An error in the committer process that could not be sent back as itself."""

    code = "internal_error"


#: What ``submit_named`` returns: the caller's event loop's own future, or (called with no
#: running loop) a thread-safe one.
Waiter = asyncio.Future[Committed[Any]] | Future[Committed[Any]]
Settled = tuple[asyncio.Future[Committed[Any]], bool, Any]


class RemoteCommitter:
    """The API process's end: ``submit_named()`` returns a future of ``Committed``."""

    def __init__(self, settings: Settings) -> None:
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or locks
        self._values = settings.model_dump(mode="json") | {"committer": "thread"}
        self.queue_max = settings.commit_queue_max
        self.stats: dict[str, float] = {}
        self.restarts = 0
        self._stopping = threading.Event()
        self._futures: dict[int, Waiter] = {}
        self._ids = itertools.count()
        self._send_lock = threading.Lock()
        self._outbox: list[tuple[int, str, str, tuple[Any, ...]]] = []  # guarded by _send_lock
        self._process, self._conn = self._start()
        self._reader = threading.Thread(target=self._read, name="payledger-committer-reader")
        self._reader.daemon = True
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def submit_named(self, handler: str, method: str, args: tuple[Any, ...]) -> Waiter:
        """Queue the decision; it is sent with the others asked for in the same turn of the
        caller's event loop (at once when there is no running loop). Returns a future of that
        loop (else a ``concurrent.futures.Future``); cancelling it leaves the decision to be
        made or not, as a timeout does."""
        if len(self._futures) >= self.queue_max:
            raise Overloaded("too many commands waiting; retry shortly")
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        future: Waiter = loop.create_future() if loop is not None else Future()
        request_id = next(self._ids)
        self._futures[request_id] = future
        with self._send_lock:
            self._outbox.append((request_id, handler, method, args))
            first = len(self._outbox) == 1
        if loop is None:
            self._flush()
        elif first:  # this caller awaits its future on this loop, so the flush will run
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        """Send what is queued as one message; its callers learn of a dead pipe at once."""
        with self._send_lock:
            batch, self._outbox = self._outbox, []
            # Not what was failed already (a committer that died): that must never run later.
            batch = [request for request in batch if request[0] in self._futures]
            if not batch:
                return
            try:
                self._conn.send(batch)
                return
            except (OSError, ValueError):
                pass  # the pipe is closed: its callers are told below, outside the lock
        gone = CommitterStopped("the committer process is gone")
        self._settle_all([(request_id, False, gone) for request_id, *_ in batch])

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self._flush()  # what was asked for before the stop is still decided and answered
        self._stopping.set()
        with self._send_lock, contextlib.suppress(OSError, ValueError):  # gone already
            self._conn.send(None)
        self._reader.join(timeout_s)  # it returns once the child has finished and gone
        process = self._process
        process.join(timeout_s)
        if process.is_alive():
            process.terminate()
            process.join(timeout_s)
        self._reader.join(timeout_s)
        self._conn.close()

    def _start(self) -> tuple[Any, Connection]:
        conn, child_end = self._context.Pipe()
        process = self._context.Process(
            target=run_committer, args=(child_end, self._values), name="payledger-committer"
        )
        process.start()
        child_end.close()
        try:
            if not conn.poll(START_TIMEOUT_S):
                process.terminate()
                raise StoreConfigError("the committer process did not start in time")
            try:
                status, detail = conn.recv()
            except EOFError:
                process.join(STOP_TIMEOUT_S)
                status, detail = "error", f"it exited with code {process.exitcode}"
            if status != "ready":
                process.join(STOP_TIMEOUT_S)
                raise StoreConfigError(f"the committer process could not start: {detail}")
        except BaseException:
            conn.close()
            raise
        return process, conn

    def _read(self) -> None:
        """Hand each answer to its future; when the child dies, fail what it was given and
        start another (each command's outcome is in the store or not: a retry with the same
        idempotency key finds out which)."""
        while True:
            self._answer(self._conn)
            self._fail_waiting()
            if self._stopping.is_set():
                return
            dead = self._process
            dead.join(STOP_TIMEOUT_S)  # for its exit code
            started = start_again(
                dead, self._start, self._stopping, StoreConfigError, "committer process",
                first_wait_s=RESTART_AFTER_S, max_wait_s=RESTART_BACKOFF_MAX_S,
            )  # fmt: skip
            if started is None:
                return
            process, conn = started
            with self._send_lock:
                old, self._process, self._conn = self._conn, process, conn
                old.close()
                if self._stopping.is_set():  # stop() came while this one started
                    with contextlib.suppress(OSError, ValueError):
                        conn.send(None)
            self.restarts += 1

    def _answer(self, conn: Connection) -> None:
        while True:
            try:
                answers = conn.recv()
            except (EOFError, OSError):
                return
            self._settle_all(answers)

    def _settle_all(self, answers: list[tuple[int, bool, Any]]) -> None:
        """Give each ``(request id, ok, result or error)`` to its future: a thread-safe one at
        once, a loop's own ones in one call on that loop."""
        on_loops: dict[asyncio.AbstractEventLoop, list[Settled]] = {}
        for request_id, ok, value in answers:
            future = self._futures.pop(request_id, None)
            if future is None:
                continue
            if isinstance(future, Future):
                with contextlib.suppress(InvalidStateError):  # cancelled: nobody waits
                    future.set_result(value) if ok else future.set_exception(value)
            else:
                on_loops.setdefault(future.get_loop(), []).append((future, ok, value))
        for loop, settled in on_loops.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, settled)

    def _fail_waiting(self) -> None:
        stopped = CommitterStopped("the committer process stopped")
        self._settle_all([(request_id, False, stopped) for request_id in list(self._futures)])


def _settle(settled: list[Settled]) -> None:
    """On the futures' loop: each result or error, unless its waiter gave up (a timeout)."""
    for future, ok, value in settled:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)


def run_committer(conn: Connection, settings_values: dict[str, Any]) -> None:
    """The committer process: decide and save what the API process sends, answer each."""
    from application.service import Payledger  # in the child, after spawn

    # Ctrl+C reaches the whole process group: the API process decides when this one stops
    # (it sends None on shutdown; a closed pipe also ends it), so unfinished groups are saved.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        settings = Settings(**settings_values)
        configure_logging(settings.log_format)  # redacted lines, like the API process's
        service = Payledger(settings, create_tables=False)
    except Exception as e:
        conn.send(("error", str(e)))
        return
    name_process("pl-committer")
    tune_process()  # the same GC and GIL tuning as the API process (application/tuning.py)
    conn.send(("ready", None))
    committer = service.committer
    # The child's own committer is a thread committer; its thread stays idle, groups are
    # committed here, on the thread that reads them.
    assert isinstance(committer, Committer)
    try:
        while (requests := conn.recv()) is not None:
            # What else has arrived is decided in the same group: one save, one answer message.
            last = False
            while len(requests) < committer.group_max and conn.poll(0):
                more = conn.recv()
                if more is None:
                    last = True
                    break
                requests.extend(more)
            conn.send(_decide_and_save(service, committer, requests))
            if last:
                break
    except (EOFError, OSError):
        pass  # the API process went away
    finally:
        service.close()


def _decide_and_save(
    service: Any, committer: Committer, requests: list[tuple[int, str, str, tuple[Any, ...]]]
) -> list[tuple[int, bool, Any]]:
    """Each request's answer: decided and saved on this thread, in groups of up to the group
    size (no hand-off to the committer thread, nor the interpreter-lock hand-overs it costs)."""
    answers: list[tuple[int, bool, Any]] = []
    ids, decides = [], []
    for request_id, handler, method, args in requests:
        try:
            decides.append(service.decision(handler, method, *args))
        except Exception as e:  # no such decision
            answers.append((request_id, False, _portable(e)))
            continue
        ids.append(request_id)
    for request_id, future in zip(ids, committer.commit_here(decides), strict=True):
        error = future.exception()
        answers.append(
            (request_id, True, future.result()) if error is None
            else (request_id, False, _portable(error))
        )  # fmt: skip
    return answers


def _portable(error: BaseException) -> BaseException:
    """The error itself if it survives pickling, else a summary of it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        log.exception("committer error that cannot cross the pipe")
        return RemoteCommitterError(f"{type(error).__name__}: {error}")
