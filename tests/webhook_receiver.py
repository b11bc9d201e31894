"""A webhook receiver for tests: a real HTTP server on a thread that records every request.

    with Receiver() as receiver:
        receiver.url                     # http://127.0.0.1:<port>/hooks
        receiver.fail_next(3, status=500)
        receiver.wait_for(lambda r: len(r.delivered()) >= 2)

It answers 204 by default; ``fail_next(n)`` makes the next ``n`` requests answer ``status``;
``delay_s`` makes every answer wait (a slow receiver, for crash tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass(frozen=True)
class Received:
    at: float  # time.time() when it arrived
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    answered: int  # the status code we answered

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers["payledger-event-id"]


class Receiver:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.requests: list[Received] = []
        self.delay_s = delay_s
        self._failures: list[int] = []
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: nothing was delivered
                    self.close_connection = True
                    return
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver._lock:
                    status = receiver._failures.pop(0) if receiver._failures else 204
                    receiver.requests.append(
                        Received(
                            time.time(), self.path,
                            {k.lower(): v for k, v in self.headers.items()}, body, status,
                        )
                    )  # fmt: skip
                    receiver._lock.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a sender killed mid-request resets its connection: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._failures += [status] * n

    def delivered(self) -> list[Received]:
        """The requests answered 2xx."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.answered < 300]

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, condition: Callable[[Receiver], bool], timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not condition(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [
                        (r.headers.get("payledger-event-type"), r.answered) for r in self.requests
                    ]
                    raise AssertionError(f"receiver: not met in {timeout_s} s; got {got}")
                self._lock.wait(min(remaining, 0.1))
