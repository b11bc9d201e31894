"""Real-time payments through HTTP: max throughput and half-load latency, SQLite then PostgreSQL.

    .venv/bin/python bench/realtime.py [--duration 15] [--connections 32]
                                       [--stores sqlite,postgres] [--quick] [--profile]

For each store it starts the real server (``payledger serve``, one uvicorn worker) on a free port,
opens accounts through the API (payers funded generously, payees, one hot merchant, one hot
payer), then for three mixes

* ``uniform``: a random payer pays a random payee,
* ``hot_merchant``: every payment credits one merchant account,
* ``hot_payer``: 70% of payments debit one payer account,

drives ``POST /v1/payments`` (channel ``internal``, 1.00 CNY, a unique ``Idempotency-Key`` per
request) at maximum throughput with ``wrk`` (closed loop, ``--connections`` connections), then at
half that rate with an open-loop generator (``bench/openloop.py``), and checks the balances
through ``GET /v1/accounts/{id}`` against the payments that succeeded. The same client settings
drive a no-op FastAPI endpoint (``bench/noop_app.py``) served by uvicorn the same way, and each
mix's rate is given as a ratio of the no-op rate. Everything goes to
``bench/results/realtime.json``; docs/performance.md explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
WRK_SCRIPT = BENCH / "wrk" / "payments.lua"
MIXES = ("uniform", "hot_merchant", "hot_payer")
AMOUNT = "1.00"
AMOUNT_MINOR = 100
SANDBOX_LATENCY = '{"card":0,"alipay":0,"wechat_pay":0,"bank_transfer":0}'
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"

# Goals (GUIDE.md section 5, issue 2): on PostgreSQL, in every mix.
GOAL_RATE = 1500.0
GOAL_RATIO = 0.5
GOAL_HALF_P99_MS = 25.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- machine, git ------------------------------------------------------------------------------


def sh(cmd: list[str], **kw: Any) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, **kw).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem_gib = round(kib / 1024 / 1024, 1)
    versions = {}
    for pkg in (
        "fastapi",
        "uvicorn",
        "pydantic",
        "eventsourcing",
        "psycopg",
        "uvloop",
        "httptools",
    ):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[pkg] = version(pkg)
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": (sh(["wrk", "--version"]) or "").splitlines()[0] if shutil.which("wrk") else None,
        "postgres": sh(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"])
        or None,
    }


def git_info() -> dict[str, Any]:
    commit = sh(["git", "rev-parse", "HEAD"], cwd=ROOT)
    status = sh(["git", "status", "--porcelain"], cwd=ROOT)
    return {
        "commit": commit or None,
        "describe": sh(["git", "log", "-1", "--format=%h %s"], cwd=ROOT) or None,
        "dirty": bool(status),
        "uncommitted_files": len(status.splitlines()) if status else 0,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- CPU accounting: who used the two cores during a run ---------------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


#: The server's child processes name themselves (application/child_processes.name_process).
ROLES = {"pl-committer": "committer", "pl-projector": "projector"}


def _group_cpu(pgid: int) -> tuple[float, float, dict[str, float]]:
    """User and system CPU seconds of every live process in the server's process group
    (uvicorn's workers included), and CPU seconds by role: ``api`` (the uvicorn process or
    processes), ``committer``, ``projector``."""
    user = system = 0.0
    roles: dict[str, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            head, tail = (d / "stat").read_text().rsplit(")", 1)
            fields = tail.split()
        except (OSError, ValueError):
            continue
        if int(fields[2]) == pgid:
            u, s = int(fields[11]) / TICK, int(fields[12]) / TICK
            user += u
            system += s
            role = ROLES.get(head.split("(", 1)[-1], "api")
            roles[role] = roles.get(role, 0.0) + u + s
    return user, system, roles


def _postgres_cpu() -> float:
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().strip() == "postgres":
                    total += _proc_cpu(int(d.name))
    return total


def _machine_busy() -> float:
    with contextlib.suppress(OSError):
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + values[4]
        return (sum(values[:8]) - idle) / TICK
    return 0.0


class CpuMeter:
    """CPU seconds used during a run by the server, the load generator (children waited for),
    PostgreSQL's processes, and everything else on the machine (other work disturbing the run)."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid
        self.t0 = time.monotonic()
        self.busy0 = _machine_busy()
        self.user0, self.sys0, self.roles0 = (
            _group_cpu(server_pid) if server_pid else (0.0, 0.0, {})
        )
        self.pg0 = _postgres_cpu()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children0 = ru.ru_utime + ru.ru_stime

    def stop(self, succeeded: int) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        busy = _machine_busy() - self.busy0
        user, system, roles = _group_cpu(self.pid) if self.pid else (0.0, 0.0, {})
        user, system = user - self.user0, system - self.sys0
        # A process that restarted during the run would count from zero: never below 0.
        by_role = {r: max(0.0, cpu - self.roles0.get(r, 0.0)) for r, cpu in sorted(roles.items())}
        server = user + system
        pg = _postgres_cpu() - self.pg0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        generator = ru.ru_utime + ru.ru_stime - self.children0
        other = max(0.0, busy - server - pg - generator)
        cpus = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 2),
            "server_cpu_s": round(server, 2),
            "server_user_s": round(user, 2),
            "server_system_s": round(system, 2),
            "postgres_cpu_s": round(pg, 2),
            "generator_cpu_s": round(generator, 2),
            "other_cpu_s": round(other, 2),
            "machine_busy_pct": round(100 * busy / (wall * cpus), 1) if wall else None,
            "server_cpu_us_per_success": round(1e6 * server / succeeded, 1) if succeeded else None,
            "server_cpu_us_per_success_by_process": {
                r: round(1e6 * cpu / succeeded, 1) for r, cpu in by_role.items()
            }
            if succeeded
            else None,
            "postgres_cpu_us_per_success": round(1e6 * pg / succeeded, 1) if succeeded else None,
            "loadavg_1m_after": float(Path("/proc/loadavg").read_text().split()[0]),
        }


