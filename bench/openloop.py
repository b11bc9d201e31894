"""A small Python HTTP/1.1 load generator for bench/realtime.py (asyncio, uvloop if present).

Two modes, same request shape as ``bench/wrk/payments.lua`` (unique Idempotency-Key per request,
payer/payee chosen from the ids file by mix):

* ``--rate R`` (open loop): request i is *scheduled* at ``t0 + i / R`` whatever happened before,
  and its latency is measured from that scheduled time, so a stalled server shows up in the
  percentiles instead of quietly slowing the client down (no coordinated omission). Used for the
  half-load p99 run, because wrk cannot hold a constant rate and wrk2 is not packaged here.
  At a few hundred to a couple of thousand requests/s it costs a few percent of one core.
* ``--closed`` (closed loop, ``--connections`` clients each waiting for its answer before the
  next request): only the fallback when ``wrk`` is not installed. A Python client on the same two
  cores takes CPU from the server, so those figures are *lower* than wrk's; realtime.py labels them.

Every request is waited for before the process exits, so the counters are exact (nothing is left
in flight). Prints one JSON object (same keys as the wrk script's WRKJSON line) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

BODY = (
    '{{"amount":"{amount}","currency":"CNY","channel":"internal",'
    '"payer_account_id":"{payer}","payee_account_id":"{payee}"}}'
)
SUCCEEDED = re.compile(rb'"status"\s*:\s*"succeeded"')
FAILED = re.compile(rb'"status"\s*:\s*"failed"')
CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


def read_ids(path: str) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {"payer": [], "payee": [], "merchant": [], "hotpayer": []}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[0] in ids:
                ids[parts[0]].append(parts[1])
    return ids


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (Content-Length bodies)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end])
        match = CONTENT_LENGTH.search(head)
        length = int(match.group(1)) if match else 0
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((int(head[9:12]), body))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass
class Counters:
    ok: int = 0
    ok_merchant: int = 0
    ok_hotpayer: int = 0
    failed: int = 0
    other2xx: int = 0
    non2xx: int = 0
    sent: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_us: list[int] = field(default_factory=list)


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        url = urlsplit(args.url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.ids = read_ids(args.ids)
        self.rng = random.Random(args.seed)
        self.counter = 0
        self.c = Counters()
        self.open_connections = 0
        # (scheduled, answered) per request, for --timeline
        self.timeline: list[tuple[float, float]] | None = [] if args.timeline else None

    def next_request(self) -> tuple[bytes, bool, bool]:
        self.counter += 1
        ids, mix = self.ids, self.args.mix
        hot = mix == "hot_payer" and self.rng.random() < 0.7
        payer = ids["hotpayer"][0] if hot else self.rng.choice(ids["payer"])
        payee = ids["merchant"][0] if mix == "hot_merchant" else self.rng.choice(ids["payee"])
        body = BODY.format(amount=self.args.amount, payer=payer, payee=payee).encode()
        key = f"{self.args.nonce}-ol-{self.counter}"
        head = (
            f"POST {self.args.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nIdempotency-Key: {key}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head + body, mix == "hot_merchant", hot

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_connection(_Connection, self.host, self.port)
        self.open_connections += 1
        return protocol

    async def one(self, conn: _Connection | None, scheduled: float) -> _Connection | None:
        """Send one request on conn (reconnecting if needed); latency from ``scheduled``."""
        data, to_merchant, from_hot = self.next_request()
        self.c.sent += 1
        try:
            if conn is None or conn.closed:
                conn = await self.connect()
            status, body = await asyncio.wait_for(conn.request(data), self.args.timeout)
        except (TimeoutError, OSError, ValueError, ConnectionError):
            self.c.errors += 1
            if conn is not None:
                conn.close()
            return None
        answered = time.perf_counter()
        self.c.latencies_us.append(int((answered - scheduled) * 1e6))
        if self.timeline is not None:
            self.timeline.append((scheduled, answered))
        self.count(status, body, to_merchant, from_hot)
        return conn

    def count(self, status: int, body: bytes, to_merchant: bool, from_hot: bool) -> None:
        c = self.c
        c.statuses[str(status)] = c.statuses.get(str(status), 0) + 1
        if status == 201 and SUCCEEDED.search(body):
            c.ok += 1
            c.ok_merchant += to_merchant
            c.ok_hotpayer += from_hot
        elif 200 <= status < 300:
            if FAILED.search(body):
                c.failed += 1
            else:
                c.other2xx += 1
        else:
            c.non2xx += 1

    async def open_loop(self) -> float:
        """A fixed pool of connections takes scheduled send times from a queue: while a
        connection is free a request leaves at its time; when all are busy it waits in the queue
        and that wait counts in its latency (as in wrk2)."""
        rate, duration = self.args.rate, self.args.duration
        queue: asyncio.Queue[float | None] = asyncio.Queue()
        conns = [await self.connect() for _ in range(self.args.connections)]

        async def worker(conn: _Connection | None) -> None:
            while (scheduled := await queue.get()) is not None:
                conn = await self.one(conn, scheduled)
            if conn is not None:
                conn.close()

        workers = [asyncio.create_task(worker(conn)) for conn in conns]
        t0 = time.perf_counter()
        total = int(rate * duration)
        i = 0
        while i < total:
            now = time.perf_counter()
            while i < total and t0 + i / rate <= now:
                queue.put_nowait(t0 + i / rate)
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        send_end = time.perf_counter()
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        return send_end - t0

    async def closed_loop(self) -> float:
        deadline = time.perf_counter() + self.args.duration

        async def worker() -> None:
            conn: _Connection | None = await self.connect()
            while time.perf_counter() < deadline:
                conn = await self.one(conn, time.perf_counter())
            if conn is not None:
                conn.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.args.connections)))
        return time.perf_counter() - t0

    def report(self, elapsed: float) -> dict[str, object]:
        lat = sorted(self.c.latencies_us)

        def pct(p: float) -> int:
            if not lat:
                return 0
            return lat[min(len(lat) - 1, round(p / 100 * len(lat) + 0.5) - 1)]

        mean = sum(lat) / len(lat) if lat else 0.0
        c = self.c
        return {
            "generator": "python-closed" if self.args.closed else "python-open-loop",
            "target_rate": None if self.args.closed else self.args.rate,
            "duration_us": int(elapsed * 1e6),
            "requests": len(lat),
            "errors": {"connect": 0, "read": c.errors, "write": 0, "status": c.non2xx,
                       "timeout": 0},
            "latency_us": {"min": lat[0] if lat else 0, "mean": round(mean, 1),
                           "max": lat[-1] if lat else 0, "p50": pct(50), "p75": pct(75),
                           "p90": pct(90), "p95": pct(95), "p99": pct(99), "p999": pct(99.9)},
            "ok": c.ok, "ok_merchant": c.ok_merchant, "ok_hotpayer": c.ok_hotpayer,
            "failed": c.failed, "other2xx": c.other2xx, "non2xx": c.non2xx, "sent": c.sent,
            "statuses": c.statuses, "unanswered": [],
            "connections_used": self.open_connections,
        }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--path", default="/v1/payments")
    p.add_argument("--ids", required=True)
    p.add_argument("--mix", default="uniform", choices=["uniform", "hot_merchant", "hot_payer"])
    p.add_argument("--nonce", default=f"ol{int(time.time())}")
    p.add_argument("--amount", default="1.00")
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--closed", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--timeline",
        default=None,
        help="also write each request's scheduled and answer times (Unix seconds, one line each) "
        "to this file: when the slow ones happened",
    )
    args = p.parse_args(argv)
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    gen = Generator(args)
    elapsed = run(gen.closed_loop() if args.closed else gen.open_loop())
    if gen.timeline is not None:
        offset = time.time() - time.perf_counter()  # perf_counter -> wall clock, to line up logs
        with open(args.timeline, "w") as f:
            f.writelines(f"{s + offset:.6f} {a + offset:.6f}\n" for s, a in gen.timeline)
    json.dump(gen.report(elapsed), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
