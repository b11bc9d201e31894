"""A payroll batch (pain.001) from intake to completed report over HTTP, against a bulk insert.

    .venv/bin/python bench/batch.py [--items 100000] [--stores sqlite,postgres] [--version 09|03]
                                    [--reject-every K] [--latency-ms 0] [--label L] [--out PATH]

1. **Generate** once a payroll pain.001 (``bench/pain001_gen.py``: ``--items`` transactions,
   category purpose SALA, valid German IBANs that never hit the bank sandbox's triggers, or
   every K-th an AC04 with ``--reject-every K``), and validate it against the shipped XSD.
2. For each store, in a fresh PostgreSQL schema ``bench_batch_<random>`` (dropped at the end)
   or a temporary SQLite file: three API keys made by ``payledger keys create --json`` (admin,
   submitter, approver with TOTP), then the real server (``payledger serve``, one uvicorn
   worker, ``PAYLEDGER_SANDBOX_LATENCY_MS={"bank_transfer": --latency-ms}``), a funding EUR
   account with the file's debtor IBAN, and a deposit of the file's control sum.
3. **Timed**, from the moment the upload starts: ``POST /v1/batches`` (multipart ``file``; the
   DbtrAcct IBAN finds the funding account) -> ``POST /v1/batches/{id}/approve``
   ``{"execute_now": true}`` with the approver's ``X-Payledger-OTP`` -> ``GET /v1/batches/{id}``
   every ``--poll-interval`` s until the status is final -> ``GET
   /v1/batches/{id}/report?format=pain002`` read to the end. Then, untimed: the report is
   validated against ``pain.002.001.10.xsd`` and must list every item with the expected status;
   the funding account must have paid exactly the succeeded items and hold nothing. The server's
   processes' peak RSS (``VmHWM``) is read before it stops: the process that holds the
   listening socket (it serves HTTP), the committer it spawned, and the rest; their RSS is also
   sampled at each step and poll (``memory_timeline``: which step makes the peak). The server's
   own timestamps are put on the same time line (``timeline_s``), each report request is listed
   (a 503 while the batches view catches up is retried after its ``Retry-After``), and both
   reports are fetched once more, untimed (``report_repeated_untimed``: their cost alone).
4. **Baseline**, same run, same database: ``--items`` rows ``(uuid text, int, text of 200
   bytes)`` into a fresh table, PostgreSQL by ``COPY`` (psycopg), SQLite by ``executemany`` in
   one transaction. The batch's items/s is given as a ratio of these rows/s.

Everything goes to ``bench/results/batch-<label>.json`` (label: ``100k``, ``5k``... by default);
a store whose run fails is recorded with its error, how far it got and the server's log, and the
other stores are still measured.
The goal (the batch issue): 100,000 items in <= 20 s on PostgreSQL on a 2-core machine, memory
bounded. The machine may be shared: the load average at start and end, and the CPU seconds used
during the timed part by the server, PostgreSQL and everything else, are in the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pain001_gen import Payroll, fmt_minor, validate, write_pain001  # noqa: E402
from bench.realtime import CpuMeter, Server, free_port, git_info  # noqa: E402
from bench.realtime import machine_info as realtime_machine_info  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
PAIN002 = "pain.002.001.10"
PAIN002_NS = f"urn:iso:std:iso:20022:tech:xsd:{PAIN002}"
FINAL = ("completed", "completed_with_failures", "failed", "rejected", "cancelled")
GOAL_ITEMS = 100_000
GOAL_SECONDS = 20.0  # the whole batch on PostgreSQL, 2 cores
BASELINE_PAYLOAD = 200  # bytes of text per baseline row


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- the server and its keys -------------------------------------------------------------------


def payledger_script() -> list[str]:
    script = Path(sys.executable).parent / "payledger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "interfaces.cli"]


def server_env(database_url: str, latency_ms: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLEDGER_")}
    env["PAYLEDGER_DATABASE_URL"] = database_url
    env["PAYLEDGER_SANDBOX_LATENCY_MS"] = json.dumps({"bank_transfer": latency_ms})
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass(frozen=True)
class Key:
    id: str
    token: str
    role: str
    totp_uri: str | None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def code(self) -> str:
        assert self.totp_uri is not None, f"the {self.role} key has no second factor"
        return str(pyotp.parse_uri(self.totp_uri).now())


def create_key(env: dict[str, str], tenant: str, role: str) -> Key:
    cmd = [
        *payledger_script(),
        "keys",
        "create",
        "--tenant",
        tenant,
        "--role",
        role,
        "--name",
        f"bench-{role}",
        "--json",
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-8:])} failed ({out.returncode}):\n{out.stderr}")
    data = json.loads(out.stdout)
    return Key(data["id"], data["key"], data["role"], data.get("totp_uri"))


def check(response: httpx.Response, expected: int | tuple[int, ...], what: str) -> Any:
    wanted = (expected,) if isinstance(expected, int) else expected
    if response.status_code not in wanted:
        raise RuntimeError(f"{what} -> {response.status_code}: {response.text[:1500]}")
    return response.json() if "json" in response.headers.get("content-type", "") else None


# --- memory and processes ----------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
    return False


def server_processes(pgid: int, port: int) -> list[dict[str, Any]]:
    """Every live process of the server's process group with its peak and current RSS, and its
    role: ``http`` holds the listening socket (with ``--workers 1`` uvicorn serves in the
    process it was started in; with more it forks workers, which hold the socket too), the
    committer is the ``multiprocessing`` child that does not, the resource tracker is named."""
    inodes = _listening_inodes(port)
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) != pgid:
                continue
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError, ValueError):
            continue
        pid = int(d.name)
        if _holds_socket(pid, inodes):
            role = "http"
        elif "resource_tracker" in cmdline:
            role = "multiprocessing resource tracker"
        elif "spawn_main" in cmdline or "multiprocessing" in cmdline:
            role = "committer (spawned process)"
        else:
            role = "other"
        found.append(
            {
                "pid": pid,
                "role": role,
                "cmdline": cmdline[:160],
                "peak_rss_mib": round((_status_kib(pid, "VmHWM") or 0) / 1024, 1),
                "rss_mib": round((_status_kib(pid, "VmRSS") or 0) / 1024, 1),
            }
        )
    return sorted(found, key=lambda p: p["pid"])


class MemoryWatch:
    """``VmRSS`` and ``VmHWM`` (peak so far) of the server's HTTP and committer processes at
    named moments of the timed part: which step makes the peak."""

    def __init__(self, pgid: int, port: int) -> None:
        self.pids: dict[str, int] = {}
        for p in server_processes(pgid, port):
            if p["role"] == "http" or p["role"].startswith("committer"):
                self.pids.setdefault("http" if p["role"] == "http" else "committer", p["pid"])
        self.marks: list[dict[str, Any]] = []

    def mark(self, label: str, t: float) -> None:
        m: dict[str, Any] = {"at": label, "t": round(t, 2)}
        for role, pid in self.pids.items():
            m[f"{role}_rss_mib"] = round((_status_kib(pid, "VmRSS") or 0) / 1024)
            m[f"{role}_peak_mib"] = round((_status_kib(pid, "VmHWM") or 0) / 1024)
        self.marks.append(m)

    def thinned(self, keep: int = 60) -> list[dict[str, Any]]:
        polls = [m for m in self.marks if m["at"] == "poll"]
        step = max(1, len(polls) // keep)
        chosen = {id(m) for m in polls[::step]}
        return [m for m in self.marks if m["at"] != "poll" or id(m) in chosen]


# --- the report --------------------------------------------------------------------------------


def check_report(xml: bytes, payroll: Payroll) -> dict[str, Any]:
    """XSD-valid pain.002.001.10, one TxInfAndSts per item, statuses as the file asks."""
    started = time.perf_counter()
    errors = validate(xml, PAIN002)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    root = etree.fromstring(xml, parser)
    ns = {"p": PAIN002_NS}
    statuses: dict[str, int] = {}
    reasons: dict[str, int] = {}
    transactions = 0
    for tx in root.iter(f"{{{PAIN002_NS}}}TxInfAndSts"):
        transactions += 1
        status = tx.findtext("p:TxSts", namespaces=ns) or "?"
        statuses[status] = statuses.get(status, 0) + 1
        reason = tx.findtext("p:StsRsnInf/p:Rsn/p:Cd", namespaces=ns)
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
    group = root.findtext(".//p:OrgnlGrpInfAndSts/p:GrpSts", namespaces=ns)
    original_count = root.findtext(".//p:OrgnlGrpInfAndSts/p:OrgnlNbOfTxs", namespaces=ns)
    expected = {"ACSC": payroll.items - payroll.rejects}
    if payroll.rejects:
        expected["RJCT"] = payroll.rejects
    ok = (
        not errors
        and transactions == payroll.items
        and statuses == expected
        and (not payroll.rejects or reasons == {"AC04": payroll.rejects})
        and original_count == str(payroll.items)
    )
    return {
        "ok": ok,
        "xsd": PAIN002,
        "xsd_errors": errors,
        "transactions": transactions,
        "expected_transactions": payroll.items,
        "group_status": group,
        "original_count": original_count,
        "statuses": statuses,
        "expected_statuses": expected,
        "reason_codes": reasons,
        "bytes": len(xml),
        "check_seconds": round(time.perf_counter() - started, 2),
    }


# --- the baseline ------------------------------------------------------------------------------


def baseline_rows(n: int) -> list[tuple[str, int, str]]:
    filler = "x" * BASELINE_PAYLOAD
    return [(str(uuid.uuid4()), i, filler[: BASELINE_PAYLOAD - 8] + f"{i:08d}") for i in range(n)]


def bulk_insert_postgres(schema: str, rows: list[tuple[str, int, str]]) -> dict[str, Any]:
    import psycopg

    table = f'"{schema}".bench_bulk_{secrets.token_hex(3)}'
    with psycopg.connect(PG_BASE) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (id text, n integer, payload text)")
            with cur.copy(f"COPY {table} (id, n, payload) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - started
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
    assert count is not None and count[0] == len(rows), count
    return {
        "method": "psycopg COPY FROM STDIN (write_row), CREATE TABLE + COPY + COMMIT",
        "rows": len(rows),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(rows) / seconds),
    }


def bulk_insert_sqlite(path: Path, rows: list[tuple[str, int, str]]) -> dict[str, Any]:
    table = f"bench_bulk_{secrets.token_hex(3)}"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute(f"CREATE TABLE {table} (id text, n integer, payload text)")
        conn.executemany(f"INSERT INTO {table} (id, n, payload) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        conn.execute(f"DROP TABLE {table}")
    finally:
        conn.close()
    assert count == len(rows), count
    return {
        "method": "sqlite3 executemany in one transaction (CREATE TABLE + INSERTs + COMMIT)",
        "journal_mode": journal,
        "synchronous": synchronous,
        "rows": len(rows),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(rows) / seconds),
    }


# --- one store ---------------------------------------------------------------------------------


@dataclass
class Settings:
    latency_ms: int
    poll_interval_s: float
    timeout_s: float
    log_level: str
    stall_s: float
    projector: bool = False  # views kept by `payledger project --follow`, not the API process
    profile: Path | None = None  # py-spy raw stacks of the server's processes, timed part only


def start_profiler(pid: int, path: Path | None) -> subprocess.Popen[bytes] | None:
    """py-spy on the server and its committer (``--subprocesses``), until ``stop_profiler``."""
    if path is None:
        return None
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [pyspy, "record", "--pid", str(pid), "--subprocesses", "--threads", "--nonblocking",
           "--gil", "--rate", "50", "--format", "raw", "--output", str(path)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(spy: subprocess.Popen[bytes] | None, path: Path | None) -> None:
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)
    spy.wait(30)
    log(f"profile written to {path} (bench/profile_summary.py reads it)")


def drop_schema(schema: str) -> None:
    try:
        import psycopg

        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except Exception as e:
        log(f"could not drop schema {schema}: {e}")


def measure_store(
    store: str,
    payroll: Payroll,
    data: bytes,
    rows: list[tuple[str, int, str]],
    cfg: Settings,
    tmp: Path,
    out: dict[str, Any],
) -> dict[str, Any]:
    """Measure one store into ``out`` (filled as far as it got when something fails)."""
    schema = None
    sqlite_path = tmp / f"batch-{store}.sqlite3"
    if store == "sqlite":
        database_url = f"sqlite:///{sqlite_path}"
    else:
        schema = f"bench_batch_{secrets.token_hex(4)}"
        database_url = f"{PG_BASE}?schema={schema}"
    env = server_env(database_url, cfg.latency_ms)
    if cfg.projector:
        env["PAYLEDGER_PROJECTIONS"] = "off"
    tenant = f"bench-{secrets.token_hex(4)}"
    out.update({"database_url": database_url, "tenant": tenant})
    port = free_port()
    cmd = [
        *payledger_script(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        cfg.log_level,
    ]
    server = Server(store, cmd, env, port, tmp / f"server-{store}.log")
    projector: subprocess.Popen[bytes] | None = None
    try:
        try:
            t0 = time.monotonic()
            keys = {
                role: create_key(env, tenant, role) for role in ("admin", "submitter", "approver")
            }
            server.start()
            assert server.proc is not None
            if cfg.projector:
                with (tmp / f"projector-{store}.log").open("wb") as projector_log:
                    projector = subprocess.Popen(
                        [*payledger_script(), "project", "--follow"], env=env,
                        stdout=projector_log, stderr=subprocess.STDOUT,
                    )  # fmt: skip
            with httpx.Client(
                base_url=server.url, timeout=60.0, headers=keys["admin"].headers()
            ) as c:
                account = check(
                    c.post(
                        "/v1/accounts",
                        json={
                            "owner": "ACME Manufacturing GmbH (payroll)",
                            "currency": payroll.currency,
                            "kind": "funding",
                            "iban": payroll.debtor_iban,
                        },
                    ),
                    201,
                    "POST /v1/accounts",
                )
                funding = account["id"]
                check(
                    c.post(
                        f"/v1/accounts/{funding}/deposits",
                        json={"amount": payroll.control_sum},
                        headers={"Idempotency-Key": f"bench-fund-{secrets.token_hex(8)}"},
                    ),
                    201,
                    "POST deposits",
                )
            out["setup_seconds"] = round(time.monotonic() - t0, 2)
            log(
                f"{store}: 3 keys, server up, funding account {funding} with {payroll.control_sum} "
                f"{payroll.currency} in {out['setup_seconds']} s"
            )
            out["timed_so_far_s"] = {}
            timed = run_batch(server, keys, payroll, data, cfg, out["timed_so_far_s"])
            del out["timed_so_far_s"]
            out.update(timed.pop("figures"))
            out["processes"] = server_processes(os.getpgid(server.proc.pid), port)
            http = [p for p in out["processes"] if p["role"] == "http"]
            out["peak_rss_mib"] = {
                "http": max((p["peak_rss_mib"] for p in http), default=None),
                "committer": max(
                    (
                        p["peak_rss_mib"]
                        for p in out["processes"]
                        if p["role"].startswith("committer")
                    ),
                    default=None,
                ),
                "all_processes_sum": round(sum(p["peak_rss_mib"] for p in out["processes"]), 1),
            }
            with httpx.Client(
                base_url=server.url, timeout=60.0, headers=keys["admin"].headers()
            ) as c:
                after = check(c.get(f"/v1/accounts/{funding}"), 200, "GET account")
            out["funding_account_after"] = {
                k: after[k] for k in ("balance", "reserved", "available")
            }
            report_xml = timed.pop("report_xml")
        except Exception:
            if server.proc is not None and server.proc.poll() is None:
                out["processes"] = server_processes(os.getpgid(server.proc.pid), port)
            if server.log_path.exists():
                tail = server.log_path.read_text(errors="replace")[-3000:]
                out["server_log_tail"] = tail.splitlines()
                log(f"{store}: server log (end):\n{tail}")
            raise
        finally:
            server.stop()
            if projector is not None:
                projector.terminate()
                projector.wait(10)
        out["report_check"] = check_report(report_xml, payroll)
        left = fmt_minor(payroll.rejected_minor)  # deposited the CtrlSum; rejects come back
        out["balance_check"] = {
            "ok": after["balance"] == left and after["reserved"] == "0.00",
            "expected_balance": left,
            "balance": after["balance"],
            "reserved": after["reserved"],
        }
        log(
            f"{store}: report {'OK' if out['report_check']['ok'] else 'WRONG'} "
            f"({out['report_check']['transactions']:,} transactions, "
            f"{out['report_check']['statuses']}, XSD "
            f"{'valid' if not out['report_check']['xsd_errors'] else 'INVALID'}); funding "
            f"balance {after['balance']} (expected {left}), reserved {after['reserved']}"
        )
        log(f"{store}: baseline bulk insert of {len(rows):,} rows...")
        if store == "sqlite":
            out["baseline"] = bulk_insert_sqlite(sqlite_path, rows)
        else:
            assert schema is not None
            out["baseline"] = bulk_insert_postgres(schema, rows)
        out["ratio_batch_over_bulk_insert"] = round(
            out["items_per_s"] / out["baseline"]["rows_per_s"], 4
        )
        log(
            f"{store}: bulk insert {out['baseline']['rows_per_s']:,} rows/s "
            f"({out['baseline']['seconds']} s); batch {out['items_per_s']:,.0f} items/s = "
            f"{out['ratio_batch_over_bulk_insert']:.3f} x"
        )
    finally:
        if schema is not None:
            drop_schema(schema)
    log_tail = server.log_path.read_text(errors="replace").splitlines()
    out["server_log_warnings"] = [
        line[:300] for line in log_tail if " WARNING " in line or " ERROR " in line
    ][:20]
    return out


def run_batch(
    server: Server,
    keys: dict[str, Key],
    payroll: Payroll,
    data: bytes,
    cfg: Settings,
    so_far: dict[str, float],
) -> dict[str, Any]:
    """The timed part: upload, approve, wait, report. ``so_far`` gets each step's end (seconds
    after the upload started) as it happens: what is known when a step fails."""
    submitter = httpx.Client(
        base_url=server.url, timeout=cfg.timeout_s, headers=keys["submitter"].headers()
    )
    approver = httpx.Client(
        base_url=server.url, timeout=cfg.timeout_s, headers=keys["approver"].headers()
    )
    name = Path(payroll.path).name
    polls: list[float] = []
    samples: list[dict[str, Any]] = []
    try:
        code = keys["approver"].code()  # read before the clock starts: pyotp is not the product
        assert server.proc is not None
        memory = MemoryWatch(os.getpgid(server.proc.pid), server.port)
        memory.mark("before upload", 0.0)
        spy = start_profiler(server.proc.pid, cfg.profile)
        meter = CpuMeter(server.proc.pid)
        cpu0 = time.process_time()
        t0, wall0 = time.perf_counter(), time.time()
        so_far["upload_started"] = 0.0
        answer = submitter.post("/v1/batches", files={"file": (name, data, "application/xml")})
        if answer.status_code == 503:
            so_far["intake_503_after"] = round(time.perf_counter() - t0, 3)
            so_far.update(after_timeout(submitter, cfg.stall_s, t0))
        intake = check(answer, 201, "POST /v1/batches")
        t1 = time.perf_counter()
        so_far["intake_answered"] = round(t1 - t0, 3)
        memory.mark("intake answered", t1 - t0)
        batch_id = intake["id"]
        if intake["valid_item_count"] != payroll.items:
            raise RuntimeError(
                f"intake: {intake['valid_item_count']} valid items of "
                f"{payroll.items}: {intake.get('invalid_items', [])[:3]}"
            )
        approved = check(
            approver.post(
                f"/v1/batches/{batch_id}/approve",
                json={"execute_now": True},
                headers={"X-Payledger-OTP": code},
            ),
            200,
            "POST approve",
        )
        t2 = time.perf_counter()
        so_far["approve_answered"] = round(t2 - t0, 3)
        memory.mark("approve answered", t2 - t0)
        batch = approved
        last_log = last_move = t2
        processed = -1
        while batch["status"] not in FINAL:
            now = time.perf_counter()
            if now - t2 > cfg.timeout_s:
                raise RuntimeError(f"batch still {batch['status']} after {cfg.timeout_s} s")
            if batch["progress"]["processed"] != processed:
                processed, last_move = batch["progress"]["processed"], now
            elif now - last_move > cfg.stall_s:
                raise RuntimeError(
                    f"batch {batch['status']} with {processed:,} items processed has not moved "
                    f"for {cfg.stall_s:g} s (see the server's log)"
                )
            time.sleep(cfg.poll_interval_s)
            p0 = time.perf_counter()
            batch = check(submitter.get(f"/v1/batches/{batch_id}"), 200, "GET batch")
            polls.append(time.perf_counter() - p0)
            memory.mark("poll", time.perf_counter() - t0)
            samples.append(
                {
                    "t": round(time.perf_counter() - t0, 2),
                    "processed": batch["progress"]["processed"],
                    "status": batch["status"],
                }
            )
            if time.perf_counter() - last_log >= 5:
                last_log = time.perf_counter()
                log(
                    f"  {batch['status']}: {batch['progress']['processed']:,} / "
                    f"{batch['progress']['total']:,} after {last_log - t0:.1f} s"
                )
        t3 = time.perf_counter()
        so_far["final_status_seen"] = round(t3 - t0, 3)
        memory.mark("final status seen", t3 - t0)
        report_tries: list[dict[str, Any]] = []  # each request: status, seconds, the problem
        while True:
            r0 = time.perf_counter()
            response = submitter.get(f"/v1/batches/{batch_id}/report", params={"format": "pain002"})
            report_tries.append({"status": response.status_code,
                                 "seconds": round(time.perf_counter() - r0, 3)})  # fmt: skip
            if response.status_code == 503 and time.perf_counter() - t3 < cfg.timeout_s:
                with contextlib.suppress(ValueError, KeyError):
                    report_tries[-1]["code"] = response.json()["code"]
                wait = float(response.headers.get("Retry-After", "0.2") or 0.2)
                report_tries[-1]["retry_after"] = wait
                time.sleep(wait)
                continue
            if response.status_code != 200:
                raise RuntimeError(f"GET report -> {response.status_code}: {response.text[:800]}")
            report_xml = response.content
            break
        t4 = time.perf_counter()
        so_far["report_downloaded"] = round(t4 - t0, 3)
        memory.mark("report downloaded", t4 - t0)
        client_cpu = time.process_time() - cpu0
        cpu = meter.stop(payroll.items)
        stop_profiler(spy, cfg.profile)
        cpu.pop("generator_cpu_s", None)  # this process's children: none during the timed part
        for name in ("server", "postgres"):
            cpu[f"{name}_cpu_us_per_item"] = cpu.pop(f"{name}_cpu_us_per_success", None)
        # Untimed: the same report again, the views now current (what the report itself costs,
        # without waiting for the batches view), and the CSV report for comparison.
        again: dict[str, Any] = {}
        for fmt in ("pain002", "csv"):
            r0 = time.perf_counter()
            response = submitter.get(f"/v1/batches/{batch_id}/report", params={"format": fmt})
            again[fmt] = {"status": response.status_code, "bytes": len(response.content),
                          "seconds": round(time.perf_counter() - r0, 3)}  # fmt: skip
        memory.mark("reports repeated", time.perf_counter() - t0)
    finally:
        submitter.close()
        approver.close()
    total = t4 - t0
    figures = {
        "batch_id": batch_id,
        "status": batch["status"],
        "counts": batch["counts"],
        "phases_s": {
            "intake": round(t1 - t0, 3),
            "approve_request": round(t2 - t1, 3),
            "approval_to_finished": round(t3 - t1, 3),
            "report": round(t4 - t3, 3),
        },
        "total_s": round(total, 3),
        "items_per_s": round(payroll.items / total, 1),
        "server_times": {
            "created_at": batch.get("created_at"),
            "started_at": batch.get("started_at"),
            "finished_at": batch.get("finished_at"),
            "processing_time_ms": batch.get("processing_time_ms"),
            "started_to_finished_s": _seconds_between(
                batch.get("started_at"), batch.get("finished_at")
            ),
        },
        # Seconds after the upload started (same machine, same clock): when the server
        # recorded the batch, started and finished it, against when this client saw each step.
        "timeline_s": {
            "intake_answered": round(t1 - t0, 3),
            "server_created": _offset(batch.get("created_at"), wall0),
            "approve_answered": round(t2 - t0, 3),
            "server_started": _offset(batch.get("started_at"), wall0),
            "server_finished": _offset(batch.get("finished_at"), wall0),
            "final_status_seen": round(t3 - t0, 3),
            "report_downloaded": round(t4 - t0, 3),
        },
        "report_requests": report_tries,
        "report_repeated_untimed": again,
        "report_bytes": len(report_xml),
        "polls": {
            "count": len(polls),
            "interval_s": cfg.poll_interval_s,
            "mean_ms": round(1000 * sum(polls) / len(polls), 1) if polls else None,
            "max_ms": round(1000 * max(polls), 1) if polls else None,
        },
        "progress_samples": samples[:: max(1, len(samples) // 40)],
        "memory_timeline": memory.thinned(),
        "cpu": {
            **cpu,
            "bench_client_cpu_s": round(client_cpu, 2),
            # realtime.CpuMeter's "other" counts this process too: take it out.
            "other_cpu_s": round(max(0.0, cpu["other_cpu_s"] - client_cpu), 2),
        },
    }
    log(
        f"{server.name}: {payroll.items:,} items {batch['status']} in {total:.2f} s "
        f"({payroll.items / total:,.0f} items/s): intake {t1 - t0:.2f} s, approval -> finished "
        f"{t3 - t1:.2f} s, report {t4 - t3:.2f} s; server CPU {cpu['server_cpu_s']} s, "
        f"PostgreSQL CPU {cpu['postgres_cpu_s']} s, other {figures['cpu']['other_cpu_s']} s"
    )
    return {"figures": figures, "report_xml": report_xml}


def after_timeout(client: httpx.Client, wait_s: float, t0: float) -> dict[str, Any]:
    """After a 503 to the upload: does the batch appear anyway (the decision went on), and when?
    (Diagnosis only: the run has failed.)"""
    deadline = time.perf_counter() + wait_s
    while time.perf_counter() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            listed = client.get("/v1/batches", params={"limit": 5})
            if listed.status_code == 200 and listed.json()["items"]:
                item = listed.json()["items"][0]
                return {
                    "batch_listed_after_503_at": round(time.perf_counter() - t0, 3),
                    "batch_status_after_503": item["status"],
                    "batch_item_count_after_503": item["item_count"],
                }
        time.sleep(1.0)
    return {"batch_listed_after_503_at": None}


def _offset(stamp: str | None, wall0: float) -> float | None:
    return None if not stamp else round(dt.datetime.fromisoformat(stamp).timestamp() - wall0, 3)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round(
        (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds(), 3
    )


# --- output ------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    info = realtime_machine_info()
    info.pop("wrk", None)
    for pkg in ("lxml", "schwifty", "python-multipart", "httpx", "pyotp", "starlette"):
        with contextlib.suppress(Exception):
            info["packages"][pkg] = version(pkg)
    info["sqlite"] = sqlite3.sqlite_version
    info["platform"] = platform.platform()
    return info


def judge(results: dict[str, Any]) -> None:
    pg = results["stores"].get("postgres")
    items = results["settings"]["items"]
    goal: dict[str, Any] = {
        "goal": f"{GOAL_ITEMS:,} items from upload to report in <= {GOAL_SECONDS:g} s on "
        "PostgreSQL on a 2-core machine",
        "cpus": os.cpu_count(),
    }
    if pg is None:
        goal["met"] = None
        goal["note"] = "PostgreSQL was not measured"
    elif "error" in pg:
        goal["met"] = False if items >= GOAL_ITEMS else None
        goal["note"] = f"the PostgreSQL run failed: {pg['error'][:300]}"
    else:
        goal["postgres_total_s"] = pg["total_s"]
        goal["projected_100k_s"] = round(GOAL_ITEMS / pg["items_per_s"], 1)
        if items >= GOAL_ITEMS:
            goal["met"] = pg["total_s"] <= GOAL_SECONDS and pg["checks_ok"]
        else:
            goal["met"] = None
            goal["note"] = (
                f"measured with {items:,} items: the goal is for {GOAL_ITEMS:,}; "
                "projected_100k_s is a linear extrapolation, not a measurement"
            )
    results["goal"] = goal


def print_table(results: dict[str, Any]) -> None:
    s = results["settings"]
    print()
    print(
        f"payroll pain.001 ({s['pain001']['version']}): {s['items']:,} items, "
        f"{s['pain001']['bytes'] / 1e6:.1f} MB, reject every {s['reject_every'] or '-'}, "
        f"bank_transfer latency {s['latency_ms']} ms; load average "
        f"{results['load_average_start']} -> {results['load_average_end']}"
    )
    head = (
        f"{'store':9} {'total s':>8} {'items/s':>8} {'intake':>7} {'appr->fin':>9} "
        f"{'report':>7} {'bulk rows/s':>11} {'ratio':>6} {'RSS http':>9} {'RSS comm':>9} "
        f"{'srv CPU':>8} {'pg CPU':>7} {'other':>6} checks"
    )
    print(head)
    print("-" * len(head))
    for store, r in results["stores"].items():
        if "error" in r:
            print(f"{store:9} FAILED: {r['error'][:200]} (steps done: {r.get('timed_so_far_s')})")
            continue
        ph, rss, cpu = r["phases_s"], r["peak_rss_mib"], r["cpu"]
        print(
            f"{store:9} {r['total_s']:8.2f} {r['items_per_s']:8,.0f} {ph['intake']:7.2f} "
            f"{ph['approval_to_finished']:9.2f} {ph['report']:7.2f} "
            f"{r['baseline']['rows_per_s']:11,} {r['ratio_batch_over_bulk_insert']:6.3f} "
            f"{rss['http'] or 0:8.0f}M {rss['committer'] or 0:8.0f}M "
            f"{cpu['server_cpu_s']:8.1f} {cpu['postgres_cpu_s']:7.1f} {cpu['other_cpu_s']:6.1f} "
            f"{'ok' if r['checks_ok'] else 'FAILED'}"
        )
    g = results["goal"]
    if g.get("met") is None:
        extra = f" (projected {g['projected_100k_s']} s)" if "projected_100k_s" in g else ""
        print(f"goal: {g['goal']}: not judged{extra}; {g.get('note', '')}")
    elif "postgres_total_s" not in g:
        print(f"goal: {g['goal']}: NOT MET; {g.get('note', '')}")
    else:
        print(f"goal: {g['goal']}: {g['postgres_total_s']} s -> {'MET' if g['met'] else 'NOT MET'}")
    print(
        "(seconds; ratio = batch items/s / bulk-insert rows/s of the same database; RSS = peak "
        "VmHWM of the server's HTTP process and its committer process; CPU seconds during the "
        "timed part)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=GOAL_ITEMS)
    p.add_argument("--stores", default="sqlite,postgres")
    p.add_argument("--version", choices=("09", "03"), default="09", help="pain.001.001.09/.03")
    p.add_argument(
        "--reject-every",
        type=int,
        default=0,
        help="every K-th item pays an account ending in 0004 (AC04 at the bank)",
    )
    p.add_argument(
        "--latency-ms",
        type=int,
        default=0,
        help="the bank sandbox's latency per call (PAYLEDGER_SANDBOX_LATENCY_MS)",
    )
    p.add_argument("--poll-interval", type=float, default=0.1, help="seconds between GETs")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per step, at most")
    p.add_argument(
        "--stall", type=float, default=120.0, help="give up when no item is processed for so long"
    )
    p.add_argument("--log-level", default="info", help="uvicorn log level of the server")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--label", default=None, help="results file batch-<label>.json")
    p.add_argument(
        "--out", default=None, help="results path (default bench/results/batch-<label>.json)"
    )
    p.add_argument("--keep-file", default=None, help="also keep the generated pain.001 here")
    p.add_argument(
        "--projector", action="store_true",
        help="keep the views with `payledger project --follow` in a process of its own "
        "(PAYLEDGER_PROJECTIONS=off for the server), as in a scaled-out deployment",
    )  # fmt: skip
    p.add_argument(
        "--profile", default=None, metavar="FILE",
        help="record py-spy stacks of the server's processes during the timed part (slows it)",
    )  # fmt: skip
    args = p.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    for s in stores:
        if s not in ("sqlite", "postgres"):
            p.error(f"unknown store {s!r}")
    if args.items < 1 or args.items > GOAL_ITEMS:
        p.error(f"--items must be 1-{GOAL_ITEMS} (the server takes at most {GOAL_ITEMS:,})")
    if args.reject_every < 0:
        p.error("--reject-every must be >= 0")
    label = args.label or (f"{args.items // 1000}k" if args.items % 1000 == 0 else str(args.items))
    out_path = Path(args.out) if args.out else RESULTS / f"batch-{label}.json"
    cfg = Settings(
        args.latency_ms, args.poll_interval, args.timeout, args.log_level, args.stall,
        args.projector, Path(args.profile) if args.profile else None,
    )  # fmt: skip
    started = dt.datetime.now(dt.UTC)
    load_start = loadavg()
    log(f"load average {load_start}, {os.cpu_count()} CPUs")
    results: dict[str, Any] = {
        "schema_version": 1,
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/batch.py", *(argv or sys.argv[1:])]),
        "git": git_info(),
        "machine": machine_info(),
        "load_average_start": load_start,
    }
    with tempfile.TemporaryDirectory(prefix="payledger-bench-batch-") as tmpdir:
        tmp = Path(tmpdir)
        path = tmp / f"payroll-{label}.xml"
        payroll = write_pain001(
            path, args.items, args.version, reject_every=args.reject_every, seed=args.seed
        )
        t = time.perf_counter()
        errors = validate(path, payroll.version)
        xsd_s = time.perf_counter() - t
        if errors:
            raise SystemExit(f"the generated pain.001 is not valid: {errors}")
        log(
            f"generated {payroll.version}: {payroll.items:,} items, {payroll.bytes / 1e6:.1f} MB "
            f"in {payroll.seconds:.2f} s, XSD-valid ({xsd_s:.2f} s); CtrlSum "
            f"{payroll.control_sum} {payroll.currency}, {payroll.rejects} AC04 rejects"
        )
        if args.keep_file:
            Path(args.keep_file).write_bytes(path.read_bytes())
        data = path.read_bytes()
        rows = baseline_rows(args.items)
        results["settings"] = {
            "items": args.items,
            "stores": stores,
            "reject_every": args.reject_every,
            "latency_ms": args.latency_ms,
            "sandbox_latency_ms": {"bank_transfer": args.latency_ms},
            "poll_interval_s": args.poll_interval,
            "server": "payledger serve --workers 1 (uvicorn; the committer in its own process, "
            "the serve default)",
            "projector": "payledger project --follow, PAYLEDGER_PROJECTIONS=off"
            if args.projector
            else "inline (the API process keeps the views)",
            "pain001": {**payroll.to_json(), "xsd_validation_s": round(xsd_s, 2), "path": None},
            "baseline_row": f"(id text uuid4, n integer, payload text {BASELINE_PAYLOAD} bytes)",
        }
        results["stores"] = {}
        for store in stores:
            r: dict[str, Any] = {}
            results["stores"][store] = r
            try:
                measure_store(store, payroll, data, rows, cfg, tmp, r)
            except Exception as e:  # recorded; the other stores are still measured
                r["error"] = f"{type(e).__name__}: {e}"
                r["checks_ok"] = False
                log(f"{store}: FAILED: {r['error']}")
                continue
            r["checks_ok"] = bool(
                r["report_check"]["ok"]
                and r["balance_check"]["ok"]
                and r["status"] == ("completed_with_failures" if payroll.rejects else "completed")
            )
    results["load_average_end"] = loadavg()
    judge(results)
    results["elapsed_seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    log(f"written {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path}")
    return 0 if all(r.get("checks_ok") for r in results["stores"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