def _by_process(cpu: dict[str, Any]) -> str:
    split = cpu.get("server_cpu_us_per_success_by_process") or {}
    return ", ".join(f"{role} {us}" for role, us in split.items())


# --- servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        self.log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; log:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /healthz within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log_file.close()


def _setting(pair: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    name, sep, value = pair.partition("=")
    if not sep or not name.startswith("PAYLEDGER_"):
        parser.error(f"--server-env takes PAYLEDGER_NAME=VALUE, not {pair!r}")
    return name, value


def server_env(
    database_url: str | None, committer: str | None = None, projections: str | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLEDGER_")}
    if committer:
        env["PAYLEDGER_COMMITTER"] = committer
    if projections:
        env["PAYLEDGER_PROJECTIONS"] = projections
    env["PAYLEDGER_SANDBOX_LATENCY_MS"] = SANDBOX_LATENCY
    env["PYTHONUNBUFFERED"] = "1"
    if database_url:
        env["PAYLEDGER_DATABASE_URL"] = database_url
    return env


def payledger_cmd(
    port: int, log_level: str, custom: str | None = None, workers: int = 1
) -> list[str]:
    if custom:  # experiments: e.g. "bench/serve_instrumented.py --no-access-log"
        return [sys.executable, *shlex.split(custom), "--port", str(port)]
    script = Path(sys.executable).parent / "payledger"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "interfaces.cli"]
    return [*base, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers",
            str(workers), "--log-level", log_level]  # fmt: skip


def noop_cmd(port: int, log_level: str) -> list[str]:
    # The same uvicorn.run call as interfaces/cli/serve.py, with the no-op app.
    code = (
        "import uvicorn; uvicorn.run('bench.noop_app:create_app', factory=True, "
        f"host='127.0.0.1', port={port}, workers=1, log_level={log_level!r}, access_log=False)"
    )
    return [sys.executable, "-c", code]


# --- load generators ---------------------------------------------------------------------------


def run_wrk(
    url: str, path: str, ids_file: Path, mix: str, nonce: str, duration: float, connections: int
) -> dict[str, Any]:
    cmd = [
        "wrk", f"-t{connections}", f"-c{connections}", f"-d{max(1, round(duration))}s",
        "--timeout", "30s", "-s", str(WRK_SCRIPT), url,
        "--", str(ids_file), mix, nonce, path, AMOUNT,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            result: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            result["generator"] = "wrk"
            return result
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


def run_python_generator(
    url: str,
    path: str,
    ids_file: Path,
    mix: str,
    nonce: str,
    duration: float,
    connections: int,
    rate: float | None,
    timeline: Path | None = None,
) -> dict[str, Any]:
    cmd = [
        sys.executable, str(BENCH / "openloop.py"), "--url", url, "--path", path,
        "--ids", str(ids_file), "--mix", mix, "--nonce", nonce, "--amount", AMOUNT,
        "--duration", str(duration), "--connections", str(connections),
    ]  # fmt: skip
    cmd += ["--rate", str(rate)] if rate is not None else ["--closed"]
    cmd += ["--timeline", str(timeline)] if timeline is not None else []
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 180)
    if out.returncode != 0:
        raise RuntimeError(f"openloop.py failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Load:
    """Closed-loop max-throughput runs: wrk, or the Python generator when wrk is missing."""

    use_wrk: bool
    connections: int

    def run(
        self, url: str, path: str, ids_file: Path, mix: str, nonce: str, duration: float
    ) -> dict[str, Any]:
        if self.use_wrk:
            return run_wrk(url, path, ids_file, mix, nonce, duration, self.connections)
        return run_python_generator(
            url, path, ids_file, mix, nonce, duration, self.connections, None
        )


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    errors = raw.get("errors", {})
    return {
        "generator": raw.get("generator"),
        "seconds": round(seconds, 2),
        "succeeded": raw["ok"],
        "rate_per_s": round(raw["ok"] / seconds, 1) if seconds else 0.0,
        "responses_per_s": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "latency_ms": {
            k: round(lat[k] / 1000, 2) for k in ("p50", "p90", "p95", "p99", "max") if k in lat
        },
        "failed_201": raw["failed"],
        "other_2xx": raw["other2xx"],
        "non_2xx": raw["non2xx"],
        "socket_errors": sum(v for k, v in errors.items() if k != "status"),
        "statuses": raw.get("statuses", {}),
        "replayed_unanswered": raw.get("replayed_unanswered", 0),
    }


# --- the API -----------------------------------------------------------------------------------


@dataclass
class Accounts:
    payers: list[str] = field(default_factory=list)
    payees: list[str] = field(default_factory=list)
    merchant: str = ""
    hotpayer: str = ""

    def all(self) -> list[str]:
        return [*self.payers, *self.payees, self.merchant, self.hotpayer]

    def write(self, path: Path) -> None:
        lines = [f"payer {a}" for a in self.payers] + [f"payee {a}" for a in self.payees]
        lines += [f"merchant {self.merchant}", f"hotpayer {self.hotpayer}"]
        path.write_text("\n".join(lines) + "\n")


async def _gather_limited(coros: list[Any], limit: int = 16) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def _open(client: httpx.AsyncClient, owner: str, kind: str) -> str:
    r = await client.post(
        "/v1/accounts",
        json={"owner": owner, "currency": "CNY", "kind": kind, "overdraft_limit": "0.00"},
    )
    if r.status_code != 201:
        raise RuntimeError(f"POST /v1/accounts -> {r.status_code}: {r.text[:500]}")
    return str(r.json()["id"])


async def _deposit(client: httpx.AsyncClient, account: str, amount: str, key: str) -> None:
    r = await client.post(
        f"/v1/accounts/{account}/deposits", json={"amount": amount},
        headers={"Idempotency-Key": key},
    )  # fmt: skip
    if r.status_code != 201:
        raise RuntimeError(f"POST deposits -> {r.status_code}: {r.text[:500]}")


async def setup_accounts(url: str, n_payers: int, n_payees: int, nonce: str) -> Accounts:
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        acc = Accounts()
        acc.payers = await _gather_limited(
            [_open(client, f"payer-{i}", "customer") for i in range(n_payers)]
        )
        acc.payees = await _gather_limited(
            [_open(client, f"payee-{i}", "customer") for i in range(n_payees)]
        )
        acc.merchant = await _open(client, "hot-merchant", "merchant")
        acc.hotpayer = await _open(client, "hot-payer", "customer")
        deposits = [_deposit(client, a, "1000000.00", f"{nonce}-fund-{a}") for a in acc.payers] + [
            _deposit(client, acc.hotpayer, "1000000.00", f"{nonce}-hot-{i}") for i in range(5)
        ]
        await _gather_limited(deposits)
        return acc


def to_minor(amount: str) -> int:
    return int(Decimal(amount) * 100)


async def snapshot(url: str, ids: list[str]) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=url, timeout=120.0) as client:

        async def balance(account: str) -> tuple[str, int]:
            r = await client.get(f"/v1/accounts/{account}")
            r.raise_for_status()
            return account, to_minor(r.json()["balance"])

        pairs = await _gather_limited([balance(a) for a in ids], limit=16)
        return dict(pairs)


async def replay(url: str, path: str, unanswered: list[str], acc: Accounts) -> dict[str, int]:
    """Re-send the requests wrk sent but got no answer to (cut off at the end, or a connection
    reset), with the same key and body: each then has a known final outcome."""
    counts = {"ok": 0, "ok_merchant": 0, "ok_hotpayer": 0, "other": 0}
    if not unanswered:
        return counts
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:

        async def one(item: str) -> None:
            key, payer, payee = item.split()
            body = (
                f'{{"amount":"{AMOUNT}","currency":"CNY","channel":"internal",'
                f'"payer_account_id":"{payer}","payee_account_id":"{payee}"}}'
            )
            r = await client.post(
                path, content=body,
                headers={"Idempotency-Key": key, "Content-Type": "application/json"},
            )  # fmt: skip
            if r.status_code in (200, 201) and r.json().get("status") == "succeeded":
                counts["ok"] += 1
                counts["ok_merchant"] += payee == acc.merchant
                counts["ok_hotpayer"] += payer == acc.hotpayer
            else:
                counts["other"] += 1

        await _gather_limited([one(u) for u in unanswered])
    return counts


def finish_counts(raw: dict[str, Any], replayed: dict[str, int] | None) -> dict[str, int]:
    """The payments that succeeded, as the client knows them (answered + replayed)."""
    counts = {k: raw[k] for k in ("ok", "ok_merchant", "ok_hotpayer")}
    if replayed:
        for k in counts:
            counts[k] += replayed[k]
    return counts


def verify(
    before: dict[str, int], after: dict[str, int], counts: dict[str, int], acc: Accounts
) -> dict[str, Any]:
    def delta(ids: list[str]) -> int:
        return sum(after[a] - before[a] for a in ids)

    checks = {
        "hot_merchant_credit": (delta([acc.merchant]), counts["ok_merchant"] * AMOUNT_MINOR),
        "hot_payer_debit": (-delta([acc.hotpayer]), counts["ok_hotpayer"] * AMOUNT_MINOR),
        "payees_credited": (delta([*acc.payees, acc.merchant]), counts["ok"] * AMOUNT_MINOR),
        "payers_debited": (-delta([*acc.payers, acc.hotpayer]), counts["ok"] * AMOUNT_MINOR),
    }
    out: dict[str, Any] = {
        name: {"balance_change_minor": got, "expected_minor": want, "ok": got == want}
        for name, (got, want) in checks.items()
    }
    out["all_ok"] = all(c["ok"] for c in out.values() if isinstance(c, dict))
    return out


# --- profiling ---------------------------------------------------------------------------------


def pyspy_record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists() and not shutil.which("py-spy"):
        log("py-spy not found: pip install py-spy (profiling skipped)")
        return None
    # --gil: only the thread holding each process's GIL is sampled, so a profile shows where
    # the CPU goes, not which threads wait (a blocked read releases the GIL).
    cmd = [pyspy, "record", "-p", str(pid), "--subprocesses", "--threads", "--nonblocking",
           "--gil", "-r", "200", "-d", str(int(seconds)), "-f", "raw", "-o", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Settings:
    duration: float
    warmup: float
    half_duration: float
    connections: int
    payers: int
    payees: int
    log_level: str
    profile: bool
    quick: bool
    mixes: tuple[str, ...] = MIXES
    server: str | None = None
    workers: int = 1
    committer: str = "process"
    projections: str = "process"
    half_rate: float | None = None  # a fixed rate for the "half" run (A/B at equal load)
    profile_rate: float | None = None  # profile an open-loop run at this rate, not the max
    timelines: Path | None = None  # write each half-load request's times here (openloop.py)
    server_env: tuple[tuple[str, str], ...] = ()  # extra PAYLEDGER_* settings for the server


def measure_noop(
    cfg: Settings, load: Load, tmp: Path, ids_file: Path, label: str
) -> dict[str, Any]:
    port = free_port()
    server = Server("noop", noop_cmd(port, cfg.log_level), server_env(None), port,
                    tmp / f"noop-{label}.log")  # fmt: skip
    server.start()
    try:
        nonce = secrets.token_hex(4)
        load.run(server.url, "/v1/noop", ids_file, "uniform", nonce + "w", cfg.warmup)
        meter = CpuMeter(server.proc.pid if server.proc else None)
        raw = load.run(server.url, "/v1/noop", ids_file, "uniform", nonce, cfg.duration)
        cpu = meter.stop(raw["ok"])
    finally:
        server.stop()
    result = summarise(raw)
    result["cpu"] = cpu
    log(
        f"no-op ({label}): {result['rate_per_s']:.0f} req/s, p50 {result['latency_ms']['p50']} ms, "
        f"p99 {result['latency_ms']['p99']} ms, non-2xx {result['non_2xx']}; server "
        f"{cpu['server_cpu_us_per_success']} us CPU/request, other load {cpu['other_cpu_s']} CPU-s"
    )
    return result


def measure_store(
    store: str, cfg: Settings, load: Load, tmp: Path, profile_dir: Path
) -> dict[str, Any]:
    schema = None
    if store == "sqlite":
        database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    else:
        schema = f"bench_{secrets.token_hex(4)}"
        database_url = f"{PG_BASE}?schema={schema}"
    port = free_port()
    cmd = payledger_cmd(port, cfg.log_level, cfg.server, cfg.workers)
    server = Server(
        store,
        cmd,
        server_env(database_url, cfg.committer, cfg.projections) | dict(cfg.server_env),
        port,
        tmp / f"server-{store}.log",
    )
    out: dict[str, Any] = {"database_url": database_url, "mixes": {}}
    try:
        t0 = time.monotonic()
        server.start()
        nonce = f"b{secrets.token_hex(4)}"
        acc = asyncio.run(setup_accounts(server.url, cfg.payers, cfg.payees, nonce))
        ids_file = tmp / f"ids-{store}.txt"
        acc.write(ids_file)
        out["setup_seconds"] = round(time.monotonic() - t0, 1)
        out["accounts"] = {"payers": len(acc.payers), "payees": len(acc.payees),
                           "hot_merchant": acc.merchant, "hot_payer": acc.hotpayer}  # fmt: skip
        log(f"{store}: server up, {len(acc.all())} accounts opened and funded "
            f"in {out['setup_seconds']} s")  # fmt: skip
        for mix in cfg.mixes:
            out["mixes"][mix] = measure_mix(store, mix, server, acc, ids_file, cfg, load, nonce)
        if cfg.profile:
            out["profiles"] = {}
            for mix in cfg.mixes:
                path = profile_dir / f"{store}-{mix}.txt"
                assert server.proc is not None
                spy = pyspy_record(server.proc.pid, cfg.duration, path)
                if spy is None:
                    break
                if cfg.profile_rate:  # open loop at that rate: where a half-load's CPU goes
                    raw = run_python_generator(
                        server.url, "/v1/payments", ids_file, mix, f"{nonce}p{mix}",
                        cfg.duration, cfg.connections, cfg.profile_rate,
                    )  # fmt: skip
                else:
                    raw = load.run(server.url, "/v1/payments", ids_file, mix, f"{nonce}p{mix}",
                                   cfg.duration)  # fmt: skip
                spy.wait(60)
                out["profiles"][mix] = {
                    "file": str(path.relative_to(ROOT)),
                    "rate_per_s_while_profiled": summarise(raw)["rate_per_s"],
                }
                log(f"{store}/{mix}: profile written to {path.relative_to(ROOT)}")
                asyncio.run(replay(server.url, "/v1/payments", raw["unanswered"], acc))
    finally:
        server.stop()
        if schema is not None:
            drop_schema(schema)
    return out


def measure_mix(
    store: str,
    mix: str,
    server: Server,
    acc: Accounts,
    ids_file: Path,
    cfg: Settings,
    load: Load,
    nonce: str,
) -> dict[str, Any]:
    url, path = server.url, "/v1/payments"
    warm = load.run(url, path, ids_file, mix, f"{nonce}-{mix}-w", cfg.warmup)
    asyncio.run(replay(url, path, warm["unanswered"], acc))
    before = asyncio.run(snapshot(url, acc.all()))
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url + "/__bench/reset", timeout=5)
    meter = CpuMeter(server.proc.pid if server.proc else None)
    raw = load.run(url, path, ids_file, mix, f"{nonce}-{mix}-m", cfg.duration)
    cpu = meter.stop(raw["ok"])
    server_stats = None
    with contextlib.suppress(httpx.HTTPError, ValueError):
        r = httpx.get(url + "/__bench/stats", timeout=5)
        if r.status_code == 200:
            server_stats = r.json()
    replayed = asyncio.run(replay(url, path, raw["unanswered"], acc))
    raw["replayed_unanswered"] = len(raw["unanswered"])
    after = asyncio.run(snapshot(url, acc.all()))
    result: dict[str, Any] = {"max": summarise(raw)}
    result["max"]["cpu"] = cpu
    if server_stats:
        result["max"]["server_stats"] = server_stats
        log(f"{store}/{mix}: server stats {server_stats}")
    result["max"]["check"] = verify(before, after, finish_counts(raw, replayed), acc)
    m = result["max"]
    log(
        f"{store}/{mix}: max {m['rate_per_s']:.0f} payments/s, p50 {m['latency_ms']['p50']} "
        f"p95 {m['latency_ms']['p95']} p99 {m['latency_ms']['p99']} ms, non-2xx {m['non_2xx']}, "
        f"failed {m['failed_201']}, balances {'OK' if m['check']['all_ok'] else 'MISMATCH'}; "
        f"server {cpu['server_cpu_us_per_success']} us CPU/payment "
        f"({_by_process(cpu)}), postgres {cpu['postgres_cpu_us_per_success']} us, other load "
        f"{cpu['other_cpu_s']} CPU-s"
    )
    rate = cfg.half_rate or m["rate_per_s"] / 2
    if rate >= 1:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(url + "/__bench/reset", timeout=5)
        meter = CpuMeter(server.proc.pid if server.proc else None)
        timeline = cfg.timelines / f"{store}-{mix}-half.txt" if cfg.timelines else None
        half = run_python_generator(url, path, ids_file, mix, f"{nonce}-{mix}-h",
                                    cfg.half_duration, cfg.connections, rate,
                                    timeline)  # fmt: skip
        half_cpu = meter.stop(half["ok"])
        after_half = asyncio.run(snapshot(url, acc.all()))
        result["half"] = summarise(half)
        result["half"]["target_rate_per_s"] = round(rate, 1)
        result["half"]["cpu"] = half_cpu
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = httpx.get(url + "/__bench/stats", timeout=5)
            if r.status_code == 200:
                result["half"]["server_stats"] = r.json()
        result["half"]["check"] = verify(after, after_half, finish_counts(half, None), acc)
        h = result["half"]
        log(
            f"{store}/{mix}: half load {h['rate_per_s']:.0f}/s (target {rate:.0f}): p50 "
            f"{h['latency_ms']['p50']} p95 {h['latency_ms']['p95']} p99 {h['latency_ms']['p99']} "
            f"ms, non-2xx {h['non_2xx']}, balances {'OK' if h['check']['all_ok'] else 'MISMATCH'}"
        )
    return result


def drop_schema(schema: str) -> None:
    try:
        import psycopg

        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except Exception as e:
        log(f"could not drop schema {schema}: {e}")


def judge(results: dict[str, Any], noop_rate: float, cpus: int | None = None) -> None:
    """Ratios and goals, per store and mix (the goals are PostgreSQL's; SQLite is shown too)."""
    for _store, data in results["stores"].items():
        all_met = True
        for _mix, r in data["mixes"].items():
            rate = r["max"]["rate_per_s"]
            r["ratio_to_noop"] = round(rate / noop_rate, 3) if noop_rate else None
            p99 = r.get("half", {}).get("latency_ms", {}).get("p99")
            goals = {
                "rate_ge_1500": rate >= GOAL_RATE,
                "ratio_ge_half_noop": bool(r["ratio_to_noop"] and r["ratio_to_noop"] >= GOAL_RATIO),
                "half_load_p99_le_25ms": p99 is not None and p99 <= GOAL_HALF_P99_MS,
                "balances_correct": r["max"]["check"]["all_ok"]
                and r.get("half", {}).get("check", {}).get("all_ok", True),
                "no_errors": r["max"]["non_2xx"] == 0
                and r["max"]["socket_errors"] == 0
                and r.get("half", {}).get("non_2xx", 0) == 0,
            }
            r["goals"] = goals
            r["cpu_ceiling"] = cpu_ceiling(r["max"], noop_rate, cpus)
            all_met = all_met and all(goals.values())
        data["all_goals_met"] = all_met
    pg = results["stores"].get("postgres")
    results["goals_met"] = {
        "postgres_all_mixes": pg["all_goals_met"] if pg else None,
        "note": "goals apply to PostgreSQL: >= 1500 payments/s, >= 0.5 x no-op, "
        "half-load p99 <= 25 ms, in all three mixes; SQLite is judged by the same bars for "
        "information",
    }


def cpu_ceiling(run: dict[str, Any], noop_rate: float, cpus: int | None = None) -> dict[str, Any]:
    """What the machine's CPU allows: the run's rate scaled to every core busy (the load
    generator, PostgreSQL and the server's processes all count), and the machine CPU per payment
    that half the no-op's rate would need (all cores for 0.5 x no-op payments a second)."""
    busy_pct = run.get("cpu", {}).get("machine_busy_pct")
    rate = run["rate_per_s"]
    cpus = cpus or os.cpu_count() or 1
    if not busy_pct or not rate or not noop_rate:
        return {}
    ceiling = rate / (busy_pct / 100)
    return {
        "machine_cpu_us_per_payment": round(1e6 * cpus * busy_pct / 100 / rate, 1),
        "payments_per_s_at_full_cpu": round(ceiling, 1),
        "ratio_to_noop_at_full_cpu": round(ceiling / noop_rate, 3),
        "machine_cpu_us_per_payment_for_half_noop": round(1e6 * cpus / (GOAL_RATIO * noop_rate), 1),
    }


def print_table(results: dict[str, Any]) -> None:
    noop = results["noop"]
    print()
    runs = ", ".join(f"{r['rate_per_s']:.0f}" for r in noop["runs"])
    print(f"no-op FastAPI POST: {noop['rate_per_s']:.0f} req/s (runs: {runs})")
    head = (f"{'store':9} {'mix':13} {'pay/s':>7} {'x noop':>7} {'p50':>7} {'p95':>7} "
            f"{'p99':>7} {'errs':>5} | {'half/s':>7} {'p50':>6} {'p99':>7} {'errs':>5} "
            f"{'bal':>4} goals")  # fmt: skip
    print(head)
    print("-" * len(head))
    for store, data in results["stores"].items():
        for mix, r in data["mixes"].items():
            m, h = r["max"], r.get("half", {})
            hl = h.get("latency_ms", {})
            bal = m["check"]["all_ok"] and h.get("check", {}).get("all_ok", True)
            missed = [k for k, v in r["goals"].items() if not v]
            print(
                f"{store:9} {mix:13} {m['rate_per_s']:7.0f} {(r['ratio_to_noop'] or 0):7.2f} "
                f"{m['latency_ms']['p50']:7.1f} {m['latency_ms']['p95']:7.1f} "
                f"{m['latency_ms']['p99']:7.1f} {m['non_2xx'] + m['socket_errors']:5d} | "
                f"{h.get('rate_per_s', 0):7.0f} {hl.get('p50', 0):6.1f} {hl.get('p99', 0):7.1f} "
                f"{h.get('non_2xx', 0) + h.get('socket_errors', 0):5d} {'ok' if bal else 'BAD':>4} "
                f"{'all met' if not missed else 'missed: ' + ', '.join(missed)}"
            )
    print("(latencies in ms; max runs closed-loop at full speed, half runs open-loop at half the "
          "max rate)")  # fmt: skip
    for store, data in results["stores"].items():
        for mix, r in data["mixes"].items():
            c = r.get("cpu_ceiling")
            if c:
                print(
                    f"{store}/{mix}: machine CPU {c['machine_cpu_us_per_payment']:.0f} us/payment; "
                    f"every core busy would give {c['payments_per_s_at_full_cpu']:.0f}/s = "
                    f"{c['ratio_to_noop_at_full_cpu']:.2f} x no-op; 0.5 x no-op needs "
                    f"<= {c['machine_cpu_us_per_payment_for_half_noop']:.0f} us/payment"
                )


def report(path: Path) -> int:
    """The table of a results file written earlier, judged again (with its own no-op rate and
    core count), so figures derived since (the CPU ceiling) apply to old runs too."""
    results = json.loads(path.read_text())
    noop_rate = results.get("noop", {}).get("rate_per_s") or 0.0
    cpus = results.get("machine", {}).get("cpus")
    judge(results, noop_rate, cpus=cpus)
    print_table(results)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=15.0, help="seconds per max-throughput run")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--stores", default="sqlite,postgres")
    p.add_argument("--quick", action="store_true", help="short runs (under 2 minutes)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up before a run")
    p.add_argument("--half-duration", type=float, default=None, help="seconds of half-load run")
    p.add_argument(
        "--half-rate",
        type=float,
        default=None,
        help="experiments: run the open-loop part at this rate instead of half the maximum, so "
        "two versions compare at equal load (server CPU per payment)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        help="uvicorn log level for both servers (info is the CLI default; access logs stay off)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after measuring, record py-spy profiles of extra runs (bench/results/profiles)",
    )
    p.add_argument(
        "--timelines",
        type=Path,
        default=None,
        help="write each half-load request's scheduled and answer times to DIR/<store>-<mix>-"
        "half.txt (bench/openloop.py --timeline): when the slow ones happened",
    )
    p.add_argument(
        "--profile-rate",
        type=float,
        default=None,
        help="profile (as --profile) an open-loop run at this many payments/s instead of a "
        "full-speed one: where the CPU goes at half load",
    )
    p.add_argument(
        "--python-generator",
        action="store_true",
        help="use bench/openloop.py --closed instead of wrk for the max runs",
    )
    p.add_argument("--mixes", default=",".join(MIXES))
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="payledger serve --workers N (the goals are for 1; the no-op stays at 1)",
    )
    p.add_argument(
        "--committer",
        choices=("thread", "process"),
        default="process",  # what payledger serve uses by default
        help="PAYLEDGER_COMMITTER for the server: a thread of the API process or its own process",
    )
    p.add_argument(
        "--projections",
        choices=("inline", "process"),
        default="process",  # what payledger serve uses by default
        help="PAYLEDGER_PROJECTIONS for the server: a thread of the API process or its own process",
    )
    p.add_argument(
        "--server",
        default=None,
        help="experiments only: a Python script (and flags) to serve instead of "
        "payledger serve, e.g. 'bench/serve_instrumented.py --no-access-log'",
    )
    p.add_argument("--no-noop", action="store_true", help="experiments: skip the no-op baseline")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="PAYLEDGER_NAME=VALUE",
        help="experiments: a setting for the payment server (repeatable)",
    )
    p.add_argument("--out", default=str(RESULTS / "realtime.json"))
    p.add_argument(
        "--report",
        metavar="FILE",
        help="measure nothing: judge a results file again and print its table and CPU ceilings",
    )
    args = p.parse_args(argv)
    if args.report:
        return report(Path(args.report))

    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    for s in stores:
        if s not in ("sqlite", "postgres"):
            p.error(f"unknown store {s!r}")
    duration = args.duration if not args.quick or args.duration != 15.0 else 4.0
    cfg = Settings(
        duration=duration,
        warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0),
        half_duration=args.half_duration
        if args.half_duration is not None
        else (3.0 if args.quick else 10.0),
        half_rate=args.half_rate,
        server_env=tuple(_setting(pair, p) for pair in args.server_env),
        connections=args.connections,
        payers=200,
        payees=200,
        log_level=args.log_level,
        profile=args.profile or args.profile_rate is not None,
        profile_rate=args.profile_rate,
        timelines=args.timelines,
        quick=args.quick,
        mixes=tuple(m.strip() for m in args.mixes.split(",") if m.strip()),
        server=args.server,
        workers=args.workers,
        committer=args.committer,
        projections=args.projections,
    )
    for m in cfg.mixes:
        if m not in MIXES:
            p.error(f"unknown mix {m!r}")
    use_wrk = shutil.which("wrk") is not None and not args.python_generator
    if not use_wrk and not args.python_generator:
        log("wrk is not installed (apt-get update && apt-get install -y wrk): falling back to the "
            "Python closed-loop generator. ITS FIGURES ARE LOWER: it takes CPU from the "
            "server.")  # fmt: skip
    load = Load(use_wrk=use_wrk, connections=cfg.connections)
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "schema_version": 1,
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/realtime.py", *(argv or sys.argv[1:])]),
        "git": git_info(),
        "machine": machine_info(),
        "settings": {
            **vars(cfg),
            "timelines": str(cfg.timelines) if cfg.timelines else None,
            "amount": AMOUNT,
            "channel": "internal",
            "sandbox_latency_ms": json.loads(SANDBOX_LATENCY),
            "server": f"EXPERIMENT: {cfg.server}"
            if cfg.server
            else f"payledger serve --workers {cfg.workers} (uvicorn), "
            f"PAYLEDGER_COMMITTER={cfg.committer}, PAYLEDGER_PROJECTIONS={cfg.projections}",
            "max_generator": f"wrk -t{cfg.connections} -c{cfg.connections} --timeout 30s "
            "(closed loop, one connection per thread)"
            if use_wrk
            else f"bench/openloop.py --closed --connections {cfg.connections} "
            "(Python fallback: lower figures)",
            "half_generator": f"bench/openloop.py --rate <max/2> --connections {cfg.connections} "
            "(open loop, latency from the scheduled send time)",
            "accounts": "200 payers funded 1,000,000.00 CNY each, 200 payees, one hot merchant, "
            "one hot payer funded 5,000,000.00 CNY",
        },
        "noop": {},
        "stores": {},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    if cfg.timelines is not None:
        cfg.timelines.mkdir(parents=True, exist_ok=True)
    profile_dir = RESULTS / "profiles"
    if cfg.profile:
        profile_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="payledger-bench-") as tmpdir:
        tmp = Path(tmpdir)
        dummy_ids = tmp / "noop-ids.txt"
        ids = [str(i) * 8 for i in range(10)]
        Accounts(payers=ids, payees=ids, merchant=ids[0], hotpayer=ids[1]).write(dummy_ids)
        runs = [] if args.no_noop else [measure_noop(cfg, load, tmp, dummy_ids, "before")]
        for store in stores:
            results["stores"][store] = measure_store(store, cfg, load, tmp, profile_dir)
        if not cfg.quick and not args.no_noop:
            runs.append(measure_noop(cfg, load, tmp, dummy_ids, "after"))
        noop_rate = sum(r["rate_per_s"] for r in runs) / len(runs) if runs else 0.0
        results["noop"] = {"rate_per_s": round(noop_rate, 1), "runs": runs,
                           "endpoint": "POST /v1/noop (bench/noop_app.py)"}  # fmt: skip
    judge(results, noop_rate)
    results["elapsed_seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    log(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
