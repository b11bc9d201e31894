"""What API keys cost the hot route: server CPU per ``POST /v1/payments`` without a key (the
development sandbox) and with one (``Authorization: Bearer pl_live_...``), on SQLite.

    .venv/bin/python bench/auth_overhead.py [--duration 10] [--connections 16] [--rounds 2]

Each round starts ``payledger serve`` (one worker, the committer in its own process) on a fresh
SQLite file, opens and funds accounts through the API, and drives ``POST /v1/payments``
(``internal``, 1.00 CNY, uniform mix) with ``wrk`` for ``--duration`` seconds after a 2-second
warm-up. The keyed round first issues a submitter key with ``payledger keys create`` (the server
then refuses anonymous requests) and sends it with every request; its rate limit is set out of
the way, but the token bucket still runs. Rounds alternate ABBA (sandbox, key, key, sandbox, ...).
It reports CPU per successful payment for the whole server (API process + committer process)
and for the API process alone, where authentication runs, and the ratio keyed / sandbox.
Results go to ``bench/results/auth_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.realtime import (
    RESULTS,
    ROOT,
    CpuMeter,
    Server,
    _proc_cpu,
    free_port,
    log,
    machine_info,
    payledger_cmd,
    run_wrk,
    server_env,
    setup_accounts,
)

WARMUP_S = 2.0
AUTH_ENV = "PAYLEDGER_BENCH_AUTHORIZATION"


def create_key(env: dict[str, str]) -> str:
    script = Path(sys.executable).parent / "payledger"
    done = subprocess.run(
        [str(script), "keys", "create", "--tenant", "default", "--role", "submitter", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return str(json.loads(done.stdout)["key"])


def one_round(mode: str, duration: float, connections: int, workdir: Path) -> dict[str, Any]:
    url = f"sqlite:///{workdir / f'{mode}-{time.monotonic_ns()}.sqlite3'}"
    env = server_env(url) | {
        "PAYLEDGER_RATE_LIMIT_PER_S": "1000000",
        "PAYLEDGER_RATE_LIMIT_BURST": "10000000",
    }
    port = free_port()
    server = Server(mode, payledger_cmd(port, "warning"), env, port, workdir / f"{mode}.log")
    server.start()
    try:
        nonce = f"{mode}-{secrets.token_hex(6)}"  # no long digit run (card-number check)
        accounts = asyncio.run(setup_accounts(server.url, 50, 50, nonce))
        ids = workdir / f"ids-{nonce}.txt"
        accounts.write(ids)
        authorization = ""
        if mode == "key":
            authorization = f"Bearer {create_key(env)}"
            time.sleep(1.5)  # the server's check for keys, and its cache, refresh within 1 s
            assert httpx.get(server.url + "/v1/payments").status_code == 401
            ok = httpx.get(server.url + "/v1/payments", headers={"Authorization": authorization})
            assert ok.status_code == 200, ok.text
        os.environ[AUTH_ENV] = authorization
        run_wrk(server.url, "/v1/payments", ids, "uniform", nonce + "w", WARMUP_S, connections)
        assert server.proc is not None
        api0 = _proc_cpu(server.proc.pid)
        meter = CpuMeter(os.getpgid(server.proc.pid))
        raw = run_wrk(server.url, "/v1/payments", ids, "uniform", nonce, duration, connections)
        cpu = meter.stop(raw["ok"])
        api_cpu_s = _proc_cpu(server.proc.pid) - api0
    finally:
        os.environ.pop(AUTH_ENV, None)
        server.stop()
    wall_s = raw["duration_us"] / 1e6
    return {
        "mode": mode,
        "ok": raw["ok"],
        "non2xx": raw["non2xx"],
        "payments_per_s": round(raw["ok"] / wall_s, 1),
        "p50_ms": raw["latency_us"]["p50"] / 1000,
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "server_cpu_us_per_payment": cpu["server_cpu_us_per_success"],
        "api_cpu_us_per_payment": round(1e6 * api_cpu_s / raw["ok"], 1) if raw["ok"] else None,
        "cpu": cpu,
    }


def micro(calls: int = 100_000, repeats: int = 5) -> dict[str, float]:
    """Microseconds per ``authenticate`` + permission check, in-process (best of ``repeats``):
    the sandbox (no key exists) and a cached API key."""
    from application.commands import Principal
    from application.key_directory import KeyDirectory
    from application.keys import CreateKey
    from application.service import Payledger
    from application.settings import Settings
    from interfaces.http.authn import Authenticator
    from interfaces.http.authz import Permission, check
    from interfaces.http.ratelimit import TokenBuckets

    async def per_call(auth: Authenticator, header: str | None) -> float:
        await auth.authenticate(header)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                check(await auth.authenticate(header), Permission.PAYMENTS_CREATE)
            best = min(best, (time.perf_counter() - started) / calls * 1e6)
        return round(best, 2)

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("sandbox", "key"):
            url = f"sqlite:///{tmp}/{mode}.sqlite3"
            with Payledger(Settings(database_url=url, env="test")) as svc:
                header = None
                if mode == "key":
                    command = CreateKey("default", "submitter")
                    issued = asyncio.run(svc.keys.create(command, Principal()))
                    header = f"Bearer {issued.token}"
                directory = KeyDirectory(svc.keys, ttl_s=60.0, production=False)
                auth = Authenticator(directory, TokenBuckets(1e9, 10**9))
                out[f"{mode}_us_per_call"] = asyncio.run(per_call(auth, header))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="payledger-auth-bench-") as tmp:
        for i in range(args.rounds):
            # ABBA: sandbox first in even rounds, key first in odd ones (drifts cancel out).
            for mode in ("sandbox", "key") if i % 2 == 0 else ("key", "sandbox"):
                result = one_round(mode, args.duration, args.connections, Path(tmp))
                log(
                    f"round {i + 1} {mode:>7}: {result['payments_per_s']:8.1f} payments/s, "
                    f"server {result['server_cpu_us_per_payment']} us CPU/payment, "
                    f"API process {result['api_cpu_us_per_payment']} us, "
                    f"p50 {result['p50_ms']:.1f} ms, non-2xx {result['non2xx']}"
                )
                rounds.append(result)
    summary = {}
    for field in ("server_cpu_us_per_payment", "api_cpu_us_per_payment", "payments_per_s"):
        means = {
            mode: statistics.mean(r[field] for r in rounds if r["mode"] == mode)
            for mode in ("sandbox", "key")
        }
        summary[field] = means | {
            "ratio_key_over_sandbox": round(means["key"] / means["sandbox"], 3)
        }
    summary["authenticate_in_process"] = micro()
    log(json.dumps(summary, indent=2))
    out = {
        "command": " ".join(sys.argv),
        "machine": machine_info(),
        "duration_s": args.duration,
        "connections": args.connections,
        "rounds": rounds,
        "summary": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "auth_overhead.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
