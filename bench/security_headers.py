"""What the security headers (interfaces/http/security.py) cost on the hot route.

    .venv/bin/python bench/security_headers.py [--duration 10] [--rounds 3] [--connections 32]

Starts ``payledger serve`` on a fresh SQLite store once per variant and round, in alternating
order (``on``, ``off``, ``on``, ``off``, ...), opens accounts, warms up, then drives
``POST /v1/payments`` (internal, uniform mix, bench/wrk/payments.lua) with wrk for
``--duration`` seconds and measures the API process's CPU time (the committer runs in a process
of its own and is not counted). ``off`` is the same server with ``security.install`` replaced by
a no-op through a ``sitecustomize`` on ``PYTHONPATH``; ``access-log`` is ``on`` plus
``--access-log`` (the request log). Then it times the middleware alone around an ASGI app that
answers at once. Prints a table and writes ``bench/results/security_headers.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.realtime import (  # noqa: E402
    RESULTS,
    Server,
    _proc_cpu,
    free_port,
    payledger_cmd,
    run_wrk,
    server_env,
    setup_accounts,
)

SITECUSTOMIZE = """\
import interfaces.http.security as security
security.install = lambda app, settings: None
"""


def measure(variant: str, duration: float, connections: int, work: Path) -> dict[str, Any]:
    store = work / f"{variant}-{uuid.uuid4().hex[:8]}.sqlite3"
    env = server_env(f"sqlite:///{store}")
    if variant == "off":
        patch = work / "no_security"
        patch.mkdir(exist_ok=True)
        (patch / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = str(patch)
    port = free_port()
    cmd = payledger_cmd(port, "warning")
    if variant == "access-log":
        cmd.append("--access-log")
    server = Server(variant, cmd, env, port, work / f"{variant}-{port}.log")
    server.start()
    try:
        headers = __import__("httpx").get(server.url + "/healthz").headers
        has_headers = "x-content-type-options" in headers
        assert has_headers == (variant != "off"), (variant, dict(headers))
        nonce = uuid.uuid4().hex[:8]
        accounts = asyncio.run(setup_accounts(server.url, 32, 32, nonce))
        ids = work / f"ids-{nonce}.txt"
        accounts.write(ids)
        run_wrk(server.url, "/v1/payments", ids, "uniform", nonce + "w", 3, connections)  # warm
        assert server.proc is not None
        cpu0 = _proc_cpu(server.proc.pid)
        raw = run_wrk(server.url, "/v1/payments", ids, "uniform", nonce, duration, connections)
        cpu = _proc_cpu(server.proc.pid) - cpu0
    finally:
        server.stop()
    seconds = raw["duration_us"] / 1e6
    answered = raw["requests"]
    return {
        "variant": variant,
        "rate": round(answered / seconds, 1),
        "succeeded": raw["ok"],
        "non2xx": raw["non2xx"],
        "p99_ms": round(raw["latency_us"]["p99"] / 1000, 1),
        "api_cpu_s": round(cpu, 2),
        "api_cpu_us_per_request": round(1e6 * cpu / answered, 1) if answered else None,
    }


def micro(n: int = 200_000) -> dict[str, float]:
    """µs per request of SecurityHeaders around an app that answers at once, minus the bare app."""
    from interfaces.http.security import SecurityHeaders

    start_message = {
        "type": "http.response.start",
        "status": 201,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"300")],
    }
    body_message = {"type": "http.response.body", "body": b"{}"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(dict(start_message))
        await send(body_message)

    async def send(message: Any) -> None:
        pass

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": "/v1/payments", "method": "POST", "headers": []}
    wrapped = SecurityHeaders(app)

    async def loop(target: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await target(scope, receive, send)
        return time.perf_counter() - t0

    async def run() -> tuple[float, float]:
        bare = min([await loop(app) for _ in range(3)])
        with_headers = min([await loop(wrapped) for _ in range(3)])
        return bare, with_headers

    bare, with_headers = asyncio.run(run())
    return {
        "bare_us": round(1e6 * bare / n, 3),
        "with_headers_us": round(1e6 * with_headers / n, 3),
        "middleware_us": round(1e6 * (with_headers - bare) / n, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variants", default="on,off,access-log")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="payledger-sec-") as tmp:
        work = Path(tmp)
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else list(reversed(variants))
            for variant in order:
                result = measure(variant, args.duration, args.connections, work)
                result["round"] = round_
                runs.append(result)
                print(json.dumps(result), flush=True)
    summary: dict[str, Any] = {}
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {
            "rate_median": statistics.median(r["rate"] for r in mine),
            "api_cpu_us_per_request_median": statistics.median(
                r["api_cpu_us_per_request"] for r in mine
            ),
        }
    if "on" in summary and "off" in summary:
        on, off = summary["on"], summary["off"]
        summary["ratio_rate_on_over_off"] = round(on["rate_median"] / off["rate_median"], 3)
        summary["ratio_cpu_on_over_off"] = round(
            on["api_cpu_us_per_request_median"] / off["api_cpu_us_per_request_median"], 3
        )
    summary["micro"] = micro()
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "security_headers.json").write_text(
        json.dumps({"args": vars(args), "runs": runs, "summary": summary}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
