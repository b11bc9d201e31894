"""One engine per batch, across processes: whoever holds a batch's lock runs it.

PostgreSQL: a session advisory lock on its own connection (a process that dies releases it with
its connection). SQLite: a record lock on one byte of a file next to the database (released when the
process dies). Within one process the engine also keeps a set of the batches it is running.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Any
from uuid import UUID

from application.store import StoreConfig

LOCK_KEY = 0x5042_4154  # "PBAT": the advisory lock class of batch engines


class BatchLock:
    def __init__(self, store: StoreConfig, batch_id: UUID) -> None:
        self.store, self.batch_id = store, batch_id
        self._handle: Any = None

    def try_acquire(self) -> bool:
        if self.store.kind == "postgres":
            conn = self.store._pg_connect(5)
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                (LOCK_KEY, f"{self.store.schema}/{self.batch_id}"),
            ).fetchone()
            if row and row[0]:
                self._handle = conn
                return True
            conn.close()
            return False
        if self.store.is_memory:
            self._handle = True
            return True
        # One file, one byte per batch. POSIX record locks belong to the process and closing
        # any handle of the file drops them all, so the process keeps one handle open for good.
        handle = _lock_file(f"{self.store.sqlite_path}.batches.lock")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._offset())
        except OSError:
            return False
        self._handle = handle
        return True

    def _offset(self) -> int:
        return self.batch_id.int % 2**31

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None or handle is True:
            return
        with contextlib.suppress(Exception):
            if self.store.kind == "postgres":
                handle.close()  # the session's advisory lock goes with it
            else:
                fcntl.lockf(handle, fcntl.LOCK_UN, 1, self._offset())


_FILES: dict[str, Any] = {}


def _lock_file(path: str) -> Any:
    handle = _FILES.get(path)
    if handle is None:
        handle = _FILES[path] = open(Path(path), "a")  # noqa: SIM115
    return handle
