"""Stream what a writer function writes to a file, chunk by chunk, as a response body.

The statement writers (application/reconciliation) write to a file object. Here the writer runs
in a thread of its own, writing into a bounded queue of chunks that the response reads: memory
stays at a few chunks whatever the statement's size, and a client that goes away stops it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

CHUNK_BYTES = 64 * 1024
QUEUE_CHUNKS = 16
PUT_POLL_S = 0.5
_END = object()


class Cancelled(Exception):
    """The reader went away: the writer stops at its next write."""


class _Pipe:
    """A write-only file object (text or bytes) that hands full chunks to a queue."""

    def __init__(self, chunks: queue.Queue[Any], cancelled: threading.Event) -> None:
        self._chunks = chunks
        self._cancelled = cancelled
        self._buffer: list[bytes] = []
        self._size = 0

    def write(self, data: str | bytes) -> int:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self._buffer.append(raw)
        self._size += len(raw)
        if self._size >= CHUNK_BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._put(b"".join(self._buffer))
            self._buffer, self._size = [], 0

    def writable(self) -> bool:
        return True

    def _put(self, item: Any) -> None:
        while True:
            if self._cancelled.is_set():
                raise Cancelled
            try:
                self._chunks.put(item, timeout=PUT_POLL_S)
                return
            except queue.Full:
                continue


def stream_written(write: Callable[[Any], object]) -> Iterator[bytes]:
    """The bytes ``write(file)`` writes, as they come (a generator for a streaming response)."""
    chunks: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_CHUNKS)
    cancelled = threading.Event()
    pipe = _Pipe(chunks, cancelled)

    def run() -> None:
        outcome: Any = _END
        try:
            write(pipe)
            pipe.flush()
        except Cancelled:
            return
        except BaseException as e:  # handed to the reader, who raises it
            outcome = e
        with contextlib.suppress(Cancelled):  # the reader went away: nobody to tell
            pipe._put(outcome)

    thread = threading.Thread(target=run, name="statement-writer", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancelled.set()
