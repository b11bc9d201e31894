"""Real processes: ``payledger serve`` as a subprocess and CLI commands as subprocesses, sharing
one database. Every server started here is terminated (then killed) in teardown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ZERO_LATENCY_JSON = '{"card":0,"alipay":0,"wechat_pay":0,"bank_transfer":0}'
STARTUP_TIMEOUT_S = 30
CLI_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(database_url: str | None, **extra: str) -> dict[str, str]:
    """The parent's environment without any PAYLEDGER_* setting, then ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLEDGER_")}
    env["PAYLEDGER_SANDBOX_LATENCY_MS"] = ZERO_LATENCY_JSON
    if database_url is not None:
        env["PAYLEDGER_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def payledger_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "interfaces.cli", *args]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Cli:
    """Runs ``payledger ...`` as a subprocess on one database, in one working directory."""

    database_url: str | None
    cwd: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> CliResult:
        done = subprocess.run(
            payledger_cmd(*args),
            cwd=self.cwd,
            env=clean_env(self.database_url, **self.extra_env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)


@dataclass
class Server:
    process: subprocess.Popen[str]
    base_url: str
    log_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server not healthy within {STARTUP_TIMEOUT_S} s:\n{server.log()}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``start_server(database_url, *serve_args, cwd=...)`` -> a healthy server; all stopped in
    teardown, whatever the test did."""
    started: list[subprocess.Popen[str]] = []
    logs = []

    def start(
        database_url: str | None,
        *serve_args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Server:
        port = free_port()
        log_path = tmp_path / f"server-{port}.log"
        log_file = log_path.open("w")
        logs.append(log_file)
        process = subprocess.Popen(
            payledger_cmd("serve", "--port", str(port), *serve_args),
            cwd=cwd or tmp_path,
            env=clean_env(database_url, **(env or {})),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        server = Server(process, f"http://127.0.0.1:{port}", log_path)
        wait_until_healthy(server)
        return server

    yield start
    for process in started:
        stop(process)
    for log_file in logs:
        log_file.close()


@pytest.fixture
def cli_for(tmp_path: Path) -> Callable[[str | None], Cli]:
    def make(database_url: str | None) -> Cli:
        return Cli(database_url, tmp_path)

    return make
