"""What the committer and projector child processes share: a name for ``ps``, and how a child
that died is started again."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def name_process(name: str) -> None:
    """Name this process as ``ps``, ``top`` and the tests see it (Linux keeps 15 characters);
    nothing happens where the system has no such name."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(name[:15])


def start_again(
    dead: BaseProcess,
    start: Callable[[], T],
    stopping: threading.Event,
    errors: type[Exception] | tuple[type[Exception], ...],
    what: str,
    *,
    first_wait_s: float,
    max_wait_s: float,
) -> T | None:
    """Log that ``dead`` exited, then ``start()`` until it succeeds (its result) or
    ``stopping`` is set (None). A child that cannot start (the database down) is tried less
    and less often: ``first_wait_s`` after the first failure, doubling up to ``max_wait_s``."""
    log.error("the %s %s exited with code %s; starting another", what, dead.pid, dead.exitcode)
    wait_s = first_wait_s
    while not stopping.is_set():
        try:
            return start()
        except errors:
            log.exception("the %s could not be restarted; trying again", what)
        stopping.wait(wait_s)
        wait_s = min(wait_s * 2, max_wait_s)
    return None
